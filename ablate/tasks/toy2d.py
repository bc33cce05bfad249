"""2-D toy distributions: the cheapest task where one-step shortcut sampling visibly beats flow matching.

A flow-matching model sampled in one step returns E[x1 | noise] = the data mean, a single blob; a shortcut
model has learned the one-step jump. Exact W2 between the samples and a fixed reference set of real points
measures that gap honestly, and `*_floor` (a second real set vs the reference) says how close to zero a
perfect sampler can get with this many points.
"""

from __future__ import annotations

import functools
import math
import zlib

import numpy as np
import torch
from torch import Tensor, nn

from ablate.metrics import energy_distance, wasserstein2
from ablate.tasks import Evaluation, Sampler
from ablate.tasks.models import ResidualMLP


def _checkerboard(n: int, g: torch.Generator) -> Tensor:
    """8 squares of a 4x4 board on [-2, 2]^2."""
    x = 4 * torch.rand(n, generator=g) - 2
    y = torch.rand(n, generator=g) - 2 * torch.randint(0, 2, (n,), generator=g) + torch.floor(x) % 2
    return torch.stack([x, y], 1)


def _eight_gaussians(n: int, g: torch.Generator) -> Tensor:
    angle = torch.randint(0, 8, (n,), generator=g) * (math.pi / 4)
    centers = 2 * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    return centers + 0.1 * torch.randn(n, 2, generator=g)


def _two_moons(n: int, g: torch.Generator) -> Tensor:
    t = math.pi * torch.rand(n, generator=g)
    lower = torch.randint(0, 2, (n,), generator=g).bool()
    x = torch.where(lower, 1 - torch.cos(t), torch.cos(t))
    y = torch.where(lower, 0.5 - torch.sin(t), torch.sin(t))
    return torch.stack([x, y], 1) + 0.05 * torch.randn(n, 2, generator=g)


def _spiral(n: int, g: torch.Generator) -> Tensor:
    """Two interleaved arms; sqrt keeps the density along the arm roughly uniform per unit length."""
    t = 3 * math.pi * torch.sqrt(torch.rand(n, generator=g)) + 0.5
    arm = torch.randint(0, 2, (n,), generator=g) * math.pi
    points = t.unsqueeze(1) * torch.stack([torch.cos(t + arm), torch.sin(t + arm)], 1)
    return points + 0.3 * torch.randn(n, 2, generator=g)


DATASETS = {"checkerboard": _checkerboard, "8gaussians": _eight_gaussians, "moons": _two_moons, "spiral": _spiral}


def dataset_seed(dataset: str, offset: int = 0) -> int:
    """A fixed seed per dataset name (crc32 is stable across processes, unlike hash())."""
    return zlib.crc32(dataset.encode()) + offset


@functools.cache
def _standardisation(dataset: str) -> tuple[Tensor, float]:
    """Mean and one isotropic scale (so shapes keep their aspect) from a large fixed-seed sample."""
    points = DATASETS[dataset](200_000, torch.Generator().manual_seed(dataset_seed(dataset, 7)))
    mean = points.mean(0)
    return mean, float((points - mean).square().mean().sqrt())


def sample_dataset(dataset: str, n: int, generator: torch.Generator) -> Tensor:
    """n points (n, 2), float32, centred and scaled to unit variance per coordinate on average."""
    mean, scale = _standardisation(dataset)
    return (DATASETS[dataset](n, generator) - mean) / scale


@functools.cache
def _reference_and_floor(dataset: str, n: int) -> tuple[np.ndarray, dict[str, float]]:
    """The fixed reference set, and a second fixed real set's metrics against it (the noise floor).

    Both sets come from seeds derived from the dataset name, never from the trial, so every trial is
    scored against the same points; cached because the floor's W2 costs as much as one K's.
    """
    reference = sample_dataset(dataset, n, torch.Generator().manual_seed(dataset_seed(dataset))).double().numpy()
    fresh = sample_dataset(dataset, n, torch.Generator().manual_seed(dataset_seed(dataset, 1))).double().numpy()
    floor = {"w2_floor": wasserstein2(fresh, reference), "energy_floor": energy_distance(fresh, reference)}
    return reference, floor


class Toy2DTask:
    """A 2-D point distribution; primary metric exact W2 to a fixed reference set (lower is better)."""

    sample_format = "points"
    lead_dims = 1
    primary_metric = "w2"
    metric_directions = {"w2": "min", "energy": "min", "w2_floor": "min", "energy_floor": "min"}
    max_samples = 2000

    def __init__(self, dataset: str = "checkerboard", n_eval: int = 1000, hidden: int = 128, depth: int = 3) -> None:
        if dataset not in DATASETS:
            raise ValueError(f"dataset={dataset!r} is unknown; choose one of {', '.join(DATASETS)}")
        if n_eval < 2:
            raise ValueError(f"n_eval={n_eval!r} must be at least 2")
        self.name = f"toy2d-{dataset}"
        self.dataset, self.n_eval, self.hidden, self.depth = dataset, n_eval, hidden, depth

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, dict]:
        return sample_dataset(self.dataset, batch_size, generator), {}

    def make_model(self) -> nn.Module:
        return ResidualMLP(2, self.hidden, self.depth)

    def evaluate(self, sampler: Sampler, steps: list[int], generator: torch.Generator) -> Evaluation:
        """W2 and energy distance per K, all K from one noise draw so they differ only by the sampler."""
        reference, floor = _reference_and_floor(self.dataset, self.n_eval)
        noise = torch.randn(self.n_eval, 2, generator=generator)
        metrics, samples = {}, {}
        for k in steps:
            x = sampler(noise, k).double().cpu().numpy()
            metrics[k] = {"w2": wasserstein2(x, reference), "energy": energy_distance(x, reference), **floor}
            samples[k] = x[: self.max_samples].astype(np.float32)
        return Evaluation(metrics, samples)


def make_toy2d_task(dataset: str = "checkerboard", n_eval: int = 1000, hidden: int = 128, depth: int = 3) -> Toy2DTask:
    """Datasets: checkerboard, 8gaussians, moons, spiral. `hidden`/`depth`: width and residual blocks of the MLP.

    `n_eval` points per K (at most 2000 are kept as samples). Exact W2 costs ~0.2 s at 1000 points and
    ~1 s at 2000 (network simplex, roughly cubic), so 2000 lowers the noise floor (W2 ~0.2 -> ~0.12) at
    the price of ~7 s instead of ~2 s per evaluation over K = 1..64.
    """
    return Toy2DTask(dataset, n_eval, hidden, depth)
