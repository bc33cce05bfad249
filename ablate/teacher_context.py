"""teacher_context="fixed": the teacher's second half-step call with the past as the first call saw it.

For (B, T) sequences the paper's Eq. 7 leaves open what the second teacher call sees of the other frames.
Public ports move every bootstrap frame of a sequence by its own half step in one call ("stepped", the
default, in ablate.objective); a rollout holds the past fixed, so "fixed" gives each bootstrap frame its own
copy of its sequence in which only it moved. Kept apart from the equations because it is bookkeeping of
copies, not an equation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def second_call_in_fixed_context(
    teacher: Callable[..., Tensor],
    x_a: Tensor,
    z: Tensor,
    tau: Tensor,
    level: Tensor,
    z_mid: Tensor,
    tau_mid: Tensor,
    is_boot: Tensor,
    **model_kwargs,
) -> Tensor:
    """The second half-step call with every other frame as the first call saw it (teacher_context fixed).

    One batched call over one copy of its sequence per bootstrap frame, in which only that frame is
    stepped; the frame's prediction is kept. Frames that take no step keep x_a (never used as targets).
    """
    rows, frames = is_boot.flatten(1).nonzero(as_tuple=True)
    copies = torch.arange(len(rows), device=rows.device)
    stepped = torch.zeros((len(rows), *tau.shape[1:]), dtype=torch.bool, device=tau.device)
    stepped.flatten(1)[copies, frames] = True
    z_in = torch.where(stepped.reshape(stepped.shape + (1,) * (z.ndim - stepped.ndim)), z_mid[rows], z[rows])
    tau_in = torch.where(stepped, tau_mid[rows], tau[rows])
    out = teacher(z_in, tau_in, level[rows], **rows_of(model_kwargs, rows, len(z)))
    x_b = x_a.clone()
    x_b.flatten(1, tau.ndim - 1)[rows, frames] = out.flatten(1, tau.ndim - 1)[copies, frames]
    return x_b


def rows_of(model_kwargs: dict, rows: Tensor, batch: int) -> dict:
    """Slice tensor keyword arguments along the batch dim, so teacher calls see the same rows' actions."""
    return {
        k: v[rows] if isinstance(v, Tensor) and v.ndim > 0 and v.shape[0] == batch else v
        for k, v in model_kwargs.items()
    }
