"""The knobs that make public implementations cells, each pinned against the spec's equations.

Defaults are Eq. 4 and Eq. 7 as docs/objective-spec.md writes them; each knob moves one choice to what a
public implementation does (the dreamer4 package, the reviewed code), and nothing else.
"""

from __future__ import annotations

import math

import pytest
import torch

from ablate.objective import ShortcutForcing, Variant, flow_error, ramp_weight

K = 16


class Linear(torch.nn.Module):
    """A per-frame x-predictor that reads d per frame whether it is given per frame or per sequence."""

    def __init__(self, features: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(features + 2, features).double()
        self.seen_d_shapes: list[tuple] = []

    def forward(self, z, tau, d):
        self.seen_d_shapes.append(tuple(d.shape))
        d = d.reshape(d.shape + (1,) * (tau.ndim - d.ndim)).expand_as(tau)
        return self.net(torch.cat([z, tau.unsqueeze(-1), d.unsqueeze(-1)], -1))


def _draws(objective, shape, n=400):
    generator = torch.Generator().manual_seed(1)
    return [objective.sample_tau_d(shape, generator) for _ in range(n)]


def test_d_per_sequence_draws_one_step_size_per_sequence_and_tau_per_frame_on_its_grid():
    objective = ShortcutForcing(Variant.paper(), k_max=K, d_per="sequence")
    for tau, d in _draws(objective, (5, 4), 50):
        assert d.shape == (5,) and tau.shape == (5, 4)
        n = (1 / d)[:, None].expand_as(tau)
        assert torch.allclose(tau * n, torch.round(tau * n)) and (tau + 1 / n <= 1 + 1e-6).all()
    assert len({tuple(tau[0].tolist()) for tau, _ in _draws(objective, (5, 4), 50)}) > 1  # frames differ


def test_a_step_size_per_sequence_equals_the_same_step_size_given_per_frame():
    """Eq. 7 reads d per frame; a per-sequence d is that d at every frame of its sequence, and the model and
    both teacher calls are given d as it was drawn, (B,)."""
    objective = ShortcutForcing(Variant.paper(), k_max=K, d_per="sequence")
    x1 = torch.randn(4, 3, 3, dtype=torch.float64)
    noise = torch.randn_like(x1)
    tau = torch.tensor([[0.0, 0.25, 0.5], [0.5, 0.75, 0.0], [0.125, 0.5, 0.25], [0.25, 0.0, 0.5]], dtype=torch.float64)
    d = torch.tensor([0.25, 0.25, 1 / K, 0.5], dtype=torch.float64)
    per_sequence, per_frame = Linear(), Linear()
    a = objective.loss(per_sequence, x1, noise=noise, tau=tau, d=d)
    b = ShortcutForcing(Variant.paper(), k_max=K).loss(per_frame, x1, noise=noise, tau=tau, d=d[:, None].expand(4, 3))
    assert torch.allclose(a.per_sample, b.per_sample, rtol=1e-12, atol=0)
    assert set(per_sequence.seen_d_shapes) == {(4,), (3,)}  # the student's batch, then the teacher's 3 sequences
    assert a.n_bootstrap == 9 and a.n_flow == 3


def test_the_flow_term_on_bootstrap_rows_adds_exactly_the_ramped_flow_error_there():
    x1 = torch.randn(8, 3, dtype=torch.float64)
    noise = torch.randn_like(x1)
    tau = torch.full((8,), 0.25, dtype=torch.float64)
    d = torch.tensor([0.25, 0.5, 1 / K, 0.25, 1 / K, 0.5, 0.25, 1 / K], dtype=torch.float64)
    model = Linear()
    off = ShortcutForcing(Variant.paper(), k_max=K, ramp="flow").loss(model, x1, noise=noise, tau=tau, d=d)
    on = ShortcutForcing(Variant.paper(), k_max=K, ramp="flow", flow_on_bootstrap=True).loss(
        model, x1, noise=noise, tau=tau, d=d
    )
    z = (1 - tau[:, None]) * noise + tau[:, None] * x1
    expected = ramp_weight(tau) * flow_error(model(z, tau, d), x1, 1)
    is_boot = d > 1 / K
    assert torch.allclose((on.per_sample - off.per_sample)[is_boot], expected[is_boot], rtol=1e-12)
    assert torch.equal(on.per_sample[~is_boot], off.per_sample[~is_boot])


def test_one_coin_per_batch_makes_every_row_bootstrap_or_every_row_flow_at_its_probability():
    objective = ShortcutForcing(Variant.paper(), k_max=K, bootstrap_draw="batch", full_step=False)
    draws = _draws(objective, (64,))
    kinds = []
    for _, d in draws:
        boot = d > 1 / K
        assert boot.all() or not boot.any()
        kinds.append(bool(boot.all()))
        assert (d < 1).all()  # full_step=False: d = 1 never drawn
    expected = 1 - 1 / math.log2(K)  # the dreamer4 package's default
    assert abs(sum(kinds) / len(kinds) - expected) < 4 * math.sqrt(expected * (1 - expected) / len(kinds))
    levels = torch.cat([d for _, d in draws if (d > 1 / K).all()])
    assert set((1 / levels).round().int().tolist()) == {2, 4, 8}  # d from {2/k_max, ..., 1/2}
    always = ShortcutForcing(Variant.paper(), k_max=K, bootstrap_draw="batch", bootstrap_probability=0.0)
    assert all((d == 1 / K).all() for _, d in _draws(always, (8,), 20))


def test_without_the_full_step_row_draws_never_give_d_1_and_still_give_every_other_level():
    for step_sizes in ("uniform", "inverse"):
        objective = ShortcutForcing(Variant.paper(), k_max=K, full_step=False, step_sizes=step_sizes)
        counts = set()
        for _, d in _draws(objective, (64,), 100):
            counts |= set((1 / d).round().int().tolist())
        assert counts == {2, 4, 8, 16}, step_sizes


def test_the_sampler_clamp_is_the_clamp_of_the_unclamped_samples():
    model = Linear(2)
    noise = torch.randn(50, 2, dtype=torch.float64) * 3
    free = ShortcutForcing(Variant.paper(), k_max=K).sample(model, noise, 4)
    clamped = ShortcutForcing(Variant.paper(), k_max=K, sample_clamp=1.0).sample(model, noise, 4)
    assert torch.equal(clamped, free.clamp(-1, 1)) and (free.abs() > 1).any()


def test_defaults_draw_exactly_what_they_drew_before_the_knobs():
    """Same config and seed, same numbers: the knobs at their defaults take the same random draws."""
    generator = torch.Generator().manual_seed(3)
    tau, d = ShortcutForcing(Variant.paper(), k_max=K).sample_tau_d((6, 5), generator)
    generator = torch.Generator().manual_seed(3)
    level = torch.randint(0, 5, (6, 5), generator=generator)
    n = torch.tensor([1.0, 2, 4, 8, 16])[level]
    u = torch.rand((6, 5), generator=generator)
    assert torch.equal(d, 1 / n) and torch.equal(tau, torch.clamp(torch.floor(u * n), max=n - 1) / n)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(bootstrap_draw="batches"), "bootstrap_draw"),
        (dict(d_per="token"), "d_per"),
        (dict(bootstrap_probability=0.5), "needs bootstrap_draw='batch'"),
        (dict(bootstrap_draw="batch", bootstrap_probability=1.5), "in [0, 1]"),
        (dict(bootstrap_draw="batch", bootstrap_fraction=0.25), "per-row share"),
        (dict(sample_clamp=0.0), "sample_clamp"),
    ],
)
def test_impossible_knob_values_are_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ShortcutForcing(Variant.paper(), k_max=K, **kwargs)


def test_the_packed_form_gives_the_objectives_rows_with_the_new_knobs():
    """ablate.packed_objective (both teacher calls on every row) equals ShortcutForcing.loss row by row for
    the dreamer4 preset's knobs: the flow term on bootstrap rows, a step size per sequence, batch coins."""
    from ablate.packed_objective import Knobs, loss_every_row

    generator = torch.Generator().manual_seed(4)
    model = Linear()
    for flow_on_bootstrap in (True, False):
        objective = ShortcutForcing(
            Variant.paper(),
            k_max=K,
            ramp="flow",
            flow_on_bootstrap=flow_on_bootstrap,
            d_per="sequence",
            bootstrap_draw="batch",
            full_step=False,
            bootstrap_probability=1.0,
        )
        x1 = torch.randn(6, 4, 3, generator=generator, dtype=torch.float64)
        noise = torch.randn(6, 4, 3, generator=generator, dtype=torch.float64)
        tau, d = objective.sample_tau_d((6, 4), generator)
        tau, d = tau.double(), d.double()
        expected = objective.loss(model, x1, noise, tau, d).per_sample
        with torch.no_grad():
            rows, is_boot = loss_every_row(model, model, x1, noise, tau, d, Knobs.of(objective, torch.float64))
        torch.testing.assert_close(rows, expected.detach(), rtol=1e-10, atol=1e-12)
        assert is_boot.all()


def test_a_fixed_teacher_context_and_next_frames_take_a_step_size_per_sequence():
    """teacher_context="fixed" gives each bootstrap frame its own copy of the sequence: with d per sequence
    every frame of a bootstrap sequence steps, and the copies are given their sequence's d, (copies,).
    Sampler.next_frames tells the model the new frames' d for the whole sequence."""
    from ablate.tasks import Sampler

    x1 = torch.randn(3, 4, 3, dtype=torch.float64)
    noise = torch.randn_like(x1)
    tau = torch.tensor([[0.0, 0.25, 0.5, 0.25], [0.5, 0.0, 0.25, 0.5], [0.25, 0.5, 0.0, 0.25]], dtype=torch.float64)
    d = torch.tensor([0.25, 1 / K, 0.5], dtype=torch.float64)
    model = Linear()
    per_sequence = ShortcutForcing(Variant.paper(), k_max=K, d_per="sequence", teacher_context="fixed")
    per_frame = ShortcutForcing(Variant.paper(), k_max=K, teacher_context="fixed")
    a = per_sequence.loss(model, x1, noise=noise, tau=tau, d=d)
    b = per_frame.loss(Linear(), x1, noise=noise, tau=tau, d=d[:, None].expand(3, 4))
    assert torch.allclose(a.per_sample, b.per_sample, rtol=1e-12, atol=0)
    assert (8,) in model.seen_d_shapes  # one copy per bootstrap frame: 2 sequences x 4 frames
    sampler_model = Linear()
    sampler = Sampler(sampler_model, per_sequence)
    past = torch.randn(5, 2, 3, dtype=torch.float64)
    out = sampler.next_frames(
        past, torch.full((5, 2), 1 - 1 / K, dtype=torch.float64), torch.randn(5, 1, 3).double(), 4
    )
    assert out.shape == (5, 1, 3) and set(sampler_model.seen_d_shapes) == {(5,)}
