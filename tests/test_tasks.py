"""The built-in tasks and the user-task example against the Task interface, plus their metrics' sanity:
seeded batches, models that take every tau and level, evaluations that score every K from one noise draw,
fixed references, noise floors, a reproducible classifier cache and non-finite samples that do not crash."""

import math
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import ablate.tasks.digits as digits_module
from ablate.config import ObjectiveConfig
from ablate.objective import ShortcutForcing, Variant
from ablate.tasks import (
    BUILTIN_TASKS,
    Sampler,
    build_model,
    builtin_declarations,
    declarations,
    make_task,
    model_arguments,
    model_levels,
)
from ablate.tasks.digits import N_HELD_OUT, digit_splits, load_or_build_classifier
from ablate.tasks.models import ResidualMLP
from ablate.tasks.toy2d import (
    BLUR_SIGMA,
    DATASETS,
    _standardisation,
    reference_scores,
    sample_dataset,
    structure_scores,
    support_regions,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "experiments" / "my_task.py"
STEPS = [1, 2, 4, 8, 16, 32, 64]
SMALL = {"toy2d": {"n_eval": 300}, "digits": {"n_eval": 64}, str(EXAMPLE): {"n_eval": 200}}


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory):
    """Keep the digit classifier out of the user's ~/.cache; built once for this module."""
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("ablate_cache")
        patch.setenv("ABLATE_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def digits():
    return make_task("digits")


class RecordingSampler:
    """Stands in for the trained sampler: returns `fn(noise, steps)` and remembers the noise it was given."""

    def __init__(self, fn):
        self.fn, self.noises = fn, []

    def __call__(self, noise, steps, *, lead_dims=1):
        self.noises.append(noise.clone())
        return self.fn(noise, steps)


def untrained_sampler(task, model_d=None):
    torch.manual_seed(0)
    return Sampler(build_model(task, ObjectiveConfig(k_max=64)).eval(), ShortcutForcing(k_max=64), model_d)


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_toy2d_batches_are_seeded_centred_and_unit_scale(dataset):
    task = make_task("toy2d", {"dataset": dataset})
    x, kwargs = task.batch(4096, torch.Generator().manual_seed(0))
    assert x.shape == (4096, 2) and x.dtype == torch.float32 and kwargs == {}
    assert torch.equal(x, task.batch(4096, torch.Generator().manual_seed(0))[0])
    assert not torch.equal(x, task.batch(4096, torch.Generator().manual_seed(1))[0])
    assert x.mean(0).abs().max() < 0.1
    assert 0.9 < x.square().mean().sqrt() < 1.1  # unit variance per coordinate on average


def test_toy2d_rejects_an_unknown_dataset():
    with pytest.raises(ValueError, match="dataset"):
        make_task("toy2d", {"dataset": "circles"})


def test_digits_split_is_fixed_and_batches_are_seeded_images_in_range(digits):
    train, train_labels, held_out, held_out_labels = digit_splits()
    assert len(train) + len(held_out) == 1797 and abs(len(train) - len(held_out)) <= 1
    assert torch.equal(train, digit_splits()[0]) and set(held_out_labels.tolist()) == set(range(10))
    x, kwargs = digits.batch(128, torch.Generator().manual_seed(0))
    assert x.shape == (128, 8, 8) and kwargs == {} and x.min() >= -1 and x.max() <= 1
    assert x.min() == -1 and x.max() == 1
    assert torch.equal(x, digits.batch(128, torch.Generator().manual_seed(0))[0])
    assert not torch.equal(x, digits.batch(128, torch.Generator().manual_seed(1))[0])


@pytest.mark.parametrize("spec", list(SMALL))
@pytest.mark.parametrize("tau_sampling", ["grid", "continuous"])
def test_model_takes_every_level_and_both_tau_samplings_and_trains(spec, tau_sampling):
    task = make_task(spec, SMALL[spec])
    torch.manual_seed(0)
    model = build_model(task, ObjectiveConfig(k_max=64))
    objective = ShortcutForcing(Variant(tau_sampling=tau_sampling), k_max=64)
    x1, kwargs = task.batch(64, torch.Generator().manual_seed(0))
    z = torch.randn_like(x1)
    outputs = []
    for n in objective.step_counts:
        d = torch.full((64,), 1.0 / n)
        tau = torch.rand(64) * (1 - d) if tau_sampling == "continuous" else torch.randint(0, n, (64,)) / n
        outputs.append(model(z, tau, d, **kwargs))
        assert outputs[-1].shape == x1.shape and torch.isfinite(outputs[-1]).all()
    assert not torch.allclose(outputs[0], outputs[-1])
    # the step size alone reaches the output: same z and tau, every d gives its own prediction
    tau = torch.full((64,), 0.25)
    at_fixed_tau = [model(z, tau, torch.full((64,), 1.0 / n), **kwargs) for n in objective.step_counts]
    for i, a in enumerate(at_fixed_tau):
        for b in at_fixed_tau[i + 1 :]:
            assert (a - b).abs().max() > 1e-4
    loss = objective.loss(model, x1, teacher=None, **kwargs).loss
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("spec", list(SMALL))
def test_evaluate_scores_every_k_from_one_noise_draw(spec):
    task = make_task(spec, SMALL[spec])
    sampler = untrained_sampler(task)
    recorder = RecordingSampler(sampler)
    evaluation = task.evaluate(recorder, STEPS, torch.Generator().manual_seed(0))
    assert task.primary_metric in task.metric_directions
    assert set(task.metric_directions.values()) <= {"min", "max"}
    assert sorted(evaluation.metrics) == STEPS and sorted(evaluation.samples) == STEPS
    for k in STEPS:
        assert set(evaluation.metrics[k]) == set(task.metric_directions)
        assert all(math.isfinite(v) for v in evaluation.metrics[k].values()), evaluation.metrics[k]
        samples = evaluation.samples[k]
        assert isinstance(samples, np.ndarray) and samples.dtype == np.float32
        assert samples.shape[1:] == ((8, 8) if task.sample_format == "image" else (2,))
    assert all(torch.equal(noise, recorder.noises[0]) for noise in recorder.noises)
    again = task.evaluate(sampler, STEPS, torch.Generator().manual_seed(0))
    assert again.metrics == evaluation.metrics
    baseline = task.evaluate(untrained_sampler(task, model_d=1 / 64), [1, 4], torch.Generator().manual_seed(0))
    assert baseline.metrics[1] != evaluation.metrics[1]  # told d_min instead of d = 1


DECLARING = {
    **SMALL,
    "sequence": {"n_eval": 4, "horizon": 3},
    "latent_world": {"n_eval": 4, "draws": 2, "horizon": 2, "jitter": 0.05},
}


@pytest.mark.parametrize("spec", list(DECLARING))
def test_every_emitted_metric_has_a_declared_scale_shares_lie_in_0_1_and_the_gate_names_real_metrics(spec):
    task = make_task(spec, DECLARING[spec])
    declared = declarations(task)
    torch.manual_seed(0)
    sampler = Sampler(build_model(task, ObjectiveConfig(k_max=8)).eval(), ShortcutForcing(k_max=8))
    metrics = task.evaluate(sampler, [1], torch.Generator().manual_seed(0)).metrics[1]
    assert set(declared.metric_scales) == set(metrics) and set(declared.metric_scales.values()) <= {"log", "raw"}
    assert set(declared.share_metrics) <= set(metrics)
    assert all(0 <= metrics[m] <= 1 and declared.metric_scales[m] == "raw" for m in declared.share_metrics)
    assert {c["metric"] for c in declared.learnability_gate} <= set(metrics)
    assert {c["relative_to"] for c in declared.learnability_gate} <= set(metrics) | {None}
    if spec in BUILTIN_TASKS:  # what an older results folder reads without building the task
        assert type(task).declare(**DECLARING[spec]) == declared
        assert builtin_declarations(spec, DECLARING[spec]) == declared
        assert builtin_declarations(spec, {}) == declarations(make_task(spec))  # the same defaults


def test_the_digits_held_out_half_is_the_size_the_declarations_give_it(digits):
    assert len(digits.held_out_images) == N_HELD_OUT == digits.share_metrics["class_entropy_floor"]


def test_toy2d_scores_against_a_fixed_reference_with_a_noise_floor():
    task = make_task("toy2d", {"n_eval": 500})
    real = sample_dataset("checkerboard", 500, torch.Generator().manual_seed(99))
    by_seed = [
        task.evaluate(RecordingSampler(lambda noise, k: real), [1, 8], torch.Generator().manual_seed(s)) for s in (0, 1)
    ]
    assert by_seed[0].metrics == by_seed[1].metrics  # the reference and floor ignore the trial's generator
    floor = by_seed[0].metrics[1]["w2_floor"]
    assert floor == by_seed[0].metrics[8]["w2_floor"] > 0
    assert by_seed[0].metrics[1]["w2"] < 2 * floor  # real points score near the floor
    collapsed = task.evaluate(
        RecordingSampler(lambda noise, k: torch.zeros_like(noise)), [1], torch.Generator().manual_seed(0)
    )
    assert collapsed.metrics[1]["w2"] > 3 * floor and collapsed.metrics[1]["energy"] > 3 * floor
    wrong = reference_scores("checkerboard", 500)  # what a blurred copy and a uniform box score, every K
    for kind in ("blur", "box"):
        assert {m: by_seed[0].metrics[8][f"{m}_{kind}"] for m in wrong[kind]} == wrong[kind]
    assert wrong["real"]["structure"] > wrong["blur"]["structure"] > wrong["box"]["structure"]


def test_toy2d_samples_are_capped_at_2000_points():
    task = make_task("toy2d", {"n_eval": 2100})
    evaluation = task.evaluate(RecordingSampler(lambda noise, k: noise), [1], torch.Generator().manual_seed(0))
    assert evaluation.samples[1].shape == (2000, 2)


def standardised(dataset, raw_points):
    mean, scale = _standardisation(dataset)
    return (np.asarray(raw_points, dtype=np.float64) - mean.double().numpy()) / scale


def real_points(dataset, n=2000, seed=123):
    return sample_dataset(dataset, n, torch.Generator().manual_seed(seed)).double().numpy()


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_toy2d_structure_real_data_scores_near_one_blur_and_box_clearly_lower(dataset):
    real = structure_scores(dataset, real_points(dataset))
    assert real["precision"] >= 0.98 and real["coverage"] >= 0.95 and real["structure"] >= 0.94, real
    reference = reference_scores(dataset, 1000)
    assert reference["real"]["precision"] >= 0.98
    for corrupted in ("blur", "box"):
        assert reference[corrupted]["precision"] < 0.75, (corrupted, reference[corrupted])
        assert reference[corrupted]["structure"] < reference["real"]["structure"] - 0.25
    noisy = real_points(dataset) + BLUR_SIGMA * np.random.default_rng(0).standard_normal((2000, 2))
    assert structure_scores(dataset, noisy)["precision"] < 0.75


def test_toy2d_checkerboard_support_is_the_eight_squares_in_the_data_units():
    # the centres of the 8 squares of the raw board (ix + iy even) are inside, each its own region; the
    # centres of the 8 empty cells and points beyond the board are outside
    full = [(ix - 1.5, iy - 1.5) for ix in range(4) for iy in range(4) if (ix + iy) % 2 == 0]
    empty = [(ix - 1.5, iy - 1.5) for ix in range(4) for iy in range(4) if (ix + iy) % 2 == 1]
    regions, inside = support_regions("checkerboard", standardised("checkerboard", full))
    assert inside.all() and sorted(regions) == list(range(8))
    _, inside = support_regions("checkerboard", standardised("checkerboard", empty + [(2.5, 0.5), (0, -2.3)]))
    assert not inside.any()
    # the margin is 0.05 in the data's units: (-2, -2)-(-1, -1) is a square, (-1.5, -0.9) lies in an empty cell
    near, far = [(-1.5, -0.96), (-2.04, -1.5)], [(-1.5, -0.94), (-2.06, -1.5)]
    assert support_regions("checkerboard", standardised("checkerboard", near))[1].all()
    assert not support_regions("checkerboard", standardised("checkerboard", far))[1].any()


def test_toy2d_8gaussians_support_is_three_sigma_around_the_modes():
    angle = np.arange(8) * np.pi / 4
    modes = 2 * np.stack([np.cos(angle), np.sin(angle)], 1)
    outward = modes / 2  # unit vectors
    regions, inside = support_regions("8gaussians", standardised("8gaussians", modes + 0.29 * outward))
    assert inside.all() and list(regions) == list(range(8))
    _, inside = support_regions("8gaussians", standardised("8gaussians", modes + 0.31 * outward))
    assert not inside.any()


def test_toy2d_half_collapsed_sampler_has_full_precision_and_half_coverage():
    points = real_points("checkerboard", 4000)
    regions, _ = support_regions("checkerboard", points)
    half = points[regions < 4]  # only 4 of the 8 squares
    scores = structure_scores("checkerboard", half)
    assert scores["precision"] == 1.0
    assert scores["coverage"] == pytest.approx(0.5, abs=0.03) and scores["structure"] == pytest.approx(0.5, abs=0.03)
    one = structure_scores("checkerboard", points[regions == 5])
    assert one["precision"] == 1.0 and one["coverage"] == pytest.approx(1 / 8, abs=0.01)
    spread = structure_scores("checkerboard", real_points("checkerboard", 4000, seed=7))
    assert spread["coverage"] > 0.95


@pytest.mark.parametrize("dataset", ["moons", "spiral"])
def test_toy2d_arms_have_equal_mass_stretches_and_a_band_around_the_curve(dataset):
    points = real_points(dataset, 4000)
    regions, inside = support_regions(dataset, points)
    assert inside.mean() > 0.98
    shares = np.bincount(regions[inside], minlength=8) / inside.sum()
    assert np.abs(shares - 1 / 8).max() < 0.025  # 8 stretches, each about 1/8 of the data
    lifted = structure_scores(dataset, points + np.array([0.0, 1.5]))  # the whole shape moved off its arms
    assert lifted["precision"] < 0.5


def test_toy2d_evaluate_reports_structure_metrics_and_their_floors():
    task = make_task("toy2d", {"n_eval": 1000})
    assert task.primary_metric == "structure" and task.metric_directions["structure"] == "max"
    real = torch.tensor(real_points("checkerboard", 1000, seed=5), dtype=torch.float32)
    evaluation = task.evaluate(RecordingSampler(lambda noise, k: real), [1], torch.Generator().manual_seed(0))
    metrics = evaluation.metrics[1]
    assert metrics["precision"] == 1.0 and metrics["structure"] > 0.9  # 1000 points: ~0.97 +- 0.02
    floor = reference_scores("checkerboard", 1000)["real"]
    assert {m: metrics[f"{m}_floor"] for m in floor} == pytest.approx(floor)
    blob = task.evaluate(RecordingSampler(lambda noise, k: 0.5 * noise), [1], torch.Generator().manual_seed(0))
    assert blob.metrics[1]["structure"] < 0.8 and blob.metrics[1]["precision"] < 0.8
    assert evaluation.real.shape == (1000, 2) and evaluation.real.dtype == np.float32


def test_toy2d_model_options_fourier_features_and_preconditioning():
    torch.manual_seed(0)
    plain = ResidualMLP(2, 32, 2)
    torch.manual_seed(0)
    fourier = ResidualMLP(2, 32, 2, fourier=4)
    assert fourier.inp.in_features == 2 * (1 + 2 * 4) and plain.inp.in_features == 2
    z, d = torch.randn(16, 2), torch.full((16,), 1 / 64)
    model = ResidualMLP(2, 32, 2, fourier=4, precondition=True)
    # EDM's c_skip = 1, c_out = 0 at tau = 1: the model returns z exactly; at tau = 0 it returns the network
    assert torch.equal(model(z, torch.ones(16), d), z)
    unconditioned = ResidualMLP(2, 32, 2, fourier=4, precondition=False)
    unconditioned.load_state_dict(model.state_dict())
    assert torch.allclose(model(z, torch.zeros(16), d), unconditioned(z, torch.zeros(16), d))
    tau = torch.full((16,), 0.7)
    t = 0.7
    r = t * t + (1 - t) ** 2
    expected = (t / r) * z + ((1 - t) / math.sqrt(r)) * unconditioned(z, tau, d)
    assert torch.allclose(model(z, tau, d), expected, atol=1e-6)
    default = make_task("toy2d").make_model()
    assert default.inp.in_features == 18 and default.precondition
    assert make_task("toy2d", {"fourier": 0, "precondition": False}).make_model().inp.in_features == 2
    with pytest.raises(ValueError, match="fourier"):
        make_task("toy2d", {"fourier": -1})


def test_digits_held_out_fd_is_far_below_noise_and_grows_monotonically_with_corruption(digits):
    scorer, _ = digits.scoring()
    _, _, held_out, _ = digit_splits()
    direction = torch.randn(held_out.shape, generator=torch.Generator().manual_seed(0))
    floor = scorer(held_out)
    noise = scorer(torch.rand(held_out.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    assert floor["fd"] < noise["fd"] / 50 and floor["kid"] < noise["kid"] / 50
    assert floor["class_entropy"] > 0.99
    for corrupt in (lambda s: held_out + s * direction, lambda s: held_out + s):
        scores = [floor] + [scorer(corrupt(s).clamp(-1, 1)) for s in (0.1, 0.2, 0.4, 0.8)]
        for metric in ("fd", "kid"):
            values = [score[metric] for score in scores]
            assert all(a < b for a, b in zip(values, values[1:])), (metric, values)
    one_class = scorer(held_out[:1].expand(100, 8, 8))
    assert one_class["class_entropy"] == 0.0


def test_digits_evaluate_reports_held_out_floor_and_real_samples_match_it():
    task = make_task("digits")
    _, _, held_out, _ = digit_splits()
    evaluation = task.evaluate(RecordingSampler(lambda noise, k: held_out), [1, 2], torch.Generator().manual_seed(0))
    metrics = evaluation.metrics[1]
    assert metrics["fd"] == pytest.approx(metrics["fd_floor"]) and metrics == evaluation.metrics[2]
    assert evaluation.samples[1].shape == (256, 8, 8)


def test_digit_classifier_cache_is_written_atomically_and_rebuilds_identically(tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path))
    train, labels, held_out, _ = digit_splits()
    rng_before = torch.get_rng_state()
    built = load_or_build_classifier(train, labels)
    assert torch.equal(torch.get_rng_state(), rng_before)  # trial seeding stays unaffected
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt"  # no temporary file left behind
    loaded = load_or_build_classifier(train, labels)
    files[0].unlink()
    rebuilt = load_or_build_classifier(train, labels)
    with torch.no_grad():
        features = [c.features(held_out) for c in (built, loaded, rebuilt)]
    assert torch.equal(features[0], features[1]) and torch.equal(features[0], features[2])


def test_the_digit_classifier_is_built_once_when_a_packs_members_ask_at_once(tmp_path, monkeypatch):
    """A pack evaluates its members in threads, and building seeds torch's global RNG, which threads
    share: concurrent requests wait for one build and then read it."""
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path))
    train, labels, held_out, _ = digit_splits()
    builds = []
    build = digits_module.train_classifier
    monkeypatch.setattr(digits_module, "train_classifier", lambda *args: builds.append(1) or build(*args))
    classifiers = [None] * 3

    def request(index: int) -> None:
        classifiers[index] = load_or_build_classifier(train, labels)

    threads = [threading.Thread(target=request, args=(index,)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1
    with torch.no_grad():
        features = [c.features(held_out) for c in classifiers]
    assert all(torch.equal(features[0], f) for f in features[1:])


@pytest.mark.parametrize("spec", ["toy2d", "digits", str(EXAMPLE)])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_samples_give_non_finite_metrics_without_raising(spec, bad):
    task = make_task(spec, SMALL[spec])
    evaluation = task.evaluate(
        RecordingSampler(lambda noise, k: torch.full_like(noise, bad)), [1, 2], torch.Generator().manual_seed(0)
    )
    assert not math.isfinite(evaluation.metrics[1][task.primary_metric])
    assert evaluation.metrics[1][task.primary_metric] != -math.inf
    assert len(evaluation.samples[1]) > 0


def test_user_task_example_loads_by_path_and_by_module_function(monkeypatch):
    by_path = make_task(str(EXAMPLE), {"radius": 2.0})
    assert by_path.name == "ring" and by_path.radius == 2.0
    monkeypatch.syspath_prepend(str(EXAMPLE.parent))
    by_module = make_task("my_task:make_task", {"n_eval": 100})
    assert by_module.n_eval == 100
    with pytest.raises(ValueError, match="radius"):
        make_task(str(EXAMPLE), {"radiuss": 2.0})


def test_make_model_is_told_what_its_signature_takes_of_the_objective():
    """k_max, the resolved objective, both through **kwargs, or nothing (a make_model(self), as tasks were
    written before); the example sizes its table of step sizes from k_max."""
    objective = ObjectiveConfig(k_max=16)
    for make_model, told in (
        (lambda: None, {}),
        (lambda k_max: None, {"k_max": 16}),
        (lambda *, objective: None, {"objective": objective}),
        (lambda **kwargs: None, {"k_max": 16, "objective": objective}),
    ):
        assert model_arguments(SimpleNamespace(make_model=make_model), objective) == told
    assert build_model(make_task(str(EXAMPLE)), objective).step_sizes.num_embeddings == 5  # d = 1, 1/2, ..., 1/16


def test_a_model_is_checked_at_the_levels_its_trials_train_and_sample_at():
    """d = 1 only where the objective draws it (not with full_step off, as the dreamer4 package) or K = 1
    is sampled: a model without a row for d = 1 is not refused for a level it never sees."""
    assert model_levels(SimpleNamespace(step_counts=(1, 2, 4, 8)), [2]) == (1, 2, 4, 8)
    assert model_levels(SimpleNamespace(step_counts=(1, 2, 4, 8), full_step=False), [2, 8]) == (2, 4, 8)
    assert model_levels(SimpleNamespace(step_counts=(1, 2, 4, 8), full_step=False), [1, 8]) == (1, 2, 4, 8)
