"""How much can a few-step objective win on the sequence world at all? (Issue 6.)

Samples one next frame with K Euler steps of the *exact* flow, whose x-prediction is the posterior mean over
the frames the simulator can reach, and prints its validity (pos_acc) per K. No trained flow model does
better, so 1 - validity at K is the ceiling on what shortcut forcing can gain over plain flow at K steps.

    python benchmarks/sequence_exact_flow.py [--n 4096] [--k-max 16]
"""

from __future__ import annotations

import argparse

import torch

from ablate.objective import ShortcutForcing
from ablate.tasks.sequence import SequenceTask

WORLDS = [  # (size, object_size, slip): the experiment's world first
    (8, 2, 0.5),
    (8, 1, 0.5),
    (16, 2, 0.5),
    (8, 2, 1.0),
    (8, 1, 1.0),
    (8, 2, 0.0),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096, help="frames per world")
    parser.add_argument("--k-max", type=int, default=16)
    args = parser.parse_args()
    objective = ShortcutForcing(k_max=args.k_max)
    steps = list(objective.step_counts)
    print(f"exact-flow validity of one generated frame, {args.n} frames per world")
    print(f"{'size':>4} {'object':>6} {'slip':>4} | " + " ".join(f"{'K=' + str(k):>6}" for k in steps))
    for size, object_size, slip in WORLDS:
        task = SequenceTask(size=size, object_size=object_size, slip=slip)
        validity = task.exact_flow_validity(objective, steps, args.n, torch.Generator().manual_seed(0))
        print(f"{size:>4} {object_size:>6} {slip:>4} | " + " ".join(f"{validity[k]:>6.3f}" for k in steps))


if __name__ == "__main__":
    main()
