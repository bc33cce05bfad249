"""Seeds added in rounds until the answer is resolved: the plan, its rounds and what is said of its looks.

``seeds: {start: 2, max: 8, until: resolved}`` (``step`` defaults to ``start``) runs the study in rounds:
round 1 trains seeds 0..start-1, each further round ``step`` more, and after every round the opening's
family is tested by the sequential procedure of :mod:`ablate.analysis.sequential`; the study stops once
every main effect is decided, or at ``max`` seeds. A plain list of seeds keeps its meaning (one round).

This module is the plan (parsed with the experiment, before Ray starts) and its record: run.json's
``sequential`` entry (the plan, the method, and per look its seeds, the alpha spent, each primary
hypothesis' nominal level, what it resolved and whether and why the study stopped), which `--resume`
continues from and the report's opening states in one sentence. The rounds run in
:mod:`ablate.round_runner`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ablate.config import ExperimentError, check_keys, number

if TYPE_CHECKING:  # the experiment module imports this one
    from ablate.experiment import Experiment

KEYS = ("start", "step", "max", "until")
UNTIL = ("resolved",)
RECORD = "sequential"  # run.json's key


@dataclass(frozen=True)
class SeedRounds:
    """A study's rounds of seeds: ``start`` seeds, then ``step`` more per round, up to ``maximum``."""

    start: int
    step: int
    maximum: int
    until: str = "resolved"

    @property
    def looks(self) -> tuple[int, ...]:
        """The seed count at each look: start, start + step, ..., maximum (the last round may be smaller)."""
        return (*range(self.start, self.maximum, self.step), self.maximum)

    def seeds(self, look: int) -> list[int]:
        """The seeds a look (0-based) analyses: the first ``looks[look]``."""
        return list(range(self.looks[look]))

    def spec(self) -> dict:
        """The plan as the resolved spec (experiment.json, run.json ``config``) holds it."""
        return {"start": self.start, "step": self.step, "max": self.maximum, "until": self.until}


def parse_seed_rounds(value: dict) -> SeedRounds:
    """``seeds: {start, max, until[, step]}``, each checked, one line naming the key on any error."""
    check_keys("seeds", value, KEYS)
    for key in ("start", "max", "until"):
        if key not in value:
            raise ExperimentError(
                f"seeds.{key}: missing; seeds in rounds need start, max and until, e.g. "
                "{start: 2, max: 8, until: resolved}"
            )
    start = number("seeds.start", value["start"], integer=True, minimum=2)  # a t over seeds needs two
    step = number("seeds.step", value.get("step", start), integer=True, positive=True)
    maximum = number("seeds.max", value["max"], integer=True)
    if maximum <= start:
        raise ExperimentError(
            f"seeds.max: must be more than seeds.start ({start}) to leave a round to add, got {maximum}"
        )
    if value["until"] not in UNTIL:
        raise ExperimentError(f"seeds.until: {value['until']!r} is not a stopping rule; allowed: {', '.join(UNTIL)}")
    return SeedRounds(start, step, maximum, value["until"])


def through_look(experiment: Experiment, look: int) -> Experiment:
    """The experiment as it stands after ``look`` (0-based): the trials of the seeds analysed there."""
    keep = set(experiment.rounds.seeds(look))
    return dataclasses.replace(experiment, trials=[t for t in experiment.trials if t.seed in keep])


def round_trials(experiment: Experiment, look: int) -> Experiment:
    """The experiment of one round's new trials: what that round's Tune run trains."""
    before = set(experiment.rounds.seeds(look - 1)) if look else set()
    cumulative = through_look(experiment, look)
    return dataclasses.replace(cumulative, trials=[t for t in cumulative.trials if t.seed not in before])


def run_seeds(experiment: Experiment) -> list:
    """run.json's ``seeds``: the file's list, or for a study in rounds the seeds of its trials so far."""
    if experiment.rounds is None:
        return experiment.spec["seeds"]
    return sorted({t.seed for t in experiment.trials})


def held_seeds(spec: dict, run: dict) -> list:
    """The seeds a results folder holds: its file's list, or for a study in rounds (whose spec holds the
    plan) the seeds of the rounds it ran, as its run.json lists them."""
    return (run.get("seeds") or []) if isinstance(spec["seeds"], dict) else spec["seeds"]


def recorded_looks(run: dict) -> list[dict]:
    """The looks a run.json records (none before the first round finished)."""
    return list((run.get(RECORD) or {}).get("looks") or [])


def plan_lines(experiment: Experiment) -> list[str]:
    """What `--dry-run` says of the rounds: seeds and trials per round, and the alpha spent by each look."""
    from ablate.analysis.boundaries import SPENDING, spent  # the statistics only when asked: parsing needs none
    from ablate.analysis.family import ALPHA

    rounds = experiment.rounds
    per_seed = len(experiment.trials) // rounds.maximum
    lines = [
        f"rounds: seeds added until {rounds.until}, start {rounds.start}, step {rounds.step}, at most "
        f"{rounds.maximum} seeds ({len(experiment.trials)} trials); {SPENDING} of the family's {ALPHA:g}:"
    ]
    previous = 0
    for look, size in enumerate(rounds.looks):
        fraction = size / rounds.maximum
        lines.append(
            f"  round {look + 1}: seeds {previous}-{size - 1} ({(size - previous) * per_seed} trials), then look "
            f"{look + 1} at {size} seeds: alpha spent by then {spent(ALPHA, fraction):.3g}"
        )
        previous = size
    return lines


def looks_sentence(run: dict) -> str:
    """The opening's sentence on the rounds: how many looks, at which seed counts, why it stopped, and
    that the claims' alpha was spent across the looks. Empty for a study run at once."""
    record = run.get(RECORD)
    if not record:
        return ""
    looks, plan = recorded_looks(run), record["plan"]
    if not looks:
        return f"Seeds are added in rounds (up to {plan['max']}); no look has been made yet, so nothing is resolved."
    counts = ", ".join(str(len(look["seeds"])) for look in looks)
    made = f"{len(looks)} look{'s' if len(looks) != 1 else ''} ({counts} seeds)"
    last = looks[-1]
    spending = (
        "5 % {} spent across the looks (O'Brien-Fleming-type alpha spending, the family's graph passing alpha on "
        "between looks as in Maurer & Bretz 2013), so each claim quotes its interval at the nominal level of the "
        "look that resolved it"
    )
    if last["stop"]:
        return (
            f"Seeds were added in rounds: {made}; stopped because {last['reason']}; "
            f"the claims' {spending.format('was')}."
        )
    return (
        f"Seeds are being added in rounds: {made} so far, of at most {plan['max']} seeds ({last['reason']}); "
        f"the claims' {spending.format('is')}."
    )
