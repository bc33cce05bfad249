"""The analysis of a fractional factorial: what it estimates, how sure it is, and what the report says.

A regular 2^(k-p) fraction estimates each term's alias class (with D = ABC the A:B contrast is A:B plus
C:D), on the fraction's runs only (the corner added outside them never enters a contrast), with strata
of the factors crossed in full and a stratum used in a seed only with every run present. Known designs
check the numbers on noiseless data, simulations the intervals' coverage and the opening's false-claim
rate, and drawn folders that the report never crashes and claims nothing without a claims.csv row.
"""

from __future__ import annotations

import itertools
import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from claims_simulation import draw, false_claims, true_means, truth
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthetic import drawn_trials, make_synthetic_results, variant_label

from ablate import analysis
from ablate.analysis.family import ALPHA, build_family, family_table
from ablate.analysis.fraction import fraction_mask, simple_effect_aliases
from ablate.analysis.grid import Grid, level_test, term_contrast
from ablate.design import parse_design
from ablate.report import write_report
from ablate.report.context import fmt
from ablate.results import CURVES_COLUMNS, DIVERGED, TRIALS_COLUMNS, load, write_tables
from ablate.variants import TOGGLES

A, B, C, D = TOGGLES  # tau_sampling, bootstrap_space, half_step, tau2_weight: D = ABC in the half fraction
SEED_COUNTS = (2, 3, 5)


def _effects(folder: Path, steps: int = 4) -> pd.DataFrame:
    table = analysis.factor_effects(load(folder))
    return table[(table["metric"] == "fd") & (table["steps"] == steps)].set_index("term")


# --- known designs on noiseless data -------------------------------------------------------------


def test_a_half_fraction_recovers_main_effects_exactly_and_each_two_way_term_as_its_alias_sum(tmp_path):
    """D = ABC: main effects are aliased with three-way terms only, so with two-way terms present they
    come out exact; A:B's contrast is A:B + C:D, A:C's is A:C + B:D."""
    truth_ = {A: 0.4, B: -0.2, C: 0.1, f"{A}:{B}": 0.3, f"{C}:{D}": 0.15, f"{A}:{C}": -0.25}
    make_synthetic_results(tmp_path, truth_, 0.0, [0, 1, 2], [4], ["fd"], design="half", baseline=False)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["design"]["generators"] == ["D = ABC"] and run["design"]["resolution"] == 4
    assert run["design"]["runs"] == 8 and run["design"]["extra_cells"] == []
    written = pd.read_csv(tmp_path / "metrics.csv")
    assert written["variant"].nunique() == 8 and len(run["expected_trials"]) == 8 * 3
    effects = _effects(tmp_path)
    assert list(effects.index) == [A, B, C, D, f"{A}:{B}", f"{A}:{C}", f"{A}:{D}"]  # one per alias class
    expected = {A: 0.4, B: -0.2, C: 0.1, D: 0.0, f"{A}:{B}": 0.3 + 0.15, f"{A}:{C}": -0.25, f"{A}:{D}": 0.0}
    for term, value in expected.items():
        assert effects.loc[term, "estimate"] == pytest.approx(value, abs=1e-12), term
    assert effects.loc[f"{A}:{B}", "aliases"] == f"{C}:{D}"
    assert effects.loc[A, "aliases"] == f"{B}:{C}:{D}"
    assert set(effects["resolution"]) == {"IV"}
    assert effects["method"].str.endswith("(3 seeds, 1 of 1 strata)").all()  # the fraction's 8 runs, one stratum


def test_the_full_design_record_changes_no_number(tmp_path):
    """A folder whose run.json says design full analyses exactly as one written before designs."""
    tables = []
    for name, design in (("old", None), ("full", "full")):
        folder = tmp_path / name
        make_synthetic_results(folder, {A: 0.3, f"{B}:{C}": 0.2}, 0.1, [0, 1, 2], [4], ["fd"], design=design)
        results = load(folder)
        assert results.design.resolution is None
        tables.append((analysis.factor_effects(results), analysis.stratum_effects(results)))
    for old, full in zip(*tables):
        pd.testing.assert_frame_equal(old, full)
    effects = tables[0][0].query("steps == 4")
    assert set(effects["aliases"]) == {""} and set(effects["resolution"]) == {"full"}
    assert effects["kind"].str.startswith(("main", "interaction")).sum() == 15  # every term of the 2^4


def test_the_corner_outside_the_fraction_is_in_no_contrast_but_in_the_cell_tables(tmp_path):
    """2^(5-1) E = ABCD lacks the corner with every two-level factor at its other level and runs it as an
    extra cell: however wild its values, no effect or level test moves; the cell means and the paired
    comparisons with the paper's cell read it."""
    folder = tmp_path / "run"
    make_synthetic_results(
        folder,
        {A: 0.3},
        0.05,
        [0, 1, 2],
        [4],
        ["fd"],
        design="half",
        extra_factors={"e": [1, 2], "lr": ["x", "y", "z"]},
    )
    extra = json.loads((folder / "run.json").read_text())["design"]["extra_cells"]
    assert len(extra) == 3  # the corner, at each level of lr
    before = load(folder)
    changed = before.metrics.copy()
    corner = changed["variant"].isin(extra)
    changed.loc[corner, "value"] = changed.loc[corner, "value"] * 50 + 7
    after = type(before)(before.folder, changed, before.curves, before.trials, before.run)
    columns = ["term", "kind", "estimate", "ci_low", "ci_high", "p_value", "method"]
    pd.testing.assert_frame_equal(analysis.factor_effects(before)[columns], analysis.factor_effects(after)[columns])
    anova = analysis.factor_effects(before).query("kind == 'anova' and steps == 4")
    assert anova["method"].iloc[0] == "hotelling_t2 (3 seeds, 16 of 16 strata)"  # the fraction's runs only
    assert anova["aliases"].iloc[0] == f"{A}:{B}:{C}:{D}:e:lr"
    for table, column in ((analysis.cell_summary, "mean"), (analysis.paper_vs_others, "difference")):
        old, new = (
            table(r).query("steps == 4 and metric == 'fd'").set_index("variant")[column] for r in (before, after)
        )
        assert set(extra) <= set(old.index)
        assert (new[extra] > old[extra] + 6).all()


def test_missing_trials_drop_a_whole_stratum_or_seed_never_a_single_run(tmp_path):
    """Without crossed factors the fraction is one stratum: a missing trial drops its seed from every
    term. Crossed with a 3-level factor, a missing trial drops its stratum (or its seed, whichever gives
    the narrower expected interval); the estimate stays exact on noiseless data."""
    alone = tmp_path / "alone"
    lost = variant_label({name: levels[0] for name, levels in TOGGLES.items()})  # the paper's cell
    truth_ = {A: 0.4, f"{A}:{B}": 0.2}
    make_synthetic_results(alone, truth_, 0.0, range(5), [4], ["fd"], design="half", drop_trials=[(lost, 1)])
    effects = _effects(alone)
    assert effects["method"].str.endswith("(4 seeds, 1 of 1 strata)").all()
    assert effects.loc[A, "estimate"] == pytest.approx(0.4) and effects.loc[f"{A}:{B}", "estimate"] == pytest.approx(
        0.2
    )
    crossed = tmp_path / "crossed"
    make_synthetic_results(
        crossed,
        truth_,
        0.0,
        range(5),
        [4],
        ["fd"],
        design="half",
        extra_factors={"lr": [1, 2, 3]},
        drop_trials=[(f"{lost},lr=2", 1)],
    )
    effects = _effects(crossed)
    assert effects.loc[[A, B, f"{A}:{B}"], "method"].str.endswith("(5 seeds, 2 of 3 strata)").all()
    assert effects.loc[A, "estimate"] == pytest.approx(0.4) and effects.loc[f"{A}:{B}", "estimate"] == pytest.approx(
        0.2
    )


def test_simple_effects_only_clear_of_two_way_aliasing():
    """Within B, the 2^(4-1) I = ABCD is I = ACD: A's simple effect is A + C:D, not computed; the
    2^(5-1) I = ABCDE leaves I = ACDE, A clear (its alias C:D:E). The full design: always, no alias."""
    four = {name: list(levels) for name, levels in TOGGLES.items()}
    assert simple_effect_aliases(parse_design("half", four), A, [B]) is None
    five = parse_design("half", {**four, "e": [1, 2]})
    assert simple_effect_aliases(five, A, [B]) == [f"{C}:{D}:e"]
    assert simple_effect_aliases(five, A, [B, C, D]) is None  # A:E is left: A is aliased with E there
    assert simple_effect_aliases(parse_design("full", four), A, [B, C, D]) == []


def test_a_resolved_interaction_is_followed_up_on_resolution_v_only(tmp_path):
    """The same interaction, resolved on a IV and on a V fraction: simple effects (effects.csv and the
    family's follow-ups) exist on V only, and the claims name the aliases."""
    for name, extra, followed in (("iv", None, False), ("v", {"e": [1, 2]}, True)):
        folder = tmp_path / name
        make_synthetic_results(
            folder, {f"{C}:{D}": 0.6}, 0.02, [0, 1, 2], [4], ["fd"], design="half", extra_factors=extra
        )
        effects = _effects(folder)
        family = family_table(build_family(load(folder), "fd", 4))
        assert (effects["kind"] == "simple").any() == followed
        assert family["kind"].isin(["simple", "equivalence"]).any() == followed
        write_report(folder)
        claims = pd.read_csv(folder / "claims.csv")
        interaction = claims[claims["kind"] == "interaction"].iloc[0]
        aliases = family.loc[family["term"] == interaction["term"], "aliases"].iloc[0]
        assert f"(aliased with `{aliases}`) interact" in interaction["statement"]
        report = (folder / "report.md").read_text()
        assert re.search(r"Design: half fraction 2\^\((4-1|5-1)\) of A `tau_sampling`", report)


# --- coverage of the intervals -------------------------------------------------------------------

HALF = parse_design("half", {name: ("paper", "other") for name in TOGGLES})
LEVELS = {name: ("paper", "other") for name in TOGGLES}
CODES = np.array(list(itertools.product((1, -1), repeat=4)), float)  # the 16 cells in Grid order
# Main effects and two-way terms whose aliases (three-way terms, and C:D, B:D, B:C) are null.
TRUE_EFFECTS = {(A,): 0.2, (B,): -0.1, (A, B): -0.15, (A, C): 0.1}
REPS = 300


def _cell_means() -> np.ndarray:
    means = np.ones(len(CODES))
    for term, effect in TRUE_EFFECTS.items():
        means += effect / 2 * np.prod(CODES[:, [TOGGLES_INDEX[f] for f in term]], axis=1)
    return means


TOGGLES_INDEX = {name: i for i, name in enumerate(TOGGLES)}


def _true_effect(term: tuple[str, ...]) -> float:
    return TRUE_EFFECTS.get(term, 0.0)


@pytest.fixture(scope="module")
def fraction_coverage() -> dict[tuple[str, int], float]:
    """Share of the half fraction's intervals covering their term's true effect, per seed count: seed
    effect shared by the cells, cell noise variances 30-fold apart, cells outside the fraction empty."""
    rng = np.random.default_rng(2026)
    mask = fraction_mask(HALF, LEVELS)
    means = _cell_means()
    terms = [tuple(t.split(":")) for t in HALF.estimable_terms()]
    hits: dict[tuple[str, int], list[bool]] = {}
    for n in SEED_COUNTS:
        for _ in range(REPS):
            variances = 0.01 * 30 ** rng.permutation(np.linspace(0, 1, len(CODES)))
            noise = rng.standard_normal((len(CODES), n)) * np.sqrt(variances)[:, None]
            values = means[:, None] + 0.3 * rng.standard_normal(n)[None, :] + noise
            values[~mask] = np.nan
            grid = Grid(tuple(TOGGLES), LEVELS, tuple(range(n)), values, fraction=mask)
            for term in terms:
                interval = term_contrast(grid, term).interval
                kind = "main" if len(term) == 1 else "2-way"
                hits.setdefault((kind, n), []).append(interval.low <= _true_effect(term) <= interval.high)
    return {key: float(np.mean(value)) for key, value in hits.items()}


@pytest.mark.parametrize("n_seeds", SEED_COUNTS)
@pytest.mark.parametrize("kind", ["main", "2-way"])
def test_half_fraction_intervals_cover_their_terms_at_95_percent(fraction_coverage, kind, n_seeds):
    assert 0.92 <= fraction_coverage[(kind, n_seeds)] <= 0.98, fraction_coverage


def test_a_level_test_on_a_fraction_holds_its_size():
    """A 3-level factor crossed with the half fraction, no level effect but toggle effects: Hotelling's
    p < 0.05 about 5 % of the time at 4 seeds."""
    levels = {**LEVELS, "lr": (1, 2, 3)}
    mask = fraction_mask(HALF, levels)
    rng = np.random.default_rng(5)
    cells = len(mask)
    shift = np.repeat(_cell_means(), 3)  # the toggles' effects, equal across lr
    rejected = []
    for _ in range(REPS):
        values = shift[:, None] + 0.3 * rng.standard_normal(4)[None, :] + 0.1 * rng.standard_normal((cells, 4))
        values[~mask] = np.nan
        p, usage = level_test(Grid((*TOGGLES, "lr"), levels, tuple(range(4)), values, fraction=mask), "lr")
        assert usage.n_strata == usage.total_strata == 8
        rejected.append(p < 0.05)
    assert 0.02 <= np.mean(rejected) <= 0.09


# --- the opening's false claims ------------------------------------------------------------------

REPLICATES = 200  # per seed count: 600 reports, a Monte Carlo standard error of 0.9 % at 5 %


@pytest.mark.slow
def test_on_a_half_fraction_with_every_cell_equal_the_opening_claims_something_in_at_most_5_percent():
    rng = np.random.default_rng(11)
    means = true_means(10.0, {}, design="half")
    true = truth(means, 10.0, design="half")
    assert len(true[true["kind"].str.startswith(("main", "interaction"))]) == 7
    rates, examples = {}, []
    for n in SEED_COUNTS:
        bad = 0
        for _ in range(REPLICATES):
            family = family_table(build_family(draw(means, 10.0, n, rng, design="half"), "m", 4))
            wrong = false_claims(family, true)
            bad += bool(wrong)
            examples += wrong
        rates[n] = bad / REPLICATES
    assert np.mean(list(rates.values())) <= ALPHA + 0.025, (rates, examples[:10])
    assert max(rates.values()) <= ALPHA + 0.05, (rates, examples[:10])


# --- drawn fractions through the report ----------------------------------------------------------


@st.composite
def fractions(draw_):
    """3-6 two-level factors on a half or (from 5 on) quarter fraction, 1-4 seeds, effects on main and
    two-way terms, some trials diverged or missing, with or without the flow baseline."""
    k = draw_(st.integers(3, 6))
    spec = draw_(st.sampled_from(["half", {"fraction": "1/4"}] if k >= 5 else ["half"]))
    factors = [{"name": f"f{i}", "levels": ["l0", "l1"], "reference": "l0"} for i in range(k)]
    names = [f["name"] for f in factors]
    design = parse_design(spec, {f["name"]: f["levels"] for f in factors})
    seeds = list(range(draw_(st.sampled_from([3, 4, 1, 2]))))
    rng = np.random.default_rng(draw_(st.integers(0, 2**16)))
    size = draw_(st.sampled_from([0.5, 0.0]))  # on the log scale: most drawn terms are resolved at 3 seeds
    terms = [(name,) for name in names] + list(itertools.combinations(names, 2))
    effects = {terms[i]: size * rng.choice([-1, 1]) for i in rng.choice(len(terms), 3, replace=False)}
    p_diverge, p_missing = draw_(st.sampled_from([0.0, 0.0, 0.05])), draw_(st.sampled_from([0.0, 0.0, 0.05]))
    variants = [("_".join(cell.values()), cell) for cell in design.cells()]
    if draw_(st.booleans()):
        variants.append(("flow", dict.fromkeys(names)))
    metric_rows, trial_rows, expected = [], [], []
    for ident, levels, status in drawn_trials(variants, seeds, rng, p_missing, p_diverge, expected, trial_rows):
        coded = {name: 1 if level == "l0" else -1 for name, level in levels.items() if level is not None}
        shift = sum(e / 2 * np.prod([coded[f] for f in term]) for term, e in effects.items()) if coded else 0.0
        value = np.nan if status == DIVERGED else float(np.exp(rng.normal(shift, 0.05)))
        metric_rows.append({**ident, "steps": 4, "metric": "loss", "value": value})
    run = {
        "name": "drawn fraction",
        "task": {"name": "drawn", "sample_format": "points"},
        "factors": factors,
        "design": {"spec": spec, "generators": list(design.generators), "resolution": design.resolution},
        "seeds": seeds,
        "eval_steps": [4],
        "k_max": 4,
        "expected_trials": expected,
        "paper_variant": "_".join("l0" for _ in names),
        "simplified_variant": None,
        "baseline_variant": "flow" if any(v == "flow" for v, _ in variants) else None,
        "primary_metric": "loss",
        "primary_steps": 4,
        "metric_directions": {"loss": "min"},
        "metric_scales": {"loss": "log"},
        "share_metrics": {},
        "learnability_gate": [],
    }
    ident = ["trial_id", "variant", *names, "seed", "status"]
    metrics = pd.DataFrame(metric_rows, columns=[*ident, "steps", "metric", "value"])
    trials = pd.DataFrame(trial_rows, columns=[*ident, "diverged_step"]).reindex(columns=[*ident, *TRIALS_COLUMNS[4:]])
    return metrics, trials, run, ident


@given(fractions())
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_any_fraction_gets_a_report_whose_claims_are_claims_csv_rows(drawn):
    metrics, trials, run, ident = drawn
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_tables(folder, metrics, pd.DataFrame(columns=[*ident, *CURVES_COLUMNS[-3:]]), trials, run)
        report = write_report(folder).read_text()
        if not (folder / "claims.csv").exists():
            assert "No trial has metric rows yet" in report
            return
        opening = report.split("\n\n")[1]
        claims = pd.read_csv(folder / "claims.csv", keep_default_na=False)
        family = pd.read_csv(folder / "family.csv", keep_default_na=False)
        effects = pd.read_csv(folder / "effects.csv", keep_default_na=False)
        design = load(folder).design
        terms = effects.loc[effects["kind"].str.startswith(("main", "interaction")), "term"]
        assert set(terms) <= set(design.estimable_terms())
        assert "Design: " in report and design.defining_relation in report
        for _, claim in claims.iterrows():
            assert claim["statement"] in opening
            assert f"adjusted p = {fmt(float(claim['p_adjusted']))}" in claim["statement"]
            aliases = family.loc[(family["term"] == claim["term"]) & (family["kind"] == claim["kind"]), "aliases"]
            if claim["kind"] in ("main", "interaction") and len(aliases) and aliases.iloc[0]:
                assert "aliased with" in claim["statement"]
        resolved_text = opening.split("Resolved:")[1].split("Not resolved")[0] if "Resolved:" in opening else ""
        quoted = set(re.findall(r"adjusted p = ([0-9.e+-]+\d)", resolved_text))
        assert quoted <= {fmt(float(p)) for p in claims["p_adjusted"]}
        assert not family["kind"].isin(["simple", "equivalence"]).any() or (design.resolution or 99) >= 5
