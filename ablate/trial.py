"""One trial: train one config of the objective on one task with one seed, then evaluate it over K.

Knows nothing of Ray: the runner drives `Trial` in chunks (train to a step, checkpoint, report) and
`run_trial` runs one config start to finish in this process. Everything random derives from `seed`:
the same config gives the same numbers on CPU. Each stream (model init, data, noise, (tau, d)) has its own
generator, so every cell of a seed, the flow baseline included, trains on the same data and noise
whatever its objective draws; the evaluation noise comes from `eval_seed`, the same for every trial.
"""

from __future__ import annotations

import copy
import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ablate.config import ObjectiveConfig, TrialConfig
from ablate.families import load_family
from ablate.objective import LossOutput, ShortcutForcing
from ablate.results import CURVE_METRICS, DIVERGED, OK, TRAINING_STATS
from ablate.tasks import Evaluation, Sampler, build_model, make_task

RUNNING = "running"  # until training ends as OK or DIVERGED (the results contract's status values)

STREAMS = ("data", "noise", "tau_d")  # one generator each, seeded from (seed, stream)
SPIKE_FACTOR = 10.0  # a loss spike: a step's loss above this many times the median of the previous ones
SPIKE_WINDOW = 100  # ... over at most this many previous steps, once at least SPIKE_MIN_HISTORY are known
SPIKE_MIN_HISTORY = 20


def stream_generator(seed: int, stream: str) -> torch.Generator:
    """The generator of one random stream of a trial, independent of the others (numpy's SeedSequence)."""
    entropy = np.random.SeedSequence([int(seed), STREAMS.index(stream)]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(entropy))


def build_objective(objective: ObjectiveConfig) -> ShortcutForcing:
    """The objective of the config's family (ablate.families): shortcut forcing, the flow baseline, ..."""
    return load_family(objective.family).build(objective)


@torch.no_grad()
def ema_update(average: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """Bias-corrected EMA after update number `step` (1, 2, ...): the weighted mean of the weights after
    steps 1..step with weights decay^(step - i), normalised, as Adam corrects its moments. The initial
    weights get no weight, so the decay does not leave a budget-dependent share of them in the average."""
    weight = (1 - decay) / (1 - decay**step) if decay < 1 else 1.0 / step
    for avg, new in zip(average.parameters(), model.parameters()):
        avg.lerp_(new, weight)
    for avg, new in zip(average.buffers(), model.buffers()):
        avg.copy_(new)


def frozen_copy(model: nn.Module) -> nn.Module:
    clone = copy.deepcopy(model)
    clone.requires_grad_(False)
    return clone


@dataclass
class TrialResult:
    config: TrialConfig
    status: str  # OK or DIVERGED
    diverged_step: int | None
    curves: list[dict]  # one dict per logged step: step, loss, flow_loss, bootstrap_loss, grad_norm
    metrics: dict[int, dict[str, float]]  # {K: {metric: value}}; empty when diverged in training
    training_stats: dict[str, float] = field(default_factory=dict)  # results.TRAINING_STATS
    samples: dict[int, np.ndarray] = field(default_factory=dict)
    real_samples: np.ndarray | None = None  # the task's real data, in the samples' format
    train_seconds: float = 0.0
    eval_seconds: float = 0.0


class Trial:
    """Trainable state of one config, resumable from `state_dict()` at any step."""

    def __init__(self, config: TrialConfig | Mapping) -> None:
        self.config = config if isinstance(config, TrialConfig) else TrialConfig.from_dict(config)
        c = self.config
        torch.set_num_threads(c.threads)
        torch.manual_seed(c.seed)  # model initialisation
        self.device = torch.device(c.device)
        self.task = make_task(c.task, c.task_params)
        self.objective = build_objective(c.objective)
        self.eval_steps = list(c.eval.steps or self.objective.step_counts)
        self.model = build_model(self.task, c.objective).to(self.device)
        self.teacher = frozen_copy(self.model) if c.train.teacher == "ema" else None
        self.eval_model = frozen_copy(self.model) if c.train.eval_ema is not None else None
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=c.train.lr)
        self.generators = {stream: stream_generator(c.seed, stream) for stream in STREAMS}
        self.step = 0
        self.clipped_steps = 0
        self.loss_spikes = 0
        self.max_grad_norm = 0.0
        self.recent_losses: deque[float] = deque(maxlen=SPIKE_WINDOW)
        self.forward_rows = 0  # rows (samples or sequences) through the model in training, teacher calls included
        self._counting_rows = False
        for module in {id(m): m for m in (self.model, self.teacher) if m is not None}.values():
            module.register_forward_hook(self._count_rows)
        self.curves: list[dict] = []
        self.status = RUNNING
        self.diverged_step: int | None = None
        self.train_seconds = 0.0

    @property
    def done_training(self) -> bool:
        return self.status == DIVERGED or self.step >= self.config.train.steps

    def learning_rate(self, step: int) -> float:
        train = self.config.train
        progress = min(step / max(train.steps, 1), 1.0)
        return train.lr_final + 0.5 * (train.lr - train.lr_final) * (1 + math.cos(math.pi * progress))

    def train(self, until: int | None = None) -> None:
        """Train up to step `until` (default: the budget); stops early, as diverged, on a NaN/inf/huge loss."""
        until = self.config.train.steps if until is None else min(until, self.config.train.steps)
        start = time.perf_counter()
        while self.step < until and self.status != DIVERGED:
            self._train_step()
        self.train_seconds += time.perf_counter() - start

    def _count_rows(self, module: nn.Module, args: tuple, output) -> None:
        if self._counting_rows and args:
            self.forward_rows += int(args[0].shape[0])

    def draw_batch(
        self, device: torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """This step's (x1, noise, tau, d, model keyword arguments), each from its own stream, on
        `device` (default: the trial's)."""
        device = self.device if device is None else device
        c = self.config.train
        x1, model_kwargs = self.task.batch(c.batch_size, self.generators["data"])
        noise = torch.randn(x1.shape, generator=self.generators["noise"])
        tau, d = self.objective.sample_tau_d(
            x1.shape[: self.task.lead_dims],
            generator=self.generators["tau_d"],
            flow_only=self.step < c.bootstrap_start,
        )
        x1, noise, tau, d = (t.to(device) for t in (x1, noise, tau, d))
        model_kwargs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in model_kwargs.items()}
        return x1, noise, tau, d, model_kwargs

    def _train_step(self) -> None:
        x1, noise, tau, d, model_kwargs = self.draw_batch()
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.step)
        self._counting_rows = True
        try:
            out = self.objective.loss(self.model, x1, noise, tau, d, teacher=self.teacher, **model_kwargs)
        finally:
            self._counting_rows = False
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.grad_clip or math.inf)
        if not self.record_step(out, grad_norm):
            return
        self.optimizer.step()
        c = self.config.train
        if self.teacher is not None:
            ema_update(self.teacher, self.model, c.teacher_decay, self.step)
        if self.eval_model is not None:
            ema_update(self.eval_model, self.model, c.eval_ema, self.step)

    def record_step(self, out: LossOutput, grad_norm: torch.Tensor) -> bool:
        """Count a computed step (its loss, gradient norm, stability, curve point). False, and the trial
        marked diverged, when the loss is NaN/inf or above train.divergence_loss or the gradient norm is
        not finite: that step's update is not applied."""
        c = self.config.train
        loss = out.loss.item()
        self.step += 1
        self._track_stability(loss, grad_norm.item())
        if not math.isfinite(loss) or loss > c.divergence_loss or not math.isfinite(grad_norm.item()):
            self._mark_diverged()
            self._log(out, grad_norm)
            return False
        if self.step % c.log_every == 0 or self.step == c.steps:
            self._log(out, grad_norm)
        return True

    def _track_stability(self, loss: float, grad_norm: float) -> None:
        """What the stabilisers did: clipped steps, loss spikes (SPIKE_FACTOR x the running median), the
        largest gradient norm (before clipping)."""
        clip = self.config.train.grad_clip
        self.clipped_steps += int(clip is not None and grad_norm > clip)
        if math.isfinite(grad_norm):
            self.max_grad_norm = max(self.max_grad_norm, grad_norm)
        if len(self.recent_losses) >= SPIKE_MIN_HISTORY and loss > SPIKE_FACTOR * float(np.median(self.recent_losses)):
            self.loss_spikes += 1
        self.recent_losses.append(loss)

    @property
    def training_stats(self) -> dict[str, float]:
        """results.TRAINING_STATS of the steps trained so far; passes in units of one batch."""
        steps, batch = max(self.step, 1), self.config.train.batch_size
        values = (
            self.clipped_steps / steps,
            self.loss_spikes,
            self.max_grad_norm,
            self.forward_rows / batch,
            self.step,
        )
        return dict(zip(TRAINING_STATS, values, strict=True))

    def _log(self, out, grad_norm: torch.Tensor) -> None:
        values = (out.loss, out.flow_loss, out.bootstrap_loss, grad_norm)
        self.curves.append({"step": self.step, **{name: v.item() for name, v in zip(CURVE_METRICS, values)}})

    def _mark_diverged(self) -> None:
        self.status, self.diverged_step = DIVERGED, self.step

    @property
    def evaluation_weights(self) -> nn.Module:
        """What is evaluated: the EMA of the weights (train.eval_ema), else the weights themselves."""
        return self.eval_model if self.eval_model is not None else self.model

    def evaluate(self, model: nn.Module | None = None) -> Evaluation:
        """Metrics per K with the evaluation weights; non-finite metrics mark the trial diverged.

        `model` stands in for the evaluation weights: a pack passes one whose forward runs in the
        pack's batched call (ablate.packed_evaluation)."""
        model = self.evaluation_weights if model is None else model
        model.eval()
        sampler = Sampler(model, self.objective, load_family(self.config.objective.family).sampler_d(self.objective))
        generator = torch.Generator().manual_seed(self.config.eval.seed)
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
            "generators": {stream: g.get_state() for stream, g in self.generators.items()},
            "torch_rng": torch.get_rng_state(),
            "step": self.step,
            "stability": {
                "clipped_steps": self.clipped_steps,
                "loss_spikes": self.loss_spikes,
                "max_grad_norm": self.max_grad_norm,
                "recent_losses": list(self.recent_losses),
                "forward_rows": self.forward_rows,
            },
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
        for stream, g in self.generators.items():
            g.set_state(state["generators"][stream])
        torch.set_rng_state(state["torch_rng"])
        self.step = state["step"]
        stability = state["stability"]
        self.clipped_steps, self.loss_spikes = stability["clipped_steps"], stability["loss_spikes"]
        self.max_grad_norm, self.forward_rows = stability["max_grad_norm"], stability["forward_rows"]
        self.recent_losses = deque(stability["recent_losses"], maxlen=SPIKE_WINDOW)
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
            training_stats=self.training_stats,
            samples=evaluation.samples if evaluation else {},
            real_samples=evaluation.real if evaluation else None,
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


def run_trial(config: TrialConfig | Mapping) -> TrialResult:
    """Train and evaluate one config in this process (no Ray)."""
    return Trial(config).finish()
