"""2-D toy distributions: the cheapest task where one-step shortcut sampling visibly beats flow matching.

A flow-matching model sampled in one step returns E[x1 | noise] = the data mean, a single blob; a shortcut
model has learned the one-step jump. The samples are scored by whether they land in the data's support and
in its proportions (`structure`, `precision`, `coverage`: see `support_regions`), and by exact W2 and the
energy distance to a fixed reference set of real points; `*_floor` (a second real set vs the reference)
says what a perfect sampler scores with this many points, and `reference_scores` what a blurred copy of
the data and a structureless box score.
"""

from __future__ import annotations

import functools
import math
import zlib

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor, nn

from ablate.metrics import all_finite, energy_distance, support_scores, wasserstein2
from ablate.tasks import Declarations, Evaluation, Sampler, gate_condition
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


# The data's support, in the data's own (unstandardised) units, and its regions. Each is chosen so that real
# data lands inside (almost) always and a point between two regions is plainly off the support.
CHECKER_MARGIN = 0.05  # checkerboard: inside a square or within 0.05 of it (5 % of a side)
MODE_RADIUS = 3 * 0.1  # 8gaussians: within 3 sigma of a mode (real data: 1 - exp(-4.5) = 98.9 % inside)
MOONS_BAND = 3 * 0.05  # moons: within 3 noise sigmas of an arm's curve
SPIRAL_BAND = 3 * 0.3  # spiral: within 3 noise sigmas of an arm's curve
ARM_SEGMENTS = 4  # moons and spiral: each of the two arms cut into 4 stretches of equal data mass
BLUR_SIGMA = 0.25  # the blurred reference: real points plus N(0, 0.25^2) per coordinate, standardised units


def _checker_squares() -> np.ndarray:
    """Lower-left corners (8, 2) of the checkerboard's unit squares: cells (ix, iy) of the 4x4 board on
    [-2, 2]^2 with ix + iy even (what `_checkerboard` draws)."""
    return np.array([(ix - 2.0, iy - 2.0) for ix in range(4) for iy in range(4) if (ix + iy) % 2 == 0])


def _arm_curves(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """Dense points on the noise-free arms (M, 2) and the region of each (arm * ARM_SEGMENTS + stretch)."""
    if dataset == "moons":
        t = np.linspace(0, math.pi, 2048)
        arms = [np.stack([np.cos(t), np.sin(t)], 1), np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1)]
        stretch = np.minimum((ARM_SEGMENTS * t / math.pi).astype(np.int64), ARM_SEGMENTS - 1)
    else:  # spiral: t = 3 pi sqrt(u) + 0.5 with u uniform, so equal data mass is equal steps in u
        t = np.linspace(0.5, 3 * math.pi + 0.5, 8192)
        arms = [t[:, None] * np.stack([np.cos(t + a), np.sin(t + a)], 1) for a in (0.0, math.pi)]
        u = ((t - 0.5) / (3 * math.pi)) ** 2
        stretch = np.minimum((ARM_SEGMENTS * u).astype(np.int64), ARM_SEGMENTS - 1)
    return np.concatenate(arms), np.concatenate([stretch, stretch + ARM_SEGMENTS])


def support_regions(dataset: str, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each point's nearest region of the data's support and whether it lies inside the support.

    `points` (n, 2) are in the task's standardised coordinates (what the sampler returns); they are mapped
    back to the data's units first. Regions, 8 for every dataset:

    - checkerboard: the 8 unit squares; inside = in a square or within CHECKER_MARGIN (0.05 data units,
      0.043 standardised) of it.
    - 8gaussians: the 8 modes (sigma 0.1); inside = within MODE_RADIUS = 3 sigma of the nearest mode.
    - moons, spiral: 4 stretches of equal data mass along each of the 2 arms; inside = within 3 noise
      sigmas (0.15 for moons, 0.9 for the spiral) of the nearest point of the noise-free arm.
    """
    mean, scale = _standardisation(dataset)
    raw = np.asarray(points, dtype=np.float64) * scale + mean.double().numpy()
    if dataset == "checkerboard":
        low = _checker_squares()[None]  # (1, 8, 2)
        gap = np.maximum(np.maximum(low - raw[:, None], raw[:, None] - (low + 1)), 0)  # per axis, 0 inside
        distance = np.sqrt(np.square(gap).sum(-1))  # (n, 8): to each square
        return distance.argmin(1), distance.min(1) <= CHECKER_MARGIN
    if dataset == "8gaussians":
        angle = np.arange(8) * (math.pi / 4)
        modes = 2 * np.stack([np.cos(angle), np.sin(angle)], 1)
        distance = np.sqrt(np.square(raw[:, None] - modes[None]).sum(-1))
        return distance.argmin(1), distance.min(1) <= MODE_RADIUS
    curve, labels = _arm_curves(dataset)
    distance, nearest = _curve_tree(dataset).query(raw)
    return labels[nearest], distance <= (MOONS_BAND if dataset == "moons" else SPIRAL_BAND)


@functools.cache
def _curve_tree(dataset: str) -> cKDTree:
    return cKDTree(_arm_curves(dataset)[0])


@functools.cache
def region_shares(dataset: str) -> np.ndarray:
    """The data's share of each support region (8,), from 100,000 real points inside the support."""
    points = sample_dataset(dataset, 100_000, torch.Generator().manual_seed(dataset_seed(dataset, 3))).numpy()
    regions, inside = support_regions(dataset, points)
    counts = np.bincount(regions[inside], minlength=8).astype(np.float64)
    return counts / counts.sum()


def structure_scores(dataset: str, points: np.ndarray) -> dict[str, float]:
    """precision, coverage and structure (ablate.metrics.support_scores) of standardised points; NaN for
    non-finite points (a diverged sampler), so the trial is marked diverged."""
    points = np.asarray(points, dtype=np.float64)
    if not all_finite(points):
        return {"precision": math.nan, "coverage": math.nan, "structure": math.nan}
    return support_scores(*support_regions(dataset, points), region_shares(dataset))


def _scores(dataset: str, points: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    return {
        "w2": wasserstein2(points, reference),
        "energy": energy_distance(points, reference),
        **structure_scores(dataset, points),
    }


def _second_real_set(dataset: str, n: int) -> np.ndarray:
    return sample_dataset(dataset, n, torch.Generator().manual_seed(dataset_seed(dataset, 1))).double().numpy()


@functools.cache
def _reference_and_floor(dataset: str, n: int) -> tuple[np.ndarray, dict[str, float]]:
    """The fixed reference set, and a second fixed real set's metrics against it (the noise floor).

    Both sets come from seeds derived from the dataset name, never from the trial, so every trial is
    scored against the same points; cached because the floor's W2 costs as much as one K's.
    """
    reference = sample_dataset(dataset, n, torch.Generator().manual_seed(dataset_seed(dataset))).double().numpy()
    floor = {
        f"{name}_floor": value for name, value in _scores(dataset, _second_real_set(dataset, n), reference).items()
    }
    return reference, floor


@functools.cache
def reference_scores(dataset: str, n: int = 1000) -> dict[str, dict[str, float]]:
    """What each metric gives for three fixed sets of n points, to read a trained model's numbers against:

    - `real`: a second real set (the `*_floor` columns of every evaluation);
    - `blur`: that set plus Gaussian noise of BLUR_SIGMA = 0.25 per coordinate (standardised units): the
      right shape, smeared;
    - `box`: uniform on the bounding square of the reference set (its larger side, centred): no structure.
    """
    reference, _ = _reference_and_floor(dataset, n)
    real = _second_real_set(dataset, n)
    rng = np.random.default_rng(dataset_seed(dataset, 5))
    low, high = reference.min(0), reference.max(0)
    centre, half = (low + high) / 2, (high - low).max() / 2
    sets = {
        "real": real,
        "blur": real + BLUR_SIGMA * rng.standard_normal(real.shape),
        "box": centre + half * rng.uniform(-1, 1, real.shape),
    }
    return {name: _scores(dataset, points, reference) for name, points in sets.items()}


METRIC_DIRECTIONS = {"structure": "max", "precision": "max", "coverage": "max", "w2": "min", "energy": "min"}
# Distances change by factors (log); the support scores are shares of the n_eval samples in [0, 1] (raw).
METRIC_SCALES = {"structure": "raw", "precision": "raw", "coverage": "raw", "w2": "log", "energy": "log"}
SUFFIXES = ("", "_floor", "_blur", "_box")  # each metric, its noise floor, its blur and box references
N_EVAL = 1000


class Toy2DTask:
    """A 2-D point distribution; primary metric `structure` (higher is better), see `support_regions`.

    Why not W2: on the checkerboard at 1000 points a second real set scores W2 0.202, a blurred copy of
    it (sigma 0.25) 0.234 and a uniform box over the data's square 0.304, while a model that draws one
    rounded filled square scored 0.23 and a model with hollow squares (points piled on the edges) 0.176,
    below the real set: W2 cannot tell the blur or the box from the data. `structure` (the share of
    samples in the data's regions, each counted up to its data share) gives real 0.975, blur 0.691,
    box 0.573 and a half-collapsed sampler (4 of the 8 squares) 0.5, so neither a blur nor a box nor a
    collapse passes for quality. It is blind to the density inside a region (hollow squares score
    like filled ones): W2, energy and the samples' picture stay next to it.
    """

    sample_format = "points"
    lead_dims = 1
    primary_metric = "structure"
    # each metric, its noise floor (a second real set) and its blur and box references (reference_scores)
    metric_directions = {
        name + suffix: direction for name, direction in METRIC_DIRECTIONS.items() for suffix in SUFFIXES
    }
    metric_scales = {name + suffix: scale for name, scale in METRIC_SCALES.items() for suffix in SUFFIXES}
    # The flow baseline at K = k_max must put 90 % of its samples in the support and hit the regions in
    # about the data's shares (docs/learnability.md; benchmarks/learnability.py).
    learnability_gate = [gate_condition("precision", ">=", 0.9), gate_condition("coverage", ">=", 0.9)]
    max_samples = 2000

    def __init__(
        self,
        dataset: str = "checkerboard",
        n_eval: int = N_EVAL,
        hidden: int = 128,
        depth: int = 3,
        layer_norm: bool = True,
        fourier: int = 4,
        precondition: bool = True,
    ) -> None:
        """Datasets: checkerboard, 8gaussians, moons, spiral. `hidden`/`depth`: width and residual blocks of the MLP;
        `layer_norm`, `fourier` (Fourier features of the input, 0 for none) and `precondition` (EDM's c_skip and
        c_out around the network): see ablate.tasks.models.ResidualMLP. Without the last two the flow baseline
        did not draw the checkerboard's squares in 3000-20000 steps (see docs/learnability.md).

        `n_eval` points per K (at most 2000 are kept as samples). Exact W2 costs ~0.2 s at 1000 points and
        ~1 s at 2000 (network simplex, roughly cubic), so 2000 lowers the noise floor (W2 ~0.2 -> ~0.12) at
        the price of ~7 s instead of ~2 s per evaluation over K = 1..64.
        """
        if dataset not in DATASETS:
            raise ValueError(f"dataset={dataset!r} is unknown; choose one of {', '.join(DATASETS)}")
        if n_eval < 2:
            raise ValueError(f"n_eval={n_eval!r} must be at least 2")
        if not isinstance(fourier, int) or isinstance(fourier, bool) or fourier < 0:
            raise ValueError(f"fourier={fourier!r} must be an integer >= 0")
        self.name = f"toy2d-{dataset}"
        self.dataset, self.n_eval, self.hidden, self.depth = dataset, n_eval, hidden, depth
        self.layer_norm, self.fourier, self.precondition = layer_norm, fourier, precondition
        self.share_metrics = self.declare(n_eval=n_eval).share_metrics

    @classmethod
    def declare(cls, n_eval: int = N_EVAL, **_other_params) -> Declarations:
        """The task's declarations (ablate.tasks.Task) for these task params, without building it: every
        support score, its floor and its references are shares of n_eval points."""
        shares = {
            name + suffix: n_eval for name, scale in METRIC_SCALES.items() if scale == "raw" for suffix in SUFFIXES
        }
        return Declarations(dict(cls.metric_scales), shares, list(cls.learnability_gate))

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, dict]:
        return sample_dataset(self.dataset, batch_size, generator), {}

    def make_model(self) -> nn.Module:
        return ResidualMLP(2, self.hidden, self.depth, self.layer_norm, self.fourier, self.precondition)

    def evaluate(self, sampler: Sampler, steps: list[int], generator: torch.Generator) -> Evaluation:
        """Structure, precision, coverage, W2 and energy distance per K, all K from one noise draw so they
        differ only by the sampler; the reference set goes along as the real data of the figures."""
        reference, floor = _reference_and_floor(self.dataset, self.n_eval)
        wrong = reference_scores(self.dataset, self.n_eval)
        constants = floor | {f"{m}_{kind}": value for kind in ("blur", "box") for m, value in wrong[kind].items()}
        noise = torch.randn(self.n_eval, 2, generator=generator)
        metrics, samples = {}, {}
        for k in steps:
            x = sampler(noise, k).double().cpu().numpy()
            metrics[k] = {**_scores(self.dataset, x, reference), **constants}
            samples[k] = x[: self.max_samples].astype(np.float32)
        return Evaluation(metrics, samples, real=reference[: self.max_samples].astype(np.float32))
