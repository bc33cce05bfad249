"""The latent world: its simulator and modes, the exact flow's posterior mean, validity and mode TV, a trial."""

import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from ablate.objective import ShortcutForcing
from ablate.tasks import Sampler, make_task
from ablate.tasks.latent_world import LatentWorld, LatentWorldTask
from ablate.tasks.sequence import MOVES, NO_ACTION
from ablate.trial import run_trial

torch.set_num_threads(1)
SMALL = dict(context=2, horizon=3, n_eval=64, draws=4, width=16, depth=1, heads=2)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the simulator -----------------------------------------------------------------------------------------


def test_every_step_lands_on_one_of_the_ring_modes_around_the_commanded_point():
    world = LatentWorld(modes=3, radius=0.3, jitter=0.05, reversion=0.5)
    traj = world.simulate(4096, 6, gen())
    assert traj.frames.shape == (4096, 6, 2) and (traj.actions[:, 0] == NO_ACTION).all()
    previous, actions, frames = traj.frames[:, :-1], traj.actions[:, 1:], traj.frames[:, 1:]
    commanded = 0.5 * previous + world.step * MOVES[actions].float()
    offset = frames - commanded  # ring point + jitter
    ring = world.ring()
    assert torch.allclose(ring.norm(dim=-1), torch.full((3,), 0.3)) and torch.allclose(
        ring.sum(0), torch.zeros(2), atol=1e-6
    )
    nearest = (offset.unsqueeze(-2) - ring).norm(dim=-1).argmin(-1)
    assert torch.equal(nearest, traj.modes[:, 1:])  # the recorded mode is the ring point the step took
    residual = offset - ring[traj.modes[:, 1:]]
    assert residual.std().item() == pytest.approx(0.05, rel=0.05)  # jitter per coordinate
    assert torch.bincount(traj.modes[:, 1:].flatten()).float().div(4096 * 5).sub(1 / 3).abs().max() < 0.02
    centres = world.outcomes(previous, actions)
    assert (world.classify(frames, centres) == traj.modes[:, 1:]).float().mean() > 0.985  # 1 - exp(-4.5)


def test_the_latent_is_standardised_and_the_simulator_deterministic():
    world = LatentWorld()
    traj = world.simulate(8192, 8, gen(1))
    assert traj.frames.mean().abs() < 0.03 and traj.frames.std((0, 1)).sub(1).abs().max() < 0.03
    assert world.step**2 * 2 / 5 + world.radius**2 / 2 + world.jitter**2 + world.reversion**2 == pytest.approx(1)
    again = world.simulate(8192, 8, gen(1))
    assert torch.equal(traj.frames, again.frames) and torch.equal(traj.actions, again.actions)


def test_bad_parameters_are_refused():
    for bad in (dict(modes=1), dict(jitter=0.0), dict(reversion=1.0), dict(radius=1.5)):
        with pytest.raises(ValueError):
            LatentWorld(**bad)
    with pytest.raises(ValueError, match="draws"):
        LatentWorldTask(draws=0)


# --- the exact flow ----------------------------------------------------------------------------------------


def test_posterior_mean_by_hand():
    """Two modes at -1 and +1 on the first axis, jitter 0.5, tau = 0.5, z = (0.2, 0): Bayes written out."""
    world = LatentWorld(modes=2, radius=0.5, jitter=0.5, reversion=0.0)
    centres = torch.tensor([[[-1.0, 0.0], [1.0, 0.0]]])
    z, tau, s = torch.tensor([[0.2, 0.0]]), 0.5, 0.5
    v = tau**2 * s**2 + (1 - tau) ** 2  # 0.3125: the variance of z given the mode
    like = [math.exp(-((0.2 - tau * c) ** 2) / (2 * v)) for c in (-1.0, 1.0)]
    w_plus = like[1] / sum(like)
    means = [c + tau * s**2 / v * (0.2 - tau * c) for c in (-1.0, 1.0)]
    expected = (1 - w_plus) * means[0] + w_plus * means[1]
    got = world.posterior_mean(z, torch.tensor([tau]), centres)
    assert got[0, 0].item() == pytest.approx(expected, rel=1e-6) and got[0, 1].item() == pytest.approx(0.0, abs=1e-7)
    # Limits: pure noise gives the mean of the modes, a clean input gives itself.
    assert torch.allclose(world.posterior_mean(z, torch.tensor([0.0]), centres), torch.zeros(1, 2), atol=1e-7)
    assert torch.allclose(world.posterior_mean(z, torch.tensor([1.0]), centres), z)


def test_posterior_mean_matches_monte_carlo():
    world = LatentWorld(modes=3, radius=0.3, jitter=0.05)
    centres = world.outcomes(torch.tensor([[0.4, -0.2]]), torch.tensor([2]))
    x1, _ = world.draw(centres.expand(400_000, 3, 2), gen(2))
    z, tau = torch.tensor([[0.3, 0.2]]), 0.7
    weights = torch.exp(-(z - tau * x1).square().sum(-1) / (2 * (1 - tau) ** 2))  # likelihood of z given x1
    monte_carlo = (weights[:, None] * x1).sum(0) / weights.sum()
    assert torch.allclose(world.posterior_mean(z, torch.tensor([tau]), centres)[0], monte_carlo, atol=5e-3)


def test_exact_flow_blurs_at_few_steps_and_is_sharp_at_many():
    task = LatentWorldTask()
    result = task.exact_flow_validity(ShortcutForcing(k_max=64), [1, 4, 64], 1024, gen())
    assert result[1]["valid"] == 0.0 and result[1]["mode_tv"] == 1.0  # one step: the ring's centre
    assert result[4]["valid"] <= 0.45 and result[64]["valid"] >= 0.97 and result[64]["mode_tv"] < 0.06


# --- validity and mode TV of reference samplers ------------------------------------------------------------


class NextFrame(nn.Module):
    """Test models that read each frame's predecessor from the context (shown noise-free at level tau)."""

    def __init__(self, world: LatentWorld) -> None:
        super().__init__()
        self.world = world

    def forward(self, z, tau, d, *, actions):
        out = z.clone()
        previous = z[:, :-1] / tau[:, :-1, None]
        out[:, 1:] = self.next_frames(self.world.outcomes(previous, actions[:, 1:]))
        return out

    def next_frames(self, centres):
        raise NotImplementedError


class Exact(NextFrame):
    def next_frames(self, centres):
        return self.world.draw(centres, torch.default_generator)[0]


class Collapsed(NextFrame):
    def next_frames(self, centres):
        return centres[..., 0, :]  # always the first ring point, sharp


class Mean(NextFrame):
    def next_frames(self, centres):
        return centres.mean(-2)  # the blur one Euler step of the exact flow returns


BIG = dict(context=2, horizon=3, n_eval=512, draws=4, width=16, depth=1, heads=2)  # N = 2048 one-step draws


def evaluate(task: LatentWorldTask, model: nn.Module, steps=(1,)) -> dict:
    torch.manual_seed(0)
    return task.evaluate(Sampler(model, ShortcutForcing(k_max=4)), list(steps), gen()).metrics


def test_an_exact_sampler_is_valid_and_matches_the_mode_frequencies():
    task = LatentWorldTask(**BIG)
    metrics = evaluate(task, Exact(task.world))[1]
    bound = 0.5 * math.sqrt(15 / 2048)  # E[TV] of an exact sampler: 5 actions x 3 modes, 0.043
    assert metrics["valid"] > 0.98 and metrics["rollout_valid"] > 0.98
    assert metrics["mode_tv"] < 1.5 * bound and metrics["mode_tv_floor"] < 1.5 * bound
    assert set(metrics) == set(task.metric_directions)


def test_a_collapsed_sampler_is_valid_but_misses_two_thirds_of_the_modes():
    task = LatentWorldTask(**BIG)
    metrics = evaluate(task, Collapsed(task.world))[1]
    assert metrics["valid"] == 1.0 and metrics["mode_tv"] == pytest.approx(2 / 3, abs=1e-6)


def test_a_blur_of_the_modes_is_never_valid():
    task = LatentWorldTask(**BIG)
    metrics = evaluate(task, Mean(task.world), steps=(1, 4))
    for k in (1, 4):
        assert metrics[k]["valid"] == 0.0 and metrics[k]["rollout_valid"] == 0.0 and metrics[k]["mode_tv"] == 1.0


def test_samples_show_the_ring_in_the_commanded_frame():
    task = LatentWorldTask(**SMALL)
    torch.manual_seed(0)
    evaluation = task.evaluate(Sampler(Collapsed(task.world), ShortcutForcing(k_max=4)), [1], gen())
    points = torch.from_numpy(evaluation.samples[1])
    assert points.shape == (SMALL["n_eval"] * SMALL["draws"], 2)
    assert torch.allclose(points, task.world.ring()[0].expand_as(points), atol=1e-5)
    real = torch.from_numpy(evaluation.real)  # the simulator's draws: on the ring, within 3 jitter
    assert real.shape[1] == 2 and (real.norm(dim=-1) - 0.3).abs().max() < 0.15 + 1e-6


# --- end to end --------------------------------------------------------------------------------------------


def test_experiment_file_builds_the_task_and_a_short_trial_runs():
    experiment = yaml.safe_load((Path(__file__).parents[1] / "experiments" / "latent_world.yaml").read_text())
    assert experiment["task"] == "latent_world"
    task = make_task("latent_world", experiment["task_params"])
    assert isinstance(task, LatentWorldTask) and task.primary_metric in task.metric_directions
    result = run_trial(
        dict(
            task="latent_world",
            task_params={**experiment["task_params"], **SMALL},
            objective=dict(k_max=4),
            train=dict(steps=3, batch_size=8),
            eval=dict(steps=[1, 4]),
        )
    )
    assert result.status == "ok" and set(result.metrics) == {1, 4}
    assert result.samples[4].shape == (SMALL["n_eval"] * SMALL["draws"], 2)
