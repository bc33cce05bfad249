"""Built-in x-predictors shared by the tasks (the sequence task keeps its causal transformer)."""

from __future__ import annotations

from torch import Tensor, nn

from ablate.tasks.embedding import LevelEmbedding


class ResidualMLP(nn.Module):
    """x-predictor for flat data (B, dim), or any (B, ...) flattened: a pre-LayerNorm residual SiLU MLP whose
    input layer is shifted by the LevelEmbedding of (tau, d).

    Conditioning once at the input trains as well here as a projection per block and is cheaper per step,
    which matters on one CPU core. The LayerNorms were added because without them the paper variant's
    bootstrap loss ran away late in training on digits (width 128); as a stabiliser that may favour some
    variants, they are a task parameter (`layer_norm: false` gives identities) that a study can ablate.
    """

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, layer_norm: bool = True) -> None:
        super().__init__()
        norm = (lambda: nn.LayerNorm(hidden)) if layer_norm else nn.Identity
        self.embed = LevelEmbedding(hidden)
        self.inp = nn.Linear(dim, hidden)
        self.norms = nn.ModuleList(norm() for _ in range(depth))
        self.blocks = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.norm = norm()
        self.out = nn.Linear(hidden, dim)

    def forward(self, z: Tensor, tau: Tensor, d: Tensor) -> Tensor:
        h = self.inp(z.flatten(1)) + self.embed(tau, d)
        for norm, block in zip(self.norms, self.blocks):
            h = h + block(nn.functional.silu(norm(h)))
        return self.out(nn.functional.silu(self.norm(h))).reshape(z.shape)
