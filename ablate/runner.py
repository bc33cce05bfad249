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
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
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
from ablate.families import flow
from ablate.trackers import eval_metrics, logger_callbacks
from ablate.trial import Trial
from ablate.variants import TOGGLES, Variant

# Without Tune's own result.json loggers (disabled above), its ResultGrid warns that it cannot read them.
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)

PACKAGES = (
    "ablate",
    "torch",
    "ray",
    "numpy",
    "pandas",
    "scipy",
    "statsmodels",
    "POT",
    "scikit-learn",
    "matplotlib",
    "pyyaml",
)
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
        if recorded != _jsonable(experiment.spec):
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
        (output / "experiment.json").write_text(json.dumps(_jsonable(experiment.spec), indent=2))
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


class LiveTables(threading.Thread):
    """Rewrites the tables (atomically) whenever a trial finishes, so `ablate report` works mid-run on
    what is done. Polls the trial records every `every_seconds`; stopped (and joined) before the final
    write. A failed refresh (e.g. a full disk) is left to the final write to report."""

    def __init__(self, refresh: Callable[[], object], output: Path, every_seconds: float = 2.0) -> None:
        super().__init__(daemon=True, name="ablate-live-tables")
        self.refresh, self.output, self.every_seconds = refresh, output, every_seconds
        self.stopping = threading.Event()

    def run(self) -> None:
        seen = None
        while not self.stopping.wait(self.every_seconds):
            records = results.record_names(self.output)
            if records and records != seen:
                try:
                    self.refresh()
                    seen = records
                except (OSError, ValueError):
                    pass

    def __enter__(self) -> LiveTables:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.join()


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
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {_iso(time.time())}")
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
    run_info = _run_info(experiment, output, started, resumed, provenance)
    results.write_tables(output, metrics, curves, trials, run_info)
    interrupted = finished + n_failed < len(experiment.trials)
    return RunOutcome(output, len(experiment.trials), finished, n_failed, interrupted)


def collect_tables(
    experiment: Experiment, output: Path, failed: set[str] = frozenset()
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The contract's tables over the experiment's expected trials, from the trial records in `output`."""
    return results.collect_tables(
        experiment.expected_trials(), list(experiment.factors), results.read_trial_records(output), failed
    )


def _run_info(experiment: Experiment, output: Path, started: float, resumed: bool, provenance: dict) -> dict:
    task = experiment.task  # built and described when the experiment was validated
    eval_steps = experiment.spec["eval"]["steps"] or [2**i for i in range(experiment.k_max.bit_length())]
    primary = experiment.spec["primary"]
    try:  # earlier sessions of this run; a damaged run.json is rewritten from this session on
        previous = json.loads((output / "run.json").read_text()) if (output / "run.json").is_file() else {}
    except ValueError:
        previous = {}
    now = time.time()
    earlier = [s for s in previous.get("sessions", []) if s.get("started") != _iso(started)]
    sessions = earlier + [
        {  # this session's entry, rewritten by every refresh of the live tables
            "started": _iso(started),
            "finished": _iso(now),
            "wall_seconds": now - started,
            "resumed": resumed,
            **provenance,
        }
    ]
    toggles_varied = [name for name in TOGGLES if name in experiment.factors]
    simplified_levels = {n: getattr(Variant.simplified(), n) for n in toggles_varied}
    extras_reference = "".join(f",{n}={experiment.reference[n]}" for n in experiment.factors if n not in TOGGLES)
    fixed = {n: getattr(experiment.trials[0].config.objective, n) for n in TOGGLES}
    return {
        "name": experiment.name,
        "task": {
            "name": experiment.spec["task"],
            "params": experiment.spec["task_params"],
            "sample_format": task["sample_format"],
        },
        "factors": [
            {"name": n, "levels": levels, "reference": experiment.reference[n]}
            for n, levels in experiment.factors.items()
        ],
        "seeds": experiment.spec["seeds"],
        "eval_steps": eval_steps,
        "k_max": experiment.k_max,
        "expected_trials": experiment.expected_trials(),
        "paper_variant": Variant(**{**fixed, **{n: TOGGLES[n][0] for n in toggles_varied}}).label + extras_reference,
        "simplified_variant": Variant(**{**fixed, **simplified_levels}).label + extras_reference,
        "baseline_variant": flow.LABEL + extras_reference if experiment.spec["baseline"] else None,
        "primary_metric": primary.get("metric", task["primary_metric"]),
        "primary_steps": primary.get("steps", results.default_primary_steps(eval_steps)),
        "metric_directions": task["metric_directions"],
        "labels": experiment.spec["labels"],  # display names for figures, by cell label or role
        "config": _jsonable(experiment.spec),  # resolved: the file with its overrides applied
        "overrides": list(experiment.overrides),
        **provenance,  # of the latest session; every session's own is in `sessions`
        "started": sessions[0]["started"],
        "finished": sessions[-1]["finished"],
        "wall_seconds": sum(s["wall_seconds"] for s in sessions),
        "sessions": sessions,
    }


def package_versions() -> dict:
    versions = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """The commit of the ablate checkout in use, with `-dirty` when it has uncommitted changes."""
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def _jsonable(value):
    return json.loads(json.dumps(value, default=results._json_default))


class ProgressView(tune.Callback):
    """One compact status line (done / running / failed, ETA) instead of Tune's tables."""

    def __init__(self, total: int, every_seconds: float = 15.0) -> None:
        self.total, self.every_seconds = total, every_seconds
        self.setup()

    def setup(self, **info) -> None:
        """Called by Tune at the start of every run, including a restored one."""
        self.start, self.done_before = time.monotonic(), None
        self.last_counts, self.last_time = None, 0.0

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if result.get("warning"):
            print(f"[ablate] warning: {trial.config['trial']['trial_id']}: {result['warning']}", flush=True)

    def on_step_end(self, iteration, trials, **info) -> None:
        done = sum(t.status == "TERMINATED" for t in trials)
        if self.done_before is None:  # trials finished by an earlier session do not count for the ETA
            self.done_before = done
        running = sum(t.status == "RUNNING" for t in trials)
        failed = sum(t.status == "ERROR" for t in trials)
        diverged = sum(
            t.status == "TERMINATED" and (t.last_result or {}).get("status") == results.DIVERGED for t in trials
        )
        elapsed = time.monotonic() - self.start
        new = max(done - self.done_before, 0)
        remaining = self.total - done - failed
        eta = f"ETA {_duration(elapsed / new * remaining)}" if new and remaining else "ETA ?" if remaining else "done"
        counts = (done, diverged, failed)
        if counts != self.last_counts or time.monotonic() - self.last_time > self.every_seconds:
            print(
                f"[ablate] {done}/{self.total} trials done ({diverged} diverged), {running} running, "
                f"{failed} failed | {_duration(elapsed)} elapsed, {eta}{_running_steps(trials)}",
                flush=True,
            )
            self.last_counts, self.last_time = counts, time.monotonic()


def _running_steps(trials, most: int = 4) -> str:
    """`` | seed0 step 300/1000, ...``: each running trial's training step out of its total."""
    parts = []
    for t in trials:
        if t.status == "RUNNING" and (t.last_result or {}).get("phase") == "train":
            parts.append(
                f"{t.config['trial']['trial_id']} step {t.last_result['step']}/"
                f"{t.config['trial']['config']['train']['steps']}"
            )
    more = f", +{len(parts) - most} more" if len(parts) > most else ""
    return f" | {', '.join(parts[:most])}{more}" if parts else ""


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
