"""What a running grid shows: one compact status line, and results tables kept current mid-run."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from ray import tune

from ablate import records, results


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
