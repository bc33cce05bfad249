"""Eq. 7-8 for packed training (ablate.packing): many members in one vectorised call (torch.func.vmap).

vmap cannot select rows by value nor branch per member, so the toggles are tensors (Knobs) and both
teacher calls run on every row; the equations are the functions of ablate.objective, and `torch.where`
picks what each row and member uses. Per row the result equals ShortcutForcing.loss
(tests/test_packing.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ablate.objective import (
    Model,
    ShortcutForcing,
    expand_like,
    flow_error,
    noisy_input,
    per_frame,
    per_sequence,
    ramp_weight,
    renoise_half_step,
    velocity,
    velocity_bootstrap_error,
    velocity_half_step,
    x_bootstrap_error,
)


@dataclass
class Knobs:
    """One member's objective settings as tensors (0-d; stacked along a member dim for a pack)."""

    d_min: Tensor
    velocity_space: Tensor  # bootstrap_space == "velocity"
    velocity_half_step: Tensor  # half_step == "velocity"
    tau2_weight: Tensor
    ramp_flow: Tensor  # ramp in ("both", "flow")
    ramp_bootstrap: Tensor  # ramp == "both"
    bootstrap_weight: Tensor
    flow_on_bootstrap: Tensor  # the flow term on bootstrap rows too

    @classmethod
    def of(cls, objective: ShortcutForcing, dtype: torch.dtype = torch.float32) -> Knobs:
        v = objective.variant
        flag = lambda value: torch.tensor(bool(value))  # noqa: E731
        return cls(
            d_min=torch.tensor(objective.d_min, dtype=dtype),
            velocity_space=flag(v.bootstrap_space == "velocity"),
            velocity_half_step=flag(v.half_step == "velocity"),
            tau2_weight=flag(v.tau2_weight),
            ramp_flow=flag(objective.ramp in ("both", "flow")),
            ramp_bootstrap=flag(objective.ramp == "both"),
            bootstrap_weight=torch.tensor(objective.bootstrap_weight, dtype=dtype),
            flow_on_bootstrap=flag(objective.flow_on_bootstrap),
        )

    @classmethod
    def stack(cls, members: list[Knobs]) -> Knobs:
        return cls(**{f: torch.stack([getattr(m, f) for m in members]) for f in cls.__dataclass_fields__})


def loss_every_row(
    model: Model, teacher: Model, x1: Tensor, noise: Tensor, tau: Tensor, d: Tensor, knobs: Knobs, **model_kwargs
) -> tuple[Tensor, Tensor]:
    """Eq. 7-8 with both teacher calls on every row (vmap-friendly): one member's per-row weighted loss
    (ShortcutForcing.loss's ``per_sample``) and which rows are bootstrap rows.

    `teacher` must not build a graph (a stop-gradient copy: detached or EMA weights). Rows at d_min take
    a zero half step (as in ShortcutForcing.teacher_targets) and keep their flow term.
    """
    precision = torch.promote_types(x1.dtype, torch.float32)
    tau, d = tau.to(precision), d.to(precision)
    lead_dims = tau.ndim
    z = noisy_input(x1, noise, tau)
    x_hat = model(z, tau, d, **model_kwargs)
    d_frames = per_frame(d, tau)  # a step size per sequence (B,) is read per frame; the model gets it as is
    is_boot = d_frames > knobs.d_min * (1 + 1e-6)
    w = ramp_weight(tau)
    flow_term = flow_error(x_hat, x1, lead_dims) * torch.where(knobs.ramp_flow, w, torch.ones_like(w))

    half = torch.where(is_boot, d_frames / 2, torch.zeros_like(d_frames))
    level = per_sequence(torch.where(is_boot, d_frames / 2, d_frames), d)
    x_a = teacher(z, tau, level, **model_kwargs)
    b1 = velocity(x_a, z, tau)
    tau_mid = tau + half
    renoised = torch.where(expand_like(is_boot, z), renoise_half_step(x_a, noise, tau_mid), z)
    z_mid = torch.where(knobs.velocity_half_step, velocity_half_step(z, b1, half), renoised).to(z.dtype)
    x_b = teacher(z_mid, tau_mid, level, **model_kwargs)
    b2 = velocity(x_b, z_mid, tau_mid)

    err = torch.where(
        knobs.velocity_space,
        velocity_bootstrap_error(x_hat, z, tau, b1, b2),
        x_bootstrap_error(x_hat, x_b, lead_dims),
    )
    err = err * torch.where(knobs.tau2_weight, (1 - tau) ** 2, torch.ones_like(tau))
    err = err * torch.where(knobs.ramp_bootstrap, w, torch.ones_like(w)) * knobs.bootstrap_weight
    boot = err + torch.where(knobs.flow_on_bootstrap, flow_term, torch.zeros_like(flow_term))
    return torch.where(is_boot, boot, flow_term), is_boot
