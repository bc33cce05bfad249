"""The runner's resume logic without starting Ray (fast, so it can be mutation-tested).

Ray Tune's `report`/`get_checkpoint` are replaced by a recorder: a trial whose result file exists
returns at once and trains nothing; a trial checkpoints its full state and a trial restored from any
of those checkpoints ends with the numbers of an uninterrupted run; a result file is written
atomically and only for a finished trial; the tables say which trials are ok, diverged, failed or
missing; an output folder is never clobbered nor resumed with another experiment.
"""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY_TASK
from ray import tune

from ablate import results, runner
from ablate.experiment import ExperimentError, parse_experiment
from ablate.trial import run_trial

CONFIG = {
    "task": TINY_TASK,
    "objective": {"k_max": 8},
    "train": {"steps": 60, "batch_size": 32, "log_every": 10},
    "eval": {"steps": [1, 2, 8]},
}


class RecordingTune:
    """Stands in for `ray.tune` inside a worker: records each report and the state it checkpoints."""

    Checkpoint = tune.Checkpoint

    def __init__(self, checkpoint=None) -> None:
        self.checkpoint, self.reports, self.states = checkpoint, [], []

    def get_checkpoint(self):
        return self.checkpoint

    def report(self, metrics: dict, checkpoint=None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                self.states.append(torch.load(Path(folder) / "state.pt", weights_only=True))


@pytest.fixture
def worker(monkeypatch):
    """Install a recorder as the worker's `tune` and a fixed node id; returns a function that
    installs a fresh recorder (optionally with a checkpoint to restore)."""
    monkeypatch.setattr(runner.ray, "get_runtime_context", lambda: SimpleNamespace(get_node_id=lambda: "node-a"))

    def install(checkpoint=None) -> RecordingTune:
        recorder = RecordingTune(checkpoint)
        monkeypatch.setattr(runner, "tune", recorder)
        return recorder

    return install


def alone_metrics() -> dict:
    return run_trial(CONFIG).metrics


def _params(output: Path, trial_id: str = "t0", checkpoint_seconds: float = 0.0) -> dict:
    return {
        "trial": {
            "trial_id": trial_id,
            "output": str(output),
            "checkpoint_seconds": checkpoint_seconds,
            "config": dict(CONFIG),
        }
    }


def _record(output: Path, trial_id: str = "t0") -> dict:
    return json.loads((output / "trials" / f"{trial_id}.json").read_text())


def test_a_trial_whose_result_file_exists_returns_at_once(tmp_path, worker, monkeypatch):
    (tmp_path / "trials").mkdir()
    (tmp_path / "trials" / "t0.json").write_text("{}")
    recorder = worker()
    monkeypatch.setattr(runner, "Trial", lambda config: pytest.fail("a finished trial was built again"))
    runner.train_one(_params(tmp_path))
    assert recorder.reports == [{"phase": "done", "step": 0, "status": "done before"}]
    assert (tmp_path / "trials" / "t0.json").read_text() == "{}"


def test_a_trial_checkpoints_every_interval_and_writes_its_result_once(tmp_path, worker):
    recorder = worker()
    runner.train_one(_params(tmp_path))
    steps = [r["step"] for r in recorder.reports if r["phase"] == "train"]
    assert steps == [10, 20, 30, 40, 50, 60] and [s["step"] for s in recorder.states] == steps
    final = recorder.reports[-1]
    assert {k: final[k] for k in ("phase", "step", "status", "warning")} == {
        "phase": "done",
        "step": 60,
        "status": "ok",
        "warning": None,
    }
    assert final["eval/mean_error/K8"] == alone_metrics()[8]["mean_error"]  # for the trackers
    record = _record(tmp_path)
    alone = run_trial(CONFIG)
    assert record["metrics"] == {str(k): v for k, v in alone.metrics.items()}
    assert record["restored_at_step"] is None and record["node"] == "node-a" and record["status"] == "ok"
    with np.load(tmp_path / "samples" / "t0.npz") as samples:
        assert sorted(samples.files) == ["steps_1", "steps_2", "steps_8"]
    leftovers = [p.name for p in (tmp_path / "trials").iterdir()] + [p.name for p in (tmp_path / "samples").iterdir()]
    assert sorted(leftovers) == ["t0.json", "t0.npz"]  # no temporary files


def test_a_long_checkpoint_interval_checkpoints_only_at_the_end(tmp_path, worker):
    recorder = worker()
    runner.train_one(_params(tmp_path, checkpoint_seconds=3600))
    assert [r["step"] for r in recorder.reports] == [60, 60] and len(recorder.states) == 1


@pytest.mark.parametrize("resume_at", [0, 2])  # the checkpoint at step 10 or at step 30
def test_a_trial_restored_from_a_checkpoint_ends_with_the_uninterrupted_numbers(tmp_path, worker, resume_at):
    first = worker()
    runner.train_one(_params(tmp_path / "first"))
    state = first.states[resume_at]
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    torch.save(state, folder / "state.pt")
    torch.manual_seed(99)  # a fresh worker process: other global RNG state
    second = worker(tune.Checkpoint.from_directory(str(folder)))
    runner.train_one(_params(tmp_path / "second"))
    resumed, uninterrupted = _record(tmp_path / "second"), _record(tmp_path / "first")
    assert resumed["restored_at_step"] == state["step"] == 10 * (resume_at + 1)
    assert resumed["metrics"] == uninterrupted["metrics"] and resumed["curves"] == uninterrupted["curves"]
    assert [r["step"] for r in second.reports if r["phase"] == "train"][0] == state["step"] + 10


def test_a_result_file_only_ever_means_a_finished_trial(tmp_path, worker, monkeypatch):
    """If writing the result fails half way (a full disk), no result file appears, so the trial
    counts as not done and --resume runs it again."""
    worker()
    real_replace = results.os.replace

    def failing_replace(source, target):
        if str(target).endswith(".json"):
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(results.os, "replace", failing_replace)
    with pytest.raises(OSError):
        runner.train_one(_params(tmp_path))
    assert not (tmp_path / "trials" / "t0.json").exists()


def _experiment(tmp_path: Path):
    return parse_experiment(
        {
            "name": "grid",
            "task": TINY_TASK,
            "objective": {"k_max": 8},
            "seeds": [0, 1],
            "factors": {"tau2_weight": [True, False]},
            "eval": {"steps": [1, 8]},
            "train": {"steps": 20, "batch_size": 8, "log_every": 10},
            "output": str(tmp_path / "out"),
        }
    )


def test_tables_say_which_trials_are_ok_diverged_failed_or_missing(tmp_path, worker):
    experiment = _experiment(tmp_path)
    output = tmp_path / "out"
    ok, diverged, failed, missing = (t.trial_id for t in experiment.trials)
    worker()
    for trial_id in (ok, diverged):
        runner.train_one(
            {
                "trial": {
                    "trial_id": trial_id,
                    "output": str(output),
                    "checkpoint_seconds": 0,
                    "config": experiment.trials[0].config,
                }
            }
        )
    record = _record(output, diverged)
    record.update(status="diverged", diverged_step=10, metrics={"1": {"mean_error": float("nan")}})
    (output / "trials" / f"{diverged}.json").write_text(json.dumps(record))
    metrics, curves, trials = runner.collect_tables(experiment, output, failed={failed})
    status = dict(zip(trials["trial_id"], trials["status"]))
    assert status == {ok: "ok", diverged: "diverged", failed: "failed", missing: "missing"}
    assert set(metrics["trial_id"]) == {ok, diverged} and set(curves["trial_id"]) == {ok, diverged}
    assert len(metrics[metrics["trial_id"] == ok]) == 2 * 2  # K in {1, 8} x two metrics
    assert metrics.loc[metrics["trial_id"] == diverged, "value"].isna().all()
    assert trials.set_index("trial_id").loc[diverged, "diverged_step"] == 10


def test_an_output_folder_is_never_clobbered_nor_resumed_with_another_experiment(tmp_path):
    experiment = _experiment(tmp_path)
    output = tmp_path / "out"
    runner.check_output(experiment, output, resume=False, force=False)  # absent: fine
    output.mkdir()
    runner.check_output(experiment, output, resume=False, force=False)  # empty: fine
    (output / "metrics.csv").write_text("x")
    with pytest.raises(ExperimentError, match="already exists"):
        runner.check_output(experiment, output, resume=False, force=False)
    runner.check_output(experiment, output, resume=False, force=True)
    with pytest.raises(ExperimentError, match="no experiment.json"):
        runner.check_output(experiment, output, resume=True, force=False)
    (output / "experiment.json").write_text(json.dumps(runner._jsonable(experiment.spec)))
    runner.check_output(experiment, output, resume=True, force=False)
    saved = (output / "experiment.json").read_text()
    (output / "experiment.json").write_text(saved[:10])
    with pytest.raises(ExperimentError, match="experiment.json is damaged"):
        runner.check_output(experiment, output, resume=True, force=False)
    (output / "experiment.json").write_text(saved)
    changed = parse_experiment({**experiment.spec, "seeds": [0, 1, 2]})
    with pytest.raises(ExperimentError, match="changed"):
        runner.check_output(changed, output, resume=True, force=False)
    with pytest.raises(ExperimentError, match="contradict"):
        runner.check_output(experiment, output, resume=True, force=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExperimentError, match="is a file"):
        runner.check_output(experiment, tmp_path / "file", resume=False, force=False)


def test_a_damaged_checkpoint_restarts_the_trial_with_a_warning(tmp_path, worker):
    """A truncated state.pt (a crash while Tune copied it, a full disk) must not fail the trial: it
    restarts from step 0, says so once, and ends with the uninterrupted numbers."""
    first = worker()
    runner.train_one(_params(tmp_path / "first"))
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    torch.save(first.states[2], folder / "state.pt")
    data = (folder / "state.pt").read_bytes()
    (folder / "state.pt").write_bytes(data[: len(data) // 3])
    second = worker(tune.Checkpoint.from_directory(str(folder)))
    runner.train_one(_params(tmp_path / "second"))
    warnings = [r["warning"] for r in second.reports if r.get("warning")]
    assert len(warnings) == 1 and warnings[0].startswith("checkpoint unreadable") and "step 0" in warnings[0]
    assert [r["step"] for r in second.reports if r["phase"] == "train"][0] == 10
    resumed, uninterrupted = _record(tmp_path / "second"), _record(tmp_path / "first")
    assert resumed["restored_at_step"] is None and resumed["metrics"] == uninterrupted["metrics"]


def test_one_driver_per_folder(tmp_path, capsys):
    output = tmp_path / "out"
    with runner.folder_lock(output):
        holder = (output / runner.LOCK_NAME).read_text()
        assert holder.startswith(f"pid {runner.os.getpid()} on ")
        with pytest.raises(ExperimentError, match=re.escape(f"in use by another `ablate run` ({holder})")):
            with runner.folder_lock(output):
                pass
    assert not output.exists()  # created for the run, nothing written: removed again
    output.mkdir()
    (output / runner.LOCK_NAME).write_text("pid 1 on elsewhere since yesterday")  # its holder died
    with runner.folder_lock(output):
        pass
    assert "an earlier run (pid 1 on elsewhere since yesterday) ended without releasing" in capsys.readouterr().out
    assert (output / runner.LOCK_NAME).read_text() == ""  # released
