"""The sample-quality metrics: exact values where a closed form exists, zero on identical sets, monotone
growth with the size of a corruption, and inf/NaN (never an exception) for non-finite samples."""

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

from ablate.metrics import (
    class_entropy,
    energy_distance,
    frechet_distance,
    frechet_distance_from_stats,
    kernel_inception_distance,
    support_scores,
    wasserstein2,
)
from ablate.tasks.toy2d import sample_dataset

LEVELS = [0.1, 0.2, 0.4, 0.8]


@pytest.fixture(scope="module")
def points():
    """A checkerboard reference, a second real set and a fixed unit-noise direction, 500 points each."""
    reference = sample_dataset("checkerboard", 500, torch.Generator().manual_seed(0)).double().numpy()
    fresh = sample_dataset("checkerboard", 500, torch.Generator().manual_seed(1)).double().numpy()
    return reference, fresh, np.random.default_rng(2).normal(size=fresh.shape)


def strictly_increasing(values):
    return all(a < b for a, b in zip(values, values[1:]))


def test_w2_is_exact_in_1d_and_for_a_translation():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 1)), rng.exponential(size=(300, 1))
    sorted_matching = math.sqrt(np.mean((np.sort(x[:, 0]) - np.sort(y[:, 0])) ** 2))
    assert wasserstein2(x, y) == pytest.approx(sorted_matching, rel=1e-9)
    z = rng.normal(size=(200, 2))
    assert wasserstein2(z, z + np.array([0.3, -0.4])) == pytest.approx(0.5, rel=1e-9)
    assert wasserstein2(torch.tensor(z), z) == pytest.approx(0.0, abs=1e-6)


def test_energy_distance_matches_scipy_in_1d_and_is_zero_on_itself():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=400), rng.normal(0.5, 2.0, size=300)
    assert energy_distance(x[:, None], y[:, None]) == pytest.approx(scipy.stats.energy_distance(x, y), rel=1e-9)
    assert energy_distance(x[:, None], x[:, None]) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("metric", [wasserstein2, energy_distance])
def test_point_metrics_grow_monotonically_with_shift_and_blur(points, metric):
    reference, fresh, direction = points
    floor = metric(fresh, reference)
    assert metric(reference, reference) == pytest.approx(0.0, abs=1e-9)
    shifted = [metric(fresh + level, reference) for level in LEVELS]
    blurred = [metric(fresh + level * direction, reference) for level in LEVELS]
    assert strictly_increasing([floor, *shifted]), shifted
    assert strictly_increasing([floor, *blurred]), blurred


def test_frechet_distance_matches_the_gaussian_closed_form():
    dim, mu, scale = 4, np.array([1.0, 0.0, -2.0, 0.5]), 3.0
    expected = mu @ mu + dim * (1 - scale) ** 2  # ||mu||^2 + tr(I + s^2 I - 2 s I)
    assert frechet_distance_from_stats(np.zeros(dim), np.eye(dim), mu, scale**2 * np.eye(dim)) == pytest.approx(
        expected, rel=1e-9
    )


def test_frechet_distance_is_zero_on_itself_finite_when_singular_and_monotone():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, 8))
    features[:, 3] = 0.0  # a dead feature: singular covariance
    features[:, 5] = features[:, 4]  # and a duplicated one
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    other = rng.normal(size=(400, 8))
    other[:, 3] = 0.0
    assert math.isfinite(frechet_distance(features, other))
    direction = rng.normal(size=features.shape)
    blurred = [frechet_distance(features + level * direction, features) for level in [0.0, *LEVELS]]
    shifted = [frechet_distance(features + level, features) for level in [0.0, *LEVELS]]
    assert strictly_increasing(blurred) and strictly_increasing(shifted)


def test_kid_is_near_zero_for_the_same_distribution_and_grows_with_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(500, 16)), rng.normal(size=(500, 16))
    same = kernel_inception_distance(a, b)
    shifted = [kernel_inception_distance(a + level, b) for level in LEVELS]
    assert abs(same) < 0.2 * shifted[0]
    assert strictly_increasing(shifted)


def test_kid_subsets_are_deterministic_and_agree_with_the_full_estimate():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 8)), rng.normal(0.5, 1.0, size=(300, 8))
    full = kernel_inception_distance(a, b)
    subsets = kernel_inception_distance(a, b, subset_size=100, n_subsets=20)
    assert subsets == kernel_inception_distance(a, b, subset_size=100, n_subsets=20)
    assert subsets == pytest.approx(full, rel=0.25)


def test_class_entropy_is_normalised():
    assert class_entropy(np.arange(100) % 10, 10) == pytest.approx(1.0)
    assert class_entropy(np.full(50, 3), 10) == 0.0
    assert class_entropy(torch.tensor([0, 1] * 20), 10) == pytest.approx(math.log(2) / math.log(10))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_samples_give_inf_without_raising(bad):
    good = np.random.default_rng(0).normal(size=(50, 3))
    broken = good.copy()
    broken[7, 1] = bad
    for metric in (wasserstein2, energy_distance, frechet_distance, kernel_inception_distance):
        assert metric(broken, good) == math.inf
        assert metric(good, torch.tensor(broken)) == math.inf


def test_frechet_trace_term_agrees_with_scipy_sqrtm_on_full_rank_covariances():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    sigma_a, sigma_b = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu = rng.normal(size=6)
    expected = mu @ mu + np.trace(sigma_a + sigma_b - 2 * np.real(scipy.linalg.sqrtm(sigma_a @ sigma_b)))
    assert frechet_distance_from_stats(mu, sigma_a, np.zeros(6), sigma_b) == pytest.approx(expected, rel=1e-8)


def test_support_scores_exact_values():
    shares = np.full(8, 1 / 8)
    every_region = np.repeat(np.arange(8), 10)
    assert support_scores(every_region, np.ones(80, bool), shares) == pytest.approx(
        {"precision": 1.0, "coverage": 1.0, "structure": 1.0}
    )
    half = np.repeat(np.arange(4), 20)  # four of eight equally likely regions, each twice its share
    assert support_scores(half, np.ones(80, bool), shares) == pytest.approx(
        {"precision": 1.0, "coverage": 0.5, "structure": 0.5}
    )
    # the points of regions 0..2 fall just off the support: 5 of 8 regions hit, each at 1/5 instead of 1/8
    scores = support_scores(every_region, every_region >= 3, shares)
    assert scores["precision"] == pytest.approx(50 / 80)
    assert scores["coverage"] == pytest.approx(1 - 0.5 * (3 / 8 + 5 * (1 / 5 - 1 / 8)))
    assert scores["structure"] == pytest.approx(5 / 8)
    nothing = support_scores(every_region, np.zeros(80, bool), shares)
    assert nothing == {"precision": 0.0, "coverage": 0.0, "structure": 0.0}


def test_support_scores_use_the_data_shares_and_count_points_outside_in_structure():
    shares = np.array([0.75, 0.25])
    regions = np.array([0] * 50 + [1] * 50)
    inside = np.ones(100, bool)
    assert support_scores(regions, inside, shares)["coverage"] == pytest.approx(0.75)
    assert support_scores(regions, inside, shares)["structure"] == pytest.approx(0.75)
    inside[:10] = False  # 10 points of region 0 leave the support: 40 + 50 inside
    scores = support_scores(regions, inside, shares)
    assert scores["precision"] == pytest.approx(0.9)
    assert scores["coverage"] == pytest.approx(1 - 0.5 * (abs(40 / 90 - 0.75) + abs(50 / 90 - 0.25)))
    assert scores["structure"] == pytest.approx(0.40 + 0.25)
    with pytest.raises(ValueError):
        support_scores(regions, inside[:5], shares)
