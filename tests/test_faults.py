"""Faults a real user meets, through the real CLI: two drivers on one folder, damaged tables, a full
disk while writing, a hung trial. Each row of results/README.md's fault table has its test here (or
in test_runner.py / test_cli_run.py, named there)."""

import json
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
from test_cli_run import run_cli, write_experiment

from ablate import results
from ablate.cli import main

pytestmark = pytest.mark.slow

BROKEN_TASK = str(Path(__file__).with_name("broken_task.py"))  # its model raises a TypeError at a given step
BUG_LINE = next(n for n, line in enumerate(Path(BROKEN_TASK).read_text().splitlines(), 1) if "+ self.bias" in line)
BUG = f"TypeError: unsupported operand type(s) for +: 'Tensor' and 'NoneType' ({BROKEN_TASK}:{BUG_LINE})"
TRIAL = "grid_vboot_vstep_w2__seed0"


def run_buggy_model(tmp_path: Path, **task_params) -> tuple[int, str, Path]:
    """One trial of the broken task through the real CLI, checkpointed every 10 steps and failing at
    step 25: its exit status, its console (stdout and stderr) and its results folder."""
    path = write_experiment(
        tmp_path,
        task=BROKEN_TASK,
        task_params={"fail_at_step": 25, **task_params},
        factors={"tau2_weight": [True]},
        seeds=[0],
        checkpoint_seconds=1e-6,
    )
    driver = run_cli(["run", str(path), "--no-report"])
    console = driver.communicate(timeout=300)[0]
    return driver.returncode, console, tmp_path / "results" / "grid"


def test_a_bug_in_the_model_is_attempted_twice_then_one_line_with_the_users_file_and_line(tmp_path):
    """The same exception at the same step twice: not retried a third time (max_failures is 2); the
    console has one line per failure with the user's file:line and no traceback, Ray's output is in
    logs/ray.log, the tracebacks of both attempts in logs/<trial_id>.log."""
    status, console, out = run_buggy_model(tmp_path)
    assert status == 1, console
    log = out / "logs" / f"{TRIAL}.log"
    assert f"[ablate] {TRIAL} failed at step 25: {BUG}; retrying from step 20 (attempt 2 of 3)\n" in console
    assert (
        f"[ablate] {TRIAL} failed at step 25: {BUG}; the same as before, so not retried (traceback: {log})\n"
    ) in console
    assert (
        console.count(f"[ablate] {TRIAL} failed") == 2
        and "[ablate] 0/1 trials done (0 diverged), 0 running, 1 failed" in console
    )
    for noise in ("Traceback", "Trial task failed", "Trials did not complete", "RayTaskError", "\x1b["):
        assert noise not in console, console
    trial = pd.read_csv(out / "trials.csv").iloc[0]
    assert (trial["status"], trial["reason"], trial["error"]) == ("failed", "error", BUG)
    assert (trial["attempts"], trial["restored_at_step"]) == (2, 20)
    record = json.loads((out / "trials" / f"{TRIAL}.json").read_text())
    assert (record["error"], record["attempts"], record["restored_at_step"]) == (BUG, 2, 20)
    tracebacks = log.read_text()
    assert tracebacks.count("Traceback (most recent call last)") == 2
    assert "=== attempt 1 failed at step 25" in tracebacks and "=== attempt 2 failed at step 25" in tracebacks
    assert f'File "{BROKEN_TASK}", line {BUG_LINE}, in forward' in tracebacks
    assert f"Trial task failed for trial {TRIAL}" in (out / "logs" / "ray.log").read_text()


def test_an_error_that_happens_once_is_retried_from_its_checkpoint_and_the_trial_finishes(tmp_path):
    marker = tmp_path / "failed-once"
    status, console, out = run_buggy_model(tmp_path, marker=str(marker))
    assert status == 0 and marker.exists(), console
    assert f"[ablate] {TRIAL} failed at step 25: {BUG}; retrying from step 20 (attempt 2 of 3)\n" in console
    assert "Traceback" not in console and console.count(f"[ablate] {TRIAL} failed") == 1
    trial = pd.read_csv(out / "trials.csv").iloc[0]
    assert (trial["status"], trial["attempts"], trial["restored_at_step"]) == ("ok", 2, 20)
    assert pd.isna(trial["error"]) and pd.isna(trial["reason"])


def test_a_second_driver_on_the_same_folder_refuses_in_one_line(tmp_path, capsys):
    path = write_experiment(tmp_path, seeds=[0, 1, 2], train={"steps": 3000, "batch_size": 16, "log_every": 50})
    out = tmp_path / "results" / "grid"
    first = run_cli(["run", str(path), "--no-report"])
    lock = out / ".ablate.lock"
    deadline = time.time() + 120
    while not (lock.exists() and lock.read_text()) and time.time() < deadline:
        time.sleep(0.2)
    assert f"pid {first.pid} on " in lock.read_text()
    for extra in ([], ["--resume"], ["--force"]):
        assert main(["run", str(path), "--no-report", *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"in use by another `ablate run` (pid {first.pid} on " in err
    # live tables: as soon as a trial has finished, the report works on what is done
    while not (out / "trials.csv").exists() and time.time() < deadline:
        time.sleep(0.5)
    assert main(["report", str(out)]) == 0
    opening = (out / "report.md").read_text().split("\n\n")[1]
    assert opening.startswith("**Partial: ") and " of 6 trials.**" in opening
    assert first.poll() is None  # still running
    first.send_signal(signal.SIGINT)
    output = first.communicate(timeout=120)[0]
    assert first.returncode == 130, output
    assert lock.read_text() == ""  # released: --resume may now take over


@pytest.fixture
def finished_grid(tmp_path, ray_session):
    path = write_experiment(tmp_path)
    assert main(["run", str(path), "--no-report"]) == 0
    return path, tmp_path / "results" / "grid"


def test_a_damaged_table_is_one_line_and_is_rebuilt_from_the_trial_records(finished_grid, capsys):
    _, out = finished_grid
    before = pd.read_parquet(out / "metrics.parquet")
    data = (out / "metrics.parquet").read_bytes()
    (out / "metrics.parquet").write_bytes(data[: len(data) // 2])  # truncated
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metrics.parquet is damaged" in err and "--rebuild" in err
    assert main(["report", str(out), "--rebuild"]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out / "metrics.parquet"), before)
    assert (out / "report.md").exists()
    run = (out / "run.json").read_text()
    (out / "run.json").write_text(run[:20])  # half a run.json
    assert main(["report", str(out)]) == 2
    assert "run.json is damaged" in capsys.readouterr().err
    (out / "run.json").write_text(run)
    record = out / "trials" / "grid_vboot_vstep_w2__seed0.json"
    record.write_text(record.read_text()[:40])  # a trial record cut short
    assert main(["report", str(out), "--rebuild"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{record} is damaged" in err


def test_a_full_disk_while_writing_the_tables_loses_nothing_and_resume_finishes(
    tmp_path, ray_session, capsys, monkeypatch
):
    path = write_experiment(tmp_path)
    out = tmp_path / "results" / "grid"

    def disk_full(frame, target):
        target.write_bytes(b"PAR1 half a file")  # the write gets part way, then the disk is full
        raise OSError(28, "No space left on device", str(target))

    monkeypatch.setattr(results, "_to_parquet", disk_full)
    assert main(["run", str(path), "--no-report"]) == 1
    ours = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ablate:")]
    assert len(ours) == 1 and "No space left on device" in ours[0] and "--resume" in ours[0]
    assert f"({out / 'metrics.parquet'})" in ours[0]
    assert not (out / "metrics.parquet").exists()  # no half-written table under its real name
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert len(list((out / "trials").glob("*.json"))) == 4  # the finished trials are kept
    monkeypatch.undo()
    assert main(["run", str(path), "--no-report", "--resume"]) == 0
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 4 and (trials["status"] == "ok").all()
    assert len(pd.read_parquet(out / "metrics.parquet")) == 4 * 3 * 2


def test_a_hung_trial_fails_with_reason_timeout_and_the_grid_goes_on(tmp_path, ray_session, capsys):
    path = write_experiment(
        tmp_path,
        seeds=[0],
        factors={"tau2_weight": [True], "task_params.hang_at_batch": [None, 5]},
        train={"steps": 40, "batch_size": 16, "log_every": 10, "timeout_seconds": 5},
    )
    started = time.time()
    assert main(["run", str(path), "--no-report"]) == 1  # a trial failed
    assert time.time() - started < 120
    trials = pd.read_csv(tmp_path / "results" / "grid" / "trials.csv").set_index("trial_id")
    hung = [t for t in trials.index if "hang_at_batch=5" in t]
    assert len(hung) == 1 and trials.loc[hung[0], "status"] == "failed"
    assert trials.loc[hung[0], "reason"] == "timeout"
    assert (trials.drop(hung)["status"] == "ok").all()
    console = capsys.readouterr().out
    assert f"[ablate] {hung[0]} failed: no result within train.timeout_seconds = 5 s (stopped at step 4)" in console
    assert "1/2 trials done (0 diverged), 0 running, 1 failed" in console  # the timed-out trial counts as failed


def test_a_lost_node_is_one_line_and_its_trial_continues_from_its_checkpoint(tmp_path):
    """A node removed while it trains a trial: one console line naming the node and the step the trial
    continues from, none of Ray's actor tracebacks; trials.csv says the trial took two attempts."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # trials run on the two nodes
    doomed = cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=1)
    try:
        path = write_experiment(
            tmp_path,
            factors={"tau2_weight": [True]},
            checkpoint_seconds=0.5,
            train={"steps": 3000, "batch_size": 16, "log_every": 50},
        )
        out = tmp_path / "results" / "grid"
        driver = run_cli(["run", str(path), "--no-report", "--address", cluster.address])
        deadline = time.time() + 180
        while len(list((out / "ray").rglob("state.pt"))) < 2 and time.time() < deadline:  # both trials train
            time.sleep(0.5)
        time.sleep(2.0)
        histories = [json.loads(p.read_text()) for p in (out / "logs").glob("*.json")]
        [lost] = [h for h in histories if h["attempts"][-1]["node"] == doomed.node_id]
        cluster.remove_node(doomed)
        console = driver.communicate(timeout=300)[0]
        assert driver.returncode == 0, console
    finally:
        cluster.shutdown()
    trials = pd.read_csv(out / "trials.csv").set_index("trial_id")
    assert (trials["status"] == "ok").all() and len(trials) == 2
    step = trials.loc[lost["trial_id"], "restored_at_step"]
    assert step > 0 and trials.loc[lost["trial_id"], "attempts"] == 2, console
    node = lost["attempts"][0]["node_ip"]
    assert f"[ablate] node {node} lost; {lost['trial_id']} continues from step {step:.0f} (attempt 2 of 3)\n" in console
    for noise in ("Traceback", "ActorDiedError", "ActorUnavailableError", "Trial task failed", "(raylet)"):
        assert noise not in console, console
    assert (trials.drop(lost["trial_id"])["attempts"] == 1).all()
