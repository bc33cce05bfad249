"""The public DreamerV4 implementation on PyPI (`dreamer4` 0.20.2) against the preset `dreamer4`.

Its `DynamicsWorldModel.forward` draws, with a `seed`, one shortcut-or-flow coin, a step size per sequence,
signal levels per frame and the noise, each under `torch.manual_seed(seed)`; drawing the same tensors here
and feeding them to ablate's objective with the preset's knobs must give the package's loss (flow term plus
shortcut term), with and without actions, in a shortcut batch and in a flow batch. What was matched: the
coin, d per sequence from {2/k_max, ..., 1/2}, tau per frame on d's grid, the flow term on every row with the
ramp on it alone, the velocity bootstrap with the (1 - tau)^2 weight, the velocity half step, and the
student under no_grad as its own teacher. The example task (experiments/dreamer4_world.py) then trains
through the real CLI for a few steps. Skipped, with the reason, where the package is not installed.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("dreamer4") is None, reason="the dreamer4 package is not installed (pip install dreamer4)"
)

ROOT = Path(__file__).resolve().parents[1]
K = 16


def _example():
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import dreamer4_world
    finally:
        sys.path.pop(0)
    return dreamer4_world


def _package_draws(seed: int, batch: int, frames: int, x1: torch.Tensor, probability: float):
    """The package's seeded draws, in its order, each under torch.manual_seed(seed) as its with_seed does."""
    levels_log2 = int(math.log2(K))
    torch.manual_seed(seed)
    shortcut = torch.rand(1).item() < probability
    if shortcut:
        torch.manual_seed(seed)
        step_log2 = torch.randint(1, levels_log2, (batch,))
        step = 2**step_log2
        torch.manual_seed(seed)
        levels = torch.randint(0, K, (batch, frames)) // step[:, None] * step[:, None]
    else:
        step = torch.ones(batch, dtype=torch.long)
        torch.manual_seed(seed)
        levels = torch.randint(0, K, (batch, frames))
    torch.manual_seed(seed)
    noise = torch.randn_like(x1)
    return levels.float() / K, step.float() / K, noise


@pytest.mark.parametrize("probability", [1.0, 0.0], ids=["shortcut-batch", "flow-batch"])
@pytest.mark.parametrize("with_actions", [False, True], ids=["no-actions", "actions"])
def test_the_preset_is_the_packages_loss_on_the_same_tensors(probability, with_actions):
    from ablate.config import ObjectiveConfig
    from ablate.families.shortcut import FAMILY
    from ablate.presets import PRESETS

    example = _example()
    torch.manual_seed(0)
    model = example.Dreamer4XPredictor(K, dim=32, depth=2, heads=2)
    model.dynamics.prob_shortcut_train = probability
    model.eval()
    batch, frames = 3, 4
    x1 = torch.randn(batch, frames, 2)
    actions = torch.randint(0, 5, (batch, frames)) if with_actions else None
    kwargs = {"discrete_actions": actions.unsqueeze(-1), "shift_action_tokens": False} if with_actions else {}
    _, losses = model.dynamics(latents=x1.unsqueeze(2), seed=11, return_all_losses=True, **kwargs)
    package = (losses.flow + losses.shortcut).item()

    tau, d, noise = _package_draws(11, batch, frames, x1.unsqueeze(2), probability)
    objective = FAMILY.build(ObjectiveConfig(k_max=K, **PRESETS["dreamer4"].objective))
    model_kwargs = {"actions": actions} if with_actions else {}
    ours = objective.loss(model, x1, noise=noise.squeeze(2), tau=tau, d=d, teacher=None, lead_dims=2, **model_kwargs)
    assert ours.loss.item() == pytest.approx(package, rel=1e-5, abs=1e-7)
    assert PRESETS["dreamer4"].train["teacher"] == "self"  # teacher=None above: the student under no_grad


@pytest.mark.slow
def test_the_example_trains_through_the_cli_packed_and_alone_alike(tmp_path, ray_session):
    from ablate.cli import main

    common = [
        "train.steps=20",
        "train.log_every=10",
        "seeds=[0]",
        "factors.bootstrap_draw=[batch]",
        "task_params.n_eval=16",
        "task_params.draws=2",
    ]
    experiment = str(ROOT / "experiments" / "dreamer4_world.yaml")
    assert main(["run", experiment, *common, "--output", str(tmp_path / "alone"), "--no-report"]) == 0
    assert main(["run", experiment, *common, "pack=2", "--output", str(tmp_path / "packed"), "--no-report"]) == 0
    import pandas as pd

    alone = pd.read_csv(tmp_path / "alone" / "metrics.csv").sort_values(["trial_id", "steps", "metric"])
    packed = pd.read_csv(tmp_path / "packed" / "metrics.csv").sort_values(["trial_id", "steps", "metric"])
    assert (alone["status"] == "ok").all() and len(alone) == len(packed)
    assert alone["value"].to_numpy() == pytest.approx(packed["value"].to_numpy(), rel=1e-4, abs=1e-6)
