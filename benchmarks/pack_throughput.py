"""Trials per hour with and without packing: one grid run twice through the real runner, in one process.

    python benchmarks/pack_throughput.py [EXPERIMENT] [--steps N] [--pack N] [--seeds 0,1]

First, why packing gains little on a CPU: one linear layer for 17 members, as `vmap` batches it (what
a pack runs), as a loop over the members (what separate trials run) and as one `baddbmm`, on one
thread: milliseconds and ratios. Then, on one thread in this process, the experiment's 17 cells trained
as one pack and one by one, in alternating chunks of steps so that other load on the machine hits both
alike: milliseconds per member-step and their ratio. Then the same cells' evaluation, their model calls
batched (what a pack does on a GPU) and member by member (what it does on a CPU). Then the experiment
(default: the quickstart) through the runner, unpacked (`pack: 1`, one trial per process) and packed
(`pack: N`, N trials vectorised in one process), each into a temporary folder: wall time, trials per
hour and the ratio. Both runs use the same Ray session and the same resources per trial (or per pack),
so the ratio is what packing buys on this machine. Not a test: timings vary with load.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import ray
import torch

from ablate.experiment import load_experiment
from ablate.packing import Pack
from ablate.runner import run_experiment
from ablate.trial import Trial


def linear_kernels(members: int = 17, shapes=((256, 128, 128), (512, 64, 64), (512, 64, 256))) -> None:
    """One linear layer per member, (rows, in, out): vmap'd F.linear vs a loop vs one baddbmm."""
    torch.set_num_threads(1)
    linear = torch.nn.functional.linear

    def kernels(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> dict:
        return {
            "vmap": lambda: torch.func.vmap(linear)(x, w, b),
            "loop": lambda: [linear(x[i], w[i], b[i]) for i in range(members)],
            "baddbmm": lambda: torch.baddbmm(b[:, None, :], x, w.transpose(1, 2)),
        }

    for rows, width_in, width_out in shapes:
        x = torch.randn(members, rows, width_in)
        w, b = torch.randn(members, width_out, width_in), torch.randn(members, width_out)
        ms = {}
        for name, kernel in kernels(x, w, b).items():
            kernel()
            start = time.perf_counter()
            for _ in range(50):
                kernel()
            ms[name] = 1000 * (time.perf_counter() - start) / 50
        print(
            f"linear {rows}x{width_in}->{width_out}, {members} members: vmap {ms['vmap']:.2f} ms, loop "
            f"{ms['loop']:.2f} ms, baddbmm {ms['baddbmm']:.2f} ms (vmap / loop {ms['vmap'] / ms['loop']:.2f}x)",
            flush=True,
        )


def per_member_step(experiment_path: str, chunks: int = 5, steps: int = 20) -> None:
    """Milliseconds per member-step, one pack of the experiment's first-seed cells vs the same trials
    one by one, alternating chunks of `steps` steps."""
    torch.set_num_threads(1)
    experiment = load_experiment(experiment_path, ["seeds=[0]", f"train.steps={chunks * steps}"])
    configs = [t.config for t in experiment.trials]
    pack, alone = Pack(configs), [Trial(c) for c in configs]
    packed = separate = 0.0
    for chunk in range(1, chunks + 1):
        start = time.perf_counter()
        pack.train(until=chunk * steps)
        packed += time.perf_counter() - start
        start = time.perf_counter()
        for trial in alone:
            trial.train(until=chunk * steps)
        separate += time.perf_counter() - start
    member_steps = len(configs) * chunks * steps
    print(
        f"one thread, {len(configs)} members: packed {1000 * packed / member_steps:.2f} ms per member-step, "
        f"alone {1000 * separate / member_steps:.2f} ms: {separate / packed:.2f}x",
        flush=True,
    )


def evaluation(experiment_path: str, device: str = "cpu") -> None:
    """Seconds to evaluate the experiment's first-seed cells (after 2 training steps: the cost of
    sampling and scoring does not depend on training), their model calls batched vs member by member."""
    torch.set_num_threads(1)
    experiment = load_experiment(experiment_path, ["seeds=[0]", "train.steps=2"])
    configs = [dataclasses.replace(t.config, device=device) for t in experiment.trials]
    seconds = {}
    for batched in (False, True):
        start = time.perf_counter()
        Pack(configs, batched_evaluation=batched).finish()
        seconds[batched] = time.perf_counter() - start
    print(
        f"evaluation of {len(configs)} cells on {device}: member by member {seconds[False]:.1f} s, batched "
        f"{seconds[True]:.1f} s: {seconds[False] / seconds[True]:.2f}x",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", nargs="?", default="experiments/quickstart.yaml")
    parser.add_argument("--steps", type=int, default=300, help="training steps per trial (train.steps)")
    parser.add_argument("--pack", type=int, default=17, help="trials per pack in the packed run")
    parser.add_argument("--seeds", default="0,1", help="seeds, comma-separated")
    args = parser.parse_args()
    linear_kernels()
    per_member_step(args.experiment)
    evaluation(args.experiment)
    overrides = [f"train.steps={args.steps}", f"seeds=[{args.seeds}]", "eval.steps=[1,4]"]
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    timings = {}
    try:
        for pack in (1, args.pack):
            experiment = load_experiment(args.experiment, [*overrides, f"pack={pack}"])
            with tempfile.TemporaryDirectory() as folder:
                start = time.perf_counter()
                outcome = run_experiment(experiment, Path(folder) / "out", verbose=False)
                seconds = time.perf_counter() - start
            timings[pack] = (seconds, outcome.finished, len(experiment.packs()))
            print(
                f"pack {pack:>3}: {outcome.finished}/{outcome.expected} trials in {len(experiment.packs())} "
                f"Tune trials, {seconds:.1f} s, {3600 * outcome.finished / seconds:.0f} trials/hour",
                flush=True,
            )
    finally:
        ray.shutdown()
    (alone, _, _), (packed, _, _) = timings[1], timings[args.pack]
    print(f"packed / unpacked trials per hour: {alone / packed:.2f}x ({args.steps} steps per trial)")


if __name__ == "__main__":
    main()
