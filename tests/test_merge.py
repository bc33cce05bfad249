"""`ablate merge`: runs of one experiment on disjoint seeds become one study, through the real CLI and
real small Ray Tune runs of the tiny task; every refusal is one line and writes nothing."""

import json

import pandas as pd
import pytest
from test_cli_run import snapshot, write_experiment

from ablate import locking
from ablate.cli import main

pytestmark = pytest.mark.slow


def _run(tmp_path, name, **overrides):
    path = write_experiment(tmp_path, name=name, **overrides)
    assert main(["run", str(path), "--no-report"]) == 0
    return tmp_path / "results" / name


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert err.startswith("ablate: error: ") and err.count("\n") == 1, err
    assert all(n in err for n in needles), err


def test_merged_seed_runs_are_the_study_run_at_once(tmp_path, ray_session, capsys):
    first, second = _run(tmp_path, "first", seeds=[0]), _run(tmp_path, "second", seeds=[1])
    together = _run(tmp_path, "together", seeds=[0, 1])
    sources_before = snapshot(first) | snapshot(second)
    merged = tmp_path / "merged"
    assert main(["merge", str(first), str(second), "--output", str(merged)]) == 0
    assert (merged / "report.md").is_file() and len(pd.read_csv(merged / "effects.csv"))
    columns = ["trial_id", "steps", "metric", "value"]
    expected = pd.read_csv(together / "metrics.csv")[columns].sort_values(columns[:3]).reset_index(drop=True)
    got = pd.read_csv(merged / "metrics.csv")[columns].sort_values(columns[:3]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected)
    trials = pd.read_csv(merged / "trials.csv")
    assert sorted(trials["seed"]) == [0, 0, 1, 1] and (trials["status"] == "ok").all()
    assert sorted(p.name for p in (merged / "samples").iterdir()) == sorted(f"{t}.npz" for t in trials["trial_id"])
    run = json.loads((merged / "run.json").read_text())
    assert run["seeds"] == [0, 1] and [m["seeds"] for m in run["merged_from"]] == [[0], [1]]
    assert {s["source"] for s in run["sessions"]} == {str(first), str(second)}
    assert "merged from" in (merged / "report.md").read_text()
    assert snapshot(first) | snapshot(second) == sources_before  # copied, never moved or touched

    # adding seeds by --resume is refused with the way to do it
    path = write_experiment(tmp_path, name="first", seeds=[0, 1])
    capsys.readouterr()
    assert main(["run", str(path), "--resume"]) == 2
    _one_line_error(capsys, "changed", "only in its seeds ([0] -> [0, 1])", "ablate merge")


def test_merge_refuses_what_is_not_one_study_and_writes_nothing(tmp_path, ray_session, capsys):
    zero, one = _run(tmp_path, "zero", seeds=[0]), _run(tmp_path, "one", seeds=[1])
    also_zero = _run(tmp_path, "also_zero", seeds=[0, 2])
    longer = _run(tmp_path, "longer", seeds=[3], train={"steps": 20, "batch_size": 16, "log_every": 10})
    target = tmp_path / "merged"
    capsys.readouterr()
    assert main(["merge", str(zero), str(also_zero), "--output", str(target)]) == 2
    _one_line_error(capsys, "seed 0 is in both")
    assert main(["merge", str(zero), str(longer), "--output", str(target)]) == 2
    _one_line_error(capsys, "different experiments", "train.steps", "40", "20")
    assert main(["merge", str(zero), "--output", str(target)]) == 2
    _one_line_error(capsys, "two or more")
    with locking.folder_lock(one):  # an `ablate run` still writing into a source
        assert main(["merge", str(zero), str(one), "--output", str(target)]) == 2
    _one_line_error(capsys, "is being written by an `ablate run` (pid")
    assert not target.exists()

    run_path = one / "run.json"
    run = json.loads(run_path.read_text())
    for session in run["sessions"]:
        session["git_commit"] = "0" * 40
    run_path.write_text(json.dumps(run))
    assert main(["merge", str(zero), str(one), "--output", str(target)]) == 2
    _one_line_error(capsys, "ran different code", "0" * 40, "--mixed-code")
    assert not target.exists()
    assert main(["merge", str(zero), str(one), "--output", str(target), "--mixed-code", "--no-report"]) == 0
    merged = json.loads((target / "run.json").read_text())
    assert merged["git_commit"].startswith("mixed") and merged["merged_from"][1]["git_commit"] == "0" * 40

    before = snapshot(target)
    capsys.readouterr()
    assert main(["merge", str(zero), str(one), "--output", str(target), "--mixed-code"]) == 2
    _one_line_error(capsys, "already exists")
    assert snapshot(target) == before
