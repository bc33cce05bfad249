"""Run an experiment's trial matrix on Ray Tune, resumably, and write the tidy results tables.

The driver starts a local Ray (or joins `--address` / RAY_ADDRESS), schedules one Tune trial per
(cell, seed), and each trial writes its own result file into `<output>/trials/` the moment it is done.
Those files, not Ray's folder layout, are what `collect_tables` turns into metrics/curves/trials tables.
A trial that finds its result file already there returns at once, so no trial is ever run twice.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

# Read by Ray at import time, hence set before `import ray`:
os.environ.setdefault("RAY_AUTH_MODE", "token")  # token auth for the local Ray we start (Ray's advice)
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's compact legacy output; we print our own view
# every checkpoint forces an experiment snapshot (that is what makes --resume exact); do not warn about it
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # our tables replace Tune's CSV/TensorBoard logs

import pandas as pd
import ray
from ray import tune

from ablate import failures, records, results
from ablate.experiment import Experiment, ExperimentError, with_later_defaults
from ablate.locking import LOCK_NAME, folder_lock
from ablate.progress import LiveTables, ProgressView, ray_log_to
from ablate.provenance import git_commit, jsonable, package_versions, run_info
from ablate.trackers import logger_callbacks
from ablate.worker import pack_ids, train_one

# Without Tune's own result.json loggers (disabled above), its ResultGrid warns that it cannot read them.
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)

GPU_AUTO_SHARE = 0.25  # `gpu: auto` on a cluster with GPUs: four trials share one GPU


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
            recorded = with_later_defaults(json.loads(saved.read_text()))
        except ValueError:
            raise ExperimentError(
                f"{saved} is damaged: cannot tell which experiment {output} holds; use --force or another output folder"
            ) from None
        spec = jsonable(experiment.spec)
        if recorded != spec and {**recorded, "seeds": spec["seeds"]} == spec:
            raise ExperimentError(
                f"the experiment changed since {output} was started only in its seeds ({recorded['seeds']} -> "
                f"{spec['seeds']}): run the new seeds into another folder (`--output NEW`), then `ablate merge` them"
            )
        if recorded != spec:
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
        driver = Driver(output, gpu, resume, verbose)
        if experiment.rounds is not None:
            from ablate.round_runner import run_rounds  # it imports this module

            return run_rounds(experiment, driver)
        return driver.fit(experiment, experiment, resume=resume)[0]


@dataclass
class Driver:
    """What every Tune run of one `ablate run` shares: the folder, the GPU share, and this session's start
    and code (run.json's session entry)."""

    output: Path
    gpu: float
    resumed: bool
    verbose: bool
    started: float = field(default_factory=time.time)
    provenance: dict = field(default_factory=lambda: {"versions": package_versions(), "git_commit": git_commit()})

    def fit(
        self,
        trained: Experiment,
        tables: Experiment,
        name: str = "tune",
        resume: bool = True,
        failed_before: Mapping[str, dict] = MappingProxyType({}),
    ) -> tuple[RunOutcome, dict[str, dict]]:
        """One Tune run (``ray/<name>``, restored when resuming and Tune saved it) of ``trained``'s trials,
        the tables over ``tables``' trials kept current; the outcome, and every trial Tune gave up on."""
        begun = time.time()
        live = LiveTables(lambda: self.write(tables, failed_before), self.output)
        with ray_log_to(self.output / failures.LOGS_DIR / failures.RAY_LOG):
            tuner = _tuner(trained, self.output, self.gpu, resume, self.verbose, name)
            with sigterm_as_sigint(), live:
                grid = tuner.fit()
        fit_seconds = time.time() - begun
        failed = {  # Tune gave up on these: no record, so their attempts say what happened
            **failed_before,
            **{
                member["trial_id"]: failures.given_up(self.output, r.config["trial"]["trial_id"], r.error)
                for r in grid
                if r.error is not None
                for member in r.config["trial"].get("members", [r.config["trial"]])
            },
        }
        outcome = self.write(tables, failed)
        outcome.fit_seconds = fit_seconds
        return outcome, failed

    def write(self, tables: Experiment, failed: Mapping[str, dict]) -> RunOutcome:
        return write_results(tables, self.output, self.started, self.resumed, self.provenance, failed)


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


def _tuner(experiment: Experiment, output: Path, gpu: float, resume: bool, verbose: bool, name: str) -> tune.Tuner:
    cpu = experiment.resources["cpu"]
    trainable = tune.with_resources(train_one, {"cpu": cpu, "gpu": gpu})
    tune_path = output / "ray" / name
    if resume and tune.Tuner.can_restore(str(tune_path)):
        restore_missing_checkpoints(tune_path)
        return tune.Tuner.restore(str(tune_path), trainable, resume_unfinished=True, restart_errored=True)
    device = "cuda" if gpu > 0 else "cpu"

    def entry(t) -> dict:
        return {
            "trial_id": t.trial_id,
            "variant": t.variant,
            "levels": t.levels,
            "seed": t.seed,
            "output": str(output),
            "checkpoint_seconds": experiment.spec["checkpoint_seconds"],
            "config": dataclasses.replace(t.config, threads=max(1, int(cpu)), device=device).to_dict(),
        }

    packs = experiment.packs()
    trials = [
        entry(pack[0])
        if len(pack) == 1
        else {**entry(pack[0]), "trial_id": pack_id, "members": [entry(t) for t in pack]}
        for pack_id, pack in zip(pack_ids(packs), packs, strict=True)
    ]
    callbacks = [ProgressView(len(trials), output, experiment.spec["max_failures"])] if verbose else []
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
            name=name,
            storage_path=str(output / "ray"),
            verbose=0,
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=experiment.spec["max_failures"]),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )


def restore_missing_checkpoints(tune_path: Path) -> None:
    """Give every trial the checkpoint Tune's saved state names, so that a killed driver's run resumes.

    Tune keeps one checkpoint per trial (``num_to_keep=1``) and deletes the older one as soon as a newer one
    registers, while the driver writes its state file only every few seconds. A driver killed in between
    (SIGKILL, a lost head node) leaves a state that names a deleted checkpoint, and every restore attempt
    of that trial then fails ("does not exist on storage anymore"). The trial's newest checkpoint is a later
    state of the same trial, so it is copied under the missing name: the trial resumes from its latest step.
    """
    states = sorted(tune_path.glob("experiment_state-*.json"))  # timestamped names: the last is the newest
    if not states:
        return
    try:
        trial_data = json.loads(states[-1].read_text()).get("trial_data", [])
        results_named = [(json.loads(metadata).get("last_result") or {}) for _, metadata in trial_data]
    except (ValueError, TypeError, AttributeError):  # a state Tune cannot read either: Tune says so
        return
    for result in results_named:
        name, trial = result.get("checkpoint_dir_name"), (result.get("config") or {}).get("trial") or {}
        if not name or not trial.get("trial_id"):
            continue
        folder = tune_path / trial["trial_id"]
        checkpoints = sorted(folder.glob("checkpoint_*"))
        if not (folder / name).exists() and checkpoints:
            shutil.copytree(checkpoints[-1], folder / name)


def _trial_name(trial) -> str:
    """Tune's trial (and tracker run) name: ours, the cell label and seed."""
    return trial.config["trial"]["trial_id"]


# --- back in the driver -----------------------------------------------------------------------------------


def write_results(
    experiment: Experiment, output: Path, started: float, resumed: bool, provenance: dict, failed: Mapping[str, dict]
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
    experiment: Experiment, output: Path, failed: Mapping[str, dict] = MappingProxyType({})
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The contract's tables over the experiment's expected trials, from the trial records in `output`."""
    return records.collect_tables(
        experiment.expected_trials(), list(experiment.factors), records.read_trial_records(output), failed
    )
