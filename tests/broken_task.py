"""A user's task with a bug in its model, for the tests of failures: the tiny task (tiny_task.py), whose
model raises a TypeError once it has trained `fail_at_step` steps. The model counts its training steps
in a buffer, so a retry restored from a checkpoint fails at the same step, as a real bug would; with
`marker`, a file it writes when it fails, it fails only once (a flaky node rather than a bug)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ablate.tasks import make_task as load_task

TinyTask = type(load_task(str(Path(__file__).with_name("tiny_task.py"))))


class BuggyModel(nn.Module):
    def __init__(self, model: nn.Module, fail_at_step: int, marker: str | None) -> None:
        super().__init__()
        self.model, self.fail_at_step, self.marker = model, fail_at_step, marker
        self.register_buffer("trained_steps", torch.zeros((), dtype=torch.long))
        self.bias = None  # the bug: meant to become a tensor, it never does

    def forward(self, z, tau, d):
        out = self.model(z, tau, d)
        if not torch.is_grad_enabled():  # a teacher's call or the evaluation: not a training step
            return out
        self.trained_steps += 1
        if self.trained_steps <= self.fail_at_step or (self.marker and Path(self.marker).exists()):
            return out
        if self.marker:
            Path(self.marker).write_text("failed once")
        return out + self.bias


class BuggyTask(TinyTask):
    def __init__(self, fail_at_step: int, marker: str | None = None) -> None:
        super().__init__()
        self.fail_at_step, self.marker = fail_at_step, marker

    def make_model(self) -> nn.Module:
        return BuggyModel(super().make_model(), self.fail_at_step, self.marker)


def make_task(fail_at_step: int, marker: str | None = None) -> BuggyTask:
    return BuggyTask(fail_at_step, marker)
