"""An action-conditioned video world and a causal dynamics model: shortcut forcing as DreamerV4 uses it.

The toy tasks sample one vector at a time. DreamerV4 trains a *dynamics model*: every frame of a sequence has
its own signal level tau and step size d (diffusion forcing), the model is causal in time and conditioned on
actions, and video is generated frame by frame from its own earlier output, so errors accumulate. This task
reproduces that setting at a size one CPU core trains in minutes.

The world: one square object on a small grid; each discrete action moves it one cell up, down, left or right
(or leaves it in place), and a move into a wall bounces: the object ends one cell away from the wall instead.
The world is stochastic, as real video is: with probability `slip` a move goes astray, one cell in one of the
two perpendicular directions (chosen uniformly), so the next frame given the past and the action has up to three
modes. A flow model sampled with one Euler step returns a blurry average of the modes; a good one-step
sampler returns one of them, sharp. The simulator (deterministic given its generator) defines which frames
are possible, and evaluation scores validity, not agreement with one draw.

Measured (experiments/sequence.yaml, 16 variants + the flow baseline x seeds 0-2, 3000 steps of batch 64,
k_max 16): the paper variant beats plain flow at K = 1 (pos_acc 0.102 vs 0.039) and loses from K = 2 on
(K = 4: 0.214 vs 0.415). `exact_flow_validity` says why it cannot win at K = 4 in this world: the exact flow
(posterior-mean x-prediction over the simulator's outcomes) is valid 21% of the time at K = 1, 92% at K = 2
and 99.9% at K = 4, so a perfectly trained flow model leaves nothing for a few-step objective to recover at
K >= 4; what remains is how fast each objective learns the dynamics, and the shortcut objective, whose flow
rows are only 1/5 of the frames, learns them several times more slowly.

`mode_tv` (see `SequenceTask`) sees what pos_acc cannot: a model that never slips is valid every time but
draws the commanded move where the simulator slips half the time.
Context frames: in training the objective draws tau and d for every frame (so clean context is rare); at
evaluation they sit at `context_level` with d = d_min (ablate/tasks/world_model.py says both in full).

Convention (the project's): tau = 0 is noise, tau = 1 is clean; pixels are -1 (background) or +1 (object).
Actions: `actions[:, t]` is the action that produced frame t from frame t - 1; frame 0 gets `NO_ACTION`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ablate.objective import ShortcutForcing
from ablate.tasks import Declarations, Evaluation, Sampler
from ablate.tasks.embedding import LevelEmbedding
from ablate.tasks.world_model import context_level, outcome_tv, rollout

# Move (row, col) per action: none, up, down, left, right.
MOVES = torch.tensor([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]])
N_ACTIONS = len(MOVES)
NO_ACTION = N_ACTIONS  # the "action" of frame 0, which no action produced
MAX_SAMPLES = 16
CLEAN_TOLERANCE = 0.75  # the most a pixel of a clean frame may differ from -1 or +1
# The two moves perpendicular to each action's (the "none" action never slips: both are "none").
PERPENDICULAR = torch.tensor([[0, 0], [3, 4], [3, 4], [1, 2], [1, 2]])


@dataclass
class Trajectories:
    frames: Tensor  # (N, T, size, size) float32 in {-1, +1}
    actions: Tensor  # (N, T) int64; actions[:, 0] == NO_ACTION
    positions: Tensor  # (N, T, 2) int64: the object's top-left cell (row, col)


@dataclass(frozen=True)
class World:
    """The simulator: deterministic given the generator, vectorised over trajectories.

    `slip`: probability that a move goes one cell in a (uniformly chosen) perpendicular direction instead.
    """

    size: int = 8
    object_size: int = 2
    slip: float = 0.0

    def __post_init__(self) -> None:
        if not 1 <= self.object_size < self.size:
            raise ValueError(f"object_size={self.object_size} must be in [1, size - 1 = {self.size - 1}]")
        if not 0.0 <= self.slip <= 1.0:
            raise ValueError(f"slip={self.slip} must be in [0, 1]")

    @property
    def span(self) -> int:
        """Largest coordinate of the object's top-left cell."""
        return self.size - self.object_size

    @property
    def n_positions(self) -> int:
        """Number of distinct object positions: 1 / n_positions is the chance level of position accuracy."""
        return (self.span + 1) ** 2

    def simulate(self, n: int, length: int, generator: torch.Generator) -> Trajectories:
        """`n` trajectories of `length` frames: a uniformly random start, uniformly random actions, random slips."""
        position = torch.randint(0, self.span + 1, (n, 2), generator=generator)
        actions = torch.randint(0, N_ACTIONS, (n, length), generator=generator)
        actions[:, 0] = NO_ACTION
        slips = torch.rand(n, length, generator=generator) < self.slip
        sides = torch.randint(0, 2, (n, length), generator=generator)
        moves = torch.where(slips, PERPENDICULAR[actions.clamp(max=N_ACTIONS - 1), sides], actions)
        positions = [position]
        for t in range(1, length):
            position = self.step(position, moves[:, t])
            positions.append(position)
        positions = torch.stack(positions, 1)
        return Trajectories(self.render(positions), actions, positions)

    def step(self, position: Tensor, action: Tensor) -> Tensor:
        """One move, exactly as commanded (no slip); a move that leaves the grid is reflected back (a bounce)."""
        position = position + MOVES[action]
        return torch.where(
            position < 0, -position, torch.where(position > self.span, 2 * self.span - position, position)
        )

    def outcomes(self, position: Tensor, action: Tensor) -> Tensor:
        """(..., 2), (...) -> (..., 3, 2): the positions one step can reach: the commanded move and, if the world
        slips at all, the two perpendicular moves (else the commanded move repeated; with slip = 1 the commanded
        move stays in, a harmless superset)."""
        moves = torch.stack([action, *PERPENDICULAR[action].unbind(-1)], -1)
        if self.slip == 0:
            moves = action.unsqueeze(-1).expand(moves.shape)
        return self.step(position.unsqueeze(-2), moves)

    def is_clean(self, frames: Tensor) -> Tensor:
        """(..., size, size) -> (...): one object at the decoded position, every pixel on its side of 0 by 0.25.

        Each pixel must lie within `CLEAN_TOLERANCE` (0.75) of the clean frame: object pixels above 0.25,
        background below -0.25. A bare threshold at 0 is not enough: the even mix of the three outcomes of a
        slipping move puts the commanded-only pixels at exactly 0, where rounding would decide that a blur is
        clean (it passed 88% of the exact flow's one-step blurs). A stricter margin (0.5) failed half of the
        frames a trained model draws at K = 16, whose worst pixel is typically 0.3-0.6 off.
        """
        return ((frames - self.render(self.decode(frames))).abs() < CLEAN_TOLERANCE).flatten(-2).all(-1)

    def is_valid(self, frames: Tensor, reach: Tensor) -> Tensor:
        """(..., size, size) frames, (..., 3, 2) reachable positions -> (...): clean, at a reachable position."""
        on_reach = (reach == self.decode(frames).unsqueeze(-2)).all(-1).any(-1)
        return on_reach & self.is_clean(frames)

    def render(self, positions: Tensor) -> Tensor:
        """(..., 2) top-left cells -> (..., size, size) frames: -1 background, +1 object."""
        cells = torch.arange(self.size)
        rows = (cells >= positions[..., :1]) & (cells < positions[..., :1] + self.object_size)
        cols = (cells >= positions[..., 1:]) & (cells < positions[..., 1:] + self.object_size)
        return (rows.unsqueeze(-1) & cols.unsqueeze(-2)).float() * 2 - 1

    def decode(self, frames: Tensor) -> Tensor:
        """(..., size, size) frames -> (..., 2): the object-sized window with the largest summed intensity."""
        lead = frames.shape[:-2]
        sums = nn.functional.avg_pool2d(frames.reshape(-1, 1, self.size, self.size).float(), self.object_size, 1)
        best = sums.flatten(1).argmax(1)
        return torch.stack([best // (self.span + 1), best % (self.span + 1)], -1).reshape(*lead, 2)


class DynamicsModel(nn.Module):
    """x-predictor over (B, T, H, W) or (B, T, H*W) sequences: one token per frame, causal attention in time.

    A frame's token sums its noisy pixels, its own (tau, d) embedding, the action that produced it and its
    time index, so every frame can sit at its own signal level (diffusion forcing). The causal mask lets a
    frame see itself and the past only, which is what lets generation run frame by frame.
    """

    def __init__(self, pixels: int, max_length: int, width: int = 64, depth: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.frame_in = nn.Sequential(nn.Linear(pixels, width), nn.GELU(), nn.Linear(width, width))
        self.level = LevelEmbedding(width)
        self.action = nn.Embedding(N_ACTIONS + 1, width)
        self.time = nn.Parameter(0.02 * torch.randn(max_length, width))
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.frame_out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, pixels))

    def forward(self, z: Tensor, tau: Tensor, d: Tensor, *, actions: Tensor) -> Tensor:
        b, t = z.shape[:2]
        tokens = self.frame_in(z.reshape(b, t, -1)) + self.level(tau, d) + self.action(actions) + self.time[:t]
        causal = nn.Transformer.generate_square_subsequent_mask(t, device=z.device)
        hidden = self.blocks(tokens, mask=causal, is_causal=True)
        return self.frame_out(hidden).reshape(z.shape)


class SequenceTask:
    """Train on whole trajectories with per-frame (tau, d); evaluate by autoregressive rollout from context.

    Primary metric `pos_acc`, the validity rate of generated frames (`World.is_valid`): a frame counts when
    it is clean (one object, every pixel on its side of 0 by a margin) and its object sits where the
    simulator could have put it given the previous frame of the rollout (generated or context) and the
    action. In a stochastic world the rollout is one sample of many futures, so it is never compared with
    the one true draw. A blurry average of the possible frames (what one-step flow sampling returns) is not
    clean and fails.
    `frame_mse`: the MSE from each generated frame to the nearest frame the simulator could have produced from
    the previous frame's decoded position: 0 for a sharp valid frame, but a blurry average of the modes scores
    better than a sharp frame in a wrong place, so MSE still rewards blur over a committed mistake.
    Both come per horizon step too (`pos_acc_h<t>`, `frame_mse_h<t>`) to show error growth over the rollout.
    `mode_tv`: over all generated frames, the total variation between the frequencies of their outcome types
    (commanded move, slip to the first or the second perpendicular side, invalid) per action and those of the
    simulator given each frame's previous frame (`world_model.outcome_tv`; a frame on a position two types
    share, e.g. both slips bounced to one cell, counts for each in proportion to its probability). 0 for an
    exact sampler up to sampling noise (E <= 1/2 sqrt(12 / N) for N frames: 0.038 at 256 x 8), `slip` x 4/5
    (0.4 at slip 0.5) for a valid sampler that never slips, >= 1 - pos_acc always. `mode_tv_floor`: the same
    for the simulator's own rollouts (the true trajectories), i.e. its sampling noise.
    """

    name = "sequence"
    sample_format = "video"
    lead_dims = 2
    primary_metric = "pos_acc"

    def __init__(
        self,
        size: int = 8,
        object_size: int = 2,
        context: int = 2,
        horizon: int = 8,
        context_noise: float = 0.1,
        n_eval: int = 256,
        width: int = 64,
        depth: int = 2,
        heads: int = 4,
        slip: float = 0.5,
    ) -> None:
        if context < 1:
            raise ValueError(f"context={context} must be >= 1")
        if horizon < 1:
            raise ValueError(f"horizon={horizon} must be >= 1")
        if not 0.0 <= context_noise < 1.0:
            raise ValueError(f"context_noise={context_noise} must be in [0, 1)")
        if n_eval < 1:
            raise ValueError(f"n_eval={n_eval} must be >= 1")
        self.world = World(size, object_size, slip)
        self.context, self.horizon = context, horizon
        self.length = context + horizon
        self.context_noise = context_noise
        self.n_eval = n_eval
        self.model_shape = dict(width=width, depth=depth, heads=heads)
        self.metric_directions = {
            "pos_acc": "max",
            "frame_mse": "min",
            **{f"pos_acc_h{h}": "max" for h in range(1, horizon + 1)},
            **{f"frame_mse_h{h}": "min" for h in range(1, horizon + 1)},
            "mode_tv": "min",
            "mode_tv_floor": "min",
        }
        self.metric_scales, self.share_metrics, self.learnability_gate = self.declare(n_eval=n_eval, horizon=horizon)

    @classmethod
    def declare(cls, n_eval: int = 256, horizon: int = 8, **_other_params) -> Declarations:
        """The task's declarations (ablate.tasks.Task) for these task params, without building it. The MSE
        changes by factors (log); validity is a share of the n_eval x horizon generated frames (of n_eval
        per horizon step), `mode_tv` a TV in [0, 1] over the same frames. No learnability gate: nothing
        trained on this world has been measured against its exact flow yet (docs/measured.md, "The sequence world")."""
        steps = range(1, horizon + 1)
        scales = {"pos_acc": "raw", "frame_mse": "log", "mode_tv": "raw", "mode_tv_floor": "raw"}
        scales |= {f"pos_acc_h{h}": "raw" for h in steps} | {f"frame_mse_h{h}": "log" for h in steps}
        frames = n_eval * horizon
        shares = {"pos_acc": frames, "mode_tv": frames, "mode_tv_floor": frames}
        shares |= {f"pos_acc_h{h}": n_eval for h in steps}
        return Declarations(scales, shares, [])

    @property
    def chance_pos_acc(self) -> float:
        """Validity rate of a clean object at a uniformly random position (averaged over starts and actions)."""
        world = self.world
        cells = torch.arange(world.span + 1)
        starts = torch.cartesian_prod(cells, cells)
        hits = []
        for action in range(N_ACTIONS):
            reach = world.outcomes(starts, torch.full((len(starts),), action))
            hits.append(torch.tensor([len({tuple(p) for p in r.tolist()}) for r in reach], dtype=torch.float))
        return torch.stack(hits).mean().item() / world.n_positions

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, dict]:
        trajectories = self.world.simulate(batch_size, self.length, generator)
        return trajectories.frames, {"actions": trajectories.actions}

    def make_model(self) -> nn.Module:
        return DynamicsModel(self.world.size**2, self.length, **self.model_shape)

    def context_level(self, d_min: float) -> float:
        """Signal level of context frames (`world_model.context_level`): 0.875 for k_max = 16."""
        return context_level(self.context_noise, d_min)

    def rollout(
        self, sampler: Sampler, trajectories: Trajectories, steps: int, start_noise: Tensor, context_noise: Tensor
    ) -> Tensor:
        """Generate frames context..T-1 one at a time under the true actions (`world_model.rollout`):
        (N, T, H, W), context included, on the CPU."""
        level = self.context_level(sampler.d_min)
        frames, actions = trajectories.frames, trajectories.actions
        return rollout(sampler, frames, actions, self.context, level, steps, start_noise, context_noise)

    def evaluate(self, sampler: Sampler, steps: list[int], generator: torch.Generator) -> Evaluation:
        """Roll out the same trajectories from the same noise for every K and score the generated horizon."""
        trajectories = self.world.simulate(self.n_eval, self.length, generator)
        pixels = self.world.size**2
        start_noise = torch.randn(self.n_eval, self.length, pixels, generator=generator)
        context_noise = torch.randn(self.n_eval, self.length, pixels, generator=generator)
        floor = self.mode_tv(trajectories.frames, trajectories.actions)
        metrics, samples = {}, {}
        for k in steps:
            generated = self.rollout(sampler, trajectories, k, start_noise, context_noise)
            valid, mse = self.score(generated, trajectories.actions)
            valid_per_step, mse_per_step = valid.float().mean(0), mse.mean(0)
            metrics[k] = {
                "pos_acc": valid_per_step.mean().item(),
                "frame_mse": mse_per_step.mean().item(),
                **{f"pos_acc_h{h}": v for h, v in enumerate(valid_per_step.tolist(), start=1)},
                **{f"frame_mse_h{h}": v for h, v in enumerate(mse_per_step.tolist(), start=1)},
                "mode_tv": self.mode_tv(generated, trajectories.actions),
                "mode_tv_floor": floor,
            }
            samples[k] = generated[:MAX_SAMPLES].numpy()
        return Evaluation(metrics, samples, trajectories.frames[:MAX_SAMPLES].numpy())  # real: the simulator's

    @torch.no_grad()
    def exact_flow_validity(
        self, objective: ShortcutForcing, steps: list[int], n: int, generator: torch.Generator
    ) -> dict[int, float]:
        """Validity of one frame generated by K Euler steps of the *exact* flow, for each K in `steps`.

        The exact x-prediction is E[x1 | z, tau], the posterior mean over the frames the simulator can reach
        from a clean previous frame (weighted by the slip probabilities). No trained flow model does better
        with K steps, so 1 minus this is the most any few-step objective can gain over plain flow at K: the
        ceiling on what shortcut forcing can win in this world. Sampled with the objective's own sampler.
        """
        world = self.world
        trajectories = world.simulate(n, 2, generator)
        reach = world.outcomes(trajectories.positions[:, 0], trajectories.actions[:, 1])  # (n, 3, 2)
        modes = world.render(reach).flatten(-2)  # (n, 3, pixels)
        log_prior = torch.tensor([1 - world.slip, world.slip / 2, world.slip / 2]).log()  # repeats add up
        noise = torch.randn(n, world.size**2, generator=generator)

        def posterior_mean(z: Tensor, tau: Tensor, d: Tensor) -> Tensor:
            tau = tau[:, None, None]
            distance = (z[:, None] - tau * modes).square().sum(-1, keepdim=True)
            log_w = log_prior[:, None] - distance / (2 * (1 - tau) ** 2)
            return (log_w.softmax(1) * modes).sum(1)

        validity = {}
        for k in steps:
            frames = objective.sample(posterior_mean, noise, k).reshape(n, world.size, world.size)
            validity[k] = world.is_valid(frames, reach).float().mean().item()
        return validity

    def score(self, frames: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """Rollout frames (N, T, H, W) and actions (N, T) -> validity and nearest-valid-frame MSE, (N, horizon).

        Frame t is judged against the positions the simulator can reach from frame t - 1's decoded position
        under action t (a context frame for the first generated frame, the rollout's own frame after that).
        """
        world = self.world
        positions = world.decode(frames)
        reach = world.outcomes(positions[:, self.context - 1 : -1], actions[:, self.context :])  # (N, H, 3, 2)
        future = frames[:, self.context :]
        valid = world.is_valid(future, reach)
        mse = (future.unsqueeze(2) - world.render(reach)).square().mean((-1, -2)).amin(-1)
        return valid, mse

    def mode_tv(self, frames: Tensor, actions: Tensor) -> float:
        """Rollout frames (N, T, H, W), actions (N, T) -> the TV of the generated frames' outcome types (see above)."""
        world = self.world
        previous = world.decode(frames[:, self.context - 1 : -1]).flatten(0, 1)
        actions = actions[:, self.context :].flatten()
        future = frames[:, self.context :].flatten(0, 1)
        reach = world.outcomes(previous, actions)  # (N, 3, 2): commanded, first side, second side
        slip = torch.tensor([1 - world.slip, world.slip / 2, world.slip / 2], dtype=torch.float64)
        expected = torch.where((actions == 0)[:, None], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), slip)
        hits = (reach == world.decode(future).unsqueeze(-2)).all(-1) & world.is_valid(future, reach).unsqueeze(-1)
        share = hits * expected
        share = torch.where(share.sum(-1, keepdim=True) > 0, share, hits.double())  # slip = 1: commanded kept
        observed = share / share.sum(-1, keepdim=True).clamp(min=1e-12)
        invalid = ~hits.any(-1)
        observed = torch.cat([observed, invalid.double()[:, None]], -1)
        return outcome_tv(
            actions, torch.cat([expected, torch.zeros(len(actions), 1, dtype=torch.float64)], -1), observed
        )
