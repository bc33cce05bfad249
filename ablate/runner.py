"""Run an experiment's trial matrix on Ray Tune, resumably, and write the tidy results tables.

The driver starts a local Ray (or joins `--address` / RAY_ADDRESS), schedules one Tune trial per
(cell, seed), and each trial writes its own result file into `<output>/trials/` the moment it is done.
Those files, not Ray's folder layout, are what `collect_tables` turns into metrics/curves/trials tables.
A trial that finds its result file already there returns at once, so no trial is ever run twice.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# Read by Ray at import time, hence set before `import ray`:
os.environ.setdefault("RAY_AUTH_MODE", "token")  # token auth for the local Ray we start (Ray's advice)
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's compact legacy output; we print our own view
# every checkpoint forces an experiment snapshot (that is what makes --resume exact); do not warn about it
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # our tables replace Tune's CSV/TensorBoard logs

import pandas as pd
import ray
import torch
from ray import tune

from ablate import results
from ablate.experiment import Experiment, ExperimentError
from ablate.progress import LiveTables, ProgressView
from ablate.provenance import git_commit, iso_time, jsonable, package_versions, run_info
from ablate.trackers import eval_metrics, logger_callbacks
from ablate.trial import Trial

# Without Tune's own result.json loggers (disabled above), its ResultGrid warns that it cannot read them.
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)

GPU_AUTO_SHARE = 0.25  # `gpu: auto` on a cluster with GPUs: four trials share one GPU
LOCK_NAME = ".ablate.lock"  # held by the one driver running into a results folder


@dataclass
class RunOutcome:
    output: Path
    expected: int
    finished: int  # trials with a result (ok or diverged)
    failed: int
    interrupted: bool
    fit_seconds: float = 0.0  # wall time of the Tune run itself (no Ray start-up, no tables)


def resolve_output(experiment: Experiment, output: str | Path | None) -> Path:
    return Path(output or experiment.spec["output"] or Path("results") / experiment.name).resolve()


def check_output(experiment: Experiment, output: Path, resume: bool, force: bool) -> None:
    """Refuse to clobber or to resume the wrong thing, before anything is written."""
    if resume and force:
        raise ExperimentError("--resume and --force contradict each other: pick one")
    if output.exists() and not output.is_dir():
        raise ExperimentError(f"{output} is a file, not a results folder: choose another --output")
    exists = output.exists() and any(p.name != LOCK_NAME for p in output.iterdir())
    if exists and not (resume or force):
        raise ExperimentError(
            f"{output} already exists: add --resume to finish what is missing, or --force to delete it and start over"
        )
    if resume:
        saved = output / "experiment.json"
        if not saved.is_file():
            raise ExperimentError(f"{output} holds no run of this experiment to resume (no experiment.json)")
        try:
            recorded = json.loads(saved.read_text())
        except ValueError:
            raise ExperimentError(
                f"{saved} is damaged: cannot tell which experiment {output} holds; use --force or another output folder"
            ) from None
        if recorded != jsonable(experiment.spec):
            raise ExperimentError(
                f"the experiment changed since {output} was started: resume with the same "
                "file, or use --force / another output folder"
            )


def run_experiment(
    experiment: Experiment,
    output: str | Path | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    address: str | None = None,
    verbose: bool = True,
) -> RunOutcome:
    output = resolve_output(experiment, output)
    with folder_lock(output, lambda: check_output(experiment, output, resume, force)):
        return _run_locked(experiment, output, resume, force, address, verbose)


def _run_locked(
    experiment: Experiment, output: Path, resume: bool, force: bool, address: str | None, verbose: bool
) -> RunOutcome:
    with ray_session(address) as cluster:
        gpu = _gpu_share(experiment.resources["gpu"], cluster)
        if force:
            for child in output.iterdir():  # everything but the lock this driver holds
                if child.name != LOCK_NAME:
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        (output / "experiment.json").write_text(json.dumps(jsonable(experiment.spec), indent=2))
        started = time.time()
        provenance = {"versions": package_versions(), "git_commit": git_commit()}  # of the code that runs now
        tuner = _tuner(experiment, output, gpu, resume, verbose)
        live = LiveTables(lambda: write_results(experiment, output, started, resume, provenance, set()), output)
        with sigterm_as_sigint(), live:
            grid = tuner.fit()
        fit_seconds = time.time() - started
        failed = {r.config["trial"]["trial_id"] for r in grid if r.error is not None}
        outcome = write_results(experiment, output, started, resume, provenance, failed)
    outcome.fit_seconds = fit_seconds
    return outcome


@contextmanager
def folder_lock(output: Path, check: Callable[[], None] = lambda: None):
    """One driver per results folder: an exclusive `flock` on `<output>/.ablate.lock`, holding the
    driver's pid and host while it runs. A second driver refuses in one line naming the holder. The
    kernel drops the lock when its holder dies (even by SIGKILL), so a lock file left with content but
    not held is stale: noted, and taken over. `check` runs once the lock is held and before anything
    is written (a refusal there leaves the folder as it was); folders this call created are removed
    again if nothing but the lock was written into them."""
    if output.exists() and not output.is_dir():
        raise ExperimentError(f"{output} is a file, not a results folder: choose another --output")
    created = [p for p in (output, *output.parents) if not p.exists()]  # innermost first
    output.mkdir(parents=True, exist_ok=True)
    handle = open(output / LOCK_NAME, "a+")
    claimed = False
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ExperimentError(
                f"{output} is in use by another `ablate run` ({holder}): wait for it to finish, or use another --output"
            ) from None
        check()
        handle.seek(0)
        stale = handle.read().strip()
        if stale:
            print(
                f"[ablate] note: an earlier run ({stale}) ended without releasing {output / LOCK_NAME}; taking it over",
                flush=True,
            )
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {iso_time(time.time())}")
        handle.flush()
        claimed = True
        yield
    finally:
        if claimed:
            handle.seek(0)
            handle.truncate()
            handle.flush()
        handle.close()  # closing drops the flock
        if created and [p.name for p in output.iterdir()] == [LOCK_NAME]:
            (output / LOCK_NAME).unlink()
            for folder in created:
                if folder.exists() and not any(folder.iterdir()):
                    folder.rmdir()


@contextmanager
def ray_session(address: str | None):
    """Join the given cluster, or start an embedded local Ray; only what we started is shut down."""
    started_here = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(address="local", include_dashboard=False, log_to_driver=False)  # never someone else's
        started_here = True
    try:
        yield ray.cluster_resources()
    finally:
        if started_here:
            ray.shutdown()


def _gpu_share(requested, cluster: dict) -> float:
    gpus = cluster.get("GPU", 0)
    if requested == "auto":
        return GPU_AUTO_SHARE if gpus > 0 else 0.0
    if requested > 0 and gpus == 0:
        raise ExperimentError(
            f"resources.gpu: {requested} requested, but the Ray cluster has no GPU (use gpu: 0 or gpu: auto)"
        )
    return float(requested)


@contextmanager
def sigterm_as_sigint():
    """Tune saves its state on SIGINT; make SIGTERM (a scheduler's stop) do the same."""
    previous = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _tuner(experiment: Experiment, output: Path, gpu: float, resume: bool, verbose: bool) -> tune.Tuner:
    cpu = experiment.resources["cpu"]
    trainable = tune.with_resources(train_one, {"cpu": cpu, "gpu": gpu})
    tune_path = output / "ray" / "tune"
    if resume and tune.Tuner.can_restore(str(tune_path)):
        return tune.Tuner.restore(str(tune_path), trainable, resume_unfinished=True, restart_errored=True)
    device = "cuda" if gpu > 0 else "cpu"
    trials = [
        {
            "trial_id": t.trial_id,
            "variant": t.variant,
            "levels": t.levels,
            "seed": t.seed,
            "output": str(output),
            "checkpoint_seconds": experiment.spec["checkpoint_seconds"],
            "config": dataclasses.replace(t.config, threads=max(1, int(cpu)), device=device).to_dict(),
        }
        for t in experiment.trials
    ]
    callbacks = [ProgressView(len(trials))] if verbose else []
    callbacks += logger_callbacks(experiment.spec["loggers"], output, experiment.name)
    return tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(trials)},
        tune_config=tune.TuneConfig(
            reuse_actors=True,
            max_concurrent_trials=experiment.max_concurrent,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=str(output / "ray"),
            verbose=0,
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=experiment.spec["max_failures"]),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )


# --- inside a Ray worker ----------------------------------------------------------------------------------


def train_one(params: dict) -> None:
    """Tune trainable: one trial, checkpointed every few seconds, its result written to the output folder."""
    spec = params["trial"]
    output, trial_id = Path(spec["output"]), spec["trial_id"]
    if results.record_path(output, trial_id).exists():
        tune.report({"phase": "done", "step": 0, "status": "done before"})
        return
    trial, restored_at, warning = _restore(spec["config"], tune.get_checkpoint())
    timeout = trial.config.train.timeout_seconds
    watchdog = threading.Timer(timeout, _give_up, (output, trial_id, trial, timeout)) if timeout else None
    if watchdog is not None:
        watchdog.daemon = True
        watchdog.start()
    try:
        last_saved = time.monotonic()
        while not trial.done_training:
            trial.train(until=trial.step + trial.config.train.log_every)
            if trial.done_training or time.monotonic() - last_saved > spec["checkpoint_seconds"]:
                _report_with_checkpoint(trial, warning)
                warning, last_saved = None, time.monotonic()
        result = trial.finish()
    finally:
        if watchdog is not None:
            watchdog.cancel()
    save_trial_result(output, trial_id, result, restored_at)
    tune.report(
        {
            "phase": "done",
            "step": trial.step,
            "status": result.status,
            "warning": warning,
            **eval_metrics(result.metrics),
        }
    )


def _trial_name(trial) -> str:
    """Tune's trial (and tracker run) name: ours, the cell label and seed."""
    return trial.config["trial"]["trial_id"]


def _restore(config: Mapping, checkpoint) -> tuple[Trial, int | None, str | None]:
    """A fresh trial, or one continued from Tune's checkpoint; a checkpoint that cannot be read
    (truncated, corrupt) restarts the trial from step 0 with a warning instead of failing it."""
    trial = Trial(config)
    if not checkpoint:
        return trial, None, None
    try:
        with checkpoint.as_directory() as folder:
            trial.load_state_dict(torch.load(Path(folder) / "state.pt", weights_only=True))
    except Exception as error:  # torch.load raises many types for a damaged file
        reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        return Trial(config), None, f"checkpoint unreadable ({reason}); restarted from step 0"
    return trial, trial.step, None


def _give_up(output: Path, trial_id: str, trial: Trial, timeout: float) -> None:
    """The watchdog: past `train.timeout_seconds` the trial is recorded as failed (reason timeout)
    and its worker process ends, even if it is stuck inside a call; Tune's retry then finds the
    record and returns at once, and the grid goes on."""
    record = {
        "node": ray.get_runtime_context().get_node_id(),
        "restored_at_step": None,
        "status": results.FAILED,
        "reason": "timeout",
        "diverged_step": None,
        "train_seconds": trial.train_seconds,
        "eval_seconds": 0.0,
        **trial.training_stats,
        "metrics": {},
        "curves": list(trial.curves),
        "config": trial.config.to_dict(),
        "timeout_seconds": timeout,
    }
    results.write_trial_result(output, trial_id, record)
    os._exit(1)


def _report_with_checkpoint(trial: Trial, warning: str | None = None) -> None:
    loss = trial.curves[-1]["loss"] if trial.curves else float("nan")
    with tempfile.TemporaryDirectory() as folder:
        torch.save(trial.state_dict(), Path(folder) / "state.pt")
        tune.report(
            {"phase": "train", "step": trial.step, "loss": loss, "status": trial.status, "warning": warning},
            checkpoint=tune.Checkpoint.from_directory(folder),
        )


def save_trial_result(output: Path, trial_id: str, result, restored_at: int | None = None) -> None:
    """The finished trial's record and samples, written through the results contract (atomically)."""
    record = {
        "node": ray.get_runtime_context().get_node_id(),
        "restored_at_step": restored_at,
        "status": result.status,
        "diverged_step": result.diverged_step,
        "train_seconds": result.train_seconds,
        "eval_seconds": result.eval_seconds,
        **result.training_stats,
        "metrics": result.metrics,
        "curves": result.curves,
        "config": result.config.to_dict(),
    }
    results.write_trial_result(output, trial_id, record, result.samples, result.real_samples)


# --- back in the driver -----------------------------------------------------------------------------------


def write_results(
    experiment: Experiment, output: Path, started: float, resumed: bool, provenance: dict, failed: set[str]
) -> RunOutcome:
    """Turn the per-trial result files into the tidy tables and run.json (the report's contract)."""
    metrics, curves, trials = collect_tables(experiment, output, failed)
    finished = int(trials["status"].isin([results.OK, results.DIVERGED]).sum())
    n_failed = int((trials["status"] == results.FAILED).sum())
    info = run_info(experiment, output, started, resumed, provenance)
    results.write_tables(output, metrics, curves, trials, info)
    interrupted = finished + n_failed < len(experiment.trials)
    return RunOutcome(output, len(experiment.trials), finished, n_failed, interrupted)


def collect_tables(
    experiment: Experiment, output: Path, failed: set[str] = frozenset()
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The contract's tables over the experiment's expected trials, from the trial records in `output`."""
    return results.collect_tables(
        experiment.expected_trials(), list(experiment.factors), results.read_trial_records(output), failed
    )
