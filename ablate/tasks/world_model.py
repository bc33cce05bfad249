"""What the two world-model tasks share: the context level, the autoregressive rollout, the outcome TV.

The pixel world (`sequence`) and the latent world (`latent_world`) train the same causal dynamics model with
per-frame (tau, d) and evaluate it by generating frames after a context under the true actions.

Context frames in training and at evaluation. In training the task hands the objective whole trajectories
and the objective (trial.py, Eq. 4) draws tau and d for every frame independently, so a frame's past sits at
whatever levels were drawn: nothing marks the first frames as context, and a frame whose past is clean(ish)
is rare (with k_max = 16 and Eq. 4 sampling 39 % of a shortcut model's frames sit at tau = 0 and 6 % at
tau >= 0.8; 15 % of the flow baseline's). At evaluation the context and every frame already generated sit
at one level, `context_level` (the task's `context_noise` read as the noise share, snapped to the d_min grid
and kept <= 1 - d_min, the cleanest level every variant trains at), with d = d_min, noised once as they
enter the context (what a KV cache would hold); the latent world feeds them noise-free (its context_noise 0).
A task cannot change the training levels: tau and d are drawn in trial.py. A knob for the share of clean
context in training (a share of sequences whose frames before a random cut sit at the context level with
d = d_min) was measured on the latent world by patching the trial's draw (flow baseline, 4,000 steps): with
memory (rho = 0.9) validity at K = 64 went from 0.11 to 0.16 (jitter 0.03, share 0.5) and from 0.20 to 0.24
(jitter 0.05, share 1.0), far from the gate either way; the default latent world has no memory, so its
validity does not depend on the context at all. It is therefore not wired in (it needs a call in trial.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ablate.objective import noisy_input


def context_level(context_noise: float, d_min: float) -> float:
    """Signal level of context frames: DreamerV4's tau_ctx = 0.1 read as 10% noise, i.e. tau = 0.9.

    The paper's convention has tau = 1 clean, so a context at signal level 0.1 would be 90% noise, not the
    "slight" corruption the text describes; we read it, as public ports do, as noise 0.1. The level is
    snapped to the d_min grid (0.875 for k_max = 16) because grid-sampled variants never train on other
    levels, and kept <= 1 - d_min, the cleanest level any variant trains on.
    """
    steps = round((1 - context_noise) / d_min)
    return min(steps, round(1 / d_min) - 1) * d_min


@torch.no_grad()
def rollout(
    sampler,
    frames: Tensor,
    actions: Tensor,
    context: int,
    level: float,
    steps: int,
    start_noise: Tensor,
    context_noise: Tensor,
) -> Tensor:
    """Generate frames context..T-1 one at a time under the true actions: (N, T, ...), context included.

    Each new frame starts from `start_noise` (N, T, F) and takes `steps` steps (`Sampler.next_frames`, which
    tells the model d = 1/K or `sampler.model_d`). The frames before it, given or generated, sit at `level`
    with d = d_min, noised once with `context_noise` (N, T, F) as they enter the context (zeros: the noise-free
    mean level * x). O(horizon * K) model calls; the causal mask makes recomputing the past exact. Runs on
    the model's device; returns frames on the CPU.
    """
    device = sampler.device
    n, length = actions.shape
    out = frames.reshape(n, length, -1).to(device, copy=True)  # written into below
    actions, start_noise, context_noise = (x.to(device) for x in (actions, start_noise, context_noise))
    noisy = noisy_input(out, context_noise, torch.full((n, length), level, device=device))
    for t in range(context, length):
        past_tau = torch.full((n, t), level, device=device)
        out[:, t : t + 1] = sampler.next_frames(
            noisy[:, :t], past_tau, start_noise[:, t : t + 1], steps, actions=actions[:, : t + 1]
        )
        noisy[:, t] = noisy_input(out[:, t], context_noise[:, t], torch.full((n,), level, device=device))
    return out.reshape(frames.shape).cpu()


def outcome_tv(actions: Tensor, expected: Tensor, observed: Tensor) -> float:
    """Total variation between generated and simulated outcome frequencies, per action, pooled over frames.

    `actions` (N,): the action behind each generated frame; `expected` (N, C): the simulator's probability of
    each outcome type given that frame's past and action; `observed` (N, C): the type the generated frame
    shows (one-hot, or split over types that land on the same outcome). The last type is "invalid" (expected
    0). With n_a frames under action a, P_a and Q_a the sums of `observed` and `expected` over them,

        TV = 1/2 sum_a sum_c |P_a[c] - Q_a[c]| / N,

    the TV between the joint (action, outcome type) frequencies. It is 0 for a sampler that is valid and
    picks the outcomes with the simulator's frequencies under every action, >= 1 - validity always (=
    when the valid frames have the right frequencies), and the missing share for a sampler that collapses
    onto one outcome. An exact sampler scores sampling noise only: E[TV] <= 1/2 sqrt(cells / N), cells = the
    (action, type) pairs with 0 < Q < 1 (Cauchy-Schwarz on the per-cell binomial standard deviations).
    """
    diff = observed.double() - expected.double()
    total = sum(diff[actions == a].sum(0).abs().sum() for a in actions.unique())
    return 0.5 * float(total) / len(actions)
