"""The one family of tests behind every claim the report's opening makes (family.csv, claims.csv).

A reader takes the opening paragraph as the answer, so every better / worse / interacts / flips /
matters-only-with / pair / worsening statement in it is a rejected hypothesis of **one pre-specified
procedure whose family-wise error is 5 %** over everything the opening can say, at the primary
metric and K:

- **primary hypotheses**, equal shares of alpha: every factorial term of the two-level factors
  (main effects and interactions of every order), a level test per factor with more than two levels,
  and the pre-specified comparisons: the paper's variant against the simplified one and against the
  flow baseline (paired by seed), and the paper's variant at K = k_max against the primary K (does
  it get worse with more steps; one-sided). What one rejects passes on to the others, as in Holm.
- **follow-ups** of a two-way interaction, which start with no alpha: the simple effect of each of
  its factors within each level of the other, and the equivalence (TOST) of each simple effect
  within a stated margin. A resolved interaction passes half its alpha to them; a resolved simple
  effect passes half of its own to the equivalence test at the *other* level ("matters only with")
  and half to its siblings. So simple effects are tested only behind an interaction that was
  resolved, with the alpha passed down, never at a fresh 5 %.

This is the graphical procedure of Bretz et al. (2009) (:func:`ablate.analysis.inference.graphical_test`),
a closed test of weighted Bonferroni tests, valid under any dependence between the tests. Strata,
simple effects in effects.csv and every other row of the tables are exploratory: the opening never
cites them. The interval quoted with a claim is the one at the level its test used (a rejected
hypothesis: 1 - its local alpha), so an interval that excludes no effect next to an unresolved
verdict cannot be printed.

On a fractional design the factorial terms are one per alias class (``aliases`` names the others, and a
claim about the term names them too), and interactions are followed up only from resolution V up, where
their simple effects are clear of two-way aliasing (:mod:`ablate.analysis.fraction`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ablate.analysis.effects import metric_grids, ordered_levels, within_label
from ablate.analysis.fraction import estimable_terms, follows_up_interactions, level_test_aliases, term_aliases
from ablate.analysis.grid import Contrast, Grid, level_test, share_variance, term_contrast
from ablate.analysis.inference import (
    CONFIDENCE,
    TInterval,
    equivalence_p,
    graphical_test,
    one_sided_p,
    t_interval,
)
from ablate.analysis.tables import factors_in_play, metric_scales, ok_values
from ablate.results import Results

ALPHA = 1 - CONFIDENCE
# The smallest change the report cares about: 10 % of the metric's mean (a ratio of 1.1 on the log
# scale). It is the equivalence margin of "matters only with" and the target change in power.csv.
RELEVANT_CHANGE = 0.10
FAMILY_COLUMNS = [
    "id",
    "kind",
    "term",
    "within",
    "variant",
    "metric",
    "steps",
    "scale",
    "estimate",
    "ci_low",
    "ci_high",
    "ci_level",
    "p_value",
    "p_adjusted",
    "alpha_local",
    "resolved",
    "direction",
    "margin",
    "n_seeds",
    "method",
    "parent",
    "aliases",  # the terms a fraction cannot tell this one from, joined by " = "; empty on the full design
]


@dataclass
class Hypothesis:
    """One test of the family: its contrast (per-seed numbers on the metric's scale) and p-value."""

    kind: str  # main | interaction | interaction3... | anova | pair | worsening | simple | equivalence
    term: str
    contrast: Contrast | None  # None for a level test (no single contrast)
    p_value: float
    within: str | None = None
    variant: str | None = None
    parent: int | None = None  # the interaction a follow-up hangs on (index in the family)
    margin: float = math.nan  # equivalence margin, on the test's scale
    n_seeds: int = 0
    method: str = ""
    children: list[int] = field(default_factory=list)
    aliases: str = ""  # on a fraction: the terms this one's contrast cannot be told from

    @property
    def primary(self) -> bool:
        return self.parent is None


@dataclass
class Family:
    """The tested family of one metric x K and its outcome."""

    metric: str
    steps: int
    scale: str
    direction: str
    hypotheses: list[Hypothesis]
    adjusted: list[float]
    resolved: list[bool]
    level: list[float]

    @property
    def n_primary(self) -> int:
        return sum(h.primary for h in self.hypotheses)


def _paired_contrast(a: pd.Series, b: pd.Series, scale: str, share_samples: int | None) -> Contrast:
    """a - b over the seeds both have (Series indexed by seed), on the metric's scale."""
    both = a.index.intersection(b.index)
    x, y = a[both].to_numpy(float), b[both].to_numpy(float)
    noise = np.zeros(len(both))
    if share_samples:
        noise = share_variance(x, share_samples) + share_variance(y, share_samples)
    if scale == "log" and len(both) and (x > 0).all() and (y > 0).all():
        diff = np.log(x) - np.log(y)
        if share_samples:
            noise = share_variance(x, share_samples) / x**2 + share_variance(y, share_samples) / y**2
    else:
        diff = x - y
    floor_sd = float(np.sqrt(noise.mean())) if len(noise) else 0.0
    return Contrast(t_interval(diff, CONFIDENCE, floor_sd), 1, 1, 2 * len(both), 2, diff, floor_sd)


def _method(contrast: Contrast) -> str:
    interval = contrast.interval
    if interval.n < 2:
        return f"{interval.n} seed(s): no test"
    if interval.tied:
        return f"seeds tie: no test ({interval.n} seeds)"
    return f"paired t over {interval.n} seeds"


def equivalence_margin(grid: Grid, scale: str) -> float:
    if scale == "log":
        return math.log1p(RELEVANT_CHANGE)
    finite = grid.values[np.isfinite(grid.values)]
    return RELEVANT_CHANGE * abs(float(finite.mean())) if len(finite) else math.nan


def _pairs(results: Results, metric: str, steps: int, scale: str, direction: str) -> list[Hypothesis]:
    """The pre-specified comparisons: paper vs simplified, paper vs flow, paper at k_max vs K."""
    paper = results.paper_variant
    if paper is None:
        return []
    data = ok_values(results)
    data = data[data["metric"] == metric]
    n = results.share_metrics.get(metric)
    at = data[data["steps"] == steps]
    per_seed = {v: g.groupby("seed")["value"].mean() for v, g in at.groupby("variant", sort=False)}
    out = []
    for other in (results.simplified_variant, results.baseline_variant):
        if other is None or other not in per_seed or paper not in per_seed:
            continue
        contrast = _paired_contrast(per_seed[other], per_seed[paper], scale, n)
        out.append(
            Hypothesis(
                "pair",
                f"{other} vs {paper}",
                contrast,
                contrast.interval.p_value,
                variant=other,
                n_seeds=contrast.interval.n,
                method=_method(contrast),
            )
        )
    k_max = max(results.eval_steps) if results.eval_steps else None
    if k_max is not None and steps < k_max:
        mine = data[data["variant"] == paper].pivot_table(index="seed", columns="steps", values="value")
        if k_max in mine and steps in mine:
            pairs = mine[[steps, k_max]].dropna()
            contrast = _paired_contrast(pairs[k_max], pairs[steps], scale, n)
            worse_is_up = direction == "min"  # the value at k_max is larger than at K: worse for a "min" metric
            out.append(
                Hypothesis(
                    "worsening",
                    f"{paper} at K = {k_max} vs K = {steps}",
                    contrast,
                    one_sided_p(contrast.interval, positive=worse_is_up),
                    variant=paper,
                    n_seeds=contrast.interval.n,
                    method=_method(contrast) + ", one-sided",
                )
            )
    return out


def build_family(results: Results, metric: str, steps: int, grids: dict | None = None) -> Family:
    """The opening's hypotheses at one metric and K, tested together at alpha = 0.05."""
    scale = metric_scales(results).get(metric, "raw")
    direction = results.metric_directions.get(metric, "min")
    factors = factors_in_play(results)
    two = [f for f in factors if f in results.two_level_factors]
    multi = [f for f in factors if f not in two]
    design = results.design
    grids = grids if grids is not None else metric_grids(results)
    grid = grids.get((metric, steps))
    hypotheses: list[Hypothesis] = []
    if grid is not None:
        for term in estimable_terms(design):
            contrast = term_contrast(grid, term, {}, scale)
            kind = "main" if len(term) == 1 else "interaction" if len(term) == 2 else f"interaction{len(term)}"
            hypotheses.append(
                Hypothesis(
                    kind,
                    ":".join(term),
                    contrast,
                    contrast.interval.p_value,
                    n_seeds=contrast.interval.n,
                    method=contrast.method,
                    aliases=term_aliases(design, term),
                )
            )
        for factor in multi:
            p, usage = level_test(grid, factor, scale)
            hypotheses.append(
                Hypothesis(
                    "anova",
                    factor,
                    None,
                    p,
                    n_seeds=usage.interval.n,
                    method="hotelling_t2 over seeds",
                    aliases=level_test_aliases(design, factor),
                )
            )
    hypotheses += _pairs(results, metric, steps, scale, direction)
    if grid is not None and follows_up_interactions(design):
        levels = ordered_levels(results, factors)
        margin = equivalence_margin(grid, scale)
        for parent, h in enumerate(list(hypotheses)):
            if h.kind == "interaction":
                h.children = _follow_ups(grid, h.term.split(":"), levels, scale, margin, parent, hypotheses)
    if not hypotheses:
        return Family(metric, steps, scale, direction, [], [], [], [])
    weights, transitions = family_graph(hypotheses)
    outcome = graphical_test([h.p_value for h in hypotheses], weights, transitions, ALPHA)
    return Family(metric, steps, scale, direction, hypotheses, outcome.adjusted, outcome.rejected, outcome.level)


def _follow_ups(grid, pair, levels, scale, margin, parent, hypotheses) -> list[int]:
    """Simple effects of each factor of a two-way interaction within each level of the other,
    then their equivalence tests, appended to ``hypotheses``; returns their indices."""
    simple, equivalence = [], []
    for factor, other in (pair, pair[::-1]):
        for level in levels[other]:
            within = {other: level}
            contrast = term_contrast(grid, [factor], within, scale)
            common = dict(within=within_label(within), parent=parent, n_seeds=contrast.interval.n)
            simple.append(
                Hypothesis("simple", factor, contrast, contrast.interval.p_value, method=contrast.method, **common)
            )
            equivalence.append(
                Hypothesis(
                    "equivalence",
                    factor,
                    contrast,
                    equivalence_p(contrast.interval, margin),
                    margin=margin,
                    method="TOST, " + contrast.method,
                    **common,
                )
            )
    start = len(hypotheses)
    hypotheses += simple + equivalence
    return list(range(start, len(hypotheses)))


def family_graph(hypotheses: Sequence[Hypothesis]) -> tuple[list[float], list[list[float]]]:
    """Initial weights and transitions (see the module docstring)."""
    m = len(hypotheses)
    primary = [i for i, h in enumerate(hypotheses) if h.primary]
    weights = [1 / len(primary) if i in primary else 0.0 for i in range(m)]  # no primary, no hypothesis
    transitions = [[0.0] * m for _ in range(m)]

    def spread(i: int, targets: Sequence[int], share: float) -> None:
        targets = [t for t in targets if t != i]
        for t in targets:
            transitions[i][t] += share / len(targets)

    for i, h in enumerate(hypotheses):
        others = [j for j in primary if j != i]
        if h.primary and h.children:
            simple = [c for c in h.children if hypotheses[c].kind == "simple"]
            spread(i, simple, 0.5 if others else 1.0)
            if others:
                spread(i, others, 0.5)
        elif h.primary and others:
            spread(i, others, 1.0)
    for h in hypotheses:
        simple = [c for c in h.children if hypotheses[c].kind == "simple"]
        equivalence = [c for c in h.children if hypotheses[c].kind == "equivalence"]
        for s in simple:
            partner = _other_level_equivalence(hypotheses, s, equivalence)
            spread(s, [partner], 0.5)
            spread(s, simple, 0.5)
        for e in equivalence:
            spread(e, simple, 1.0)
    return weights, transitions


def _other_level_equivalence(hypotheses: Sequence[Hypothesis], s: int, equivalence: Sequence[int]) -> int:
    """The equivalence test of the same factor within the other level of the conditioning factor."""
    me = hypotheses[s]
    return next(e for e in equivalence if hypotheses[e].term == me.term and hypotheses[e].within != me.within)


def _interval(h: Hypothesis, level: float) -> TInterval | None:
    """The interval a claim quotes: 1 - level two-sided (1 - 2 level for an equivalence or a
    one-sided test, whose decision is an end of that interval)."""
    if h.contrast is None:
        return None
    if not (np.isfinite(level) and level > 0):
        return TInterval(h.contrast.interval.estimate, -math.inf, math.inf, h.p_value, h.contrast.interval.n, math.nan)
    one_sided = h.kind in ("equivalence", "worsening")
    return h.contrast.at(1 - (2 * level if one_sided else level))


def _direction(h: Hypothesis, estimate: float, direction: str) -> str:
    """What a rejection says, in words a claim can carry."""
    up = estimate > 0
    good = up == (direction == "max")
    if h.kind == "equivalence":
        return "negligible"
    if h.kind == "anova":
        return "levels differ"
    if h.kind == "worsening":
        return "worse with more steps" if good is False else "better with more steps"
    if h.kind == "pair":
        return "variant better" if good else "paper better"
    if h.kind.startswith("interaction") and h.kind != "interaction":
        return "higher-order interaction"
    if h.kind == "interaction":
        return "interaction"
    return "reference better" if good else "reference worse"


def family_table(family: Family) -> pd.DataFrame:
    """family.csv: one row per hypothesis of the opening's family, with its outcome."""
    rows = []
    log = family.scale == "log"
    for i, h in enumerate(family.hypotheses):
        level = family.level[i]
        interval = _interval(h, level)
        estimate = interval.estimate if interval is not None else math.nan
        low, high = (interval.low, interval.high) if interval is not None else (math.nan, math.nan)
        one_sided = h.kind in ("equivalence", "worsening")
        rows.append(
            {
                "id": i,
                "kind": h.kind,
                "term": h.term,
                "within": h.within,
                "variant": h.variant,
                "metric": family.metric,
                "steps": family.steps,
                "scale": family.scale,
                "estimate": math.exp(estimate) if log else estimate,
                "ci_low": math.exp(low) if log else low,
                "ci_high": math.exp(high) if log else high,
                "ci_level": (1 - (2 * level if one_sided else level)) if level > 0 else math.nan,
                "p_value": h.p_value,
                "p_adjusted": family.adjusted[i],
                "alpha_local": level,
                "resolved": family.resolved[i],
                "direction": _direction(h, estimate, family.direction) if family.resolved[i] else "",
                "margin": (math.exp(h.margin) if log else h.margin) if np.isfinite(h.margin) else math.nan,
                "n_seeds": h.n_seeds,
                "method": h.method,
                "parent": h.parent,
                "aliases": h.aliases,
            }
        )
    return pd.DataFrame(rows, columns=FAMILY_COLUMNS)
