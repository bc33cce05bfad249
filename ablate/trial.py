"""One trial: train one config of the objective on one task with one seed, then evaluate it over K.

Knows nothing of Ray: the runner drives `Trial` in chunks (train to a step, checkpoint, report) and
`run_trial` runs one config start to finish in this process. Everything random derives from `seed`:
the same config gives the same numbers on CPU.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ablate.families import DEFAULT_FAMILY, load_family
from ablate.objective import ShortcutForcing
from ablate.results import CURVE_METRICS, DIVERGED, OK
from ablate.tasks import Evaluation, Sampler, make_task

RUNNING = "running"  # until training ends as OK or DIVERGED (the results contract's status values)

# Every key a trial understands, with its default. The defaults were chosen so that the paper variant
# trains stably on every built-in task (see README, "Training defaults").
DEFAULTS: dict = {
    "task": "toy2d",
    "task_params": {},
    "family": DEFAULT_FAMILY,  # the objective family (ablate.families): shortcut_forcing, flow, or "module:attr"
    "tau_sampling": "grid",
    "bootstrap_space": "velocity",
    "half_step": "velocity",
    "tau2_weight": True,
    "k_max": 64,
    "ramp": "both",
    "step_sizes": "uniform",
    "bootstrap_fraction": None,
    "bootstrap_weight": 1.0,
    "teacher_context": "stepped",  # sequences: what the second teacher call sees of the other frames
    "teacher": "ema",  # "self": the student under stop-gradient (the paper); "ema": an EMA copy
    "teacher_decay": 0.99,
    "train_steps": 3000,
    "batch_size": 256,
    "lr": 1e-3,
    "lr_final": 1e-4,  # cosine decay from lr to lr_final
    "grad_clip": 1.0,  # None: no clipping
    "eval_ema": 0.995,  # decay of the weight EMA used for evaluation; None: evaluate the raw weights
    "log_every": 100,
    "divergence_loss": 1e3,  # a loss above this (or NaN/inf) ends the trial as diverged
    "timeout_seconds": None,  # enforced by the runner: a trial attempt longer than this fails (reason timeout)
    "eval_steps": None,  # None: 1, 2, 4, ..., k_max
    "eval_seed": 0,  # the evaluation noise: the same for every variant and seed
    "seed": 0,
    "threads": 1,
    "device": "cpu",
}
TEACHERS = ("self", "ema")


def resolve_config(config: dict) -> dict:
    """Defaults filled in; unknown keys raise ValueError naming the key."""
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown trial config key(s) {unknown}; known keys: {', '.join(DEFAULTS)}")
    resolved = {**DEFAULTS, **config}
    if resolved["teacher"] not in TEACHERS:
        raise ValueError(f"teacher={resolved['teacher']!r} is not allowed; choose one of {TEACHERS}")
    return resolved


def build_objective(config: dict) -> ShortcutForcing:
    """The objective of the config's family (ablate.families): shortcut forcing, the flow baseline, ..."""
    return load_family(config["family"]).build(config)


@torch.no_grad()
def ema_update(average: nn.Module, model: nn.Module, decay: float) -> None:
    for avg, new in zip(average.parameters(), model.parameters()):
        avg.lerp_(new, 1 - decay)
    for avg, new in zip(average.buffers(), model.buffers()):
        avg.copy_(new)


def frozen_copy(model: nn.Module) -> nn.Module:
    clone = copy.deepcopy(model)
    clone.requires_grad_(False)
    return clone


@dataclass
class TrialResult:
    config: dict
    status: str  # OK or DIVERGED
    diverged_step: int | None
    curves: list[dict]  # one dict per logged step: step, loss, flow_loss, bootstrap_loss, grad_norm
    metrics: dict[int, dict[str, float]]  # {K: {metric: value}}; empty when diverged in training
    samples: dict[int, np.ndarray] = field(default_factory=dict)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0


class Trial:
    """Trainable state of one config, resumable from `state_dict()` at any step."""

    def __init__(self, config: dict) -> None:
        self.config = resolve_config(config)
        c = self.config
        torch.set_num_threads(int(c["threads"]))
        torch.manual_seed(c["seed"])  # model initialisation
        self.device = torch.device(c["device"])
        self.task = make_task(c["task"], c["task_params"])
        self.objective = build_objective(c)
        self.eval_steps = list(c["eval_steps"] or self.objective.step_counts)
        self.model = self.task.make_model().to(self.device)
        self.teacher = frozen_copy(self.model) if c["teacher"] == "ema" else None
        self.eval_model = frozen_copy(self.model) if c["eval_ema"] is not None else None
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=c["lr"])
        self.generator = torch.Generator().manual_seed(c["seed"])  # data, noise, tau and d
        self.step = 0
        self.curves: list[dict] = []
        self.status = RUNNING
        self.diverged_step: int | None = None
        self.train_seconds = 0.0

    @property
    def done_training(self) -> bool:
        return self.status == DIVERGED or self.step >= self.config["train_steps"]

    def learning_rate(self, step: int) -> float:
        c = self.config
        progress = min(step / max(c["train_steps"], 1), 1.0)
        return c["lr_final"] + 0.5 * (c["lr"] - c["lr_final"]) * (1 + math.cos(math.pi * progress))

    def train(self, until: int | None = None) -> None:
        """Train up to step `until` (default: the budget); stops early, as diverged, on a NaN/inf/huge loss."""
        until = self.config["train_steps"] if until is None else min(until, self.config["train_steps"])
        start = time.perf_counter()
        while self.step < until and self.status != DIVERGED:
            self._train_step()
        self.train_seconds += time.perf_counter() - start

    def _train_step(self) -> None:
        c = self.config
        x1, model_kwargs = self.task.batch(c["batch_size"], self.generator)
        noise = torch.randn(x1.shape, generator=self.generator)
        tau, d = self.objective.sample_tau_d(x1.shape[: self.task.lead_dims], generator=self.generator)
        x1, noise, tau, d = (t.to(self.device) for t in (x1, noise, tau, d))
        model_kwargs = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in model_kwargs.items()}
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.step)

        out = self.objective.loss(self.model, x1, noise, tau, d, teacher=self.teacher, **model_kwargs)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), c["grad_clip"] or math.inf)
        loss = out.loss.item()
        self.step += 1
        if not math.isfinite(loss) or loss > c["divergence_loss"] or not math.isfinite(grad_norm.item()):
            self._mark_diverged()
            self._log(out, grad_norm)
            return
        self.optimizer.step()
        if self.teacher is not None:
            ema_update(self.teacher, self.model, c["teacher_decay"])
        if self.eval_model is not None:
            ema_update(self.eval_model, self.model, c["eval_ema"])
        if self.step % c["log_every"] == 0 or self.step == c["train_steps"]:
            self._log(out, grad_norm)

    def _log(self, out, grad_norm: torch.Tensor) -> None:
        values = (out.loss, out.flow_loss, out.bootstrap_loss, grad_norm)
        self.curves.append({"step": self.step, **{name: v.item() for name, v in zip(CURVE_METRICS, values)}})

    def _mark_diverged(self) -> None:
        self.status, self.diverged_step = DIVERGED, self.step

    def evaluate(self) -> Evaluation:
        """Metrics per K with the evaluation weights; non-finite metrics mark the trial diverged."""
        model = self.eval_model if self.eval_model is not None else self.model
        model.eval()
        sampler = Sampler(model, self.objective, load_family(self.config["family"]).sampler_d(self.objective))
        generator = torch.Generator().manual_seed(self.config["eval_seed"])
        evaluation = self.task.evaluate(sampler, self.eval_steps, generator)
        model.train()
        values = [v for per_k in evaluation.metrics.values() for v in per_k.values()]
        if self.status != DIVERGED:
            self.status = OK if all(math.isfinite(v) for v in values) else DIVERGED
            if self.status == DIVERGED:
                self.diverged_step = self.step
        return evaluation

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "teacher": None if self.teacher is None else self.teacher.state_dict(),
            "eval_model": None if self.eval_model is None else self.eval_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "step": self.step,
            "curves": self.curves,
            "status": self.status,
            "diverged_step": self.diverged_step,
            "train_seconds": self.train_seconds,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])
        if self.eval_model is not None:
            self.eval_model.load_state_dict(state["eval_model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step = state["step"]
        self.curves = list(state["curves"])
        self.status = state["status"]
        self.diverged_step = state["diverged_step"]
        self.train_seconds = state["train_seconds"]

    def result(self, evaluation: Evaluation | None, eval_seconds: float) -> TrialResult:
        return TrialResult(
            config=self.config,
            status=self.status,
            diverged_step=self.diverged_step,
            curves=self.curves,
            metrics=evaluation.metrics if evaluation else {},
            samples=evaluation.samples if evaluation else {},
            train_seconds=self.train_seconds,
            eval_seconds=eval_seconds,
        )

    def finish(self) -> TrialResult:
        """Train what is left, then evaluate unless training diverged."""
        self.train()
        if self.status == DIVERGED:
            return self.result(None, 0.0)
        start = time.perf_counter()
        evaluation = self.evaluate()
        return self.result(evaluation, time.perf_counter() - start)


def run_trial(config: dict) -> TrialResult:
    """Train and evaluate one config in this process (no Ray)."""
    return Trial(config).finish()
