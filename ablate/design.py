"""Fractional factorial designs: which cells a grid runs, and which terms its contrasts can tell apart.

Today every grid is the full factorial. A regular 2^(k-p) fraction runs 1/2^p of the combinations of
the k two-level factors, fixed by p generators: ``D = ABC`` sets D's code to the product of A's, B's
and C's codes. The price is aliasing: with ``D = ABC`` the defining relation is ``I = ABCD``, so every
term's contrast is also the contrast of the term times ABCD (``AB`` is ``CD``), and the analysis can
estimate one term per alias class. The resolution, the length of the shortest word, says how bad
that is: III aliases main effects with two-way interactions, IV only two-way ones with each other,
V and up keeps both clear.

This module parses an experiment file's ``design:`` value (``full``, ``half``, ``{fraction: 1/4}``,
``{generators: ["D = ABC"]}``), builds the runs with pyDOE's ``fracfact`` (a maintained design
library, not hand-written matrices), and states the defining relation, the resolution and every
term's aliases for the analysis and ``--dry-run``.

Coding as in :mod:`ablate.analysis.effects`: +1 is a factor's reference level (the paper's for the
toggles), -1 the other. The letters A, B, C, ... name the two-level factors in the order given
(I is skipped, as in Montgomery's tables: it is the identity of the defining relation). Factors with
any other number of levels are crossed in full with the fraction.

Torch- and Ray-free, like :mod:`ablate.config`, so that the CLI can check and print a design cheaply;
pyDOE (which imports scipy) is imported only when a fraction is built.
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

LETTERS = "ABCDEFGHJKLMNOPQRSTUVWXYZ"  # no I: "I = ABCD" reads as the identity
INTERCEPT = "Intercept"  # the alias of a defining word: its contrast is the grand mean's (statsmodels' name)
KEYS = ("fraction", "generators")

# Generators of the minimum aberration 2^(k-p) fraction (the highest resolution, then the fewest
# shortest words) for k = 3..8 two-level factors: Montgomery, Design and Analysis of Experiments,
# Table 8.14 "Selected 2^(k-p) fractional factorial designs", the same as the NIST/SEMATECH
# e-Handbook of Statistical Methods, 5.3.3.4.7. Resolution in the comment; tests/test_design.py checks
# each entry against a search of every regular fraction of its size.
TABLE: dict[tuple[int, int], tuple[str, ...]] = {
    (3, 1): ("C = AB",),  # III
    (4, 1): ("D = ABC",),  # IV
    (5, 1): ("E = ABCD",),  # V
    (5, 2): ("D = AB", "E = AC"),  # III
    (6, 1): ("F = ABCDE",),  # VI
    (6, 2): ("E = ABC", "F = BCD"),  # IV
    (6, 3): ("D = AB", "E = AC", "F = BC"),  # III
    (7, 1): ("G = ABCDEF",),  # VII
    (7, 2): ("F = ABCD", "G = ABDE"),  # IV
    (7, 3): ("E = ABC", "F = BCD", "G = ACD"),  # IV
    (7, 4): ("D = AB", "E = AC", "F = BC", "G = ABC"),  # III
    (8, 1): ("H = ABCDEFG",),  # VIII
    (8, 2): ("G = ABCD", "H = ABEF"),  # V
    (8, 3): ("F = ABC", "G = ABD", "H = BCDE"),  # IV
    (8, 4): ("E = BCD", "F = ACD", "G = ABC", "H = ABD"),  # IV
}

Run = tuple[int, ...]  # one combination of the two-level factors, coded +1 (reference) / -1


@dataclass(frozen=True)
class Design:
    """The cells a grid runs: a regular fraction (or all) of the two-level factors' combinations,
    plus any corner it lacks, crossed with every level combination of the other factors.

    ``runs`` is the regular fraction, coded, one column per two-level factor (``two_level``); its
    contrasts are balanced and orthogonal, and the aliases below are its own. ``extra_runs`` holds the
    corners that the fraction does not: the paper's corner (all +1) and the reviewed code's (all -1)
    must be in every design, and a regular fraction holds both only when every word of its defining
    relation has even length (all -1 satisfies a word of length L as (-1)^L). The fraction is the
    principal one (all generators positive), which holds the paper's corner; when a word has odd
    length (the 2^(5-1) E = ABCD, resolution V; every resolution III design) the all -1 corner is
    added as one extra run rather than trading resolution or aberration for an even design (E = ABC,
    resolution IV): one run is cheaper than aliasing two-way interactions. Estimate effects on ``runs``; the extra
    corner is there to be compared with the paper's, and would unbalance the contrasts.
    """

    factors: dict[str, tuple] = field(hash=False)  # every factor's levels, in the experiment's order
    reference: dict[str, object] = field(hash=False)  # the level coded +1, per two-level factor
    generators: tuple[str, ...]  # "D = ABC", ...; none for the full design
    runs: tuple[Run, ...]
    extra_runs: tuple[Run, ...]
    words: tuple[str, ...]  # the defining relation's words, shortest first: ("ABCD",)
    resolution: int | None  # the shortest word's length; None for the full design (no word at all)

    @classmethod
    def full(cls, factors: Mapping[str, Sequence], reference: Mapping[str, object] | None = None) -> Design:
        """Today's design: every combination, every term estimable, no aliases."""
        levels, refs = _levels(factors, reference)
        runs = tuple(itertools.product((1, -1), repeat=len(refs)))  # the paper's corner first, as Variant.all()
        return cls(levels, refs, (), runs, (), (), None)

    @property
    def two_level(self) -> tuple[str, ...]:
        """The fractioned factors, in order: lettered A, B, C, ... and the columns of ``runs``."""
        return tuple(self.reference)

    @property
    def resolution_label(self) -> str:
        """``IV`` or ``full``, as the report and effects.csv state it."""
        return "full" if self.resolution is None else _roman(self.resolution)

    @property
    def defining_relation(self) -> str:
        """``I = ABCD`` (every word), or an empty string for the full design."""
        return " = ".join(("I", *self.words)) if self.words else ""

    def cells(self) -> list[dict[str, object]]:
        """Every cell the grid runs, as factor -> level in the experiment's order."""
        decoded = [self._decode(run) for run in self.runs + self.extra_runs]
        return cross(decoded, self.factors)

    def extra_cells(self) -> list[dict[str, object]]:
        """The cells of ``extra_runs``: run to be compared with the paper's corner, but outside the
        regular fraction, so run.json names them for the analysis to leave out of the effects."""
        return cross([self._decode(run) for run in self.extra_runs], self.factors)

    def contains(self, levels: Mapping[str, object]) -> bool:
        """Whether some cell has these levels; factors not named may be at any level."""
        for name in levels:
            if name not in self.factors:
                raise ValueError(f"{name!r} is not a factor{_suggest(name, self.factors)}")
        if not all(_position(self.factors[name], level) is not None for name, level in levels.items()):
            return False
        named = [(i, self._code(name, levels[name])) for i, name in enumerate(self.two_level) if name in levels]
        return any(all(run[i] == code for i, code in named) for run in self.runs + self.extra_runs)

    def aliases(self, term: str) -> list[str]:
        """The terms whose contrast in ``runs`` is this term's (``A:B`` -> ``C:D`` for D = ABC), lowest
        order first; ``Intercept`` when the term is a defining word. A factor that is crossed in full
        stays in the term: ``lr:A:B`` is aliased with ``lr:C:D``."""
        mask, crossed = self._parse_term(term)
        if not mask:
            return []
        return [self._term(alias, crossed) for alias in sorted((mask ^ w for w in self._word_masks()), key=_order)]

    def estimable_terms(self) -> list[str]:
        """One term per alias class of the two-level factors' terms, the lowest order (then the first
        factors) standing for its class; classes holding a defining word are the mean's, not a term's."""
        group = [0, *self._word_masks()]
        chosen = set()
        for mask in range(1, 2 ** len(self.two_level)):
            if mask not in group:
                chosen.add(min((mask ^ word for word in group), key=_order))
        return [self._term(mask, ()) for mask in sorted(chosen, key=_order)]

    def describe(self) -> str:
        """A few lines for ``--dry-run``: the design, its runs, its resolution and the aliases among
        main effects and two-way interactions (the ones a reader acts on)."""
        k, n = len(self.two_level), len(self.runs) + len(self.extra_runs)
        crossed = [name for name in self.factors if name not in self.reference]
        per_run = math.prod(len(self.factors[name]) for name in crossed)
        cells = f"cells: {n} runs x {per_run} combinations of {', '.join(crossed)} = {n * per_run}" if crossed else ""
        if self.resolution is None:
            head = f"design: full factorial of {k} two-level factors, {2**k} runs; every term estimable"
            return "\n".join(line for line in (head, cells) if line)
        letters = ", ".join(f"{letter} {name}" for letter, name in zip(LETTERS, self.two_level))
        corners = (
            f" + 1 corner that it lacks (every factor at its other level; a word of odd length keeps it out) = {n}"
            if self.extra_runs
            else ", both corners among them"
        )
        lines = [
            f"design: 2^({k}-{len(self.generators)}) fraction, {'; '.join(self.generators)} ({letters})",
            f"runs: {len(self.runs)} of {2**k}{corners}",
            *([cells] if cells else []),
            f"resolution {self.resolution_label}: {self.defining_relation}",
        ]
        low = [[t for t in [term, *self.aliases(term)] if t.count(":") < 2] for term in self.estimable_terms()]
        pairs = [" = ".join(terms) for terms in low if len(terms) > 1]
        if not pairs:
            return "\n".join([*lines, "main effects and two-way interactions: clear of each other"])
        return "\n".join([*lines, "aliased among main effects and two-way interactions:", *(f"  {p}" for p in pairs)])

    def _decode(self, run: Run) -> dict[str, object]:
        return {name: self._level(name, code) for name, code in zip(self.two_level, run)}

    def _level(self, name: str, code: int) -> object:
        reference = self.reference[name]
        return reference if code == 1 else next(v for v in self.factors[name] if not _same(v, reference))

    def _code(self, name: str, level: object) -> int:
        return 1 if _same(level, self.reference[name]) else -1

    def _word_masks(self) -> list[int]:
        return [_mask(word) for word in self.words]

    def _parse_term(self, term: str) -> tuple[int, tuple[str, ...]]:
        """A term as a mask over the two-level factors and the crossed factors it names."""
        names = term.split(":")
        for name in names:
            if name not in self.factors:
                raise ValueError(f"term {term!r}: {name!r} is not a factor{_suggest(name, self.factors)}")
        if len(set(names)) < len(names):
            raise ValueError(f"term {term!r} names a factor twice")
        mask = sum(1 << i for i, name in enumerate(self.two_level) if name in names)
        return mask, tuple(name for name in self.factors if name in names and name not in self.reference)

    def _term(self, mask: int, crossed: tuple[str, ...]) -> str:
        """The ablate name of a term: its factors joined by ':' in the experiment's order."""
        names = {self.two_level[i] for i in _indices(mask)} | set(crossed)
        return ":".join(name for name in self.factors if name in names) or INTERCEPT


def parse_design(
    spec: object, factors: Mapping[str, Sequence], reference: Mapping[str, object] | None = None
) -> Design:
    """The design of an experiment file's ``design:`` value over its factors (levels per factor, the
    reference first unless ``reference`` names it), or a one-line ValueError naming what is wrong."""
    if spec == "full":
        return Design.full(factors, reference)
    k = sum(len(levels) == 2 for levels in factors.values())
    if spec == "half":
        return _fraction(factors, reference, _tabled(k, 1, "design", "half"), "design")
    if isinstance(spec, str):
        allowed = ["full", "half", "{fraction: 1/4}", "{generators: [D = ABC]}"]
        raise ValueError(f"design: {spec!r} is not a design{_suggest(spec, allowed)}")
    if not isinstance(spec, Mapping):
        raise ValueError(f"design: expected full, half or a mapping, got {type(spec).__name__}")
    for key in spec:
        if key not in KEYS:
            raise ValueError(f"design.{key}: unknown key{_suggest(key, KEYS)}")
    if len(spec) != 1:
        raise ValueError("design: give one of fraction or generators, " + ("not both" if spec else "got neither"))
    if "fraction" in spec:
        p = _fraction_power(spec["fraction"])
        return _fraction(factors, reference, _tabled(k, p, "design.fraction", f"1/{2**p}"), "design.fraction")
    return _fraction(factors, reference, _checked_generators(spec["generators"], k), "design.generators")


def cross(runs: Iterable[Mapping[str, object]], factors: Mapping[str, Sequence]) -> list[dict[str, object]]:
    """Each run (levels of some factors) with every combination of the levels of the factors it does
    not set: how factors of more than two levels stay full around a fraction. Cells are keyed in
    ``factors``' order, runs outermost."""
    cells = []
    for run in runs:
        free = [name for name in factors if name not in run]
        for combo in itertools.product(*(factors[name] for name in free)):
            cell = {**run, **dict(zip(free, combo))}
            cells.append({name: cell[name] for name in factors})
    return cells


def _fraction(
    factors: Mapping[str, Sequence], reference: Mapping[str, object] | None, generators: Sequence[str], where: str
) -> Design:
    """The principal fraction of these generators, with the corner it lacks (see :class:`Design`)."""
    levels, refs = _levels(factors, reference)
    k = len(refs)
    defined = dict(_generator_masks(g) for g in generators)
    words = _group(mask | 1 << target for target, mask in defined.items())
    shortest = words[0]
    if bin(shortest).count("1") < 3:
        aliased = " and ".join(list(refs)[i] for i in _indices(shortest))
        raise ValueError(f"{where}: I = {_letters(shortest)} aliases the main effects of {aliased}")
    runs = _fraction_runs(k, defined)
    corners = ((1,) * k, (-1,) * k)
    extra = tuple(corner for corner in corners if corner not in runs)
    resolution = bin(shortest).count("1")
    return Design(levels, refs, tuple(generators), runs, extra, tuple(map(_letters, words)), resolution)


def _fraction_runs(k: int, defined: Mapping[int, int]) -> tuple[Run, ...]:
    """The coded runs from pyDOE's ``fracfact``: the basic (not generated) factors in full, each
    generated factor the product of its word. fracfact wants its basic factors as a, b, c, ... in
    the columns before the generated ones, so the columns are put back in our order afterwards."""
    from pydoe import fracfact  # imports scipy (about a second): only when a fraction is built

    basic = [i for i in range(k) if i not in defined]
    alias = {i: string.ascii_lowercase[j] for j, i in enumerate(basic)}
    order = basic + sorted(defined)
    columns = [alias[i] if i in alias else "".join(alias[j] for j in _indices(defined[i])) for i in order]
    matrix = fracfact(" ".join(columns))
    back = [order.index(i) for i in range(k)]
    return tuple(tuple(int(row[j]) for j in back) for row in matrix)


def _tabled(k: int, p: int, where: str, what: str) -> tuple[str, ...]:
    """The tabled generators of a 1/2^p fraction of k two-level factors."""
    _check_size(k, p, where, f"{what} of {k} two-level factors")
    if (k, p) not in TABLE:
        tabled = sorted({size for size, _ in TABLE})
        raise ValueError(
            f"{where}: no tabled {what} fraction of {k} two-level factors (the table has "
            f"{tabled[0]} to {tabled[-1]}); give design.generators"
        )
    return TABLE[k, p]


def _check_size(k: int, p: int, where: str, what: str) -> None:
    if p >= k:
        raise ValueError(f"{where}: {what}: no basic factor left (p = {p} >= k = {k})")
    runs = 2 ** (k - p)
    if runs - 1 < k:
        hold = f"which hold at most {runs - 1} factors without aliasing two main effects"
        raise ValueError(f"{where}: {what}: {runs} runs, {hold}")


def _fraction_power(value: object) -> int:
    """p of a fraction 1/2^p given as 1/4, "1/4", 0.25 or "0.25"."""
    message = f"design.fraction: {value!r} is not 1/2^p (1/2, 1/4, 1/8, ...)"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(message)
    try:
        fraction = Fraction(value)
    except (ValueError, ZeroDivisionError, OverflowError):
        raise ValueError(message) from None
    d = fraction.denominator
    if fraction.numerator != 1 or d < 2 or d & (d - 1):
        raise ValueError(message)
    return d.bit_length() - 1


def _checked_generators(raw: object, k: int) -> tuple[str, ...]:
    """Generators as written ("D = ABC"), checked one by one, in the canonical spacing."""
    where = "design.generators"
    if isinstance(raw, str) or not isinstance(raw, Sequence) or not raw or not all(isinstance(g, str) for g in raw):
        raise ValueError(f"{where}: expected a non-empty list like [D = ABC], got {raw!r}")
    if k > len(LETTERS):
        raise ValueError(f"{where}: letters name at most {len(LETTERS)} two-level factors, there are {k}")
    _check_size(k, len(raw), where, f"{len(raw)} generators for {k} two-level factors")
    letters = LETTERS[:k]
    parsed = []
    for i, text in enumerate(raw):
        match = re.fullmatch(r"\s*([A-Z])\s*=\s*([A-Z]+)\s*", text)
        if not match:
            raise ValueError(f"{where}[{i}]: {text!r} is not of the form 'D = ABC'")
        target, word = match.groups()
        for letter in target + word:
            if letter not in letters:
                raise ValueError(f"{where}[{i}]: {text!r}: {letter} is not a two-level factor's letter ({letters})")
            if (target + word).count(letter) > 1:
                raise ValueError(f"{where}[{i}]: {text!r} repeats {letter}")
        if any(target == t for t, _ in parsed):
            raise ValueError(f"{where}[{i}]: {text!r} generates {target} a second time")
        parsed.append((target, word))
    generated = {target for target, _ in parsed}
    for i, (_, word) in enumerate(parsed):
        for letter in word:
            if letter in generated:
                raise ValueError(
                    f"{where}[{i}]: {raw[i]!r} uses {letter}, itself generated; write the word in basic factors"
                )
    return tuple(f"{target} = {word}" for target, word in parsed)


def _generator_masks(generator: str) -> tuple[int, int]:
    """``"D = ABC"`` -> (index of D, mask of A, B, C)."""
    target, word = (part.strip() for part in generator.split("="))
    return LETTERS.index(target), _mask(word)


def _group(words: Iterable[int]) -> list[int]:
    """Every product of the generators' words: the defining relation, identity left out."""
    group = {0}
    for word in words:
        group |= {word ^ other for other in group}
    return sorted(group - {0}, key=_order)


def _levels(factors: Mapping[str, Sequence], reference: Mapping[str, object] | None) -> tuple[dict, dict]:
    """Levels as tuples and the +1 level of each two-level factor (its first unless ``reference`` says)."""
    levels = {name: tuple(values) for name, values in factors.items()}
    refs = {}
    for name, values in levels.items():
        if len(values) == 2:
            refs[name] = (reference or {}).get(name, values[0])
            if _position(values, refs[name]) is None:
                raise ValueError(f"reference {refs[name]!r} of {name} is not one of its levels {list(values)}")
    return levels, refs


def _position(values: Sequence, level: object) -> int | None:
    return next((i for i, value in enumerate(values) if _same(value, level)), None)


def _same(a: object, b: object) -> bool:
    """Equal and of one type: True is not the level 1."""
    return type(a) is type(b) and a == b


def _mask(letters: str) -> int:
    return sum(1 << LETTERS.index(letter) for letter in letters)


def _letters(mask: int) -> str:
    return "".join(LETTERS[i] for i in _indices(mask))


def _indices(mask: int) -> list[int]:
    return [i for i in range(mask.bit_length()) if mask >> i & 1]


def _order(mask: int) -> tuple[int, list[int]]:
    """Lower order first, then the earlier factors: how terms are listed and which stands for a class."""
    return bin(mask).count("1"), _indices(mask)


def _roman(n: int) -> str:
    numerals = ((10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"))
    out = ""
    for value, letters in numerals:
        while n >= value:
            out, n = out + letters, n - value
    return out


def _suggest(key: object, allowed: Iterable) -> str:
    """`` (did you mean 'x'?); allowed: a, b``, as :func:`ablate.config.suggest` words it."""
    allowed = [str(a) for a in allowed]
    close = difflib.get_close_matches(str(key), allowed, n=1)
    return f"{' (did you mean ' + repr(close[0]) + '?)' if close else ''}; allowed: {', '.join(allowed)}"
