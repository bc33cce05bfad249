"""The per-task normalised scores behind ``ablate compare``'s pooled numbers (see :mod:`ablate.compare`).

A folder's cells are scored on one scale (its metric oriented so that higher is better, min-max scaled
over the cells its contrasts use), and each toggle's two sides are gathered as the runs that its effect
and its probability of improvement compare:

- on the full factorial, each stratum (level combination of the other factors) holds one cell at the
  paper's level and its match at the other level: the pairs that differ in this toggle alone;
- on a regular fraction no two runs differ in one toggle alone, so each stratum (level combination of
  the factors crossed in full with the fraction, those of more than two levels; one stratum when there
  are none) holds the fraction's runs at the paper's level on one side and those at the other level on
  the other: the design's contrast, as :mod:`ablate.analysis.grid` takes it. The corner a design adds
  outside the fraction (``Design.extra_runs``) is in neither side and in no scaling: it would unbalance
  the contrast.

Both statistics read the sides the same way, so a full folder's numbers are those of a matched pair:
the effect is the mean over (seed, stratum) of mean(paper's side) - mean(other side), a stratum used in
a seed only with every run of it finished, as in the analysis; the probability of improvement is over
every (paper's-level run, other-level run) pair with both finished, within one seed and stratum.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ablate import analysis
from ablate.analysis.effects import metric_grids
from ablate.analysis.grid import Grid
from ablate.results import Results, default_primary_steps

N_BOOTSTRAP = 2000


@dataclass(frozen=True)
class Sides:
    """A toggle's runs on each side of its contrast: normalised scores, (seeds, strata, runs per side)."""

    paper: np.ndarray  # the toggle at the paper's (reference) level
    other: np.ndarray  # the toggle at its other level

    @property
    def n_seeds(self) -> int:
        return len(self.paper)

    def of_seeds(self, seeds: np.ndarray) -> Sides:
        """The same sides for these seed positions (a bootstrap draw, repeats allowed)."""
        return Sides(self.paper[seeds], self.other[seeds])


@dataclass
class Study:
    """One folder at its chosen metric and K: each two-level factor's sides, in normalised scores."""

    name: str
    results: Results
    metric: str
    steps: int
    sides: dict[str, Sides]


def scored_study(name: str, results: Results, metric: str | None, steps: int | None) -> Study:
    """A folder's sides at ``metric`` and ``steps`` (its primary ones when None), or a one-line
    ValueError naming what the folder lacks."""
    metric = metric or results.run.get("primary_metric")
    if metric not in analysis.quality_metrics(results.metric_names):
        raise ValueError(
            f"{results.folder}: no quality metric {metric!r}; have {analysis.quality_metrics(results.metric_names)}"
        )
    steps = int(steps or results.run.get("primary_steps") or default_primary_steps(results.eval_steps))
    if steps not in results.eval_steps:
        raise ValueError(f"{results.folder}: K = {steps} not evaluated; have {results.eval_steps}")
    grid = metric_grids(results).get((metric, steps))
    if grid is None or not np.isfinite(grid.values).any():
        raise ValueError(f"{results.folder}: no finished values of {metric} at K = {steps}")
    sign = -1.0 if results.metric_directions.get(metric, "min") == "min" else 1.0
    scores = _normalised(sign * grid.values, grid.fraction)
    two_level = [f for f in grid.factors if len(grid.levels[f]) == 2]  # levels: the reference first
    gather = _matched_sides if grid.fraction is None else _fraction_sides
    return Study(name, results, metric, steps, {factor: gather(grid, scores, factor) for factor in two_level})


def _normalised(oriented: np.ndarray, fraction: np.ndarray | None) -> np.ndarray:
    """Scores with 0 at the worst and 1 at the best cell mean over seeds, among the cells the contrasts
    use: every cell of the full factorial, the fraction's runs only on a fraction."""
    used = oriented if fraction is None else oriented[fraction]
    means = np.nanmean(used, axis=1)
    low, high = np.nanmin(means), np.nanmax(means)
    return (oriented - low) / (high - low) if high > low else np.zeros_like(oriented)


def _matched_sides(grid: Grid, scores: np.ndarray, factor: str) -> Sides:
    """Full factorial: per level combination of the other factors, the cell at each of the factor's levels."""
    others = [f for f in grid.factors if f != factor]
    paper, other = [], []
    for combo in itertools.product(*[grid.levels[f] for f in others]):
        base = dict(zip(others, combo))
        paper.append(scores[grid.cell_index({**base, factor: grid.levels[factor][0]})])
        other.append(scores[grid.cell_index({**base, factor: grid.levels[factor][1]})])
    return Sides(np.stack(paper, axis=1)[..., None], np.stack(other, axis=1)[..., None])


def _fraction_sides(grid: Grid, scores: np.ndarray, factor: str) -> Sides:
    """A fraction: per level combination of the factors crossed in full, the fraction's runs at each of
    the factor's levels (in grid order, so the same runs in the same place in every stratum)."""
    column = grid.factors.index(factor)
    crossed = [i for i, f in enumerate(grid.factors) if len(grid.levels[f]) != 2]
    positions = itertools.product(*[range(len(grid.levels[f])) for f in grid.factors])  # 0: the reference
    strata: dict[tuple, tuple[list[int], list[int]]] = {}
    for cell, (position, in_fraction) in enumerate(zip(positions, grid.fraction)):
        if in_fraction:
            paper, other = strata.setdefault(tuple(position[i] for i in crossed), ([], []))
            (paper if position[column] == 0 else other).append(cell)
    paper = np.stack([scores[cells] for cells, _ in strata.values()], axis=1)  # (runs, strata, seeds)
    other = np.stack([scores[cells] for _, cells in strata.values()], axis=1)
    return Sides(paper.transpose(2, 1, 0), other.transpose(2, 1, 0))


def normalised_effect(sides: Sides) -> float:
    """Mean over seeds and strata of (mean score at the paper's level - mean at the other)."""
    return float(np.nanmean(sides.paper.mean(axis=-1) - sides.other.mean(axis=-1)))


def probability_of_improvement(sides: Sides) -> float:
    """P(a run at the paper's level scores above one at the other level), over every pair of finished
    runs within one seed and stratum; ties count half."""
    paper, other = sides.paper[..., :, None], sides.other[..., None, :]
    keep = np.isfinite(paper) & np.isfinite(other)
    wins = (paper > other) + 0.5 * (paper == other)
    return float(np.mean(wins[keep])) if keep.any() else np.nan


def pooled_over_folders(
    studies: Sequence[Study], toggle: str, statistic: Callable[[Sides], float], rng: np.random.Generator
) -> tuple[float, float, float]:
    """Mean over folders of a per-folder statistic, with a stratified bootstrap CI (seeds within
    folders, then folders)."""
    have = [s for s in studies if toggle in s.sides]
    point = float(np.mean([statistic(s.sides[toggle]) for s in have]))
    draws = []
    for _ in range(N_BOOTSTRAP):
        chosen = [have[i] for i in rng.integers(0, len(have), len(have))] if len(have) > 1 else have
        values = []
        for s in chosen:
            n = s.sides[toggle].n_seeds
            values.append(statistic(s.sides[toggle].of_seeds(rng.integers(0, n, n))))
        draws.append(np.mean(values))
    low, high = np.percentile(draws, [2.5, 97.5])
    return point, float(low), float(high)
