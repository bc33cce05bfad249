"""How well does the Ray Tune runner use the machine? (Issue: runner, benchmark.)

Runs an experiment's trials twice: one after another in this process (no Ray), then through
`ablate.runner.run_experiment` with its resources per trial. Prints

    scheduling efficiency = sum of trial compute time / (Tune wall time x slots)

where a trial's compute time is its own train + evaluation seconds as measured inside the Ray run,
and slots = how many trials fit at once (CPUs / cpu per trial). Target: >= 0.85 on 2 cores.

    python benchmarks/grid_throughput.py [experiments/quickstart.yaml] [--limit N]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import pandas as pd

from ablate.experiment import load_experiment
from ablate.runner import run_experiment
from ablate.trial import run_trial


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", nargs="?", default="experiments/quickstart.yaml")
    parser.add_argument("--limit", type=int, help="use only the first N trials of the matrix")
    args = parser.parse_args()
    experiment = load_experiment(args.experiment)
    if args.limit:
        experiment.trials = experiment.trials[: args.limit]
    slots = max(1, int((os.cpu_count() or 1) // experiment.resources["cpu"]))
    if experiment.max_concurrent:
        slots = min(slots, experiment.max_concurrent)

    start = time.perf_counter()
    for trial in experiment.trials:
        run_trial(dataclasses.replace(trial.config, threads=1))
    sequential = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        outcome = run_experiment(experiment, os.path.join(folder, "run"), verbose=False)
        total = time.perf_counter() - start
        trials = pd.read_csv(os.path.join(folder, "run", "trials.csv"))
    compute = float((trials["train_seconds"] + trials["eval_seconds"]).sum())
    efficiency = compute / (outcome.fit_seconds * slots)
    print(f"{len(experiment.trials)} trials of {args.experiment}, {slots} slots")
    print(f"one after another in one process: {sequential:.1f} s")
    print(
        f"through Ray Tune: {outcome.fit_seconds:.1f} s for the Tune run, {total:.1f} s with Ray start-up "
        f"and tables; speed-up {sequential / total:.2f}x"
    )
    print(f"sum of trial compute time inside Ray: {compute:.1f} s")
    print(f"scheduling efficiency = {compute:.1f} / ({outcome.fit_seconds:.1f} x {slots}) = {efficiency:.3f}")


if __name__ == "__main__":
    main()
