"""What a running grid shows: on a terminal the live view (ablate.live_view), else one compact status
line; one line per failed or retried trial, and results tables kept current mid-run. Ray's own messages
(tracebacks, error tables, its resume hint) go to a log file in the results folder instead of the console."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import ray
from ray import tune
from ray._private import worker as ray_driver

from ablate import failures, records, results
from ablate.live_view import (
    DIVERGED,
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    GridProgress,
    LiveDisplay,
    TrialSnapshot,
    duration,
    render,
    wants_live_view,
)

# Tune's log records that ablate says in its own words: a trial's failure (with Ray's traceback), the
# list of trials that did not complete, and the interrupted run's `Tuner.restore(...)` hint (ablate
# resumes with `--resume`).
RESTATED = ("Trial task failed", "Trials did not complete", "Experiment has been interrupted")


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
            done = records.record_names(self.output)
            if done and done != seen:
                try:
                    self.refresh()
                    seen = done
                except (OSError, ValueError):
                    pass

    def __enter__(self) -> LiveTables:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.join()


class _ConsoleFilter(logging.Filter):
    """What of Ray's log reaches the console during a run: warnings and errors without a traceback,
    except those ablate restates in its own lines (RESTATED)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and not record.exc_info and not str(record.msg).startswith(RESTATED)


@contextmanager
def ray_log_to(path: Path) -> Iterator[None]:
    """Ray's log in full (tracebacks, Tune's error tables and hints) into `path`, and on the console
    only what `_ConsoleFilter` lets through. Ray prints its messages about dead workers straight to
    stdout, not through logging (its driver's error listener, a private function); those go to `path`
    alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(path)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ray_logger, console = logging.getLogger("ray"), _ConsoleFilter()
    shown = list(ray_logger.handlers)
    for handler in shown:
        handler.addFilter(console)
    ray_logger.addHandler(to_file)
    printed = ray_driver.print_to_stdstream

    def raylet_to_file(data: dict, ignore_prefix: bool) -> None:
        if data.get("pid") != "raylet":
            printed(data, ignore_prefix)
            return
        for line in data["lines"]:
            to_file.handle(
                logging.makeLogRecord(
                    {"name": "ray.raylet", "levelno": logging.ERROR, "levelname": "ERROR", "msg": line}
                )
            )

    ray_driver.print_to_stdstream = raylet_to_file
    try:
        yield
    finally:
        ray_driver.print_to_stdstream = printed
        ray_logger.removeHandler(to_file)
        for handler in shown:
            handler.removeFilter(console)
        to_file.close()


class ProgressView(tune.Callback):
    """What a running grid shows instead of Tune's tables: on a terminal, the live view of
    ablate.live_view (a bar per running trial, the counts, an ETA from measured step rates); in a log,
    a pipe or CI, one compact status line (done / running / failed, ETA) when the counts change or every
    `every_seconds`. Either way one line per failed or retried trial instead of Ray's tracebacks (the
    full ones are in `output`/logs/).

    Tune pickles its callbacks into tuner.pkl, and `--resume` runs the one pickled by the ablate that
    started the run: `__setstate__` fills in what an older one lacks."""

    def __init__(self, total: int, output: Path, max_failures: int, every_seconds: float = 15.0) -> None:
        self.total, self.output, self.max_failures, self.every_seconds = total, output, max_failures, every_seconds
        self.setup()

    def setup(self, **info) -> None:
        """Called by Tune at the start of every run, including a restored one: the console it runs on
        decides between the live view and the status line."""
        self.start, self.done_before = time.monotonic(), None
        self.last_counts, self.last_time = None, 0.0
        self.failed: set[str] = set()  # failed for good, though Tune may have ended them normally
        self.grid = GridProgress(self.total)
        self.display = LiveDisplay(loggers=["ray"]) if wants_live_view() else None

    def __getstate__(self) -> dict:
        """The terminal's live region is not state (and holds locks that do not pickle)."""
        return {name: value for name, value in self.__dict__.items() if name != "display"}

    def __setstate__(self, state: dict) -> None:
        """A view pickled by an older ablate: its results folder and retry budget, when it kept none, are
        taken from the first trial it hears of (`_folder`, `_retries`); the per-run state is made anew."""
        self.__dict__.update({"output": None, "max_failures": None, "every_seconds": 15.0, **state})
        self.setup()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        trial_id = _trial_id(trial)
        if result.get("phase") == "train":
            now = time.monotonic()
            self.grid.update([self._snapshot(trial)], now)
            self.grid.report(trial_id, result["step"], result.get("loss"), now)
        if result.get("warning"):
            print(f"[ablate] warning: {trial_id}: {result['warning']}", flush=True)
        if result.get("status") == results.FAILED:  # the worker's: it failed the same way twice
            self.failed.add(trial_id)
            print(
                f"[ablate] {trial_id} failed at step {result['step']}: {result['error']}; the same as before, "
                f"so not retried (traceback: {failures.log_path(self._folder(trial), trial_id)})",
                flush=True,
            )

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        """Tune retries the trial from its last checkpoint."""
        self.grid.restarted(_trial_id(trial))
        checkpoint = trial.latest_checkpoint_result
        step = checkpoint.metrics.get("step", 0) if checkpoint else 0
        attempt = f"(attempt {trial.num_failures + 1} of {self._retries(trial) + 1})"
        self._say_failure(trial, f"retrying from step {step} {attempt}", f"continues from step {step} {attempt}")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        """Tune gave up on the trial: it failed `max_failures` + 1 times."""
        trial_id = _trial_id(trial)
        self.failed.add(trial_id)
        log = failures.log_path(self._folder(trial), trial_id)
        gave_up = f"after {trial.num_failures} attempt{'s' if trial.num_failures > 1 else ''}"
        self._say_failure(trial, f"given up {gave_up} (traceback: {log})", f"failed {gave_up}")

    def _say_failure(self, trial, after_error: str, after_lost: str) -> None:
        """One line on the trial's latest failure, from what its worker left in the results folder: the
        watchdog's record (a timeout: final, Tune's retry finds the record), the exception its attempt
        noted, else the node or the worker process it ran on died (Ray's account is in logs/ray.log)."""
        trial_id, folder = _trial_id(trial), self._folder(trial)
        record, attempts = _record(folder, trial_id), failures.read_attempts(folder, trial_id)
        last = attempts[-1] if attempts else {}
        if record.get("status") == results.FAILED:
            self.failed.add(trial_id)
            line = f"{trial_id} failed: {record.get('error')}"
        elif last.get("failure"):
            line = f"{trial_id} failed at step {last['failure']['step']}: {last['failure']['error']}; {after_error}"
        elif last.get("node") and not _node_alive(last["node"]):
            line = f"node {last['node_ip']} lost; {trial_id} {after_lost}"
        else:
            ray_log = folder / failures.LOGS_DIR / failures.RAY_LOG
            line = f"{trial_id}: its worker process died (see {ray_log}); {after_lost}"
        print(f"[ablate] {line}", flush=True)

    def on_step_end(self, iteration, trials, **info) -> None:
        snapshots, now = [self._snapshot(t) for t in trials], time.monotonic()
        self.grid.update(snapshots, now)
        if self.display is None:
            self._status_line(trials, snapshots)
        elif self.display.due(now):
            self.display.show(render(self.grid, now, now - self.start), now)

    def on_experiment_end(self, trials, **info) -> None:
        """The run ended (done, interrupted or failed): the live view's last state stays on screen. That
        of the last step: Tune has ended the trials by now, an interrupted one as if it had finished."""
        if self.display is not None:
            now = time.monotonic()
            self.display.close(render(self.grid, now, now - self.start))

    def _status_line(self, trials, snapshots: list[TrialSnapshot]) -> None:
        """The plain view: one line when the counts change, else every `every_seconds`. Its ETA scales the
        time per trial finished in this session to the trials left."""
        failed = sum(s.state == FAILED for s in snapshots)
        done = sum(s.state in (DONE, DIVERGED) for s in snapshots)
        if self.done_before is None:  # trials finished by an earlier session do not count for the ETA
            self.done_before = done
        running = sum(s.state == RUNNING for s in snapshots)
        diverged = sum(s.state == DIVERGED for s in snapshots)
        elapsed = time.monotonic() - self.start
        new = max(done - self.done_before, 0)
        remaining = self.total - done - failed
        eta = f"ETA {duration(elapsed / new * remaining)}" if new and remaining else "ETA ?" if remaining else "done"
        counts = (done, diverged, failed)
        if counts != self.last_counts or time.monotonic() - self.last_time > self.every_seconds:
            print(
                f"[ablate] {done}/{self.total} trials done ({diverged} diverged), {running} running, "
                f"{failed} failed | {duration(elapsed)} elapsed, {eta}{_running_steps(trials)}",
                flush=True,
            )
            self.last_counts, self.last_time = counts, time.monotonic()

    def _snapshot(self, trial) -> TrialSnapshot:
        """The trial as the views count it: failed once Tune gave up or its worker recorded it failed for
        good (Tune then ends it normally); a pack is one trial of its `members`."""
        spec = trial.config["trial"]
        if trial.status == "ERROR" or spec["trial_id"] in self.failed:
            state = FAILED
        elif trial.status == "TERMINATED":
            state = DIVERGED if (trial.last_result or {}).get("status") == results.DIVERGED else DONE
        else:
            state = RUNNING if trial.status == "RUNNING" else PENDING
        return TrialSnapshot(
            spec["trial_id"], state, spec["config"]["train"]["steps"], len(spec.get("members", [spec]))
        )

    def _folder(self, trial) -> Path:
        """The results folder; a view pickled before it kept one learns it from a trial's config."""
        if self.output is None:
            self.output = Path(trial.config["trial"]["output"])
        return self.output

    def _retries(self, trial) -> int:
        """Tune's retry budget; a view pickled before it kept one asks the trial (Tune gives it each)."""
        if self.max_failures is None:
            self.max_failures = trial.max_failures
        return self.max_failures


def _trial_id(trial) -> str:
    """Ours (the cell label and seed, or the pack's id), not Tune's."""
    return trial.config["trial"]["trial_id"]


def _record(output: Path, trial_id: str) -> dict:
    """The trial's record if it has a readable one (the tables say so when it is damaged), else empty."""
    try:
        return json.loads(records.record_path(output, trial_id).read_text())
    except (OSError, ValueError):
        return {}


def _node_alive(node_id: str) -> bool:
    return any(node["NodeID"] == node_id and node["Alive"] for node in ray.nodes())


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
