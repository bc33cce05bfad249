"""Small-sample inference on numbers that are independent across seeds (numpy and scipy only).

Every interval in ``ablate`` is built the same way: reduce the data to one number per seed (a cell's
value, a within-seed contrast of cells, a paired difference), then take Student's t over seeds.
The seeds are the independent replicates of an ablation grid: every cell with seed s shares its
data, noise and (tau, d) stream, so values of one seed are correlated but values of different seeds
are not. A t-interval over per-seed numbers is exact under normality whatever the cells' variances
and whatever the correlation inside a seed, which is why it is used instead of a pooled error term
(which assumes equal variances) or a bootstrap (whose percentile interval at 2 seeds is the range
of the two values and covers ~50 %). ``benchmarks/statistics_coverage.py`` prints the coverage of
each method on simulated grids.
"""

from __future__ import annotations

import functools
import gc
import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats
from statsmodels.stats.multitest import multipletests

CONFIDENCE = 0.95
POWER = 0.8
MAX_SEEDS = 100_000


@dataclass(frozen=True)
class TInterval:
    """Mean of per-seed numbers with its Student-t interval and two-sided p-value (H0: mean = 0)."""

    estimate: float
    low: float
    high: float
    p_value: float
    n: int
    sd: float
    tied: bool = False  # every per-seed number equal and no measurement noise declared: no CI, no test

    @property
    def df(self) -> int:
        return max(self.n - 1, 0)

    @property
    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)


def t_interval(values: np.ndarray, confidence: float = CONFIDENCE, floor_sd: float = 0.0) -> TInterval:
    """Student-t interval of the mean of values that are independent across seeds.

    NaN interval with fewer than two values. ``floor_sd`` is the standard deviation of one value's
    measurement noise where the metric declares it (a share scored on n samples: its binomial
    standard error): the seeds' spread is never taken below it, so per-seed numbers that tie
    because the metric is discrete (shares on 1000 samples often do at 2 seeds) give an interval
    as wide as the measurement allows, not zero. Values that tie with no declared noise give no
    interval and no p-value (``tied``): a zero spread over a handful of seeds is no certainty.
    """
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n == 0:
        return TInterval(np.nan, np.nan, np.nan, np.nan, 0, np.nan)
    mean = float(values.mean())
    if n < 2:
        return TInterval(mean, np.nan, np.nan, np.nan, n, np.nan)
    sd = max(float(values.std(ddof=1)), float(floor_sd))
    se = sd / math.sqrt(n)
    if se == 0:
        return TInterval(mean, np.nan, np.nan, np.nan, n, 0.0, tied=True)
    quantile = stats.t.ppf(0.5 + confidence / 2, n - 1)
    p_value = float(2 * stats.t.sf(abs(mean) / se, n - 1))
    return TInterval(mean, mean - quantile * se, mean + quantile * se, p_value, n, sd)


def one_sided_p(interval: TInterval, positive: bool) -> float:
    """p-value of the one-sided t-test that the mean is above 0 (``positive``) or below it."""
    if not np.isfinite(interval.p_value):
        return np.nan
    half = interval.p_value / 2
    return half if (interval.estimate > 0) == positive and interval.estimate != 0 else 1 - half


def equivalence_p(interval: TInterval, margin: float) -> float:
    """TOST p-value that |mean| < margin (two one-sided t-tests; equivalence shown at level a when
    the 1 - 2a interval lies inside (-margin, margin)). NaN without a spread or a margin."""
    if not (np.isfinite(interval.p_value) and np.isfinite(margin) and margin > 0 and interval.sd > 0):
        return np.nan
    se, df = interval.sd / math.sqrt(interval.n), interval.n - 1
    above = stats.t.sf((interval.estimate + margin) / se, df)  # H0: mean <= -margin
    below = stats.t.cdf((interval.estimate - margin) / se, df)  # H0: mean >= margin
    return float(max(above, below))


def hotelling_p_value(vectors: np.ndarray) -> float:
    """Hotelling's one-sample T^2 test of mean vector = 0, rows independent across seeds.

    Used for factors with more than two levels (each seed gives the vector of its level means
    minus their average). Needs more seeds than dimensions; NaN otherwise.
    """
    vectors = np.asarray(vectors, dtype=float)
    n, p = vectors.shape
    if n <= p:
        return np.nan
    mean = vectors.mean(axis=0)
    cov = np.atleast_2d(np.cov(vectors, rowvar=False))
    try:
        t2 = n * float(mean @ np.linalg.solve(cov, mean))
    except np.linalg.LinAlgError:
        return np.nan
    f_stat = t2 * (n - p) / (p * (n - 1))
    return float(stats.f.sf(f_stat, p, n - p))


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values; NaN entries stay NaN and do not count towards the family.

    statsmodels' Holm branch calls ``gc.collect()`` on every use, which costs a tenth of a second
    with pandas and matplotlib loaded; freezing the existing heap makes that scan cheap.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(len(p), np.nan)
    finite = np.isfinite(p)
    if finite.any():
        gc.freeze()
        try:
            adjusted[finite] = multipletests(p[finite], method="holm")[1]
        finally:
            gc.unfreeze()
    return adjusted.tolist()


def paired_t_power(effect_over_sd: float, n: int, alpha: float = 1 - CONFIDENCE) -> float:
    """Power of the two-sided one-sample t-test over n seeds for a true effect of the given size
    in units of the per-seed standard deviation (noncentral t)."""
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    noncentrality = effect_over_sd * math.sqrt(n)
    lower_tail = stats.nct.cdf(-critical, df, noncentrality)  # NaN far in the tail: there it is 0
    return float(stats.nct.sf(critical, df, noncentrality) + np.nan_to_num(lower_tail))


def minimum_detectable_effect(sd: float, n: int, power: float = POWER, alpha: float = 1 - CONFIDENCE) -> float:
    """Smallest |effect| the t-test over n seeds detects with the given power, in the units of sd."""
    if n < 2 or not np.isfinite(sd):
        return np.nan
    if sd == 0:
        return 0.0
    return float(_detectable_size(n, power, alpha) * sd)


@functools.lru_cache(maxsize=1024)
def _detectable_size(n: int, power: float, alpha: float) -> float:
    """The minimum detectable effect in units of the per-seed sd: the same for every term with the same
    seeds and share of alpha, so a report's power table solves it once per (n, alpha), not per row."""
    high = 1.0
    while paired_t_power(high, n, alpha) < power:
        high *= 2
    return optimize.brentq(lambda d: paired_t_power(d, n, alpha) - power, 1e-9, high)


def seeds_needed(effect: float, sd: float, power: float = POWER, alpha: float = 1 - CONFIDENCE) -> float:
    """Fewest seeds for which the t-test over seeds detects ``effect`` with the given power.

    NaN when sd is unknown or the effect is 0; ``inf`` beyond MAX_SEEDS.
    """
    if not (np.isfinite(sd) and np.isfinite(effect)) or effect == 0:
        return np.nan
    if sd == 0:
        return 2.0
    size = abs(effect) / sd

    def enough(n: int) -> bool:
        return paired_t_power(size, n, alpha) >= power

    high = 2
    while not enough(high):
        high *= 2
        if high > MAX_SEEDS:
            return math.inf
    low = max(2, high // 2)
    if enough(low):
        return float(low)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return float(high)


@dataclass(frozen=True)
class GraphResult:
    """Outcome of a graphical multiple-testing procedure, per hypothesis (in input order).

    ``level`` is the local significance level at which the hypothesis was decided: where it was
    rejected, its weight times alpha at that moment; where it was not, its weight times alpha when
    the procedure stopped (0: it never received any). An interval at confidence 1 - level therefore
    excludes "no effect" exactly for the rejected hypotheses.
    """

    adjusted: list[float]
    rejected: list[bool]
    level: list[float]


def graphical_test(
    p_values: list[float],
    weights: list[float],
    transitions: list[list[float]],
    alpha: float = 1 - CONFIDENCE,
) -> GraphResult:
    """The sequentially rejective graphical procedure of Bretz, Maurer, Brannath and Posch (2009).

    Each hypothesis i starts with a share ``weights[i]`` of alpha (the shares sum to at most 1) and
    is rejected when p_i <= weight_i * alpha. A rejected hypothesis passes its weight on along the
    ``transitions[i][j]`` (each row sums to at most 1), and the graph is updated (their Algorithm 1),
    so that alpha flows from what was resolved to what may follow it. The procedure is a closed test
    of weighted Bonferroni tests: the family-wise error is at most alpha over all hypotheses,
    whatever their dependence. Holm is the graph with equal weights passing equally to all others.
    Adjusted p-values (their Algorithm 2) are alpha-free: reject i exactly when adjusted_i <= alpha.
    NaN p-values are never rejected (adjusted 1).
    """
    m = len(p_values)
    p = np.array([float(v) if np.isfinite(v) else math.inf for v in p_values])
    w = np.array(weights, dtype=float)
    g = np.array(transitions, dtype=float).reshape(m, m)
    adjusted, rejected, level = [1.0] * m, [False] * m, [0.0] * m
    remaining = np.ones(m, dtype=bool)
    running = 0.0
    stopped = False
    while remaining.any():
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(remaining & (w > 0), p / w, math.inf)
        j = int(np.argmin(ratios))
        ratio = float(ratios[j])
        if not stopped and ratio > alpha:  # the procedure at alpha stops here: record the levels it had
            stopped = True
            for i in np.flatnonzero(remaining):
                level[i] = float(w[i] * alpha)
        if not math.isfinite(ratio):
            break
        running = max(running, ratio)
        adjusted[j] = min(1.0, running)
        if not stopped:
            rejected[j], level[j] = True, float(w[j] * alpha)
        remaining[j] = False
        w = np.where(remaining, w + w[j] * g[j], 0.0)
        denominator = 1 - g[:, j] * g[j, :]  # row i: 1 - g_ij g_ji
        with np.errstate(divide="ignore", invalid="ignore"):
            updated = (g + np.outer(g[:, j], g[j, :])) / denominator[:, None]
        keep = np.outer(remaining, remaining) & ~np.eye(m, dtype=bool) & (denominator[:, None] > 0)
        g = np.where(keep, updated, 0.0)
    return GraphResult(adjusted, rejected, level)
