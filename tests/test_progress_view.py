"""The progress view without Ray: the live view's state (counts, step rates, ETA) replayed from simulated
grids, its drawing on a recorded rich console, the plain status lines byte for byte as before the live
view, and a view pickled by an older ablate (as `--resume` restores it from tuner.pkl) still working."""

import heapq
import io
import logging
import pickle
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from ablate import failures, live_view, progress
from ablate.live_view import DIVERGED, DONE, FAILED, PENDING, RUNNING, GridProgress, TrialSnapshot


def simulate_grid(
    trials: int, slots: int, steps: int, rate: float, report_every: float, startup: float, wrapup: float = 0.0
) -> tuple[list[tuple[float, int, str, str, int]], float]:
    """A grid of `trials` equal trials on `slots` slots: each sets up for `startup` seconds, trains at a
    constant `rate`, reporting its step every `report_every` seconds (as the worker does at each
    checkpoint) and at its last step, then evaluates for `wrapup` seconds; the next trial starts when
    one ends. Returns its events (time, order, kind, trial id, step), in order, and when it is done."""
    free, events = [0.0] * slots, []
    for index in range(trials):
        start, trial_id = heapq.heappop(free), f"t{index}"
        trained = start + startup + steps / rate
        events.append((start, 2, "start", trial_id, 0))
        reported = start + startup + report_every
        while reported < trained:
            events.append((reported, 0, "report", trial_id, round((reported - start - startup) * rate)))
            reported += report_every
        events += [(trained, 0, "report", trial_id, steps), (trained + wrapup, 1, "done", trial_id, steps)]
        heapq.heappush(free, trained + wrapup)
    return sorted(events), max(free)


def replay(events, trials: int, steps: int, created_up_front: bool):
    """Feed the events to a GridProgress as the callback does; yields (time, grid) after each."""
    grid = GridProgress(trials)
    states = {f"t{i}": PENDING for i in range(trials)} if created_up_front else {}
    for now, _, kind, trial_id, step in events:
        states[trial_id] = {"start": RUNNING, "report": RUNNING, "done": DONE}[kind]
        grid.update((TrialSnapshot(t, state, steps) for t, state in states.items()), now)
        if kind == "report":
            grid.report(trial_id, step, 0.5, now)
        yield now, grid


@pytest.mark.parametrize("created_up_front", [True, False])  # Tune creates the grid's trials lazily or not
@pytest.mark.parametrize(("trials", "slots"), [(7, 3), (5, 4), (4, 4), (1, 1)])
def test_eta_from_measured_step_rates_converges_to_the_true_remaining_time(trials, slots, created_up_front):
    steps, rate, report_every = 1000, 10.0, 10.0
    events, end = simulate_grid(trials, slots, steps, rate, report_every, startup=1.0)
    checked = 0
    for now, grid in replay(events, trials, steps, created_up_front):
        eta, remaining = grid.eta(now), end - now
        if now < 1.0 + 2 * report_every:  # no trial has reported twice: nothing measured, nothing guessed
            assert eta is None
        elif now >= 1.0 + 3 * report_every and remaining >= report_every:
            assert eta == pytest.approx(remaining, rel=0.10), (now, remaining)
            checked += 1
    assert checked >= 5
    assert grid.eta(end) == 0.0 and grid.counts().done == trials


def test_the_eta_counts_the_time_trials_spend_outside_training_once_one_has_finished():
    steps, rate, report_every, startup, wrapup = 1000, 10.0, 10.0, 5.0, 15.0  # 100 s of training in 120 s
    events, end = simulate_grid(7, 3, steps, rate, report_every, startup, wrapup)
    first_done = min(at for at, _, kind, _, _ in events if kind == "done")
    errors_before, errors_after = [], []
    for now, grid in replay(events, 7, steps, created_up_front=True):
        eta, remaining = grid.eta(now), end - now
        if eta is not None and remaining >= report_every:
            (errors_before if now < first_done else errors_after).append(eta / remaining - 1)
    assert grid.startups == pytest.approx([startup] * 7) and grid.wrapups == pytest.approx([wrapup] * 7)
    assert max(errors_before) < 0 and min(errors_before) > -0.25  # only the training seen: too soon
    assert len(errors_after) >= 20 and max(abs(e) for e in errors_after) <= 0.10


def test_eta_counts_down_between_reports_and_waits_for_the_slowest_running_trial():
    grid = GridProgress(2)
    grid.update([TrialSnapshot("fast", RUNNING, 1000), TrialSnapshot("slow", RUNNING, 1000)], 0.0)
    for now in (10.0, 20.0, 30.0):
        grid.report("fast", int(20 * now), 0.1, now)
        grid.report("slow", int(5 * now), 0.2, now)
    assert grid.eta(30.0) == pytest.approx((1000 - 150) / 5)  # not the mean of the two
    assert grid.eta(40.0) == pytest.approx((1000 - 150) / 5 - 10)  # ten seconds on, without a report


def test_a_retried_trial_measures_its_rate_anew():
    grid = GridProgress(1)
    grid.update([TrialSnapshot("t", RUNNING, 1000)], 0.0)
    grid.report("t", 100, 1.0, 10.0)
    grid.report("t", 200, 1.0, 20.0)
    grid.restarted("t")  # Tune retries it from the checkpoint at step 200; start-up takes 30 s
    grid.report("t", 200, 1.0, 50.0)
    assert grid.running()[0].rate() is None and grid.eta(50.0) == pytest.approx(80.0)  # the rate before it
    grid.report("t", 300, 1.0, 60.0)
    assert grid.running()[0].rate() == pytest.approx(10.0)  # not 100 steps in 40 s
    grid.report("t", 0, 1.0, 70.0)  # restarted from step 0 (the checkpoint was unreadable): a new baseline
    assert grid.running()[0].step == 0 and grid.running()[0].rate() is None


def test_counts_finished_diverged_failed_running_and_pending():
    grid = GridProgress(9)  # three of them not created by Tune yet
    states = {"a": DONE, "b": DIVERGED, "c": FAILED, "d": RUNNING, "e": RUNNING, "f": PENDING}
    grid.update((TrialSnapshot(t, state, 100) for t, state in states.items()), 0.0)
    assert grid.counts() == live_view.Counts(total=9, done=2, diverged=1, failed=1, running=2, pending=4)
    assert [t.trial_id for t in grid.running()] == ["d", "e"]
    grid.update([TrialSnapshot("d", DONE, 100)], 1.0)
    assert (grid.counts().done, grid.counts().running, grid.slots) == (3, 1, 2)


def _recorded_console() -> Console:
    return Console(record=True, force_terminal=True, width=100, file=io.StringIO())


def test_the_drawing_has_a_bar_per_running_trial_with_its_step_and_loss():
    grid = GridProgress(5)
    grid.update(
        [
            TrialSnapshot("grid_vboot_vstep_w2__seed0", RUNNING, 1000),
            TrialSnapshot("pack001", RUNNING, 1000, members=4),
            TrialSnapshot("grid_vboot_vstep_now2__seed0", DONE, 1000),
            TrialSnapshot("grid_vboot_vstep_now2__seed1", FAILED, 1000),
        ],
        now=0.0,
    )
    grid.report("grid_vboot_vstep_w2__seed0", 300, 0.123456, 10.0)
    grid.report("pack001", 50, None, 10.0)  # a pack reports no loss
    console = _recorded_console()
    console.print(live_view.render(grid, now=12.0, elapsed=75.0))
    lines = console.export_text().splitlines()
    assert lines[0] == (
        "[ablate] 1/5 done (0 diverged), 1 failed, 2 running, 1 pending | 1m15s elapsed, ETA: measuring"
    )
    assert re.fullmatch(r"  grid_vboot_vstep_w2__seed0 +[━╸╺]+ +step  300/1000 loss 0\.1235 *", lines[1]), lines[1]
    assert re.fullmatch(r"  pack001 \(4 trials\) +[━╸╺]+ +step   50/1000 loss - *", lines[2]), lines[2]
    assert len(lines) == 3  # the finished and failed trials have no bar
    grid.report("grid_vboot_vstep_w2__seed0", 500, 0.1, 20.0)  # 20 steps/s: 500 left, 25 s
    console = _recorded_console()
    console.print(live_view.render(grid, now=20.0, elapsed=83.0))
    # the pack, not measured yet, at that rate: 950 - 10 s x 20 left (37.5 s); the pending trial takes the
    # slot that frees first: 25 s + 1000 steps / 20 = 75 s
    assert console.export_text().splitlines()[0].endswith("1m23s elapsed, ETA: 1m15s")


def test_many_running_trials_are_drawn_up_to_a_screenful():
    grid = GridProgress(30)
    grid.update((TrialSnapshot(f"t{i:02d}", RUNNING, 10) for i in range(25)), 0.0)
    console = _recorded_console()
    console.print(live_view.render(grid, now=0.0, elapsed=0.0))
    lines = console.export_text().splitlines()
    assert len(lines) == 1 + live_view.MOST_BARS + 1 and lines[-1] == "  ... and 5 more running"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_live_view_only_on_a_terminal_and_never_in_ci():
    assert live_view.wants_live_view(_Terminal(), {"TERM": "xterm"})
    assert not live_view.wants_live_view(io.StringIO(), {"TERM": "xterm"})  # a pipe or a log file
    assert not live_view.wants_live_view(_Terminal(), {"TERM": "xterm", "CI": "true"})
    assert live_view.wants_live_view(_Terminal(), {"TERM": "xterm", "CI": "false"})
    assert not live_view.wants_live_view(_Terminal(), {"TERM": "dumb"})


def tune_trial(trial_id: str, status: str, result: dict | None = None, steps: int = 60, members=(), **more):
    """What the callback reads of a Tune trial."""
    spec = {"trial_id": trial_id, "output": "/results/grid", "config": {"train": {"steps": steps}}}
    if members:
        spec["members"] = [{**spec, "trial_id": member} for member in members]
    return SimpleNamespace(config={"trial": spec}, status=status, last_result=result or {}, **more)


# (seconds since the start, the trials Tune lists then); the lines the status line printed before the
# live view existed, byte for byte (`every_seconds` 15: the line at 25 s repeats unchanged counts)
PLAIN_RUN = [
    (0, [tune_trial("a", "PENDING"), tune_trial("b", "PENDING")]),
    (1, [tune_trial("a", "RUNNING"), tune_trial("b", "RUNNING"), tune_trial("before", "TERMINATED")]),
    (5, [tune_trial("a", "RUNNING", {"phase": "train", "step": 20}), tune_trial("before", "TERMINATED")]),
    (25, [tune_trial("a", "RUNNING", {"phase": "train", "step": 40}), tune_trial("before", "TERMINATED")]),
    (
        40,
        [
            tune_trial("a", "TERMINATED", {"phase": "done", "status": "diverged"}),
            tune_trial("b", "RUNNING", {"phase": "train", "step": 55}),
            tune_trial("before", "TERMINATED"),
            tune_trial("pack000", "RUNNING", {"phase": "train", "step": 10}, members=["m1", "m2"]),
        ],
    ),
    (
        80,
        [
            tune_trial("a", "TERMINATED", {"status": "diverged"}),
            tune_trial("b", "ERROR"),
            tune_trial("before", "TERMINATED"),
            tune_trial("pack000", "TERMINATED", {"status": "ok"}),
            tune_trial("c", "TERMINATED", {"status": "failed"}),  # the worker's: failed for good
            tune_trial("d", "TERMINATED", {"status": "ok"}),
        ],
    ),
]
PLAIN_LINES = [
    "[ablate] 0/6 trials done (0 diverged), 0 running, 0 failed | 0s elapsed, ETA ?",
    "[ablate] 1/6 trials done (0 diverged), 2 running, 0 failed | 1s elapsed, ETA 5s",
    "[ablate] 1/6 trials done (0 diverged), 1 running, 0 failed | 25s elapsed, ETA 2m05s | a step 40/60",
    "[ablate] 2/6 trials done (1 diverged), 2 running, 0 failed | 40s elapsed, ETA 1m20s | b step 55/60, "
    "pack000 step 10/60",
    "[ablate] c failed at step 3: E; the same as before, so not retried (traceback: {folder}/logs/c.log)",
    "[ablate] 4/6 trials done (1 diverged), 0 running, 2 failed | 1m20s elapsed, done",
]


def play(view: progress.ProgressView, clock: list[float], run=PLAIN_RUN) -> None:
    for seconds, trials in run:
        clock[0] = 1000.0 + seconds
        if seconds == 80:
            view.on_trial_result(0, trials, trials[4], {"phase": "done", "step": 3, "status": "failed", "error": "E"})
        view.on_step_end(0, trials)


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    return now


def test_off_a_terminal_the_status_lines_are_as_before(tmp_path, clock, capsys):
    view = progress.ProgressView(6, tmp_path, max_failures=2)
    assert view.display is None  # pytest's captured stdout is no terminal
    play(view, clock)
    assert capsys.readouterr().out.splitlines() == [line.format(folder=tmp_path) for line in PLAIN_LINES]


def test_on_a_terminal_the_live_view_draws_bars_and_what_is_said_scrolls_above_it(tmp_path, clock, capsys):
    view = progress.ProgressView(6, tmp_path, max_failures=2)
    console, ray_says = _recorded_console(), logging.getLogger("ray.test_progress_view")
    terminal = logging.StreamHandler(sys.stderr)  # as Ray's own handler: made before the view
    ray_says.addHandler(terminal)
    view.display = live_view.LiveDisplay(console, every_seconds=0.0, loggers=["ray.test_progress_view"])
    for seconds, step in ((10, 100), (20, 200), (30, 300)):
        clock[0] = 1000.0 + seconds
        running = [tune_trial("a", "RUNNING", steps=600), tune_trial("pk", "RUNNING", steps=600, members=["x", "y"])]
        view.on_trial_result(0, running, running[0], {"phase": "train", "step": step, "loss": 2.0 / step})
        view.on_trial_result(0, running, running[1], {"phase": "train", "step": step // 2, "status": "running"})
        view.on_step_end(0, running)
    failures.start_attempt(tmp_path, "pk", "node", "10.0.0.3")
    failures.record_failure(tmp_path, "pk", ValueError("boom"), 150)
    view.on_trial_recover(0, running, tune_trial("pk", "RUNNING", num_failures=1, latest_checkpoint_result=None))
    ray_says.warning("Stop signal received")
    view.on_step_end(0, [tune_trial("a", "TERMINATED"), tune_trial("pk", "ERROR", members=["x", "y"])])
    # Tune ends an interrupted run's trials before it says the run ended: that is no news of them
    view.on_experiment_end([tune_trial(t, "TERMINATED") for t in ("a", "pk", "b", "c", "d", "e")])
    ray_says.removeHandler(terminal)
    assert view.display.live is None and terminal.stream is sys.stderr  # the terminal handed back
    assert capsys.readouterr() == ("", "")  # all of it on the live console
    drawn = console.export_text()
    assert re.search(r"  a +[━╸╺]+ +step 300/600 loss 0\.006667", drawn), drawn
    assert re.search(r"  pk \(2 trials\) +[━╸╺]+ +step 150/600 loss -", drawn), drawn
    assert "10s elapsed, ETA: measuring" in drawn  # one report each: no rate yet
    # a: 300 steps left at 10/s (30 s), pk: 450 at 5/s (90 s); the 4 trials to come, 600 steps at the
    # mean 7.5/s (80 s), take the first slot to free up: 30+80+80 = 190 s and 90+80+80 = 250 s
    assert "30s elapsed, ETA: 4m10s" in drawn
    assert "[ablate] pk failed at step 150: ValueError: boom" in drawn and "(attempt 2 of 3)" in drawn
    assert "Stop signal received\n" in drawn
    assert drawn.rstrip().splitlines()[-1].startswith("[ablate] 1/6 done (0 diverged), 1 failed, 0 running, 4 pending")


def test_a_view_pickled_by_an_older_ablate_resumes(tmp_path, clock, capsys):
    # what tuner.pkl held before the failure lines (no results folder, no retry budget), and before the
    # live view (no grid, no display): Tune's `--resume` runs that one
    for old_state in (
        {"total": 6, "every_seconds": 15.0, "start": 0.0, "done_before": 2, "last_counts": (2, 0, 0), "last_time": 0},
        {"total": 6, "output": tmp_path, "max_failures": 2, "every_seconds": 15.0, "start": 0.0, "failed": {"x"}},
    ):
        old = progress.ProgressView.__new__(progress.ProgressView)
        old.__dict__.update(old_state)
        restored, clock[0] = pickle.loads(pickle.dumps(old)), 1000.0
        restored.setup()  # Tune's, at the start of the resumed run
        failures.start_attempt(tmp_path, "b", "node", "10.0.0.3")
        failures.record_failure(tmp_path, "b", ValueError("boom"), 7)
        trial = tune_trial("b", "RUNNING", num_failures=1, max_failures=2, latest_checkpoint_result=None)
        trial.config["trial"]["output"] = str(tmp_path)
        restored.on_trial_recover(0, [], trial)
        assert capsys.readouterr().out == (
            "[ablate] b failed at step 7: ValueError: boom; retrying from step 0 (attempt 2 of 3)\n"
        )
        assert restored.output == tmp_path and restored.max_failures == 2
        play(restored, clock)
        assert capsys.readouterr().out.splitlines()[-1] == PLAIN_LINES[-1]


def test_a_view_on_a_terminal_pickles_without_its_live_region(tmp_path):
    view = progress.ProgressView(3, tmp_path, max_failures=1)
    view.display = live_view.LiveDisplay(_recorded_console())
    view.display.show("drawn", time.monotonic())
    restored = pickle.loads(pickle.dumps(view))
    view.display.close()
    assert (restored.total, restored.output, restored.max_failures) == (3, tmp_path, 1)
    assert restored.display is None and isinstance(restored.grid, GridProgress)  # no terminal here


def test_a_packs_trials_count_once_and_show_their_number(tmp_path):
    view = progress.ProgressView(2, Path(tmp_path), max_failures=0)
    pack = tune_trial("pack000", "RUNNING", steps=80, members=["m0", "m1", "m2"])
    assert view._snapshot(pack) == TrialSnapshot("pack000", RUNNING, 80, members=3)
    assert view._snapshot(tune_trial("lone", "TERMINATED", {"status": "diverged"})).state == DIVERGED
