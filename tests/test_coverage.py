"""The intervals mean what their label says: simulated grids with known truth, 95 % nominal.

Each replication draws a 2^4 grid whose true cell means have main effects, a two-way and a strong
three-way interaction; every cell of a seed shares a random seed effect, and the cells' noise
variances differ 30-fold. Cell intervals, effect intervals of every order, simple effects, paired
comparisons, the log-scale ratios and effects with trials missing at random must each cover the truth
92-98 % of the time at 2, 3 and 5 seeds. A last test shows the window is sharp: a z-interval in place
of the t-interval fails it.
"""

import itertools

import numpy as np
import pytest

from ablate.analysis.effects import all_terms
from ablate.analysis.grid import Grid, term_contrast
from ablate.analysis.inference import t_interval

FACTORS = ("tau_sampling", "bootstrap_space", "half_step", "tau2_weight")
LEVELS = {f: ("paper", "other") for f in FACTORS}
CODES = np.array(list(itertools.product((1, -1), repeat=4)), float)  # cells in Grid order
TRUE_EFFECTS = {
    ("tau_sampling",): 0.2,
    ("half_step", "tau2_weight"): -0.15,
    ("bootstrap_space", "half_step", "tau2_weight"): 0.3,
}
TERMS = all_terms(FACTORS)
REPS = 400
SEED_COUNTS = (2, 3, 5)


def _true_means() -> np.ndarray:
    means = np.ones(len(CODES))
    for term, effect in TRUE_EFFECTS.items():
        means += effect / 2 * np.prod(CODES[:, [FACTORS.index(f) for f in term]], axis=1)
    return means


def _true_effect(means: np.ndarray, term, within=None) -> float:
    """mean(+1) - mean(-1) of the true cell means, within fixed levels of other factors."""
    keep = np.ones(len(CODES), bool)
    for factor, level in (within or {}).items():
        keep &= CODES[:, FACTORS.index(factor)] == (1 if level == "paper" else -1)
    sign = np.prod(CODES[:, [FACTORS.index(f) for f in term]], axis=1)
    return means[keep & (sign > 0)].mean() - means[keep & (sign < 0)].mean()


def _simulate(n_seeds: int, rng: np.random.Generator, log_normal: bool = False) -> np.ndarray:
    """cells x seeds values: true mean + seed effect + cell noise with a 30x spread of variances."""
    variances = 0.01 * 30 ** rng.permutation(np.linspace(0, 1, len(CODES)))
    noise = rng.standard_normal((len(CODES), n_seeds)) * np.sqrt(variances)[:, None]
    centred = _true_means()[:, None] + 0.3 * rng.standard_normal(n_seeds)[None, :] + noise
    return np.exp(centred) if log_normal else centred


def _covers(interval, truth) -> bool:
    return interval.low <= truth <= interval.high


@pytest.fixture(scope="module")
def coverage():
    """Share of intervals covering the truth, per kind of interval and seed count."""
    rng = np.random.default_rng(20261128)
    means = _true_means()
    within = [
        ("half_step", {"tau2_weight": "paper"}),
        ("half_step", {"tau2_weight": "other"}),
        ("bootstrap_space", {"half_step": "other", "tau2_weight": "paper"}),
    ]
    mains_only = 1 + CODES @ np.array([0.2, -0.1, 0.3, 0.0]) / 2
    hits: dict[tuple[str, int], list[bool]] = {}
    for n in SEED_COUNTS:
        for _ in range(REPS):
            values = _simulate(n, rng)
            grid = Grid(FACTORS, LEVELS, tuple(range(n)), values)

            def record(kind: str, ok: bool, n: int = n) -> None:
                hits.setdefault((kind, n), []).append(ok)

            for cell in range(len(CODES)):
                record("cell", _covers(t_interval(values[cell]), means[cell]))
            for term in TERMS:
                kind = "main" if len(term) == 1 else f"{len(term)}-way"
                record(kind, _covers(term_contrast(grid, term).interval, _true_effect(means, term)))
            for factor, levels in within:
                contrast = term_contrast(grid, (factor,), levels)
                record("simple", _covers(contrast.interval, _true_effect(means, (factor,), levels)))
            paper, other = 0, int(rng.integers(1, len(CODES)))
            record("paired", _covers(t_interval(values[other] - values[paper]), means[other] - means[paper]))
            # trials missing at random (15 %): each contrast uses the strata complete in the same seeds;
            # with main effects only, every choice of strata has the same true effect
            gappy = _simulate(n, rng) - _true_means()[:, None] + mains_only[:, None]
            gappy[rng.random(gappy.shape) < 0.15] = np.nan
            gappy_grid = Grid(FACTORS, LEVELS, tuple(range(n)), gappy)
            for term in TERMS[:4]:
                interval = term_contrast(gappy_grid, term).interval
                if np.isfinite(interval.low):
                    record("main, 15 % missing", _covers(interval, _true_effect(mains_only, term)))
            log_grid = Grid(FACTORS, LEVELS, tuple(range(n)), _simulate(n, rng, log_normal=True))
            for term in TERMS[:4]:  # on the log scale the true log-ratio is the coded contrast of means
                record(
                    "log ratio", _covers(term_contrast(log_grid, term, scale="log").interval, _true_effect(means, term))
                )
    return {key: float(np.mean(value)) for key, value in hits.items()}


@pytest.mark.parametrize("n_seeds", SEED_COUNTS)
@pytest.mark.parametrize(
    "kind", ["cell", "main", "2-way", "3-way", "4-way", "simple", "paired", "log ratio", "main, 15 % missing"]
)
def test_intervals_cover_the_truth_at_their_nominal_95_percent(coverage, kind, n_seeds):
    assert 0.92 <= coverage[(kind, n_seeds)] <= 0.98, coverage


def test_the_window_is_sharp_a_normal_quantile_interval_fails_it():
    """The old percentile bootstrap gave ~50 % at 2 seeds; even mean +- 1.96 se (the right centre and
    spread, the wrong quantile) falls far outside 92-98 % at 2 and 3 seeds."""
    rng = np.random.default_rng(7)
    means = _true_means()
    for n in (2, 3):
        covered = []
        for _ in range(REPS):
            values = _simulate(n, rng)
            se = values.std(axis=1, ddof=1) / np.sqrt(n)
            covered += list(np.abs(values.mean(axis=1) - means) <= 1.96 * se)
        assert np.mean(covered) < 0.9


def test_hotelling_test_of_a_three_level_factor_holds_its_size_and_has_power():
    """Per-seed vectors of level means (minus their average), seed effect shared, unequal variances:
    under no effect p < 0.05 about 5 % of the time; a shift of 2 sd is found."""
    from ablate.analysis.inference import hotelling_p_value

    rng = np.random.default_rng(3)

    def p_value(shift: float) -> float:
        seeds = 5
        levels = (0.0, 0.0, shift) + 0.4 * rng.standard_normal(seeds)[:, None]
        values = levels + rng.standard_normal((seeds, 3)) * np.array([0.05, 0.1, 0.2])
        centred = values - values.mean(axis=1, keepdims=True)
        return hotelling_p_value(centred[:, :-1])

    null = np.array([p_value(0.0) for _ in range(REPS)])
    assert 0.025 <= (null < 0.05).mean() <= 0.08
    assert np.mean([p_value(1.0) < 0.05 for _ in range(100)]) > 0.8


@pytest.mark.slow
@pytest.mark.parametrize("mean, model_sd", [(0.9, 0.02), (0.99, 0.005), (0.995, 0.002), (0.999, 0.0)])
def test_share_cell_intervals_stay_in_0_1_and_cover_near_the_bound(mean, model_sd):
    """A share of 1000 samples whose true value varies by model (Beta over seeds) near 1: the logit-scale
    interval with the binomial floor stays inside [0, 1] and covers the mean share at 2, 3 and 5 seeds
    (a raw-scale interval with the same floor covered 0.92 / 0.89 at 3 / 5 seeds for 0.995 +- 0.005; without
    the floor, tied seeds gave zero width). Much larger spread right at the bound (0.99 +- 0.02, a Beta piled
    against 1) is not held by either: 0.73 at 5 seeds."""
    from ablate.analysis.cells import share_interval

    rng = np.random.default_rng(int(mean * 1000))
    n, replicates = 1000, 1500
    for seeds in (2, 3, 5):
        covered = 0
        for _ in range(replicates):
            if model_sd:
                c = mean * (1 - mean) / model_sd**2 - 1
                shares = rng.beta(mean * c, (1 - mean) * c, seeds)
            else:
                shares = np.full(seeds, mean)
            values = rng.binomial(n, shares) / n
            interval = share_interval(values, n)
            assert 0 <= interval.low <= interval.high <= 1 and interval.high > interval.low
            covered += interval.low <= mean <= interval.high
        assert covered / replicates >= 0.93, (seeds, covered / replicates)
