"""Inside a Ray worker: the Tune trainable that trains one trial (or one pack) and writes its results.

Checkpoints every `checkpoint_seconds` through Tune (so a retried or resumed trial continues from its
last state), a watchdog for `train.timeout_seconds`, and each finished trial's record and samples
written atomically through the results contract (results.py). Each start is an attempt and each
exception a failure noted in the results folder (ablate.failures); a trial that fails twice the same
way is recorded failed instead of raising, so that Ray does not retry it. The driver side is runner.py.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import ray
import torch
from ray import tune

from ablate import failures, records, results
from ablate.config import TrialConfig
from ablate.packing import Pack, PackingError
from ablate.trackers import eval_metrics
from ablate.trial import DIVERGED, Trial, TrialResult


def pack_ids(packs: list) -> list[str]:
    """Tune's name of each pack (its members keep their own trial ids); a lone trial is not a pack."""
    return [f"pack{index:03d}" if len(pack) > 1 else pack[0].trial_id for index, pack in enumerate(packs)]


def train_one(params: dict) -> None:
    """Tune trainable: one trial (or a pack of them), checkpointed every few seconds, each result
    written to the output folder."""
    spec = params["trial"]
    if "members" in spec:
        train_pack(spec)
        return
    output, trial_id = Path(spec["output"]), spec["trial_id"]
    if records.record_path(output, trial_id).exists():
        tune.report({"phase": "done", "step": 0, "status": "done before"})
        return
    attempt = _start_attempt(output, trial_id)
    trial = restored_at = None
    try:
        trial, restored_at, warning = _restore(spec["config"], tune.get_checkpoint())
        watchdog_args = (output, trial_id, trial, trial.config.train.timeout_seconds, attempt, restored_at)
        result, warning = _train(trial, spec["checkpoint_seconds"], warning, watchdog_args)
        save_trial_result(output, trial_id, result, restored_at, attempts=attempt)
    except Exception as error:  # the user's model or task: whatever it raises
        step = trial.step if trial is not None else 0
        if not _failed_again(output, trial_id, error, step, attempt, {trial_id: (trial, spec["config"])}, restored_at):
            raise
        return
    tune.report(
        {
            "phase": "done",
            "step": trial.step,
            "status": result.status,
            "warning": warning,
            **eval_metrics(result.metrics),
        }
    )


def _train(
    trial: Trial, checkpoint_seconds: float, warning: str | None, watchdog_args: tuple
) -> tuple[TrialResult, str | None]:
    """Train to the budget, checkpointing every `checkpoint_seconds`, under the watchdog (`_give_up` with
    these arguments) when the trial has a timeout; then evaluate. Returns the result and the warning
    not reported yet."""
    timeout = trial.config.train.timeout_seconds
    watchdog = threading.Timer(timeout, _give_up, watchdog_args) if timeout else None
    if watchdog is not None:
        watchdog.daemon = True
        watchdog.start()
    try:
        last_saved = time.monotonic()
        while not trial.done_training:
            trial.train(until=trial.step + trial.config.train.log_every)
            if trial.done_training or time.monotonic() - last_saved > checkpoint_seconds:
                _report_with_checkpoint(trial, warning)
                warning, last_saved = None, time.monotonic()
        return trial.finish(), warning
    finally:
        if watchdog is not None:
            watchdog.cancel()


def train_pack(spec: dict) -> None:
    """A pack's members trained as one (ablate.packing); members whose results exist are left out, and
    a pack that cannot be vectorised trains its members one after another, saying why."""
    output, pack_id = Path(spec["output"]), spec["trial_id"]
    members = [m for m in spec["members"] if not records.record_path(output, m["trial_id"]).exists()]
    if not members:
        tune.report({"phase": "done", "step": 0, "status": "done before"})
        return
    attempt = _start_attempt(output, pack_id)
    ids, configs = [m["trial_id"] for m in members], [TrialConfig.from_dict(m["config"]) for m in members]
    built: dict[str, Trial] = {}  # the members' Trials as far as they were built, the last one training
    pack = restored_at = None
    try:
        try:
            pack = Pack(configs)
        except PackingError as error:
            for trial_id, config in zip(ids, configs, strict=True):
                trial = built[trial_id] = Trial(config)
                save_trial_result(output, trial_id, trial.finish(), pack_id=pack_id, attempts=attempt)
            tune.report({"phase": "done", "step": 0, "status": "ok", "warning": f"not packed: {error}"})
            return
        built.update(zip(ids, pack.members, strict=True))
        restored_at, warning = _restore_pack(pack, ids, tune.get_checkpoint())
        warning = _train_packed(pack, ids, spec["checkpoint_seconds"], warning)
        for trial_id, result in zip(ids, pack.finish(), strict=True):
            save_trial_result(output, trial_id, result, restored_at, pack_id=pack_id, attempts=attempt)
    except Exception as error:  # the user's model or task: whatever it raises
        step = pack.step if pack is not None else list(built.values())[-1].step if built else 0
        unfinished = {m["trial_id"]: (built.get(m["trial_id"]), m["config"]) for m in members}
        if not _failed_again(output, pack_id, error, step, attempt, unfinished, restored_at, pack_id):
            raise
        return
    tune.report({"phase": "done", "step": pack.step, "status": "ok", "warning": warning})


def _train_packed(pack: Pack, ids: list[str], checkpoint_seconds: float, warning: str | None) -> str | None:
    """Train the pack to its budget (or until every member diverged), checkpointing every
    `checkpoint_seconds`; returns the warning not reported yet."""
    train = pack.members[0].config.train
    last_saved = time.monotonic()
    while pack.step < train.steps and any(m.status != DIVERGED for m in pack.members):
        pack.train(until=pack.step + train.log_every)
        if pack.step >= train.steps or time.monotonic() - last_saved > checkpoint_seconds:
            with tempfile.TemporaryDirectory() as folder:
                torch.save({"ids": ids, **pack.state_dict()}, Path(folder) / "state.pt")
                tune.report(
                    {"phase": "train", "step": pack.step, "status": "running", "warning": warning},
                    checkpoint=tune.Checkpoint.from_directory(folder),
                )
            warning, last_saved = None, time.monotonic()
    return warning


def _restore_pack(pack: Pack, ids: list[str], checkpoint) -> tuple[int | None, str | None]:
    """Continue a pack from Tune's checkpoint when it holds these members; else start from step 0."""
    if not checkpoint:
        return None, None
    try:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / "state.pt", weights_only=True)
        if state["ids"] != ids:
            return None, "checkpoint of other members (some finished); restarted the rest from step 0"
        pack.load_state_dict(state)
    except Exception as error:  # torch.load raises many types for a damaged file
        reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        return None, f"checkpoint unreadable ({reason}); restarted from step 0"
    return pack.step, None


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


def _give_up(output: Path, trial_id: str, trial: Trial, timeout: float, attempt: int, restored_at: int | None) -> None:
    """The watchdog: past `train.timeout_seconds` the trial is recorded as failed (reason timeout)
    and its worker process ends, even if it is stuck inside a call; Tune's retry then finds the
    record and returns at once, and the grid goes on."""
    error = f"no result within train.timeout_seconds = {timeout:g} s (stopped at step {trial.step})"
    record = _failed_record(trial, trial.config.to_dict(), "timeout", error, attempt, restored_at)
    records.write_trial_result(output, trial_id, {**record, "timeout_seconds": timeout})
    os._exit(1)


def _start_attempt(output: Path, tune_id: str) -> int:
    """Note this start of the trial (or pack) on this node; its number, 1 for the first."""
    node = ray.get_runtime_context().get_node_id()
    return failures.start_attempt(output, tune_id, node, ray.util.get_node_ip_address())


def _failed_again(
    output: Path,
    tune_id: str,
    error: Exception,
    step: int,
    attempt: int,
    unfinished: Mapping[str, tuple[Trial | None, Mapping]],
    restored_at: int | None,
    pack_id: str | None = None,
) -> bool:
    """Note how this attempt failed. When an earlier attempt failed the same way (type, message, step)
    a retry would too: the unfinished trials (id: their Trial, if built, and config) are recorded
    failed with reason error, the failure is reported, and True says to return instead of raising,
    so that Ray does not retry. False: a new failure, for Ray to retry."""
    failure, repeated = failures.record_failure(output, tune_id, error, step)
    if not repeated:
        return False
    for trial_id, (trial, config) in unfinished.items():
        if not records.record_path(output, trial_id).exists():  # a member that finished before the failure
            record = _failed_record(trial, config, "error", failure["error"], attempt, restored_at, pack_id)
            records.write_trial_result(output, trial_id, record)
    tune.report({"phase": "done", "step": step, "status": results.FAILED, "error": failure["error"]})
    return True


def _failed_record(
    trial: Trial | None,
    config: Mapping,
    reason: str,
    error: str,
    attempts: int,
    restored_at: int | None,
    pack_id: str | None = None,
) -> dict:
    """The record of a failed trial: what it trained before it failed (nothing when its Trial could not
    be built), why (`reason`, `error`: one line) and after how many starts."""
    return {
        "node": ray.get_runtime_context().get_node_id(),
        "restored_at_step": restored_at,
        "attempts": attempts,
        "pack_id": pack_id,
        "status": results.FAILED,
        "reason": reason,
        "error": error,
        "diverged_step": None,
        "train_seconds": trial.train_seconds if trial is not None else 0.0,
        "eval_seconds": 0.0,
        **(trial.training_stats if trial is not None else {}),
        "metrics": {},
        "curves": list(trial.curves) if trial is not None else [],
        "config": dict(config),
    }


def _report_with_checkpoint(trial: Trial, warning: str | None = None) -> None:
    loss = trial.curves[-1]["loss"] if trial.curves else float("nan")
    with tempfile.TemporaryDirectory() as folder:
        torch.save(trial.state_dict(), Path(folder) / "state.pt")
        tune.report(
            {"phase": "train", "step": trial.step, "loss": loss, "status": trial.status, "warning": warning},
            checkpoint=tune.Checkpoint.from_directory(folder),
        )


def save_trial_result(
    output: Path,
    trial_id: str,
    result,
    restored_at: int | None = None,
    pack_id: str | None = None,
    attempts: int | None = None,
) -> None:
    """The finished trial's record and samples, written through the results contract (atomically)."""
    record = {
        "node": ray.get_runtime_context().get_node_id(),
        "restored_at_step": restored_at,
        "attempts": attempts,
        "pack_id": pack_id,
        "status": result.status,
        "diverged_step": result.diverged_step,
        "train_seconds": result.train_seconds,
        "eval_seconds": result.eval_seconds,
        **result.training_stats,
        "metrics": result.metrics,
        "curves": result.curves,
        "config": result.config.to_dict(),
    }
    records.write_trial_result(output, trial_id, record, result.samples, result.real_samples)
