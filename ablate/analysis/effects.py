"""Factor effects of every order, simple effects and per-stratum effects (effects.csv, strata.csv).

Every two-level factor is coded +1 at its reference level (the paper's level for the four toggles)
and -1 at the other; a term's code is the product of its factors' codes, and

    estimate = mean(y | code = +1) - mean(y | code = -1)

on the raw scale (positive: the reference level gives a larger value). For metrics with only
positive values the same contrast of log values is also reported as a ratio (``ratio`` =
geometric mean at +1 / geometric mean at -1), and ``scale`` says which of the two the report
reads (:func:`ablate.analysis.tables.metric_scales`). Estimates and intervals are seed-paired
contrasts with Student-t intervals over seeds (:mod:`ablate.analysis.grid`).

On a fractional design (run.json ``design``) the terms are one per alias class, each row naming the
terms it cannot be told from (``aliases``) and the design's ``resolution``; see
:mod:`ablate.analysis.fraction`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ablate.analysis.fraction import (
    alias_text,
    estimable_terms,
    fraction_mask,
    is_fraction,
    level_test_aliases,
    simple_effect_aliases,
    term_aliases,
)
from ablate.analysis.grid import Contrast, Grid, level_test, term_contrast
from ablate.analysis.inference import CONFIDENCE, holm
from ablate.analysis.tables import factorial_rows, factors_in_play, metric_scales, metric_steps, ok_values, other_level
from ablate.results import Results

EFFECT_COLUMNS = [
    "term",
    "metric",
    "steps",
    "estimate",
    "ci_low",
    "ci_high",
    "p_value",
    "p_holm",
    "n",
    "method",
    "kind",
    "plus_level",
    "minus_level",
    "order",
    "within",
    "n_seeds",
    "scale",
    "ratio",
    "ratio_ci_low",
    "ratio_ci_high",
    "ratio_p_value",
    "ratio_p_holm",
    "aliases",  # the terms a fraction cannot tell this one from, joined by " = "; empty on the full design
    "resolution",  # the design's: "full", or the fraction's "III", "IV", "V", ...
]
STRATA_COLUMNS = [
    "term",
    "within",
    "metric",
    "steps",
    "estimate",
    "ci_low",
    "ci_high",
    "p_value",
    "p_holm",
    "n_seeds",
    "scale",
    "ratio",
    "ratio_ci_low",
    "ratio_ci_high",
    "ratio_p_value",
    "ratio_p_holm",
    "plus_level",
    "minus_level",
]
MAIN, INTERACTION, SIMPLE, ANOVA = "main", "interaction", "simple", "anova"


def term_kind(order: int) -> str:
    """``main``, ``interaction`` (two-way, as before) or ``interaction<k>`` for k-way, k >= 3."""
    return MAIN if order == 1 else INTERACTION if order == 2 else f"{INTERACTION}{order}"


def ordered_levels(results: Results, factors: Sequence[str]) -> dict[str, list]:
    """Each factor's levels with its reference level first (coded +1)."""
    refs, levels = results.reference_levels, results.factor_levels
    return {f: [refs[f]] + [lv for lv in levels[f] if lv != refs[f]] for f in factors}


def all_terms(two_level: Sequence[str]) -> list[tuple[str, ...]]:
    """Main effects, then two-way, three-way, ... interactions: the full factorial."""
    return [term for order in range(1, len(two_level) + 1) for term in itertools.combinations(two_level, order)]


def within_label(within: Mapping[str, object]) -> str:
    return " & ".join(f"{name}={level}" for name, level in within.items())


def metric_grids(results: Results) -> dict[tuple[str, int], Grid]:
    """A cells x seeds grid per (quality metric, K), factorial cells only, marking a fraction's runs."""
    factors = factors_in_play(results)
    levels = ordered_levels(results, factors)
    fraction = fraction_mask(results.design, levels)
    data = factorial_rows(ok_values(results), factors)
    seeds = sorted(pd.unique(data["seed"]).tolist()) if len(data) else []
    shares = results.share_metrics
    grids = {}
    for metric, steps in metric_steps(results):
        rows = data[(data["metric"] == metric) & (data["steps"] == steps)]
        grids[(metric, steps)] = Grid.from_rows(rows, levels, seeds, shares.get(metric), fraction)
    return grids


def _numbers(raw: Contrast, log: Contrast | None) -> dict:
    """The raw-scale columns and, for positive metrics, the ratio columns of one contrast."""
    r = raw.interval
    row = {
        "estimate": r.estimate,
        "ci_low": r.low,
        "ci_high": r.high,
        "p_value": r.p_value,
        "n": raw.n_values,
        "n_seeds": r.n,
        "method": raw.method,
    }
    if log is None:
        return {**row, "ratio": np.nan, "ratio_ci_low": np.nan, "ratio_ci_high": np.nan, "ratio_p_value": np.nan}
    g = log.interval
    return {
        **row,
        "ratio": np.exp(g.estimate),
        "ratio_ci_low": np.exp(g.low),
        "ratio_ci_high": np.exp(g.high),
        "ratio_p_value": g.p_value,
    }


def _contrast_row(grid: Grid, term: Sequence[str], within: Mapping, scale: str, confidence: float) -> dict:
    raw = term_contrast(grid, term, within, "raw", confidence)
    log = term_contrast(grid, term, within, "log", confidence) if grid.positive else None
    return _numbers(raw, log)


def excludes_null(row: Mapping, scale: str) -> bool:
    """The row's CI on the metric's scale excludes 'no effect' (0, or a ratio of 1)."""
    if scale == "log":
        return bool(row["ratio_ci_low"] > 1 or row["ratio_ci_high"] < 1)
    return bool(row["ci_low"] > 0 or row["ci_high"] < 0)


def _levels_of(results: Results, factor: str) -> dict:
    refs = results.reference_levels
    return {"plus_level": refs[factor], "minus_level": other_level(results.factor_levels[factor], refs[factor])}


def factor_effects(results: Results, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """effects.csv: per metric x K, every estimable term of the design, ANOVA rows and simple effects.

    Terms are the main effects and the interactions of every order of the two-level factors
    (``kind`` main, interaction, interaction3, ...; on a fraction one per alias class, with its
    ``aliases``), each a seed-paired contrast with a t-interval
    over seeds; ``p_holm`` (and ``ratio_p_holm``) is Holm-corrected across these terms of one
    metric x K. A factor with more than two levels gets a ``kind = anova`` row (Hotelling's T^2 over
    seeds, no estimate). When an interaction's CI excludes 0 on the metric's scale, the effect of
    each of its factors within each level (combination) of the others is added as ``kind = simple``
    with a ``within`` column, Holm-corrected per factor and set of conditioning factors; on a fraction
    only those clear of two-way aliasing (:func:`ablate.analysis.fraction.simple_effect_aliases`).
    """
    factors = factors_in_play(results)
    two = [f for f in factors if f in results.two_level_factors]
    multi = [f for f in factors if f not in two]
    if not factors:
        return pd.DataFrame(columns=EFFECT_COLUMNS)
    design = results.design
    scales = metric_scales(results)
    levels = ordered_levels(results, factors)
    rows = []
    for (metric, steps), grid in metric_grids(results).items():
        scale = scales[metric]
        family = []
        for term in estimable_terms(design):
            row = _contrast_row(grid, term, {}, scale, confidence)
            family.append(
                {
                    "term": ":".join(term),
                    "kind": term_kind(len(term)),
                    "order": len(term),
                    "within": None,
                    **row,
                    **(_levels_of(results, term[0]) if len(term) == 1 else {}),
                    "aliases": term_aliases(design, term),
                }
            )
        for factor in multi:
            family.append({**_anova_row(grid, factor, scale), "aliases": level_test_aliases(design, factor)})
        _adjust(family)
        simple = _simple_effects(grid, family, levels, scale, confidence, results)
        for _, group in itertools.groupby(simple, key=_simple_family):
            _adjust(list(group))
        rows += [
            {**row, "metric": metric, "steps": int(steps), "scale": scale, "resolution": design.resolution_label}
            for row in family + simple
        ]
    return pd.DataFrame(rows).reindex(columns=EFFECT_COLUMNS)


def _anova_row(grid: Grid, factor: str, scale: str) -> dict:
    p_raw, usage = level_test(grid, factor, "raw")
    p_log = level_test(grid, factor, "log")[0] if grid.positive else np.nan
    n = usage.interval.n
    method = (
        f"hotelling_t2 ({n} seeds, {usage.n_strata} of {usage.total_strata} strata)"
        if np.isfinite(p_raw)
        else f"hotelling_t2 impossible ({n} seeds for {len(grid.levels[factor])} levels)"
    )
    nan = np.nan
    return {
        "term": factor,
        "kind": ANOVA,
        "order": 1,
        "within": None,
        "estimate": nan,
        "ci_low": nan,
        "ci_high": nan,
        "p_value": p_raw,
        "n": usage.n_values,
        "n_seeds": n,
        "method": method,
        "ratio": nan,
        "ratio_ci_low": nan,
        "ratio_ci_high": nan,
        "ratio_p_value": p_log,
    }


def _adjust(family: list[dict]) -> None:
    for column in ("p_value", "ratio_p_value"):
        adjusted = holm([row[column] for row in family])
        for row, p in zip(family, adjusted):
            row[column.replace("p_value", "p_holm")] = p


def _simple_family(row: Mapping) -> tuple[str, tuple[str, ...]]:
    """Simple effects are Holm-corrected per factor and set of conditioning factors: the question
    "where does this factor matter across the levels of those" (e.g. half_step within each level of
    tau2_weight) is one family."""
    return row["term"], tuple(part.split("=")[0] for part in row["within"].split(" & "))


def _simple_effects(grid, family, levels, scale, confidence, results) -> list[dict]:
    """Each factor of every interaction whose CI excludes 0, within each level combination of the
    interaction's other factors (averaged over the factors not in the interaction); on a fraction, only
    where that is clear of two-way aliasing."""
    design = results.design
    rows, seen = [], set()
    for row in family:
        if row["kind"] in (MAIN, ANOVA) or not excludes_null(row, scale):
            continue
        term = row["term"].split(":")
        for factor in term:
            others = [f for f in term if f != factor]
            aliases = simple_effect_aliases(design, factor, others)
            if aliases is None:
                continue
            for combo in itertools.product(*[levels[f] for f in others]):
                within = dict(zip(others, combo))
                key = (factor, tuple(sorted(within.items(), key=lambda kv: kv[0])))
                if key in seen:
                    continue
                seen.add(key)
                numbers = _contrast_row(grid, [factor], within, scale, confidence)
                rows.append(
                    {
                        "term": factor,
                        "kind": SIMPLE,
                        "order": 1,
                        "within": within_label(within),
                        **numbers,
                        **_levels_of(results, factor),
                        "aliases": alias_text(aliases),
                    }
                )
    return rows


def stratum_effects(results: Results, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """strata.csv: each two-level factor's effect within every combination of the other factors'
    levels, per metric x K (seed-paired 95 % CIs; ``p_holm`` Holm-corrected over the strata of one
    factor x metric x K).

    This is where a toggle that helps by a large factor in most strata and hurts in one shows
    itself even when its average (main) effect is indistinguishable from zero. On a fraction a toggle
    has no run at both levels within fixed levels of all the other toggles, so its strata are the level
    combinations of the factors crossed in full with the fraction only (none when there are none).
    """
    factors = factors_in_play(results)
    two = [f for f in factors if f in results.two_level_factors]
    if not two:
        return pd.DataFrame(columns=STRATA_COLUMNS)
    fraction = is_fraction(results.design)
    scales = metric_scales(results)
    levels = ordered_levels(results, factors)
    rows = []
    for (metric, steps), grid in metric_grids(results).items():
        for factor in two:
            others = [f for f in factors if f != factor and not (fraction and f in two)]
            if fraction and not others:
                continue
            for combo in itertools.product(*[levels[f] for f in others]):
                within = dict(zip(others, combo))
                numbers = _contrast_row(grid, [factor], within, scales[metric], confidence)
                rows.append(
                    {
                        "term": factor,
                        "within": within_label(within),
                        "metric": metric,
                        "steps": int(steps),
                        "scale": scales[metric],
                        **numbers,
                        **_levels_of(results, factor),
                    }
                )
            _adjust(rows[len(rows) - int(np.prod([len(levels[f]) for f in others])) :])
    return pd.DataFrame(rows).reindex(columns=STRATA_COLUMNS)
