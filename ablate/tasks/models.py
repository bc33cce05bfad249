"""Built-in x-predictors shared by the tasks (the sequence task keeps its causal transformer)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ablate.tasks.embedding import LevelEmbedding


class ResidualMLP(nn.Module):
    """x-predictor for flat data (B, dim), or any (B, ...) flattened: a pre-LayerNorm residual SiLU MLP whose
    input layer is shifted by the LevelEmbedding of (tau, d).

    Conditioning once at the input trains as well here as a projection per block and is cheaper per step,
    which matters on one CPU core. The LayerNorms were added because without them the paper variant's
    bootstrap loss ran away late in training on digits (width 128); as a stabiliser that may favour some
    variants, they are a task parameter (`layer_norm: false` gives identities) that a study can ablate.

    Two options for low-dimensional data (toy2d turns both on; off by default, as digits uses it):

    - `fourier=F` feeds the network [z, sin(w_k z), cos(w_k z)] with w_k = 2^k pi / 2, k = 0..F-1 (periods
      4, 2, 1, 0.5, ... in the data's units), Fourier features (Tancik et al. 2020): a plain MLP on raw 2-D
      coordinates is too smooth to draw the checkerboard's edges in a few thousand steps.
    - `precondition=True` writes the output as x_hat = c_skip(tau) z + c_out(tau) F(z, tau, d), EDM's
      preconditioning (Karras et al. 2022) for z = tau x + (1 - tau) noise and unit-variance data:
      c_skip = tau / (tau^2 + (1 - tau)^2) is the linear (Wiener) estimate of x from z and
      c_out = (1 - tau) / sqrt(tau^2 + (1 - tau)^2) its error's scale, so the network's own output F has a
      unit-scale target at every tau. The model still returns x_hat and the objective is untouched; what
      changes is that near tau = 1, where the sampler divides x_hat - z by 1 - tau, x_hat no longer has to
      reproduce z to better than 1 - tau through the MLP (without it the checkerboard's samples pile up
      on the squares' edges). Meant for flat data with one tau per row.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 128,
        depth: int = 3,
        layer_norm: bool = True,
        fourier: int = 0,
        precondition: bool = False,
    ) -> None:
        super().__init__()
        if fourier < 0:
            raise ValueError(f"fourier={fourier!r} must be >= 0")
        norm = (lambda: nn.LayerNorm(hidden)) if layer_norm else nn.Identity
        self.precondition = precondition
        self.register_buffer("frequencies", (math.pi / 2) * 2.0 ** torch.arange(fourier), persistent=False)
        self.embed = LevelEmbedding(hidden)
        self.inp = nn.Linear(dim * (1 + 2 * fourier), hidden)
        self.norms = nn.ModuleList(norm() for _ in range(depth))
        self.blocks = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.norm = norm()
        self.out = nn.Linear(hidden, dim)

    def forward(self, z: Tensor, tau: Tensor, d: Tensor) -> Tensor:
        flat = z.flatten(1)
        features = flat
        if len(self.frequencies):
            angles = (flat.unsqueeze(-1) * self.frequencies).flatten(1)
            features = torch.cat([flat, torch.sin(angles), torch.cos(angles)], 1)
        h = self.inp(features) + self.embed(tau, d)
        for norm, block in zip(self.norms, self.blocks):
            h = h + block(nn.functional.silu(norm(h)))
        out = self.out(nn.functional.silu(self.norm(h)))
        if self.precondition:
            t = tau.reshape(-1, 1).to(out.dtype)
            r = t.square() + (1 - t).square()
            out = (t / r) * flat + ((1 - t) / r.sqrt()) * out
        return out.reshape(z.shape)
