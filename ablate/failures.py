"""What a failed attempt of a trial leaves behind, and when a failing trial is not retried.

Each start of a trial (or pack) in a Ray worker is one attempt, listed in ``<folder>/logs/<id>.json``
with its node and, when it raised, how: the exception's type, message and step, and one line for people
(``TypeError: ... (model.py:42)``). The full traceback of every failed attempt is appended to
``<folder>/logs/<id>.log``; the console and trials.csv get the one line, since a traceback that runs
through Ray and the training loop hides the user's own frame.

A trial that fails twice with the same exception at the same step will fail so again: the worker
records it ``failed`` at once rather than letting Ray retry it up to ``max_failures`` times. A failure
that differs (a lost node, a flaky file system) is still retried.
"""

from __future__ import annotations

import json
import os
import traceback
from datetime import datetime, timezone
from pathlib import Path

import ray
import torch

from ablate.results import first_line, write_text

LOGS_DIR = "logs"  # <folder>/logs/: per-trial attempt histories and tracebacks, and Ray's own log
RAY_LOG = "ray.log"  # <folder>/logs/ray.log: Ray's messages, kept off the console during a run
# Frames in these packages are the machinery around the user's code, never the place to look first.
_INTERNALS = tuple(str(Path(where).parent) + os.sep for where in (__file__, ray.__file__, torch.__file__))


def log_path(folder: str | Path, trial_id: str) -> Path:
    """The full tracebacks of a trial's failed attempts, appended one after another."""
    return Path(folder) / LOGS_DIR / f"{trial_id}.log"


def history_path(folder: str | Path, trial_id: str) -> Path:
    return Path(folder) / LOGS_DIR / f"{trial_id}.json"


def read_attempts(folder: str | Path, trial_id: str) -> list[dict]:
    """The trial's attempts so far, oldest first; none for a trial never started (or a folder written
    before attempts were kept). A damaged history counts as none: it informs, it must not fail a trial."""
    try:
        attempts = json.loads(history_path(folder, trial_id).read_text())["attempts"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return attempts if isinstance(attempts, list) else []


def start_attempt(folder: str | Path, trial_id: str, node: str, node_ip: str) -> int:
    """Note one more start of the trial (on this node); returns its number, 1 for the first."""
    attempts = read_attempts(folder, trial_id)
    attempts.append(
        {"attempt": len(attempts) + 1, "node": node, "node_ip": node_ip, "started": _now(), "failure": None}
    )
    _write_attempts(folder, trial_id, attempts)
    return len(attempts)


def record_failure(folder: str | Path, trial_id: str, error: BaseException, step: int) -> tuple[dict, bool]:
    """Note how the current attempt failed and append its traceback to the trial's log. Returns the
    failure and whether an earlier attempt failed the same way (type, message and step): then a retry
    would only fail again."""
    failure = {
        "type": type(error).__name__,
        "message": str(error),
        "step": step,
        "error": one_line(error),
    }
    attempts = read_attempts(folder, trial_id) or [{"attempt": 1, "node": None, "node_ip": None, "started": None}]
    repeated = any(_same(earlier.get("failure"), failure) for earlier in attempts[:-1])
    attempts[-1]["failure"] = failure
    _write_attempts(folder, trial_id, attempts)
    header = f"=== attempt {attempts[-1]['attempt']} failed at step {step} ({_now()}, node {attempts[-1]['node_ip']})"
    with open(log_path(folder, trial_id), "a") as log:
        log.write(f"{header}\n{''.join(traceback.format_exception(error))}\n")
    return failure, repeated


def given_up(folder: str | Path, trial_id: str, error: BaseException) -> dict:
    """trials.csv's ``error`` and ``attempts`` for a trial Tune gave up on (it has no record): its last
    attempt's failure, or Ray's error when that attempt noted none (its worker process or node died)."""
    attempts = read_attempts(folder, trial_id)
    failure = attempts[-1].get("failure") if attempts else None
    return {
        "error": failure["error"] if failure else f"{type(error).__name__}: {first_line(error)}",
        "attempts": len(attempts) or None,
    }


def one_line(error: BaseException) -> str:
    """``TypeError: first line of the message (file.py:42)``, at the user's innermost frame."""
    name = type(error).__name__
    message = first_line(error)
    text = name if message == name else f"{name}: {message}"
    where = user_frame(error)
    return f"{text} ({where})" if where else text


def user_frame(error: BaseException) -> str | None:
    """``file:line`` of the innermost frame outside ablate, Ray and torch (the user's model or task),
    else of the innermost frame."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return None
    outside = [f for f in frames if not f.filename.startswith(_INTERNALS)]
    frame = (outside or frames)[-1]
    return f"{frame.filename}:{frame.lineno}"


def _same(earlier: dict | None, failure: dict) -> bool:
    return bool(earlier) and all(earlier.get(key) == failure[key] for key in ("type", "message", "step"))


def _write_attempts(folder: str | Path, trial_id: str, attempts: list[dict]) -> None:
    path = history_path(folder, trial_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps({"trial_id": trial_id, "attempts": attempts}, indent=1))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
