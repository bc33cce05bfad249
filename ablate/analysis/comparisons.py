"""Seed-paired comparisons of variants: the paper's against every other (comparisons.csv).

Every variant trained with seed s saw the same seed, so the comparison of two variants is the mean
over seeds of their per-seed difference, with a Student-t interval (a paired t-test). On log-scale
metrics the same is done on log values and reported as a ratio as well.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ablate.analysis.grid import share_variance
from ablate.analysis.inference import CONFIDENCE, holm, t_interval
from ablate.analysis.tables import metric_scales, metric_steps, ok_values
from ablate.results import Results

COMPARISON_COLUMNS = [
    "metric",
    "steps",
    "variant",
    "comparison",
    "difference",
    "ci_low",
    "ci_high",
    "p_value",
    "p_holm",
    "n_paper",
    "n_variant",
    "n_pairs",
    "scale",
    "ratio",
    "ratio_ci_low",
    "ratio_ci_high",
    "ratio_p_value",
    "ratio_p_holm",
    "verdict",
]
PAIRED_T = "paired_t"


def _paired(variant: pd.Series, reference: pd.Series, confidence: float, share_samples: int | None = None) -> dict:
    """variant - reference over the seeds both have (Series indexed by seed); for a share, the two
    values' binomial noise is the least spread the differences are given (no CI from tied seeds)."""
    both = variant.index.intersection(reference.index)
    a, b = variant[both].to_numpy(float), reference[both].to_numpy(float)
    noise = share_variance(a, share_samples) + share_variance(b, share_samples) if share_samples else 0 * a
    raw = t_interval(a - b, confidence, float(np.sqrt(noise.mean())) if len(both) else 0.0)
    row = {
        "difference": raw.estimate,
        "ci_low": raw.low,
        "ci_high": raw.high,
        "p_value": raw.p_value,
        "n_pairs": len(both),
    }
    if len(both) and (a > 0).all() and (b > 0).all():
        log_noise = (
            share_variance(a, share_samples) / a**2 + share_variance(b, share_samples) / b**2
            if share_samples
            else noise
        )
        log = t_interval(np.log(a) - np.log(b), confidence, float(np.sqrt(log_noise.mean())))
        return {
            **row,
            "ratio": np.exp(log.estimate),
            "ratio_ci_low": np.exp(log.low),
            "ratio_ci_high": np.exp(log.high),
            "ratio_p_value": log.p_value,
        }
    return {**row, "ratio": np.nan, "ratio_ci_low": np.nan, "ratio_ci_high": np.nan, "ratio_p_value": np.nan}


def verdict(row: dict, scale: str, direction: str, alpha: float = 1 - CONFIDENCE, adjusted: bool = True) -> str:
    """``variant better``, ``paper better``, ``indistinguishable`` or ``no CI``, on the metric's
    scale, from the Holm-adjusted p-value (or the unadjusted CI when ``adjusted`` is False)."""
    prefix = "ratio_" if scale == "log" else ""
    low, high = row[f"{prefix}ci_low"], row[f"{prefix}ci_high"]
    if not (np.isfinite(low) and np.isfinite(high)):
        return "no CI"
    null = 1.0 if scale == "log" else 0.0
    p = row[f"{prefix}p_holm"] if adjusted else row[f"{prefix}p_value"]
    if (low <= null <= high) or p > alpha:
        return "indistinguishable"
    variant_larger = low > null
    return "variant better" if variant_larger == (direction == "max") else "paper better"


def paper_vs_others(
    results: Results,
    confidence: float = CONFIDENCE,
    metrics: Sequence[str] | None = None,
    steps: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Each variant (the simplified one and the baseline included) against the paper's, paired by seed.

    ``difference`` = mean over seeds of (variant - paper); ``ratio`` the geometric mean of
    variant / paper for positive metrics. ``p_holm`` is Holm-corrected over the variants of one
    metric x K (the family "paper vs each other variant"); ``verdict`` reads it on the metric's scale
    and direction. This table is exploratory: the opening's paper-vs-simplified and paper-vs-baseline
    claims come from the family of :mod:`ablate.analysis.family`, which tests them with the factorial
    terms under one error rate.
    """
    paper = results.paper_variant
    data = ok_values(results)
    directions, scales = results.metric_directions, metric_scales(results)
    rows = []
    for metric, k in metric_steps(results):
        if (metrics is not None and metric not in metrics) or (steps is not None and k not in steps):
            continue
        group = data[(data["metric"] == metric) & (data["steps"] == k)]
        by_variant = {v: g.groupby("seed")["value"].mean() for v, g in group.groupby("variant", sort=False)}
        control = by_variant.get(paper, pd.Series(dtype=float))
        family = [
            {
                "metric": metric,
                "steps": k,
                "variant": v,
                "comparison": PAIRED_T,
                "n_paper": len(control),
                "n_variant": len(values),
                "scale": scales[metric],
                **_paired(values, control, confidence, results.share_metrics.get(metric)),
            }
            for v, values in by_variant.items()
            if v != paper
        ]
        for column in ("p_value", "ratio_p_value"):
            for row, p in zip(family, holm([row[column] for row in family])):
                row[column.replace("p_value", "p_holm")] = p
        for row in family:
            row["verdict"] = verdict(row, scales[metric], directions.get(metric, "min"))
        rows += family
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
