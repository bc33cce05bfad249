"""Continuous embeddings of the signal level tau and the step size d, shared by the built-in models.

Both are sinusoidal in a continuous input (tau itself, log2 d), so the same network serves grid and
continuous tau and any power-of-two step size, including d = d_min for the flow-only baseline.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal(x: Tensor, dim: int, max_period: float = 1000.0) -> Tensor:
    """Transformer-style features of a scalar per row/frame: (...,) -> (..., dim)."""
    half = dim // 2
    dtype = torch.promote_types(x.dtype, torch.float32)  # float32, or float64 for a float64 run
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=x.device, dtype=dtype) / half)
    angles = x.to(dtype).unsqueeze(-1) * freqs
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class LevelEmbedding(nn.Module):
    """Embed (tau, d) into one conditioning vector: sinusoids of 1000 tau and of log2(1/d), then an MLP."""

    def __init__(self, dim: int, sinusoid_dim: int = 64) -> None:
        super().__init__()
        self.sinusoid_dim = sinusoid_dim
        self.mlp = nn.Sequential(nn.Linear(2 * sinusoid_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, tau: Tensor, d: Tensor) -> Tensor:
        features = torch.cat(
            [sinusoidal(1000 * tau, self.sinusoid_dim), sinusoidal(-torch.log2(d), self.sinusoid_dim, 100.0)], -1
        )
        return self.mlp(features)
