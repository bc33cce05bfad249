"""Bring your own world model: the dynamics transformer of the public DreamerV4 implementation on PyPI,
`dreamer4` (0.20.2), ablated on ablate's latent world.

Use it as `task: experiments/dreamer4_world.py` (experiments/dreamer4_world.yaml). What a user of any public
implementation writes is what this file writes:

- `Dreamer4XPredictor`: the package's `DynamicsWorldModel` seen as an x-predictor `model(z, tau, d, actions=...)`.
  The package counts noise levels in integer "signal levels" (tau * k_max) and step sizes as powers of two in
  those units (d * k_max), so the wrapper converts; it asks for the model's flow prediction of already-noised
  latents (`latent_is_noised=True, return_pred_only=True`), and ablate's objective does the rest. Its
  reward, value and policy heads are never used by an x-prediction loss: they get no gradient, and packs
  leave them alone as a trial alone does.
- `make_task`: the latent world's data, scoring and rollouts (ablate.tasks.latent_world), with this model.
  `make_model` is told the objective's `k_max`, which sizes the package's step-size embedding (`max_steps`).

The package's own objective is the preset `dreamer4` (ablate.presets): `tests/test_dreamer4.py` feeds the same
tensors to the package's loss and to the preset and finds them equal. Its step-size embedding has no entry for
d = 1, so K = 1 is not sampled (eval.steps starts at 2), as the package's own sampler refuses K = 1; and it
knows tau only on the 1/k_max grid, so cells keep `tau_sampling: grid` and the flow baseline (continuous tau) is
left out.

The package imports torchvision (and torchaudio) at module level for parts the dynamics model does not use;
their PyPI builds need a CUDA torch, so where they do not import, stand-ins are put in `sys.modules` first.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

import torch
from torch import Tensor, nn

from ablate.tasks.latent_world import LATENT, LatentWorldTask
from ablate.tasks.sequence import N_ACTIONS


class _Unused:
    """Stands in for a torchvision / torchaudio name the package imports but the dynamics model never calls."""

    def __getattr__(self, name: str) -> _Unused:
        if name.startswith("__"):
            raise AttributeError(name)
        return self

    def __call__(self, *args, **kwargs) -> _Unused:
        return self


def _stand_in(name: str) -> None:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)

    def missing(attribute: str) -> _Unused:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return _Unused()

    module.__getattr__ = missing
    sys.modules[name] = module


def import_dynamics_model() -> type:
    """The package's DynamicsWorldModel, with stand-ins for what does not import next to a CPU torch."""
    optional = ("torchvision", "torchaudio", "cv2", "imageio", "gymnasium")
    for name in optional:
        try:
            if importlib.util.find_spec(name) is None:
                raise ImportError(name)
            importlib.import_module(name)
        except Exception:  # a CUDA build next to CPU torch raises RuntimeError, not ImportError
            for sub in ("", ".transforms", ".transforms.functional", ".models", ".utils", ".io", ".ops", ".functional"):
                _stand_in(name + sub)
    from dreamer4.dreamer4 import DynamicsWorldModel

    return DynamicsWorldModel


class Dreamer4XPredictor(nn.Module):
    """`DynamicsWorldModel` as ablate's x-predictor: frames (B, T, D) <-> latents (B, T, 1 token, D)."""

    def __init__(self, k_max: int, dim: int = 64, depth: int = 2, heads: int = 4, dim_head: int = 16) -> None:
        super().__init__()
        dynamics = import_dynamics_model()
        self.k_max = k_max
        self.dynamics = dynamics(
            dim=dim,
            dim_latent=LATENT,
            num_latent_tokens=1,
            max_steps=k_max,
            depth=depth,
            time_block_every=2,
            attn_heads=heads,
            attn_dim_head=dim_head,
            num_discrete_actions=N_ACTIONS + 1,  # the latent world's moves and its "no action" at frame 0
            multi_token_pred_len=1,
        )

    def forward(self, z: Tensor, tau: Tensor, d: Tensor, actions: Tensor | None = None) -> Tensor:
        levels = torch.round(tau * self.k_max)  # the package's signal levels: tau on the 1/k_max grid only
        if not torch.allclose(levels, tau * self.k_max, atol=1e-4):
            raise ValueError(
                "the dreamer4 model takes tau on the 1/k_max grid only (tau_sampling: grid, no flow baseline)"
            )
        levels = levels.long()
        step_sizes = torch.round(d * self.k_max).long()  # powers of two; per sequence (B,) as the package has it
        pred = self.dynamics(
            latents=z.unsqueeze(2),
            signal_levels=levels,
            step_sizes=step_sizes,
            discrete_actions=None if actions is None else actions.unsqueeze(-1),
            shift_action_tokens=False,  # actions[:, t] already leads into frame t
            latent_is_noised=True,
            return_pred_only=True,
        )
        return pred.flow.reshape(z.shape)


class Dreamer4WorldTask(LatentWorldTask):
    """The latent world with the package's dynamics transformer as its model."""

    name = "dreamer4_world"

    def __init__(self, dim: int = 64, depth: int = 2, heads: int = 4, **latent_world_params) -> None:
        super().__init__(**latent_world_params)
        self.dynamics_shape = dict(dim=dim, depth=depth, heads=heads)

    def make_model(self, k_max: int) -> nn.Module:
        return Dreamer4XPredictor(k_max, **self.dynamics_shape)


def make_task(**params) -> Dreamer4WorldTask:
    return Dreamer4WorldTask(**params)
