"""How much can a few-step objective win on the latent world at all? (Issue 12.)

Samples one next frame from a clean previous frame with K Euler steps of the *exact* flow (the closed-form
posterior mean over the simulator's ring of modes, told d = d_min as the flow baseline is) and prints its
validity and mode TV per K, for the experiment's world first and a few neighbours. No trained flow model
does better, so 1 - validity at K is the ceiling on what shortcut forcing can gain over plain flow at K.

    python benchmarks/latent_exact_flow.py [--n 8192] [--k-max 64]
"""

from __future__ import annotations

import argparse

import torch

from ablate.objective import ShortcutForcing
from ablate.tasks.latent_world import LatentWorldTask

WORLDS = [  # (modes, radius, jitter): the experiment's world first
    (3, 0.3, 0.05),
    (3, 0.25, 0.03),
    (3, 0.35, 0.05),
    (3, 0.3, 0.06),
    (2, 0.3, 0.05),
    (4, 0.3, 0.05),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8192, help="frames per world")
    parser.add_argument("--k-max", type=int, default=64)
    args = parser.parse_args()
    objective = ShortcutForcing(k_max=args.k_max)
    steps = list(objective.step_counts)
    print(f"exact-flow validity (mode TV) of one generated frame, {args.n} frames per world")
    print(f"{'modes':>5} {'radius':>6} {'jitter':>6} | " + " ".join(f"{'K=' + str(k):>12}" for k in steps))
    for modes, radius, jitter in WORLDS:
        task = LatentWorldTask(modes=modes, radius=radius, jitter=jitter)
        result = task.exact_flow_validity(objective, steps, args.n, torch.Generator().manual_seed(0))
        cells = " ".join(f"{result[k]['valid']:>5.3f} ({result[k]['mode_tv']:.3f})" for k in steps)
        print(f"{modes:>5} {radius:>6} {jitter:>6} | {cells}")


if __name__ == "__main__":
    main()
