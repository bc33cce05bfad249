"""`ablate run` of a study in rounds: one Tune run per round, a look after each, until it is decided.

Every round is its own Tune experiment (``ray/round<k>``) over the new seeds' trials, writing its trial
records into the same ``trials/`` folder as every other run, so the tables, `ablate report`, `ablate merge`
and packs see one study. After a round has finished (every trial has a record, or was given up on), the
opening's family is tested by the sequential procedure on the looks so far
(:func:`ablate.analysis.sequential.sequential_family`) at the run's primary metric and K, the look is
added to run.json's ``sequential`` entry, and the study stops when every main effect is decided or at its
maximum of seeds. `--resume` continues from the looks run.json records: the current round's Tune run is
restored (finished trials return at once), then the rounds after it follow.
"""

from __future__ import annotations

import json

from ablate import records, results
from ablate.analysis.sequential import look_record, sequential_family
from ablate.experiment import Experiment
from ablate.report.context import resolve_primary
from ablate.rounds import RECORD, SeedRounds, recorded_looks, round_trials, through_look
from ablate.runner import Driver, RunOutcome


def run_rounds(experiment: Experiment, driver: Driver) -> RunOutcome:
    """Run the rounds not yet looked at, a look after each, and return the last round's outcome (its
    ``interrupted``: the round has trials that neither finished nor were given up on)."""
    rounds = experiment.rounds
    looks = recorded_looks(results.read_run(driver.output)) if (driver.output / "run.json").is_file() else []
    if looks and (looks[-1]["stop"] or len(looks) >= len(rounds.looks)):  # resumed after it stopped: done
        outcome = driver.write(through_look(experiment, len(looks) - 1), {})
        outcome.interrupted = False
        return outcome
    failed: dict[str, dict] = {}
    fit_seconds = 0.0
    for look in range(len(looks), len(rounds.looks)):
        new = round_trials(experiment, look)
        seeds = sorted({t.seed for t in new.trials})
        _say(
            driver,
            f"round {look + 1} of at most {len(rounds.looks)}: seeds {seeds[0]}-{seeds[-1]}, {len(new.trials)} trials",
        )
        outcome, failed = driver.fit(new, through_look(experiment, look), f"round{look + 1}", True, failed)
        fit_seconds += outcome.fit_seconds
        outcome.fit_seconds = fit_seconds
        done = records.record_names(driver.output) | set(failed)
        outcome.interrupted = any(t.trial_id not in done for t in new.trials)
        if outcome.interrupted:
            return outcome
        record = _look(driver, rounds, look)
        _say(driver, _look_line(record))
        if record["stop"]:
            break
    return outcome


def _look(driver: Driver, rounds: SeedRounds, look: int) -> dict:
    """Test the family on the looks so far, and add this look to run.json."""
    study = results.load(driver.output)
    seeds = rounds.seeds(look)
    if study.metrics.empty:
        record = {"look": look + 1, "seeds": seeds, "stop": True, "reason": "no trial finished with metrics"}
    else:
        metric, steps, _ = resolve_primary(study, None, None)
        looks = [rounds.seeds(k) for k in range(look + 1)]
        record = look_record(sequential_family(study, metric, steps, looks, rounds.looks), look, seeds, rounds.looks)
    run = results.read_run(driver.output)
    run[RECORD]["looks"] = [*recorded_looks(run), record]
    results.write_text(driver.output / "run.json", json.dumps(run, default=str, indent=2))
    return record


def _look_line(record: dict) -> str:
    resolved = record.get("resolved") or []
    found = f"resolved {', '.join(f'`{label}`' for label in resolved)}; " if resolved else ""
    verdict = f"stopped: {record['reason']}" if record["stop"] else f"{record['reason']}; another round"
    return f"look {record['look']} ({len(record['seeds'])} seeds): {found}{verdict}"


def _say(driver: Driver, line: str) -> None:
    if driver.verbose:
        print(f"[ablate] {line}", flush=True)
