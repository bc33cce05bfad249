"""Packed trials: many trials of one experiment trained in one process, in one vectorised step.

A width-128 MLP leaves a GPU idle and spends much of a CPU step in per-call overhead. A pack stacks
its members' weights (``torch.func.stack_module_state``) and runs every member's training step as one
``vmap`` over ``functional_call``: one student forward and two teacher calls for the whole pack. The
toggles and the other objective knobs are per-member tensors (``objective.Knobs``), so the 16 variants,
their seeds and the flow baseline share a pack. Each member keeps its own ``Trial``: its generators
(data, noise, (tau, d)), its bookkeeping and its evaluation, so its numbers do not depend on its pack
(``tests/test_packing.py`` checks a member against the same config run alone). On an accelerator the
members' evaluations run side by side with their model calls batched (``ablate.packed_evaluation``).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from ablate.config import TrialConfig
from ablate.objective import LossOutput, ShortcutForcing
from ablate.packed_evaluation import BatchedCalls, MemberModel
from ablate.packed_objective import Knobs, loss_every_row
from ablate.tasks import model_arguments
from ablate.trial import DIVERGED, Trial, TrialResult

# What members of one pack must share: one model shape, one batch and one step schedule.
SHARED = ("task", "task_params", "device", "threads")
SHARED_TRAIN = ("steps", "batch_size", "lr", "lr_final", "log_every")


class PackingError(ValueError):
    """Why these configs cannot train as one pack (the runner then trains them one by one)."""


def pack_key(config: TrialConfig) -> tuple:
    """Configs with equal keys may share a pack."""
    return (
        *(repr(getattr(config, name)) for name in SHARED),
        *(getattr(config.train, name) for name in SHARED_TRAIN),
        config.objective.k_max,
        config.objective.d_per,  # the shape d is given in: (B,) or per frame
        repr(config.eval),
    )


def per_member(vector: Tensor, like: Tensor) -> Tensor:
    """A per-member vector shaped to broadcast against a stacked tensor (members first)."""
    return vector.to(like.device).reshape(-1, *([1] * (like.ndim - 1)))


def stacked_kwargs(per_member_kwargs: Sequence[dict], device: torch.device) -> dict[str, Tensor]:
    """The members' model keyword arguments (e.g. actions) stacked along a new first dim (members)."""
    names = per_member_kwargs[0].keys()
    if any(not torch.is_tensor(kwargs[name]) for kwargs in per_member_kwargs for name in names):
        raise PackingError("tasks whose models take non-tensor keyword arguments do not pack")
    return {name: torch.stack([kwargs[name] for kwargs in per_member_kwargs]).to(device) for name in names}


def _stacked(modules: Sequence[nn.Module], kind: str = "parameters") -> dict[str, Tensor]:
    """Each named parameter (or buffer) of the modules stacked along a new first dim (members), detached.

    Like ``torch.func.stack_module_state``, without requiring one class object: a task file loaded
    once per member defines its model class once per member."""
    named = [dict(getattr(m, f"named_{kind}")()) for m in modules]
    shapes = {name: value.shape for name, value in named[0].items()}
    if any({name: value.shape for name, value in n.items()} != shapes for n in named):
        raise PackingError("its trials' models differ in their parameters")
    return {name: torch.stack([n[name].detach() for n in named]) for name in shapes}


class Pack:
    """Members trained together; ``finish()`` gives each member's TrialResult, as ``Trial.finish`` does."""

    def __init__(self, configs: Sequence[TrialConfig], batched_evaluation: bool | None = None) -> None:
        """`batched_evaluation`: the members' evaluation model calls as one vectorised call per round
        (ablate.packed_evaluation), else member by member. Default: batched on an accelerator only; on
        a CPU, vmap's unfused bias adds and layer norms made it slower (0.95x on the quickstart's 17
        cells, 0.44x on the latent world's, ``benchmarks/pack_throughput.py``)."""
        if not configs:
            raise PackingError("a pack needs at least one trial")
        if len({pack_key(c) for c in configs}) > 1:
            raise PackingError("its trials differ in task, model, batch or step schedule")
        self.members = [Trial(c) for c in configs]
        for member in self.members:
            if (
                not isinstance(member.objective, ShortcutForcing)
                or member.config.objective.teacher_context != "stepped"
            ):
                raise PackingError(f"{member.config.objective.family}: only shortcut-forcing objectives pack")
        first = self.members[0]
        # One skeleton runs every member: a model built from its objective (make_model taking it) may differ.
        if len({repr(model_arguments(m.task, m.config.objective)) for m in self.members}) > 1:
            raise PackingError("its trials' models are built from different objectives")
        self.skeleton = copy.deepcopy(first.model).to("meta")
        # A parameter the user froze stays frozen, as alone: it gets no gradient, so Adam leaves it be.
        trainable = {name for name, value in first.model.named_parameters() if value.requires_grad}
        if any({n for n, v in m.model.named_parameters() if v.requires_grad} != trainable for m in self.members):
            raise PackingError("its trials' models freeze different parameters")
        self.params = {
            name: value.requires_grad_(name in trainable)
            for name, value in _stacked([m.model for m in self.members]).items()
        }
        self.buffers = _stacked([m.model for m in self.members], "buffers")
        self.ema_teacher = _stacked([m.teacher or m.model for m in self.members])
        self.eval_params = _stacked([m.evaluation_weights for m in self.members])
        self.uses_ema_teacher = torch.tensor([m.teacher is not None for m in self.members], device=first.device)
        knobs = Knobs.stack([Knobs.of(m.objective) for m in self.members])
        self.knobs = Knobs(**{name: value.to(first.device) for name, value in vars(knobs).items()})
        # Every parameter, as a trial alone's optimizer: Adam skips those without a gradient (frozen or
        # unused), moments and all, so they stay as they were.
        self.optimizer = torch.optim.Adam(self.params.values(), lr=first.config.train.lr)
        limits = [m.config.train.grad_clip or math.inf for m in self.members]
        self.clip_limits = torch.tensor(limits, device=first.device)
        # Per member, the decay of its teacher's and its evaluation weights' EMA (float64, as ``ema_update``
        # computes in Python floats); 0 where a member has no such average, which then tracks its weights.
        teacher_decays = [m.config.train.teacher_decay if m.teacher is not None else 0.0 for m in self.members]
        eval_decays = [m.config.train.eval_ema if m.eval_model is not None else 0.0 for m in self.members]
        self.decays = [torch.tensor(d, dtype=torch.float64) for d in (teacher_decays, eval_decays)]
        self.step = 0  # the pack's steps; a diverged member's own count stops at its divergence
        self.batched_evaluation = first.device.type != "cpu" if batched_evaluation is None else batched_evaluation
        self._check_vmap()

    def _check_vmap(self) -> None:
        """One vectorised forward on a tiny batch: a model that torch.func cannot run fails here, once."""
        first = self.members[0]
        x1, kwargs = first.task.batch(2, torch.Generator().manual_seed(0))
        n = len(self.members)
        zeros = torch.zeros(n, *x1.shape, dtype=x1.dtype, device=first.device)
        levels = torch.full((n, *x1.shape[: first.task.lead_dims]), 1.0, device=zeros.device)
        kwargs = stacked_kwargs([kwargs] * n, zeros.device)
        versions = {name: value._version for name, value in self.buffers.items()}
        try:
            with torch.no_grad():
                vmap(self._forward)(self.params, self.buffers, zeros, levels * 0, levels, kwargs)
        except Exception as error:  # torch.func raises many types for what it cannot vectorise
            raise PackingError(f"torch.func cannot vectorise the model ({type(error).__name__}: {error})") from None
        # vmap runs in-place updates of stacked buffers, but in a pack the student and teacher calls
        # would share one copy where a trial alone keeps one per model: not the same trial.
        updated = [name for name, value in self.buffers.items() if value._version != versions[name]]
        if updated:
            raise PackingError(f"the model updates buffers in its forward ({', '.join(updated)})")

    def _forward(self, params, buffers, z, tau, d, model_kwargs):
        # Attention's math kernel is plain matmuls and a softmax, which vmap batches; the fused kernels
        # have no batching rule (torch warns), so vmap would run them one member at a time.
        with sdpa_kernel(SDPBackend.MATH):
            return functional_call(self.skeleton, (params, buffers), (z, tau, d), model_kwargs)

    def _member_loss(self, params, teacher_params, buffers, x1, noise, tau, d, knobs, model_kwargs):
        student = lambda z, t, dd, **kw: self._forward(params, buffers, z, t, dd, kw)  # noqa: E731
        teacher = lambda z, t, dd, **kw: self._forward(teacher_params, buffers, z, t, dd, kw)  # noqa: E731
        return loss_every_row(student, teacher, x1, noise, tau, d, Knobs(**knobs), **model_kwargs)

    def train(self, until: int | None = None) -> None:
        """Train every member up to step `until` (default: the budget); diverged members stop where they are.

        Each step's time is shared by the members it trained (their ``train_seconds``)."""
        budget = self.members[0].config.train.steps
        until = budget if until is None else min(until, budget)
        while self.step < until and (training := [m for m in self.members if m.status != DIVERGED]):
            start = time.perf_counter()
            self._train_step()
            share = (time.perf_counter() - start) / len(training)
            for member in training:
                member.train_seconds += share

    def _train_step(self) -> None:
        members, device = self.members, self.members[0].device
        # Drawn on the host and moved stacked: one copy per input, not one per input and member.
        batches = [m.draw_batch(torch.device("cpu")) for m in members]
        x1, noise, tau, d = (torch.stack([b[i] for b in batches]).to(device) for i in range(4))
        model_kwargs = stacked_kwargs([b[4] for b in batches], device)
        for group in self.optimizer.param_groups:
            group["lr"] = members[0].learning_rate(self.step)
        teacher = {
            name: torch.where(per_member(self.uses_ema_teacher, value), self.ema_teacher[name], value.detach())
            for name, value in self.params.items()
        }
        per_row, is_boot = vmap(self._member_loss)(
            self.params, teacher, self.buffers, x1, noise, tau, d, vars(self.knobs), model_kwargs
        )
        losses = per_row.flatten(1).mean(dim=1)  # each member's mean over its rows (and frames), as alone
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        norms = self._clip_gradients()
        self.optimizer.step()
        self.step += 1
        # The members' bookkeeping reads host copies: one device sync per step, not three per member.
        per_row, is_boot, norms = (t.detach().cpu() for t in (per_row, is_boot, norms))
        for index, member in enumerate(members):
            if member.status == DIVERGED:
                continue
            rows = is_boot[index]
            teacher_rows = rows.flatten(1).any(1) if rows.ndim > 1 else rows  # whole sequences for (B, T)
            member.forward_rows += len(rows) + 2 * int(teacher_rows.sum())  # what the objective needs, as alone
            member.record_step(LossOutput.of(per_row[index], rows), norms[index])
        self._update_averages(self.step)

    def _clip_gradients(self) -> Tensor:
        """Each member's gradient norm (before clipping), clipped by its own train.grad_clip, as
        ``nn.utils.clip_grad_norm_`` does for a model alone: over the parameters that got a gradient (not
        a frozen one, nor a head the loss never uses, e.g. a world model's reward head)."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        norms = torch.stack([g.flatten(1).square().sum(1) for g in grads]).sum(0).sqrt()
        scale = torch.clamp(self.clip_limits / (norms + 1e-6), max=1.0)
        for g in grads:
            g.mul_(per_member(scale, g))
        return norms.detach()

    @torch.no_grad()
    def _update_averages(self, step: int) -> None:
        """The members' bias-corrected EMAs (teacher and evaluation), as ``trial.ema_update`` per member."""
        for averages, decay in zip((self.ema_teacher, self.eval_params), self.decays, strict=True):
            weight = torch.where(decay < 1, (1 - decay) / (1 - decay**step), torch.full_like(decay, 1.0 / step))
            like = next(iter(averages.values()))
            weight = weight.to(like.device, like.dtype)  # one copy to the device per step
            for name, average in averages.items():
                average.lerp_(self.params[name].detach(), per_member(weight, average))

    def _write_back(self) -> None:
        """Each member's slice of the stacked weights into its own modules (for evaluation, checkpoints)."""
        with torch.no_grad():
            for index, member in enumerate(self.members):
                for module, stacked in (
                    (member.model, self.params),
                    (member.teacher, self.ema_teacher),
                    (member.eval_model, self.eval_params),
                ):
                    if module is None:
                        continue
                    for name, value in module.named_parameters():
                        value.copy_(stacked[name][index])

    def state_dict(self) -> dict:
        self._write_back()
        return {
            "members": [m.state_dict() for m in self.members],
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict) -> None:
        for member, member_state in zip(self.members, state["members"], strict=True):
            member.load_state_dict(member_state)
        with torch.no_grad():
            for stacked, modules in (
                (self.params, [m.model for m in self.members]),
                (self.ema_teacher, [m.teacher or m.model for m in self.members]),
                (self.eval_params, [m.evaluation_weights for m in self.members]),
            ):
                for name, value in _stacked(modules).items():
                    stacked[name].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]

    def _evaluation_forward(self, members: list[int], z, tau, d, model_kwargs) -> Tensor:
        """The evaluation weights of `members` (indices) on their stacked calls, as one vectorised call."""
        index = torch.tensor(members, device=z.device)
        params = {name: value.index_select(0, index) for name, value in self.eval_params.items()}
        buffers = {name: value.index_select(0, index) for name, value in self.buffers.items()}
        # Transformer layers in eval mode take a fused fast path that vmap runs one member at a time.
        fastpath = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            return vmap(self._forward)(params, buffers, z, tau, d, model_kwargs)
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)

    def finish(self) -> list[TrialResult]:
        """Train what is left, then evaluate the members that did not diverge; with batched evaluation
        their model calls run as one (ablate.packed_evaluation) and each shares its time (``eval_seconds``)."""
        self.train()
        self._write_back()
        if not self.batched_evaluation:
            return [member.finish() for member in self.members]
        live = [index for index, member in enumerate(self.members) if member.status != DIVERGED]
        calls = BatchedCalls(self._evaluation_forward)
        jobs = {
            index: (lambda m=self.members[index], i=index: m.evaluate(MemberModel(m.evaluation_weights, calls, i)))
            for index in live
        }
        self.skeleton.eval()
        start = time.perf_counter()
        try:
            evaluations = calls.run(jobs)
        finally:
            self.skeleton.train()
        seconds = (time.perf_counter() - start) / max(len(live), 1)
        return [
            member.result(evaluations[index], seconds) if index in evaluations else member.result(None, 0.0)
            for index, member in enumerate(self.members)
        ]
