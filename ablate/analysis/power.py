"""What the seeds of a run can resolve (power.csv): per term, under the opening's own procedure.

The opening claims an effect only when the family of :mod:`ablate.analysis.family` resolves it, and
each primary hypothesis starts there with an equal share of alpha (0.05 / the family's size; later
steps can only give it more). So a term's minimum detectable effect (``mde``) is the effect its
seed-paired t-test detects with 80 % power at that share, from **its own** seed-to-seed standard
deviation and the seeds **it** rests on (a term restricted to fewer seeds by missing trials, or
noisier than the others, gets its own, larger MDE). ``seeds_for_10pct`` / ``seeds_for_25pct``: the
seeds that term needs for a 10 % or 25 % change of the metric (a ratio of 1.1 or 1.25 on the log
scale), at the same share of alpha. ``tests/test_claims.py`` simulates that an effect of exactly
the MDE is resolved about 80 % of the time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ablate.analysis.effects import metric_grids
from ablate.analysis.family import ALPHA, build_family
from ablate.analysis.inference import POWER, minimum_detectable_effect, seeds_needed
from ablate.analysis.tables import metric_steps
from ablate.results import Results

TARGET_CHANGES = (0.10, 0.25)
CONTRAST_KINDS = ("main", "interaction", "pair")
POWER_COLUMNS = [
    "metric",
    "steps",
    "term",
    "kind",
    "scale",
    "n_seeds",
    "contrast_sd",
    "power",
    "alpha",
    "family_size",
    "mde",
    "mde_percent",
    "seeds_for_10pct",
    "seeds_for_25pct",
]


def power_table(results: Results, power: float = POWER) -> pd.DataFrame:
    """One row per metric x K x primary contrast (factorial terms, paper vs simplified / flow):
    ``mde`` in effects.csv units (the raw estimate, or the log of the ratio), ``mde_percent`` (the same
    as a percentage of the metric's mean, or of a ratio of 1), ``alpha`` the term's share of the
    family's 0.05, and the seeds needed for a 10 % and a 25 % change at that share."""
    grids = metric_grids(results)
    rows = []
    for metric, steps in metric_steps(results):
        family = build_family(results, metric, steps, grids)
        if not family.n_primary:
            continue
        alpha = ALPHA / family.n_primary
        grid = grids.get((metric, steps))
        finite = grid.values[np.isfinite(grid.values)] if grid is not None else np.array([])
        level = abs(float(finite.mean())) if len(finite) else np.nan
        for h in family.hypotheses:
            if not (h.primary and h.contrast is not None and h.kind.startswith(CONTRAST_KINDS)):
                continue
            sd, n = h.contrast.interval.sd, h.contrast.interval.n
            mde = minimum_detectable_effect(sd, n, power, alpha) if sd > 0 else np.nan
            if family.scale == "log":
                mde_percent = 100 * (np.exp(mde) - 1)
                targets = [np.log1p(change) for change in TARGET_CHANGES]
            else:
                mde_percent = 100 * mde / level if level else np.nan
                targets = [change * level for change in TARGET_CHANGES]
            rows.append(
                {
                    "metric": metric,
                    "steps": int(steps),
                    "term": h.term,
                    "kind": h.kind,
                    "scale": family.scale,
                    "n_seeds": n,
                    "contrast_sd": sd,
                    "power": power,
                    "alpha": alpha,
                    "family_size": family.n_primary,
                    "mde": mde,
                    "mde_percent": mde_percent,
                    **{
                        f"seeds_for_{round(100 * c)}pct": seeds_needed(t, sd, power, alpha) if sd > 0 else np.nan
                        for c, t in zip(TARGET_CHANGES, targets)
                    },
                }
            )
    return pd.DataFrame(rows, columns=POWER_COLUMNS)
