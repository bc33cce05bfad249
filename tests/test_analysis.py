"""Statistics of the ablation grid on synthetic results with known, injected effects."""

import json

import numpy as np
import pandas as pd
import pytest

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
    effects = balanced_effects.set_index(["term", "steps"])
    assert (balanced_effects["method"] == "ols_full_factorial").all()
    assert len(balanced_effects) == 10 * len(STEPS)  # 4 main effects + 6 interactions
    for k in STEPS:
        for term, value in INJECTED.items():
            row = effects.loc[(term, k)]
            assert row["ci_low"] <= value <= row["ci_high"], (term, k)
            assert row["p_holm"] < 0.001
        null = effects.loc[(NULL, k)]
        assert null["ci_low"] <= 0 <= null["ci_high"]
        assert null["p_holm"] > 0.05
    assert (balanced_effects["p_holm"] >= balanced_effects["p_value"] - 1e-15).all()


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
    assert covered.mean() >= 0.75  # 95% nominal; bootstrap CIs undercover a little with 5 seeds
    assert set(cells["ci_method"]) <= {"BCa", "percentile"}
    assert (cells.loc[is_sick, "ci_method"] == "percentile").all()  # 4 seeds: too few for BCa
    raw = load(tmp_path).metrics
    ok = raw[(raw["variant"] == sick[0]) & (raw["steps"] == 4) & (raw["status"] == "ok")]
    assert cells.loc[is_sick & (cells["steps"] == 4), "mean"].item() == pytest.approx(ok["value"].mean())


def test_bootstrap_ci_falls_back_and_needs_two_values():
    low, high, method = analysis.bootstrap_ci(np.array([1.0]))
    assert np.isnan(low) and np.isnan(high) and method.startswith("none")
    assert analysis.bootstrap_ci(np.full(6, 2.0)) == (2.0, 2.0, "percentile")  # BCa degenerate
    assert analysis.bootstrap_ci(np.array([1.0, 2.0, 3.0]))[2] == "percentile"
    assert analysis.bootstrap_ci(np.arange(8.0))[2] == "BCa"


@pytest.fixture(scope="module")
def no_weight_diverges(tmp_path_factory):
    folder = tmp_path_factory.mktemp("no_weight")
    make_synthetic_results(folder, INJECTED, noise_sd=0.05, seeds=range(3), steps=[4],
                           metrics=["w2"], diverge_cells=[{"tau2_weight": False}], seed=3)
    return load(folder)


def test_whole_cells_diverged_fall_back_to_matched_pairs(no_weight_diverges):
    effects = analysis.factor_effects(no_weight_diverges).set_index("term")
    assert effects["method"].str.startswith("matched").all()
    assert effects.loc[MAIN, "method"] == "matched_pairs (4 of 8 pairs)"
    assert effects.loc[MAIN, "ci_low"] <= INJECTED[MAIN] <= effects.loc[MAIN, "ci_high"]
    assert np.isnan(effects.loc["tau2_weight", "estimate"])
    assert effects.loc["tau2_weight", "method"] == "matched_pairs (0 of 8 pairs)"
    assert np.isnan(effects.loc[INTERACTION, "estimate"])
    assert effects.loc["tau_sampling:half_step", "method"] == "matched_quartets (2 of 4 quartets)"
    assert analysis.empty_cells(no_weight_diverges, "w2", 4) == [
        v for v in no_weight_diverges.variant_levels()["variant"] if v.endswith("now2")]


def test_matched_pair_estimate_by_hand(tmp_path):
    gone = "cont_xboot_renoise_w2"
    make_synthetic_results(tmp_path, INJECTED, noise_sd=0.05, seeds=range(2), steps=[4],
                           metrics=["w2"], drop_trials=[gone], seed=4)
    results = load(tmp_path)
    effects = analysis.factor_effects(results).set_index("term")
    assert effects.loc[MAIN, "method"] == "matched_pairs (7 of 8 pairs)"
    means = analysis.ok_values(results).groupby("variant")["value"].mean()
    pairs = [(v, "cont" + v[len("grid"):]) for v in means.index if v.startswith("grid_")]
    by_hand = np.mean([means[a] - means[b] for a, b in pairs if b != gone])
    assert effects.loc[MAIN, "estimate"] == pytest.approx(by_hand, abs=1e-12)
    assert analysis.missing_trials(results)["variant"].tolist() == [gone, gone]


def test_factor_with_three_levels_gets_an_anova_row(tmp_path):
    make_synthetic_results(tmp_path, {MAIN: 0.4}, noise_sd=0.05, seeds=range(2), steps=[4],
                           metrics=["w2"], extra_factors={"teacher": ["sg", "ema", "avg"]},
                           baseline=False, seed=5)
    effects = analysis.factor_effects(load(tmp_path)).set_index("term")
    assert effects.loc["teacher", "kind"] == "anova"
    assert 0 < effects.loc["teacher", "p_value"] <= 1 and np.isnan(effects.loc["teacher", "estimate"])
    assert effects.loc[MAIN, "ci_low"] <= 0.4 <= effects.loc[MAIN, "ci_high"]


def test_paper_vs_others_dunnett_and_welch(balanced):
    results = balanced
    table = analysis.paper_vs_others(results, steps=[4])
    dunnett = table[table["comparison"] == "dunnett"]
    assert len(dunnett) == 16 and results.paper_variant not in set(dunnett["variant"])
    welch = table[table["comparison"] == "welch"].iloc[0]
    assert welch["variant"] == results.simplified_variant
    values = analysis.ok_values(results)
    values = values[values["steps"] == 4].groupby("variant")["value"].mean()
    assert welch["difference"] == pytest.approx(values[results.simplified_variant]
                                                - values[results.paper_variant])
    assert welch["ci_low"] < welch["difference"] < welch["ci_high"]
    flow = dunnett.set_index("variant").loc["flow"]
    assert flow["verdict"] == "paper better" and flow["p_value"] < 0.05


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
    assert effects["estimate"].isna().all() and (effects["method"] == "impossible (no data)").all()
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


def test_worsening_after_best_steps_is_paired_and_follows_the_direction(tmp_path):
    paper = "grid_vboot_vstep_w2"
    make_synthetic_results(tmp_path, {}, noise_sd=0.05, seeds=range(3), steps=[1, 4, 16],
                           metrics=["w2", "accuracy"], metric_directions={"accuracy": "max"},
                           k_max_penalty={paper: 0.5}, seed=7)
    results = load(tmp_path)
    for metric in ("w2", "accuracy"):
        row = analysis.worsening_after_best_steps(results, paper, metric).iloc[0]
        assert row["worse"] and (row["best_steps"], row["max_steps"], row["n_pairs"]) == (4, 16, 3)
    w2 = analysis.worsening_after_best_steps(results, paper, "w2").iloc[0]
    assert w2["difference"] == pytest.approx(w2["max_steps_mean"] - w2["best_mean"])
    assert w2["difference"] == pytest.approx(1.0 + 1 / 16 + 0.5 - (1.0 + 1 / 4), abs=0.1)
    improving = analysis.worsening_after_best_steps(results, "flow", "w2").iloc[0]
    assert improving["best_steps"] == 16 and not improving["worse"]
    assert analysis.worsening_after_best_steps(results, "no_such_variant", "w2").empty
