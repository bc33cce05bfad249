"""Statistics of the ablation grid on synthetic results with known, injected effects."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ablate import analysis
from ablate.results import load, write_tables
from ablate.synthetic import make_synthetic_results

MAIN, INTERACTION = "tau_sampling", "half_step:tau2_weight"
INJECTED = {MAIN: 0.4, INTERACTION: 0.25}
NULL = "bootstrap_space"
STEPS = [1, 4]


@pytest.fixture(scope="module")
def balanced(tmp_path_factory):
    folder = tmp_path_factory.mktemp("balanced")
    # Fixed data seed: each 95% CI misses its true value for about 1 in 20 data seeds.
    make_synthetic_results(folder, INJECTED, noise_sd=0.05, seeds=range(5), steps=STEPS,
                           metrics=["w2"], seed=0)
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
        "main": 4 * len(STEPS), "interaction": 6 * len(STEPS), "interaction3": 4 * len(STEPS),
        "interaction4": len(STEPS)}
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
    per_seed = [g.loc[codes[data.index.get_indexer(g.index)] > 0, "value"].mean()
                - g.loc[codes[data.index.get_indexer(g.index)] < 0, "value"].mean()
                for _, g in data.groupby("seed")]
    low, high = stats.t.interval(0.95, 4, loc=np.mean(per_seed), scale=stats.sem(per_seed))
    row = balanced_effects.set_index(["term", "steps", "kind"]).loc[(INTERACTION, 4, "interaction")]
    assert (row["estimate"], row["ci_low"], row["ci_high"]) == pytest.approx((np.mean(per_seed), low, high))
    assert row["p_value"] == pytest.approx(stats.ttest_1samp(per_seed, 0).pvalue)


def test_simple_effects_follow_an_interaction_that_excludes_zero(balanced, balanced_effects):
    simple = balanced_effects[(balanced_effects["kind"] == "simple") & (balanced_effects["steps"] == 4)]
    assert set(zip(simple["term"], simple["within"])) >= {
        ("half_step", "tau2_weight=True"), ("half_step", "tau2_weight=False"),
        ("tau2_weight", "half_step=velocity"), ("tau2_weight", "half_step=renoise")}
    row = simple.set_index(["term", "within"]).loc[("half_step", "tau2_weight=False")]
    data = analysis.ok_values(balanced)
    data = data[(data["steps"] == 4) & (data["tau2_weight"] == False)]  # noqa: E712
    by_hand = (data.loc[data["half_step"] == "velocity", "value"].mean()
               - data.loc[data["half_step"] == "renoise", "value"].mean())
    assert row["estimate"] == pytest.approx(by_hand)
    assert row["ci_low"] <= -INJECTED[INTERACTION] <= row["ci_high"]  # the effect flips with the weight
    assert (row["plus_level"], row["minus_level"]) == ("velocity", "renoise")
    assert simple["p_holm"].notna().all()


def test_three_way_interaction_and_log_scale_ratios(tmp_path):
    three = "bootstrap_space:half_step:tau2_weight"
    make_synthetic_results(tmp_path, {three: 0.3, MAIN: 0.2}, noise_sd=0.02, seeds=range(3), steps=[4],
                           metrics=["fd"], seed=11)
    results = load(tmp_path)
    raw = analysis.factor_effects(results).set_index(["term", "kind"])
    assert raw.loc[(three, "interaction3"), "ci_low"] <= 0.3 <= raw.loc[(three, "interaction3"), "ci_high"]
    assert raw.loc[(three, "interaction3"), "p_holm"] < 0.05
    assert analysis.metric_scales(results) == {"fd": "raw"}
    # the same grid made multiplicative: values spanning more than 10x are read on the log scale
    metrics = results.metrics.assign(value=np.exp(6 * results.metrics["value"]))
    write_tables(tmp_path, metrics, results.curves, results.trials, results.run)
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
    truth = make_synthetic_results(tmp_path, INJECTED, noise_sd=0.05, seeds=range(5), steps=STEPS,
                                   metrics=["w2"], diverge_cells=[sick], seed=2)
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
    constant = analysis.t_interval(np.full(3, 2.0))
    assert (constant.low, constant.high) == (2.0, 2.0)
    two = analysis.t_interval(np.array([1.0, 2.0]))  # t(1) = 12.706: honest, and wide
    assert (two.low, two.high) == pytest.approx((1.5 - 12.7062 * 0.5, 1.5 + 12.7062 * 0.5), abs=1e-3)


@pytest.fixture(scope="module")
def no_weight_diverges(tmp_path_factory):
    folder = tmp_path_factory.mktemp("no_weight")
    make_synthetic_results(folder, INJECTED, noise_sd=0.05, seeds=range(3), steps=[4],
                           metrics=["w2"], diverge_cells=[{"tau2_weight": False}], seed=3)
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
        v for v in no_weight_diverges.variant_levels()["variant"] if v.endswith("now2")]


def test_matched_pair_estimate_by_hand(tmp_path):
    gone = "cont_xboot_renoise_w2"
    make_synthetic_results(tmp_path, INJECTED, noise_sd=0.05, seeds=range(2), steps=[4],
                           metrics=["w2"], drop_trials=[gone], seed=4)
    results = load(tmp_path)
    effects = analysis.factor_effects(results).query("kind == 'main'").set_index("term")
    assert effects.loc[MAIN, "method"] == "seed_paired_t (2 seeds, 7 of 8 strata)"
    means = analysis.ok_values(results).groupby("variant")["value"].mean()
    pairs = [(v, "cont" + v[len("grid"):]) for v in means.index if v.startswith("grid_")]
    by_hand = np.mean([means[a] - means[b] for a, b in pairs if b != gone])
    assert effects.loc[MAIN, "estimate"] == pytest.approx(by_hand, abs=1e-12)
    assert analysis.missing_trials(results)["variant"].tolist() == [gone, gone]


def test_a_scattered_diverged_trial_drops_its_seed_or_its_stratum_never_values(tmp_path):
    make_synthetic_results(tmp_path, INJECTED, noise_sd=0.05, seeds=range(5), steps=[4],
                           metrics=["w2"], diverge_cells=[("grid_xboot_vstep_w2", 3)], seed=8)
    effects = analysis.factor_effects(load(tmp_path)).set_index(["term", "kind"])
    # 5 seeds x 7 strata (35 pairs) beat 4 seeds x 8 strata (32)
    assert effects.loc[(MAIN, "main"), "method"] == "seed_paired_t (5 seeds, 7 of 8 strata)"
    assert effects.loc[(MAIN, "main"), "n"] == 70


def test_factor_with_three_levels_gets_a_hotelling_row(tmp_path):
    make_synthetic_results(tmp_path, {MAIN: 0.4}, noise_sd=0.05, seeds=range(4), steps=[4],
                           metrics=["w2"], extra_factors={"teacher": ["sg", "ema", "avg"]},
                           baseline=False, seed=5)
    effects = analysis.factor_effects(load(tmp_path)).set_index("term")
    assert effects.loc["teacher", "kind"] == "anova" and np.isnan(effects.loc["teacher", "estimate"])
    assert effects.loc["teacher", "method"] == "hotelling_t2 (4 seeds, 16 of 16 strata)"
    assert effects.loc["teacher", "p_value"] > 0.01  # no injected teacher effect
    assert effects.loc[MAIN, "ci_low"] <= 0.4 <= effects.loc[MAIN, "ci_high"]
    assert effects.loc[MAIN, "method"] == "seed_paired_t (4 seeds, 24 of 24 strata)"
    make_synthetic_results(tmp_path / "two", {}, noise_sd=0.05, seeds=range(2), steps=[4], metrics=["w2"],
                           extra_factors={"teacher": ["sg", "ema", "avg"]}, baseline=False)
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
    assert simple["p_value"] == pytest.approx(stats.ttest_rel(values[results.simplified_variant],
                                                             values[results.paper_variant]).pvalue)
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
        write_tables(tmp_path, results.metrics.drop(columns="tau2_weight"), results.curves,
                     results.trials, results.run)
    write_tables(tmp_path, results.metrics, results.curves, results.trials, results.run)
    for name in ("metrics", "curves"):
        (tmp_path / f"{name}.parquet").unlink()
    from_csv = load(tmp_path)
    assert json.loads((tmp_path / "run.json").read_text())["name"] == results.name
    pd.testing.assert_frame_equal(from_csv.metrics, results.metrics, check_dtype=False)
    assert set(from_csv.metrics["tau2_weight"].dropna().map(type)) == {bool}
    assert from_csv.reference_levels["tau2_weight"] is True


def test_every_trial_diverged_gives_no_estimates_and_no_crash(tmp_path):
    make_synthetic_results(tmp_path, INJECTED, noise_sd=0.05, seeds=range(2), steps=[4],
                           metrics=["w2"], diverge_cells=[{"tau_sampling": "grid"},
                                                          {"tau_sampling": "continuous"}])
    results = load(tmp_path)
    effects = analysis.factor_effects(results)
    assert effects["estimate"].isna().all() and effects["method"].str.startswith("impossible (0 of").all()
    cells = analysis.cell_summary(results)
    assert (cells.loc[cells["variant"] != "flow", "n_seeds"] == 0).all()
    assert (cells.loc[cells["variant"] != "flow", "n_diverged"] == 2).all()
    table = analysis.paper_vs_others(results)
    assert (table["variant"] == "flow").sum() == 1 and table["ci_low"].isna().all()


def test_noise_floors_are_summarised_once_and_never_compared(tmp_path):
    make_synthetic_results(tmp_path, INJECTED, noise_sd=0.05, seeds=range(2), steps=STEPS,
                           metrics=["w2"], noise_floors={"w2": 0.6},
                           diverge_cells=[("flow", 0)], seed=6)
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


def test_worsening_at_max_steps_uses_a_prespecified_k_and_follows_the_direction(tmp_path):
    paper = "grid_vboot_vstep_w2"
    make_synthetic_results(tmp_path, {}, noise_sd=0.05, seeds=range(3), steps=[1, 4, 16],
                           metrics=["w2", "accuracy"], metric_directions={"accuracy": "max"},
                           k_max_penalty={paper: 0.5}, seed=7)
    results = load(tmp_path)
    for metric in ("w2", "accuracy"):
        row = analysis.worsening_at_max_steps(results, paper, metric).iloc[0]
        assert row["worse"] and (row["reference_steps"], row["max_steps"], row["n_pairs"]) == (4, 16, 3)
    w2 = analysis.worsening_at_max_steps(results, paper, "w2").iloc[0]
    assert w2["difference"] == pytest.approx(w2["max_steps_mean"] - w2["reference_mean"])
    assert w2["difference"] == pytest.approx(1.0 + 1 / 16 + 0.5 - (1.0 + 1 / 4), abs=0.1)
    improving = analysis.worsening_at_max_steps(results, "flow", "w2").iloc[0]
    assert improving["reference_steps"] == 4 and not improving["worse"]
    # K = 1 as the reference: the paper variant is better at 16 than at 1 despite the penalty
    assert not analysis.worsening_at_max_steps(results, paper, "w2", reference_steps=1).iloc[0]["worse"]
    assert analysis.worsening_at_max_steps(results, "no_such_variant", "w2").empty
    assert analysis.worsening_at_max_steps(results, paper, "w2", reference_steps=16).empty


def test_power_table_from_the_runs_own_variance(balanced):
    power = analysis.power_table(balanced).set_index("steps")
    row = power.loc[4]
    assert (row["n_seeds"], row["scale"]) == (5, "raw")
    # noise_sd 0.05 per cell, 32 cells... no: 16 factorial cells; a contrast's per-seed sd is 2 * 0.05 / 4
    assert row["contrast_sd"] == pytest.approx(0.025, rel=0.35)
    assert row["mde"] == pytest.approx(1.682 * row["contrast_sd"], rel=1e-3)  # TTestPower at n = 5
    assert 2 <= row["seeds_for_25pct"] <= row["seeds_for_10pct"]
    from statsmodels.stats.power import TTestPower
    level = abs(analysis.ok_values(balanced).query("steps == 4 and variant != 'flow'")["value"].mean())
    expected = TTestPower().solve_power(effect_size=0.1 * level / row["contrast_sd"], alpha=0.05, power=0.8)
    assert row["seeds_for_10pct"] == np.ceil(expected)


def test_stratum_effects_show_each_toggle_within_every_combination_of_the_others(balanced):
    strata = analysis.stratum_effects(balanced)
    at_4 = strata[strata["steps"] == 4]
    assert len(at_4) == 4 * 8 and set(at_4["term"]) == set(balanced.two_level_factors)
    half = at_4[at_4["term"] == "half_step"]
    with_weight = half[half["within"].str.contains("tau2_weight=True")]
    assert (with_weight["estimate"] > 0).all() and (half.drop(with_weight.index)["estimate"] < 0).all()
