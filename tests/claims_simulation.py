"""Simulated grids with a known truth, and whether the opening's family claims something false.

A test helper (not part of the package), shared by ``tests/test_claims.py`` and
``benchmarks/claims_error.py``. A grid is the four toggles (16 cells) plus the flow baseline at the
primary K = 4 and at k_max = 64; every cell's true mean is given, and each seed adds noise. The truth of
every hypothesis of the family comes from the same contrasts applied to the true means, so a claim is
false exactly when its test's truth contradicts it: a better / worse / interaction / pair claim whose
true value is zero or of the other sign, an equivalence whose true value is outside the margin, a
worsening that is not one.

``design`` (an experiment file's ``design:`` value, e.g. ``"half"``) draws only that fraction's cells and
records it in run.json, so the family tests its estimable terms; each hypothesis's truth is then its alias
class's, the same contrast of the true means.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
from synthetic import design_record

from ablate.analysis.family import build_family, family_table
from ablate.design import parse_design
from ablate.results import Results
from ablate.variants import TOGGLES, Variant

FACTORS = [{"name": name, "levels": list(levels), "reference": levels[0]} for name, levels in TOGGLES.items()]
CELLS = list(itertools.product(*[f["levels"] for f in FACTORS]))
STEPS = (4, 64)
SHARE_SAMPLES = 1000


def coded(cell: tuple) -> dict[str, int]:
    return {f["name"]: 1 if level == f["reference"] else -1 for f, level in zip(FACTORS, cell)}


def cells(design: object = None) -> list[tuple]:
    """The grid's cells (levels in TOGGLES order): all 16, or those of a ``design:`` value."""
    if design is None:
        return CELLS
    planned = parse_design(design, {f["name"]: f["levels"] for f in FACTORS})
    return [tuple(cell[name] for name in TOGGLES) for cell in planned.cells()]


def true_means(base: float, effects: dict[str, float], design: object = None) -> dict[tuple, float]:
    """Cell means from effects in effects.csv units (mean at +1 minus mean at -1 of the term's code)."""
    means = {}
    for cell in cells(design):
        codes = coded(cell)
        means[cell] = base + sum(
            size / 2 * np.prod([codes[f] for f in term.split(":")]) for term, size in effects.items()
        )
    return means


def results_of(
    values: dict[tuple, np.ndarray], baseline: np.ndarray, share: bool = False, design: object = None
) -> Results:
    """An in-memory Results: ``values[cell]`` and ``baseline`` are (seeds, len(STEPS)) arrays; ``design``
    the ``design:`` value the cells are of (None: the full factorial, no record in run.json)."""
    rows = []
    named = {Variant(*cell).label: (dict(zip(TOGGLES, cell)), v) for cell, v in values.items()}
    named["flow"] = (dict.fromkeys(TOGGLES), baseline)
    for variant, (levels, per_seed) in named.items():
        for seed in range(per_seed.shape[0]):
            for k, steps in enumerate(STEPS):
                rows.append(
                    {
                        "trial_id": f"{variant}/{seed}",
                        "variant": variant,
                        **levels,
                        "seed": seed,
                        "status": "ok",
                        "steps": steps,
                        "metric": "m",
                        "value": per_seed[seed, k],
                    }
                )
    metrics = pd.DataFrame(rows)
    trials = metrics.drop(columns=["steps", "metric", "value"]).drop_duplicates("trial_id").reset_index(drop=True)
    return Results(
        folder=Path("in-memory"),
        metrics=metrics,
        curves=pd.DataFrame(),
        trials=trials,
        run={
            "factors": FACTORS,
            "paper_variant": Variant.paper().label,
            "simplified_variant": Variant.simplified().label,
            "baseline_variant": "flow",
            "metric_directions": {"m": "max"},
            "metric_scales": {"m": "raw"},
            "share_metrics": {"m": SHARE_SAMPLES} if share else {},
            "k_max": 64,
            **({"design": _record(design)} if design is not None else {}),
        },
    )


def _record(design: object) -> dict:
    planned = parse_design(design, {f["name"]: f["levels"] for f in FACTORS})
    return design_record(design, planned, lambda levels: Variant(*(levels[name] for name in TOGGLES)).label)


def draw(
    means: dict[tuple, float],
    baseline: float,
    n_seeds: int,
    rng: np.random.Generator,
    noise_sd: float = 1.0,
    share: bool = False,
    design: object = None,
) -> Results:
    """Each cell's seeds: its mean at both K plus normal noise, or binomial shares of SHARE_SAMPLES."""

    def one(mean: float) -> np.ndarray:
        if share:
            return rng.binomial(SHARE_SAMPLES, np.full((n_seeds, len(STEPS)), mean)) / SHARE_SAMPLES
        return mean + noise_sd * rng.standard_normal((n_seeds, len(STEPS)))

    return results_of({cell: one(m) for cell, m in means.items()}, one(baseline), share, design)


def truth(means: dict[tuple, float], baseline: float, design: object = None) -> pd.DataFrame:
    """The family's estimates on the true means (two seeds at +-1e-9 around them: exact, never tied)."""
    spread = np.array([[1e-9], [-1e-9]]) * np.ones((1, len(STEPS)))
    values = {cell: m + spread for cell, m in means.items()}
    return family_table(build_family(results_of(values, baseline + spread, design=design), "m", 4))


def false_claims(family: pd.DataFrame, true: pd.DataFrame, tolerance: float = 1e-6) -> list[str]:
    """The resolved hypotheses whose truth contradicts what they claim (by id: same construction)."""
    wrong = []
    for _, row in family[family["resolved"].astype(bool)].iterrows():
        value = float(true.loc[true["id"] == row["id"], "estimate"].iloc[0])
        kind = row["kind"]
        if kind == "equivalence":
            bad = abs(value) >= row["margin"]
        elif kind == "worsening":
            bad = value >= -tolerance  # the metric is "max": worse with more steps means a negative change
        elif kind == "anova":
            bad = False  # no level tests in these grids
        else:
            bad = abs(value) <= tolerance or (value > 0) != (row["estimate"] > 0)
        if bad:
            wrong.append(f"{kind} {row['term']} {row['within'] or ''}".strip())
    return wrong
