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

    @property
    def df(self) -> int:
        return max(self.n - 1, 0)

    @property
    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)


def t_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> TInterval:
    """Student-t interval of the mean of values that are independent across seeds.

    NaN interval with fewer than two values. Values that are all equal give a zero-width interval
    (p = 0 unless the mean is 0): a constant, such as a noise floor scored on one reference set.
    """
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n == 0:
        return TInterval(np.nan, np.nan, np.nan, np.nan, 0, np.nan)
    mean = float(values.mean())
    if n < 2:
        return TInterval(mean, np.nan, np.nan, np.nan, n, np.nan)
    sd = float(values.std(ddof=1))
    se = sd / math.sqrt(n)
    if se == 0:
        return TInterval(mean, mean, mean, 1.0 if mean == 0 else 0.0, n, 0.0)
    quantile = stats.t.ppf(0.5 + confidence / 2, n - 1)
    p_value = float(2 * stats.t.sf(abs(mean) / se, n - 1))
    return TInterval(mean, mean - quantile * se, mean + quantile * se, p_value, n, sd)


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
    high = 1.0
    while paired_t_power(high, n, alpha) < power:
        high *= 2
    size = optimize.brentq(lambda d: paired_t_power(d, n, alpha) - power, 1e-9, high)
    return float(size * sd)


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
