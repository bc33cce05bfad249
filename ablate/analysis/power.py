"""What the seeds of a run can detect (power.csv): from the run's own seed-to-seed variance.

For each metric x K, the standard deviation over seeds of a full-factorial contrast (pooled over
every term; each term's per-seed contrast has the same variance when cells are independent within a
seed) gives the smallest effect the seed-paired t-test detects with 80 % power, and the number of
seeds needed to detect a 10 % or 25 % change of the metric (a ratio of 1.1 or 1.25 on the log scale).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ablate.analysis.effects import all_terms, metric_grids
from ablate.analysis.grid import per_seed_contrast_sd
from ablate.analysis.inference import CONFIDENCE, POWER, minimum_detectable_effect, seeds_needed
from ablate.analysis.tables import factors_in_play, metric_scales
from ablate.results import Results

TARGET_CHANGES = (0.10, 0.25)
POWER_COLUMNS = [
    "metric",
    "steps",
    "scale",
    "n_seeds",
    "contrast_sd",
    "power",
    "alpha",
    "mde",
    "mde_percent",
    "seeds_for_10pct",
    "seeds_for_25pct",
]


def power_table(results: Results, power: float = POWER, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """One row per metric x K: minimum detectable effect (``mde``, in effects.csv units: the raw
    estimate, or the log of the ratio) at the run's seed count, ``mde_percent`` (the same as a
    percentage of the mean, or of a ratio of 1), and the seeds needed for a 10 % and a 25 % change."""
    two = [f for f in factors_in_play(results) if f in results.two_level_factors]
    scales = metric_scales(results)
    alpha = 1 - confidence
    rows = []
    for (metric, steps), grid in metric_grids(results).items():
        scale = scales[metric]
        sd = per_seed_contrast_sd(grid, all_terms(two), scale)
        n = int(np.isfinite(grid.values).any(axis=0).sum())
        mde = minimum_detectable_effect(sd, n, power, alpha)
        finite = grid.values[np.isfinite(grid.values)]
        level = abs(float(finite.mean())) if len(finite) else np.nan
        if scale == "log":
            mde_percent = 100 * (np.exp(mde) - 1)
            targets = [np.log1p(change) for change in TARGET_CHANGES]
        else:
            mde_percent = 100 * mde / level if level else np.nan
            targets = [change * level for change in TARGET_CHANGES]
        rows.append(
            {
                "metric": metric,
                "steps": int(steps),
                "scale": scale,
                "n_seeds": n,
                "contrast_sd": sd,
                "power": power,
                "alpha": alpha,
                "mde": mde,
                "mde_percent": mde_percent,
                **{
                    f"seeds_for_{round(100 * c)}pct": seeds_needed(t, sd, power, alpha)
                    for c, t in zip(TARGET_CHANGES, targets)
                },
            }
        )
    return pd.DataFrame(rows, columns=POWER_COLUMNS)
