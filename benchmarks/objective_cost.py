"""What does shortcut forcing cost over plain flow matching, per training step? (Issue: no wasted work.)

A training step of each variant pays one student forward+backward plus two no-grad teacher forwards over
the bootstrap rows, so the least it can cost relative to a flow-only step is

    floor = 1 + 2 * f_boot * t_forward / t_forward_backward

(f_boot = share of bootstrap rows). This script times, in one run and interleaved, a full training step
(forward, backward, Adam) of a flow-only objective and of every variant, plus one forward (no grad) and
one forward+backward of the model, and prints ratio = t_variant / t_flow next to the floor.

    python benchmarks/objective_cost.py [--batch 1024] [--width 512] [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from ablate.objective import ShortcutForcing, Variant
from ablate.tasks.embedding import LevelEmbedding


class MLP(nn.Module):
    """A small x-predictor: 4 hidden layers, (tau, d) embedding added to the first hidden layer."""

    def __init__(self, features: int, width: int) -> None:
        super().__init__()
        self.embed = LevelEmbedding(width)
        self.inp = nn.Linear(features, width)
        self.body = nn.Sequential(*[m for _ in range(3) for m in (nn.SiLU(), nn.Linear(width, width))])
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(width, features))

    def forward(self, z, tau, d):
        return self.out(self.body(self.inp(z) + self.embed(tau, d)))


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--k-max", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = MLP(args.features, args.width)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x1 = torch.randn(args.batch, args.features)
    generator = torch.Generator().manual_seed(0)

    def step_of(objective: ShortcutForcing):
        def step():
            tau, d = objective.sample_tau_d((args.batch,), generator=generator)
            out = objective.loss(model, x1, torch.randn(x1.shape, generator=generator), tau, d)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()

        return step

    tau, d = ShortcutForcing(k_max=args.k_max).sample_tau_d((args.batch,), generator=generator)

    def forward():
        with torch.no_grad():
            model(x1, tau, d)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        model(x1, tau, d).square().mean().backward()

    flow = ShortcutForcing(Variant.paper(), k_max=args.k_max, bootstrap_fraction=0.0)
    variants = {v.label: ShortcutForcing(v, k_max=args.k_max) for v in Variant.all()}
    probe = ShortcutForcing(k_max=args.k_max).sample_tau_d((200_000,), generator=torch.Generator().manual_seed(1))[1]
    f_boot = (probe > 1 / args.k_max).float().mean().item()

    for fn in [forward, forward_backward, step_of(flow), *map(step_of, variants.values())]:
        median_seconds(fn, 3)  # warm-up
    # interleave the measurements so drift in machine load hits every row alike
    samples: dict[str, list[float]] = {name: [] for name in ["forward", "forward_backward", "flow", *variants]}
    fns = {
        "forward": forward,
        "forward_backward": forward_backward,
        "flow": step_of(flow),
        **{name: step_of(obj) for name, obj in variants.items()},
    }
    for _ in range(args.repeats):
        for name, fn in fns.items():
            samples[name].append(median_seconds(fn, 1))
    t = {name: statistics.median(values) for name, values in samples.items()}

    floor = 1 + 2 * f_boot * t["forward"] / t["forward_backward"]
    print(
        f"MLP {args.features}->{args.width}x4, batch {args.batch}, k_max {args.k_max}, {args.threads} thread(s); "
        f"f_boot = {f_boot:.3f}"
    )
    print(
        f"forward {t['forward'] * 1e3:.2f} ms, forward+backward {t['forward_backward'] * 1e3:.2f} ms, "
        f"flow-only step {t['flow'] * 1e3:.2f} ms; floor = {floor:.3f}"
    )
    print(f"{'variant':<26}{'step ms':>9}{'vs flow':>9}{'vs floor':>10}")
    for name in variants:
        ratio = t[name] / t["flow"]
        print(f"{name:<26}{t[name] * 1e3:>9.2f}{ratio:>9.3f}{ratio / floor:>10.3f}")


if __name__ == "__main__":
    main()
