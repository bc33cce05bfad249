"""What a regular fraction lets the analysis estimate: its runs among a grid's cells, one term per
alias class, and which simple effects stand clear of two-way aliasing.

On a 2^(k-p) fraction (:mod:`ablate.design`) a term's contrast over the fraction's runs is also the
contrast of each of its aliases, so effects.csv and the opening's family test one term per alias
class and name the others (``aliases``). The runs of the regular fraction are balanced and orthogonal
for every estimable term; a corner the design adds outside it (``Design.extra_runs``) would unbalance
them, so it is kept out of every factorial contrast and stays in the cell tables and the paper-vs-
simplified comparison. With the full design every function here says "everything, no aliases", and the
contrasts are today's.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ablate.design import LETTERS, Design

# A simple effect is followed up (family.py) only when it is clear of two-way aliasing, which a regular
# fraction guarantees for every two-way interaction's simple effects from resolution V up.
FOLLOW_UP_RESOLUTION = 5


def is_fraction(design: Design) -> bool:
    return design.resolution is not None


def fraction_mask(design: Design, levels: Mapping[str, Sequence]) -> np.ndarray | None:
    """Which cells of a grid over ``levels`` (every combination in ``itertools.product`` order, the
    reference level of each factor first) are runs of the design's regular fraction; None for the
    full design, whose contrasts are blocked as before. Needs every fractioned factor among ``levels``."""
    if not is_fraction(design):
        return None
    factors = list(levels)
    positions = [factors.index(name) for name in design.two_level]
    runs = set(design.runs)
    cells = itertools.product(*[range(len(levels[name])) for name in factors])
    return np.array([tuple(1 - 2 * cell[i] for i in positions) in runs for cell in cells], bool)


def estimable_terms(design: Design) -> list[tuple[str, ...]]:
    """The terms of the two-level factors that effects.csv and the family test: every term of the full
    factorial, or one per alias class of a fraction (the lowest order standing for its class)."""
    return [tuple(term.split(":")) for term in design.estimable_terms()]


def alias_text(aliases: Iterable[str]) -> str:
    """Aliases as effects.csv and family.csv write them: ``half_step:tau2_weight``, several joined by
    `` = `` (terms hold ``:`` already); empty when there are none."""
    return " = ".join(aliases)


def term_aliases(design: Design, term: Sequence[str]) -> str:
    """The terms whose contrast on the fraction's runs is this term's, as :func:`alias_text`."""
    return alias_text(design.aliases(":".join(term)))


def level_test_aliases(design: Design, factor: str) -> str:
    """The level test of a factor crossed in full with a fraction averages its levels over the runs, on
    which each defining word's code is +1: it cannot tell the factor from its interaction with the word
    (``lr`` from ``lr:A:B:C:D`` for I = ABCD)."""
    return alias_text(
        ":".join(name for name in design.factors if name == factor or name in word) for word in _word_factors(design)
    )


def simple_effect_aliases(design: Design, factor: str, within: Iterable[str]) -> list[str] | None:
    """The terms of the factors not held fixed whose contrast, on the runs with fixed levels of
    ``within``, is ``factor``'s; or None when one of them is the mean, a main effect or a two-way
    interaction (the simple effect is then not estimable clear of two-way aliasing, and is not computed)
    or when a defining word lies within the fixed factors (some of their level combinations have no run).

    Fixing factors turns each defining word into the word of the others: within B = b the 2^(5-1)
    I = ABCDE is I = ACDE, A's aliases there are CDE, clear; the 2^(4-1) I = ABCD within B leaves
    I = ACD, which aliases A with CD, so no simple effects on it.
    """
    fixed = set(within) & set(design.two_level)
    aliases = []
    for word in _word_factors(design):
        reduced = word - fixed
        alias = reduced ^ {factor}
        if not reduced or len(alias) < 3:
            return None
        aliases.append(alias)
    position = {name: i for i, name in enumerate(design.factors)}
    named = [sorted(alias, key=position.__getitem__) for alias in aliases]
    named.sort(key=lambda names: (len(names), [position[name] for name in names]))  # as Design.aliases lists them
    return [":".join(names) for names in named]


def follows_up_interactions(design: Design) -> bool:
    """Whether the family tests a resolved two-way interaction's simple effects and equivalences: on the
    full design, and on a fraction of resolution V or more, where they are clear of two-way aliasing."""
    return design.resolution is None or design.resolution >= FOLLOW_UP_RESOLUTION


def design_sentence(design: Design) -> str:
    """The report's line about a fraction (empty for the full design): which fraction of which factors,
    its generators, resolution and defining relation, and that each effect stands for its alias class."""
    if not is_fraction(design):
        return ""
    k, p = len(design.two_level), len(design.generators)
    size = {1: "half", 2: "quarter"}.get(p, f"1/{2**p}")
    letters = ", ".join(f"{letter} `{name}`" for letter, name in zip(LETTERS, design.two_level))
    extra = (
        "; the corner with every two-level factor at its other level is run outside it, compared with the "
        "paper's but in no effect"
        if design.extra_runs
        else ""
    )
    return (
        f"Design: {size} fraction 2^({k}-{p}) of {letters}: {', '.join(design.generators)}, resolution "
        f"{design.resolution_label} ({design.defining_relation}){extra}; each effect below is its alias class's "
        "(effects.csv `aliases`)."
    )


def _word_factors(design: Design) -> list[frozenset[str]]:
    """The defining relation's words as sets of factor names."""
    return [frozenset(design.two_level[LETTERS.index(letter)] for letter in word) for word in design.words]
