"""A deliberately tiny task for fast tests of the trial, runner and CLI: a 1-D two-point mixture."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ablate.tasks import Evaluation, Sampler
from ablate.tasks.embedding import LevelEmbedding


class TinyNet(nn.Module):
    """`quirk`, for the tests of packs: "none"; "scale", a constant buffer the input is multiplied by;
    "counter", a buffer the forward increments in place; "dropout", dropout on the hidden layer (random
    draws, which torch.func refuses to vectorise); "heads", a frozen layer in the forward and a reward head
    the x-prediction never uses, as a world model has. `steps`: a table of step sizes, one row per
    n = 1/d (0..steps - 1), as world models embed d; None: no table."""

    def __init__(self, width: int = 32, quirk: str = "none", steps: int | None = None) -> None:
        super().__init__()
        self.embed = LevelEmbedding(width, sinusoid_dim=16)
        self.inp = nn.Linear(1, width)
        self.out = nn.Sequential(nn.SiLU(), nn.Dropout(0.5 if quirk == "dropout" else 0.0), nn.Linear(width, 1))
        self.quirk = quirk
        if quirk in ("scale", "counter"):
            self.register_buffer("extra", torch.tensor([0.5 + torch.rand(()).item()]))
        if quirk == "heads":
            self.frozen = nn.Linear(width, width).requires_grad_(False)
            self.reward_head = nn.Linear(width, 1)
        self.step_table = None if steps is None else nn.Embedding(steps, width)

    def forward(self, z, tau, d):
        if self.quirk == "counter":
            self.extra.add_(1)
        scale = self.extra if self.quirk == "scale" else 1.0
        h = self.inp(z * scale) + self.embed(tau, d)
        if self.quirk == "heads":
            h = h + self.frozen(h)
        if self.step_table is not None:
            h = h + self.step_table(torch.round(1 / d).long())
        return self.out(h)


class TinyTask:
    name = "tiny"
    sample_format = "points"
    lead_dims = 1
    primary_metric = "mean_error"
    metric_directions = {"mean_error": "min", "spread": "max"}

    def __init__(
        self,
        separation: float = 2.0,
        n_eval: int = 256,
        crash_once_after: int | None = None,
        crash_marker: str | None = None,
        hang_at_batch: int | None = None,
        model_quirk: str = "none",
    ) -> None:
        self.separation = separation
        self.model_quirk = model_quirk
        self.n_eval = n_eval
        self.crash_once_after, self.crash_marker = crash_once_after, crash_marker
        self.hang_at_batch = hang_at_batch
        self.batches = 0

    def batch(self, batch_size: int, generator: torch.Generator):
        """Batch `crash_once_after` crashes: once (a lost node) when `crash_marker` names a file to leave
        behind, every time (a broken trial) without one."""
        self.batches += 1
        if self.batches == self.hang_at_batch:
            time.sleep(3600)  # a hung trial: stuck inside a call, never returning
        if self.batches == self.crash_once_after:
            if self.crash_marker is None:
                raise RuntimeError("simulated broken trial")
            if not Path(self.crash_marker).exists():
                Path(self.crash_marker).write_text("crashed once")
                raise RuntimeError("simulated worker crash")
        signs = torch.randint(0, 2, (batch_size, 1), generator=generator) * 2 - 1
        return signs * self.separation / 2 + 0.05 * torch.randn(batch_size, 1, generator=generator), {}

    def make_model(self) -> nn.Module:
        return TinyNet(quirk=self.model_quirk)

    def evaluate(self, sampler: Sampler, steps: list[int], generator: torch.Generator) -> Evaluation:
        noise = torch.randn(self.n_eval, 1, generator=generator)
        metrics, samples = {}, {}
        for k in steps:
            x = sampler(noise, k)
            distance = (x.abs() - self.separation / 2).abs().mean().item()
            metrics[k] = {"mean_error": distance, "spread": x.std().item()}
            samples[k] = np.concatenate([x.numpy(), np.zeros_like(x.numpy())], axis=1)
        return Evaluation(metrics, samples)


class StepTableTask(TinyTask):
    """The tiny task with a table of step sizes in its model, sized from the k_max its factory is told,
    or `steps` rows when given (too few for k_max: the model cannot take d = 1/k_max)."""

    def __init__(self, steps: int | None = None) -> None:
        super().__init__()
        self.steps = steps

    def make_model(self, k_max: int) -> nn.Module:
        return TinyNet(steps=self.steps or k_max + 1)


def make_step_table_task(steps: int | None = None) -> StepTableTask:
    return StepTableTask(steps)


def make_task(
    separation: float = 2.0,
    n_eval: int = 256,
    crash_once_after: int | None = None,
    crash_marker: str | None = None,
    hang_at_batch: int | None = None,
    model_quirk: str = "none",
) -> TinyTask:
    return TinyTask(separation, n_eval, crash_once_after, crash_marker, hang_at_batch, model_quirk)
