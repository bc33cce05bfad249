"""Trackers through Ray Tune's logger callbacks, read back with the trackers' own readers."""

import importlib.util

import pytest
from conftest import TINY_TASK
from test_cli_run import write_experiment

from ablate.cli import main
from ablate.experiment import ExperimentError, parse_experiment


def test_bad_or_missing_trackers_are_one_line(monkeypatch):
    spec = {"name": "x", "task": TINY_TASK, "seeds": [0]}
    with pytest.raises(ExperimentError, match="'tensorbord' is not a tracker .*did you mean 'tensorboard'"):
        parse_experiment({**spec, "loggers": ["tensorbord"]})
    with pytest.raises(ExperimentError, match="loggers.mlflow.uri: unknown setting"):
        parse_experiment({**spec, "loggers": [{"mlflow": {"uri": "x"}}]})
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ExperimentError, match=r"loggers.wandb: needs the wandb package: pip install 'ablate\[wandb\]'"):
        parse_experiment({**spec, "loggers": [{"wandb": {"mode": "offline"}}]})


@pytest.mark.slow
def test_tensorboard_and_mlflow_receive_curves_params_and_eval_metrics(tmp_path, ray_session, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3: a local file store is opt-in
    pytest.importorskip("tensorboard")
    mlflow = pytest.importorskip("mlflow")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    uri = (tmp_path / "mlruns").as_uri()
    path = write_experiment(
        tmp_path, loggers=["tensorboard", "csv", {"mlflow": {"tracking_uri": uri}}], checkpoint_seconds=0.01
    )
    assert main(["run", str(path), "--no-report"]) == 0
    out = tmp_path / "results" / "grid"
    trial_id = "grid_vboot_vstep_now2__seed1"
    events = list((out / "ray" / "tune" / trial_id).glob("events.out.tfevents.*"))
    assert events, sorted(p.name for p in (out / "ray" / "tune").iterdir())
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"ray/tune/loss", "ray/tune/step", "ray/tune/eval/mean_error/K8"} <= tags
    assert len(accumulator.Scalars("ray/tune/loss")) >= 2  # the curve streamed during training
    assert (out / "ray" / "tune" / trial_id / "progress.csv").exists()
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("grid")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(
        f"{v}__seed{s}" for v in ("grid_vboot_vstep_w2", "grid_vboot_vstep_now2") for s in (0, 1)
    )
    run = next(r for r in runs if r.info.run_name == trial_id)
    assert run.data.params["trial/variant"] == "grid_vboot_vstep_now2" and run.data.params["trial/seed"] == "1"
    assert run.data.params["trial/levels/tau2_weight"] == "False"
    assert "eval/mean_error/K8" in run.data.metrics and "loss" in run.data.metrics


@pytest.mark.slow
def test_wandb_offline_writes_one_run_per_trial(tmp_path, ray_session, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")  # what ablate sets for mode: offline, undone after the test
    path = write_experiment(
        tmp_path, seeds=[0], loggers=[{"wandb": {"project": "ablate-test", "mode": "offline", "dir": str(tmp_path)}}]
    )
    assert main(["run", str(path), "--no-report"]) == 0
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(list(run.glob("*.wandb")) for run in runs)
