"""Shortcut forcing (DreamerV4, Hafner et al. 2025, Eq. 1-8) with the four toggles the code review questions.

One convention everywhere, the paper's: tau = 0 is pure noise, tau = 1 is clean data,

    z = (1 - tau) * noise + tau * x1                                   (Eq. 1 / 6)

and the network predicts clean data, x_hat = f(z, tau, d). Every formula below is one small function with
its equation number, so the file can be checked line by line against docs/objective-spec.md.
`tau` has the shape of the leading dims of the data: (B,) per sample, (B, T) per frame; `d` has the same
shape, or (B,) with tau (B, T) when one step size serves a whole sequence (`d_per="sequence"`): the
equations then read it per frame, broadcast, and the model is called with d as drawn.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ablate.objective_checks import check_inputs, check_knobs, check_lead_dims, check_levels
from ablate.teacher_context import rows_of, second_call_in_fixed_context
from ablate.variants import TOGGLES, Variant  # noqa: F401 (TOGGLES, Variant re-exported)

Model = Callable[..., Tensor]


# ---------------------------------------------------------------------------------------------------------
# The equations, one function each. Shapes: x (lead..., features...), tau/d (lead...).


def expand_like(t: Tensor, x: Tensor) -> Tensor:
    """Append singleton feature dims so a per-sample/per-frame scalar broadcasts against x."""
    return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


def per_frame(d: Tensor, tau: Tensor) -> Tensor:
    """A step size per sequence (B,) read per frame (B, T); a per-frame one as it is."""
    return expand_like(d, tau).expand_as(tau) if d.ndim < tau.ndim else d


def per_sequence(level: Tensor, like: Tensor) -> Tensor:
    """A per-frame level back in the shape the model was given d in (its first frame, when d is (B,))."""
    return level[(slice(None),) + (0,) * (level.ndim - like.ndim)] if like.ndim < level.ndim else level


def noisy_input(x1: Tensor, noise: Tensor, tau: Tensor) -> Tensor:
    """Eq. 1/6: z = (1 - tau) noise + tau x1."""
    t = expand_like(tau, x1).to(x1.dtype)
    return (1 - t) * noise + t * x1


def at_least_float32(x: Tensor) -> Tensor:
    """Loss arithmetic stays in float32 (or float64) even when the model ran under bf16/fp16 autocast."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def velocity(x_hat: Tensor, z: Tensor, tau: Tensor) -> Tensor:
    """Velocity implied by an x-prediction: v = (x_hat - z) / (1 - tau), in at least float32."""
    return (at_least_float32(x_hat) - at_least_float32(z)) / (1 - at_least_float32(expand_like(tau, z)))


def ramp_weight(tau: Tensor) -> Tensor:
    """Eq. 8: w(tau) = 0.9 tau + 0.1, more weight on cleaner inputs."""
    return 0.9 * tau + 0.1


def velocity_half_step(z: Tensor, b1: Tensor, half: Tensor) -> Tensor:
    """Eq. 7 (paper): z' = z + (d/2) b'."""
    return z + expand_like(half, z) * b1


def renoise_half_step(x_a: Tensor, noise: Tensor, tau_mid: Tensor) -> Tensor:
    """The simplified code: z' = (tau + d/2) x_a + (1 - tau - d/2) noise, with the originally sampled noise."""
    return noisy_input(x_a, noise, tau_mid)


def shortcut_step(z: Tensor, x_hat: Tensor, tau: Tensor, d: Tensor) -> Tensor:
    """Eq. 2 sampler step: z <- z + d (x_hat - z) / (1 - tau)."""
    return z + expand_like(d, z) * velocity(x_hat, z, tau)


def mean_square(a: Tensor, b: Tensor, lead_dims: int) -> Tensor:
    """||a - b||^2 as the mean over the elements of one sample (one frame for sequences)."""
    diff = (a - b).square()
    return diff.mean(dim=tuple(range(lead_dims, diff.ndim))) if diff.ndim > lead_dims else diff


def flow_error(x_hat: Tensor, x1: Tensor, lead_dims: int) -> Tensor:
    """Eq. 7, d = d_min: || x_hat - x1 ||^2."""
    return mean_square(at_least_float32(x_hat), at_least_float32(x1), lead_dims)


def velocity_bootstrap_error(x_hat: Tensor, z: Tensor, tau: Tensor, b1: Tensor, b2: Tensor) -> Tensor:
    """Eq. 7, d > d_min (paper): || (x_hat - z)/(1 - tau) - sg(b' + b'')/2 ||^2."""
    return mean_square(velocity(x_hat, z, tau), ((b1 + b2) / 2).detach(), tau.ndim)


def x_bootstrap_error(x_hat: Tensor, x_b: Tensor, lead_dims: int) -> Tensor:
    """The simplified code's bootstrap: || x_hat - sg(x_b) ||^2, the second teacher call's prediction."""
    return mean_square(at_least_float32(x_hat), at_least_float32(x_b.detach()), lead_dims)


# ---------------------------------------------------------------------------------------------------------


@dataclass
class LossOutput:
    """The batch loss and its parts. Parts are detached and meant for logging."""

    loss: Tensor  # scalar: mean over all rows of the per-row weighted loss
    per_sample: Tensor  # per-row (per-frame) weighted loss, shape of tau
    flow_loss: Tensor  # mean weighted loss over the flow rows (0 when there are none)
    bootstrap_loss: Tensor  # mean weighted loss over the bootstrap rows (0 when there are none)
    n_flow: Tensor  # number of flow rows (frames)
    n_bootstrap: Tensor  # number of bootstrap rows (frames)

    @classmethod
    def of(cls, per_sample: Tensor, is_boot: Tensor) -> LossOutput:
        """The batch loss (the plain mean over rows) and its parts, from the per-row loss."""
        n_boot = is_boot.sum()
        n_flow = is_boot.numel() - n_boot
        detached = per_sample.detach()
        return cls(
            loss=per_sample.mean(),
            per_sample=per_sample,
            flow_loss=detached.masked_fill(is_boot, 0).sum() / n_flow.clamp(min=1),
            bootstrap_loss=detached.masked_fill(~is_boot, 0).sum() / n_boot.clamp(min=1),
            n_flow=n_flow,
            n_bootstrap=n_boot,
        )


@dataclass
class TeacherTargets:
    """Outputs of the two half-step teacher calls, for the rows that were sent to the teacher."""

    b1: Tensor
    b2: Tensor
    x_b: Tensor


class ShortcutForcing:
    """The configurable shortcut-forcing objective and its K-step sampler.

    Args:
        variant: which side of each of the four toggles to use.
        k_max: largest number of sampling steps (a power of two); d_min = 1 / k_max.
        ramp: where the Eq. 8 weight w(tau) goes: "both" terms, the "flow" term only, or "none".
        step_sizes: "uniform" over the power-of-two levels (Eq. 4) or "inverse", P(d) ~ 1/d (the review).
        bootstrap_fraction: None keeps Eq. 4; a number f gives that share of rows a d above d_min (uniform
            over those levels) and the rest d_min, as the shortcut-models code (1/8) does.
        bootstrap_weight: multiplies the bootstrap term.
        teacher_context: for (B, T) sequences, what the teacher's second call sees of the other frames:
            "stepped" (every bootstrap frame moved by its own half step in one call, as public ports do)
            or "fixed" (each bootstrap frame's second call sees the others as in the first call, as a
            rollout holds the past fixed; one call over one copy of the sequence per bootstrap frame).
        bootstrap_draw: "row" (Eq. 4: each row draws its d) or "batch" (one coin per batch: with
            probability `bootstrap_probability`, default 1 - 1/log2(k_max), every row draws a d above d_min,
            else every row is at d_min; the dreamer4 package).
        flow_on_bootstrap: also apply the flow term ||x_hat - x1||^2 to bootstrap rows, whose x_hat was
            made at their own d (the dreamer4 package); Eq. 7 applies it to d_min rows only.
        full_step: whether d = 1 (K = 1) is drawn; the dreamer4 package never draws it.
        d_per: for (B, T) inputs, a step size per "frame" (B, T) or per "sequence" (B,), as the dreamer4
            package and the reviewed code draw it (tau stays per frame).
        sample_clamp: None, or c: the sampler's output is clamped to [-c, c] (the dreamer4 package: 1).
    """

    def __init__(
        self,
        variant: Variant | None = None,
        k_max: int = 64,
        ramp: str = "both",
        step_sizes: str = "uniform",
        bootstrap_fraction: float | None = None,
        bootstrap_weight: float = 1.0,
        teacher_context: str = "stepped",
        bootstrap_draw: str = "row",
        bootstrap_probability: float | None = None,
        flow_on_bootstrap: bool = False,
        full_step: bool = True,
        d_per: str = "frame",
        sample_clamp: float | None = None,
    ) -> None:
        variant = Variant.paper() if variant is None else variant
        check_knobs(
            variant,
            k_max,
            ramp,
            step_sizes,
            bootstrap_fraction,
            bootstrap_weight,
            teacher_context,
            bootstrap_draw,
            bootstrap_probability,
            full_step,
            d_per,
            sample_clamp,
        )
        self.variant = variant
        self.k_max = k_max
        self.ramp = ramp
        self.step_sizes = step_sizes
        self.bootstrap_fraction = None if bootstrap_fraction is None else float(bootstrap_fraction)
        self.bootstrap_weight = float(bootstrap_weight)
        self.teacher_context = teacher_context
        self.bootstrap_draw = bootstrap_draw
        levels = int(math.log2(k_max))
        default_probability = 1 - 1 / levels if levels else 0.0
        self.bootstrap_probability = default_probability if bootstrap_probability is None else bootstrap_probability
        self.flow_on_bootstrap = bool(flow_on_bootstrap)
        self.full_step = bool(full_step)
        self.d_per = d_per
        self.sample_clamp = None if sample_clamp is None else float(sample_clamp)

    @property
    def d_min(self) -> float:
        return 1.0 / self.k_max

    @property
    def step_counts(self) -> tuple[int, ...]:
        """The sampling step counts K = 1/d: 1, 2, 4, ..., k_max."""
        return tuple(2**i for i in range(int(math.log2(self.k_max)) + 1))

    # --- Eq. 4 -------------------------------------------------------------------------------------------

    def sample_tau_d(
        self,
        shape: tuple[int, ...] | torch.Size,
        generator: torch.Generator | None = None,
        device=None,
        flow_only: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Eq. 4: d = 1/n with n from {1, 2, ..., k_max}; tau on the grid {0, d, ..., 1 - d} or U[0, 1 - d].

        `flow_only` draws every row at d = d_min (tau as above): a warm-up before bootstrap rows begin.
        With `d_per="sequence"` and a (B, T) shape, d is drawn per sequence (B,) and tau per frame.
        """
        shape = torch.Size(shape)
        lead = shape[:1] if self.d_per == "sequence" and len(shape) > 1 else shape
        counts = torch.tensor(self.step_counts, dtype=torch.float32, device=device)
        if flow_only:
            level = torch.full(lead, len(counts) - 1, device=device)
        else:
            level = self._sample_level_index(lead, counts, generator, device)
        n = counts[level].reshape(lead + (1,) * (len(shape) - len(lead))).expand(shape)
        u = torch.rand(shape, generator=generator, device=device)
        if self.variant.tau_sampling == "grid":
            tau = torch.clamp(torch.floor(u * n), max=n - 1) / n
        else:
            tau = u * (1 - 1 / n)
        return tau, 1 / counts[level]

    def _sample_level_index(self, shape, counts: Tensor, generator, device) -> Tensor:
        """Indices into counts (1, 2, ..., k_max): index 0 is d = 1, drawn only with `full_step`."""
        levels = len(counts)
        first = 0 if self.full_step else 1
        numel = shape.numel()
        if self.bootstrap_draw == "batch":
            bootstrap_batch = torch.rand((), generator=generator, device=device) < self.bootstrap_probability
            above_min = torch.randint(first, max(levels - 1, first + 1), shape, generator=generator, device=device)
            return torch.where(bootstrap_batch, above_min, levels - 1)
        if self.bootstrap_fraction is not None:
            n_boot = round(self.bootstrap_fraction * numel)
            is_boot = torch.zeros(numel, dtype=torch.bool, device=device)
            is_boot[torch.randperm(numel, generator=generator, device=device)[:n_boot]] = True
            above_min = torch.randint(first, max(levels - 1, first + 1), (numel,), generator=generator, device=device)
            return torch.where(is_boot, above_min, levels - 1).reshape(shape)
        if self.step_sizes == "uniform":
            return torch.randint(first, levels, shape, generator=generator, device=device)
        probs = counts / counts.sum()  # P(d) ~ 1/d = n
        if not self.full_step:
            probs = torch.where(counts == 1, 0.0, probs)
        return torch.multinomial(probs, numel, replacement=True, generator=generator).reshape(shape)

    # --- Eq. 7-8 -----------------------------------------------------------------------------------------

    def loss(
        self,
        model: Model,
        x1: Tensor,
        noise: Tensor | None = None,
        tau: Tensor | None = None,
        d: Tensor | None = None,
        teacher: Model | None = None,
        *,
        lead_dims: int = 1,
        **model_kwargs,
    ) -> LossOutput:
        """Eq. 7 with the Eq. 8 ramp: one student forward over the whole batch, two batched teacher calls.

        `teacher=None` uses the student itself under stop-gradient (the paper); pass an EMA copy for the
        shortcut-models recipe. Tensor keyword arguments whose first dim is the batch (actions) are sliced
        along with the rows sent to the teacher. When tau and d are omitted they are drawn with shape
        x1.shape[:lead_dims].
        """
        if tau is None and d is None:
            check_lead_dims(x1, lead_dims)
            tau, d = self.sample_tau_d(x1.shape[:lead_dims], device=x1.device)
        else:
            check_inputs(x1, noise, tau, d)
            self.check_tau_d(tau, d)
        noise = torch.randn_like(x1) if noise is None else noise
        precision = torch.promote_types(x1.dtype, torch.float32)  # weights and steps in (at least) float32
        tau, d = tau.to(precision), d.to(precision)
        lead_dims = tau.ndim
        z = noisy_input(x1, noise, tau)
        x_hat = model(z, tau, d, **model_kwargs)
        if x_hat.shape != x1.shape:
            raise ValueError(f"model output shape {tuple(x_hat.shape)} must equal x1's {tuple(x1.shape)}")

        is_boot = per_frame(d, tau) > self.d_min * (1 + 1e-6)
        w = ramp_weight(tau)
        flow_term = flow_error(x_hat, x1, lead_dims)
        if self.ramp != "none":
            flow_term = w * flow_term
        per_sample = flow_term
        if bool(is_boot.any()):
            teacher = model if teacher is None else teacher  # None: the student under stop-gradient
            rows = is_boot if lead_dims == 1 else is_boot.flatten(1).any(1)  # whole sequences for (B, T)
            boot_term = torch.zeros_like(flow_term)
            boot_term[rows] = self._bootstrap_term(
                teacher,
                x_hat[rows],
                z[rows],
                noise[rows],
                tau[rows],
                d[rows],
                is_boot[rows],
                **rows_of(model_kwargs, rows, len(x1)),
            )
            per_sample = torch.where(is_boot, boot_term + flow_term if self.flow_on_bootstrap else boot_term, flow_term)

        return LossOutput.of(per_sample, is_boot)

    def _bootstrap_term(
        self,
        teacher: Model,
        x_hat: Tensor,
        z: Tensor,
        noise: Tensor,
        tau: Tensor,
        d: Tensor,
        is_boot: Tensor,
        **model_kwargs,
    ) -> Tensor:
        """Weighted Eq. 7 bootstrap loss for the rows sent to the teacher."""
        targets = self.teacher_targets(teacher, z, noise, tau, d, is_boot, **model_kwargs)
        if self.variant.bootstrap_space == "velocity":
            err = velocity_bootstrap_error(x_hat, z, tau, targets.b1, targets.b2)
        else:
            err = x_bootstrap_error(x_hat, targets.x_b, tau.ndim)
        if self.variant.tau2_weight:
            err = (1 - tau) ** 2 * err
        if self.ramp == "both":
            err = ramp_weight(tau) * err
        return self.bootstrap_weight * err

    @torch.no_grad()
    def teacher_targets(
        self, teacher: Model, z: Tensor, noise: Tensor, tau: Tensor, d: Tensor, is_boot: Tensor, **model_kwargs
    ) -> TeacherTargets:
        """Eq. 7: two half steps of size d/2 by the teacher, each one batched call without autograd.

        Frames that are not bootstrap frames but ride along in a sequence (per-frame d) are context for
        the others: they are fed their own level and keep their z and tau in both calls (whichever half
        step the bootstrap frames take), so every value stays finite; their targets are never used.
        """
        d_frames = per_frame(d, tau)
        half = torch.where(is_boot, d_frames / 2, torch.zeros_like(d_frames))
        level = per_sequence(torch.where(is_boot, d_frames / 2, d_frames), d)  # as the model is given d
        x_a = teacher(z, tau, level, **model_kwargs)
        b1 = velocity(x_a, z, tau)
        tau_mid = tau + half
        if self.variant.half_step == "velocity":
            z_mid = velocity_half_step(z, b1, half)
        else:
            z_mid = torch.where(expand_like(is_boot, z), renoise_half_step(x_a, noise, tau_mid), z)
        z_mid = z_mid.to(z.dtype)
        if self.teacher_context == "fixed" and tau.ndim > 1:
            x_b = second_call_in_fixed_context(teacher, x_a, z, tau, level, z_mid, tau_mid, is_boot, **model_kwargs)
        else:
            x_b = teacher(z_mid, tau_mid, level, **model_kwargs)
        return TeacherTargets(b1=b1, b2=velocity(x_b, z_mid, tau_mid), x_b=x_b)

    def check_tau_d(self, tau: Tensor, d: Tensor) -> None:
        """Raise ValueError unless every d is a level 1/n (n in 1..k_max) and 0 <= tau <= 1 - d."""
        check_levels(self.step_counts, tau, per_frame(d, tau))

    # --- Eq. 2: the sampler ------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        model: Model,
        noise: Tensor,
        steps: int,
        *,
        lead_dims: int = 1,
        model_d: float | None = None,
        **model_kwargs,
    ) -> Tensor:
        """K-step shortcut sampler: d = 1/K; tau = k/K; z <- z + d (x_hat - z)/(1 - tau); ends on x_hat
        (the last Euler step, from tau = 1 - 1/K by d = 1/K, lands exactly there); clamped to
        [-sample_clamp, sample_clamp] when set.

        `model_d` overrides the step size the model is told (default 1/K); a flow-only baseline is told
        d_min, the only level it was trained on, while still stepping by 1/K (plain Euler).
        """
        if steps not in self.step_counts:
            raise ValueError(f"steps={steps!r} must be one of {self.step_counts} (k_max={self.k_max})")
        lead = noise.shape[:lead_dims]
        d = torch.full(lead, 1.0 / steps, device=noise.device)
        told = lead[:1] if self.d_per == "sequence" and lead_dims > 1 else lead  # the shape d is given in
        told_d = torch.full(told, 1.0 / steps if model_d is None else float(model_d), device=noise.device)
        z = noise
        for k in range(steps):
            tau = torch.full(lead, k / steps, device=noise.device)
            x_hat = model(z, tau, told_d, **model_kwargs)
            z = x_hat if k == steps - 1 else shortcut_step(z, x_hat, tau, d).to(noise.dtype)
        return z if self.sample_clamp is None else z.clamp(-self.sample_clamp, self.sample_clamp)
