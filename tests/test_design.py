"""Fractional factorial designs: known designs from the tables, their aliases against pyDOE's own alias
map, the corners, the crossing with multi-level factors and the parser's one-line errors."""

import itertools
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydoe import fracfact_aliasing

from ablate.design import LETTERS, TABLE, Design, cross, parse_design
from ablate.variants import TOGGLES, Variant

# Montgomery, Table 8.14: the resolution of each tabled fraction
RESOLUTIONS = {
    (3, 1): 3,
    (4, 1): 4,
    (5, 1): 5,
    (5, 2): 3,
    (6, 1): 6,
    (6, 2): 4,
    (6, 3): 3,
    (7, 1): 7,
    (7, 2): 4,
    (7, 3): 4,
    (7, 4): 3,
    (8, 1): 8,
    (8, 2): 5,
    (8, 3): 4,
    (8, 4): 4,
}
PAPER = {name: getattr(Variant.paper(), name) for name in TOGGLES}
SIMPLIFIED = {name: getattr(Variant.simplified(), name) for name in TOGGLES}


def letters_factors(k: int) -> dict[str, tuple]:
    """k two-level factors named a, b, c, ... (pyDOE's names for them), level 0 the reference."""
    return {LETTERS[i].lower(): (0, 1) for i in range(k)}


def tabled(k: int, p: int) -> Design:
    return parse_design({"fraction": f"1/{2**p}"}, letters_factors(k))


def word_lengths(words) -> list[int]:
    """The word length pattern (A3, A4, ...): how many words of each length, the aberration order."""
    counts = Counter(len(word) for word in words)
    return [counts[length] for length in range(3, 26)]


def alias_classes(design: Design) -> set[frozenset[str]]:
    """Our alias classes over letter-named factors, the defining words as one class (pyDOE's way)."""
    classes = {frozenset([term, *design.aliases(term)]) for term in design.estimable_terms()}
    return classes | {frozenset(":".join(word.lower()) for word in design.words)}


def pydoe_classes(design: Design) -> set[frozenset[str]]:
    """pyDOE's alias map of the runs themselves ("a = bcd"), in our term names."""
    alias_map, _ = fracfact_aliasing(np.array(design.runs, dtype=float))
    return {frozenset(":".join(term) for term in line.split(" = ")) for line in alias_map}


def test_the_half_of_the_four_toggles_is_d_equals_abc_resolution_iv():
    design = parse_design("half", TOGGLES)
    assert design.generators == ("D = ABC",)
    assert len(design.runs) == 8 and len(set(design.runs)) == 8
    assert design.resolution == 4 and design.resolution_label == "IV"
    assert design.words == ("ABCD",) and design.defining_relation == "I = ABCD"
    assert all(run[3] == run[0] * run[1] * run[2] for run in design.runs)


def test_d_equals_abc_keeps_main_effects_clear_of_two_way_terms():
    design = parse_design({"generators": ["D = ABC"]}, TOGGLES)
    for name in TOGGLES:
        (alias,) = design.aliases(name)
        assert alias.count(":") == 2 and name not in alias.split(":")
    assert design.aliases("tau_sampling:bootstrap_space") == ["half_step:tau2_weight"]
    assert design.aliases("bootstrap_space:tau_sampling") == ["half_step:tau2_weight"]  # any order in
    assert design.aliases("tau_sampling:bootstrap_space:half_step:tau2_weight") == ["Intercept"]
    assert design.estimable_terms() == [
        *TOGGLES,
        "tau_sampling:bootstrap_space",
        "tau_sampling:half_step",
        "tau_sampling:tau2_weight",
    ]


def test_d_equals_abc_holds_both_corners():
    design = parse_design("half", TOGGLES)
    assert (1, 1, 1, 1) in design.runs and (-1, -1, -1, -1) in design.runs and design.extra_runs == ()
    assert design.contains(PAPER) and design.contains(SIMPLIFIED)
    assert len(design.cells()) == 8 and PAPER in design.cells() and SIMPLIFIED in design.cells()
    assert not design.contains({**PAPER, "tau2_weight": False})  # D = ABC: the paper with D flipped is out


def test_e_equals_abcd_is_resolution_v_and_gets_the_simplified_corner_as_an_extra_run():
    """I = ABCDE has odd length: the all -1 run gives ABCDE = -1, so no fraction of it holds both
    corners. The principal fraction holds the paper's; the reviewed code's is one run added."""
    factors = {**TOGGLES, "teacher": ("self", "ema")}
    design = parse_design({"generators": ["E = ABCD"]}, factors)
    assert design == parse_design("half", factors)
    assert design.resolution == 5 and design.words == ("ABCDE",)
    assert len(design.runs) == 16 and (1,) * 5 in design.runs
    assert design.extra_runs == ((-1,) * 5,) and (-1,) * 5 not in design.runs
    assert len(design.cells()) == 17
    assert design.contains({**PAPER, "teacher": "self"}) and design.contains({**SIMPLIFIED, "teacher": "ema"})
    assert all(len(design.aliases(t)) == 1 and design.aliases(t)[0].count(":") >= 2 for t in factors)
    even = parse_design({"generators": ["E = ABC"]}, factors)  # what the corners alone would pick: IV
    assert even.resolution == 4 and even.extra_runs == ()
    assert (1,) * 5 in even.runs and (-1,) * 5 in even.runs


@pytest.mark.parametrize("size", sorted(TABLE))
def test_the_table_has_the_stated_resolution_and_minimum_aberration(size):
    """Against every regular fraction of the same size: p distinct interaction columns of the k - p
    basic factors (any regular fraction is one, up to naming the factors)."""
    k, p = size
    design = tabled(k, p)
    assert design.resolution == RESOLUTIONS[size] and len(design.runs) == 2 ** (k - p)
    m = k - p
    columns = [mask for mask in range(1, 2**m) if bin(mask).count("1") >= 2]
    best = None
    for chosen in itertools.combinations(columns, p):
        group = {0}
        for j, column in enumerate(chosen):
            group |= {word ^ column ^ 1 << (m + j) for word in group}
        pattern = word_lengths(bin(word).count("1") * "x" for word in group - {0})
        best = pattern if best is None else min(best, pattern)
    assert word_lengths(design.words) == best


@pytest.mark.parametrize("size", sorted(TABLE))
def test_tabled_designs_satisfy_their_generators_and_hold_the_corners(size):
    design = tabled(*size)
    for generator in design.generators:
        target, word = (part.strip() for part in generator.split("="))
        for run in design.runs:
            assert run[LETTERS.index(target)] == np.prod([run[LETTERS.index(letter)] for letter in word])
    k = size[0]
    assert (1,) * k in design.runs  # the principal fraction: the paper's corner
    odd = any(len(word) % 2 for word in design.words)
    assert design.extra_runs == (((-1,) * k,) if odd else ())
    assert (-1,) * k in design.runs + design.extra_runs


@pytest.mark.parametrize("size", sorted(TABLE))
def test_aliases_agree_with_pydoes_alias_map_of_the_runs(size):
    design = tabled(*size)
    assert alias_classes(design) == pydoe_classes(design)
    assert len(design.estimable_terms()) == len(design.runs) - 1


def test_the_half_and_quarter_fractions_of_five_and_six_factors():
    assert tabled(5, 2).resolution == 3 and tabled(5, 2).generators == ("D = AB", "E = AC")
    assert tabled(5, 2).aliases("a") == ["b:d", "c:e", "a:b:c:d:e"]
    assert tabled(5, 2).aliases("b:c") == ["d:e", "a:b:e", "a:c:d"]  # lowest order first, whatever the word
    assert tabled(6, 2).resolution == 4 and tabled(6, 2).generators == ("E = ABC", "F = BCD")
    assert tabled(6, 2).defining_relation == "I = ABCE = ADEF = BCDF"
    factors = letters_factors(6)
    assert parse_design({"fraction": 0.25}, factors) == parse_design({"fraction": "1/4"}, factors)
    assert parse_design({"fraction": "0.25"}, factors) == parse_design({"generators": ["E=ABC", "F = BCD"]}, factors)


def test_the_full_design_is_itertools_product_with_every_term_estimable():
    factors = {**TOGGLES, "lr": [1e-3, 3e-4, 1e-4], "k_max": [8, 16]}
    design = parse_design("full", factors)
    assert design == Design.full(factors)
    product = [dict(zip(factors, combo)) for combo in itertools.product(*factors.values())]
    cells = design.cells()
    assert len(cells) == len(product) == 32 * 3  # k_max has two levels: a fifth two-level factor
    assert Counter(tuple(c.items()) for c in cells) == Counter(tuple(c.items()) for c in product)
    names = list(factors)[:4] + ["k_max"]
    assert design.two_level == tuple(names)
    expected = [":".join(t) for order in range(1, 6) for t in itertools.combinations(names, order)]
    assert design.estimable_terms() == expected
    assert design.resolution is None and design.resolution_label == "full" and design.words == ()
    assert design.aliases("tau_sampling:bootstrap_space") == [] and design.defining_relation == ""
    assert design.describe() == (
        "design: full factorial of 5 two-level factors, 32 runs; every term estimable\n"
        "cells: 32 runs x 3 combinations of lr = 96"
    )


def test_multi_level_factors_are_crossed_in_full():
    factors = {**TOGGLES, "lr": [1e-3, 3e-4, 1e-4], "preset": ["paper", "reviewed", "dreamer4"]}
    design = parse_design("half", factors)
    cells = design.cells()
    assert len(cells) == 8 * 3 * 3 and len({tuple(c.items()) for c in cells}) == len(cells)
    assert all(list(cell) == list(factors) for cell in cells)
    for run in design.cells()[:: 3 * 3]:
        toggles = {name: run[name] for name in TOGGLES}
        block = [c for c in cells if all(c[n] == v for n, v in toggles.items())]
        assert Counter((c["lr"], c["preset"]) for c in block) == Counter(
            itertools.product(factors["lr"], factors["preset"])
        )
    assert design.contains({**SIMPLIFIED, "lr": 1e-4, "preset": "dreamer4"})
    assert not design.contains({"lr": 1e-2})
    assert design.aliases("lr:tau_sampling:bootstrap_space") == ["half_step:tau2_weight:lr"]
    assert design.aliases("lr") == []
    assert "cells: 8 runs x 9 combinations of lr, preset = 72" in design.describe()
    by_hand = cross([{"a": 1}, {"a": -1}], {"a": [1, -1], "lr": [1, 2, 3], "k": [8, 16, 32, 64]})
    assert len(by_hand) == 2 * 3 * 4 and by_hand[0] == {"a": 1, "lr": 1, "k": 8}


def test_the_reference_level_is_coded_plus_one():
    factors = {"x": ("lo", "hi"), "y": (True, False), "z": (0, 1)}
    design = Design.full(factors, reference={"x": "hi"})
    assert design.reference == {"x": "hi", "y": True, "z": 0}
    assert design.cells()[0] == {"x": "hi", "y": True, "z": 0}
    assert not design.contains({"y": 1})  # True is a level, the number 1 is not
    with pytest.raises(ValueError, match=r"^reference 'mid' of x is not one of its levels \['lo', 'hi'\]$"):
        Design.full(factors, reference={"x": "mid"})
    with pytest.raises(ValueError, match=r"^'w' is not a factor; allowed: x, y, z$"):
        design.contains({"w": 0})


def test_describe_prints_the_design_its_resolution_and_its_aliases():
    assert parse_design("half", TOGGLES).describe() == (
        "design: 2^(4-1) fraction, D = ABC (A tau_sampling, B bootstrap_space, C half_step, D tau2_weight)\n"
        "runs: 8 of 16, both corners among them\n"
        "resolution IV: I = ABCD\n"
        "aliased among main effects and two-way interactions:\n"
        "  tau_sampling:bootstrap_space = half_step:tau2_weight\n"
        "  tau_sampling:half_step = bootstrap_space:tau2_weight\n"
        "  tau_sampling:tau2_weight = bootstrap_space:half_step"
    )
    described = parse_design("half", letters_factors(5)).describe().splitlines()
    assert described[1] == (
        "runs: 16 of 32 + 1 corner that it lacks (every factor at its other level; a word of odd length keeps it out)"
        " = 17"
    )
    assert described[2:] == ["resolution V: I = ABCDE", "main effects and two-way interactions: clear of each other"]


@given(st.sampled_from([size for size in sorted(TABLE) if size[0] <= 7 and size[1] <= size[0] - 2]), st.data())
@settings(max_examples=60, deadline=None)
def test_main_effect_columns_are_balanced_and_orthogonal(size, data):
    k, p = size
    flipped = data.draw(st.lists(st.booleans(), min_size=k, max_size=k))
    factors = {f"f{i}": ("b", "a") if flip else ("a", "b") for i, flip in enumerate(flipped)}
    design = parse_design({"fraction": f"1/{2**p}"}, factors, reference={f"f{i}": "a" for i in range(k)})
    assert design.resolution >= 3
    runs = np.array(design.runs)
    assert runs.shape == (2 ** (k - p), k) and len(set(design.runs)) == len(design.runs)
    assert (runs.sum(axis=0) == 0).all()
    assert (runs.T @ runs == len(runs) * np.eye(k)).all()
    assert design.contains({f"f{i}": "a" for i in range(k)}) and design.contains({f"f{i}": "b" for i in range(k)})


@given(st.data())
@settings(max_examples=60, deadline=None)
def test_any_valid_generators_alias_as_pydoe_reads_their_runs(data):
    k = data.draw(st.integers(4, 7))
    p = data.draw(st.integers(1, k - 2).filter(lambda p: 2 ** (k - p) > k))
    basic = LETTERS[: k - p]
    words = [w for n in range(2, k - p + 1) for w in map("".join, itertools.combinations(basic, n))]
    chosen = data.draw(st.lists(st.sampled_from(words), min_size=p, max_size=p, unique=True))
    generators = [f"{LETTERS[k - p + j]} = {word}" for j, word in enumerate(chosen)]
    try:
        design = parse_design({"generators": generators}, letters_factors(k))
    except ValueError as error:  # two words whose product has two letters: two main effects aliased
        assert " aliases the main effects of " in str(error)
        return
    assert design.resolution >= 3 and len(design.runs) == 2 ** (k - p)
    assert alias_classes(design) == pydoe_classes(design)


K4 = "design.generators: {} generators for 4 two-level factors"
ERRORS = [
    (
        "halve",
        "design: 'halve' is not a design (did you mean 'half'?); allowed: full, half, {fraction: 1/4}, "
        "{generators: [D = ABC]}",
    ),
    (3, "design: expected full, half or a mapping, got int"),
    ({"fractions": "1/2"}, "design.fractions: unknown key (did you mean 'fraction'?); allowed: fraction, generators"),
    ({}, "design: give one of fraction or generators, got neither"),
    ({"fraction": "1/2", "generators": ["D = ABC"]}, "design: give one of fraction or generators, not both"),
    ({"fraction": "1/3"}, "design.fraction: '1/3' is not 1/2^p (1/2, 1/4, 1/8, ...)"),
    ({"fraction": 0.3}, "design.fraction: 0.3 is not 1/2^p (1/2, 1/4, 1/8, ...)"),
    ({"fraction": 1}, "design.fraction: 1 is not 1/2^p (1/2, 1/4, 1/8, ...)"),
    ({"fraction": True}, "design.fraction: True is not 1/2^p (1/2, 1/4, 1/8, ...)"),
    (
        {"fraction": "1/4"},
        "design.fraction: 1/4 of 4 two-level factors: 4 runs, which hold at most 3 factors "
        "without aliasing two main effects",
    ),
    ({"fraction": 1 / 16}, "design.fraction: 1/16 of 4 two-level factors: no basic factor left (p = 4 >= k = 4)"),
    ({"generators": "D = ABC"}, "design.generators: expected a non-empty list like [D = ABC], got 'D = ABC'"),
    ({"generators": []}, "design.generators: expected a non-empty list like [D = ABC], got []"),
    (
        {"generators": ["D = ABC", "C = AB"]},
        K4.format(2) + ": 4 runs, which hold at most 3 factors without aliasing two main effects",
    ),
    ({"generators": ["A = BC"] * 4}, K4.format(4) + ": no basic factor left (p = 4 >= k = 4)"),
    ({"generators": ["E = ABC"]}, "design.generators[0]: 'E = ABC': E is not a two-level factor's letter (ABCD)"),
    ({"generators": ["D = ABI"]}, "design.generators[0]: 'D = ABI': I is not a two-level factor's letter (ABCD)"),
    ({"generators": ["D = ABD"]}, "design.generators[0]: 'D = ABD' repeats D"),
    ({"generators": ["D = ABB"]}, "design.generators[0]: 'D = ABB' repeats B"),
    ({"generators": ["D = -ABC"]}, "design.generators[0]: 'D = -ABC' is not of the form 'D = ABC'"),
    ({"generators": ["d = abc"]}, "design.generators[0]: 'd = abc' is not of the form 'D = ABC'"),
    ({"generators": ["D = A"]}, "design.generators: I = AD aliases the main effects of tau_sampling and tau2_weight"),
]
ERRORS_5 = [  # the toggles and a fifth two-level factor
    ({"generators": ["D = AB", "D = AC"]}, "design.generators[1]: 'D = AC' generates D a second time"),
    (
        {"generators": ["D = AB", "E = AD"]},
        "design.generators[1]: 'E = AD' uses D, itself generated; write the word in basic factors",
    ),
    (
        {"generators": ["D = AB", "E = AB"]},
        "design.generators: I = DE aliases the main effects of tau2_weight and teacher",
    ),
]


@pytest.mark.parametrize(
    ("factors", "spec", "message"),
    [(TOGGLES, *error) for error in ERRORS] + [({**TOGGLES, "teacher": ("self", "ema")}, *error) for error in ERRORS_5],
)
def test_the_parser_names_what_is_wrong_in_one_line(factors, spec, message):
    with pytest.raises(ValueError) as error:
        parse_design(spec, factors)
    assert str(error.value) == message


def test_a_fraction_beyond_the_table_asks_for_generators():
    with pytest.raises(ValueError) as error:
        parse_design("half", letters_factors(9))
    assert str(error.value) == (
        "design: no tabled half fraction of 9 two-level factors (the table has 3 to 8); give design.generators"
    )
    nine = parse_design({"generators": ["J = ABCDEFGH"]}, letters_factors(9))  # no I: J is the ninth letter
    assert nine.resolution == 9 and nine.resolution_label == "IX" and len(nine.runs) == 256


def test_a_term_must_name_factors_once():
    design = parse_design("half", TOGGLES)
    with pytest.raises(ValueError) as error:
        design.aliases("tau_sampling:half")
    assert str(error.value) == (
        "term 'tau_sampling:half': 'half' is not a factor (did you mean 'half_step'?); "
        "allowed: tau_sampling, bootstrap_space, half_step, tau2_weight"
    )
    with pytest.raises(ValueError, match=r"^term 'half_step:half_step' names a factor twice$"):
        design.aliases("half_step:half_step")
