"""Faults a real user meets, through the real CLI: two drivers on one folder, damaged tables, a full
disk while writing, a hung trial. Each row of results/README.md's fault table has its test here (or
in test_runner.py / test_cli_run.py, named there)."""

import signal
import time

import pandas as pd
import pytest
from test_cli_run import run_cli, write_experiment

from ablate import results
from ablate.cli import main

pytestmark = pytest.mark.slow


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
