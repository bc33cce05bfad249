"""Synthetic results folders with known effects: a test helper (not part of the package).

Lets the tests check that the statistics and the report recover what was injected, without training
anything. Values are built in coded units: every two-level factor is
+1 at its reference level and -1 otherwise, and an injected effect ``e`` for a term adds ``e / 2``
times the coded product, so that ``mean(y | +1) - mean(y | -1) = e`` exactly as in effects.csv.
"""

from __future__ import annotations

import itertools
import platform
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablate.design import Design, parse_design
from ablate.results import CURVE_METRICS, DIVERGED, OK, TRIALS_COLUMNS, default_primary_steps, write_tables
from ablate.variants import TOGGLES as VARIANT_TOGGLES
from ablate.variants import Variant

TOGGLES: list[dict] = [
    {"name": name, "levels": list(levels), "reference": levels[0]} for name, levels in VARIANT_TOGGLES.items()
]
_TASKS = {"points": "toy2d", "image": "digits", "video": "sequence"}
_TRAIN_STEPS = np.arange(0, 201, 20)


def variant_label(levels: Mapping[str, Any]) -> str:
    """The results-folder cell label: toggles as ``grid_vboot_vstep_w2`` then ``,key=value``."""
    label = Variant(*(levels[name] for name in VARIANT_TOGGLES)).label
    extras = [f"{k}={v}" for k, v in levels.items() if k not in VARIANT_TOGGLES]
    return ",".join([label, *extras])


def design_record(spec: object, design: Design, label: Callable[[Mapping[str, Any]], str]) -> dict:
    """run.json's ``design`` as a run writes it (ablate.provenance): the experiment file's value, the
    generators, the defining relation's words, resolution and relation, the regular fraction's runs and
    the labels of the cells outside it."""
    return {
        "spec": spec,
        "generators": list(design.generators),
        "words": list(design.words),
        "resolution": design.resolution,
        "defining_relation": design.defining_relation,
        "runs": len(design.runs),
        "extra_cells": [label(cell) for cell in design.extra_cells()],
    }


def _true_mean(direction: str, k: int, shift: float, baseline: bool, horizon_step: int) -> float:
    """Quality improves with sampling steps; the flow baseline collapses at few steps; per-horizon
    errors grow with the horizon step."""
    mean = (1.0 + 1.0 / k if direction == "min" else 1.0 - 0.5 / k) + shift
    mean += 2.0 / k if baseline else 0.0
    return mean * (1.0 + 0.15 * (horizon_step - 1)) if horizon_step else mean


def _penalty(direction: str, amount: float, at_k_max: bool) -> float:
    """Shift towards the metric's bad direction by ``amount`` at the largest step count only."""
    if not at_k_max:
        return 0.0
    return amount if direction == "min" else -amount


def _coded(levels: Mapping[str, Any], factors: list[dict]) -> dict[str, int]:
    return {f["name"]: 1 if levels[f["name"]] == f["reference"] else -1 for f in factors if len(f["levels"]) == 2}


def _shift(effects: Mapping[str, float], coded: Mapping[str, int]) -> float:
    shift = 0.0
    for term, value in effects.items():
        shift += value / 2 * np.prod([coded[name] for name in term.split(":")])
    return float(shift)


def _check_effects(effects: Mapping[str, float], factors: list[dict]) -> None:
    two_level = {f["name"] for f in factors if len(f["levels"]) == 2}
    for term in effects:
        unknown = [name for name in term.split(":") if name not in two_level]
        if unknown:
            raise ValueError(f"effect {term!r} names unknown or non-two-level factors {unknown}")


def _selected(item: Any, variant: str, seed: int, trial_id: str, levels: Mapping) -> bool:
    """Match a diverge/drop spec: variant label, trial id, (variant, seed) or {factor: level}."""
    if isinstance(item, str):
        return item in (variant, trial_id)
    if isinstance(item, tuple):
        return item == (variant, seed)
    if isinstance(item, Mapping):
        return bool(levels) and all(levels.get(k) == v for k, v in item.items())
    raise TypeError(f"cannot match trials by {item!r}")


def _samples(fmt: str, steps: int, quality: float, rng: np.random.Generator) -> np.ndarray:
    """Small fake samples that get sharper with more steps and better quality."""
    blur = 0.05 + 0.4 * abs(quality - 1.0) + 0.3 / steps
    if fmt == "points":
        angles = rng.integers(0, 8, 128) * np.pi / 4
        centres = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        return (centres + blur * rng.standard_normal((128, 2))).astype(np.float32)
    grid = np.zeros((8, 8), np.float32)
    grid[1:7, 3:5] = 1.0
    if fmt == "image":
        return np.clip(grid + blur * rng.standard_normal((16, 8, 8)), 0, 1).astype(np.float32)
    if fmt == "video":
        frames = np.stack([np.roll(grid, t, axis=1) for t in range(6)])
        return np.clip(frames + blur * rng.standard_normal((4, 6, 8, 8)), 0, 1).astype(np.float32)
    raise ValueError(f"unknown sample_format {fmt!r}")


def make_synthetic_results(
    folder: str | Path,
    effects: Mapping[str, float],
    noise_sd: float,
    seeds: Sequence[int],
    steps: Sequence[int],
    metrics: Sequence[str],
    diverge_cells: Iterable[Any] = (),
    drop_trials: Iterable[Any] = (),
    sample_format: str = "points",
    seed: int = 0,
    *,
    extra_factors: Mapping[str, Sequence] | None = None,
    baseline: bool = True,
    horizon: int = 0,
    metric_directions: Mapping[str, str] | None = None,
    noise_floors: Mapping[str, float] | None = None,
    k_max_penalty: Mapping[str, float] | None = None,
    name: str = "synthetic",
    metric_scales: Mapping[str, str] | None = None,
    share_metrics: Mapping[str, int] | None = None,
    learnability_gate: Sequence[Mapping] = (),
    design: object = None,
) -> pd.DataFrame:
    """Write a complete results folder and return the true mean of every cell.

    ``effects`` maps terms such as ``"tau_sampling"`` or ``"tau_sampling:tau2_weight"`` to their
    size in effects.csv units (mean at +1 minus mean at -1), the same at every step count and
    metric. ``diverge_cells`` and ``drop_trials`` take variant labels (every seed), trial ids,
    ``(variant, seed)`` pairs or ``{factor: level}`` selections; diverged trials keep NaN metric
    rows, dropped trials are expected in run.json but absent from every table. ``extra_factors``
    adds factors beyond the four toggles (reference = first level). ``horizon > 0`` adds
    per-horizon metrics ``<metric>_h<t>`` whose error grows with t, as from a video task. The
    ``flow`` baseline (``baseline=True``) is poor at few steps and has no factor levels.
    ``noise_floors`` maps metrics to the value of their ``<metric>_floor``, the same in every
    finished trial and step count, as a task's real-vs-real score is. ``k_max_penalty`` maps
    variant labels to how much worse (in each metric's bad direction) they get at the largest
    step count, as shortcut models can when few training rows use the smallest step size.
    ``metric_scales``, ``share_metrics`` and ``learnability_gate`` are the task's declarations, written
    to run.json as a run writes them (none by default: every metric raw, as for a task declaring none).
    ``design`` is an experiment file's ``design:`` value (``half``, ``{generators: [D = ABC]}``): only
    its cells are run, and run.json gets its record; by default the full factorial and no record, as in
    a folder written before designs.
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    factors = [dict(f) for f in TOGGLES] + [
        {"name": k, "levels": list(v), "reference": list(v)[0]} for k, v in (extra_factors or {}).items()
    ]
    _check_effects(effects, factors)
    if not metrics:
        raise ValueError("give at least one metric name")
    directions = {m: (metric_directions or {}).get(m, "min") for m in metrics}
    noise_floors, k_max_penalty = dict(noise_floors or {}), dict(k_max_penalty or {})
    floor_names = {f"{m}_floor" for m in noise_floors}
    unknown = set(noise_floors) - set(metrics)
    if unknown:
        raise ValueError(f"noise_floors for metrics not in metrics: {sorted(unknown)}")
    # (metric name, metric it derives from, horizon step or 0)
    specs = [(m, m, 0) for m in metrics]
    specs += [(f"{m}_h{t}", m, t) for m in metrics for t in range(1, horizon + 1)]
    diverge_cells, drop_trials = list(diverge_cells), list(drop_trials)

    factor_names = [f["name"] for f in factors]
    if design is None:
        cells = [dict(zip(factor_names, combo)) for combo in itertools.product(*[f["levels"] for f in factors])]
    else:
        planned = parse_design(
            design, {f["name"]: f["levels"] for f in factors}, {f["name"]: f["reference"] for f in factors}
        )
        cells = planned.cells()
    if baseline:
        cells.append({})
    unknown = set(k_max_penalty) - {variant_label(levels) if levels else "flow" for levels in cells}
    if unknown:
        raise ValueError(f"k_max_penalty for variants not in the grid: {sorted(unknown)}")

    metric_rows, curve_rows, trial_rows, expected, truth = [], [], [], [], []
    (folder / "samples").mkdir(parents=True, exist_ok=True)
    trial_index = 0
    for levels in cells:
        variant = variant_label(levels) if levels else "flow"
        shift = _shift(effects, _coded(levels, factors)) if levels else 0.0
        factor_values = {n: levels.get(n) for n in factor_names}

        means = {
            (metric, k): _true_mean(directions[base], k, shift, not levels, t)
            + _penalty(directions[base], k_max_penalty.get(variant, 0.0), k == max(steps))
            for metric, base, t in specs
            for k in steps
        }
        means |= {(f"{m}_floor", k): value for m, value in noise_floors.items() for k in steps}
        truth += [
            {"variant": variant, "steps": k, "metric": metric, "true_mean": mean} for (metric, k), mean in means.items()
        ]
        for s in seeds:
            trial_id = f"trial_{trial_index:04d}"
            trial_index += 1
            expected.append({"trial_id": trial_id, "variant": variant, **factor_values, "seed": s})
            if any(_selected(i, variant, s, trial_id, levels) for i in drop_trials):
                continue
            diverged = any(_selected(i, variant, s, trial_id, levels) for i in diverge_cells)
            status = DIVERGED if diverged else OK
            ident = {
                "trial_id": trial_id,
                "variant": variant,
                **factor_values,
                "seed": s,
                "status": status,
            }
            diverged_step = int(_TRAIN_STEPS[len(_TRAIN_STEPS) // 2]) if diverged else None
            timing = {"train_seconds": 10.0 + rng.random(), "eval_seconds": 1.0 + rng.random()}
            trial_rows.append({**ident, "diverged_step": diverged_step, **timing})
            for (metric, k), mean in means.items():
                noise = 0.0 if metric in floor_names else noise_sd * rng.standard_normal()
                value = np.nan if diverged else mean + noise
                metric_rows.append({**ident, "steps": k, "metric": metric, "value": value})
            for step in _TRAIN_STEPS:
                loss = 0.5 * np.exp(-step / 80) + 0.1 + 0.02 * shift + 0.005 * rng.standard_normal()
                if diverged and step > diverged_step:
                    loss = np.inf
                values = (loss, 0.6 * loss, 0.4 * loss, 1.0 + 0.1 * rng.random())
                for metric, value in zip(CURVE_METRICS, values):
                    if metric != "bootstrap_loss" or levels:
                        curve_rows.append({**ident, "step": int(step), "metric": metric, "value": value})
            if not diverged:
                quality = means[(metrics[0], max(steps))]
                arrays = {f"steps_{k}": _samples(sample_format, k, quality, rng) for k in steps}
                np.savez_compressed(folder / "samples" / f"{trial_id}.npz", **arrays)

    now = datetime.now(timezone.utc).isoformat()
    primary_steps = default_primary_steps(steps)
    run_info = {
        "name": name,
        "task": {"name": _TASKS.get(sample_format, sample_format), "sample_format": sample_format},
        "factors": factors,
        "seeds": list(seeds),
        "eval_steps": list(steps),
        "k_max": max(steps),
        "expected_trials": expected,
        "paper_variant": variant_label({f["name"]: f["reference"] for f in factors}),
        "simplified_variant": variant_label(
            {f["name"]: (f["levels"][1] if f["name"] in VARIANT_TOGGLES else f["reference"]) for f in factors}
        ),
        "baseline_variant": "flow" if baseline else None,
        "primary_metric": metrics[0],
        "primary_steps": primary_steps,
        "metric_directions": {
            **{metric: directions[base] for metric, base, _ in specs},
            **{f"{m}_floor": directions[m] for m in noise_floors},
        },
        "metric_scales": dict(metric_scales or {}),
        "share_metrics": dict(share_metrics or {}),
        "learnability_gate": [dict(c) for c in learnability_gate],
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pandas": pd.__version__,
        },
        "git_commit": None,
        "started": now,
        "finished": now,
        "wall_seconds": 0.0,
        "synthetic": {"effects": dict(effects), "noise_sd": noise_sd, "seed": seed},
    }
    if design is not None:
        run_info["design"] = design_record(design, planned, variant_label)
    ident_cols = ["trial_id", "variant", *factor_names, "seed", "status"]
    write_tables(
        folder,
        pd.DataFrame(metric_rows, columns=[*ident_cols, "steps", "metric", "value"]),
        pd.DataFrame(curve_rows, columns=[*ident_cols, "step", "metric", "value"]),
        pd.DataFrame(trial_rows, columns=[*ident_cols, *TRIALS_COLUMNS[4:]]),
        run_info,
    )
    return pd.DataFrame(truth)


def drawn_trials(variants, seeds, rng: np.random.Generator, p_missing: float, p_diverge: float, expected, trial_rows):
    """The trials of a drawn results folder (the hypothesis properties): each (variant, levels) x seed is
    expected, some are missing, some diverged. Fills ``expected`` and ``trial_rows`` and yields each
    recorded trial's identity columns, levels and status, so the caller adds its metric rows from the same
    ``rng`` in the same order."""
    for t, ((variant, levels), seed) in enumerate(itertools.product(variants, seeds)):
        trial_id = f"trial_{t:04d}"
        expected.append({"trial_id": trial_id, "variant": variant, **levels, "seed": seed})
        if rng.random() < p_missing:
            continue
        status = DIVERGED if rng.random() < p_diverge else OK
        ident = {"trial_id": trial_id, "variant": variant, **levels, "seed": seed, "status": status}
        trial_rows.append({**ident, "diverged_step": 100 if status == DIVERGED else None})
        yield ident, levels, status
