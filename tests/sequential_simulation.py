"""Studies run in rounds, simulated thousands of times in seconds: the opening's family as linear maps.

A test helper (not part of the package) for ``tests/test_sequential.py``. On the grid of
``claims_simulation`` (four toggles, 16 cells, and the flow baseline, at K = 4 and k_max = 64) every
hypothesis of the opening's family with a contrast is a fixed linear combination of one seed's values,
and each look's test is a t-test over seeds of that combination. So instead of building the family with
:func:`~ablate.analysis.family.build_family` at every look of every simulated study (40 ms each), the
combinations are read off ``build_family`` once (by perturbing one value at a time), the per-seed
contrasts of many studies are one matrix product, and each look's p-values are computed exactly as
``ablate.analysis.inference`` computes them. The sequential decisions then go through the package's own
pieces: :class:`~ablate.analysis.boundaries.GroupSequentialTest` for the stage-wise p-values, the family's
graph and :func:`~ablate.analysis.inference.graphical_test`. ``test_sequential.py`` checks that this gives
what :func:`~ablate.analysis.sequential.sequential_family` gives on the same data.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from claims_simulation import CELLS, STEPS, results_of, true_means
from scipy import stats

from ablate.analysis.boundaries import GroupSequentialTest
from ablate.analysis.family import ALPHA, RELEVANT_CHANGE, build_family, family_graph
from ablate.analysis.inference import CONFIDENCE
from ablate.analysis.sequential import ONE_SIDED_KINDS

BASE = 10.0
VALUES = len(CELLS) * len(STEPS) + len(STEPS)  # one seed: every cell at both K, then the baseline at both


@dataclass(frozen=True)
class LinearFamily:
    """The family's hypotheses (all have contrasts on this grid) as rows of ``coefficients``."""

    kinds: tuple[str, ...]
    terms: tuple[str, ...]
    coefficients: np.ndarray  # (hypotheses, VALUES): per-seed contrast = coefficients @ one seed's values
    weights: tuple[float, ...]
    transitions: tuple[tuple[float, ...], ...]
    factorial_at_primary: np.ndarray  # (VALUES,) bool: the factorial cells at K = 4 (the margin's mean)

    @property
    def mains(self) -> np.ndarray:
        return np.array([kind == "main" for kind in self.kinds])


def study_results(per_seed: np.ndarray):
    """Results of one study from (seeds, VALUES) values."""
    cells = {cell: per_seed[:, 2 * i : 2 * i + 2] for i, cell in enumerate(CELLS)}
    return results_of(cells, per_seed[:, -2:])


@functools.lru_cache(maxsize=1)
def linear_family() -> LinearFamily:
    """Read each hypothesis' combination off build_family: seed j is the last seed plus one unit at value j."""
    values = np.vstack([BASE + np.eye(VALUES), np.full((1, VALUES), BASE)])
    family = build_family(study_results(values), "m", STEPS[0])
    rows = [h.contrast.per_seed[:-1] - h.contrast.per_seed[-1] for h in family.hypotheses]
    hypotheses = family.hypotheses
    weights, transitions = family_graph(hypotheses)
    factorial = np.zeros(VALUES, bool)
    factorial[0 : 2 * len(CELLS) : 2] = True
    return LinearFamily(
        tuple(h.kind for h in hypotheses),
        tuple(h.term + (f" within {h.within}" if h.within else "") for h in hypotheses),
        np.array(rows),
        tuple(weights),
        tuple(tuple(row) for row in transitions),
        factorial,
    )


def draw_values(effects: dict[str, float], studies: int, seeds: int, rng: np.random.Generator) -> np.ndarray:
    """(studies, seeds, VALUES): every cell's true mean (effects in effects.csv units) plus unit noise."""
    means = true_means(BASE, effects)
    truth = np.array([means[cell] for cell in CELLS for _ in STEPS] + [BASE] * len(STEPS))
    return truth + rng.standard_normal((studies, seeds, VALUES))


@dataclass
class Looks:
    """Every simulated study at every look: p-values, estimates, intervals and margins."""

    p: np.ndarray  # (studies, hypotheses, looks)
    estimate: np.ndarray
    half_width: np.ndarray  # of the 95 % interval
    margin: np.ndarray  # (studies, looks)


def looks(family: LinearFamily, values: np.ndarray, sizes: tuple[int, ...]) -> Looks:
    """The family's p-values at each look (the first n seeds), as ablate.analysis.inference has them."""
    contrasts = values @ family.coefficients.T  # (studies, seeds, hypotheses)
    shape = (values.shape[0], len(family.kinds), len(sizes))
    p, estimate, half_width = np.empty(shape), np.empty(shape), np.empty(shape)
    margin = np.empty((values.shape[0], len(sizes)))
    one_sided = np.array([kind in ONE_SIDED_KINDS for kind in family.kinds])
    equivalence = np.array([kind == "equivalence" for kind in family.kinds])
    for k, n in enumerate(sizes):
        d = contrasts[:, :n]
        mean, se = d.mean(axis=1), d.std(axis=1, ddof=1) / np.sqrt(n)
        margin[:, k] = RELEVANT_CHANGE * np.abs(values[:, :n, family.factorial_at_primary].mean(axis=(1, 2)))
        t = mean / se
        two_sided = 2 * stats.t.sf(np.abs(t), n - 1)
        worsening = stats.t.cdf(t, n - 1)  # the metric is "max": worse with more steps is a drop
        tost = np.maximum(
            stats.t.sf((mean + margin[:, k, None]) / se, n - 1), stats.t.cdf((mean - margin[:, k, None]) / se, n - 1)
        )
        p[..., k] = np.where(equivalence, tost, np.where(one_sided, worsening, two_sided))
        estimate[..., k] = mean
        half_width[..., k] = stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * se
    return Looks(p, estimate, half_width, margin)


@dataclass
class Outcome:
    """Per simulated study: what was resolved (and at which look), and how many seeds it used."""

    rejected: np.ndarray  # (studies, hypotheses) bool
    estimate: np.ndarray  # (studies, hypotheses): the estimate at the look that stopped the study
    stop_seeds: np.ndarray  # (studies,)
    stop_look: np.ndarray  # (studies,) 0-based


def run(family: LinearFamily, data: Looks, sizes: tuple[int, ...], stop_early: bool = True) -> Outcome:
    """The sequential procedure on every study: stage-wise p-values, the graph after each look, and the
    stopping rule (every main effect resolved or inside the margin), or every look (``stop_early`` off)."""
    studies, m, n_looks = data.p.shape
    fractions = tuple(1.0 if k == n_looks - 1 else n / sizes[-1] for k, n in enumerate(sizes))
    stage = np.empty_like(data.p)
    for i, kind in enumerate(family.kinds):
        test = GroupSequentialTest(sizes, fractions, one_sided=kind in ONE_SIDED_KINDS)
        stage[:, i, :] = test.stage_p(data.p[:, i, :])
    so_far = np.minimum.accumulate(stage, axis=2)
    rejected = np.zeros((studies, m), bool)
    stop_look = np.full(studies, n_looks - 1)
    running = np.ones(studies, bool)
    for k in range(n_looks):
        rejected[running] = graph_rejections(so_far[running, :, k], family.weights, family.transitions, ALPHA)
        inside = np.abs(data.estimate[..., k]) + data.half_width[..., k] < data.margin[:, k, None]
        stops = running & (rejected | inside)[:, family.mains].all(axis=1) if stop_early else np.zeros(studies, bool)
        stop_look[stops] = k
        running &= ~stops
    estimate = data.estimate[np.arange(studies), :, stop_look]
    return Outcome(rejected, estimate, np.array(sizes)[stop_look], stop_look)


def graph_rejections(p: np.ndarray, weights, transitions, alpha: float) -> np.ndarray:
    """graphical_test's rejections (Bretz et al. 2009, Algorithm 1) for many studies at once: (studies, m)
    p-values in, (studies, m) rejected out. ``test_sequential.py`` checks it against graphical_test."""
    studies, m = p.shape
    w = np.tile(np.asarray(weights, float), (studies, 1))
    g = np.tile(np.asarray(transitions, float), (studies, 1, 1))
    rejected = np.zeros((studies, m), bool)
    active = np.arange(studies)
    while len(active):
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(~rejected[active] & (w[active] > 0), p[active] / w[active], np.inf)
        j = ratio.argmin(axis=1)
        found = ratio[np.arange(len(active)), j] <= alpha
        active, j = active[found], j[found]
        if not len(active):
            break
        rejected[active, j] = True
        row, column = g[active, j, :], g[active, :, j]  # g_j. and g_.j
        remaining = ~rejected[active]
        w[active] = np.where(remaining, w[active] + w[active, j][:, None] * row, 0.0)
        denominator = 1 - column * row  # row i: 1 - g_ij g_ji
        with np.errstate(divide="ignore", invalid="ignore"):
            updated = (g[active] + column[:, :, None] * row[:, None, :]) / denominator[:, :, None]
        keep = remaining[:, :, None] & remaining[:, None, :] & ~np.eye(m, dtype=bool) & (denominator[:, :, None] > 0)
        g[active] = np.where(keep, updated, 0.0)
    return rejected


def fixed_power(family: LinearFamily, effects: dict[str, float], n: int, studies: int, seed: int) -> float:
    """Share of fixed-design studies of n seeds (one look: the plain family) that resolve every main
    effect with a nonzero true size in its true direction."""
    rng = np.random.default_rng(seed)
    data = looks(family, draw_values(effects, studies, n, rng), (n,))
    return float(all_found(family, run(family, data, (n,), stop_early=False), effects).mean())


def all_found(family: LinearFamily, outcome: Outcome, effects: dict[str, float]) -> np.ndarray:
    """Per study: every main effect with a nonzero true size resolved, with the sign of the truth."""
    found = np.ones(len(outcome.rejected), bool)
    for i, (kind, term) in enumerate(zip(family.kinds, family.terms)):
        if kind == "main" and effects.get(term, 0.0):
            found &= outcome.rejected[:, i] & (np.sign(outcome.estimate[:, i]) == np.sign(effects[term]))
    return found


def any_false(family: LinearFamily, outcome: Outcome) -> np.ndarray:
    """Per study with every cell equal: a claim other than an equivalence (all of which are then true)."""
    claims = np.array([kind != "equivalence" for kind in family.kinds])
    return (outcome.rejected & claims).any(axis=1)
