"""Results folders drawn through the contract: the report never crashes, never prints a zero-width
interval, and every claim of its opening is a claims.csv row whose numbers are the ones quoted.

Hypothesis draws 1-4 factors of 1-3 levels, 1-5 seeds, diverged and missing trials, tied and constant
metrics, zeros, shares near 1 (declared, of 50 samples) and a log-scale metric, with or without the flow
baseline, and writes them with ``ablate.results.write_tables`` as a run would.
"""

from __future__ import annotations

import itertools
import math
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthetic import drawn_trials

from ablate.report import write_report
from ablate.report.context import fmt
from ablate.results import CURVES_COLUMNS, DIVERGED, TRIALS_COLUMNS, write_tables

METRICS = {"share": "max", "loss": "min", "flat": "min", "zeroes": "min"}


@st.composite
def folders(draw):
    n_factors = draw(st.integers(1, 4))
    factors = []
    for i in range(n_factors):
        n_levels = draw(st.sampled_from([1, 2, 2, 2, 3]))
        levels = [f"l{j}" for j in range(n_levels)]
        factors.append({"name": f"f{i}", "levels": levels, "reference": levels[0]})
    cells = list(itertools.product(*[f["levels"] for f in factors]))
    if len(cells) > 24:
        factors = factors[:2]
        cells = list(itertools.product(*[f["levels"] for f in factors]))
    seeds = list(range(draw(st.integers(1, 5))))
    steps = draw(st.sampled_from([[4], [1, 4], [1, 4, 16]]))
    baseline = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    effect = draw(st.sampled_from([0.0, 0.02, 0.3]))
    p_diverge = draw(st.sampled_from([0.0, 0.0, 0.1, 0.4]))
    p_missing = draw(st.sampled_from([0.0, 0.0, 0.1]))
    names = [f["name"] for f in factors]
    variants = [("_".join(cell), dict(zip(names, cell))) for cell in cells]
    if baseline:
        variants.append(("flow", dict.fromkeys(names)))
    metric_rows, trial_rows, expected = [], [], []
    for ident, levels, status in drawn_trials(variants, seeds, rng, p_missing, p_diverge, expected, trial_rows):
        shift = effect * (levels.get("f0") == "l0")
        for k in steps:
            values = {
                "share": min(1.0, round(0.96 + shift / 10 + rng.binomial(50, 0.02) / 50, 2)),  # ties, 1.0
                "loss": math.exp(rng.normal(shift, 0.2)),
                "flat": 0.5,  # constant: every seed ties
                "zeroes": max(0.0, rng.normal(shift, 0.05)),  # exact zeros
            }
            for metric, value in values.items():
                metric_rows.append(
                    {**ident, "steps": k, "metric": metric, "value": np.nan if status == DIVERGED else value}
                )
    paper = "_".join(f["reference"] for f in factors)
    run = {
        "name": "drawn",
        "task": {"name": "drawn", "sample_format": "points"},
        "factors": factors,
        "seeds": seeds,
        "eval_steps": steps,
        "k_max": max(steps),
        "expected_trials": expected,
        "paper_variant": paper,
        "simplified_variant": None,
        "baseline_variant": "flow" if baseline else None,
        "primary_metric": draw(st.sampled_from(list(METRICS))),
        "primary_steps": 4,
        "metric_directions": METRICS,
        "metric_scales": {"loss": "log"},
        "share_metrics": {"share": 50},
        "learnability_gate": [
            {"metric": "share", "op": ">=", "threshold": 0.99, "relative_to": None, "factor": None, "steps": None}
        ],
    }
    ident = ["trial_id", "variant", *names, "seed", "status"]
    metrics = pd.DataFrame(metric_rows, columns=[*ident, "steps", "metric", "value"])
    trials = pd.DataFrame(trial_rows, columns=[*ident, "diverged_step"]).reindex(columns=[*ident, *TRIALS_COLUMNS[4:]])
    return metrics, trials, run, ident


def _no_zero_width(table: pd.DataFrame, low: str, high: str) -> None:
    if low not in table or high not in table:
        return
    both = table[[low, high]].astype(float).dropna()
    both = both[np.isfinite(both).all(axis=1)]
    assert (both[high] > both[low]).all(), both[both[high] <= both[low]]


@given(folders())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_any_folder_gets_a_report_whose_claims_are_rows_and_whose_intervals_have_width(drawn):
    metrics, trials, run, ident = drawn
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        curves = pd.DataFrame(columns=[*ident, *CURVES_COLUMNS[-3:]])
        write_tables(folder, metrics, curves, trials, run)
        report = write_report(folder).read_text()
        if not (folder / "claims.csv").exists():  # nothing finished: the empty report, no analysis
            assert "No trial has metric rows yet" in report
            return
        opening = report.split("\n\n")[1]
        for name, low, high in (
            ("cells", "ci_low", "ci_high"),
            ("effects", "ci_low", "ci_high"),
            ("effects", "ratio_ci_low", "ratio_ci_high"),
            ("comparisons", "ci_low", "ci_high"),
            ("strata", "ci_low", "ci_high"),
            ("family", "ci_low", "ci_high"),
        ):
            table = pd.read_csv(folder / f"{name}.csv")
            _no_zero_width(table, low, high)
        claims = pd.read_csv(folder / "claims.csv")
        family = pd.read_csv(folder / "family.csv")
        assert len(claims) == 0 or "Resolved:" in opening
        for _, claim in claims.iterrows():
            assert claim["statement"] in opening
            assert f"adjusted p = {fmt(claim['p_adjusted'])}" in claim["statement"]
            assert claim["p_adjusted"] <= 0.05
            interval = f"[{fmt(claim['ci_low'])}, {fmt(claim['ci_high'])}]"
            assert interval in claim["statement"] or claim["kind"] == "anova"
        resolved_text = opening.split("Resolved:")[1].split("Not resolved")[0] if "Resolved:" in opening else ""
        quoted = set(re.findall(r"adjusted p = ([0-9.e+-]+\d)", resolved_text))
        assert quoted <= {fmt(p) for p in claims["p_adjusted"]}  # nothing claimed beyond claims.csv
        assert len(claims) <= int(family["resolved"].sum())
