"""Cell means over seeds (cells.csv) and the metrics' noise floors, with Student-t intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ablate.analysis.inference import CONFIDENCE, t_interval
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
    rows = []
    for (variant, steps, metric), group in m.groupby(["variant", "steps", "metric"], sort=False):
        values = group.loc[(group["status"] == OK) & finite.loc[group.index], "value"].to_numpy(float)
        interval = t_interval(values, confidence)
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
                "ci_method": CELL_CI_METHOD if len(values) >= 2 else "none (n<2)",
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
