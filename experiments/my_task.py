"""A complete user task: points on a noisy ring in 2-D. Copy this file to ablate your own data.

Use it in an experiment config as `task: experiments/my_task.py` (the function `make_task` is called with
the config's `task_params` as keyword arguments), or as `task: my_package.my_module:make_task`.

A task needs five attributes and three methods (see ablate/tasks/__init__.py, `Task`), and may declare three
more facts about its metrics for the report: `metric_scales` (read a metric's effects as ratios, "log", or as
differences, "raw"), `share_metrics` (shares in [0, 1] and the number of samples behind each) and
`learnability_gate` (what the flow baseline must reach for the study to mean anything). Left out, every metric
is raw, none is a share and there is no gate.
- `batch(batch_size, generator)`: training data, drawn only from `generator` so a seed reproduces it;
- `make_model(k_max)`: an x-predictor called as `model(z, tau, d)`, tau = 0 noise, tau = 1 clean, d the step size
  1/K for K = 1, 2, 4, ..., k_max; it may take the objective's `k_max`, the resolved `objective`
  (ablate.config.ObjectiveConfig) or neither, and is called once at every d before any trial starts;
- `evaluate(sampler, steps, generator)`: sample with each K in `steps` from ONE noise draw and score it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from ablate.metrics import wasserstein2
from ablate.tasks import Evaluation, Sampler, gate_condition
from ablate.tasks.embedding import LevelEmbedding


def ring(n: int, radius: float, width: float, generator: torch.Generator) -> Tensor:
    angle = 2 * math.pi * torch.rand(n, generator=generator)
    r = radius + width * torch.randn(n, generator=generator)
    return torch.stack([r * torch.cos(angle), r * torch.sin(angle)], 1)


class RingModel(nn.Module):
    """Embed (tau, d) with the shared LevelEmbedding and look d up in a table of step sizes (as many world
    models do), add both to the input features, then a small MLP. The table has a row per level d = 1/2^i,
    i = 0..log2(k_max), sized from the k_max that make_model is told: it cannot disagree with the objective."""

    def __init__(self, k_max: int, hidden: int = 64) -> None:
        super().__init__()
        self.embed = LevelEmbedding(hidden)
        self.inp = nn.Linear(2, hidden)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2))
        self.step_sizes = nn.Embedding(int(math.log2(k_max)) + 1, hidden)

    def forward(self, z: Tensor, tau: Tensor, d: Tensor) -> Tensor:
        level = torch.log2(1 / d).round().long()  # 0 for d = 1, ..., log2(k_max) for d_min
        return self.mlp(self.inp(z) + self.embed(tau, d) + self.step_sizes(level))


class RingTask:
    name = "ring"
    sample_format = "points"  # samples are (N, 2) arrays, drawn as scatter plots in the report
    lead_dims = 1  # one tau and d per sample
    primary_metric = "w2"
    metric_directions = {"w2": "min", "radius_error": "min"}
    metric_scales = {"w2": "log", "radius_error": "log"}  # distances: toggles change them by factors
    share_metrics: dict[str, int] = {}  # none here; a share of the n_eval samples would be {"name": n_eval}

    def __init__(self, radius: float = 1.0, width: float = 0.05, n_eval: int = 500) -> None:
        self.radius, self.width, self.n_eval = radius, width, n_eval
        # Real points are off the radius by 0.8 x width on average; a flow baseline at K = k_max further off
        # than 2 x width has not learned the ring. An illustration: measure your baseline before you trust it.
        self.learnability_gate = [gate_condition("radius_error", "<=", 2 * width)]
        # The reference set has its own fixed seed: every trial is scored against the same points.
        self.reference = ring(n_eval, radius, width, torch.Generator().manual_seed(12345))

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, dict]:
        return ring(batch_size, self.radius, self.width, generator), {}  # {}: no extra model arguments

    def make_model(self, k_max: int) -> nn.Module:
        return RingModel(k_max)

    def evaluate(self, sampler: Sampler, steps: list[int], generator: torch.Generator) -> Evaluation:
        noise = torch.randn(self.n_eval, 2, generator=generator)  # one draw, shared by every K
        metrics, samples = {}, {}
        for k in steps:
            x = sampler(noise, k)
            metrics[k] = {
                "w2": wasserstein2(x, self.reference),  # +inf if the samples hold NaN/inf
                "radius_error": (x.norm(dim=1) - self.radius).abs().mean().item(),
            }
            samples[k] = x.numpy().astype(np.float32)
        return Evaluation(metrics, samples)


def make_task(radius: float = 1.0, width: float = 0.05, n_eval: int = 500) -> RingTask:
    return RingTask(radius, width, n_eval)
