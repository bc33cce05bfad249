"""The objective against docs/objective-spec.md: every identity there is a test here."""

import math
from functools import partial

import pytest
import torch

from ablate.objective import (
    ShortcutForcing,
    Variant,
    at_least_float32,
    flow_error,
    mean_square,
    noisy_input,
    renoise_half_step,
    velocity,
    velocity_bootstrap_error,
    velocity_half_step,
    x_bootstrap_error,
)

K_MAX = 8


class ToyNet(torch.nn.Module):
    """A small nonlinear x-predictor f(z, tau, d) that treats every row (and frame) independently."""

    def __init__(self, features: int, seed: int = 0, dtype=torch.float64):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(features, features, generator=g, dtype=dtype) / features**0.5)
        self.a = torch.nn.Parameter(torch.randn(features, generator=g, dtype=dtype))
        self.b = torch.nn.Parameter(torch.randn(features, generator=g, dtype=dtype))
        self.calls = []

    def forward(self, z, tau, d, **kwargs):
        self.calls.append(
            dict(z=z.detach().clone(), tau=tau.clone(), d=d.clone(), grad=torch.is_grad_enabled(), kwargs=kwargs)
        )
        flat = z.reshape(*tau.shape, -1)
        t = tau.to(z.dtype).unsqueeze(-1)
        ld = torch.log2(d).to(z.dtype).unsqueeze(-1)
        out = torch.tanh(flat @ self.w + t * self.a + 0.3 * ld * self.b) + 0.5 * flat * t
        return out.reshape(z.shape)


def reference_loss(f, x1, noise, tau, d, variant, k_max, ramp="both"):
    """Eq. 7-8 written independently, row by row, in the code review's inverted convention s = 1 - tau."""
    d_min = 1 / k_max
    tau, d = tau.double(), d.double()
    losses = []
    for i in range(len(x1)):
        s, di = 1 - tau[i : i + 1], d[i : i + 1]
        z = s * noise[i : i + 1] + (1 - s) * x1[i : i + 1]
        g = lambda zz, ss, dd: f(zz, 1 - ss, dd)  # the network, asked in the inverted convention
        x_hat = g(z, s, di)
        w = 1 - 0.9 * s
        if math.isclose(float(di), d_min):
            loss = ((x_hat - x1[i : i + 1]) ** 2).mean() * (w if ramp != "none" else 1)
        else:
            h = di / 2
            x_a = g(z, s, h)
            b1 = (x_a - z) / s
            s_mid = s - h
            z_mid = z + h * b1 if variant.half_step == "velocity" else s_mid * noise[i : i + 1] + (1 - s_mid) * x_a
            x_b = g(z_mid, s_mid, h)
            b2 = (x_b - z_mid) / s_mid
            if variant.bootstrap_space == "velocity":
                err = (((x_hat - z) / s - (b1 + b2) / 2) ** 2).mean()
            else:
                err = ((x_hat - x_b) ** 2).mean()
            loss = err * (s**2 if variant.tau2_weight else 1) * (w if ramp == "both" else 1)
        losses.append(loss.reshape(()))
    return torch.stack(losses)


def draw(obj, batch, features, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(batch, features, generator=g, dtype=dtype)
    noise = torch.randn(batch, features, generator=g, dtype=dtype)
    tau, d = obj.sample_tau_d((batch,), generator=g)
    return x1, noise, tau, d


# --- identities of the spec ----------------------------------------------------------------------------


def test_velocity_with_tau2_equals_x_space_form():
    g = torch.Generator().manual_seed(1)
    z, x_hat, b1, b2 = (torch.randn(32, 5, generator=g, dtype=torch.float64) for _ in range(4))
    tau = torch.rand(32, generator=g, dtype=torch.float64) * 0.9
    weighted = (1 - tau) ** 2 * velocity_bootstrap_error(x_hat, z, tau, b1, b2)
    x_target = z + (1 - tau)[:, None] * (b1 + b2) / 2
    x_form = ((x_hat - x_target) ** 2).mean(1)
    torch.testing.assert_close(weighted, x_form, rtol=1e-12, atol=1e-12)


def test_velocity_half_step_equals_renoise_with_implied_noise_but_not_sampled_noise():
    g = torch.Generator().manual_seed(2)
    x1, noise, x_a = (torch.randn(16, 4, generator=g, dtype=torch.float64) for _ in range(3))
    tau = torch.rand(16, generator=g, dtype=torch.float64) * 0.5
    half = torch.full((16,), 0.125, dtype=torch.float64)
    z = noisy_input(x1, noise, tau)
    b1 = velocity(x_a, z, tau)
    stepped = velocity_half_step(z, b1, half)
    implied_noise = (z - tau[:, None] * x_a) / (1 - tau[:, None])
    torch.testing.assert_close(stepped, renoise_half_step(x_a, implied_noise, tau + half), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(stepped, renoise_half_step(x_a, noise, tau + half))


@pytest.mark.parametrize("k_max", [1, 2, 8, 64])
def test_no_zero_denominator_on_the_grid(k_max):
    obj = ShortcutForcing(Variant.paper(), k_max=k_max)
    for n in obj.step_counts:
        d = 1 / n
        tau = torch.arange(n, dtype=torch.float64) / n
        assert (1 - tau >= d - 1e-12).all()
        if n < k_max:
            assert (1 - tau - d / 2 >= d / 2 - 1e-12).all() and d / 2 >= obj.d_min
    tau, d = obj.sample_tau_d((20000,), generator=torch.Generator().manual_seed(0))
    boot = d > obj.d_min
    assert (1 - tau >= d).all() and (1 - tau[boot] - d[boot] / 2 >= obj.d_min).all()


# --- Eq. 4 sampling --------------------------------------------------------------------------------------


def test_grid_tau_is_a_multiple_of_d_and_stays_below_one():
    obj = ShortcutForcing(Variant.paper(), k_max=64)
    tau, d = obj.sample_tau_d((50000,), generator=torch.Generator().manual_seed(0))
    index = tau / d
    assert torch.equal(index, torch.round(index))
    assert (tau >= 0).all() and (tau + d <= 1).all()
    assert tau.min() == 0 and torch.isclose(tau.max(), torch.tensor(1 - 1 / 64))


def test_continuous_tau_is_off_the_grid_and_stays_below_one():
    obj = ShortcutForcing(Variant(tau_sampling="continuous"), k_max=64)
    tau, d = obj.sample_tau_d((50000,), generator=torch.Generator().manual_seed(0))
    assert (tau >= 0).all() and (tau + d <= 1 + 1e-7).all()
    index = tau / d
    on_grid = (index - torch.round(index)).abs() < 1e-6
    assert on_grid[d < 1].float().mean() < 1e-3  # d = 1 leaves only tau = 0 in both modes
    assert tau[d == 1].max() < 1e-6 and (tau[d < 1] > 0.1).any()


def level_frequencies(obj, n=70000, seed=0):
    _, d = obj.sample_tau_d((n,), generator=torch.Generator().manual_seed(seed))
    counts = torch.round(1 / d).long()
    return torch.tensor([(counts == k).float().mean().item() for k in obj.step_counts])


def test_step_sizes_uniform_over_levels_is_the_default():
    freq = level_frequencies(ShortcutForcing(Variant.paper(), k_max=64))
    torch.testing.assert_close(freq, torch.full((7,), 1 / 7), atol=0.01, rtol=0)


def test_step_sizes_inverse_is_the_reviews_reading():
    freq = level_frequencies(ShortcutForcing(Variant.paper(), k_max=64, step_sizes="inverse"))
    n = torch.tensor([1.0, 2, 4, 8, 16, 32, 64])
    torch.testing.assert_close(freq, n / n.sum(), atol=0.01, rtol=0)
    assert freq[-1] > 0.48  # d_min is the most likely step, as the review computes (0.504)


def test_bootstrap_fraction_gives_that_share_above_d_min_uniformly():
    obj = ShortcutForcing(Variant.paper(), k_max=64, bootstrap_fraction=0.25)
    freq = level_frequencies(obj)
    assert abs(freq[-1] - 0.75) < 1e-4  # an exact share of the rows
    torch.testing.assert_close(freq[:-1], torch.full((6,), 0.25 / 6), atol=0.006, rtol=0)
    all_flow = ShortcutForcing(Variant.paper(), k_max=64, bootstrap_fraction=0.0)
    assert level_frequencies(all_flow, n=1000)[-1] == 1


def test_sample_tau_d_is_seeded_and_per_frame():
    obj = ShortcutForcing(Variant.paper(), k_max=16)
    a = obj.sample_tau_d((4, 7), generator=torch.Generator().manual_seed(3))
    b = obj.sample_tau_d((4, 7), generator=torch.Generator().manual_seed(3))
    assert a[0].shape == a[1].shape == (4, 7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert len(torch.unique(a[1][0])) > 1  # d drawn per frame, not per sequence


# --- Eq. 7-8 against an independent implementation ----------------------------------------------------


@pytest.mark.parametrize("variant", Variant.all(), ids=lambda v: v.label)
def test_loss_matches_inverted_convention_reference_for_every_variant(variant):
    obj = ShortcutForcing(variant, k_max=K_MAX)
    net = ToyNet(6)
    x1, noise, tau, d = draw(obj, 64, 6, seed=5)
    assert (d == obj.d_min).any() and (d > obj.d_min).any()
    out = obj.loss(net, x1, noise, tau, d)
    with torch.no_grad():
        expected = reference_loss(net, x1, noise, tau, d, variant, K_MAX)
    torch.testing.assert_close(out.per_sample, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.loss, expected.mean(), rtol=1e-10, atol=1e-12)
    boot = d > obj.d_min
    assert out.n_bootstrap == boot.sum() and out.n_flow == (~boot).sum()
    torch.testing.assert_close(out.bootstrap_loss, expected[boot].mean(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.flow_loss, expected[~boot].mean(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("ramp", ["flow", "none"])
def test_ramp_placement(ramp):
    obj = ShortcutForcing(Variant.paper(), k_max=K_MAX, ramp=ramp)
    net = ToyNet(3)
    x1, noise, tau, d = draw(obj, 40, 3, seed=6)
    out = obj.loss(net, x1, noise, tau, d)
    with torch.no_grad():
        expected = reference_loss(net, x1, noise, tau, d, Variant.paper(), K_MAX, ramp=ramp)
    torch.testing.assert_close(out.per_sample, expected, rtol=1e-10, atol=1e-12)


def test_bootstrap_weight_scales_only_the_bootstrap_rows():
    net = ToyNet(3)
    base = ShortcutForcing(Variant.paper(), k_max=K_MAX)
    x1, noise, tau, d = draw(base, 40, 3, seed=7)
    a = base.loss(net, x1, noise, tau, d).per_sample
    b = ShortcutForcing(Variant.paper(), k_max=K_MAX, bootstrap_weight=0.5).loss(net, x1, noise, tau, d).per_sample
    boot = d > base.d_min
    torch.testing.assert_close(b[boot], 0.5 * a[boot])
    torch.testing.assert_close(b[~boot], a[~boot])


def test_flow_term_alone_when_every_d_is_d_min():
    obj = ShortcutForcing(Variant.paper(), k_max=K_MAX)
    net = ToyNet(4)
    g = torch.Generator().manual_seed(0)
    x1, noise = (torch.randn(10, 4, generator=g, dtype=torch.float64) for _ in range(2))
    tau = torch.arange(10, dtype=torch.float32) / K_MAX * 0.7
    d = torch.full((10,), 1 / K_MAX)
    out = obj.loss(net, x1, noise, tau, d)
    assert len(net.calls) == 1  # the student only: no teacher call for flow rows
    z = noisy_input(x1, noise, tau)
    expected = (0.9 * tau + 0.1) * ((net(z, tau, d) - x1) ** 2).mean(1)
    torch.testing.assert_close(out.per_sample, expected.to(out.per_sample.dtype))
    assert out.n_bootstrap == 0 and out.bootstrap_loss == 0


def test_gradients_reach_parameters_only_through_the_student_prediction():
    obj = ShortcutForcing(Variant.paper(), k_max=K_MAX)
    net = ToyNet(5)
    x1, noise, tau, d = draw(obj, 32, 5, seed=8)
    out = obj.loss(net, x1, noise, tau, d)
    student, teacher_a, teacher_b = net.calls
    assert student["grad"] and not teacher_a["grad"] and not teacher_b["grad"]
    grad = torch.autograd.grad(out.loss, list(net.parameters()))

    # the same loss with the targets frozen as constants has the same gradient
    boot = d > obj.d_min
    z = noisy_input(x1, noise, tau)
    with torch.no_grad():
        x_a = net(z[boot], tau[boot], d[boot] / 2)
        b1 = velocity(x_a, z[boot], tau[boot])
        z_mid = z[boot] + (d[boot] / 2)[:, None] * b1
        b2 = velocity(net(z_mid, tau[boot] + d[boot] / 2, d[boot] / 2), z_mid, tau[boot] + d[boot] / 2)
        target = z[boot] + (1 - tau[boot])[:, None] * (b1 + b2) / 2
    x_hat = net(z, tau, d)
    w = 0.9 * tau + 0.1
    frozen = torch.where(boot, 0.0, w * ((x_hat - x1) ** 2).mean(1))
    frozen = frozen.index_put((boot,), w[boot] * ((x_hat[boot] - target) ** 2).mean(1))
    expected = torch.autograd.grad(frozen.mean(), list(net.parameters()))
    for a, b in zip(grad, expected):
        torch.testing.assert_close(a, b)


def test_separate_teacher_gets_no_gradient_and_makes_the_targets():
    obj = ShortcutForcing(Variant.paper(), k_max=K_MAX)
    student, teacher = ToyNet(4, seed=0), ToyNet(4, seed=1)
    x1, noise, tau, d = draw(obj, 32, 4, seed=9)
    out = obj.loss(student, x1, noise, tau, d, teacher=teacher)
    out.loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert len(student.calls) == 1 and len(teacher.calls) == 2
    boot = d > obj.d_min
    self_taught = obj.loss(student, x1, noise, tau, d).per_sample
    assert torch.allclose(out.per_sample[~boot], self_taught[~boot])
    assert not torch.allclose(out.per_sample[boot], self_taught[boot])


def test_teacher_passes_are_two_batched_calls_over_the_bootstrap_rows_only():
    obj = ShortcutForcing(Variant.paper(), k_max=64)
    net = ToyNet(3)
    x1, noise, tau, d = draw(obj, 256, 3, seed=10)
    actions = torch.arange(256)
    obj.loss(net, x1, noise, tau, d, actions=actions)
    student, first, second = net.calls
    boot = d > obj.d_min
    assert student["z"].shape[0] == 256
    assert first["z"].shape[0] == second["z"].shape[0] == int(boot.sum())
    torch.testing.assert_close(first["d"], d[boot].double() / 2)
    torch.testing.assert_close(second["tau"], (tau[boot] + d[boot] / 2).double())
    assert torch.equal(first["kwargs"]["actions"], actions[boot])  # conditioning follows the rows


@pytest.mark.parametrize("shape", [(12, 5), (12, 2, 3, 3), (6, 4, 5)], ids=["BD", "BCHW", "BTD"])
@pytest.mark.parametrize("variant", [Variant.paper(), Variant.simplified()], ids=lambda v: v.label)
def test_shapes(shape, variant):
    obj = ShortcutForcing(variant, k_max=K_MAX)
    features = math.prod(shape[2:]) if len(shape) == 3 else math.prod(shape[1:])
    net = ToyNet(features)
    lead = shape[:2] if len(shape) == 3 else shape[:1]
    g = torch.Generator().manual_seed(11)
    x1 = torch.randn(shape, generator=g, dtype=torch.float64)
    tau, d = obj.sample_tau_d(lead, generator=g)
    out = obj.loss(net, x1, torch.randn(shape, generator=g, dtype=torch.float64), tau, d)
    assert out.per_sample.shape == lead and out.loss.shape == ()
    out.loss.backward()
    drawn = obj.loss(net, x1, lead_dims=len(lead))
    assert drawn.per_sample.shape == lead and torch.isfinite(drawn.loss)


def test_per_frame_loss_matches_reference_frame_by_frame():
    """(B, T) inputs: each frame has its own tau and d; a frame-wise model makes frames independent."""
    obj = ShortcutForcing(Variant.paper(), k_max=K_MAX)
    net = ToyNet(3)
    g = torch.Generator().manual_seed(12)
    x1 = torch.randn(5, 6, 3, generator=g, dtype=torch.float64)
    noise = torch.randn(5, 6, 3, generator=g, dtype=torch.float64)
    tau, d = obj.sample_tau_d((5, 6), generator=g)
    tau[0, 0], d[0, 0] = 1 - obj.d_min, obj.d_min  # a flow frame at the cleanest level rides along
    out = obj.loss(net, x1, noise, tau, d)
    assert torch.isfinite(out.per_sample).all()
    with torch.no_grad():
        expected = reference_loss(
            net, x1.reshape(30, 3), noise.reshape(30, 3), tau.reshape(30), d.reshape(30), Variant.paper(), K_MAX
        ).reshape(5, 6)
    torch.testing.assert_close(out.per_sample, expected, rtol=1e-10, atol=1e-12)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_velocity_conversions_run_in_float32_under_bf16_autocast():
    obj = ShortcutForcing(Variant.paper(), k_max=K_MAX)
    lin = torch.nn.Linear(4, 4)
    model = lambda z, tau, d: lin(z)
    x1 = torch.randn(64, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = obj.loss(model, x1)
        assert model(x1, None, None).dtype == torch.bfloat16
    assert out.per_sample.dtype == torch.float32 and out.loss.dtype == torch.float32
    assert (
        velocity(
            torch.ones(2, dtype=torch.bfloat16), torch.zeros(2, dtype=torch.bfloat16), torch.tensor([0.5, 0.5])
        ).dtype
        == torch.float32
    )


def test_loss_is_a_function_of_its_inputs_not_of_global_rng_state():
    """Given (x1, noise, tau, d) the loss must not draw anything: another global RNG state gives the
    same loss, and other noise gives another."""
    obj = ShortcutForcing(Variant.simplified(), k_max=K_MAX)
    net = ToyNet(3)
    x1, noise, tau, d = draw(obj, 32, 3, seed=13)
    torch.manual_seed(0)
    first = obj.loss(net, x1, noise, tau, d).per_sample
    torch.manual_seed(1)
    torch.rand(100)
    assert torch.equal(first, obj.loss(net, x1, noise, tau, d).per_sample)
    other_noise = draw(obj, 32, 3, seed=14)[1]
    assert not torch.allclose(first, obj.loss(net, x1, other_noise, tau, d).per_sample)


# --- Eq. 2: the sampler ----------------------------------------------------------------------------------


def test_one_step_sampling_is_a_single_call_at_tau_0_d_1():
    obj = ShortcutForcing(Variant.paper(), k_max=K_MAX)
    net = ToyNet(3)
    noise = torch.randn(7, 3, dtype=torch.float64)
    x = obj.sample(net, noise, 1)
    (call,) = net.calls
    assert torch.equal(call["tau"], torch.zeros(7)) and torch.equal(call["d"], torch.ones(7))
    assert torch.equal(x, net(noise, torch.zeros(7), torch.ones(7)))


@pytest.mark.parametrize("steps", [2, 4, 8])
def test_k_step_sampler_walks_the_grid_and_lands_on_the_prediction(steps):
    obj = ShortcutForcing(Variant.paper(), k_max=K_MAX)
    net = ToyNet(3)
    noise = torch.randn(7, 3, dtype=torch.float64)
    x = obj.sample(net, noise, steps)
    assert len(net.calls) == steps
    for k, call in enumerate(net.calls):
        assert torch.allclose(call["tau"], torch.full((7,), k / steps))
        assert torch.allclose(call["d"], torch.full((7,), 1 / steps))
        assert not call["grad"]
    last = net.calls[-1]
    assert torch.equal(x, net(last["z"], last["tau"], last["d"]))
    # the second call sees z advanced by one Euler step of the implied velocity
    first = net.calls[0]
    x_hat0 = net(noise, first["tau"], first["d"])
    torch.testing.assert_close(net.calls[1]["z"], noise + (x_hat0 - noise) / steps)


class GaussianPosteriorMean(torch.nn.Module):
    """The exact x-predictor for data N(mu, s^2) per coordinate: E[x1 | z] with z = (1 - tau) e + tau x1.

    Its flow maps noise e to mu + s e exactly (the Gaussian-to-Gaussian transport is linear), so the
    K-step sampler must approach that as K grows; at K = 1 and K = 2 the result has a closed form.
    """

    def __init__(self, mu: float, s: float) -> None:
        super().__init__()
        self.mu, self.s = mu, s

    def forward(self, z, tau, d):
        t = tau.to(z.dtype).unsqueeze(-1)
        gain = t * self.s**2 / (t**2 * self.s**2 + (1 - t) ** 2)
        return self.mu + gain * (z - t * self.mu)


def _euler_by_hand(e: float, mu: float, s: float, steps: int) -> float:
    """The K-step sampler on one scalar, in plain floats: z += (1/K)(x_hat - z)/(1 - tau), end on x_hat."""
    z = e
    for k in range(steps):
        tau = k / steps
        x_hat = mu + tau * s**2 / (tau**2 * s**2 + (1 - tau) ** 2) * (z - tau * mu)
        if k == steps - 1:
            return x_hat
        z = z + (x_hat - z) / steps / (1 - tau)
    raise AssertionError("unreachable")


def test_k_step_sampler_on_the_exact_gaussian_predictor_matches_closed_forms_and_converges():
    mu, s = 1.5, 0.3
    obj = ShortcutForcing(Variant.paper(), k_max=64)
    model = GaussianPosteriorMean(mu, s)
    noise = torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(obj.sample(model, noise, 1), torch.full_like(noise, mu))
    torch.testing.assert_close(obj.sample(model, noise, 2), mu + s**2 / (s**2 + 1) * noise)
    errors = []
    for steps in (4, 16, 64):
        x = obj.sample(model, noise, steps)
        by_hand = torch.tensor(
            [[_euler_by_hand(e, mu, s, steps) for e in row] for row in noise.tolist()], dtype=torch.float64
        )
        torch.testing.assert_close(x, by_hand)
        errors.append((x - (mu + s * noise)).abs().max().item())
    # first-order convergence to the exact transport: 4x the steps, about a quarter of the error
    assert errors[0] / errors[1] > 3 and errors[1] / errors[2] > 3 and errors[2] < 0.1 * s


def test_flow_baseline_sampler_is_told_d_min():
    obj = ShortcutForcing(Variant.paper(), k_max=K_MAX)
    net = ToyNet(3)
    obj.sample(net, torch.randn(2, 3, dtype=torch.float64), 4, model_d=obj.d_min)
    assert all(torch.allclose(c["d"], torch.full((2,), 1 / K_MAX)) for c in net.calls)


# --- bad input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, named",
    [
        (dict(k_max=48), "k_max"),
        (dict(k_max=0), "k_max"),
        (dict(ramp="half"), "ramp"),
        (dict(step_sizes="geometric"), "step_sizes"),
        (dict(bootstrap_fraction=1.5), "bootstrap_fraction"),
        (dict(bootstrap_weight=float("nan")), "bootstrap_weight"),
    ],
)
def test_invalid_objective_arguments_name_the_argument(kwargs, named):
    with pytest.raises(ValueError, match=named):
        ShortcutForcing(Variant.paper(), **kwargs)


@pytest.mark.parametrize(
    "kwargs, named",
    [
        (dict(tau_sampling="uniform"), "grid"),
        (dict(bootstrap_space="v"), "velocity"),
        (dict(half_step="noise"), "renoise"),
        (dict(tau2_weight="yes"), "tau2_weight"),
    ],
)
def test_invalid_variant_levels_name_the_allowed_values(kwargs, named):
    with pytest.raises(ValueError, match=named):
        Variant(**kwargs)


def test_bad_shapes_and_levels_are_rejected():
    obj = ShortcutForcing(Variant.paper(), k_max=K_MAX)
    net = ToyNet(3)
    x1 = torch.randn(4, 3, dtype=torch.float64)
    tau, d = torch.zeros(4), torch.full((4,), 0.5)
    with pytest.raises(ValueError, match="noise"):
        obj.loss(net, x1, noise=torch.randn(4, 2), tau=tau, d=d)
    with pytest.raises(ValueError, match="tau/d shape"):
        obj.loss(net, x1, tau=torch.zeros(5), d=torch.full((5,), 0.5))
    with pytest.raises(ValueError, match="together"):
        obj.loss(net, x1, tau=tau)
    with pytest.raises(ValueError, match="d must be one of"):
        obj.loss(net, x1, tau=tau, d=torch.full((4,), 0.3))
    with pytest.raises(ValueError, match="tau \\+ d <= 1"):
        obj.loss(net, x1, tau=torch.full((4,), 0.75), d=d)
    with pytest.raises(ValueError, match="steps"):
        obj.sample(net, x1, 3)
    with pytest.raises(ValueError, match="steps"):
        obj.sample(net, x1, 16)


def test_variant_matrix_and_labels():
    variants = Variant.all()
    assert len(variants) == 16 == len({v.label for v in variants})
    assert variants[0] == Variant.paper() and variants[-1] == Variant.simplified()
    assert Variant.paper().label == "grid_vboot_vstep_w2"
    assert Variant.simplified().label == "cont_xboot_renoise_now2"
    assert all(Variant.from_label(v.label) == v for v in variants)


# --- pinned by mutation testing (docs/mutation.md) -------------------------------------------------------


def test_default_objective_is_the_papers_variant():
    assert ShortcutForcing().variant == Variant.paper() == Variant()


def test_half_precision_data_stays_half_in_z_while_errors_are_computed_in_float32():
    x1, noise = torch.ones(2, 3, dtype=torch.bfloat16), torch.zeros(2, 3, dtype=torch.bfloat16)
    assert noisy_input(x1, noise, torch.tensor([0.25, 0.5])).dtype == torch.bfloat16  # the model sees data dtype
    assert at_least_float32(x1).dtype == torch.float32
    assert at_least_float32(x1.double()).dtype == torch.float64
    assert flow_error(x1, noise, 1).dtype == torch.float32
    assert x_bootstrap_error(x1, noise, 1).dtype == torch.float32


def test_mean_square_with_nothing_left_to_average_is_the_elementwise_square():
    a, b = torch.tensor([[1.0, 2.0], [3.0, 5.0]]), torch.zeros(2, 2)
    torch.testing.assert_close(mean_square(a, b, lead_dims=1), torch.tensor([2.5, 17.0]))
    torch.testing.assert_close(mean_square(a, b, lead_dims=2), a.square())


def test_k_max_must_be_an_int_not_a_bool_or_a_float():
    for k_max in (True, 4.0):
        with pytest.raises(ValueError, match="k_max"):
            ShortcutForcing(Variant.paper(), k_max=k_max)


def test_bootstrap_fraction_and_weight_accept_their_closed_ends():
    """fraction 1 sends every row to the teacher (at k_max=2 that is d=1, the only level above d_min);
    fraction > 0 is refused only at k_max=1; weight 0 leaves the flow term alone."""
    obj = ShortcutForcing(Variant.paper(), k_max=2, bootstrap_fraction=1.0)
    assert (obj.sample_tau_d((100,), generator=torch.Generator().manual_seed(0))[1] == 1).all()
    half = level_frequencies(ShortcutForcing(Variant.paper(), k_max=2, bootstrap_fraction=0.5), n=1000)
    torch.testing.assert_close(half, torch.tensor([0.5, 0.5]))  # the d_min level never rides as "above d_min"
    net = ToyNet(3)
    x1, noise, tau, d = draw(ShortcutForcing(Variant.paper(), k_max=K_MAX), 40, 3, seed=7)
    base = ShortcutForcing(Variant.paper(), k_max=K_MAX).loss(net, x1, noise, tau, d).per_sample
    out = ShortcutForcing(Variant.paper(), k_max=K_MAX, bootstrap_weight=0).loss(net, x1, noise, tau, d).per_sample
    boot = d > 1 / K_MAX
    assert (out[boot] == 0).all() and torch.equal(out[~boot], base[~boot])


@pytest.mark.parametrize(
    "config",
    [dict(), dict(step_sizes="inverse"), dict(bootstrap_fraction=0.25)],
    ids=["uniform", "inverse", "fraction"],
)
def test_sample_tau_d_draws_from_its_generator_only(config):
    obj = ShortcutForcing(Variant.paper(), k_max=16, **config)
    torch.manual_seed(0)
    a = obj.sample_tau_d((300,), generator=torch.Generator().manual_seed(5))
    torch.manual_seed(1)
    b = obj.sample_tau_d((300,), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize(
    "config",
    [dict(), dict(step_sizes="inverse"), dict(bootstrap_fraction=0.25)],
    ids=["uniform", "inverse", "fraction"],
)
def test_sample_tau_d_draws_on_the_requested_device(config):
    """The meta device stands in for an accelerator: every intermediate must follow `device`."""
    obj = ShortcutForcing(Variant.paper(), k_max=16, **config)
    tau, d = obj.sample_tau_d((4, 3), device="meta")
    assert tau.device.type == d.device.type == "meta" and tau.shape == d.shape == (4, 3)


@pytest.mark.parametrize("tau_sampling", ["grid", "continuous"])
def test_flow_only_draws_put_every_row_at_d_min_with_tau_as_eq_4(tau_sampling):
    """The warm-up before train.bootstrap_start: d = d_min everywhere, tau on its grid (or in
    [0, 1 - d_min]), on the requested device."""
    obj = ShortcutForcing(Variant(tau_sampling=tau_sampling), k_max=16)
    tau, d = obj.sample_tau_d((4096,), generator=torch.Generator().manual_seed(0), flow_only=True)
    assert torch.all(d == 1 / 16)
    assert tau.min() >= 0 and tau.max() <= 1 - 1 / 16 and tau.max() > 0.9
    if tau_sampling == "grid":
        assert torch.equal(tau * 16, torch.round(tau * 16)) and len(torch.unique(tau)) == 16
    tau, d = obj.sample_tau_d((4, 3), device="meta", flow_only=True)
    assert tau.device.type == d.device.type == "meta" and tau.shape == d.shape == (4, 3)


def test_drawn_tau_and_d_live_on_the_data_device():
    class Seen(Exception):
        pass

    devices = {}

    def spy(z, tau, d):
        devices.update(z=z.device.type, tau=tau.device.type, d=d.device.type)
        raise Seen  # stop here: the rest of the loss cannot run on the meta device

    with pytest.raises(Seen):
        ShortcutForcing(Variant.paper(), k_max=K_MAX).loss(spy, torch.empty(4, 3, device="meta"))
    assert devices == dict(z="meta", tau="meta", d="meta")


def test_model_kwargs_reach_the_student_whole_and_the_teacher_sliced_by_row():
    """Only tensors whose first dim is the batch are sliced; scalars, 0-d tensors and other tensors ride along."""
    obj = ShortcutForcing(Variant.paper(), k_max=K_MAX)
    net = ToyNet(3)
    x1, noise, tau, d = draw(obj, 12, 3, seed=15)
    boot = d > obj.d_min
    assert 0 < boot.sum() < 12
    kwargs = dict(actions=torch.arange(12), context=torch.arange(5), temperature=torch.tensor(0.5), mode="x", scale=2.0)
    obj.loss(net, x1, noise, tau, d, **kwargs)
    student, first, second = net.calls
    assert student["kwargs"] == kwargs
    for call in (first, second):
        assert torch.equal(call["kwargs"]["actions"], kwargs["actions"][boot])
        assert {k: v for k, v in call["kwargs"].items() if k != "actions"} == {
            k: v for k, v in kwargs.items() if k != "actions"
        }


def test_sequences_go_to_the_teacher_whole_when_any_frame_bootstraps():
    """(B, T) inputs: a sequence model must see whole sequences, so every sequence with at least one
    bootstrap frame is sent, all its frames included; a sequence of flow frames only is not."""
    obj = ShortcutForcing(Variant.paper(), k_max=K_MAX)
    net = ToyNet(3)
    g = torch.Generator().manual_seed(16)
    x1, noise = (torch.randn(3, 4, 3, generator=g, dtype=torch.float64) for _ in range(2))
    d = torch.full((3, 4), 1 / K_MAX)
    d[0, 1], d[2, 3] = 0.5, 0.25
    tau = torch.zeros(3, 4)
    obj.loss(net, x1, noise, tau, d)
    _, first, second = net.calls
    assert first["z"].shape == second["z"].shape == (2, 4, 3) and first["tau"].shape == (2, 4)
    levels = [[1 / K_MAX, 0.25, 1 / K_MAX, 1 / K_MAX], [1 / K_MAX, 1 / K_MAX, 1 / K_MAX, 0.125]]
    torch.testing.assert_close(first["d"], torch.tensor(levels, dtype=torch.float64))


def test_flow_and_bootstrap_means_with_one_row_each_are_those_rows():
    obj = ShortcutForcing(Variant.paper(), k_max=K_MAX)
    net = ToyNet(3)
    x1, noise = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    out = obj.loss(net, x1, noise, torch.tensor([0.0, 0.5]), torch.tensor([1 / K_MAX, 0.5]))
    assert out.n_flow == 1 and out.n_bootstrap == 1
    assert out.flow_loss == out.per_sample[0] and out.bootstrap_loss == out.per_sample[1]


@pytest.mark.parametrize("d", [1 / 3, 1 / 16, 0.26], ids=["not-a-power-of-two", "finer-than-d_min", "near-a-level"])
def test_a_step_size_off_the_levels_is_rejected(d):
    obj = ShortcutForcing(Variant.paper(), k_max=K_MAX)
    with pytest.raises(ValueError, match="d must be one of"):
        obj.check_tau_d(torch.zeros(2), torch.full((2,), d))


def test_lead_dims_and_tau_must_leave_feature_dims():
    obj = ShortcutForcing(Variant.paper(), k_max=K_MAX)
    x1 = torch.randn(4, 3)
    with pytest.raises(ValueError, match="lead_dims"):
        obj.loss(ToyNet(3), x1, lead_dims=2)
    with pytest.raises(ValueError, match="tau/d shape"):
        obj.loss(ToyNet(3), x1, tau=torch.zeros(4, 3), d=torch.full((4, 3), 0.5))


_OBJ = ShortcutForcing(Variant.paper(), k_max=K_MAX)
_X1 = torch.zeros(4, 3)
_SAME = lambda z, tau, d: z  # noqa: E731


@pytest.mark.parametrize(
    "call, message",
    [
        (
            partial(ShortcutForcing, Variant.paper(), ramp="half"),
            "ramp='half' is not allowed; choose one of 'both', 'flow', 'none'",
        ),
        (
            partial(ShortcutForcing, Variant.paper(), step_sizes="x"),
            "step_sizes='x' is not allowed; choose one of 'uniform', 'inverse'",
        ),
        (partial(ShortcutForcing, "paper"), "variant='paper' must be a Variant (e.g. Variant.paper())"),
        (
            partial(ShortcutForcing, Variant.paper(), k_max=1, bootstrap_fraction=0.5),
            "bootstrap_fraction > 0 needs k_max >= 2: with k_max=1 every row is a flow row",
        ),
        (
            partial(Variant.from_label, "grid"),
            "variant label 'grid' is unknown; choose one of " + ", ".join(v.label for v in Variant.all()),
        ),
        (partial(_OBJ.loss, _SAME, torch.ones(4, 3, dtype=torch.long)), "x1 must be a floating-point tensor"),
        (partial(_OBJ.loss, _SAME, [[1.0]]), "x1 must be a floating-point tensor"),
        (
            partial(_OBJ.loss, _SAME, _X1, tau=torch.zeros(4)),
            "tau and d must be given together (or both omitted to draw them)",
        ),
        (partial(_OBJ.loss, _SAME, _X1, lead_dims=2), "lead_dims=2 must be in [1, x1.ndim - 1 = 1]"),
        (partial(_OBJ.loss, _SAME, torch.zeros(4, 3, 2), lead_dims=3), "lead_dims=3 must be in [1, x1.ndim - 1 = 2]"),
        (
            partial(_OBJ.loss, _SAME, _X1, tau=torch.zeros(4), d=torch.ones(3)),
            "tau shape (4,) and d shape (3,) must be equal, or d (B,) with tau (B, T)",
        ),
        (
            partial(_OBJ.loss, _SAME, _X1, tau=torch.zeros(4, 3), d=torch.full((4, 3), 0.5)),
            "tau/d shape (4, 3) must be the leading dims of x1 (4, 3), e.g. (B,) or (B, T)",
        ),
        (
            partial(_OBJ.loss, _SAME, _X1, tau=torch.full((4,), 0.75), d=torch.full((4,), 0.5)),
            "tau must satisfy 0 <= tau and tau + d <= 1",
        ),
        (partial(_OBJ.loss, lambda z, tau, d: z[:, :2], _X1), "model output shape (4, 2) must equal x1's (4, 3)"),
    ],
    ids=[
        "ramp",
        "step_sizes",
        "variant",
        "fraction-k_max-1",
        "label",
        "int-x1",
        "list-x1",
        "tau-alone",
        "lead_dims",
        "lead_dims-3d",
        "tau-vs-d",
        "tau-lead",
        "tau+d",
        "model-output",
    ],
)
def test_error_messages_say_what_was_given_and_what_is_allowed(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert str(error.value) == message


# --- per-frame bootstrap (sequences): frames that take no step keep their z -----------------------------


@pytest.mark.parametrize("half_step", ["velocity", "renoise"])
def test_frames_that_take_no_half_step_reach_the_second_teacher_call_unchanged(half_step):
    """In a (B, T) sequence only bootstrap frames take the d/2 step. A flow frame riding along is context
    for the others: the teacher's second call must see it exactly as the first did (z, tau and level),
    whichever half step the bootstrap frames take. Re-noising it would move the past the teacher sees."""
    obj = ShortcutForcing(Variant("grid", "velocity", half_step, True), k_max=K_MAX)
    net = ToyNet(3)
    g = torch.Generator().manual_seed(21)
    x1, noise = (torch.randn(4, 5, 3, generator=g, dtype=torch.float64) for _ in range(2))
    tau, d = obj.sample_tau_d((4, 5), generator=g)
    d[:, 0], tau[:, 0] = obj.d_min, 0.5  # a flow frame at mid noise in every sequence
    d[:, 1], tau[:, 1] = 0.25, 0.25  # and a bootstrap frame
    obj.loss(net, x1, noise, tau, d)
    _, first, second = net.calls
    flow = d <= obj.d_min * (1 + 1e-6)
    torch.testing.assert_close(second["z"][flow], first["z"][flow], rtol=0, atol=0)
    torch.testing.assert_close(second["tau"][flow], first["tau"][flow], rtol=0, atol=0)
    torch.testing.assert_close(second["d"][flow], first["d"][flow], rtol=0, atol=0)
    assert not torch.equal(second["z"][~flow], first["z"][~flow])  # the bootstrap frames did step


class CausalNet(ToyNet):
    """ToyNet plus a causal mix: frame t's output also depends on the z of every earlier frame."""

    def forward(self, z, tau, d, **kwargs):
        out = super().forward(z, tau, d, **kwargs)
        past = torch.cumsum(z, dim=1) - z  # the sum of z over frames < t
        return out + 0.3 * torch.tanh(past)


def test_fixed_teacher_context_steps_one_frame_per_call_and_holds_the_others():
    """teacher_context fixed: frame t's second call sees the other frames exactly as the first call did,
    and only frame t moved by its half step; checked against one call per bootstrap frame by hand."""
    g = torch.Generator().manual_seed(22)
    x1, noise = (torch.randn(3, 4, 2, generator=g, dtype=torch.float64) for _ in range(2))
    actions = torch.tensor([7, 8, 9])
    for half_step in ("velocity", "renoise"):
        obj = ShortcutForcing(Variant("grid", "x", half_step, True), k_max=K_MAX, teacher_context="fixed")
        tau, d = obj.sample_tau_d((3, 4), generator=g)
        d[:, 0], tau[:, 0] = obj.d_min, 0.5
        d[:, 1], tau[:, 1] = obj.d_min, 0.25
        d[:, 2], tau[:, 2] = 0.5, 0.0
        d[:, 3], tau[:, 3] = 0.25, 0.5
        is_boot = d > obj.d_min * (1 + 1e-6)
        z = noisy_input(x1, noise, tau)
        net = CausalNet(2)
        targets = obj.teacher_targets(net, z, noise, tau, d, is_boot, actions=actions)
        stepped = ShortcutForcing(obj.variant, k_max=K_MAX).teacher_targets(net, z, noise, tau, d, is_boot)
        level = torch.where(is_boot, d / 2, d)
        for b, t in is_boot.nonzero().tolist():
            x_a = net(z[b : b + 1], tau[b : b + 1], level[b : b + 1])
            z_in, tau_in = z[b : b + 1].clone(), tau[b : b + 1].clone()
            tau_in[0, t] = tau[b, t] + d[b, t] / 2
            if half_step == "velocity":
                z_in[0, t] = z[b, t] + d[b, t] / 2 * velocity(x_a, z[b : b + 1], tau[b : b + 1])[0, t]
            else:
                z_in[0, t] = noisy_input(x_a[0, t], noise[b, t], tau_in[0, t])
            expected = net(z_in, tau_in, level[b : b + 1])[0, t]
            torch.testing.assert_close(targets.x_b[b, t], expected, rtol=1e-12, atol=1e-12)
        fixed_call = net.calls[1]  # one copy of its sequence per bootstrap frame, with that sequence's actions
        assert len(fixed_call["z"]) == int(is_boot.sum())
        assert torch.equal(fixed_call["kwargs"]["actions"], actions[is_boot.nonzero()[:, 0]])
        # the last frame's past (frame 2) moved in the stepped call, not in the fixed one
        assert not torch.allclose(targets.x_b[:, 3], stepped.x_b[:, 3])
        torch.testing.assert_close(targets.x_b[:, 2], stepped.x_b[:, 2])  # frames 0, 1 take no step


def test_fixed_and_stepped_teacher_context_agree_for_a_frame_wise_model_and_for_one_frame():
    g = torch.Generator().manual_seed(23)
    net = ToyNet(3)
    for shape, lead in (((5, 6, 3), (5, 6)), ((7, 3), (7,))):
        x1, noise = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(2))
        obj = ShortcutForcing(Variant("grid", "velocity", "renoise", True), k_max=K_MAX)
        tau, d = obj.sample_tau_d(lead, generator=g)
        stepped = obj.loss(net, x1, noise, tau, d).per_sample
        obj.teacher_context = "fixed"
        torch.testing.assert_close(obj.loss(net, x1, noise, tau, d).per_sample, stepped, rtol=1e-12, atol=1e-12)


def test_teacher_context_must_be_stepped_or_fixed():
    with pytest.raises(ValueError, match="^teacher_context='frozen' is not allowed; choose one of 'stepped', 'fixed'$"):
        ShortcutForcing(teacher_context="frozen")
