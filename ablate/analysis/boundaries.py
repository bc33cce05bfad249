"""Group-sequential boundaries for tests over seeds: alpha spending and the nominal level at each look.

A study that adds seeds in rounds looks at its data several times (after n_1 < n_2 < ... seeds). A test
that rejects whenever its fixed-sample p-value is below alpha at *any* look errs more often than alpha;
a group-sequential test spends its alpha across the looks instead. Here alpha is spent by the
**Lan-DeMets O'Brien-Fleming-type function** (Lan & DeMets 1983)

    spent(alpha, t) = 2 - 2 Phi(z_{1 - alpha/2} / sqrt(t)),    t = seeds so far / planned maximum,

which spends almost nothing at the first looks and nearly all of alpha at the last, so a study that runs
to its maximum loses little power against the fixed design. The nominal level a_k of look k (reject at
look k when that look's fixed-sample p-value is <= a_k) is the one at which

    P(reject at look k, not at an earlier look) = spent(alpha, t_k) - spent(alpha, t_{k-1})

under the null. Every statistic here is a t over per-seed numbers (or Hotelling's T^2 of per-seed
vectors), and the per-seed numbers are iid normal under the null, so the joint null distribution of the
looks' p-values is **pivotal**: it depends on the seed counts and nothing else (not on the spread). Since
each look's p-value is exactly uniform on its own, P(p_k <= a) = a, and only the overlap with earlier
rejections is taken from a Monte Carlo sample of that pivotal distribution (fixed seed, so the
boundaries are the same in every run):

    a_k = increment_k + P(p_k <= a_k and some p_j <= a_j, j < k),

solved by fixed-point iteration. With one look (t = 1) the level is alpha itself: the fixed test.

Levels are tabulated once per test (seed counts, information fractions, sidedness, dimension) on a fine
log grid of alpha and interpolated log-log between grid points; the smallest alpha at which a look's
p-value crosses (:meth:`GroupSequentialTest.stage_p`) inverts the same table, so "p_k <= level(alpha)"
and "stage_p <= alpha" are one decision. Assumes each look's seeds include the previous look's (true
when the rounds' trials finish); a look without a test (fewer than two seeds, tied seeds) is skipped.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

SPENDING = "Lan-DeMets O'Brien-Fleming-type alpha spending"
DRAWS = 2**18  # Monte Carlo draws of the pivotal null: a level's overlap term to about 1 % of alpha
NULL_SEED = 20130101  # the draws' fixed seed: boundaries are the same in every run and on every machine
CHUNK = 2**15  # draws simulated at a time, so memory stays small for many seeds
# The alpha grid of the level tables: 40 points a decade from 1e-20 to the cap. Above the cap a later
# look's level falls again (the early looks take nearly all of a large alpha), so levels are monotone in
# alpha only below it; no hypothesis is ever tested at a local alpha near it (the family's is 0.05).
GRID_MIN_LOG10, GRID_CAP, GRID_PER_DECADE = -20.0, 0.5, 40
ALPHA_GRID = np.logspace(GRID_MIN_LOG10, math.log10(GRID_CAP), int(-GRID_MIN_LOG10 * GRID_PER_DECADE) + 1)
TINY = 1e-300  # levels are interpolated on the log scale; a level that underflows is taken as this


def spent(alpha: float, fraction: float) -> float:
    """Alpha spent by information fraction ``fraction`` (O'Brien-Fleming type): alpha at 1, ~0 early."""
    if alpha <= 0:
        return 0.0
    if fraction >= 1:
        return float(alpha)
    return float(2 * special.ndtr(special.ndtri(alpha / 2) / math.sqrt(fraction)))  # lower tails: exact when tiny


@dataclass(frozen=True)
class GroupSequentialTest:
    """One hypothesis' test across looks: its seed count and information fraction at each look where it
    has a p-value, whether the test is one-sided (a one-sided t, or the two one-sided tests of an
    equivalence), and the dimension of its statistic (1: a t over seeds; d > 1: Hotelling's T^2 of
    d-vectors, a level test of a factor with d + 1 levels)."""

    sizes: tuple[int, ...]
    fractions: tuple[float, ...]
    one_sided: bool = False
    dims: int = 1

    def levels(self, alpha: float) -> np.ndarray:
        """Nominal level of each look at local level ``alpha``: reject at look k when p_k <= levels[k]."""
        if alpha < ALPHA_GRID[0] or not self.sizes:  # below the grid: never reject (no local level is so small)
            return np.zeros(len(self.sizes))
        table = _level_table(self)
        x = math.log(min(alpha, GRID_CAP))
        return np.exp([np.interp(x, np.log(ALPHA_GRID), row) for row in table])

    def stage_p(self, p_values: np.ndarray) -> np.ndarray:
        """For each look's p-value, the smallest local alpha at which this test rejects at that look
        (1.0 where it would not even at the grid's cap; NaN p-values: 1.0). ``p_values`` may have extra
        leading axes (simulations); its last axis is the looks."""
        p = np.asarray(p_values, dtype=float)
        out = np.ones(p.shape)
        if not self.sizes:
            return out
        table, log_grid = _level_table(self), np.log(ALPHA_GRID)
        for k, row in enumerate(table):
            with np.errstate(divide="ignore", invalid="ignore"):
                target = np.log(np.maximum(p[..., k], TINY))
            index = np.searchsorted(row, target, side="left")  # first grid alpha whose level reaches p
            inside = (index > 0) & (index < len(row))
            low = np.clip(index - 1, 0, len(row) - 1)
            high = np.clip(index, 0, len(row) - 1)
            with np.errstate(divide="ignore", invalid="ignore"):
                share = np.where(row[high] > row[low], (target - row[low]) / (row[high] - row[low]), 1.0)
            between = np.exp(log_grid[low] + share * (log_grid[high] - log_grid[low]))
            stage = np.where(index == 0, ALPHA_GRID[0], np.where(inside, between, 1.0))
            out[..., k] = np.where(np.isfinite(p[..., k]), stage, 1.0)
        return out


@dataclass(frozen=True)
class _NullDraws:
    """Simulated null p-values of one statistic at its looks, each look's sorted with their draw index."""

    p: np.ndarray  # (looks, DRAWS)
    order: np.ndarray  # (looks, DRAWS): draw indices by increasing p
    sorted_p: np.ndarray  # (looks, DRAWS)


@functools.lru_cache(maxsize=32)
def _null_draws(sizes: tuple[int, ...], one_sided: bool, dims: int) -> _NullDraws:
    """The looks' p-values on nested prefixes of iid standard normal seeds (the pivotal null)."""
    rng = np.random.default_rng([NULL_SEED, dims, max(sizes)])  # the same draws for every test of a shape
    chunks = []
    for start in range(0, DRAWS, CHUNK):
        count = min(CHUNK, DRAWS - start)
        draws = rng.standard_normal((count, max(sizes), dims))
        chunks.append(_p_values(draws, sizes, one_sided))
    p = np.concatenate(chunks, axis=1)
    order = np.argsort(p, axis=1)
    return _NullDraws(p, order, np.take_along_axis(p, order, axis=1))


def _p_values(draws: np.ndarray, sizes: tuple[int, ...], one_sided: bool) -> np.ndarray:
    """p-values at each prefix size of (draws, seeds, dims) normals: the t-test (dims 1; one- or two-sided)
    or Hotelling's T^2 test of mean zero (dims > 1), as :mod:`ablate.analysis.inference` computes them."""
    dims = draws.shape[2]
    sums = np.cumsum(draws, axis=1)
    out = np.empty((len(sizes), draws.shape[0]))
    if dims == 1:
        squares = np.cumsum(draws[..., 0] ** 2, axis=1)
        for k, n in enumerate(sizes):
            mean = sums[:, n - 1, 0] / n
            sd = np.sqrt(np.maximum(squares[:, n - 1] - n * mean**2, 0.0) / (n - 1))
            t = mean / (sd / math.sqrt(n))
            out[k] = stats.t.sf(t, n - 1) if one_sided else 2 * stats.t.sf(np.abs(t), n - 1)
        return out
    products = np.cumsum(draws[..., :, None] * draws[..., None, :], axis=1)
    for k, n in enumerate(sizes):
        mean = sums[:, n - 1] / n
        covariance = (products[:, n - 1] - n * mean[:, :, None] * mean[:, None, :]) / (n - 1)
        t2 = n * np.einsum("ri,ri->r", mean, np.linalg.solve(covariance, mean[..., None])[..., 0])
        out[k] = stats.f.sf(t2 * (n - dims) / (dims * (n - 1)), dims, n - dims)
    return out


@functools.lru_cache(maxsize=256)
def _level_table(test: GroupSequentialTest) -> np.ndarray:
    """log nominal level of each look (rows) at each alpha of ALPHA_GRID (columns), non-decreasing along
    alpha (a Monte Carlo wiggle is flattened downwards, the conservative way)."""
    draws = _null_draws(test.sizes, test.one_sided, test.dims) if len(test.sizes) > 1 else None
    table = np.array([_levels_at(draws, test.fractions, alpha) for alpha in ALPHA_GRID]).T
    table = np.minimum.accumulate(table[:, ::-1], axis=1)[:, ::-1]
    return np.log(np.maximum(table, TINY))


def _levels_at(draws: _NullDraws | None, fractions: tuple[float, ...], alpha: float) -> list[float]:
    """The looks' nominal levels at one alpha: each spends its increment of the spending function, plus
    the (simulated) probability that its rejection region overlaps an earlier look's."""
    levels, crossed, previous = [], np.empty(0, dtype=np.int64), 0.0
    marked = np.zeros(DRAWS, dtype=bool) if draws is not None else None
    for k, fraction in enumerate(fractions):
        target = spent(alpha, fraction)
        increment, previous = max(target - previous, 0.0), max(previous, target)
        level = increment
        if draws is not None and len(crossed):
            earlier = draws.p[k, crossed]
            while (updated := increment + np.count_nonzero(earlier <= level) / DRAWS) > level:
                level = updated
        levels.append(min(level, 1.0))
        if draws is not None and k + 1 < len(fractions):
            hits = draws.order[k, : np.searchsorted(draws.sorted_p[k], level, side="right")]
            hits = hits[~marked[hits]]
            marked[hits] = True
            crossed = np.concatenate([crossed, hits])
    return levels
