"""The learnability gate, evaluated on a results folder: did the testbed's models learn its data?

A task declares its gate (``ablate.tasks.Task.learnability_gate``, recorded in run.json): conditions
such as precision >= 0.9 or fd <= 2 x fd_floor at K = k_max, set on the flow baseline by
``benchmarks/learnability.py``. A study whose baseline misses them compares objectives on a testbed
that does not learn, so the report says so next to its verdicts.
"""

from __future__ import annotations

import math

import pandas as pd

from ablate.analysis.tables import factorial_rows, factors_in_play, ok_values
from ablate.results import Results

GATE_COLUMNS = ["variant", "metric", "steps", "value", "op", "threshold", "passed", "n_seeds", "relative_to", "factor"]


def learnability(results: Results) -> pd.DataFrame:
    """One row per condition of the task's gate (empty when it declares none).

    ``value`` is the mean over finished seeds of the flow baseline's cell at the condition's K (k_max
    when the condition names none): the gate is about the testbed, and plain flow is the cell the
    benchmark gates. Without a baseline (or with none of its trials finished) it is the best
    factorial cell at that metric and K, by the metric's direction: if even the best cell misses
    the gate, the testbed did not learn. ``threshold`` is the bound the value was held to (for a
    condition relative to another metric, e.g. fd_floor, ``factor`` x that metric's mean in the same
    cell and K); ``passed`` is NA when either is unknown.
    """
    data = ok_values(results)
    rows = []
    for condition in results.learnability_gate:
        metric, op = condition["metric"], condition["op"]
        steps = condition["steps"] or results.k_max
        at = data[data["steps"] == steps]
        variant = _gated_cell(results, at[at["metric"] == metric], metric)
        values = at.loc[(at["variant"] == variant) & (at["metric"] == metric), "value"].astype(float)
        value = float(values.mean()) if len(values) else math.nan
        threshold = condition["threshold"]
        if condition["relative_to"] is not None:
            reference = at[at["metric"] == condition["relative_to"]]
            own = reference[reference["variant"] == variant]
            reference_values = (own if len(own) else reference)["value"].astype(float)
            threshold = condition["factor"] * reference_values.mean() if len(reference_values) else math.nan
        known = math.isfinite(value) and math.isfinite(threshold)
        passed = (value >= threshold if op == ">=" else value <= threshold) if known else pd.NA
        rows.append(
            {
                "variant": variant,
                "metric": metric,
                "steps": steps,
                "value": value,
                "op": op,
                "threshold": threshold,
                "passed": passed,
                "n_seeds": len(values),
                "relative_to": condition["relative_to"],
                "factor": condition["factor"],
            }
        )
    return pd.DataFrame(rows, columns=GATE_COLUMNS).astype({"passed": "boolean"})


def gate_passed(results: Results) -> bool | None:
    """True when every condition of the gate holds, False when one fails, None when the task declares
    no gate or a condition has no value yet (and none has failed)."""
    passed = learnability(results)["passed"]
    if passed.eq(False).any():
        return False
    return True if len(passed) and passed.notna().all() else None


def _gated_cell(results: Results, rows: pd.DataFrame, metric: str) -> str | None:
    """The flow baseline when it has finished values here, else the best factorial cell, else None."""
    baseline = results.baseline_variant
    if baseline is not None and (rows["variant"] == baseline).any():
        return baseline
    factors = factors_in_play(results)
    cells = factorial_rows(rows, factors) if factors else rows[rows["variant"] != baseline]
    if cells.empty:
        return None
    means = cells.groupby("variant", sort=False)["value"].mean()
    return means.idxmax() if results.metric_directions.get(metric, "min") == "max" else means.idxmin()
