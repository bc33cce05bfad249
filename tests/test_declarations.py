"""What a task declares about its metrics (scales, shares, learnability gate): checked before a run,
read back from run.json (or, for older folders, from a built-in task's class), and the gate evaluated
on the flow baseline or, without one, on the best cell."""

import json

import pandas as pd
import pytest
from conftest import TESTS
from synthetic import make_synthetic_results

from ablate import analysis
from ablate.experiment import ExperimentError, parse_experiment
from ablate.results import load
from ablate.tasks import builtin_declarations, gate_condition
from ablate.tasks.digits import DigitsTask
from ablate.tasks.latent_world import LatentWorldTask

STEPS = [1, 4, 16]


def test_a_bad_declaration_is_one_line_before_anything_runs(tmp_path):
    task = tmp_path / "task.py"
    task.write_text(
        f"import sys\nsys.path.insert(0, {str(TESTS)!r})\nfrom tiny_task import TinyTask\n\n\n"
        "def make_task():\n    task = TinyTask()\n    task.metric_scales = {'mean_error': 'sqrt'}\n    return task\n"
    )
    spec = {"name": "bad", "task": str(task), "objective": {"k_max": 8}, "seeds": [0]}
    with pytest.raises(ExperimentError, match="metric_scales: .*'sqrt'"):
        parse_experiment(spec)
    for bad in (
        {"metric": "fd", "op": "<"},
        {"metric": "fd", "op": "<=", "threshold": 1.0, "relative_to": "fd_floor", "factor": 2.0},
        {"metric": "fd", "op": "<=", "relative_to": "fd_floor"},
        {"metric": "fd", "op": "<=", "threshold": 1.0, "steps": 0},
        {"metric": "fd", "op": "<=", "threshold": "1"},
    ):
        with pytest.raises(ValueError, match="learnability_gate"):
            gate_condition(**bad)


def test_an_older_folder_reads_a_builtin_tasks_declarations_and_a_newer_one_its_own(tmp_path):
    make_synthetic_results(
        tmp_path, {}, noise_sd=0.05, seeds=range(2), steps=[4], metrics=["fd"], sample_format="image"
    )
    assert load(tmp_path).metric_scales == {}  # written now by a task that declares nothing: fd is raw
    assert analysis.metric_scales(load(tmp_path)) == {"fd": "raw"}
    run = json.loads((tmp_path / "run.json").read_text())
    for key in ("metric_scales", "share_metrics", "learnability_gate"):
        del run[key]  # what run.json held before the declarations
    (tmp_path / "run.json").write_text(json.dumps({**run, "task": {"name": "digits", "params": {"n_eval": 64}}}))
    results = load(tmp_path)
    assert analysis.metric_scales(results) == {"fd": "log"}  # digits declares FD a distance
    assert results.share_metrics == {"class_entropy": 64, "class_entropy_floor": 899}
    assert results.learnability_gate == DigitsTask.learnability_gate
    (tmp_path / "run.json").write_text(json.dumps({**run, "task": {"name": "/home/me/my_task.py"}}))
    assert load(tmp_path).metric_scales == {} and load(tmp_path).learnability_gate == []  # a user's: nothing


def test_the_latent_worlds_gate_is_declared_for_its_default_world_only():
    assert builtin_declarations("latent_world", {}).learnability_gate == [gate_condition("valid", ">=", 0.89, steps=64)]
    assert builtin_declarations("latent_world", {"n_eval": 64, "width": 32}).learnability_gate  # same world
    assert builtin_declarations("latent_world", {"jitter": 0.03}).learnability_gate == []
    assert LatentWorldTask(radius=0.35).learnability_gate == []
    assert builtin_declarations("sequence", {}).learnability_gate == []
    assert builtin_declarations("my_task", {}) is None


def _gated(folder, gate, **kwargs) -> pd.DataFrame:
    """A precision-like metric (higher is better) with a gate, and the results folder it lands in."""
    options = dict(noise_sd=0.02, seeds=range(3), steps=STEPS, metrics=["precision"])
    options |= dict(metric_directions={"precision": "max"}, learnability_gate=gate, **kwargs)
    return make_synthetic_results(folder, {"tau_sampling": 0.2}, **options)


def test_the_gate_is_the_flow_baselines_mean_over_finished_seeds_at_k_max(tmp_path):
    truth = _gated(tmp_path, [gate_condition("precision", ">=", 0.9), gate_condition("precision", ">=", 0.5, steps=1)])
    results = load(tmp_path)
    table = analysis.learnability(results)
    assert list(table.columns) == analysis.gate.GATE_COLUMNS
    data = analysis.ok_values(results)
    for row, steps in zip(table.to_dict("records"), (16, 1)):
        by_hand = data[(data["variant"] == "flow") & (data["steps"] == steps)]["value"].mean()
        assert (row["variant"], row["steps"], row["n_seeds"]) == ("flow", steps, 3)
        assert row["value"] == pytest.approx(by_hand)
    true_flow = truth.set_index(["variant", "steps"]).loc[("flow", 16), "true_mean"]
    assert table["passed"].tolist() == [True, True] and true_flow > 0.9
    assert analysis.gate_passed(results) is True

    _gated(tmp_path / "fails", [gate_condition("precision", ">=", 0.9), gate_condition("precision", ">=", 1.5)])
    failing = analysis.learnability(load(tmp_path / "fails"))
    assert failing["passed"].tolist() == [True, False] and failing["threshold"].tolist() == [0.9, 1.5]
    assert analysis.gate_passed(load(tmp_path / "fails")) is False


def test_a_gate_relative_to_the_noise_floor(tmp_path):
    """fd <= 2 x fd_floor: the bound is twice the floor's value, the same constant in every trial."""
    for floor, passed in ((0.7, True), (0.5, False)):
        folder = tmp_path / str(floor)
        gate = [gate_condition("fd", "<=", relative_to="fd_floor", factor=2.0)]
        make_synthetic_results(
            folder, {}, 0.02, range(3), STEPS, ["fd"], noise_floors={"fd": floor}, learnability_gate=gate
        )
        row = analysis.learnability(load(folder)).iloc[0]
        assert row["threshold"] == pytest.approx(2 * floor) and row["relative_to"] == "fd_floor"
        assert bool(row["passed"]) is passed
        assert row["value"] == pytest.approx(1 + 1 / 16 + 2 / 16, abs=0.05)  # the baseline's true mean at K = 16


def test_without_a_finished_baseline_the_gate_reads_the_best_cell(tmp_path):
    gate = [gate_condition("precision", ">=", 0.9)]
    for folder, options in (("none", {"baseline": False}), ("diverged", {"diverge_cells": ["flow"]})):
        _gated(tmp_path / folder, gate, **options)
        results = load(tmp_path / folder)
        data = analysis.ok_values(results)
        means = data[(data["steps"] == 16) & (data["variant"] != "flow")].groupby("variant")["value"].mean()
        row = analysis.learnability(results).iloc[0]
        assert (row["variant"], row["value"]) == (means.idxmax(), pytest.approx(means.max()))
        assert row["variant"].startswith("grid_")  # tau_sampling's +0.2 makes a grid cell the best


def test_no_gate_or_no_value_is_no_verdict(tmp_path):
    _gated(tmp_path / "none", [])
    assert analysis.learnability(load(tmp_path / "none")).empty
    assert analysis.gate_passed(load(tmp_path / "none")) is None
    _gated(tmp_path / "unevaluated", [gate_condition("precision", ">=", 0.9, steps=64)])  # K = 64 never ran
    table = analysis.learnability(load(tmp_path / "unevaluated"))
    assert table["passed"].isna().all() and table["n_seeds"].tolist() == [0]
    assert analysis.gate_passed(load(tmp_path / "unevaluated")) is None
