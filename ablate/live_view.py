"""The live progress view of a grid on a terminal: one bar per running trial with its step (of its total)
and latest loss, the finished / diverged / failed counts, and an ETA from the step rates measured on the
running trials.

An ETA from "elapsed time per finished trial" knows nothing until a trial finishes and then scales the
first, slowest wave (Ray start-up, every trial starting at once) to the whole grid: it said 16m31s for a
4.5-minute grid. Here each trial's rate is measured between its own step reports (there after its second
one), the time a trial spends outside training (set-up, evaluation) on the trials finished so far, and
the trials still to come are laid on the slots as Tune frees them. The state (`GridProgress`) is plain
data fed by the Tune callback in progress.py, so that it is tested without a terminal or Ray; `render`
draws it with rich and `LiveDisplay` keeps the drawing on screen.
"""

from __future__ import annotations

import atexit
import heapq
import logging
import math
import os
import sys
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

PENDING, RUNNING, DONE, DIVERGED, FAILED = "pending", "running", "done", "diverged", "failed"
# Step reports per trial that its rate is measured over: enough to smooth out a checkpoint's pause, few
# enough to follow a slow-down (more trials sharing the CPUs as the grid fills).
RATE_WINDOW = 6
MOST_BARS = 20  # running trials drawn as bars; the others are counted on one line


def wants_live_view(stream: TextIO | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """The live view on a terminal; plain lines in a log file, a pipe and in CI (`CI` set, as CI
    services do), where a redrawn region would be escape codes, and on a terminal that cannot redraw."""
    stream = sys.stdout if stream is None else stream
    environ = os.environ if environ is None else environ
    in_ci = environ.get("CI", "").strip().lower() not in ("", "0", "false")
    is_terminal = hasattr(stream, "isatty") and stream.isatty()
    return is_terminal and not in_ci and environ.get("TERM") != "dumb"


@dataclass(frozen=True)
class TrialSnapshot:
    """What Tune says of one of its trials (a lone trial or a pack of `members`) at one step of its loop."""

    trial_id: str
    state: str  # PENDING, RUNNING, DONE, DIVERGED or FAILED
    total_steps: int
    members: int = 1


@dataclass
class TrialProgress:
    """One Tune trial as the view knows it: its last step report, the recent ones its rate is from, and
    when this attempt started, to measure what a trial spends outside training."""

    trial_id: str
    total_steps: int
    members: int = 1
    state: str = PENDING
    step: int = 0
    loss: float | None = None
    reports: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=RATE_WINDOW))
    first_report: tuple[float, int] | None = None  # this attempt's: when its training started, with the rate
    started: float | None = None  # when this attempt was first seen running
    retried: bool = False  # its start-up and wrap-up are not those of one attempt

    def rate(self) -> float | None:
        """Steps per second over this attempt's recent reports; None before two reports apart in time
        and step (the first report's time is its baseline: start-up is not training)."""
        if len(self.reports) < 2:
            return None
        (first_time, first_step), (last_time, last_step) = self.reports[0], self.reports[-1]
        if last_time <= first_time or last_step <= first_step:
            return None
        return (last_step - first_step) / (last_time - first_time)

    def remaining_steps(self, now: float, rate: float) -> float:
        """Steps left at `now`, the ones trained since the last report (at `rate`) taken off: reports
        come every checkpoint interval, the ETA should not stand still in between."""
        since = now - self.reports[-1][0] if self.reports else 0.0
        return max(self.total_steps - self.step - rate * since, 0.0)

    def overheads(self, ended: float) -> tuple[float, float] | None:
        """Seconds from this trial's start to its first step (a worker's set-up, building the model) and
        from its last step to its end (evaluation, writing its record), when it trained its whole budget
        in one attempt at a measured rate; else None."""
        rate = self.rate()
        if rate is None or self.retried or self.started is None or self.step < self.total_steps:
            return None
        first_time, first_step = self.first_report
        return max(first_time - first_step / rate - self.started, 0.0), max(ended - self.reports[-1][0], 0.0)


@dataclass(frozen=True)
class Counts:
    total: int
    done: int  # finished with a result, the diverged ones included
    diverged: int
    failed: int
    running: int
    pending: int


class GridProgress:
    """The grid's progress: counts, each trial's step and loss, the measured step rates and the ETA.
    Time is always passed in (`now`, any monotonic clock), so that a test can replay a grid."""

    def __init__(self, total: int) -> None:
        self.total = total  # Tune trials in the grid: a pack counts once, as in Tune
        self.trials: dict[str, TrialProgress] = {}
        self.slots = 0  # trials seen running at once: the concurrency the grid gets
        self.slot_rate: float | None = None  # mean measured rate of one running trial, kept between waves
        self.startups: list[float] = []  # of the trials finished in one attempt
        self.wrapups: list[float] = []

    def update(self, snapshots: Iterable[TrialSnapshot], now: float) -> None:
        """Tune's view of its trials at `now`; trials it has not created yet count as pending."""
        for snapshot in snapshots:
            trial = self.trials.setdefault(
                snapshot.trial_id, TrialProgress(snapshot.trial_id, snapshot.total_steps, snapshot.members)
            )
            if snapshot.state == RUNNING and trial.started is None:
                trial.started = now
            if snapshot.state == DONE and trial.state == RUNNING and (measured := trial.overheads(now)):
                self.startups.append(measured[0])
                self.wrapups.append(measured[1])
            trial.state, trial.total_steps, trial.members = snapshot.state, snapshot.total_steps, snapshot.members
        self.slots = max(self.slots, self.counts().running)

    def report(self, trial_id: str, step: int, loss: float | None, now: float) -> None:
        """A training step report of a trial `update` has seen. A step behind the last one is a restart
        (a retry from an older checkpoint, or from step 0): its rate is measured anew."""
        trial = self.trials[trial_id]
        if trial.reports and step < trial.reports[-1][1]:
            trial.reports.clear()
            trial.first_report, trial.retried = None, True
        trial.step, trial.loss = step, loss
        trial.reports.append((now, step))
        trial.first_report = trial.first_report or (now, step)
        self._measure()

    def restarted(self, trial_id: str) -> None:
        """Tune retries the trial: the time until its next report is start-up, not training."""
        if trial_id in self.trials:
            trial = self.trials[trial_id]
            trial.reports.clear()
            trial.first_report, trial.started, trial.retried = None, None, True

    def running(self) -> list[TrialProgress]:
        return sorted((t for t in self.trials.values() if t.state == RUNNING), key=lambda t: t.trial_id)

    def counts(self) -> Counts:
        states = [t.state for t in self.trials.values()]
        done, diverged = states.count(DONE) + states.count(DIVERGED), states.count(DIVERGED)
        failed, running = states.count(FAILED), states.count(RUNNING)
        pending = max(self.total - done - failed - running, 0)
        return Counts(self.total, done, diverged, failed, running, pending)

    def eta(self, now: float) -> float | None:
        """Seconds until the grid is done; None while no step rate has been measured yet. A trial is its
        start-up, its steps at its measured rate (one not measured yet at the mean one) and its wrap-up,
        both as measured on the trials finished so far (none yet: nothing). Each pending trial takes the
        next slot to free up, as Tune schedules them; the grid is done when its last slot is: five trials
        on four slots take two trials' time, not 5/4."""
        running = self.running()
        counts = self.counts()
        if not running and not counts.pending:
            return 0.0
        if self.slot_rate is None:
            return None
        startup, wrapup = _mean(self.startups), _mean(self.wrapups)
        finishes = []
        for trial in running:
            rate = trial.rate() or self.slot_rate
            starting = 0.0 if trial.reports else max(startup - (now - trial.started), 0.0)
            finishes.append(starting + trial.remaining_steps(now, rate) / rate + wrapup)
        slots = finishes + [0.0] * max(max(self.slots, 1) - len(finishes), 0)  # idle slots start pending ones
        heapq.heapify(slots)
        for steps in self._pending_steps(counts.pending):
            heapq.heapreplace(slots, slots[0] + startup + steps / self.slot_rate + wrapup)
        return max(slots)

    def _pending_steps(self, pending: int) -> list[int]:
        """The steps of each trial still to start: the known ones', and for those Tune has not created
        yet, the mean of the grid's trials (those of one grid differ only where a factor is the budget)."""
        known = [t.total_steps for t in self.trials.values() if t.state == PENDING]
        every = [t.total_steps for t in self.trials.values()]
        mean_steps = sum(every) / len(every) if every else 0
        return known + [math.ceil(mean_steps)] * max(pending - len(known), 0)

    def _measure(self) -> None:
        rates = [rate for t in self.running() if (rate := t.rate()) is not None]
        if rates:
            self.slot_rate = sum(rates) / len(rates)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def render(grid: GridProgress, now: float, elapsed: float) -> RenderableType:
    """The counts and ETA on one line, then one bar per running trial: its step of its total and its
    latest loss (a pack's reports carry no loss: a dash)."""
    counts = grid.counts()
    eta = grid.eta(now)
    head = Text.assemble(
        ("[ablate] ", "bold"),
        f"{counts.done}/{counts.total} done ({counts.diverged} diverged), ",
        (f"{counts.failed} failed", "red" if counts.failed else ""),
        f", {counts.running} running, {counts.pending} pending | {duration(elapsed)} elapsed, ",
        (_eta(counts, eta), "cyan"),
    )
    bars = Table.grid(padding=(0, 1))
    for trial in grid.running()[:MOST_BARS]:
        label = trial.trial_id if trial.members == 1 else f"{trial.trial_id} ({trial.members} trials)"
        width = len(str(trial.total_steps))
        bars.add_row(
            Text(f"  {label}", overflow="ellipsis", no_wrap=True),
            ProgressBar(total=max(trial.total_steps, 1), completed=min(trial.step, trial.total_steps), width=30),
            f"step {trial.step:>{width}}/{trial.total_steps}",
            f"loss {_loss(trial.loss)}",
        )
    more = len(grid.running()) - MOST_BARS
    tail = [Text(f"  ... and {more} more running")] if more > 0 else []
    return Group(head, bars, *tail)


def duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _eta(counts: Counts, eta: float | None) -> str:
    if not counts.running and not counts.pending:
        return "done"
    return "ETA: measuring" if eta is None else f"ETA: {duration(eta)}"


def _loss(loss: float | None) -> str:
    if loss is None:
        return "-"
    return f"{loss:.4g}" if math.isfinite(loss) else str(loss)


class LiveDisplay:
    """rich's live region at the bottom of the terminal, redrawn at most every `every_seconds`; lines
    printed meanwhile (a trial's failure) scroll above it, and so do the records of `loggers` whose
    handlers write to the terminal (Ray's warnings: their handlers keep the stream they were made with,
    which would write across the region). Closed at the end of the run, or at exit at the latest, so that
    a second Ctrl-C does not leave the terminal's cursor hidden."""

    def __init__(
        self, console: Console | None = None, every_seconds: float = 0.25, loggers: Iterable[str] = ()
    ) -> None:
        self.console, self.every_seconds, self.loggers = console or Console(), every_seconds, tuple(loggers)
        self.live: Live | None = None
        self.last_drawn = -math.inf
        self.moved: list[tuple[logging.StreamHandler, TextIO]] = []  # handlers writing above the region

    def due(self, now: float) -> bool:
        return now - self.last_drawn >= self.every_seconds

    def show(self, view: RenderableType, now: float) -> None:
        if self.live is None:
            terminal = {id(sys.stdout): "stdout", id(sys.stderr): "stderr"}
            self.live = Live(view, console=self.console, auto_refresh=False, transient=False)
            self.live.start()  # sys.stdout and sys.stderr are now the region's
            atexit.register(self.close)
            for handler in _stream_handlers(self.loggers):
                if id(handler.stream) in terminal:
                    self.moved.append((handler, handler.setStream(getattr(sys, terminal[id(handler.stream)]))))
        self.live.update(view, refresh=True)
        self.last_drawn = now

    def close(self, view: RenderableType | None = None) -> None:
        """Draw `view` one last time (it stays on screen) and hand the terminal back."""
        if self.live is None:
            return
        if view is not None:
            self.live.update(view, refresh=True)
        for handler, stream in self.moved:
            handler.setStream(stream)
        self.moved = []
        self.live.stop()
        self.live = None
        atexit.unregister(self.close)


def _stream_handlers(loggers: Iterable[str]) -> list[logging.StreamHandler]:
    return [
        handler
        for name in loggers
        for handler in logging.getLogger(name).handlers
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
    ]
