"""What the shortcut-forcing objective accepts, checked in one place: its knobs and its inputs.

Every check is one ValueError of one line that says what was given and what is allowed, raised before
any tensor is computed (tests/test_objective.py pins the messages word for word).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ablate.variants import Variant, check_choice

RAMPS = ("both", "flow", "none")
STEP_SIZE_DISTRIBUTIONS = ("uniform", "inverse")
TEACHER_CONTEXTS = ("stepped", "fixed")
BOOTSTRAP_DRAWS = ("row", "batch")  # which rows bootstrap: each row's own d (Eq. 4), or one coin per batch
D_PER = ("frame", "sequence")  # for (B, T) inputs: a step size per frame (B, T), or per sequence (B,)


def check_knobs(
    variant: Variant,
    k_max: int,
    ramp: str,
    step_sizes: str,
    bootstrap_fraction: float | None,
    bootstrap_weight: float,
    teacher_context: str,
    bootstrap_draw: str,
    bootstrap_probability: float | None,
    full_step: bool,
    d_per: str,
    sample_clamp: float | None,
) -> None:
    """The knobs of ShortcutForcing (see its docstring), each against what it allows and the others."""
    if not isinstance(variant, Variant):
        raise ValueError(f"variant={variant!r} must be a Variant (e.g. Variant.paper())")
    if isinstance(k_max, bool) or not isinstance(k_max, int) or k_max < 1 or k_max & (k_max - 1):
        raise ValueError(f"k_max={k_max!r} must be a power of two: 1, 2, 4, ..., 64, ...")
    check_choice("ramp", ramp, RAMPS)
    check_choice("step_sizes", step_sizes, STEP_SIZE_DISTRIBUTIONS)
    check_choice("teacher_context", teacher_context, TEACHER_CONTEXTS)
    if bootstrap_fraction is not None and not (0.0 <= float(bootstrap_fraction) <= 1.0):
        raise ValueError(f"bootstrap_fraction={bootstrap_fraction!r} must be None or a number in [0, 1]")
    if bootstrap_fraction and k_max == 1:
        raise ValueError("bootstrap_fraction > 0 needs k_max >= 2: with k_max=1 every row is a flow row")
    if not math.isfinite(bootstrap_weight) or bootstrap_weight < 0:
        raise ValueError(f"bootstrap_weight={bootstrap_weight!r} must be a finite number >= 0")
    check_choice("bootstrap_draw", bootstrap_draw, BOOTSTRAP_DRAWS)
    check_choice("d_per", d_per, D_PER)
    if bootstrap_probability is not None and (bootstrap_draw != "batch" or not 0 <= bootstrap_probability <= 1):
        raise ValueError(f"bootstrap_probability={bootstrap_probability!r} needs bootstrap_draw='batch', in [0, 1]")
    if bootstrap_draw == "batch" and bootstrap_fraction is not None:
        raise ValueError("bootstrap_fraction is a per-row share: it cannot go with bootstrap_draw='batch'")
    if not full_step and k_max < 4 and (bootstrap_draw == "batch" or bootstrap_fraction):
        raise ValueError("full_step=False leaves no d between d_min and 1 below k_max=4")
    if sample_clamp is not None and not (math.isfinite(sample_clamp) and sample_clamp > 0):
        raise ValueError(f"sample_clamp={sample_clamp!r} must be None or a number > 0")


def check_lead_dims(x1: Tensor, lead_dims: int) -> None:
    """x1 is a floating-point tensor with `lead_dims` leading dims for tau and d to be drawn over."""
    if not isinstance(x1, Tensor) or not x1.is_floating_point():
        raise ValueError("x1 must be a floating-point tensor")
    if not 1 <= lead_dims < x1.ndim:
        raise ValueError(f"lead_dims={lead_dims} must be in [1, x1.ndim - 1 = {x1.ndim - 1}]")


def check_inputs(x1: Tensor, noise: Tensor | None, tau: Tensor | None, d: Tensor | None) -> None:
    """Given noise, tau and d fit x1: noise its shape; tau the leading dims; d tau's shape or (B,)."""
    if not isinstance(x1, Tensor) or not x1.is_floating_point():
        raise ValueError("x1 must be a floating-point tensor")
    if noise is not None and noise.shape != x1.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} must equal x1's {tuple(x1.shape)}")
    if (tau is None) != (d is None):
        raise ValueError("tau and d must be given together (or both omitted to draw them)")
    if tau.shape != d.shape and not (tau.ndim > 1 and d.shape == tau.shape[:1]):
        raise ValueError(
            f"tau shape {tuple(tau.shape)} and d shape {tuple(d.shape)} must be equal, or d (B,) with tau (B, T)"
        )
    if not 1 <= tau.ndim < x1.ndim or x1.shape[: tau.ndim] != tau.shape:
        raise ValueError(
            f"tau/d shape {tuple(tau.shape)} must be the leading dims of x1 {tuple(x1.shape)}, e.g. (B,) or (B, T)"
        )


def check_levels(step_counts: tuple[int, ...], tau: Tensor, d: Tensor) -> None:
    """Every d (per frame) is a level 1/n for n in `step_counts`, and 0 <= tau <= 1 - d (Eq. 4)."""
    n = 1 / d.double()
    if not torch.isin(
        torch.round(n), torch.tensor(step_counts, dtype=n.dtype, device=n.device)
    ).all() or not torch.allclose(n, torch.round(n)):
        raise ValueError(f"d must be one of 1/n for n in {step_counts}")
    if (tau < 0).any() or (tau + d > 1 + 1e-6).any():
        raise ValueError("tau must satisfy 0 <= tau and tau + d <= 1")
