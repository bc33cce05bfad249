"""One metric at one step count as a cells x seeds matrix, and contrasts of its cells paired by seed.

A factor effect is a contrast of cell means: with every two-level factor coded +1 at its reference
level and -1 at the other, the effect of a term (a factor, or an interaction of several) is

    mean(y | product of codes = +1) - mean(y | product of codes = -1).

Here it is computed **within each seed** and then averaged over seeds with a Student-t interval
(:func:`ablate.analysis.inference.t_interval`). The seed's shared data/noise stream cancels in
every contrast, the cells' unequal variances enter each seed's contrast in the same way, and the
interaction terms of every order are part of the cell means, never of the error. The interval is
therefore exact under normality at any number of seeds from 2 up, for every term, including the
3- and 4-way interactions and the simple effects (a term within fixed levels of other factors).

When trials are missing or diverged, a contrast is restricted to the **strata** (combinations of the
other factors' levels) whose cells are all present in the same seeds; which strata and seeds are used
depends only on which trials finished, never on their values.

On a regular fraction (``Grid.fraction``, :mod:`ablate.analysis.fraction`) a term's contrast is the same
difference of means over the fraction's runs, which are balanced and orthogonal for it; its strata are
the level combinations of the factors crossed in full (more than two levels), and a stratum is used in a
seed only with every run present, since dropping one run of a fraction would unbalance the contrast.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from ablate.analysis.inference import CONFIDENCE, TInterval, hotelling_p_value, t_interval


@dataclass(frozen=True)
class Grid:
    """Values of one metric at one K: ``values[cell, seed]``, NaN where no finished trial.

    ``levels`` lists each factor's levels with the reference level first, and ``cells`` is every
    combination of them (the full factorial, whether or not it has data). ``fraction`` marks the cells
    of a regular fraction's runs (None: the full factorial); the contrasts use those cells only.
    """

    factors: tuple[str, ...]
    levels: Mapping[str, tuple]
    seeds: tuple
    values: np.ndarray
    share_samples: int | None = None  # the metric is a share of this many scored samples (binomial noise)
    fraction: np.ndarray | None = None  # per cell: a run of the regular fraction

    @classmethod
    def from_rows(
        cls,
        rows: pd.DataFrame,
        levels: Mapping[str, Sequence],
        seeds: Sequence | None = None,
        share_samples: int | None = None,
        fraction: np.ndarray | None = None,
    ) -> Grid:
        """Build from metric rows with one column per factor, ``seed`` and ``value`` (rows of
        cells outside ``levels`` are ignored; ``seeds`` defaults to the seeds in ``rows``;
        ``share_samples``: the metric is a share of that many samples, see :func:`share_variance`;
        ``fraction``: the cells of a regular fraction, see :func:`ablate.analysis.fraction.fraction_mask`)."""
        factors = tuple(levels)
        seeds = tuple(seeds) if seeds is not None else tuple(sorted(pd.unique(rows["seed"]).tolist()))
        cells = list(itertools.product(*[levels[f] for f in factors]))
        cell_index = {_key(cell): i for i, cell in enumerate(cells)}
        seed_index = {seed: j for j, seed in enumerate(seeds)}
        values = np.full((len(cells), len(seeds)), np.nan)
        columns = [rows[f].tolist() for f in factors]
        for i, (seed, value) in enumerate(zip(rows["seed"].tolist(), rows["value"].to_numpy(float))):
            cell = cell_index.get(_key(tuple(column[i] for column in columns)))
            if cell is not None:
                values[cell, seed_index[seed]] = value
        values[~np.isfinite(values)] = np.nan
        return cls(factors, {f: tuple(levels[f]) for f in factors}, seeds, values, share_samples, fraction)

    @property
    def cells(self) -> list[tuple]:
        return list(itertools.product(*[self.levels[f] for f in self.factors]))

    @property
    def positive(self) -> bool:
        """Every finished value is > 0, so the log scale exists."""
        finite = self.values[np.isfinite(self.values)]
        return bool(len(finite)) and bool((finite > 0).all())

    def on_scale(self, scale: str) -> np.ndarray:
        if scale == "log":
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.log(self.values)
        return self.values

    def noise_on_scale(self, scale: str) -> np.ndarray:
        """Each value's measurement variance on the scale (0 where the metric declares none)."""
        if not self.share_samples:
            return np.zeros_like(self.values)
        variance = share_variance(self.values, self.share_samples)
        if scale == "log":
            with np.errstate(divide="ignore", invalid="ignore"):
                return variance / self.values**2
        return variance

    def cell_index(self, levels: Mapping[str, object]) -> int:
        index = 0
        for f in self.factors:
            index = index * len(self.levels[f]) + self.levels[f].index(levels[f])
        return index


def share_variance(values: np.ndarray, n: int) -> np.ndarray:
    """Binomial measurement variance p(1 - p) / n of shares scored on n samples, with p shrunk by
    half a sample towards 1/2 so that a share of exactly 0 or 1 still has its (small) noise."""
    shrunk = (np.asarray(values, dtype=float) * n + 0.5) / (n + 1)
    return shrunk * (1 - shrunk) / n


def _key(cell: tuple) -> tuple:
    """Hashable, type-blind key (True and np.True_ agree)."""
    return tuple(v.item() if isinstance(v, np.generic) else v for v in cell)


@dataclass(frozen=True)
class Contrast:
    """A term's seed-paired contrast: the t-interval over seeds and what it rests on."""

    interval: TInterval
    n_strata: int
    total_strata: int
    n_values: int
    cells_per_seed: int = 0
    per_seed: np.ndarray = field(default_factory=lambda: np.array([]))
    floor_sd: float = 0.0  # the per-seed contrast's measurement-noise standard deviation

    def at(self, confidence: float) -> TInterval:
        """The same contrast's interval at another confidence (e.g. the level a multiple test used)."""
        return t_interval(self.per_seed, confidence, self.floor_sd)

    @property
    def method(self) -> str:
        n = self.interval.n
        if n == 0:
            return f"impossible (0 of {self.total_strata} strata complete in any seed)"
        seeds = f"{n} seed{'s' if n != 1 else ''}"
        if n == 1:
            return f"single seed: no CI ({self.n_strata} of {self.total_strata} strata)"
        if self.interval.tied:
            return f"seeds tie: no CI ({seeds}, {self.n_strata} of {self.total_strata} strata)"
        return f"seed_paired_t ({seeds}, {self.n_strata} of {self.total_strata} strata)"


def _blocks(grid: Grid, block_factors: Sequence[str], within: Mapping[str, object]):
    """For each stratum (levels of the factors neither in the block nor fixed by ``within``), the
    cell indices of its block, in ``itertools.product`` order of the block factors' levels."""
    others = [f for f in grid.factors if f not in block_factors and f not in within]
    blocks = []
    for rest in itertools.product(*[grid.levels[f] for f in others]):
        base = {**dict(zip(others, rest)), **within}
        cells = []
        for combo in itertools.product(*[grid.levels[f] for f in block_factors]):
            cells.append(grid.cell_index({**base, **dict(zip(block_factors, combo))}))
        blocks.append(cells)
    return np.array(blocks, dtype=int).reshape(len(blocks), -1)


def _term_blocks(grid: Grid, term: Sequence[str], within: Mapping[str, object]) -> tuple[np.ndarray, np.ndarray]:
    """The cells of each stratum of a term's contrast and the term's code on each cell of a block: on
    the full factorial the term's factors' combinations within each level combination of the others; on
    a fraction the fraction's runs with ``within``'s levels, within each level combination of the
    factors crossed in full with it (those of more than two levels) that ``within`` does not fix."""
    if grid.fraction is None:
        signs = np.array([np.prod(s) for s in itertools.product((1, -1), repeat=len(term))], float)
        return _blocks(grid, term, within), signs
    positions = _level_positions(grid)
    keep = grid.fraction.copy()
    for name, level in within.items():
        keep &= positions[:, grid.factors.index(name)] == grid.levels[name].index(level)
    crossed = [f for f in grid.factors if len(grid.levels[f]) != 2 and f not in within]
    blocks = _grouped(grid, positions, keep, crossed)
    block = blocks[0] if len(blocks) else np.array([], dtype=int)  # every block has the same runs
    signs = np.prod(1 - 2 * positions[block][:, [grid.factors.index(f) for f in term]], axis=1).astype(float)
    if not len(signs) or signs.sum() != 0:
        raise ValueError(f"{':'.join(term)} within {dict(within)} is not estimable on the fraction's runs")
    return blocks, signs


def _level_positions(grid: Grid) -> np.ndarray:
    """(cells, factors): each cell's position among its factors' levels, 0 for the reference (coded +1)."""
    combos = itertools.product(*[range(len(grid.levels[f])) for f in grid.factors])
    return np.array(list(combos), dtype=int).reshape(-1, len(grid.factors))


def _grouped(grid: Grid, positions: np.ndarray, keep: np.ndarray, strata_factors: Sequence[str]) -> np.ndarray:
    """The cells that ``keep`` selects, one row per level combination of ``strata_factors``, each row in
    grid order: the same runs in the same order in every stratum."""
    columns = [grid.factors.index(f) for f in strata_factors]
    groups: dict[tuple, list[int]] = {}
    for cell in np.flatnonzero(keep):
        groups.setdefault(tuple(positions[cell, columns]), []).append(int(cell))
    return np.array(list(groups.values()), dtype=int) if groups else np.zeros((0, 0), dtype=int)


@functools.lru_cache(maxsize=4096)
def _expected_width(n_strata: int, n_seeds: int) -> float:
    """Relative expected CI width of a contrast over this many strata and seeds: t(n-1) / sqrt(n R).

    A seed counts for more than a stratum: it adds a degree of freedom (t(1) = 12.7, t(2) = 4.3).
    With a single seed there is no interval; such a choice ranks after every choice with two."""
    if n_strata == 0 or n_seeds == 0:
        return math.inf
    if n_seeds == 1:
        return 1e12 / n_strata
    return float(stats.t.ppf(0.975, n_seeds - 1)) / math.sqrt(n_seeds * n_strata)


def _choose(complete: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Strata and seeds to use, from ``complete[stratum, seed]`` (every cell of the block present).

    Chooses, among a few candidate seed sets (all seeds, each stratum's complete seeds, and their
    running intersections from the largest), the one with the narrowest expected interval; a
    stratum is used only if it is complete in every chosen seed, so each seed's contrast is the same
    linear combination of cells. Depends on which trials finished, never on their values.
    """
    n_strata, n_seeds = complete.shape
    patterns = sorted({tuple(row) for row in complete}, key=lambda p: (-sum(p), p))
    candidates = [tuple([True] * n_seeds), *patterns]
    running = np.ones(n_seeds, bool)
    for pattern in patterns:
        running = running & np.array(pattern, dtype=bool)
        candidates.append(tuple(running))
    best, best_width = (np.zeros(n_strata, bool), np.zeros(n_seeds, bool)), math.inf
    for candidate in candidates:
        seeds = np.array(candidate, bool)
        strata = complete[:, seeds].all(axis=1) if seeds.any() else np.zeros(n_strata, bool)
        width = _expected_width(int(strata.sum()), int(seeds.sum()))
        if width < best_width:
            best, best_width = (strata, seeds), width
    return best


def term_contrast(
    grid: Grid,
    term: Sequence[str],
    within: Mapping[str, object] | None = None,
    scale: str = "raw",
    confidence: float = CONFIDENCE,
) -> Contrast:
    """Effect of a two-level ``term`` (one factor or an interaction), averaged over the factors
    not in it, within fixed levels of the factors in ``within``; on the raw or log scale. On a
    fraction, ValueError for a term the runs with ``within``'s levels do not balance (callers ask for
    estimable ones: :mod:`ablate.analysis.fraction`)."""
    within = dict(within or {})
    blocks, signs = _term_blocks(grid, term, within)
    values = grid.on_scale(scale)
    block_values = values[blocks]  # (strata, cells of a block: 2^k, or the fraction's runs, seeds)
    complete = np.isfinite(block_values).all(axis=1)
    strata, seeds = _choose(complete)
    if not strata.any():
        return Contrast(t_interval(np.array([]), confidence), 0, len(blocks), 0)
    chosen = block_values[strata][:, :, seeds]
    scale_by = blocks.shape[1] // 2 * strata.sum()
    per_seed = np.einsum("c,rcs->s", signs, chosen) / scale_by
    noise = grid.noise_on_scale(scale)[blocks][strata][:, :, seeds]  # each value's measurement variance
    floor_sd = float(np.sqrt(noise.sum(axis=(0, 1)).mean())) / scale_by
    return Contrast(
        t_interval(per_seed, confidence, floor_sd),
        int(strata.sum()),
        len(blocks),
        int(chosen.size),
        int(chosen.shape[0] * chosen.shape[1]),
        per_seed,
        floor_sd,
    )


def level_test(grid: Grid, factor: str, scale: str = "raw") -> tuple[float, Contrast]:
    """Hotelling's T^2 p-value for a factor with more than two levels (any difference between its
    levels, averaged over the other factors), on per-seed vectors of level means; and the usage. On a
    fraction, over its runs (crossed in full with the factor's levels), never a cell outside them."""
    if grid.fraction is None:
        blocks = _blocks(grid, [factor], {})
    else:
        blocks = _grouped(grid, _level_positions(grid), grid.fraction, [f for f in grid.factors if f != factor])
    block_values = grid.on_scale(scale)[blocks]  # (strata, levels, seeds)
    strata, seeds = _choose(np.isfinite(block_values).all(axis=1))
    nan = np.nan
    usage = Contrast(
        TInterval(nan, nan, nan, nan, int(seeds.sum()), nan),
        int(strata.sum()),
        len(blocks),
        int(block_values[strata][:, :, seeds].size),
    )
    if not strata.any():
        return np.nan, usage
    means = block_values[strata][:, :, seeds].mean(axis=0).T  # (seeds, levels)
    centred = means - means.mean(axis=1, keepdims=True)
    return hotelling_p_value(centred[:, :-1]), usage
