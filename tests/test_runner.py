"""The runner's resume logic without starting Ray (fast, so it can be mutation-tested).

Ray Tune's `report`/`get_checkpoint` are replaced by a recorder: a trial whose result file exists
returns at once and trains nothing; a trial checkpoints its full state and a trial restored from any
of those checkpoints ends with the numbers of an uninterrupted run; a result file is written
atomically and only for a finished trial; the tables say which trials are ok, diverged, failed or
missing; an output folder is never clobbered nor resumed with another experiment; a trial that fails the
same way twice is recorded failed rather than retried, and each failure is one line on the console.
"""

import copy
import dataclasses
import io
import json
import logging
import math
import re
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_TASK
from ray import tune

from ablate import failures, locking, progress, provenance, records, results, runner
from ablate import worker as ray_worker
from ablate.config import ObjectiveConfig, TrialConfig
from ablate.experiment import DEFAULT_FACTORS, ExperimentError, parse_experiment
from ablate.trial import run_trial

BROKEN_TASK = str(Path(__file__).with_name("broken_task.py"))  # a model with a TypeError at a given step
BUG_LINE = next(n for n, line in enumerate(Path(BROKEN_TASK).read_text().splitlines(), 1) if "+ self.bias" in line)
BUG = f"TypeError: unsupported operand type(s) for +: 'Tensor' and 'NoneType' ({BROKEN_TASK}:{BUG_LINE})"
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
    monkeypatch.setattr(ray_worker.ray, "get_runtime_context", lambda: SimpleNamespace(get_node_id=lambda: "node-a"))

    def install(checkpoint=None) -> RecordingTune:
        recorder = RecordingTune(checkpoint)
        monkeypatch.setattr(ray_worker, "tune", recorder)
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
            "config": copy.deepcopy(CONFIG),
        }
    }


def _record(output: Path, trial_id: str = "t0") -> dict:
    return json.loads((output / "trials" / f"{trial_id}.json").read_text())


def test_a_trial_whose_result_file_exists_returns_at_once(tmp_path, worker, monkeypatch):
    (tmp_path / "trials").mkdir()
    (tmp_path / "trials" / "t0.json").write_text("{}")
    recorder = worker()
    monkeypatch.setattr(ray_worker, "Trial", lambda config: pytest.fail("a finished trial was built again"))
    ray_worker.train_one(_params(tmp_path))
    assert recorder.reports == [{"phase": "done", "step": 0, "status": "done before"}]
    assert (tmp_path / "trials" / "t0.json").read_text() == "{}"


def test_a_trial_checkpoints_every_interval_and_writes_its_result_once(tmp_path, worker):
    recorder = worker()
    ray_worker.train_one(_params(tmp_path))
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
    ray_worker.train_one(_params(tmp_path, checkpoint_seconds=3600))
    assert [r["step"] for r in recorder.reports] == [60, 60] and len(recorder.states) == 1


@pytest.mark.parametrize("resume_at", [0, 2])  # the checkpoint at step 10 or at step 30
def test_a_trial_restored_from_a_checkpoint_ends_with_the_uninterrupted_numbers(tmp_path, worker, resume_at):
    first = worker()
    ray_worker.train_one(_params(tmp_path / "first"))
    state = first.states[resume_at]
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    torch.save(state, folder / "state.pt")
    torch.manual_seed(99)  # a fresh worker process: other global RNG state
    second = worker(tune.Checkpoint.from_directory(str(folder)))
    ray_worker.train_one(_params(tmp_path / "second"))
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
        if Path(target).parent.name == "trials":
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(results.os, "replace", failing_replace)
    with pytest.raises(OSError):
        ray_worker.train_one(_params(tmp_path))
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
        ray_worker.train_one(
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
    gave_up = {"error": "RuntimeError: broken (model.py:3)", "attempts": 3}
    metrics, curves, trials = runner.collect_tables(experiment, output, failed={failed: gave_up})
    status = dict(zip(trials["trial_id"], trials["status"]))
    assert status == {ok: "ok", diverged: "diverged", failed: "failed", missing: "missing"}
    assert set(metrics["trial_id"]) == {ok, diverged} and set(curves["trial_id"]) == {ok, diverged}
    assert len(metrics[metrics["trial_id"] == ok]) == 2 * 2  # K in {1, 8} x two metrics
    assert metrics.loc[metrics["trial_id"] == diverged, "value"].isna().all()
    assert trials.set_index("trial_id").loc[diverged, "diverged_step"] == 10
    row = trials.set_index("trial_id").loc[failed]
    assert (row["reason"], row["error"], row["attempts"]) == ("error", gave_up["error"], 3)  # Tune gave up
    assert trials.set_index("trial_id").loc[ok, "attempts"] == 1


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
    (output / "experiment.json").write_text(json.dumps(provenance.jsonable(experiment.spec)))
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
    ray_worker.train_one(_params(tmp_path / "first"))
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    torch.save(first.states[2], folder / "state.pt")
    data = (folder / "state.pt").read_bytes()
    (folder / "state.pt").write_bytes(data[: len(data) // 3])
    second = worker(tune.Checkpoint.from_directory(str(folder)))
    ray_worker.train_one(_params(tmp_path / "second"))
    warnings = [r["warning"] for r in second.reports if r.get("warning")]
    assert len(warnings) == 1 and warnings[0].startswith("checkpoint unreadable") and "step 0" in warnings[0]
    assert [r["step"] for r in second.reports if r["phase"] == "train"][0] == 10
    resumed, uninterrupted = _record(tmp_path / "second"), _record(tmp_path / "first")
    assert resumed["restored_at_step"] is None and resumed["metrics"] == uninterrupted["metrics"]


def test_one_driver_per_folder(tmp_path, capsys):
    output = tmp_path / "out"
    with locking.folder_lock(output):
        holder = (output / locking.LOCK_NAME).read_text()
        assert holder.startswith(f"pid {ray_worker.os.getpid()} on ")
        with pytest.raises(ExperimentError, match=re.escape(f"in use by another `ablate run` ({holder})")):
            with locking.folder_lock(output):
                pass
    assert not output.exists()  # created for the run, nothing written: removed again
    output.mkdir()
    (output / locking.LOCK_NAME).write_text("pid 1 on elsewhere since yesterday")  # its holder died
    with locking.folder_lock(output):
        pass
    assert "an earlier run (pid 1 on elsewhere since yesterday) ended without releasing" in capsys.readouterr().out
    assert (output / locking.LOCK_NAME).read_text() == ""  # released


# --- pinned by mutation testing (benchmarks/mutation.sh runner, docs/mutation.md) ----------------------------


def _message(error_type, call, *args, **kwargs) -> str:
    with pytest.raises(error_type) as caught:
        call(*args, **kwargs)
    return str(caught.value)


def test_every_refusal_of_an_output_folder_says_what_to_do(tmp_path):
    experiment = _experiment(tmp_path)
    output = tmp_path / "out"
    assert _message(ExperimentError, runner.check_output, experiment, output, True, True) == (
        "--resume and --force contradict each other: pick one"
    )
    (tmp_path / "file").write_text("x")
    assert _message(ExperimentError, runner.check_output, experiment, tmp_path / "file", False, False) == (
        f"{tmp_path / 'file'} is a file, not a results folder: choose another --output"
    )
    output.mkdir()
    (output / locking.LOCK_NAME).write_text("")
    runner.check_output(experiment, output, resume=False, force=False)  # only the lock: a fresh folder
    (output / "metrics.csv").write_text("x")
    assert _message(ExperimentError, runner.check_output, experiment, output, False, False) == (
        f"{output} already exists: add --resume to finish what is missing, or --force to delete it and start over"
    )
    assert _message(ExperimentError, runner.check_output, experiment, output, True, False) == (
        f"{output} holds no run of this experiment to resume (no experiment.json)"
    )
    (output / "experiment.json").mkdir()  # not a file
    assert "no experiment.json" in _message(ExperimentError, runner.check_output, experiment, output, True, False)
    (output / "experiment.json").rmdir()
    (output / "experiment.json").write_text("{")
    assert _message(ExperimentError, runner.check_output, experiment, output, True, False) == (
        f"{output / 'experiment.json'} is damaged: cannot tell which experiment {output} holds; "
        "use --force or another output folder"
    )
    (output / "experiment.json").write_text(json.dumps(provenance.jsonable(experiment.spec)))
    train = experiment.spec["train"]
    changed = parse_experiment({**experiment.spec, "train": {**train, "steps": train["steps"] + 1}})
    assert _message(ExperimentError, runner.check_output, changed, output, True, False) == (
        f"the experiment changed since {output} was started: resume with the same file, "
        "or use --force / another output folder"
    )
    more_seeds = parse_experiment({**experiment.spec, "seeds": [*experiment.spec["seeds"], 99]})
    assert _message(ExperimentError, runner.check_output, more_seeds, output, True, False) == (
        f"the experiment changed since {output} was started only in its seeds ({experiment.spec['seeds']} -> "
        f"{[*experiment.spec['seeds'], 99]}): run the new seeds into another folder (`--output NEW`), "
        "then `ablate merge` them"
    )


def test_the_output_folder_is_the_one_given_else_the_experiments_else_results_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    named = SimpleNamespace(name="grid", spec={"output": "elsewhere/run"})
    unnamed = SimpleNamespace(name="grid", spec={"output": None})
    assert runner.resolve_output(named, "given") == tmp_path / "given"
    assert runner.resolve_output(named, Path("given")) == tmp_path / "given"
    assert runner.resolve_output(named, None) == tmp_path / "elsewhere" / "run"
    assert runner.resolve_output(unnamed, None) == tmp_path / "results" / "grid"
    assert runner.resolve_output(unnamed, "").is_absolute()


def test_the_gpu_share_of_a_trial(tmp_path):
    assert runner._gpu_share("auto", {"GPU": 2.0, "CPU": 8.0}) == 0.25
    assert runner._gpu_share("auto", {"GPU": 1.0}) == 0.25
    assert runner._gpu_share("auto", {"CPU": 8.0}) == 0.0
    assert runner._gpu_share("auto", {"GPU": 0.0}) == 0.0
    for requested, cluster, share in ((0, {}, 0.0), (0.5, {"GPU": 1.0}, 0.5), (1, {"GPU": 1.0}, 1.0)):
        got = runner._gpu_share(requested, cluster)
        assert got == share and type(got) is float
    assert _message(ExperimentError, runner._gpu_share, 1, {"CPU": 8.0}) == (
        "resources.gpu: 1 requested, but the Ray cluster has no GPU (use gpu: 0 or gpu: auto)"
    )


def test_the_watchdog_records_a_timeout_and_ends_the_worker(tmp_path, worker, monkeypatch):
    exits = []
    monkeypatch.setattr(ray_worker.os, "_exit", exits.append)
    curves = [{"step": 10, "loss": 1.5, "flow_loss": 1.0, "bootstrap_loss": 0.5, "grad_norm": 2.0}]
    stats = {"clipped_share": 0.5, "loss_spikes": 1}
    config = TrialConfig(seed=3)
    trial = SimpleNamespace(step=40, train_seconds=2.5, training_stats=stats, curves=curves, config=config)
    ray_worker._give_up(tmp_path, "t0", trial, 0.5, 2, 30)
    assert exits == [1]
    assert _record(tmp_path) == {
        "node": "node-a",
        "restored_at_step": 30,
        "attempts": 2,
        "pack_id": None,
        "status": "failed",
        "reason": "timeout",
        "error": "no result within train.timeout_seconds = 0.5 s (stopped at step 40)",
        "diverged_step": None,
        "train_seconds": 2.5,
        "eval_seconds": 0.0,
        "clipped_share": 0.5,
        "loss_spikes": 1,
        "metrics": {},
        "curves": curves,
        "config": json.loads(json.dumps(config.to_dict())),
        "timeout_seconds": 0.5,
        "trial_id": "t0",
    }


class FakeTimer:
    """Stands in for `threading.Timer`: records how the watchdog is built, started and cancelled."""

    made: list = []

    def __init__(self, interval, function, args=None, kwargs=None) -> None:
        self.interval, self.function, self.args, self.daemon, self.events = interval, function, args, False, []
        FakeTimer.made.append(self)

    def start(self) -> None:
        self.events.append(("start", self.daemon))

    def cancel(self) -> None:
        self.events.append("cancel")


def test_a_trial_with_a_timeout_runs_under_a_watchdog_that_is_cancelled_when_it_ends(tmp_path, worker, monkeypatch):
    monkeypatch.setattr(ray_worker.threading, "Timer", FakeTimer)
    monkeypatch.setattr(FakeTimer, "made", [])
    worker()
    params = _params(tmp_path)
    params["trial"]["config"]["train"]["timeout_seconds"] = 120.0
    ray_worker.train_one(params)
    [timer] = FakeTimer.made
    assert timer.interval == 120.0 and timer.function is ray_worker._give_up
    output, trial_id, trial, timeout, attempt, restored_at = timer.args
    assert (output, trial_id, timeout, attempt, restored_at) == (tmp_path, "t0", 120.0, 1, None)
    assert isinstance(trial, ray_worker.Trial) and trial.step == 60  # the very trial that trained
    assert timer.events == [("start", True), "cancel"]  # a daemon: it never keeps a worker alive
    worker()
    ray_worker.train_one(_params(tmp_path / "untimed"))  # timeout_seconds None: no watchdog
    assert len(FakeTimer.made) == 1


def _broken(output: Path, fail_at_step: int) -> dict:
    params = _params(output)
    params["trial"]["config"].update(task=BROKEN_TASK, task_params={"fail_at_step": fail_at_step})
    return params


def test_a_trial_that_fails_twice_the_same_way_is_recorded_failed_instead_of_retried(tmp_path, worker):
    first = worker()
    with pytest.raises(TypeError):  # the first failure: raised, for Ray to retry
        ray_worker.train_one(_broken(tmp_path, 25))
    assert not records.record_path(tmp_path, "t0").exists() and [s["step"] for s in first.states] == [10, 20]
    second = worker(_checkpoint(tmp_path, first.states[-1]))
    ray_worker.train_one(_broken(tmp_path, 25))  # the same exception at the same step: returns, recorded failed
    assert second.reports[-1] == {"phase": "done", "step": 25, "status": "failed", "error": BUG}
    record = _record(tmp_path)
    assert {k: record[k] for k in ("status", "reason", "error", "attempts", "restored_at_step")} == {
        "status": "failed",
        "reason": "error",
        "error": BUG,
        "attempts": 2,
        "restored_at_step": 20,
    }
    assert [point["step"] for point in record["curves"]] == [10, 20] and record["metrics"] == {}
    log = failures.log_path(tmp_path, "t0").read_text()
    assert log.count("Traceback (most recent call last)") == 2
    assert "=== attempt 1 failed at step 25 (" in log and "=== attempt 2 failed at step 25 (" in log
    assert f'File "{BROKEN_TASK}", line {BUG_LINE}, in forward' in log
    assert [a["attempt"] for a in failures.read_attempts(tmp_path, "t0")] == [1, 2]


def test_a_trial_that_fails_another_way_is_left_to_ray_to_retry(tmp_path, worker):
    for fail_at_step in (25, 35):  # the same exception at another step
        worker()
        with pytest.raises(TypeError):
            ray_worker.train_one(_broken(tmp_path, fail_at_step))
    assert not records.record_path(tmp_path, "t0").exists()
    assert [a["failure"]["step"] for a in failures.read_attempts(tmp_path, "t0")] == [25, 35]


def test_a_trial_whose_task_cannot_be_built_is_recorded_failed_with_nothing_trained(tmp_path, worker):
    params = _params(tmp_path)
    params["trial"]["config"]["task_params"] = {"nope": 1}  # no Trial at all
    worker()
    with pytest.raises(ValueError, match="nope"):
        ray_worker.train_one(params)
    worker()
    ray_worker.train_one(params)  # the same at step 0 again
    record = _record(tmp_path)
    assert (record["status"], record["attempts"], record["curves"], record["train_seconds"]) == ("failed", 2, [], 0.0)
    assert record["error"].startswith("ValueError: task ") and record["config"] == params["trial"]["config"]


def test_a_pack_that_fails_twice_the_same_way_records_its_unfinished_members_failed(tmp_path, worker):
    configs = [copy.deepcopy(CONFIG)] + [_broken(tmp_path, step)["trial"]["config"] for step in (25, 1000)]
    members = [{"trial_id": t, "config": config} for t, config in zip("abc", configs)]  # one by one: they differ
    spec = {"trial": {"trial_id": "pack000", "output": str(tmp_path), "checkpoint_seconds": 0.0, "members": members}}
    worker()
    with pytest.raises(TypeError):
        ray_worker.train_one(spec)
    assert (_record(tmp_path, "a")["status"], _record(tmp_path, "a")["attempts"]) == ("ok", 1)
    second = worker()
    ray_worker.train_one(spec)
    assert second.reports[-1] == {"phase": "done", "step": 25, "status": "failed", "error": BUG}
    for trial_id in "bc":
        record = _record(tmp_path, trial_id)
        assert (record["status"], record["error"], record["attempts"], record["pack_id"]) == (
            "failed",
            BUG,
            2,
            "pack000",
        )
    assert [point["step"] for point in _record(tmp_path, "b")["curves"]] == [10, 20]  # what it trained
    assert [a["failure"]["step"] for a in failures.read_attempts(tmp_path, "pack000")] == [25, 25]


def test_a_failure_is_the_same_only_in_type_message_and_step(tmp_path):
    def failure(error: Exception, step: int) -> bool:
        failures.start_attempt(tmp_path, "t0", "node-a", "10.0.0.3")
        return failures.record_failure(tmp_path, "t0", error, step)[1]

    assert not failure(TypeError("bad"), 25)
    assert not failure(TypeError("bad"), 26) and not failure(ValueError("bad"), 25) and not failure(TypeError("b"), 25)
    assert failure(TypeError("bad"), 25)  # as attempt 1 did, three attempts ago
    attempts = failures.read_attempts(tmp_path, "t0")
    assert [a["attempt"] for a in attempts] == [1, 2, 3, 4, 5] and attempts[0]["node_ip"] == "10.0.0.3"
    assert attempts[0]["failure"] == {"type": "TypeError", "message": "bad", "step": 25, "error": "TypeError: bad"}
    failures.history_path(tmp_path, "t0").write_text("{")  # a damaged history informs nothing, fails nothing
    assert failures.read_attempts(tmp_path, "t0") == [] and failures.read_attempts(tmp_path, "t9") == []
    assert failures.start_attempt(tmp_path, "t0", "node-a", "10.0.0.3") == 1


def _raised(function, *args) -> Exception:
    try:
        function(*args)
    except Exception as error:
        return error
    raise AssertionError("nothing raised")


def test_one_line_names_the_exception_and_the_users_innermost_frame():
    layer = torch.nn.Linear(2, 3)

    def users_model(x):
        return layer(x)  # torch raises, several frames further in

    line = next(n for n, text in enumerate(Path(__file__).read_text().splitlines(), 1) if "return layer(x)" in text)
    error = _raised(users_model, torch.zeros(1, 4))
    assert failures.one_line(error) == f"RuntimeError: {str(error).splitlines()[0]} ({__file__}:{line})"
    inside = _raised(results.json_default, object())  # raised in ablate: this file's frame is the user's
    assert failures.one_line(inside).startswith("TypeError: cannot store object in JSON (") and __file__ in str(
        failures.one_line(inside)
    )
    inside.__traceback__ = inside.__traceback__.tb_next  # only ablate's frames left: the innermost one
    assert failures.one_line(inside).endswith(f"({results.__file__}:{inside.__traceback__.tb_lineno})")
    assert (
        failures.one_line(KeyError()) == "KeyError" and failures.one_line(ValueError("one\ntwo")) == "ValueError: one"
    )


def _tune_trial(trial_id: str, status: str = "RUNNING", num_failures: int = 1, step: int | None = 20):
    return SimpleNamespace(
        config={"trial": {"trial_id": trial_id, "config": {"train": {"steps": 60}}}},
        status=status,
        num_failures=num_failures,
        latest_checkpoint_result=None if step is None else SimpleNamespace(metrics={"step": step}),
        last_result={},
    )


def test_each_failure_or_retry_is_one_line_and_failed_trials_are_counted(tmp_path, capsys, monkeypatch):
    view = progress.ProgressView(5, tmp_path, max_failures=2)
    monkeypatch.setattr(progress.ray, "nodes", lambda: [{"NodeID": "alive", "Alive": True}])
    failures.start_attempt(tmp_path, "bug", "alive", "10.0.0.3")
    failures.record_failure(tmp_path, "bug", _raised(results.json_default, object()), 25)
    view.on_trial_recover(0, [], _tune_trial("bug"))
    failures.start_attempt(tmp_path, "lost", "gone", "10.0.0.4")
    view.on_trial_recover(0, [], _tune_trial("lost", num_failures=2, step=None))
    failures.start_attempt(tmp_path, "died", "alive", "10.0.0.3")
    view.on_trial_error(0, [], _tune_trial("died", num_failures=3))
    records.write_trial_result(tmp_path, "hung", {"status": "failed", "error": "no result within ...", "metrics": {}})
    view.on_trial_recover(0, [], _tune_trial("hung"))  # the watchdog's record: final, Tune's retry finds it
    view.on_trial_result(0, [], _tune_trial("again"), {"phase": "done", "step": 25, "status": "failed", "error": BUG})
    lines = capsys.readouterr().out.splitlines()
    where = f"{__file__}:"
    assert lines[0].startswith("[ablate] bug failed at step 25: TypeError: cannot store object in JSON (" + where)
    assert lines[0].endswith("); retrying from step 20 (attempt 2 of 3)")
    assert lines[1] == "[ablate] node 10.0.0.4 lost; lost continues from step 0 (attempt 3 of 3)"
    assert lines[2] == (
        f"[ablate] died: its worker process died (see {tmp_path / 'logs' / 'ray.log'}); failed after 3 attempts"
    )
    assert lines[3] == "[ablate] hung failed: no result within ..."
    assert lines[4] == (
        f"[ablate] again failed at step 25: {BUG}; the same as before, so not retried "
        f"(traceback: {tmp_path / 'logs' / 'again.log'})"
    )
    assert len(lines) == 5
    trials = [_tune_trial(t, status) for t, status in (("ok", "TERMINATED"), ("died", "ERROR"), ("hung", "TERMINATED"))]
    trials += [_tune_trial("again", "RUNNING"), _tune_trial("bug", "PENDING")]
    view.on_step_end(0, trials)
    assert capsys.readouterr().out.startswith("[ablate] 1/5 trials done (0 diverged), 0 running, 3 failed |")


def test_rays_log_goes_to_a_file_and_the_console_keeps_what_ablate_does_not_restate(tmp_path, capsys):
    log, screen = tmp_path / "logs" / "ray.log", io.StringIO()
    console = logging.StreamHandler(screen)  # stands in for Ray's own console handler
    ray_logger, tune_logger = logging.getLogger("ray"), logging.getLogger("ray.tune.tune")
    ray_logger.addHandler(console)
    try:
        with progress.ray_log_to(log):
            logging.getLogger("ray.tune.execution.tune_controller").error(
                "Trial task failed for trial t0", exc_info=_raised(results.json_default, object())
            )
            tune_logger.warning("Experiment has been interrupted.\nResume experiment with: Tuner.restore(path=...)")
            tune_logger.error("Trials did not complete: %s", ["t0"])
            tune_logger.warning("another warning, with a traceback", exc_info=_raised(results.json_default, object()))
            tune_logger.info("Wrote the latest version of all result files")
            logging.getLogger("ray.tune").warning("Not enough resources for a trial")
            progress.ray_driver.print_to_stdstream(
                {"lines": ["A worker died"], "pid": "raylet", "is_err": False}, False
            )
        tune_logger.warning("after the run")
    finally:
        ray_logger.removeHandler(console)
    assert screen.getvalue() == "Not enough resources for a trial\nafter the run\n"
    assert "A worker died" not in capsys.readouterr().out
    written = log.read_text()
    for kept in ("Trial task failed", "Traceback", "Tuner.restore", "Trials did not complete", "Wrote the latest"):
        assert kept in written
    assert "ERROR ray.raylet: A worker died" in written and "after the run" not in written
    assert progress.ray_driver.print_to_stdstream.__name__ == "print_to_stdstream"  # put back
    assert console.filters == [] and log.name not in str(ray_logger.handlers)


def test_a_checkpoint_is_due_only_after_more_than_checkpoint_seconds(tmp_path, worker, monkeypatch):
    monkeypatch.setattr(ray_worker, "time", SimpleNamespace(monotonic=lambda: 100.0))  # no time passes
    recorder = worker()
    ray_worker.train_one(_params(tmp_path, checkpoint_seconds=0.0))
    assert [r["step"] for r in recorder.reports] == [60, 60] and len(recorder.states) == 1


def test_each_checkpoint_reports_the_latest_loss_and_status(tmp_path, worker):
    recorder = worker()
    ray_worker.train_one(_params(tmp_path))
    curves = {point["step"]: point["loss"] for point in _record(tmp_path)["curves"]}
    train = [r for r in recorder.reports if r["phase"] == "train"]
    assert [r["loss"] for r in train] == [curves[r["step"]] for r in train]
    assert [r["status"] for r in train] == ["running"] * 6  # "ok" only once evaluated
    fresh = ray_worker.Trial(CONFIG)  # nothing logged yet: the loss is NaN
    recorder = worker()
    ray_worker._report_with_checkpoint(fresh, "a warning")
    [report] = recorder.reports
    assert math.isnan(report.pop("loss"))
    assert report == {"phase": "train", "step": 0, "status": "running", "warning": "a warning"}
    assert recorder.states[0]["step"] == 0


def _checkpoint(tmp_path: Path, state) -> tune.Checkpoint:
    folder = tmp_path / "checkpoint"
    folder.mkdir(exist_ok=True)
    torch.save(state, folder / "state.pt")
    return tune.Checkpoint.from_directory(str(folder))


class RunsCode:
    """A pickle that runs code when loaded: a checkpoint must never be able to do that."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_restoring_reads_only_tensors_and_plain_data(tmp_path):
    trial, restored_at, warning = ray_worker._restore(CONFIG, None)
    assert trial.step == 0 and restored_at is None and warning is None
    state = ray_worker.Trial(CONFIG).state_dict()
    marker = tmp_path / "code-ran"
    state["step"] = RunsCode(marker)
    trial, restored_at, warning = ray_worker._restore(CONFIG, _checkpoint(tmp_path, state))
    assert not marker.exists() and restored_at is None and trial.step == 0
    assert warning.startswith("checkpoint unreadable (") and warning.endswith("); restarted from step 0")


@pytest.mark.parametrize(
    "error, reason",
    [
        (RuntimeError("first line\nsecond line"), "first line"),
        (RuntimeError("x" * 200), "x" * 120),
        (EOFError(), "EOFError"),
    ],
)
def test_an_unreadable_checkpoint_says_why_in_one_short_line(tmp_path, monkeypatch, error, reason):
    state = ray_worker.Trial(CONFIG).state_dict()
    checkpoint = _checkpoint(tmp_path, state)

    def damaged(*args, **kwargs):
        raise error

    monkeypatch.setattr(ray_worker.torch, "load", damaged)
    trial, restored_at, warning = ray_worker._restore(CONFIG, checkpoint)
    assert warning == f"checkpoint unreadable ({reason}); restarted from step 0"
    assert restored_at is None and trial.step == 0


def test_a_finished_trial_is_saved_whole(tmp_path, worker):
    worker()
    result = SimpleNamespace(
        status="diverged",
        diverged_step=30,
        train_seconds=1.25,
        eval_seconds=0.5,
        training_stats={"clipped_share": 0.25, "max_grad_norm": 3.5},
        metrics={1: {"mean_error": 0.125}, 8: {"mean_error": 0.5}},
        curves=[{"step": 10, "loss": 1.5, "flow_loss": 1.0, "bootstrap_loss": 0.5, "grad_norm": 2.0}],
        config=TrialConfig(seed=3, objective=ObjectiveConfig(k_max=8)),
        samples={1: [[0.0, 1.0], [2.0, 3.0]], 8: np.arange(6.0).reshape(3, 2)},
        real_samples=[[5.0, 6.0]],
    )
    ray_worker.save_trial_result(tmp_path, "t0", result, restored_at=20, attempts=2)
    assert _record(tmp_path) == {
        "node": "node-a",
        "restored_at_step": 20,
        "attempts": 2,
        "pack_id": None,
        "status": "diverged",
        "diverged_step": 30,
        "train_seconds": 1.25,
        "eval_seconds": 0.5,
        "clipped_share": 0.25,
        "max_grad_norm": 3.5,
        "metrics": {"1": {"mean_error": 0.125}, "8": {"mean_error": 0.5}},
        "curves": result.curves,
        "config": json.loads(json.dumps(result.config.to_dict())),
        "trial_id": "t0",
    }
    with np.load(tmp_path / "samples" / "t0.npz") as samples:
        assert samples["steps_1"].tolist() == [[0.0, 1.0], [2.0, 3.0]]
        assert samples["steps_8"].tolist() == np.arange(6.0).reshape(3, 2).tolist()
        assert samples["real"].tolist() == [[5.0, 6.0]] and sorted(samples.files) == ["real", "steps_1", "steps_8"]
    result.real_samples = None  # a task without real data: no `real` array
    ray_worker.save_trial_result(tmp_path, "t1", result)
    with np.load(tmp_path / "samples" / "t1.npz") as samples:
        assert sorted(samples.files) == ["steps_1", "steps_8"]
    assert _record(tmp_path, "t1")["restored_at_step"] is None


def test_a_trial_record_creates_its_folders_and_stores_numpy_values_and_paths(tmp_path):
    record = {"status": "ok", "metrics": {2: {"m": np.float32(0.5)}}, "curves": [], "path": Path("/a/b")}
    records.write_trial_result(tmp_path / "new" / "run", "t0", record)  # no samples: no samples folder
    assert _record(tmp_path / "new" / "run") == {
        "status": "ok",
        "metrics": {"2": {"m": 0.5}},
        "curves": [],
        "path": "/a/b",
        "trial_id": "t0",
    }
    assert not (tmp_path / "new" / "run" / "samples").exists()
    with pytest.raises(TypeError, match="cannot store set in JSON"):
        records.write_trial_result(tmp_path, "t1", {"metrics": {}, "odd": {1}})
    assert not records.record_path(tmp_path, "t1").exists()


def test_the_json_of_records_and_specs(tmp_path):
    assert provenance.jsonable({"a": np.int64(3), "b": (np.float64(0.5), Path("/x"))}) == {"a": 3, "b": [0.5, "/x"]}
    value = results.json_default(np.float32(0.25))
    assert value == 0.25 and type(value) is float
    assert results.json_default(np.bool_(True)) is True
    assert results.json_default(Path("/a/b")) == "/a/b"
    assert _message(TypeError, results.json_default, object()) == "cannot store object in JSON"
    assert provenance.iso_time(0) == "1970-01-01T00:00:00+00:00"
    assert provenance.iso_time(86400 + 61.9) == "1970-01-02T00:01:01+00:00"


def test_a_failed_write_names_the_file_and_leaves_the_old_one(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("old")

    def full_disk(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError) as caught:
        results.atomic_write(path, full_disk)
    error = caught.value
    assert (error.errno, error.strerror, error.filename) == (28, "No space left on device", str(path))
    assert isinstance(error.__cause__, OSError) and error.__cause__.errno == 28
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]

    def no_details(tmp: Path) -> None:
        raise OSError("the disk went away")

    with pytest.raises(OSError) as caught:
        results.atomic_write(path, no_details)
    error = caught.value
    assert (error.errno, error.strerror, error.filename) == (None, "the disk went away", str(path))
    results.atomic_write(path, lambda tmp: tmp.write_text("new"))
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_the_trial_records_present_and_damaged(tmp_path):
    assert records.read_trial_records(tmp_path) == {} and records.record_names(tmp_path) == frozenset()
    folder = tmp_path / "trials"
    folder.mkdir()
    good = {"status": "ok", "metrics": {}, "curves": []}
    for name in ("b", "a"):
        (folder / f"{name}.json").write_text(json.dumps(good))
    (folder / ".c.json.tmp").write_text("{")  # a write in progress is not a record
    names = records.record_names(tmp_path)
    assert names == frozenset({"a", "b"}) and isinstance(names, frozenset)
    assert records.read_trial_records(tmp_path) == {"a": good, "b": good}
    for content, reason in (
        ("{", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        (json.dumps({"status": "ok", "metrics": {}}), "'curves'"),
        (json.dumps({"metrics": {}, "curves": []}), "'status'"),
        ("[1, 2]", "list indices must be integers or slices, not str"),
    ):
        (folder / "c.json").write_text(content)
        assert _message(results.ResultsError, records.read_trial_records, tmp_path) == (
            f"{folder / 'c.json'} is damaged ({reason}): delete it and run `ablate run EXPERIMENT --resume` "
            "to run that trial again"
        )
    (folder / "c.json").unlink()
    (folder / "c.json").mkdir()  # unreadable
    assert "c.json is damaged (" in _message(results.ResultsError, records.read_trial_records, tmp_path)
    assert results.first_line(KeyError()) == "KeyError"
    assert results.first_line(ValueError("first\nsecond")) == "first"


CURVE = {"step": 10, "loss": 1.5, "flow_loss": 1.0, "bootstrap_loss": 0.5, "grad_norm": 2.0}


def _grid_records():
    expected = [
        {"trial_id": "a0", "variant": "A", "w": True, "seed": 0},
        {"trial_id": "a1", "variant": "A", "w": True, "seed": 1},  # Tune gave up on it, no record
        {"trial_id": "b0", "variant": "B", "w": False, "seed": 0},  # the watchdog's record
        {"trial_id": "b1", "variant": "B", "w": False, "seed": 1},  # never ran
        {"trial_id": "base0", "variant": "flow", "seed": 0},  # no level for w
    ]
    by_id = {
        "a0": {
            "status": "ok",
            "diverged_step": None,
            "train_seconds": 1.5,
            "eval_seconds": 0.5,
            "node": "n1",
            "attempts": 1,
            **{stat: 0.5 + i for i, stat in enumerate(results.TRAINING_STATS)},
            "metrics": {"2": {"err": 0.5, "spread": 1.0}, "16": {"err": 0.25}},
            "curves": [CURVE],
        },
        "b0": {
            "status": "failed",
            "reason": "timeout",
            "error": "no result",
            "attempts": 1,
            "restored_at_step": 20,
            "diverged_step": None,
            "train_seconds": 3.0,
            "eval_seconds": 0.0,
            "node": "n2",
            "metrics": {},
            "curves": [CURVE],
        },
        "base0": {
            "status": "diverged",
            "diverged_step": 20,
            "train_seconds": 2.0,
            "eval_seconds": 0.25,
            "node": "n1",
            "metrics": {"2": {"err": 0.75}},
            "curves": [],
        },
    }
    return expected, by_id


def test_the_tables_cell_by_cell(tmp_path):
    expected, by_id = _grid_records()
    gave_up = {"error": "ActorDiedError: The actor died unexpectedly", "attempts": 3}
    metrics, curves, trials = records.collect_tables(expected, ["w"], by_id, failed={"a1": gave_up, "b0": {}})
    nan = float("nan")
    ident = {
        "a0": ["a0", "A", True, 0],
        "a1": ["a1", "A", True, 1],
        "b0": ["b0", "B", False, 0],
        "b1": ["b1", "B", False, 1],
        "base0": ["base0", "flow", None, 0],
    }
    head = ["trial_id", "variant", "w", "seed"]
    stats, no_stats = [0.5 + i for i in range(len(results.TRAINING_STATS))], [None] * len(results.TRAINING_STATS)
    want_trials = pd.DataFrame(
        [
            ident["a0"] + ["ok", None, 1.5, 0.5, "n1", None] + stats + [None, None, 1, None],
            ident["a1"] + ["failed", None, None, None, None, "error"] + no_stats + [None, gave_up["error"], 3, None],
            ident["b0"] + ["failed", None, 3.0, 0.0, "n2", "timeout"] + no_stats + [None, "no result", 1, 20],
            ident["b1"] + ["missing", None, None, None, None, None] + no_stats + [None] * 4,
            ident["base0"] + ["diverged", 20, 2.0, 0.25, "n1", None] + no_stats + [None] * 4,
        ],
        columns=head
        + ["status", "diverged_step", "train_seconds", "eval_seconds", "node", "reason", *results.TRAINING_STATS]
        + ["pack_id", "error", "attempts", "restored_at_step"],
    )
    pd.testing.assert_frame_equal(trials, want_trials)
    values = {"a0": [0.5, 1.0, 0.25], "b0": [nan] * 3, "base0": [0.75, nan, nan]}
    status = {"a0": "ok", "b0": "failed", "base0": "diverged"}
    keys = [(2, "err"), (2, "spread"), (16, "err")]  # the pairs some record has: K numerically, then the metric
    want_metrics = pd.DataFrame(
        [ident[t] + [status[t], k, m, v] for t in values for (k, m), v in zip(keys, values[t])],
        columns=head + ["status", "steps", "metric", "value"],
    )
    pd.testing.assert_frame_equal(metrics, want_metrics)
    want_curves = pd.DataFrame(
        [ident[t] + [status[t], 10, m, CURVE[m]] for t in ("a0", "b0") for m in results.CURVE_METRICS],
        columns=head + ["status", "step", "metric", "value"],
    )
    pd.testing.assert_frame_equal(curves, want_curves)
    nothing = records.collect_tables([], ["w"], {})  # no trials: the tables still have their columns
    assert [list(t.columns) for t in nothing] == [list(want_metrics.columns), list(want_curves.columns)] + [
        list(want_trials.columns)
    ]
    empty = records.collect_tables(expected, ["w"], {})
    assert [len(t) for t in empty] == [0, 0, 5] and list(empty[0].columns) == list(want_metrics.columns)
    assert list(empty[1].columns) == list(want_curves.columns) and set(empty[2]["status"]) == {"missing"}


def _frames():
    expected, by_id = _grid_records()
    return records.collect_tables(expected, ["w"], by_id, failed={"a1": {}})


def test_tables_are_checked_before_anything_is_written(tmp_path):
    metrics, curves, trials = _frames()
    run_info = {"factors": [{"name": "w", "levels": [True, False]}]}
    for which, missing in ((0, "metric"), (1, "step"), (2, "w"), (0, "seed"), (1, "seed"), (2, "seed")):
        frames = [metrics, curves, trials]
        frames[which] = frames[which].drop(columns=[missing])
        name = ("metrics", "curves", "trials")[which]
        assert _message(ValueError, results.write_tables, tmp_path / "out", *frames, run_info) == (
            f"{name} is missing required columns: ['{missing}']"
        )
        assert not (tmp_path / "out").exists()


def test_tables_and_run_json_are_written_whole(tmp_path):
    metrics, curves, trials = _frames()
    run_info = {"name": "grid", "factors": [{"name": "w", "levels": [True, False]}], "where": Path("/a/b")}
    out = tmp_path / "new" / "out"
    metrics, curves = metrics.iloc[::2], curves.iloc[1::2]  # a frame's index is not written
    results.write_tables(out, metrics, curves, trials, run_info)
    assert sorted(p.name for p in out.iterdir()) == [
        "curves.csv",
        "curves.parquet",
        "metrics.csv",
        "metrics.parquet",
        "run.json",
        "trials.csv",
    ]
    assert (out / "run.json").read_text() == json.dumps({**run_info, "where": "/a/b"}, indent=2)
    for name, frame in (("metrics", metrics), ("curves", curves)):
        pd.testing.assert_frame_equal(pd.read_parquet(out / f"{name}.parquet"), frame.reset_index(drop=True))
        assert (out / f"{name}.csv").read_text() == frame.to_csv(index=False)
    assert (out / "trials.csv").read_text() == trials.to_csv(index=False)
    results.write_tables(tmp_path / "plain", metrics, curves, trials, {})  # no factors: none required
    assert json.loads((tmp_path / "plain" / "run.json").read_text()) == {}


def test_factor_columns_that_mix_types_are_stored_as_text_in_parquet(tmp_path):
    frame = pd.DataFrame(
        {
            "numbers": [1.0, 2.0, 3.0, 4.0],  # first: a column that needs nothing does not end the search
            "mixed": [1, "a", None, float("nan")],
            "bools": [True, np.False_, None, True],
            "words": ["x", "y", None, "z"],
            "ints": pd.Series([1, 2, None, 3], dtype=object),  # one type: left as it is
        }
    )
    safe = results._parquet_safe(frame)
    assert safe["mixed"].tolist()[:2] == ["1", "a"] and safe["mixed"][2:].isna().all()  # missing stays missing
    assert safe["bools"].tolist() == [True, np.False_, None, True] and type(safe["bools"][1]) is np.bool_
    pd.testing.assert_frame_equal(safe[["words", "ints", "numbers"]], frame[["words", "ints", "numbers"]])
    assert frame["mixed"].tolist()[0] == 1  # a copy: the caller's frame is untouched
    results._to_parquet(frame.set_axis([5, 6, 7, 8]), tmp_path / "mixed.parquet")  # the index is not written
    back = pd.read_parquet(tmp_path / "mixed.parquet")
    assert list(back.columns) == list(frame.columns) and back.index.tolist() == [0, 1, 2, 3]
    assert back["mixed"].tolist()[:2] == ["1", "a"] and back["mixed"][2:].isna().all()
    assert back["bools"].tolist()[:2] == [True, False]
    plain = frame[["words", "numbers"]]
    results._to_parquet(plain.set_axis([5, 6, 7, 8]), tmp_path / "plain.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "plain.parquet"), plain)


def test_the_tables_are_rebuilt_from_run_json_and_the_records(tmp_path):
    expected, by_id = _grid_records()
    out = tmp_path / "out"
    assert _message(FileNotFoundError, records.rebuild_tables, out) == (
        f"{out / 'run.json'} not found: is {out} a results folder?"
    )
    out.mkdir()
    (out / "run.json").write_text("{")
    assert _message(results.ResultsError, records.rebuild_tables, out) == (
        f"{out / 'run.json'} is damaged (Expecting property name enclosed in double quotes: line 1 column 2 "
        f"(char 1)): run `ablate run EXPERIMENT --resume --output {out}` to write it again"
    )
    (out / "run.json").write_text("[]")
    assert _message(results.ResultsError, records.rebuild_tables, out) == (
        f"{out / 'run.json'} is damaged (not a JSON object)"
    )
    for run in ({"name": "grid"}, {"expected_trials": []}):
        (out / "run.json").write_text(json.dumps(run))
        assert _message(results.ResultsError, records.rebuild_tables, out) == (
            f"{out / 'run.json'} lists no expected trials: cannot rebuild the tables"
        )
    run = {"name": "grid", "factors": [{"name": "w", "levels": [True, False]}], "expected_trials": expected}
    (out / "run.json").write_text(json.dumps(run))
    for trial_id, record in by_id.items():
        records.write_trial_result(out, trial_id, record)
    records.rebuild_tables(out)
    metrics, curves, trials = records.collect_tables(expected, ["w"], records.read_trial_records(out))
    assert trials.loc[1, "status"] == "missing"  # Tune's earlier verdict is not in the records
    pd.testing.assert_frame_equal(pd.read_parquet(out / "metrics.parquet"), metrics)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "curves.parquet"), curves)
    assert (out / "trials.csv").read_text() == trials.to_csv(index=False)
    assert json.loads((out / "run.json").read_text()) == run


def test_a_folder_written_before_the_attempt_columns_still_loads_and_rebuilds(tmp_path):
    expected, by_id = _grid_records()
    out = tmp_path / "out"
    run = {"name": "grid", "factors": [{"name": "w", "levels": [True, False]}], "expected_trials": expected}
    results.write_tables(out, *_frames(), run)
    new = ["error", "attempts", "restored_at_step"]
    pd.read_csv(out / "trials.csv").drop(columns=new).to_csv(out / "trials.csv", index=False)
    assert set(results.load(out).trials.columns).isdisjoint(new)  # loads, without them
    for trial_id, record in by_id.items():  # records without `attempts` (nor `error`, `restored_at_step`)
        records.write_trial_result(out, trial_id, {k: v for k, v in record.items() if k not in new})
    records.rebuild_tables(out)
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials.columns[-3:]) == new and trials[new].isna().all().all()


def test_the_primary_steps_by_default():
    assert results.default_primary_steps([1, 2, 4, 8]) == 4
    assert results.default_primary_steps([16, 8, 4, 1]) == 4  # 4 wherever it is, not the middle one
    assert results.default_primary_steps([32, 1, 16, 2, 8]) == 8  # no 4: the middle one
    assert results.default_primary_steps([16, 1]) == 16
    got = results.default_primary_steps(np.array([8, 2, 1]))
    assert got == 2 and type(got) is int  # run.json needs a JSON number


def _run_experiment_spec(tmp_path: Path, **changes) -> dict:
    spec = {
        "name": "grid",
        "task": TINY_TASK,
        "objective": {"k_max": 8, "bootstrap_space": "x"},
        "seeds": [3, 5],
        "factors": {"half_step": ["renoise", "velocity"], "tau2_weight": [True, False], "lr": [0.01, 0.001]},
        "baseline": True,
        "train": {"steps": 20, "batch_size": 8, "log_every": 10},
        "eval": {"steps": [1, 2, 8]},
        "labels": {"paper": "P"},
        "primary": {"metric": "spread"},
        "output": str(tmp_path / "out"),
    }
    return {**spec, **changes}


def test_run_json_describes_the_run_and_keeps_every_session(tmp_path, monkeypatch):
    experiment = dataclasses.replace(
        parse_experiment(_run_experiment_spec(tmp_path)), overrides=("train.steps=20", "seeds=[3,5]")
    )
    output = tmp_path / "out"
    output.mkdir()
    now = [1000.0 + 3600.0]
    monkeypatch.setattr(provenance, "time", SimpleNamespace(time=lambda: now[0]))
    code = {"versions": {"torch": "2"}, "git_commit": "abc"}
    info = provenance.run_info(experiment, output, 1000.0, False, code)
    session = {
        "started": "1970-01-01T00:16:40+00:00",
        "finished": "1970-01-01T01:16:40+00:00",
        "wall_seconds": 3600.0,
        "resumed": False,
        "versions": {"torch": "2"},
        "git_commit": "abc",
    }
    assert info == {
        "name": "grid",
        "task": {"name": TINY_TASK, "params": {}, "sample_format": "points"},
        "factors": [
            {"name": "half_step", "levels": ["renoise", "velocity"], "reference": "velocity"},
            {"name": "tau2_weight", "levels": [True, False], "reference": True},
            {"name": "lr", "levels": [0.01, 0.001], "reference": 0.01},
        ],
        "design": {  # the full factorial: no generator, no word, every cell of the three factors
            "spec": "full",
            "generators": [],
            "words": [],
            "resolution": None,
            "defining_relation": "",
            "runs": 8,
            "extra_cells": [],
        },
        "seeds": [3, 5],
        "eval_steps": [1, 2, 8],
        "k_max": 8,
        "expected_trials": experiment.expected_trials(),
        "paper_variant": "grid_xboot_vstep_w2,lr=0.01",  # the paper's levels of the varied toggles
        "simplified_variant": None,  # two toggles vary: the reviewed code's cell is not in the grid
        "baseline_variant": "flow,lr=0.01",
        "primary_metric": "spread",
        "primary_steps": 2,
        "metric_directions": {"mean_error": "min", "spread": "max"},
        "metric_scales": {},  # the tiny task declares nothing: every metric raw, no share, no gate
        "share_metrics": {},
        "learnability_gate": [],
        "labels": {"paper": "P"},
        "config": json.loads(json.dumps(experiment.spec)),
        "overrides": ["train.steps=20", "seeds=[3,5]"],
        "versions": {"torch": "2"},
        "git_commit": "abc",
        "started": "1970-01-01T00:16:40+00:00",
        "finished": "1970-01-01T01:16:40+00:00",
        "wall_seconds": 3600.0,
        "sessions": [session],
    }
    # A resumed session: the earlier ones are kept, this one's entry is replaced by every refresh.
    (output / "run.json").write_text(json.dumps(info))
    now[0] = 20000.0
    resumed = provenance.run_info(experiment, output, 10000.0, True, {"versions": {"torch": "3"}, "git_commit": None})
    (output / "run.json").write_text(json.dumps(resumed))
    now[0] = 20500.0
    resumed = provenance.run_info(experiment, output, 10000.0, True, {"versions": {"torch": "3"}, "git_commit": None})
    second = {
        "started": "1970-01-01T02:46:40+00:00",
        "finished": "1970-01-01T05:41:40+00:00",
        "wall_seconds": 10500.0,
        "resumed": True,
        "versions": {"torch": "3"},
        "git_commit": None,
    }
    assert resumed["sessions"] == [session, second]
    assert (resumed["started"], resumed["finished"]) == (session["started"], second["finished"])
    assert resumed["wall_seconds"] == 3600.0 + 10500.0
    assert (resumed["versions"], resumed["git_commit"]) == ({"torch": "3"}, None)
    (output / "run.json").write_text("{damaged")  # rewritten from this session on
    rewritten = provenance.run_info(experiment, output, 10000.0, True, {})
    assert rewritten["sessions"] == [{k: second[k] for k in ("started", "finished", "wall_seconds", "resumed")}]


def test_run_json_defaults_eval_steps_primary_and_baseline(tmp_path, monkeypatch):
    factors = {"tau2_weight": [False, True], "lr": [0.01], "batch_size": [8]}
    spec = _run_experiment_spec(tmp_path, baseline=False, primary={"steps": 8}, factors=factors)
    del spec["eval"]
    experiment = parse_experiment(spec)
    monkeypatch.setattr(provenance, "time", SimpleNamespace(time=lambda: 1000.0))
    info = provenance.run_info(experiment, tmp_path, 1000.0, False, {})
    assert info["eval_steps"] == [1, 2, 4, 8] and info["primary_steps"] == 8
    assert info["primary_metric"] == "mean_error" and info["baseline_variant"] is None
    assert (info["paper_variant"], info["simplified_variant"]) == ("grid_xboot_vstep_w2,lr=0.01,batch_size=8", None)
    assert info["overrides"] == [] and info["wall_seconds"] == 0.0
    del spec["primary"]
    info = provenance.run_info(parse_experiment(spec), tmp_path, 1000.0, False, {})
    assert info["primary_steps"] == 4
    one = parse_experiment({**spec, "seeds": [0], "factors": {"tau2_weight": [False]}})  # a single trial
    info = provenance.run_info(one, tmp_path, 1000.0, False, {})
    # the reference level (w2) is not in the grid: no cell is the paper's, and none is called so
    assert (info["paper_variant"], info["simplified_variant"]) == (None, None)
    no_toggle = parse_experiment({**spec, "factors": {"lr": [0.01, 0.001]}})  # e.g. teacher_context alone
    info = provenance.run_info(no_toggle, tmp_path, 1000.0, False, {})
    assert info["paper_variant"] == "grid_xboot_vstep_w2,lr=0.01" and info["simplified_variant"] is None
    full = parse_experiment({**spec, "factors": {"lr": [0.01, 0.001]} | DEFAULT_FACTORS})  # all four toggles
    info = provenance.run_info(full, tmp_path, 1000.0, False, {})
    assert info["simplified_variant"] == "cont_xboot_renoise_now2,lr=0.01"


def test_run_json_records_the_tasks_declarations(tmp_path, monkeypatch):
    """What a built-in task declares reaches run.json as it is; Results reads it back from there."""
    from ablate.results import load
    from ablate.tasks.toy2d import Toy2DTask

    spec = _run_experiment_spec(tmp_path, factors={"tau2_weight": [True, False]})
    spec.update(task="toy2d", task_params={"n_eval": 300}, primary={})
    monkeypatch.setattr(provenance, "time", SimpleNamespace(time=lambda: 1000.0))
    info = provenance.run_info(parse_experiment(spec), tmp_path, 1000.0, False, {})
    declared = Toy2DTask.declare(n_eval=300)
    assert info["metric_scales"] == declared.metric_scales and info["metric_scales"]["w2"] == "log"
    assert info["share_metrics"] == declared.share_metrics and info["share_metrics"]["precision"] == 300
    assert info["learnability_gate"] == declared.learnability_gate
    (tmp_path / "run.json").write_text(json.dumps(info))  # a run that has only started: no tables yet
    results = load(tmp_path)
    assert (results.metric_scales, results.share_metrics, results.learnability_gate) == tuple(declared)


def test_write_results_counts_what_finished_failed_or_is_missing(tmp_path, monkeypatch):
    experiment = _experiment(tmp_path)
    output = tmp_path / "out"
    ok, diverged, timed_out, given_up = (t.trial_id for t in experiment.trials)
    base = {"diverged_step": None, "train_seconds": 1.0, "eval_seconds": 0.5, "node": "n", "curves": [CURVE]}
    records.write_trial_result(output, ok, {**base, "status": "ok", "metrics": {1: {"mean_error": 0.5}}})
    records.write_trial_result(output, diverged, {**base, "status": "diverged", "diverged_step": 10, "metrics": {}})
    records.write_trial_result(output, timed_out, {**base, "status": "failed", "reason": "timeout", "metrics": {}})
    monkeypatch.setattr(provenance, "time", SimpleNamespace(time=lambda: 1000.0))
    outcome = runner.write_results(experiment, output, 1000.0, False, {}, {})
    assert outcome == runner.RunOutcome(output, 4, 2, 1, True)
    outcome = runner.write_results(experiment, output, 1000.0, True, {}, {given_up: {"attempts": 3}})
    assert outcome == runner.RunOutcome(output, 4, 2, 2, False)
    loaded = results.load(output)
    assert dict(zip(loaded.trials["trial_id"], loaded.trials["status"])) == {
        ok: "ok",
        diverged: "diverged",
        timed_out: "failed",
        given_up: "failed",
    }
    assert loaded.run == json.loads(json.dumps(provenance.run_info(experiment, output, 1000.0, True, {})))
    assert loaded.run["sessions"][0]["resumed"] is True


def test_live_tables_refresh_when_a_trial_finishes_and_retry_a_failed_refresh(tmp_path):
    seen, failures = [], [OSError(28, "No space left on device"), ValueError("half a table")]

    def refresh():
        seen.append(records.record_names(tmp_path))
        if failures:
            raise failures.pop(0)

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 5
        while len(seen) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(seen) >= count, f"{len(seen)} refreshes after 5 s, expected {count}"

    live = progress.LiveTables(refresh, tmp_path, every_seconds=0.01)
    assert live.daemon and (live.refresh, live.output, live.every_seconds) == (refresh, tmp_path, 0.01)
    assert progress.LiveTables(refresh, tmp_path).every_seconds == 2.0
    with live:
        assert live.is_alive()
        time.sleep(0.1)
        assert seen == []  # nothing finished yet
        records.write_trial_result(tmp_path, "a", {"metrics": {}})
        wait_for(3)  # two failed refreshes, retried
        time.sleep(0.1)
        assert seen == [frozenset({"a"})] * 3  # and no refresh while nothing new finished
        records.write_trial_result(tmp_path, "b", {"metrics": {}})
        wait_for(4)
    assert not live.is_alive() and seen[3:] == [frozenset({"a", "b"})]
    records.write_trial_result(tmp_path, "c", {"metrics": {}})
    time.sleep(0.05)
    assert len(seen) == 4  # stopped


def test_a_killed_drivers_state_naming_a_deleted_checkpoint_resumes_from_the_newest(tmp_path):
    """SIGKILL between a trial's new checkpoint (which deletes the older one) and the driver's next state
    file leaves a state naming a checkpoint that is gone; the newest one is copied under that name, the
    rest is left as it is (seen in tests/test_cli_run.py's SIGKILL resume under load)."""
    tune_path = tmp_path / "ray" / "tune"

    def trial_entry(trial_id: str, checkpoint: str | None) -> list[str]:
        result = {"checkpoint_dir_name": checkpoint, "config": {"trial": {"trial_id": trial_id}}}
        return [json.dumps({"trial_id": trial_id}), json.dumps({"last_result": result})]

    for trial_id, indices in {"a__seed0": (2, 3), "b__seed0": (1,), "c__seed0": ()}.items():
        for index in indices:
            (tune_path / trial_id / f"checkpoint_{index:06d}").mkdir(parents=True)
            (tune_path / trial_id / f"checkpoint_{index:06d}" / "state.pt").write_text(f"{trial_id} {index}")
    old = {"trial_data": [trial_entry("a__seed0", "checkpoint_000000")]}
    (tune_path / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps(old))
    state = {
        "trial_data": [
            trial_entry("a__seed0", "checkpoint_000001"),  # deleted when 2 registered: the race
            trial_entry("b__seed0", "checkpoint_000001"),  # present: untouched
            trial_entry("c__seed0", None),  # never checkpointed
        ]
    }
    (tune_path / "experiment_state-2026-01-01_00-00-30.json").write_text(json.dumps(state))
    runner.restore_missing_checkpoints(tune_path)
    assert (tune_path / "a__seed0" / "checkpoint_000001" / "state.pt").read_text() == "a__seed0 3"
    assert not (tune_path / "a__seed0" / "checkpoint_000000").exists()  # named only by an older state file
    assert sorted(p.name for p in (tune_path / "b__seed0").iterdir()) == ["checkpoint_000001"]
    assert not (tune_path / "c__seed0").exists()
