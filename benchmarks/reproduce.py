"""Does the code checked out now reproduce trials of an earlier run? Before `ablate merge --mixed-code`.

Re-trains trials of a results folder from the config stored in their records, in this process on the
thread count each config names, and prints the largest relative difference between the new metrics and
the stored ones. 0 means bit for bit: the commits between the two runs did not change that trial's
numbers. By default the paper, simplified and baseline cells of the folder's lowest seed.

    python benchmarks/reproduce.py RESULTS_FOLDER [TRIAL_ID ...]

Exit status 0 when every trial reproduces exactly, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time

from ablate.records import read_trial_records
from ablate.results import load
from ablate.trial import run_trial


def default_trials(folder: str) -> list[str]:
    results = load(folder)
    seed = min(results.seeds)
    cells = [results.paper_variant, results.simplified_variant, results.baseline_variant]
    return [f"{cell}__seed{seed}" for cell in cells if cell]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("trials", nargs="*", help="trial ids (default: paper, simplified, baseline; lowest seed)")
    args = parser.parse_args(argv)
    records = read_trial_records(args.folder)
    exact = True
    for trial_id in args.trials or default_trials(args.folder):
        if trial_id not in records:
            print(f"{trial_id}: no record in {args.folder}")
            exact = False
            continue
        record = records[trial_id]
        start = time.perf_counter()
        result = run_trial(record["config"])
        seconds = time.perf_counter() - start
        then = (record["status"], record.get("diverged_step"))
        if (result.status, result.diverged_step) != then:
            print(
                f"{trial_id}: {result.status} at {result.diverged_step}, was {then[0]} at {then[1]} ({seconds:.0f} s)"
            )
            exact = False
            continue
        worst = max(
            (
                abs(result.metrics[int(k)][name] - old) / max(abs(old), 1e-12)
                for k, per_k in record["metrics"].items()
                for name, old in per_k.items()
            ),
            default=0.0,
        )
        exact &= worst == 0
        n = sum(len(per_k) for per_k in record["metrics"].values())
        what = f"{result.status} at step {result.diverged_step} as before; " if result.status != "ok" else ""
        print(f"{trial_id}: {what}largest relative difference over {n} metrics {worst:.3g} ({seconds:.0f} s)")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
