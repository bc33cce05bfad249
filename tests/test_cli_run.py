"""`ablate run` end to end: the real CLI, a real Ray Tune run, small grids of the tiny task."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TINY_TASK

from ablate import cli
from ablate.cli import main
from ablate.trial import run_trial

pytestmark = pytest.mark.slow


def write_experiment(folder: Path, name="grid", **overrides) -> Path:
    spec = {
        "name": name,
        "task": TINY_TASK,
        "objective": {"k_max": 8},
        "factors": {"tau2_weight": [True, False]},
        "seeds": [0, 1],
        "train": {"steps": 40, "batch_size": 16, "log_every": 10},
        "eval": {"steps": [1, 2, 8]},
        "output": str(folder / "results" / name),
    }
    spec.update(overrides)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def snapshot(folder: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and "ray" not in p.parts}


def test_four_trial_grid_end_to_end(tmp_path, ray_session, capsys):
    path = write_experiment(tmp_path)
    assert main(["run", str(path), "--no-report"]) == 0
    out = tmp_path / "results" / "grid"
    trials = pd.read_csv(out / "trials.csv")
    assert sorted(trials["trial_id"]) == sorted(
        f"{v}__seed{s}" for v in ("grid_vboot_vstep_w2", "grid_vboot_vstep_now2") for s in (0, 1)
    )
    assert (trials["status"] == "ok").all()
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert list(metrics.columns) == ["trial_id", "variant", "tau2_weight", "seed", "status", "steps", "metric", "value"]
    assert len(metrics) == 4 * 3 * 2 and metrics["value"].notna().all()
    assert set(pd.read_csv(out / "curves.csv")["metric"]) == {"loss", "flow_loss", "bootstrap_loss", "grad_norm"}
    run = json.loads((out / "run.json").read_text())
    assert run["versions"]["torch"] and run["versions"]["ray"] and "git_commit" in run
    assert run["config"]["train"]["steps"] == 40 and len(run["expected_trials"]) == 4
    assert run["paper_variant"] == "grid_vboot_vstep_w2" and run["simplified_variant"] is None  # one toggle
    assert (run["metric_scales"], run["share_metrics"], run["learnability_gate"]) == ({}, {}, [])  # none declared
    assert sorted(p.name for p in (out / "samples").iterdir()) == sorted(f"{t}.npz" for t in trials["trial_id"])
    # the Ray run is the same computation as the trial run alone
    alone = run_trial({**json.loads((out / "trials" / "grid_vboot_vstep_w2__seed1.json").read_text())["config"]})
    row = metrics[
        (metrics.trial_id == "grid_vboot_vstep_w2__seed1") & (metrics.steps == 8) & (metrics.metric == "mean_error")
    ]
    assert row["value"].item() == pytest.approx(alone.metrics[8]["mean_error"], rel=1e-6)
    printed = capsys.readouterr().out
    assert "[ablate] 4/4 trials done" in printed and "+----" not in printed  # our line, not Tune's tables
    # the report through the CLI: the tables, and one-line errors for a bad metric or step count
    assert main(["report", str(out)]) == 0
    for table in ("cells", "effects", "strata", "power", "comparisons"):
        assert len(pd.read_csv(out / f"{table}.csv"))
    for bad in (["--metric", "nope"], ["--steps", "3"]):
        capsys.readouterr()
        assert main(["report", str(out), *bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ablate: error: ") and err.count("\n") == 1 and bad[1] in err


def test_command_line_overrides_are_validated_recorded_and_bind_resume(tmp_path, ray_session, capsys):
    path = write_experiment(tmp_path)
    out = tmp_path / "results" / "grid"
    assert main(["run", str(path), "train.stpes=5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.stpes: unknown key (did you mean 'steps'?)" in err
    assert not out.exists()
    assert main(["run", str(path), "seeds=[3]", "factors.tau2_weight=[true]", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "overrides: seeds=[3] factors.tau2_weight=[true]" in printed and "1 cells x 1 seeds = 1 trials" in printed
    assert main(["run", str(path), "train.steps=20", "seeds=[3]", "--no-report"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["overrides"] == ["train.steps=20", "seeds=[3]"]
    assert run["config"]["train"]["steps"] == 20 and run["seeds"] == [3]
    assert len(pd.read_csv(out / "trials.csv")) == 2
    capsys.readouterr()
    assert main(["run", str(path), "train.steps=30", "seeds=[3]", "--resume"]) == 2
    assert "the experiment changed" in capsys.readouterr().err
    assert main(["run", str(path), "train.steps=20", "seeds=[3]", "--resume", "--no-report"]) == 0


def test_existing_results_are_never_overwritten(tmp_path, ray_session, capsys):
    path = write_experiment(tmp_path, seeds=[0])
    assert main(["run", str(path), "--no-report"]) == 0
    out = tmp_path / "results" / "grid"
    before = snapshot(out)
    capsys.readouterr()
    assert main(["run", str(path), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--resume" in err and "--force" in err
    assert snapshot(out) == before

    # --resume of a finished run re-runs nothing; --force starts over
    assert main(["run", str(path), "--no-report", "--resume"]) == 0
    after_resume = snapshot(out)
    assert all(after_resume[p] == before[p] for p in before if "trials" in p.parts or "samples" in p.parts)
    (out / "marker.txt").write_text("old run")
    assert main(["run", str(path), "--no-report", "--force"]) == 0
    assert not (out / "marker.txt").exists() and len(pd.read_csv(out / "trials.csv")) == 2


def test_resume_refuses_a_changed_experiment(tmp_path, ray_session, capsys):
    path = write_experiment(tmp_path, seeds=[0])
    assert main(["run", str(path), "--no-report"]) == 0
    write_experiment(tmp_path, seeds=[0, 1])
    assert main(["run", str(path), "--resume"]) == 2
    assert "changed" in capsys.readouterr().err


def test_diverged_trials_are_recorded_and_the_grid_goes_on(tmp_path, ray_session):
    path = write_experiment(
        tmp_path,
        factors={"lr": [1e-3, 1e9]},
        seeds=[0],
        train={
            "steps": 60,
            "batch_size": 16,
            "log_every": 10,
            "grad_clip": None,
            "teacher": "self",
            "eval_ema": None,
            "lr_final": 1e-4,
        },
    )
    assert main(["run", str(path), "--no-report"]) == 0
    out = tmp_path / "results" / "grid"
    trials = pd.read_csv(out / "trials.csv").set_index("lr")
    assert trials.loc[1e9, "status"] == "diverged" and trials.loc[1e9, "diverged_step"] >= 1
    assert trials.loc[1e-3, "status"] == "ok"
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics[metrics.status == "diverged"]["value"].isna().all()
    assert metrics[metrics.status == "ok"]["value"].notna().all()


def test_a_crashed_trial_is_retried_from_its_checkpoint(tmp_path, ray_session):
    marker = tmp_path / "crashed"
    path = write_experiment(
        tmp_path,
        factors={"tau2_weight": [True]},
        seeds=[0],
        checkpoint_seconds=1e-6,
        task_params={"crash_once_after": 25, "crash_marker": str(marker)},
    )
    assert main(["run", str(path), "--no-report"]) == 0
    assert marker.exists()  # it did crash once
    out = tmp_path / "results" / "grid"
    record = json.loads((out / "trials" / "grid_vboot_vstep_w2__seed0.json").read_text())
    assert record["status"] == "ok"
    assert record["restored_at_step"] == 20  # the last checkpoint before the crash at step 25, not step 0
    alone = run_trial({**record["config"], "task_params": {}})
    assert record["metrics"]["8"] == pytest.approx(alone.metrics[8], rel=1e-6)
    assert record["curves"] == alone.curves


def test_a_trial_that_keeps_crashing_is_recorded_as_failed_and_the_grid_goes_on(tmp_path, ray_session, capsys):
    path = write_experiment(tmp_path, factors={"task_params.crash_once_after": [10**9, 5]}, seeds=[0], max_failures=1)
    assert main(["run", str(path), "--no-report"]) == 1
    trials = pd.read_csv(tmp_path / "results" / "grid" / "trials.csv")
    assert sorted(trials["status"]) == ["failed", "ok"]
    printed = capsys.readouterr().out
    assert "1/2 trials finished, 1 failed" in printed
    assert "failed at step 4: RuntimeError: simulated broken trial" in printed and "(attempt 2 of 2)" in printed
    assert trials.set_index("status").loc["failed", "attempts"] == 2


def test_dry_run_prints_the_matrix_and_writes_nothing(tmp_path, capsys):
    path = write_experiment(tmp_path, baseline=True)
    assert main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "3 cells x 2 seeds = 6 trials" in out and "flow__seed1" in out and "cpu 1" in out
    assert not (tmp_path / "results").exists()


def test_overrides_and_options_mix_in_any_order(tmp_path, capsys, monkeypatch):
    path, output = write_experiment(tmp_path), str(tmp_path / "elsewhere")
    parsed, run = [], cli._run
    monkeypatch.setattr(cli, "_run", lambda args: parsed.append(vars(args)) or run(args))
    assert main(["run", str(path), "pack=2", "train.steps=5", "--dry-run", "--output", output]) == 0
    overrides_first = capsys.readouterr().out
    assert main(["run", str(path), "--dry-run", "pack=2", "--output", output, "train.steps=5"]) == 0
    assert parsed[1] == parsed[0] and parsed[0]["overrides"] == ["pack=2", "train.steps=5"]
    assert parsed[0]["output"] == output and parsed[0]["dry_run"]
    assert capsys.readouterr().out == overrides_first and "overrides: pack=2 train.steps=5" in overrides_first
    with pytest.raises(SystemExit):
        main(["run", str(path), "--dry-run", "pack=2", "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    assert not (tmp_path / "results").exists() and not Path(output).exists()


def test_a_model_that_cannot_take_a_level_is_one_line_before_anything_runs(tmp_path, capsys):
    path = write_experiment(tmp_path, task=f"{TINY_TASK}:make_step_table_task", task_params={"steps": 5})
    for dry_run in (["--dry-run"], []):
        assert main(["run", str(path), *dry_run]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert "rejects d = 1/8 (objective.k_max = 8): IndexError: index out of range in self" in err
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "overrides, named",
    [
        ({"trian": {"steps": 10}}, "trian"),  # top-level typo, did-you-mean
        ({"train": {"step": 10}}, "train.step"),
        ({"train": {"steps": "many"}}, "train.steps"),
        ({"objective": {"k_max": 48}}, "k_max"),
        ({"eval": {"steps": [1, 16]}}, "eval.steps"),
        ({"factors": {"tau2_weight": []}}, "factors.tau2_weight"),
        ({"factors": {"tau_sampling": ["grid", "uniform"]}}, "factors.tau_sampling"),
        ({"factors": {"bootstrap_spaces": ["x"]}}, "bootstrap_spaces"),
        ({"seeds": []}, "seeds"),
        ({"task_params": {"separaton": 1.0}}, "separaton"),
        ({"resources": {"cpu": 0}}, "resources.cpu"),
        ({"train": {"teacher": "momentum"}}, "train.teacher"),
    ],
)
def test_bad_experiment_files_name_the_key_and_write_nothing(tmp_path, capsys, overrides, named):
    path = write_experiment(tmp_path, **overrides)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert named in err and len(err.splitlines()) == 1
    assert not (tmp_path / "results").exists()


def test_a_typo_gets_a_suggestion(tmp_path, capsys):
    main(["run", str(write_experiment(tmp_path, trian={"steps": 10}))])
    assert "did you mean 'train'" in capsys.readouterr().err


def test_a_gpu_request_on_a_cluster_without_gpus_is_refused(tmp_path, ray_session, capsys):
    path = write_experiment(tmp_path, resources={"cpu": 1, "gpu": 0.25})
    assert main(["run", str(path)]) == 2
    assert "resources.gpu" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def run_cli(args, env_extra=None, **kwargs):
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AIR_NEW_OUTPUT": "0",
        "OMP_NUM_THREADS": "1",
        **(env_extra or {}),
    }
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "ablate.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_stopped_driver_then_resume_runs_every_trial_exactly_once(tmp_path, stop):
    """Ctrl-C and a scheduler's SIGTERM stop cleanly (exit 130, Tune's state saved); SIGKILL leaves
    Tune's state behind the trials' result files, and --resume must still not re-run a finished
    trial (each one's result file is written once) nor lose one."""
    path = write_experiment(
        tmp_path, seeds=[0, 1, 2], checkpoint_seconds=0.5, train={"steps": 1500, "batch_size": 16, "log_every": 50}
    )
    out = tmp_path / "results" / "grid"
    driver = run_cli(["run", str(path), "--no-report"], start_new_session=True)
    deadline = time.time() + 240
    while not list((out / "trials").glob("*.json")) and time.time() < deadline:
        time.sleep(0.5)
    assert driver.poll() is None, driver.communicate()[0]
    time.sleep(2.0)  # let the running trials write a checkpoint or two
    driver.send_signal(stop)
    first_output = driver.communicate(timeout=120)[0]
    if stop == signal.SIGKILL:
        assert driver.returncode == -signal.SIGKILL
        try:  # the processes Ray started for the killed driver: stop them by their group
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(2.0)
    else:
        assert driver.returncode == 130, first_output
        assert "--resume" in first_output
    done_first = {p.stem for p in (out / "trials").glob("*.json")}
    assert 1 <= len(done_first) < 6, first_output
    assert re.search(r"\| grid_\w+__seed\d step \d+/1500", first_output), first_output  # progress per trial
    mtimes = {t: (out / "trials" / f"{t}.json").stat().st_mtime_ns for t in done_first}
    damaged = []
    if stop == signal.SIGINT:  # and every checkpoint cut short before the resume: restart, say so, lose nothing
        for state in (out / "ray").rglob("state.pt"):
            state.write_bytes(state.read_bytes()[:100])
            damaged.append(state)

    resumed = run_cli(["run", str(path), "--no-report", "--resume"])
    second_output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, second_output
    if stop == signal.SIGINT:
        assert damaged and "checkpoint unreadable" in second_output and "restarted from step 0" in second_output
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 6 and trials["trial_id"].is_unique and (trials["status"] == "ok").all()
    assert all((out / "trials" / f"{t}.json").stat().st_mtime_ns == m for t, m in mtimes.items())
    # an interrupted-and-resumed trial gives the same numbers as an uninterrupted one
    resumed_ids = set(trials["trial_id"]) - done_first
    record = json.loads((out / "trials" / f"{sorted(resumed_ids)[0]}.json").read_text())
    alone = run_trial(record["config"])
    assert record["metrics"]["8"] == pytest.approx(alone.metrics[8], rel=1e-6)
    assert len(pd.read_csv(out / "metrics.csv").drop_duplicates(["trial_id", "steps", "metric"])) == 6 * 3 * 2


def test_two_node_cluster_runs_trials_on_both_nodes(tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        path = write_experiment(tmp_path, seeds=[0, 1, 2], train={"steps": 300, "batch_size": 16, "log_every": 50})
        driver = run_cli(["run", str(path), "--no-report", "--address", cluster.address])
        output = driver.communicate(timeout=300)[0]
        assert driver.returncode == 0, output
        trials = pd.read_csv(tmp_path / "results" / "grid" / "trials.csv")
        assert (trials["status"] == "ok").all() and trials["node"].nunique() == 2
    finally:
        cluster.shutdown()


def test_a_new_objective_family_is_one_module_and_one_registry_line(tmp_path, ray_session, monkeypatch):
    from ablate import families

    monkeypatch.setitem(families.FAMILIES, "toy", f"{Path(__file__).with_name('toy_family.py')}:FAMILY")
    path = write_experiment(tmp_path, objective={"k_max": 8, "family": "toy"}, seeds=[0], factors={"lr": [1e-3, 3e-4]})
    assert main(["run", str(path), "--no-report"]) == 0
    trials = pd.read_csv(tmp_path / "results" / "grid" / "trials.csv")
    assert sorted(trials["variant"]) == ["flow_told_step,lr=0.0003", "flow_told_step,lr=0.001"]
    assert (trials["status"] == "ok").all()
    assert main(["run", str(write_experiment(tmp_path, name="bad", objective={"family": "nope"})), "--dry-run"]) == 2


def test_a_pack_whose_model_cannot_be_shared_trains_one_by_one_and_says_why(tmp_path, ray_session, capsys):
    """A model that updates a buffer in its forward would share one buffer between a pack's members'
    student and teacher calls: the pack's trials train one after another in its Tune trial, with a
    one-line warning, and every trial finishes."""
    path = write_experiment(
        tmp_path, pack=2, seeds=[0], task_params={"model_quirk": "counter"}, train={"steps": 10, "batch_size": 8}
    )
    assert main(["run", str(path), "--no-report"]) == 0
    assert "warning: pack000: not packed: the model updates buffers in its forward (extra)" in capsys.readouterr().out
    trials = pd.read_csv(tmp_path / "results" / "grid" / "trials.csv")
    assert (trials["status"] == "ok").all() and len(trials) == 2 and (trials["pack_id"] == "pack000").all()


def test_a_packed_grid_gives_the_numbers_of_the_unpacked_one(tmp_path, ray_session, capsys):
    """`pack: 3`: the 6 trials (two cells and the baseline, two seeds each) train in packs of at most 3,
    one Tune trial each; every trial's numbers equal the same grid run unpacked (up to float32
    rounding), and trials.csv says which pack each trial trained in."""
    packed = write_experiment(tmp_path, name="packed", pack=3, baseline=True)
    assert main(["run", str(packed), "--dry-run"]) == 0
    assert "packs: 2 of at most 3 trials" in capsys.readouterr().out
    assert main(["run", str(packed), "--no-report"]) == 0
    alone = write_experiment(tmp_path, name="alone", pack=1, baseline=True)
    assert main(["run", str(alone), "--no-report"]) == 0
    trials = pd.read_csv(tmp_path / "results" / "packed" / "trials.csv")
    assert (trials["status"] == "ok").all() and len(trials) == 6
    assert sorted(trials["pack_id"].unique()) == ["pack000", "pack001"]
    assert pd.read_csv(tmp_path / "results" / "alone" / "trials.csv")["pack_id"].isna().all()
    key = ["trial_id", "steps", "metric"]
    mine = pd.read_csv(tmp_path / "results" / "packed" / "metrics.csv").sort_values(key).reset_index(drop=True)
    theirs = pd.read_csv(tmp_path / "results" / "alone" / "metrics.csv").sort_values(key).reset_index(drop=True)
    assert mine[key].equals(theirs[key])
    pd.testing.assert_series_equal(mine["value"], theirs["value"], rtol=1e-4)
