"""Inside a Ray worker: the Tune trainable that trains one trial (or one pack) and writes its results.

Checkpoints every `checkpoint_seconds` through Tune (so a retried or resumed trial continues from its
last state), a watchdog for `train.timeout_seconds`, and each finished trial's record and samples
written atomically through the results contract (results.py). The driver side is runner.py.
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

from ablate import records, results
from ablate.config import TrialConfig
from ablate.packing import Pack, PackingError
from ablate.trackers import eval_metrics
from ablate.trial import DIVERGED, Trial


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


def train_pack(spec: dict) -> None:
    """A pack's members trained as one (ablate.packing); members whose results exist are left out, and
    a pack that cannot be vectorised trains its members one after another, saying why."""
    output = Path(spec["output"])
    members = [m for m in spec["members"] if not records.record_path(output, m["trial_id"]).exists()]
    if not members:
        tune.report({"phase": "done", "step": 0, "status": "done before"})
        return
    configs = [TrialConfig.from_dict(m["config"]) for m in members]
    try:
        pack = Pack(configs)
    except PackingError as error:
        for member, config in zip(members, configs, strict=True):
            save_trial_result(output, member["trial_id"], Trial(config).finish(), pack_id=spec["trial_id"])
        tune.report({"phase": "done", "step": 0, "status": "ok", "warning": f"not packed: {error}"})
        return
    ids = [m["trial_id"] for m in members]
    restored_at, warning = _restore_pack(pack, ids, tune.get_checkpoint())
    budget, last_saved = configs[0].train.steps, time.monotonic()
    while pack.step < budget and any(m.status != DIVERGED for m in pack.members):
        pack.train(until=pack.step + configs[0].train.log_every)
        if pack.step >= budget or time.monotonic() - last_saved > spec["checkpoint_seconds"]:
            with tempfile.TemporaryDirectory() as folder:
                torch.save({"ids": ids, **pack.state_dict()}, Path(folder) / "state.pt")
                tune.report(
                    {"phase": "train", "step": pack.step, "status": "running", "warning": warning},
                    checkpoint=tune.Checkpoint.from_directory(folder),
                )
            warning, last_saved = None, time.monotonic()
    for member, result in zip(members, pack.finish(), strict=True):
        save_trial_result(output, member["trial_id"], result, restored_at, pack_id=spec["trial_id"])
    tune.report({"phase": "done", "step": pack.step, "status": "ok", "warning": warning})


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
    records.write_trial_result(output, trial_id, record)
    os._exit(1)


def _report_with_checkpoint(trial: Trial, warning: str | None = None) -> None:
    loss = trial.curves[-1]["loss"] if trial.curves else float("nan")
    with tempfile.TemporaryDirectory() as folder:
        torch.save(trial.state_dict(), Path(folder) / "state.pt")
        tune.report(
            {"phase": "train", "step": trial.step, "loss": loss, "status": trial.status, "warning": warning},
            checkpoint=tune.Checkpoint.from_directory(folder),
        )


def save_trial_result(
    output: Path, trial_id: str, result, restored_at: int | None = None, pack_id: str | None = None
) -> None:
    """The finished trial's record and samples, written through the results contract (atomically)."""
    record = {
        "node": ray.get_runtime_context().get_node_id(),
        "restored_at_step": restored_at,
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
