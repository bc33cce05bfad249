"""Statistics of the ablation grid on synthetic results with known, injected effects."""

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from synthetic import make_synthetic_results

from ablate import analysis
from ablate.analysis import inference
from ablate.results import TRAINING_STATS, Results, load, write_tables

MAIN, INTERACTION = "tau_sampling", "half_step:tau2_weight"
INJECTED = {MAIN: 0.4, INTERACTION: 0.25}
NULL = "bootstrap_space"
STEPS = [1, 4]


@pytest.fixture(scope="module")
def balanced(tmp_path_factory):
    folder = tmp_path_factory.mktemp("balanced")
    # Fixed data seed: each 95% CI misses its true value for about 1 in 20 data seeds.
    make_synthetic_results(folder, INJECTED, noise_sd=0.05, seeds=range(5), steps=STEPS, metrics=["w2"], seed=0)
    return load(folder)


@pytest.fixture(scope="module")
def balanced_effects(balanced):
    return analysis.factor_effects(balanced)


def test_effects_recover_injected_values_within_their_ci(balanced_effects):
    terms = balanced_effects[balanced_effects["kind"] != "simple"]
    effects = terms.set_index(["term", "steps"])
    assert terms["method"].eq("seed_paired_t (5 seeds, 8 of 8 strata)").sum() == 4 * len(STEPS)
    assert terms["method"].str.startswith("seed_paired_t (5 seeds").all()
    assert len(terms) == 15 * len(STEPS)  # the full factorial: 4 main, 6 two-way, 4 three-way, 1 four-way
    assert terms.groupby("kind").size().to_dict() == {
        "main": 4 * len(STEPS),
        "interaction": 6 * len(STEPS),
        "interaction3": 4 * len(STEPS),
        "interaction4": len(STEPS),
    }
    for k in STEPS:
        for term, value in INJECTED.items():
            row = effects.loc[(term, k)]
            assert row["ci_low"] <= value <= row["ci_high"], (term, k)
            assert row["p_holm"] < 0.01
        null = effects.loc[(NULL, k)]
        assert null["ci_low"] <= 0 <= null["ci_high"]
        assert null["p_holm"] > 0.05
    assert (terms["p_holm"] >= terms["p_value"] - 1e-15).all()
    assert (terms["scale"] == "raw").all() and terms["within"].isna().all()


def test_effect_interval_is_the_t_interval_of_per_seed_contrasts(balanced, balanced_effects):
    """By hand: each seed's (mean at +1 - mean at -1), then Student's t over the 5 seeds."""
    data = analysis.ok_values(balanced)
    data = data[(data["steps"] == 4) & data["tau_sampling"].notna()]
    codes = np.where(data["half_step"] == "velocity", 1, -1) * np.where(data["tau2_weight"] == True, 1, -1)  # noqa: E712
    per_seed = [
        g.loc[codes[data.index.get_indexer(g.index)] > 0, "value"].mean()
        - g.loc[codes[data.index.get_indexer(g.index)] < 0, "value"].mean()
        for _, g in data.groupby("seed")
    ]
    low, high = stats.t.interval(0.95, 4, loc=np.mean(per_seed), scale=stats.sem(per_seed))
    row = balanced_effects.set_index(["term", "steps", "kind"]).loc[(INTERACTION, 4, "interaction")]
    assert (row["estimate"], row["ci_low"], row["ci_high"]) == pytest.approx((np.mean(per_seed), low, high))
    assert row["p_value"] == pytest.approx(stats.ttest_1samp(per_seed, 0).pvalue)


def test_simple_effects_follow_an_interaction_that_excludes_zero(balanced, balanced_effects):
    simple = balanced_effects[(balanced_effects["kind"] == "simple") & (balanced_effects["steps"] == 4)]
    assert set(zip(simple["term"], simple["within"])) >= {
        ("half_step", "tau2_weight=True"),
        ("half_step", "tau2_weight=False"),
        ("tau2_weight", "half_step=velocity"),
        ("tau2_weight", "half_step=renoise"),
    }
    row = simple.set_index(["term", "within"]).loc[("half_step", "tau2_weight=False")]
    data = analysis.ok_values(balanced)
    data = data[(data["steps"] == 4) & (data["tau2_weight"] == False)]  # noqa: E712
    by_hand = (
        data.loc[data["half_step"] == "velocity", "value"].mean()
        - data.loc[data["half_step"] == "renoise", "value"].mean()
    )
    assert row["estimate"] == pytest.approx(by_hand)
    assert row["ci_low"] <= -INJECTED[INTERACTION] <= row["ci_high"]  # the effect flips with the weight
    assert (row["plus_level"], row["minus_level"]) == ("velocity", "renoise")
    assert simple["p_holm"].notna().all()


def test_three_way_interaction_and_log_scale_ratios(tmp_path):
    three = "bootstrap_space:half_step:tau2_weight"
    make_synthetic_results(
        tmp_path, {three: 0.3, MAIN: 0.2}, noise_sd=0.02, seeds=range(3), steps=[4], metrics=["fd"], seed=11
    )
    results = load(tmp_path)
    raw = analysis.factor_effects(results).set_index(["term", "kind"])
    assert raw.loc[(three, "interaction3"), "ci_low"] <= 0.3 <= raw.loc[(three, "interaction3"), "ci_high"]
    assert raw.loc[(three, "interaction3"), "p_holm"] < 0.05
    assert analysis.metric_scales(results) == {"fd": "raw"}  # the task declares no scale
    # the same grid made multiplicative, from a task that declares fd a distance: read on the log scale
    metrics = results.metrics.assign(value=np.exp(6 * results.metrics["value"]))
    write_tables(tmp_path, metrics, results.curves, results.trials, {**results.run, "metric_scales": {"fd": "log"}})
    results = load(tmp_path)
    assert analysis.metric_scales(results) == {"fd": "log"}
    effects = analysis.factor_effects(results).set_index(["term", "kind"])
    row = effects.loc[(MAIN, "main")]
    data = analysis.ok_values(results)
    data = data[data["tau_sampling"].notna()]
    grid = np.log(data.loc[data["tau_sampling"] == "grid", "value"]).mean()
    cont = np.log(data.loc[data["tau_sampling"] == "continuous", "value"]).mean()
    assert row["ratio"] == pytest.approx(np.exp(grid - cont))
    assert row["ratio_ci_low"] <= np.exp(6 * 0.2) <= row["ratio_ci_high"]
    assert row["scale"] == "log" and row["ratio_p_holm"] < 0.05


def test_estimate_is_mean_at_plus_one_minus_mean_at_minus_one(balanced, balanced_effects):
    results = balanced
    data = analysis.ok_values(results)
    data = data[(data["steps"] == 4) & data["tau_sampling"].notna()]
    grid = data["tau_sampling"] == "grid"
    by_hand_main = data.loc[grid, "value"].mean() - data.loc[~grid, "value"].mean()
    same = (data["half_step"] == "velocity") == (data["tau2_weight"] == True)  # noqa: E712
    by_hand_interaction = data.loc[same, "value"].mean() - data.loc[~same, "value"].mean()
    effects = balanced_effects.set_index(["term", "steps"])["estimate"]
    assert effects[(MAIN, 4)] == pytest.approx(by_hand_main, abs=1e-12)
    assert effects[(INTERACTION, 4)] == pytest.approx(by_hand_interaction, abs=1e-12)
    main = balanced_effects[(balanced_effects["term"] == MAIN) & (balanced_effects["steps"] == 4)]
    assert main[["plus_level", "minus_level"]].iloc[0].tolist() == ["grid", "continuous"]


def test_cells_ci_covers_truth_and_counts_diverged(tmp_path):
    sick = ("cont_vboot_vstep_now2", 2)
    truth = make_synthetic_results(
        tmp_path, INJECTED, noise_sd=0.05, seeds=range(5), steps=STEPS, metrics=["w2"], diverge_cells=[sick], seed=2
    )
    cells = analysis.cell_summary(load(tmp_path)).merge(truth, on=["variant", "steps", "metric"])
    assert len(cells) == 17 * len(STEPS)
    is_sick = cells["variant"] == sick[0]
    assert (cells.loc[is_sick, "n_seeds"] == 4).all() and (cells.loc[is_sick, "n_diverged"] == 1).all()
    assert (cells.loc[~is_sick, "n_seeds"] == 5).all() and (cells.loc[~is_sick, "n_diverged"] == 0).all()
    covered = (cells["ci_low"] <= cells["true_mean"]) & (cells["true_mean"] <= cells["ci_high"])
    assert covered.mean() >= 0.85  # 95 % nominal over 34 cells (tests/test_coverage.py simulates it)
    assert set(cells["ci_method"]) == {"student_t"}
    raw = load(tmp_path).metrics
    ok = raw[(raw["variant"] == sick[0]) & (raw["steps"] == 4) & (raw["status"] == "ok")]
    row = cells[is_sick & (cells["steps"] == 4)].iloc[0]
    assert row["mean"] == pytest.approx(ok["value"].mean())
    low, high = stats.t.interval(0.95, 3, loc=ok["value"].mean(), scale=stats.sem(ok["value"]))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))
    assert row["gmean"] == pytest.approx(stats.gmean(ok["value"]))


def test_t_interval_needs_two_values_and_is_exact():
    one = analysis.t_interval(np.array([1.0]))
    assert np.isnan(one.low) and np.isnan(one.high) and one.estimate == 1.0
    constant = analysis.t_interval(np.full(3, 2.0))  # tied seeds: no certainty, no interval
    assert constant.tied and np.isnan([constant.low, constant.high, constant.p_value]).all()
    floored = analysis.t_interval(np.full(3, 2.0), floor_sd=0.1)  # a declared measurement noise
    assert floored.high - floored.low == pytest.approx(2 * 4.3027 * 0.1 / np.sqrt(3), rel=1e-4)
    two = analysis.t_interval(np.array([1.0, 2.0]))  # t(1) = 12.706: honest, and wide
    assert (two.low, two.high) == pytest.approx((1.5 - 12.7062 * 0.5, 1.5 + 12.7062 * 0.5), abs=1e-3)


@pytest.fixture(scope="module")
def no_weight_diverges(tmp_path_factory):
    folder = tmp_path_factory.mktemp("no_weight")
    make_synthetic_results(
        folder,
        INJECTED,
        noise_sd=0.05,
        seeds=range(3),
        steps=[4],
        metrics=["w2"],
        diverge_cells=[{"tau2_weight": False}],
        seed=3,
    )
    return load(folder)


def test_whole_cells_diverged_leave_the_complete_strata(no_weight_diverges):
    effects = analysis.factor_effects(no_weight_diverges)
    effects = effects[effects["kind"] != "simple"].set_index("term")
    assert effects.loc[MAIN, "method"] == "seed_paired_t (3 seeds, 4 of 8 strata)"
    assert effects.loc[MAIN, "ci_low"] <= INJECTED[MAIN] <= effects.loc[MAIN, "ci_high"]
    assert np.isnan(effects.loc["tau2_weight", "estimate"])
    assert effects.loc["tau2_weight", "method"] == "impossible (0 of 8 strata complete in any seed)"
    assert np.isnan(effects.loc[INTERACTION, "estimate"])
    assert effects.loc["tau_sampling:half_step", "method"] == "seed_paired_t (3 seeds, 2 of 4 strata)"
    assert analysis.empty_cells(no_weight_diverges, "w2", 4) == [
        v for v in no_weight_diverges.variant_levels()["variant"] if v.endswith("now2")
    ]


def test_matched_pair_estimate_by_hand(tmp_path):
    gone = "cont_xboot_renoise_w2"
    make_synthetic_results(
        tmp_path, INJECTED, noise_sd=0.05, seeds=range(2), steps=[4], metrics=["w2"], drop_trials=[gone], seed=4
    )
    results = load(tmp_path)
    effects = analysis.factor_effects(results).query("kind == 'main'").set_index("term")
    assert effects.loc[MAIN, "method"] == "seed_paired_t (2 seeds, 7 of 8 strata)"
    means = analysis.ok_values(results).groupby("variant")["value"].mean()
    pairs = [(v, "cont" + v[len("grid") :]) for v in means.index if v.startswith("grid_")]
    by_hand = np.mean([means[a] - means[b] for a, b in pairs if b != gone])
    assert effects.loc[MAIN, "estimate"] == pytest.approx(by_hand, abs=1e-12)
    assert analysis.missing_trials(results)["variant"].tolist() == [gone, gone]


def test_a_scattered_diverged_trial_drops_its_seed_or_its_stratum_never_values(tmp_path):
    make_synthetic_results(
        tmp_path,
        INJECTED,
        noise_sd=0.05,
        seeds=range(5),
        steps=[4],
        metrics=["w2"],
        diverge_cells=[("grid_xboot_vstep_w2", 3)],
        seed=8,
    )
    effects = analysis.factor_effects(load(tmp_path)).set_index(["term", "kind"])
    # 5 seeds x 7 strata (35 pairs) beat 4 seeds x 8 strata (32)
    assert effects.loc[(MAIN, "main"), "method"] == "seed_paired_t (5 seeds, 7 of 8 strata)"
    assert effects.loc[(MAIN, "main"), "n"] == 70


def test_factor_with_three_levels_gets_a_hotelling_row(tmp_path):
    make_synthetic_results(
        tmp_path,
        {MAIN: 0.4},
        noise_sd=0.05,
        seeds=range(4),
        steps=[4],
        metrics=["w2"],
        extra_factors={"teacher": ["sg", "ema", "avg"]},
        baseline=False,
        seed=5,
    )
    effects = analysis.factor_effects(load(tmp_path)).set_index("term")
    assert effects.loc["teacher", "kind"] == "anova" and np.isnan(effects.loc["teacher", "estimate"])
    assert effects.loc["teacher", "method"] == "hotelling_t2 (4 seeds, 16 of 16 strata)"
    assert effects.loc["teacher", "p_value"] > 0.01  # no injected teacher effect
    assert effects.loc[MAIN, "ci_low"] <= 0.4 <= effects.loc[MAIN, "ci_high"]
    assert effects.loc[MAIN, "method"] == "seed_paired_t (4 seeds, 24 of 24 strata)"
    make_synthetic_results(
        tmp_path / "two",
        {},
        noise_sd=0.05,
        seeds=range(2),
        steps=[4],
        metrics=["w2"],
        extra_factors={"teacher": ["sg", "ema", "avg"]},
        baseline=False,
    )
    two = analysis.factor_effects(load(tmp_path / "two")).set_index("term")
    assert two.loc["teacher", "method"] == "hotelling_t2 impossible (2 seeds for 3 levels)"


def test_paper_vs_others_is_paired_by_seed_with_holm(balanced):
    results = balanced
    table = analysis.paper_vs_others(results, steps=[4])
    assert len(table) == 16 and results.paper_variant not in set(table["variant"])
    assert (table["comparison"] == "paired_t").all() and (table["n_pairs"] == 5).all()
    values = analysis.ok_values(results)
    values = values[values["steps"] == 4].pivot_table(index="seed", columns="variant", values="value")
    simple = table.set_index("variant").loc[results.simplified_variant]
    differences = values[results.simplified_variant] - values[results.paper_variant]
    assert simple["difference"] == pytest.approx(differences.mean())
    assert simple["p_value"] == pytest.approx(
        stats.ttest_rel(values[results.simplified_variant], values[results.paper_variant]).pvalue
    )
    assert simple["ci_low"] < simple["difference"] < simple["ci_high"]
    assert (table["p_holm"] >= table["p_value"] - 1e-15).all()
    flow = table.set_index("variant").loc["flow"]
    assert flow["verdict"] == "paper better" and flow["p_holm"] < 0.05


def test_divergence_table_counts_per_variant_and_level(no_weight_diverges):
    table = analysis.divergence_table(no_weight_diverges).set_index(["group", "level"])
    assert table.loc[("all", "all"), "n_diverged"] == 24
    assert table.loc[("tau2_weight", False), "n_diverged"] == 24
    assert table.loc[("tau2_weight", True), "n_diverged"] == 0
    assert table.loc[("variant", "grid_vboot_vstep_now2"), "share_diverged"] == 1.0


def test_half_normal_scores_and_horizon_grouping(balanced_effects):
    at_4 = balanced_effects[balanced_effects["steps"] == 4]
    scores = analysis.half_normal_scores(at_4)
    assert scores["abs_estimate"].is_monotonic_increasing and scores["quantile"].is_monotonic_increasing
    assert scores["term"].iloc[-1] == MAIN
    groups = analysis.horizon_metrics(["mse", "mse_h1", "mse_h2", "mse_h10", "lpips_h1"])
    assert groups == {"mse": [(1, "mse_h1"), (2, "mse_h2"), (10, "mse_h10")]}


def test_write_tables_validates_and_load_reads_csv_like_parquet(balanced, tmp_path):
    results = balanced
    with pytest.raises(ValueError, match="tau2_weight"):
        write_tables(tmp_path, results.metrics.drop(columns="tau2_weight"), results.curves, results.trials, results.run)
    write_tables(tmp_path, results.metrics, results.curves, results.trials, results.run)
    for name in ("metrics", "curves"):
        (tmp_path / f"{name}.parquet").unlink()
    from_csv = load(tmp_path)
    assert json.loads((tmp_path / "run.json").read_text())["name"] == results.name
    pd.testing.assert_frame_equal(from_csv.metrics, results.metrics, check_dtype=False)
    assert set(from_csv.metrics["tau2_weight"].dropna().map(type)) == {bool}
    assert from_csv.reference_levels["tau2_weight"] is True


def test_every_trial_diverged_gives_no_estimates_and_no_crash(tmp_path):
    make_synthetic_results(
        tmp_path,
        INJECTED,
        noise_sd=0.05,
        seeds=range(2),
        steps=[4],
        metrics=["w2"],
        diverge_cells=[{"tau_sampling": "grid"}, {"tau_sampling": "continuous"}],
    )
    results = load(tmp_path)
    effects = analysis.factor_effects(results)
    assert effects["estimate"].isna().all() and effects["method"].str.startswith("impossible (0 of").all()
    cells = analysis.cell_summary(results)
    assert (cells.loc[cells["variant"] != "flow", "n_seeds"] == 0).all()
    assert (cells.loc[cells["variant"] != "flow", "n_diverged"] == 2).all()
    table = analysis.paper_vs_others(results)
    assert (table["variant"] == "flow").sum() == 1 and table["ci_low"].isna().all()


def test_noise_floors_are_summarised_once_and_never_compared(tmp_path):
    make_synthetic_results(
        tmp_path,
        INJECTED,
        noise_sd=0.05,
        seeds=range(2),
        steps=STEPS,
        metrics=["w2"],
        noise_floors={"w2": 0.6},
        diverge_cells=[("flow", 0)],
        seed=6,
    )
    results = load(tmp_path)
    floor = analysis.noise_floors(results).iloc[0]
    assert (floor["metric"], floor["floor_metric"], floor["n_trials"]) == ("w2", "w2_floor", 33)
    assert floor["mean"] == floor["ci_low"] == floor["ci_high"] == pytest.approx(0.6)
    assert set(analysis.cell_summary(results)["metric"]) == {"w2"}
    assert set(analysis.factor_effects(results)["metric"]) == {"w2"}
    assert set(analysis.paper_vs_others(results, steps=[4])["metric"]) == {"w2"}


def test_floor_names_need_their_base_metric():
    names = ["w2", "w2_floor", "kid_floor", "mse_h1", "mse_h1_floor"]
    assert analysis.floor_metrics(names) == {"w2": "w2_floor", "mse_h1": "mse_h1_floor"}
    assert analysis.quality_metrics(names) == ["w2", "kid_floor", "mse_h1"]


def test_stratum_effects_show_each_toggle_within_every_combination_of_the_others(balanced):
    strata = analysis.stratum_effects(balanced)
    at_4 = strata[strata["steps"] == 4]
    assert len(at_4) == 4 * 8 and set(at_4["term"]) == set(balanced.two_level_factors)
    half = at_4[at_4["term"] == "half_step"]
    with_weight = half[half["within"].str.contains("tau2_weight=True")]
    assert (with_weight["estimate"] > 0).all() and (half.drop(with_weight.index)["estimate"] < 0).all()


# --- pinned by mutation testing (docs/mutation.md) -------------------------------------------------------


def test_power_of_the_seed_paired_t_test_is_the_two_sided_noncentral_t_power():
    from statsmodels.stats.power import TTestPower

    for effect, n, alpha in [(0.3, 10, 0.05), (1.0, 4, 0.05), (-1.0, 4, 0.05), (2.0, 3, 0.1)]:
        expected = TTestPower().power(effect, n, alpha, alternative="two-sided")
        assert inference.paired_t_power(effect, n, alpha) == pytest.approx(expected, rel=1e-9)
    # no effect: each tail holds alpha / 2
    assert inference.paired_t_power(0.0, 5) == pytest.approx(0.05, rel=1e-9)
    assert inference.paired_t_power(0.0, 5, alpha=0.1) == pytest.approx(0.1, rel=1e-9)


def test_minimum_detectable_effect_is_the_effect_with_80_percent_power_in_units_of_sd():
    from statsmodels.stats.power import TTestPower

    for sd, n, alpha in [(2.0, 2, 0.05), (1.0, 5, 0.05), (1.0, 30, 0.05), (3.0, 5, 0.1), (1.0, 5, 0.01)]:
        size = TTestPower().solve_power(nobs=n, alpha=alpha, power=0.8)
        assert inference.minimum_detectable_effect(sd, n, alpha=alpha) == pytest.approx(sd * size, rel=1e-6)
    assert np.isnan(inference.minimum_detectable_effect(1.0, 1))  # one seed: no test
    assert np.isnan(inference.minimum_detectable_effect(np.nan, 5))
    assert inference.minimum_detectable_effect(0.0, 5) == 0.0


def test_seeds_needed_is_the_fewest_seeds_that_reach_80_percent_power():
    for effect in (15.0, 10.0, 2.0, 1.4, 0.5, 0.3):  # 2, 3, 5, 7, 34 and 90 seeds
        for alpha in (0.05, 0.1):
            fewest = next(n for n in range(2, 1000) if inference.paired_t_power(effect, n, alpha) >= 0.8)
            assert inference.seeds_needed(effect, 1.0, alpha=alpha) == fewest
            assert inference.seeds_needed(-2 * effect, 2.0, alpha=alpha) == fewest  # only |effect| / sd counts
    assert inference.seeds_needed(1e-3, 1.0) == math.inf  # beyond MAX_SEEDS
    assert inference.seeds_needed(0.1, 0.0) == 2.0  # no noise: the fewest seeds a t-test takes
    for effect, sd in [(0.0, 1.0), (0.1, np.nan), (np.inf, 1.0)]:
        assert np.isnan(inference.seeds_needed(effect, sd)), (effect, sd)


AB = [{"name": "a", "levels": ["p", "q"], "reference": "p"}, {"name": "b", "levels": [True, False], "reference": True}]


def in_memory(values, factors=AB, statuses=None, **run):
    """A Results without files. ``values[(cell, metric, steps)]`` lists one value per seed (NaN: the trial
    finished without one), ``cell`` being a tuple of factor levels or the name of a baseline;
    ``statuses[(cell, seed)]`` overrides "ok" (the value stays: a trial that diverged at the last K can still
    have scored the first). The variant label joins the levels: ``p_True``."""
    names = [f["name"] for f in factors]
    statuses = statuses or {}
    rows = []
    for (cell, metric, steps), per_seed in values.items():
        levels = dict(zip(names, cell)) if isinstance(cell, tuple) else dict.fromkeys(names)
        variant = "_".join(map(str, cell)) if isinstance(cell, tuple) else cell
        for seed, value in enumerate(per_seed):
            status = statuses.get((cell, seed), "ok")
            rows.append(
                {
                    "trial_id": f"{variant}/{seed}",
                    "variant": variant,
                    **levels,
                    "seed": seed,
                    "status": status,
                    "steps": steps,
                    "metric": metric,
                    "value": value,
                }
            )
    metrics = pd.DataFrame(rows)
    trials = metrics.drop(columns=["steps", "metric", "value"]).drop_duplicates("trial_id").reset_index(drop=True)
    paper = "_".join(str(f["reference"]) for f in factors)
    return Results(
        folder=Path("in-memory"),
        metrics=metrics,
        curves=pd.DataFrame(),
        trials=trials,
        run={"factors": factors, "paper_variant": paper, "metric_scales": DECLARED_SCALES, **run},
    )


# What the tests' task declares: the multiplicative metrics (err, mult) are read on the log scale, every
# other metric is undeclared and so raw.
DECLARED_SCALES = {"err": "log", "mult": "log"}


def per_seed_contrast(results, metric, steps, term, within=None, log=False):
    """By hand: per seed, mean over the cells coded +1 minus mean over those coded -1 (codes multiply
    over the term's factors; +1 at the reference level), within fixed levels of other factors."""
    data = analysis.ok_values(results)
    data = data[(data["metric"] == metric) & (data["steps"] == steps) & data[term[0]].notna()]
    refs = results.reference_levels
    code = np.prod([np.where(data[f].to_numpy(object) == refs[f], 1, -1) for f in term], axis=0)
    keep = np.ones(len(data), bool)
    for factor, level in (within or {}).items():
        keep &= data[factor].to_numpy(object) == level
    value = np.log(data["value"]) if log else data["value"]
    table = pd.DataFrame({"seed": data["seed"], "code": code, "value": value})[keep]
    means = table.groupby(["seed", "code"])["value"].mean().unstack()
    return (means[1] - means[-1]).to_numpy()


def t_numbers(per_seed, confidence):
    """estimate, CI and p-value of Student's t over the per-seed numbers, by scipy; numbers that are all
    equal give a zero-width interval, p = 1 at 0 and p = 0 elsewhere (t_interval's documented rule)."""
    n, mean = len(per_seed), float(np.mean(per_seed))
    if np.ptp(per_seed) == 0:
        return mean, mean, mean, 1.0 if mean == 0 else 0.0
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=stats.sem(per_seed))
    return mean, low, high, stats.ttest_1samp(per_seed, 0).pvalue


def holm_by_statsmodels(p_values):
    from statsmodels.stats.multitest import multipletests

    return multipletests(p_values, method="holm")[1]


# err: multiplicative (log scale, no interaction on the log scale, a clear one on the raw scale);
# gain: additive with an interaction (raw scale: one value is not positive).
EFFECT_VALUES = {
    (("p", True), "err", 4): [1.0, 1.3, 0.8],
    (("p", False), "err", 4): [2.1, 2.5, 1.7],
    (("q", True), "err", 4): [10.5, 12.0, 9.0],
    (("q", False), "err", 4): [20.0, 26.0, 17.0],
    (("p", True), "gain", 4): [-0.1, 0.2, 0.1],
    (("p", False), "gain", 4): [1.0, 1.4, 1.1],
    (("q", True), "gain", 4): [2.0, 2.3, 1.9],
    (("q", False), "gain", 4): [0.5, 0.8, 0.5],
}


def test_effects_table_matches_contrasts_computed_by_hand_column_by_column():
    """Every column of effects.csv for a 2 x 2 design at 90 %: terms, Holm over the terms of one
    metric x K, ratios from log values, and the simple effects of an interaction that excludes the
    null on the metric's scale (gain, raw) but not of one that excludes it on the other scale only (err)."""
    results = in_memory(EFFECT_VALUES, metric_directions={"gain": "max"})
    assert analysis.metric_scales(results) == {"err": "log", "gain": "raw"}
    table = analysis.factor_effects(results, confidence=0.9)
    assert list(table.columns) == analysis.EFFECT_COLUMNS
    levels = {"a": ("p", "q"), "b": (True, False)}
    expected = []
    for metric, scale in (("err", "log"), ("gain", "raw")):
        positive = metric == "err"
        family = []
        for term in (("a",), ("b",), ("a", "b")):
            estimate, low, high, p = t_numbers(per_seed_contrast(results, metric, 4, term), 0.9)
            row = {
                "term": ":".join(term),
                "metric": metric,
                "steps": 4,
                "estimate": estimate,
                "ci_low": low,
                "ci_high": high,
                "p_value": p,
                "n": 12,
                "kind": "main" if len(term) == 1 else "interaction",
                "order": len(term),
                "within": None,
                "n_seeds": 3,
                "scale": scale,
                "method": f"seed_paired_t (3 seeds, {2 if len(term) == 1 else 1} of "
                f"{2 if len(term) == 1 else 1} strata)",
                "plus_level": levels[term[0]][0] if len(term) == 1 else np.nan,
                "minus_level": levels[term[0]][1] if len(term) == 1 else np.nan,
                "ratio": np.nan,
                "ratio_ci_low": np.nan,
                "ratio_ci_high": np.nan,
                "ratio_p_value": np.nan,
            }
            if positive:
                g_estimate, g_low, g_high, g_p = t_numbers(per_seed_contrast(results, metric, 4, term, log=True), 0.9)
                row.update(
                    ratio=np.exp(g_estimate),
                    ratio_ci_low=np.exp(g_low),
                    ratio_ci_high=np.exp(g_high),
                    ratio_p_value=g_p,
                )
            family.append(row)
        for column in ("p_value", "ratio_p_value"):
            adjusted = (
                holm_by_statsmodels([r[column] for r in family]) if positive or column == "p_value" else [np.nan] * 3
            )
            for r, p in zip(family, adjusted):
                r[column.replace("p_value", "p_holm")] = p
        expected += family
        interaction = family[2]
        if metric == "err":  # on the log scale the toggles multiply: no simple effects
            assert (
                interaction["ratio_ci_low"] <= 1 <= interaction["ratio_ci_high"]
                and interaction["ci_high"] > 0
                and interaction["ci_low"] > 0
            )
            continue
        assert interaction["ci_high"] < 0
        for factor, other in (("a", "b"), ("b", "a")):
            simple = []
            for level in levels[other]:
                per_seed = per_seed_contrast(results, metric, 4, (factor,), {other: level})
                estimate, low, high, p = t_numbers(per_seed, 0.9)
                simple.append(
                    {
                        "term": factor,
                        "metric": metric,
                        "steps": 4,
                        "estimate": estimate,
                        "ci_low": low,
                        "ci_high": high,
                        "p_value": p,
                        "n": 6,
                        "kind": "simple",
                        "order": 1,
                        "within": f"{other}={level}",
                        "n_seeds": 3,
                        "scale": scale,
                        "method": "seed_paired_t (3 seeds, 1 of 1 strata)",
                        "plus_level": levels[factor][0],
                        "minus_level": levels[factor][1],
                        "ratio": np.nan,
                        "ratio_ci_low": np.nan,
                        "ratio_ci_high": np.nan,
                        "ratio_p_value": np.nan,
                        "ratio_p_holm": np.nan,
                    }
                )
            for r, p in zip(simple, holm_by_statsmodels([r["p_value"] for r in simple])):
                r["p_holm"] = p
            expected += simple
    expected = pd.DataFrame(expected).assign(aliases="", resolution="full")  # the full factorial: no aliases
    expected = expected.reindex(columns=analysis.EFFECT_COLUMNS)
    pd.testing.assert_frame_equal(table, expected, check_dtype=False, rtol=1e-9)


def test_strata_table_matches_simple_contrasts_by_hand_with_holm_over_each_toggles_strata():
    results = in_memory(EFFECT_VALUES, metric_directions={"gain": "max"})
    table = analysis.stratum_effects(results, confidence=0.9)
    levels = {"a": ("p", "q"), "b": (True, False)}
    expected = []
    for metric, scale in (("err", "log"), ("gain", "raw")):
        for factor, other in (("a", "b"), ("b", "a")):
            strata = []
            for level in levels[other]:
                within = {other: level}
                estimate, low, high, p = t_numbers(per_seed_contrast(results, metric, 4, (factor,), within), 0.9)
                row = {
                    "term": factor,
                    "within": f"{other}={level}",
                    "metric": metric,
                    "steps": 4,
                    "estimate": estimate,
                    "ci_low": low,
                    "ci_high": high,
                    "p_value": p,
                    "n_seeds": 3,
                    "scale": scale,
                    "ratio": np.nan,
                    "ratio_ci_low": np.nan,
                    "ratio_ci_high": np.nan,
                    "ratio_p_value": np.nan,
                    "plus_level": levels[factor][0],
                    "minus_level": levels[factor][1],
                }
                if scale == "log":
                    g = t_numbers(per_seed_contrast(results, metric, 4, (factor,), within, log=True), 0.9)
                    row.update(
                        ratio=np.exp(g[0]), ratio_ci_low=np.exp(g[1]), ratio_ci_high=np.exp(g[2]), ratio_p_value=g[3]
                    )
                strata.append(row)
            for column in ("p_value", "ratio_p_value"):
                ps = [r[column] for r in strata]
                adjusted = holm_by_statsmodels(ps) if np.isfinite(ps).all() else [np.nan] * len(ps)
                for r, p in zip(strata, adjusted):
                    r[column.replace("p_value", "p_holm")] = p
            expected += strata
    expected = pd.DataFrame(expected)[analysis.STRATA_COLUMNS]
    pd.testing.assert_frame_equal(table, expected, check_dtype=False, rtol=1e-9)


def hotelling_by_hand(level_means):
    """Hotelling's one-sample T^2 on per-seed level means minus their average (last level dropped)."""
    x = (level_means - level_means.mean(axis=1, keepdims=True))[:, :-1]
    n, p = x.shape
    mean, cov = x.mean(axis=0), np.cov(x, rowvar=False)
    t2 = n * mean @ np.linalg.solve(cov, mean)
    return stats.f.sf(t2 * (n - p) / (p * (n - 1)), p, n - p)


def test_anova_row_of_a_three_level_factor_is_hotelling_on_raw_and_on_log_values():
    factors = [AB[0], {"name": "c", "levels": ["x", "y", "z"], "reference": "x"}]
    rng = np.random.default_rng(1)
    base = {"x": 1.0, "y": 1.5, "z": 3.0}
    values = {
        ((a, c), "err", 4): list(base[c] * (1.5 if a == "q" else 1) * np.exp(0.2 * rng.standard_normal(4)))
        for a in ("p", "q")
        for c in ("x", "y", "z")
    }
    values[(("q", "z"), "gain", 4)] = [-1.0, 1.0, 2.0, 3.0]  # not positive: no log-scale test
    for a in ("p", "q"):
        for c in ("x", "y"):
            values[((a, c), "gain", 4)] = list(0.1 + rng.random(4))
    values[(("p", "z"), "gain", 4)] = list(0.1 + rng.random(4))
    results = in_memory(values, factors=factors)
    table = analysis.factor_effects(results).set_index(["metric", "term"])
    data = analysis.ok_values(results)
    err = data[data["metric"] == "err"]
    level_means = err.pivot_table(index="seed", columns="c", values="value", aggfunc="mean")[["x", "y", "z"]]
    log_means = err.assign(value=np.log(err["value"])).pivot_table(
        index="seed", columns="c", values="value", aggfunc="mean"
    )[["x", "y", "z"]]
    row = table.loc[("err", "c")]
    assert (row["kind"], row["order"], row["n"], row["n_seeds"]) == ("anova", 1, 24, 4)
    assert row["method"] == "hotelling_t2 (4 seeds, 2 of 2 strata)"
    assert row["within"] is None and np.isnan(row[["estimate", "ci_low", "ci_high", "ratio"]].astype(float)).all()
    assert row["p_value"] == pytest.approx(hotelling_by_hand(level_means.to_numpy()), rel=1e-9)
    assert row["ratio_p_value"] == pytest.approx(hotelling_by_hand(log_means.to_numpy()), rel=1e-9)
    assert row["ratio_p_value"] != pytest.approx(row["p_value"])
    gain = table.loc[("gain", "c")]
    assert np.isfinite(gain["p_value"]) and np.isnan(gain["ratio_p_value"])
    assert table.loc[("gain", "a"), ["ratio", "ratio_ci_low", "ratio_p_value"]].isna().all()


@pytest.mark.parametrize(
    "row, raw, log",
    [
        (dict(ci_low=0.5, ci_high=2.0, ratio_ci_low=0.8, ratio_ci_high=1.5), True, False),
        (dict(ci_low=-2.0, ci_high=-0.5, ratio_ci_low=1.2, ratio_ci_high=1.8), True, True),
        (dict(ci_low=-1.0, ci_high=1.0, ratio_ci_low=0.2, ratio_ci_high=0.5), False, True),
        (dict(ci_low=0.0, ci_high=1.0, ratio_ci_low=1.0, ratio_ci_high=1.5), False, False),  # touching is not excluding
        (dict(ci_low=-1.0, ci_high=0.0, ratio_ci_low=0.5, ratio_ci_high=1.0), False, False),
        (dict(ci_low=-1.0, ci_high=0.5, ratio_ci_low=0.2, ratio_ci_high=1.5), False, False),
    ],
)
def test_excludes_null_reads_zero_on_the_raw_scale_and_one_on_the_log_scale(row, raw, log):
    assert analysis.excludes_null(row, "raw") is raw and analysis.excludes_null(row, "log") is log


def test_within_labels_join_the_fixed_levels_in_order():
    from ablate.analysis.effects import within_label

    assert within_label({"b": True, "a": "p"}) == "b=True & a=p"


def test_effect_and_strata_tables_without_factors_keep_their_columns():
    flow_only = in_memory({("flow", "err", 4): [1.0, 2.0]}, factors=[])
    assert list(analysis.factor_effects(flow_only).columns) == analysis.EFFECT_COLUMNS
    assert list(analysis.stratum_effects(flow_only).columns) == analysis.STRATA_COLUMNS
    assert analysis.factor_effects(flow_only).empty and analysis.stratum_effects(flow_only).empty
    assert analysis.power_table(flow_only).empty  # no factorial term, no comparison: nothing to power


def paired_by_hand(variant, reference, confidence):
    """The comparison columns of variant - reference over the seeds both have (dicts seed -> value)."""
    both = [s for s in variant if s in reference]
    a, b = np.array([variant[s] for s in both]), np.array([reference[s] for s in both])
    estimate, low, high, p = t_numbers(a - b, confidence)
    row = {
        "difference": estimate,
        "ci_low": low,
        "ci_high": high,
        "p_value": p,
        "n_pairs": len(both),
        "ratio": np.nan,
        "ratio_ci_low": np.nan,
        "ratio_ci_high": np.nan,
        "ratio_p_value": np.nan,
    }
    if (a > 0).all() and (b > 0).all():
        g = t_numbers(np.log(a) - np.log(b), confidence)
        row.update(ratio=np.exp(g[0]), ratio_ci_low=np.exp(g[1]), ratio_ci_high=np.exp(g[2]), ratio_p_value=g[3])
    return row


COMPARED = {  # insertion order is the order the variants first appear in metrics.csv
    (("p", True), "acc", 4): [0.5, 0.7, 0.6],  # the paper's, positive and <= 1
    (("q", False), "acc", 4): [0.9, 1.0, 0.95],
    (("p", False), "acc", 4): [0.0, 0.3, 0.2],  # a zero: no ratio
    (("q", True), "acc", 4): [0.9, 0.95, 0.8],
    ("flow", "acc", 4): [0.1, 0.2, 0.15],
    (("p", True), "err", 1): [1.0, 10.0, 100.0],
    (("q", False), "err", 1): [2.1, 19.0, 230.0],  # a steady ratio, a raw difference that is not
    (("p", False), "err", 1): [1.2, 11.0, 101.0],
    (("q", True), "err", 1): [20.0, 190.0, 2100.0],
    ("flow", "err", 1): [1.1, 8.0, 120.0],
    (("p", True), "err", 4): [1.0, 1.3, 0.8],
    (("q", False), "err", 4): [20.0, 26.0, 17.0],
    (("p", False), "err", 4): [2.1, 2.5, 1.7],
    (("q", True), "err", 4): [10.5, 12.0, 9.0],
    ("flow", "err", 4): [3.0, np.nan, 2.0],
    (("p", True), "zero", 4): [0.0, 0.5, 0.4],  # the paper's has a zero: no ratio for anyone
    (("q", False), "zero", 4): [0.2, 0.6, 0.5],
    (("p", False), "zero", 4): [0.1, 0.7, 0.5],
    (("q", True), "zero", 4): [0.3, 0.9, 0.6],
}


def test_paper_vs_others_table_matches_paired_differences_by_hand():
    results = in_memory(COMPARED, statuses={(("q", True), 2): "diverged"}, metric_directions={"acc": "max"})
    scales = analysis.metric_scales(results)
    assert scales == {"acc": "raw", "err": "log", "zero": "raw"}
    table = analysis.paper_vs_others(results, confidence=0.9)
    assert list(table.columns) == analysis.comparisons.COMPARISON_COLUMNS
    ok = analysis.ok_values(results)
    expected = []
    for metric, steps in (("acc", 4), ("err", 1), ("err", 4), ("zero", 4)):
        data = ok[(ok["metric"] == metric) & (ok["steps"] == steps)]
        by_variant = {v: dict(zip(g["seed"], g["value"])) for v, g in data.groupby("variant", sort=False)}
        paper = by_variant["p_True"]
        family = [
            {
                "metric": metric,
                "steps": steps,
                "variant": v,
                "comparison": "paired_t",
                "n_paper": len(paper),
                "n_variant": len(values),
                "scale": scales[metric],
                **paired_by_hand(values, paper, 0.9),
            }
            for v, values in by_variant.items()
            if v != "p_True"
        ]
        for column in ("p_value", "ratio_p_value"):
            finite = [i for i, r in enumerate(family) if np.isfinite(r[column])]
            adjusted = holm_by_statsmodels([family[i][column] for i in finite]) if finite else []
            for r in family:
                r[column.replace("p_value", "p_holm")] = np.nan
            for i, p in zip(finite, adjusted):
                family[i][column.replace("p_value", "p_holm")] = p
        for r in family:
            r["verdict"] = analysis.verdict(r, scales[metric], "max" if metric == "acc" else "min")
        expected += family
    expected = pd.DataFrame(expected)[analysis.comparisons.COMPARISON_COLUMNS]
    pd.testing.assert_frame_equal(table, expected, check_dtype=False, rtol=1e-9)
    assert table["variant"].tolist()[:4] == ["q_False", "p_False", "q_True", "flow"]
    by_row = table.set_index(["metric", "steps", "variant"])
    assert by_row.loc[("err", 1, "q_False"), "verdict"] == "paper better"  # read on the ratio
    assert by_row.loc[("acc", 4, "q_False"), "verdict"] == "variant better"  # higher accuracy is better
    only = analysis.paper_vs_others(results, confidence=0.9, metrics=["err"], steps=[4])
    pd.testing.assert_frame_equal(
        only.reset_index(drop=True), table[(table["metric"] == "err") & (table["steps"] == 4)].reset_index(drop=True)
    )


@pytest.mark.parametrize(
    "row, scale, direction, adjusted, expected",
    [
        (dict(ci_low=0.1, ci_high=0.5, p_value=0.01, p_holm=0.2), "raw", "min", True, "indistinguishable"),
        (dict(ci_low=0.1, ci_high=0.5, p_value=0.01, p_holm=0.2), "raw", "min", False, "paper better"),
        (
            dict(ci_low=0.1, ci_high=0.5, p_value=0.01, p_holm=1 - analysis.CONFIDENCE),
            "raw",
            "max",
            True,
            "variant better",
        ),  # p = alpha is significant
        (dict(ci_low=-0.5, ci_high=-0.1, p_value=0.01, p_holm=0.01), "raw", "min", True, "variant better"),
        (dict(ci_low=0.0, ci_high=0.5, p_value=0.01, p_holm=0.01), "raw", "min", True, "indistinguishable"),
        (dict(ci_low=-0.5, ci_high=0.0, p_value=0.01, p_holm=0.01), "raw", "min", True, "indistinguishable"),
        (dict(ci_low=0.1, ci_high=np.nan, p_value=0.01, p_holm=0.01), "raw", "min", True, "no CI"),
        (
            dict(
                ci_low=-0.5,
                ci_high=0.5,
                p_value=0.5,
                p_holm=0.5,
                ratio_ci_low=1.2,
                ratio_ci_high=1.8,
                ratio_p_value=0.01,
                ratio_p_holm=0.01,
            ),
            "log",
            "max",
            True,
            "variant better",
        ),
        (
            dict(
                ci_low=0.1,
                ci_high=0.5,
                p_value=0.01,
                p_holm=0.01,
                ratio_ci_low=0.5,
                ratio_ci_high=0.9,
                ratio_p_value=0.01,
                ratio_p_holm=0.01,
            ),
            "log",
            "max",
            True,
            "paper better",
        ),
        (
            dict(
                ci_low=0.1,
                ci_high=0.5,
                p_value=0.01,
                p_holm=0.01,
                ratio_ci_low=0.9,
                ratio_ci_high=1.1,
                ratio_p_value=0.01,
                ratio_p_holm=0.01,
            ),
            "log",
            "min",
            True,
            "indistinguishable",
        ),
        (
            dict(
                ci_low=0.1,
                ci_high=0.5,
                p_value=0.01,
                p_holm=0.01,
                ratio_ci_low=np.nan,
                ratio_ci_high=1.1,
                ratio_p_value=0.01,
                ratio_p_holm=0.01,
            ),
            "log",
            "min",
            True,
            "no CI",
        ),
    ],
)
def test_verdict_reads_the_adjusted_p_and_the_ci_on_the_metrics_scale(row, scale, direction, adjusted, expected):
    by_default = analysis.verdict(row, scale, direction) if adjusted else None  # adjusted by default
    assert analysis.verdict(row, scale, direction, adjusted=adjusted) == expected and by_default in (None, expected)


TREND = {
    # lin (raw scale): a steady +0.5 from K=4 to K=16 that is a 50 %, 5 % and 0.5 % change
    (("p", True), "lin", 1): [30.0, 40.0, 50.0],
    (("p", True), "lin", 4): [1.0, 10.0, 100.0],
    (("p", True), "lin", 16): [1.5, 10.5, 100.5],
    **{(cell, "lin", k): [30.0, 40.0, 50.0] for cell in (("p", False), ("q", True), ("q", False)) for k in (1, 4, 16)},
    # mult (log scale): p_True grows by a steady factor 1.25-1.35 (raw differences 0.3 to 2: not steady)
    (("p", True), "mult", 4): [1.0, 2.0, 8.0],
    (("p", True), "mult", 16): [1.3, 2.7, 10.0],
    (("q", True), "mult", 4): [20.0, 40.0, 80.0],
    (("q", True), "mult", 16): [18.0, 39.0, 70.0],
    # acc (higher is better, raw): p_True unchanged, q_True drops
    (("p", True), "acc", 4): [0.5, 0.6, 0.7],
    (("p", True), "acc", 16): [0.5, 0.6, 0.7],
    (("q", True), "acc", 4): [0.5, 0.6, 0.7],
    (("q", True), "acc", 16): [0.4, 0.45, 0.6],
    # a noise floor has no scale of its own: read raw
    (("p", True), "lin_floor", 4): [0.1, 0.2, 0.3],
    (("p", True), "lin_floor", 16): [0.2, 0.3, 0.3],
}


def test_the_worsening_test_is_one_sided_and_paired_by_seed_on_the_metrics_scale():
    """The opening's "gets worse with more steps": the paper's variant at k_max against the primary K."""
    results = in_memory(TREND, metric_directions={"acc": "max"}, primary_steps=4)

    def worsening(metric):
        table = analysis.family_table(analysis.build_family(results, metric, 4))
        return table[table["kind"] == "worsening"].iloc[0]

    mult = worsening("mult")  # log scale: a steady factor of about 1.3
    diffs = np.log([1.3 / 1.0, 2.7 / 2.0, 10.0 / 8.0])
    assert mult["p_value"] == pytest.approx(stats.ttest_1samp(diffs, 0, alternative="greater").pvalue, rel=1e-9)
    assert mult["estimate"] == pytest.approx(np.exp(diffs.mean()))
    for metric in ("lin", "acc"):  # +0.5 in every seed, and no change at all: the seeds tie, no test
        tied = worsening(metric)
        assert np.isnan(tied["p_value"]) and "tie" in tied["method"] and not tied["resolved"]
    assert worsening("lin")["estimate"] == pytest.approx(0.5)
    # at K = 16 there is nothing beyond: no worsening test
    assert "worsening" not in set(analysis.family_table(analysis.build_family(results, "lin", 16))["kind"])


def test_power_rows_are_per_term_from_its_own_spread_at_its_share_of_the_family():
    results = in_memory(EFFECT_VALUES)
    table = analysis.power_table(results)
    gain = table[table["metric"] == "gain"].set_index("term")
    codes = {"a": [1, 1, -1, -1], "b": [1, -1, 1, -1], "a:b": [1, -1, -1, 1]}
    cells = [("p", True), ("p", False), ("q", True), ("q", False)]
    values = np.array([EFFECT_VALUES[(cell, "gain", 4)] for cell in cells])
    for term, code in codes.items():
        per_seed = np.array(code) @ values / 2
        sd = per_seed.std(ddof=1)
        row = gain.loc[term]
        assert (row["contrast_sd"], row["alpha"], row["family_size"], row["n_seeds"]) == pytest.approx(
            (sd, 0.05 / 3, 3, 3)
        )
        assert row["mde"] == pytest.approx(inference.minimum_detectable_effect(sd, 3, 0.8, 0.05 / 3), rel=1e-9)
        level = abs(values.mean())
        assert row["seeds_for_10pct"] == inference.seeds_needed(0.1 * level, sd, 0.8, 0.05 / 3)
    err = table[table["metric"] == "err"].set_index("term")  # declared log: the log of the ratio
    assert err.loc["a", "mde_percent"] == pytest.approx(100 * (np.exp(err.loc["a", "mde"]) - 1))


def ab_grid(values, seeds=(0, 1, 2)):
    from ablate.analysis.grid import Grid

    return Grid(("a", "b"), {"a": ("p", "q"), "b": (True, False)}, tuple(seeds), np.array(values, float))


CELLS = {
    (("p", True), "err", 4): [1.0, 1.3, 0.8],
    (("p", False), "err", 4): [2.1, 2.5, 1.7],  # seed 1 diverged, seed 2 failed: one value left
    (("q", True), "err", 4): [10.5, 12.0, np.nan],  # seed 2 finished without a value
    (("q", False), "err", 4): [0.0, 26.0, 17.0],  # a zero: no geometric mean
    ("flow", "err", 4): [3.0, 2.0, 2.5],
    ("flow", "err_floor", 4): [0.2, 0.3, 0.3],  # differs by seed: a CI of non-zero width
    (("p", True), "err_floor", 4): [0.2, 0.3, 0.4],
}


def test_cell_summary_and_noise_floor_rows_by_hand():
    results = in_memory(CELLS, statuses={(("p", False), 1): "diverged", (("p", False), 2): "failed"})
    cells = analysis.cell_summary(results, confidence=0.9)
    expected = []
    for variant, a, b, values, diverged, failed in [
        ("flow", np.nan, None, [3.0, 2.0, 2.5], 0, 0),
        ("p_False", "p", False, [2.1], 1, 1),
        ("p_True", "p", True, [1.0, 1.3, 0.8], 0, 0),
        ("q_False", "q", False, [0.0, 26.0, 17.0], 0, 0),
        ("q_True", "q", True, [10.5, 12.0], 0, 0),
    ]:
        values = np.array(values)
        if len(values) > 1:
            mean, low, high, _ = t_numbers(values, 0.9)
            std, method = np.std(values, ddof=1), "student_t"
        else:
            mean, low, high, std, method = values[0], np.nan, np.nan, np.nan, "none (n<2)"
        if (values > 0).all() and len(values) > 1:
            g = t_numbers(np.log(values), 0.9)
            geometric = (np.exp(g[0]), np.exp(g[1]), np.exp(g[2]))
        elif (values > 0).all():
            geometric = (values[0], np.nan, np.nan)
        else:
            geometric = (np.nan, np.nan, np.nan)
        expected.append(
            {
                "variant": variant,
                "a": a,
                "b": b,
                "steps": 4,
                "metric": "err",
                "n_seeds": len(values),
                "n_diverged": diverged,
                "n_failed": failed,
                "mean": mean,
                "std": std,
                "ci_low": low,
                "ci_high": high,
                "ci_method": method,
                "gmean": geometric[0],
                "gmean_ci_low": geometric[1],
                "gmean_ci_high": geometric[2],
            }
        )
    pd.testing.assert_frame_equal(cells, pd.DataFrame(expected), check_dtype=False, rtol=1e-9)
    floors = analysis.noise_floors(results, confidence=0.9)
    per_seed = np.array([0.2, 0.3, 0.35])  # each seed's mean over its finished trials
    mean, low, high, _ = t_numbers(per_seed, 0.9)
    pd.testing.assert_frame_equal(
        floors,
        pd.DataFrame(
            [
                {
                    "metric": "err",
                    "floor_metric": "err_floor",
                    "n_trials": 6,
                    "n_seeds": 3,
                    "mean": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "ci_method": "student_t",
                }
            ]
        ),
        check_dtype=False,
        rtol=1e-9,
    )
    one_seed = analysis.noise_floors(in_memory({("flow", "err", 4): [1.0], ("flow", "err_floor", 4): [0.5]}))
    assert one_seed[["n_seeds", "mean", "ci_method"]].iloc[0].tolist() == [1, 0.5, "none (n<2)"]
    two_seeds = analysis.noise_floors(in_memory({("flow", "err", 4): [1.0, 1.0], ("flow", "err_floor", 4): [0.5, 0.5]}))
    assert two_seeds["ci_method"].tolist() == ["student_t"]
    none = analysis.noise_floors(in_memory({("flow", "err", 4): [1.0]}))
    assert none.empty and list(none.columns) == [
        "metric",
        "floor_metric",
        "n_trials",
        "n_seeds",
        "mean",
        "ci_low",
        "ci_high",
        "ci_method",
    ]


def expected_trials(cells, seeds, with_levels=True):
    return [
        {
            "trial_id": f"{'_'.join(map(str, cell))}/{s}",
            "variant": "_".join(map(str, cell)),
            **(dict(zip(("a", "b"), cell)) if with_levels else {}),
            "seed": s,
        }
        for cell in cells
        for s in seeds
    ]


STATUS = {
    (("p", True), "err", 4): [1.0, 2.0],
    (("p", False), "err", 4): [1.5, 2.5],
    (("q", True), "err", 4): [3.0, 4.0],
    (("q", True), "acc", 1): [0.5, 0.6],
}
STATUSES = {(("p", False), 1): "diverged", (("q", True), 0): "failed"}
ALL_CELLS = [("p", True), ("p", False), ("q", True), ("q", False)]


def test_divergence_table_counts_ran_and_missing_trials_per_variant_and_level_quietly():
    results = in_memory(STATUS, statuses=STATUSES, expected_trials=expected_trials(ALL_CELLS, (0, 1)))
    columns = ["group", "level", "n_trials", "n_ok", "n_diverged", "n_failed", "n_missing", "share_diverged"]
    expected = pd.DataFrame(
        [
            ("all", "all", 6, 4, 1, 1, 2, 1 / 6),
            ("variant", "p_True", 2, 2, 0, 0, 0, 0.0),
            ("variant", "p_False", 2, 1, 1, 0, 0, 0.5),
            ("variant", "q_True", 2, 1, 0, 1, 0, 0.0),
            ("variant", "q_False", 0, 0, 0, 0, 2, np.nan),  # expected, never ran
            ("a", "p", 4, 3, 1, 0, 0, 0.25),
            ("a", "q", 2, 1, 0, 1, 2, 0.0),
            ("b", True, 4, 3, 0, 1, 0, 0.0),
            ("b", False, 2, 1, 1, 0, 2, 0.5),
        ],
        columns=columns,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a group without trials is NaN, not a 0/0 warning
        table = analysis.divergence_table(results)
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)
    results.trials = pd.DataFrame()  # without trials.csv the metric rows say which trials ran
    pd.testing.assert_frame_equal(analysis.divergence_table(results), expected, check_dtype=False)
    # expected trials listed without their levels: missing per variant, not per level
    bare = in_memory(STATUS, statuses=STATUSES, expected_trials=expected_trials(ALL_CELLS, (0, 1), with_levels=False))
    assert analysis.divergence_table(bare)["n_missing"].tolist() == [2, 0, 0, 0, 2, 0, 0, 0, 0]


def test_missing_trials_from_run_json_or_from_trials_marked_missing():
    results = in_memory(STATUS, statuses=STATUSES, expected_trials=expected_trials(ALL_CELLS, (0, 1)))
    pd.testing.assert_frame_equal(
        analysis.missing_trials(results), pd.DataFrame(expected_trials([("q", False)], (0, 1))), check_dtype=False
    )
    marked = in_memory(STATUS, statuses={**STATUSES, (("q", True), 1): "missing"})
    pd.testing.assert_frame_equal(
        analysis.missing_trials(marked),
        pd.DataFrame([{"trial_id": "q_True/1", "variant": "q_True", "a": "q", "b": True, "seed": 1}]),
        check_dtype=False,
    )


def test_empty_cells_are_the_factorial_variants_without_a_value_at_that_metric_and_k():
    results = in_memory(STATUS, statuses=STATUSES, expected_trials=expected_trials(ALL_CELLS, (0, 1)))
    assert analysis.empty_cells(results, "err", 4) == ["q_False"]  # expected, never ran
    assert analysis.empty_cells(results, "acc", 1) == ["p_True", "p_False", "q_False"]  # err only, or nothing
    assert analysis.empty_cells(results, "acc", 4) == ["p_True", "p_False", "q_True", "q_False"]  # err at K=4 only


def test_horizon_metrics_need_two_horizons():
    assert analysis.horizon_metrics(["mse_h1", "mse_h2", "lpips_h3"]) == {"mse": [(1, "mse_h1"), (2, "mse_h2")]}


def test_grid_from_rows_keeps_the_given_seeds_or_takes_them_sorted_from_the_rows():
    from ablate.analysis.grid import Grid

    rows = pd.DataFrame({"a": ["q", "p", "p"], "b": [False, True, True], "seed": [7, 3, 7], "value": [4.0, 1.0, 2.0]})
    levels = {"a": ["p", "q"], "b": [True, False]}
    given = Grid.from_rows(rows, levels, seeds=[3, 5, 7])
    assert given.seeds == (3, 5, 7) and given.levels == {"a": ("p", "q"), "b": (True, False)}
    np.testing.assert_array_equal(given.values, [[1.0, np.nan, 2.0], [np.nan] * 3, [np.nan] * 3, [np.nan, np.nan, 4.0]])
    drawn = Grid.from_rows(rows, levels)
    assert drawn.seeds == (3, 7)
    np.testing.assert_array_equal(drawn.values, given.values[:, [0, 2]])


def test_log_scale_of_zero_or_negative_values_is_quiet():
    grid = ab_grid([[1.0, 0.0, -1.0], [np.e, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        logged = grid.on_scale("log")
    np.testing.assert_array_equal(logged[0], [0.0, -np.inf, np.nan])
    assert logged[1, 0] == 1.0 and grid.on_scale("raw") is grid.values and not grid.positive


def test_expected_width_rule_seeds_count_more_than_strata_and_one_seed_ranks_last():
    from ablate.analysis.grid import _expected_width

    for strata, seeds in [(1, 2), (8, 2), (3, 5)]:
        by_hand = stats.t.ppf(0.975, seeds - 1) / math.sqrt(seeds * strata)
        assert _expected_width(strata, seeds) == pytest.approx(by_hand)
    assert _expected_width(0, 3) == _expected_width(4, 0) == math.inf
    assert _expected_width(1, 2) < _expected_width(8, 1) < _expected_width(4, 1) < math.inf


def test_one_complete_seed_gives_no_ci_and_a_level_that_never_finished_no_test():
    from ablate.analysis.grid import level_test, term_contrast

    one_seed = ab_grid([[1.0, np.nan], [2.0, 3.0], [3.0, 4.0], [4.0, np.nan]], seeds=(0, 1))
    contrast = term_contrast(one_seed, ("a",))
    assert contrast.method == "single seed: no CI (2 of 2 strata)" and contrast.interval.estimate == -2.0
    from ablate.analysis.grid import Grid

    three = Grid(("c",), {"c": ("x", "y", "z")}, (0, 1, 2), np.array([[1.0, 2.0, 3.0], [2.0, 2.5, 3.5], [np.nan] * 3]))
    none = term_contrast(ab_grid([[1.0, np.nan], [np.nan, 3.0], [3.0, 4.0], [4.0, 5.0]], seeds=(0, 1)), ("a", "b"))
    assert (none.n_strata, none.total_strata, none.n_values, none.interval.n) == (0, 1, 0, 0)
    assert none.method == "impossible (0 of 1 strata complete in any seed)"
    p, usage = level_test(three, "c")
    assert np.isnan(p) and (usage.n_strata, usage.total_strata, usage.n_values, usage.interval.n) == (0, 1, 0, 0)


def test_t_interval_edge_cases_and_scipy_agreement_at_any_confidence():
    empty = inference.t_interval(np.array([]))
    assert (
        empty.n == 0
        and empty.df == 0
        and np.isnan([empty.estimate, empty.low, empty.high, empty.p_value, empty.sd]).all()
    )
    one = inference.t_interval([2.5])
    assert (one.estimate, one.n, one.df) == (2.5, 1, 0) and np.isnan([one.low, one.high, one.p_value, one.sd]).all()
    zeros, twos = inference.t_interval([0.0, 0.0, 0.0]), inference.t_interval([2.0, 2.0])
    assert zeros.tied and twos.tied and (twos.estimate, twos.sd, twos.n) == (2.0, 0.0, 2)
    assert np.isnan([zeros.low, zeros.high, zeros.p_value, twos.low, twos.high, twos.p_value]).all()
    wider = inference.t_interval([1.0, 1.2, 0.8], floor_sd=0.01)  # a floor below the spread changes nothing
    expected = stats.t.interval(0.95, 2, loc=1.0, scale=stats.sem([1.0, 1.2, 0.8]))
    assert (wider.low, wider.high) == pytest.approx(expected)
    values = [0.3, 1.1, 0.2, 0.9]
    interval = inference.t_interval(values, confidence=0.9)
    low, high = stats.t.interval(0.9, 3, loc=np.mean(values), scale=stats.sem(values))
    assert (interval.low, interval.high, interval.sd) == pytest.approx((low, high, np.std(values, ddof=1)))
    assert interval.p_value == pytest.approx(stats.ttest_1samp(values, 0).pvalue) and interval.df == 3
    assert interval.excludes_zero and not inference.t_interval([-1.0, 1.0]).excludes_zero
    assert inference.t_interval([-1.0, -1.1, -0.9]).excludes_zero and not zeros.excludes_zero


def test_hotelling_p_value_by_hand_and_nan_when_it_cannot_be_computed():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 2)) + [0.3, -0.2]
    mean, cov = x.mean(axis=0), np.cov(x, rowvar=False)
    t2 = 6 * mean @ np.linalg.solve(cov, mean)
    assert inference.hotelling_p_value(x) == pytest.approx(stats.f.sf(t2 * 4 / (2 * 5), 2, 4), rel=1e-12)
    one_dim = x[:, :1]  # p = 1: the squared one-sample t
    assert inference.hotelling_p_value(one_dim) == pytest.approx(stats.ttest_1samp(one_dim[:, 0], 0).pvalue)
    assert np.isnan(inference.hotelling_p_value(x[:2]))  # no more seeds than dimensions
    assert np.isnan(inference.hotelling_p_value(x[:1, :1]))
    assert np.isfinite(inference.hotelling_p_value(x[:3]))
    assert np.isnan(inference.hotelling_p_value(np.column_stack([x[:, 0], x[:, 0]])))  # singular covariance


def test_holm_skips_nan_entries_and_leaves_them_nan():
    adjusted = inference.holm([0.01, np.nan, 0.04, 0.03])
    np.testing.assert_allclose(adjusted, [0.03, np.nan, 0.06, 0.06])
    assert np.isnan(inference.holm([np.nan, np.nan])).all() and inference.holm([]) == []


def test_the_scale_is_declared_by_the_task_never_read_off_the_values():
    def scales(values, **run):
        cells = dict(zip([("p", True), ("p", False), ("q", True), ("q", False)], values))
        return analysis.metric_scales(in_memory({(cell, "m", 4): v for cell, v in cells.items()}, **run))

    log = {"metric_scales": {"m": "log"}}
    assert scales([[1.0, 1.0], [10.0, 10.0], [2.0, 2.0], [3.0, 3.0]], **log) == {"m": "log"}
    assert scales([[1.0, 1.0], [9.0, 9.0], [2.0, 2.0], [3.0, 3.0]], **log) == {"m": "log"}  # span: no matter
    assert scales([[0.0, 1.0], [10.0, 10.0], [2.0, 2.0], [3.0, 3.0]], **log) == {"m": "log"}  # one zero neither
    assert scales([[1.0, 1.0], [100.0, 100.0], [2.0, 2.0], [3.0, 3.0]]) == {"m": "raw"}  # undeclared: raw
    overridden = in_memory({(("p", True), "m", 4): [1.0, 2.0], (("p", True), "n", 4): [1.0, 2.0]}, **log)
    overridden.scale_overrides = {"m": "raw", "n": "log"}  # `ablate report --scale m=raw,n=log`
    assert analysis.metric_scales(overridden) == {"m": "raw", "n": "log"}
    assert analysis.scale_overrides(overridden, {"m": "raw"}) == {"m": "raw"}
    for bad, named in (({"nope": "log"}, "no quality metric 'nope'"), ({"m": "sqrt"}, "log or raw")):
        with pytest.raises(ValueError, match=named):
            analysis.scale_overrides(overridden, bad)


def test_tables_of_a_run_without_values_keep_their_columns():
    columns = ["trial_id", "variant", "a", "b", "seed", "status", "steps", "metric", "value"]
    empty = Results(
        folder=Path("in-memory"),
        metrics=pd.DataFrame(columns=columns),
        curves=pd.DataFrame(),
        trials=pd.DataFrame(columns=columns[:6]),
        run={"factors": AB},
    )
    assert list(analysis.power_table(empty).columns) == analysis.power.POWER_COLUMNS
    assert list(analysis.paper_vs_others(empty).columns) == analysis.comparisons.COMPARISON_COLUMNS


def test_simple_effects_within_a_level_with_a_space_stay_one_holm_family():
    spaced = [{"name": "a", "levels": ["p", "q r"], "reference": "p"}, AB[1]]
    values = {
        (("q r" if a == "q" else a, b), metric, k): v
        for ((a, b), metric, k), v in EFFECT_VALUES.items()
        if metric == "gain"
    }
    table = analysis.factor_effects(in_memory(values, factors=spaced))
    simple = table[(table["kind"] == "simple") & (table["term"] == "b")]
    assert simple["within"].tolist() == ["a=p", "a=q r"]
    np.testing.assert_allclose(simple["p_holm"], holm_by_statsmodels(simple["p_value"].tolist()))


def test_stability_table_averages_what_the_stabilisers_did_per_variant():
    results = in_memory({(("p", True), "gain", 1): [1.0, 2.0], ("flow", "gain", 1): [3.0, 4.0]})
    stats = {
        "p_True/0": (0.5, 2, 3.0, 1500.0, 1000),
        "p_True/1": (0.1, 0, 9.0, 1700.0, 1000),
        "flow/0": (0.0, 0, 1.0, 1000.0, 1000),
        "flow/1": (0.0, 1, 2.0, 1000.0, 1000),
    }
    for trial_id, row in stats.items():
        results.trials.loc[results.trials["trial_id"] == trial_id, list(TRAINING_STATS)] = row
    table = analysis.stability_table(results).set_index("variant")
    assert list(table.reset_index().columns) == analysis.tables.STABILITY_COLUMNS
    assert table.loc["p_True", "clipped_share"] == pytest.approx(0.3)
    assert table.loc["p_True", "loss_spikes"] == 1.0 and table.loc["p_True", "max_grad_norm"] == 9.0
    assert table.loc["p_True", "forward_per_step"] == pytest.approx(1.6)
    assert table.loc["p_True", "cost_per_step"] == pytest.approx((1.6 + 2) / 3)
    assert table.loc["flow", "cost_per_step"] == 1.0 and table.loc["flow", "loss_spikes"] == 0.5


def test_stability_table_is_empty_for_results_written_without_training_stats():
    results = in_memory({(("p", True), "gain", 1): [1.0, 2.0]})
    assert analysis.stability_table(results).empty


def test_blur_and_box_references_are_constants_reported_not_compared():
    values = {
        (cell, metric, 1): per_seed
        for cell in (("p", True), ("q", True), ("p", False), ("q", False))
        for metric, per_seed in (("gain", [1.0, 2.0]), ("gain_blur", [0.5, 0.5]), ("gain_box", [0.25, 0.25]))
    }
    results = in_memory(values)
    assert analysis.quality_metrics(results.metric_names) == ["gain"]
    references = analysis.reference_values(results)
    assert references.to_dict("records") == [
        {"metric": "gain", "reference": "blurred real data", "value": 0.5},
        {"metric": "gain", "reference": "a uniform box", "value": 0.25},
    ]
    assert set(analysis.factor_effects(results)["metric"]) == {"gain"}
    orphan = in_memory({(("p", True), "loss_box", 1): [1.0, 2.0]})  # no base metric: an ordinary metric
    assert analysis.reference_values(orphan).empty and analysis.quality_metrics(orphan.metric_names) == ["loss_box"]
