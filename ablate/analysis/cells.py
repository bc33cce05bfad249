"""Cell means over seeds (cells.csv) and the metrics' noise floors, with Student-t intervals."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
from scipy import special

from ablate.analysis.inference import CONFIDENCE, TInterval, t_interval
from ablate.analysis.tables import REFERENCE_SUFFIXES, floor_metrics, ok_values, quality_rows, reference_metrics
from ablate.results import DIVERGED, FAILED, OK, Results

CELL_CI_METHOD = "student_t"
GEOMETRIC_CI_METHOD = "student_t on log values"


def cell_summary(results: Results, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """One row per variant x steps x metric: mean, std and Student-t CI over seeds, divergence counts.

    A cell's seeds are independent replicates, so ``mean +- t(n-1) sd / sqrt(n)`` covers the cell's
    true mean at the nominal rate from 2 seeds up (wide at 2 seeds: t(1) = 12.7). For metrics with
    only positive values, ``gmean`` is the geometric mean with the same interval taken on the log
    scale, the level the log-scale effects are about. Noise floors get no rows (:func:`noise_floors`).
    """
    m = quality_rows(results)
    finite = np.isfinite(m["value"].astype(float))
    shares = results.share_metrics
    rows = []
    for (variant, steps, metric), group in m.groupby(["variant", "steps", "metric"], sort=False):
        values = group.loc[(group["status"] == OK) & finite.loc[group.index], "value"].to_numpy(float)
        n_samples = shares.get(metric)
        interval = share_interval(values, n_samples, confidence) if n_samples else t_interval(values, confidence)
        positive = len(values) and (values > 0).all()
        geometric = t_interval(np.log(values) if positive else np.array([]), confidence)
        rows.append(
            {
                "variant": variant,
                "steps": int(steps),
                "metric": metric,
                "n_seeds": len(values),
                "n_diverged": group.loc[group["status"] == DIVERGED, "trial_id"].nunique(),
                "n_failed": group.loc[group["status"] == FAILED, "trial_id"].nunique(),
                "mean": interval.estimate,
                "std": interval.sd,
                "ci_low": interval.low,
                "ci_high": interval.high,
                "ci_method": _ci_method(interval, n_samples),
                "gmean": np.exp(geometric.estimate),
                "gmean_ci_low": np.exp(geometric.low),
                "gmean_ci_high": np.exp(geometric.high),
            }
        )
    cells = pd.DataFrame(rows)
    if cells.empty:
        return cells
    cells = results.variant_levels().merge(cells, on="variant", how="right")
    return cells.sort_values(["metric", "steps", "variant"], kind="stable").reset_index(drop=True)


def share_interval(values: np.ndarray, n_samples: int, confidence: float = CONFIDENCE) -> TInterval:
    """Interval of the mean of shares scored on ``n_samples`` each: Student's t over seeds on the
    logit scale, back-transformed, so it stays inside (0, 1) and keeps its coverage near the bound
    (``tests/test_coverage.py``). Each value's binomial noise, 1 / (n p (1 - p)) on the logit scale,
    is the least spread the seeds are given, so seeds that tie (discrete shares often do at two
    seeds) give an interval as wide as the measurement, not zero. The estimate stays the plain mean."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return t_interval(values, confidence)
    shrunk = (values * n_samples + 0.5) / (n_samples + 1)  # half a sample towards 1/2: finite at 0 and 1
    floor_sd = float(np.sqrt(np.mean(1 / (n_samples * shrunk * (1 - shrunk)))))
    on_logit = t_interval(special.logit(shrunk), confidence, floor_sd)
    return replace(
        on_logit,
        estimate=float(values.mean()),
        low=float(special.expit(on_logit.low)),
        high=float(special.expit(on_logit.high)),
        sd=float(values.std(ddof=1)),
    )


def _ci_method(interval: TInterval, n_samples: int | None) -> str:
    if interval.n < 2:
        return "none (n<2)"
    if interval.tied:
        return "none (seeds tie)"
    if n_samples:
        return f"student_t on logit values, at least the binomial noise of {n_samples} samples"
    return CELL_CI_METHOD


def noise_floors(results: Results, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """One row per metric that has a floor: the floor's mean with a Student-t CI over seeds.

    Each seed contributes the mean of its finished trials' floor values over variants and K (the
    floor does not depend on the variant; trials of one seed are not independent replicates). The
    floor is a property of the task, so the CI has zero width unless seeds scored against
    different reference sets; it is kept so that such a run shows it.
    """
    data = ok_values(results)
    rows = []
    for metric, floor in floor_metrics(results.metric_names).items():
        rows_of_floor = data[data["metric"] == floor]
        per_seed = rows_of_floor.groupby("seed")["value"].mean().to_numpy(float)
        interval = t_interval(per_seed, confidence)
        if interval.tied:  # one reference set scored once: a constant of the task, exactly known
            interval = replace(interval, low=interval.estimate, high=interval.estimate)
        rows.append(
            {
                "metric": metric,
                "floor_metric": floor,
                "n_trials": rows_of_floor["trial_id"].nunique(),
                "n_seeds": len(per_seed),
                "mean": interval.estimate,
                "ci_low": interval.low,
                "ci_high": interval.high,
                "ci_method": CELL_CI_METHOD if len(per_seed) >= 2 else "none (n<2)",
            }
        )
    columns = ["metric", "floor_metric", "n_trials", "n_seeds", "mean", "ci_low", "ci_high", "ci_method"]
    numbers = {"n_trials": int, "n_seeds": int, "mean": float, "ci_low": float, "ci_high": float}
    return pd.DataFrame(rows, columns=columns).astype(numbers)  # typed even when empty


def reference_values(results: Results) -> pd.DataFrame:
    """The task's fixed references per metric (``<m>_blur``, ``<m>_box``): one value each, the mean over
    finished trials (every trial scores the same fixed sets), with the label the report prints."""
    data = ok_values(results)
    rows = [
        {
            "metric": metric,
            "reference": REFERENCE_SUFFIXES[suffix],
            "value": data.loc[data["metric"] == name, "value"].mean(),
        }
        for (metric, suffix), name in reference_metrics(results.metric_names).items()
    ]
    return pd.DataFrame(rows, columns=["metric", "reference", "value"]).astype({"value": float})
