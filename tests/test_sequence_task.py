"""The sequence task: simulator, per-frame (tau, d) through the objective, causality, rollout and metrics."""

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from ablate.objective import ShortcutForcing, Variant
from ablate.tasks import Sampler, make_task
from ablate.tasks.sequence import MOVES, NO_ACTION, PERPENDICULAR, SequenceTask, World
from ablate.trial import run_trial

torch.set_num_threads(1)
SMALL = dict(context=2, horizon=4, n_eval=24, width=32, depth=2, heads=2)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the simulator -----------------------------------------------------------------------------------------


def test_simulator_is_deterministic_given_the_seed():
    world = World(size=8, object_size=2, slip=0.5)
    a, b = world.simulate(32, 10, gen(3)), world.simulate(32, 10, gen(3))
    assert torch.equal(a.frames, b.frames) and torch.equal(a.actions, b.actions)
    assert torch.equal(a.positions, b.positions)
    assert not torch.equal(a.positions, world.simulate(32, 10, gen(4)).positions)


def test_simulator_obeys_its_physics():
    world = World(size=8, object_size=2)
    traj = world.simulate(512, 12, gen(0))
    assert traj.frames.shape == (512, 12, 8, 8) and traj.actions.shape == (512, 12)
    assert (traj.actions[:, 0] == NO_ACTION).all() and (traj.actions[:, 1:] < NO_ACTION).all()
    assert ((traj.positions >= 0) & (traj.positions <= world.span)).all()
    assert ((traj.frames == 1).sum((-1, -2)) == 4).all()  # one 2x2 object in every frame
    assert torch.equal(world.decode(traj.frames), traj.positions)
    moves = traj.positions.diff(dim=1)
    # Away from the walls the object moves exactly as its action says.
    inside = ((traj.positions[:, :-1] > 0) & (traj.positions[:, :-1] < world.span)).all(-1)
    assert inside.any() and torch.equal(moves[inside], MOVES[traj.actions[:, 1:]][inside])
    assert moves.abs().sum(-1).max() == 1  # one cell per step, never diagonal


def test_a_slippery_world_moves_sideways_sometimes_and_never_elsewhere():
    world = World(size=8, object_size=2, slip=0.5)
    traj = world.simulate(2048, 6, gen(0))
    assert ((traj.frames == 1).sum((-1, -2)) == 4).all() and torch.equal(world.decode(traj.frames), traj.positions)
    moves = traj.positions.diff(dim=1)
    actions = traj.actions[:, 1:]
    inside = ((traj.positions[:, :-1] > 0) & (traj.positions[:, :-1] < world.span)).all(-1) & (actions > 0)
    as_commanded = (moves == MOVES[actions]).all(-1)[inside]
    assert 0.4 < as_commanded.float().mean() < 0.6  # slip = 0.5
    sideways = (moves.unsqueeze(-2) == MOVES[PERPENDICULAR[actions]]).all(-1).any(-1)[inside]
    assert (as_commanded | sideways).all() and (as_commanded ^ sideways).all()
    assert (moves[actions == 0] == 0).all()  # "none" never slips
    # Every simulated step is among the outcomes the evaluation accepts.
    reach = world.outcomes(traj.positions[:, :-1], actions)
    assert (reach == traj.positions[:, 1:].unsqueeze(-2)).all(-1).any(-1).all()
    # Slipping is drawn after the start and the actions: the same seed gives the same actions at any slip.
    assert torch.equal(World(slip=0.0).simulate(64, 6, gen(1)).actions, World(slip=0.5).simulate(64, 6, gen(1)).actions)


def test_outcomes_and_cleanliness():
    world = World(size=8, object_size=2, slip=0.5)
    up, right = 1, 4
    reach = world.outcomes(torch.tensor([[3, 3], [0, 6]]), torch.tensor([up, right]))
    assert reach[0].tolist() == [[2, 3], [3, 2], [3, 4]]
    assert reach[1].tolist() == [[0, 5], [1, 6], [1, 6]]  # right and up bounce off the walls
    assert World(slip=0.0).outcomes(torch.tensor([3, 3]), torch.tensor(up)).tolist() == [[2, 3]] * 3
    sharp = world.render(torch.tensor([[2, 3], [3, 2], [3, 4]]))
    assert world.is_clean(sharp).all()
    assert not world.is_clean(sharp.mean(0))  # the average of the modes is not one object
    assert not world.is_clean(torch.full((8, 8), -1.0))
    soft = sharp[0] * 0.6 - 0.1  # object pixels at 0.5, background at -0.7: clean enough
    assert world.is_clean(soft)
    tie = (sharp * torch.tensor([0.5, 0.25, 0.25])[:, None, None]).sum(0)  # commanded-only pixels exactly 0
    assert not world.is_clean(tie) and not world.is_clean(tie + 1e-6)  # rounding cannot make a blur clean


def test_a_step_into_a_wall_bounces_back():
    world = World(size=8, object_size=2)
    up, down, left, right = 1, 2, 3, 4
    start = torch.tensor([[0, 6], [0, 6], [3, 3]])
    assert world.step(start, torch.tensor([up, right, down])).tolist() == [[1, 6], [0, 5], [4, 3]]
    assert world.step(start, torch.tensor([left, down, 0])).tolist() == [[0, 5], [1, 6], [3, 3]]


# --- the model and the objective ---------------------------------------------------------------------------


def test_per_frame_tau_and_d_reach_the_model_with_shape_b_t():
    task = SequenceTask(**SMALL)
    model = task.make_model()
    objective = ShortcutForcing(Variant.paper(), k_max=8)
    x1, kwargs = task.batch(16, gen())
    tau, d = objective.sample_tau_d(x1.shape[: task.lead_dims], generator=gen(1))
    assert tau.shape == d.shape == (16, task.length)
    assert (d != d[:, :1]).any()  # drawn per frame, not per sequence

    calls = []
    original = model.forward
    model.forward = lambda z, tau, d, *, actions: (
        calls.append((z.shape, tau.shape, d.shape, actions.shape)),
        original(z, tau, d, actions=actions),
    )[1]
    out = objective.loss(model, x1, tau=tau, d=d, teacher=model, **kwargs)
    assert out.per_sample.shape == (16, task.length) and torch.isfinite(out.loss)
    assert len(calls) == 3  # student, then two teacher calls on the sequences holding bootstrap frames
    for z_shape, tau_shape, d_shape, action_shape in calls:
        assert z_shape[1:] == x1.shape[1:] and tau_shape == d_shape == action_shape == z_shape[:2]


def test_model_is_causal_in_time():
    task = SequenceTask(**SMALL)
    model = task.make_model().eval()
    x1, kwargs = task.batch(4, gen())
    z, t = torch.randn_like(x1), 3
    tau, d = torch.rand(4, task.length) * 0.5, torch.full((4, task.length), 0.125)
    before = model(z, tau, d, **kwargs)

    z2, tau2, d2, actions2 = z.clone(), tau.clone(), d.clone(), kwargs["actions"].clone()
    z2[:, t:] += 1.0
    tau2[:, t:], d2[:, t:], actions2[:, t:] = 0.9, 0.5, (actions2[:, t:] + 1) % NO_ACTION
    after = model(z2, tau2, d2, actions=actions2)
    assert torch.allclose(before[:, :t], after[:, :t], atol=1e-5)  # the past never sees the future
    assert not torch.allclose(before[:, t:], after[:, t:], atol=1e-3)

    z3 = z.clone()
    z3[:, 0] += 1.0
    assert not torch.allclose(model(z3, tau, d, **kwargs)[:, -1], before[:, -1], atol=1e-3)  # it sees the past


def test_model_accepts_flat_frames():
    task = SequenceTask(**SMALL)
    model = task.make_model()
    x1, kwargs = task.batch(2, gen())
    tau = d = torch.full((2, task.length), 0.5)
    image = model(x1, tau, d, **kwargs)
    flat = model(x1.flatten(2), tau, d, **kwargs)
    assert flat.shape == (2, task.length, 64) and torch.allclose(flat, image.flatten(2))


# --- rollout and metrics -----------------------------------------------------------------------------------


class NextFrameModel(nn.Module):
    """Test models that keep frame 0 and predict each later frame from the frame before it and its action."""

    def __init__(self, world: World) -> None:
        super().__init__()
        self.world = world

    def forward(self, z, tau, d, *, actions):
        frames = z.reshape(*z.shape[:2], self.world.size, self.world.size)
        out = frames.clone()
        out[:, 1:] = self.next_frames(self.world.decode(frames[:, :-1]), actions[:, 1:])
        return out.reshape(z.shape)

    def next_frames(self, positions, actions):
        raise NotImplementedError


class PhysicsOracle(NextFrameModel):
    """The commanded move, always a valid one."""

    def next_frames(self, positions, actions):
        return self.world.render(self.world.step(positions, actions))


class Background(nn.Module):
    """Predicts an empty frame: the object is always missing."""

    def forward(self, z, tau, d, *, actions):
        return -torch.ones_like(z)


@pytest.mark.parametrize("model_d", [None, 1 / 8])
def test_rollout_of_a_perfect_model_is_perfect(model_d):
    task = SequenceTask(**SMALL)
    sampler = Sampler(PhysicsOracle(task.world), ShortcutForcing(k_max=8), model_d)
    evaluation = task.evaluate(sampler, [1, 2, 8], gen())
    assert set(evaluation.metrics) == {1, 2, 8}
    for metrics in evaluation.metrics.values():
        per_step = {f"{m}_h{h}" for m in ("pos_acc", "frame_mse") for h in range(1, 5)}
        assert set(metrics) == {"pos_acc", "frame_mse", "mode_tv", "mode_tv_floor"} | per_step
        assert set(metrics) == set(task.metric_directions)
        assert metrics["pos_acc"] == 1.0 and metrics["frame_mse"] == 0.0
    samples = evaluation.samples[2]
    assert samples.shape == (16, task.length, 8, 8)
    truth = task.world.simulate(task.n_eval, task.length, gen()).frames
    assert torch.equal(torch.from_numpy(samples[:, : task.context]), truth[:16, : task.context])  # same context


def test_rollout_of_a_perfect_model_in_a_deterministic_world_reproduces_the_simulation():
    task = SequenceTask(**SMALL, slip=0.0)
    evaluation = task.evaluate(Sampler(PhysicsOracle(task.world), ShortcutForcing(k_max=8)), [2], gen())
    truth = task.world.simulate(task.n_eval, task.length, gen()).frames
    assert torch.equal(torch.from_numpy(evaluation.samples[2]), truth[:16])
    # the real panel of the report's sample figures: the simulator's own rollouts, in the samples' format
    assert torch.equal(torch.from_numpy(evaluation.real), truth[:16])


class Blur(NextFrameModel):
    """The average of the possible next frames: what few-step plain flow tends to produce."""

    def next_frames(self, positions, actions):
        weights = torch.tensor([0.5, 0.25, 0.25])
        return (self.world.render(self.world.outcomes(positions, actions)) * weights[:, None, None]).sum(-3)


def test_a_blurry_average_of_the_modes_is_never_valid():
    task = SequenceTask(**SMALL, slip=0.5)
    metrics = task.evaluate(Sampler(Blur(task.world), ShortcutForcing(k_max=8)), [1], gen()).metrics[1]
    assert metrics["pos_acc"] < 0.3  # valid only after "none" actions, which never slip
    assert metrics["frame_mse"] > 0.05


def test_exact_flow_blurs_at_one_step_and_is_sharp_from_four():
    """The ceiling on what a few-step objective can win here: the exact flow's own few-step validity."""
    task = SequenceTask(**SMALL, slip=0.5)
    validity = task.exact_flow_validity(ShortcutForcing(k_max=16), [1, 2, 4, 16], 512, gen())
    assert validity[1] < 0.3  # one step returns the posterior mean: a blur unless the move was certain
    assert validity[4] > 0.95 and validity[16] > 0.99  # by four steps the noise has picked one mode
    certain = SequenceTask(**SMALL, slip=0.0).exact_flow_validity(ShortcutForcing(k_max=16), [1], 256, gen())
    assert certain[1] == 1.0  # a deterministic world has nothing to blur


class ExactSampler(NextFrameModel):
    """Draws each next frame from the simulator: the commanded move or a slip, with the world's probabilities."""

    def next_frames(self, positions, actions):
        reach = self.world.outcomes(positions, actions)
        probs = torch.tensor([1 - self.world.slip, self.world.slip / 2, self.world.slip / 2])
        pick = torch.multinomial(probs, actions.numel(), replacement=True).reshape(actions.shape)
        return self.world.render(torch.take_along_dim(reach, pick[..., None, None], -2).squeeze(-2))


MODE_TV = dict(context=2, horizon=4, n_eval=512, width=32, depth=2, heads=2)  # N = 2048 generated frames


def test_mode_tv_of_an_exact_sampler_is_sampling_noise():
    torch.manual_seed(0)
    task = SequenceTask(**MODE_TV, slip=0.5)
    metrics = task.evaluate(Sampler(ExactSampler(task.world), ShortcutForcing(k_max=8)), [1], gen()).metrics[1]
    bound = 0.5 * (12 / 2048) ** 0.5  # E[TV] of an exact sampler, 0.038
    assert metrics["pos_acc"] == 1.0
    assert metrics["mode_tv"] < 1.5 * bound and metrics["mode_tv_floor"] < 1.5 * bound


def test_mode_tv_sees_a_model_that_never_slips():
    """pos_acc cannot: the commanded move is always valid. TV = slip x the share of moving actions (4/5)."""
    task = SequenceTask(**MODE_TV, slip=0.5)
    metrics = task.evaluate(Sampler(PhysicsOracle(task.world), ShortcutForcing(k_max=8)), [1], gen()).metrics[1]
    assert metrics["pos_acc"] == 1.0
    assert metrics["mode_tv"] == pytest.approx(0.5 * 4 / 5, abs=0.04)
    certain = SequenceTask(**MODE_TV, slip=0.0)
    oracle = Sampler(PhysicsOracle(certain.world), ShortcutForcing(k_max=8))
    assert certain.evaluate(oracle, [1], gen()).metrics[1]["mode_tv"] == 0.0  # nothing to miss without slips


def test_mode_tv_of_a_blur_is_at_least_its_invalid_share():
    task = SequenceTask(**SMALL, slip=0.5)
    metrics = task.evaluate(Sampler(Blur(task.world), ShortcutForcing(k_max=8)), [1], gen()).metrics[1]
    assert metrics["mode_tv"] >= 1 - metrics["pos_acc"] - 1e-9 and metrics["mode_tv"] > 0.7


def test_mode_tv_splits_a_cell_two_slips_share():
    """At a wall both slips can bounce to one cell: such a frame counts half for each side, as the simulator does."""
    task = SequenceTask(size=8, object_size=2, context=1, horizon=1, slip=0.5)
    right = 4
    start = task.world.render(torch.tensor([[0, 6]]))  # top right corner: up and down both land on (1, 6)
    slipped = task.world.render(torch.tensor([[1, 6]]))
    frames = torch.stack([start, slipped], 1).expand(2, 2, 8, 8)
    actions = torch.tensor([[NO_ACTION, right]] * 2)
    assert task.mode_tv(frames, actions) == pytest.approx(0.5)  # slip for sure vs slip half the time


def test_chance_level():
    assert SequenceTask(slip=0.0).chance_pos_acc == pytest.approx(1 / 49)
    assert 2 / 49 < SequenceTask(slip=0.5).chance_pos_acc < 3 / 49


def test_metrics_of_an_empty_prediction():
    task = SequenceTask(**SMALL)
    metrics = task.evaluate(Sampler(Background(), ShortcutForcing(k_max=8)), [4], gen()).metrics[4]
    assert metrics["frame_mse"] == pytest.approx(4 * 4 / 64)  # 4 object pixels of 64 off by 2
    assert all(metrics[f"frame_mse_h{h}"] == pytest.approx(0.25) for h in range(1, 5))
    assert metrics["pos_acc"] == 0.0  # an empty frame is never one clean object


def test_rollout_feeds_context_at_the_context_level_and_only_the_past():
    task = SequenceTask(**SMALL)
    objective = ShortcutForcing(k_max=16)
    seen = []

    class Spy(nn.Module):
        def forward(self, z, tau, d, *, actions):
            seen.append((z.shape[1], tau[0].tolist(), d[0].tolist(), actions.shape[1]))
            return torch.zeros_like(z)

    task.evaluate(Sampler(Spy(), objective), [2], gen())
    assert len(seen) == task.horizon * 2  # O(H * K) calls
    level = task.context_level(objective.d_min)
    assert level == 0.875
    for i, (length, tau, d, n_actions) in enumerate(seen):
        assert length == n_actions == task.context + i // 2 + 1
        assert tau[:-1] == [level] * (length - 1) and d[:-1] == [1 / 16] * (length - 1)
        assert tau[-1] == (i % 2) / 2 and d[-1] == 0.5


def test_context_level_stays_on_the_finest_grid():
    task = SequenceTask(**SMALL)
    for k_max in (1, 2, 4, 16, 64):
        level = task.context_level(1 / k_max)
        assert level <= 1 - 1 / k_max and (level * k_max) == round(level * k_max)
    assert task.context_level(1 / 64) == pytest.approx(58 / 64)


def test_bad_params_are_refused():
    with pytest.raises(ValueError, match="context"):
        SequenceTask(context=0)
    with pytest.raises(ValueError, match="object_size"):
        SequenceTask(size=4, object_size=4)
    with pytest.raises(ValueError, match="slip"):
        SequenceTask(slip=1.5)


# --- end to end --------------------------------------------------------------------------------------------


def test_experiment_file_builds_the_task_and_a_short_trial_runs():
    experiment = yaml.safe_load((Path(__file__).parents[1] / "experiments" / "sequence.yaml").read_text())
    assert experiment["task"] == "sequence"
    task = make_task("sequence", experiment["task_params"])
    assert isinstance(task, SequenceTask) and task.primary_metric in task.metric_directions

    result = run_trial(
        {
            "task": "sequence",
            "task_params": {**experiment["task_params"], **SMALL},
            "objective": {"k_max": 4},
            "train": {"steps": 3, "batch_size": 8},
            "eval": {"steps": [1, 4]},
        }
    )
    assert result.status == "ok" and set(result.metrics) == {1, 4}
    assert result.samples[4].shape == (16, task.context + SMALL["horizon"], task.world.size, task.world.size)
