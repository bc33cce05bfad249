"""What the statistics read from a results folder: finished values, metric kinds, trial status.

Only trials with ``status == "ok"`` and a finite value enter estimates; diverged and failed trials
are counted (:func:`divergence_table`), never silently dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ablate.results import DIVERGED, FAILED, MISSING, OK, SCALES, TRAINING_STATS, Results

HORIZON_PATTERN = re.compile(r"^(?P<base>.+)_h(?P<t>\d+)$")
FLOOR_SUFFIX = "_floor"
# Other fixed references a task may score next to a metric <m>, one number per task like the floor:
# what a blurred copy of the real data (<m>_blur) and structureless points (<m>_box) score.
REFERENCE_SUFFIXES = {"_blur": "blurred real data", "_box": "a uniform box"}


def ok_values(results: Results) -> pd.DataFrame:
    """Metric rows of trials that finished (status ok) with a finite value."""
    m = results.metrics
    return m[(m["status"] == OK) & np.isfinite(m["value"].astype(float))]


def floor_metrics(metric_names: Sequence[str]) -> dict[str, str]:
    """Noise-floor metrics ``<m>_floor`` by the metric ``<m>`` they belong to (which must exist).

    A floor scores a second real sample set against the reference, so it is one number per task
    and metric, the same for every variant, seed and K: it says how close to perfect ``<m>`` can
    get, and cell means or effects of it would be constants. A ``*_floor`` name without its base
    metric is left an ordinary metric.
    """
    names = set(metric_names)
    return {
        name.removesuffix(FLOOR_SUFFIX): name
        for name in metric_names
        if name.endswith(FLOOR_SUFFIX) and name.removesuffix(FLOOR_SUFFIX) in names
    }


def reference_metrics(metric_names: Sequence[str]) -> dict[tuple[str, str], str]:
    """The blur and box references ``<m>_blur``, ``<m>_box`` by (metric ``<m>``, suffix); like floors,
    constants of the task that say what a wrong answer scores, never compared between variants."""
    names = set(metric_names)
    return {
        (name.removesuffix(suffix), suffix): name
        for name in metric_names
        for suffix in REFERENCE_SUFFIXES
        if name.endswith(suffix) and name.removesuffix(suffix) in names
    }


def quality_metrics(metric_names: Sequence[str]) -> list[str]:
    """The metrics that compare variants: every metric except the noise floors and the references."""
    constants = set(floor_metrics(metric_names).values()) | set(reference_metrics(metric_names).values())
    return [name for name in metric_names if name not in constants]


def quality_rows(results: Results) -> pd.DataFrame:
    m = results.metrics
    return m[m["metric"].isin(quality_metrics(results.metric_names))]


def factors_in_play(results: Results) -> list[str]:
    return [name for name, levels in results.factor_levels.items() if len(levels) >= 2]


def factorial_rows(frame: pd.DataFrame, factors: Sequence[str]) -> pd.DataFrame:
    """Rows of the factorial cells, i.e. without baselines such as ``flow`` (empty factors)."""
    if not factors:
        return frame.iloc[0:0]
    return frame[frame[list(factors)].notna().all(axis=1)]


def metric_steps(results: Results) -> list[tuple[str, int]]:
    """The (quality metric, steps) families to test; noise floors are constants, never tested."""
    pairs = quality_rows(results)[["metric", "steps"]].drop_duplicates()
    return [(m, int(s)) for m, s in pairs.itertuples(index=False)]


def other_level(levels: Sequence, reference: object) -> object:
    return next(level for level in levels if level != reference)


def metric_scales(results: Results) -> dict[str, str]:
    """``log`` or ``raw`` per quality metric: the scale its effects and verdicts are read on.

    ``results.scale_overrides`` (``ablate report --scale``) first, then the task's declaration
    (run.json ``metric_scales``: distances such as FD, KID, W2 are ``log``, since toggles change them by
    factors; shares are ``raw``), else ``raw``. Never chosen from the data: a rule on the values (cell
    means spanning 10x was the old one) flips with one zero or near its threshold, and the same toggle
    is then read as a difference in one run and as a ratio in the next.
    """
    declared = results.metric_scales
    return {
        metric: results.scale_overrides.get(metric) or declared.get(metric, "raw")
        for metric in quality_metrics(results.metric_names)
    }


def scale_overrides(results: Results, scales: Mapping[str, str] | None) -> dict[str, str]:
    """``--scale`` overrides, checked: each names a quality metric of the run (measured, or declared by
    its task in run.json) and the scale ``log`` or ``raw``; ValueError in one line otherwise."""
    scales = dict(scales or {})
    names = [*results.metric_names, *(results.run.get("metric_directions") or {}), *results.metric_scales]
    known = quality_metrics(list(dict.fromkeys(names)))
    for metric, scale in scales.items():
        if metric not in known:
            raise ValueError(f"--scale {metric}={scale}: no quality metric {metric!r}; have {', '.join(known)}")
        if scale not in SCALES:
            raise ValueError(f"--scale {metric}={scale}: the scale must be log or raw")
    return scales


def trial_table(results: Results) -> pd.DataFrame:
    if len(results.trials):
        return results.trials
    return results.metrics.drop_duplicates("trial_id")


def missing_trials(results: Results) -> pd.DataFrame:
    """Expected trials (run.json ``expected_trials``) that never ran.

    A trial counts as present when trials.csv lists it with a status other than ``missing``.
    """
    trials = trial_table(results)
    expected = pd.DataFrame(results.run.get("expected_trials") or [])
    if expected.empty:
        columns = ["trial_id", "variant", *results.factor_names, "seed"]
        return trials.loc[trials["status"] == MISSING, columns].reset_index(drop=True)
    ran = set(trials.loc[trials["status"] != MISSING, "trial_id"].astype(str))
    return expected[~expected["trial_id"].astype(str).isin(ran)].reset_index(drop=True)


def divergence_table(results: Results) -> pd.DataFrame:
    """Trial counts by status, per variant and per level of each factor (divergence is a result).

    ``n_trials`` counts trials that ran; ``n_missing`` those expected but never run.
    """
    trials = trial_table(results)
    trials = trials[trials["status"] != MISSING]
    missing = missing_trials(results)
    pieces = [("all", "all", trials, missing)]
    variants = list(pd.unique(pd.concat([trials["variant"], missing.get("variant", pd.Series())])))
    pieces += [("variant", v, trials[trials["variant"] == v], missing[missing["variant"] == v]) for v in variants]
    for factor in results.factor_names:
        for level in results.factor_levels[factor]:
            pieces.append((factor, level, _at_level(trials, factor, level), _at_level(missing, factor, level)))
    rows = []
    for group, level, subset, absent in pieces:
        status = subset["status"]
        n = len(subset)
        rows.append(
            {
                "group": group,
                "level": level,
                "n_trials": n,
                "n_ok": int((status == OK).sum()),
                "n_diverged": int((status == DIVERGED).sum()),
                "n_failed": int((status == FAILED).sum()),
                "n_missing": len(absent),
                "share_diverged": (status == DIVERGED).sum() / n if n else np.nan,
            }
        )
    return pd.DataFrame(rows)


STABILITY_COLUMNS = [
    "variant",
    "n_trials",
    "clipped_share",
    "loss_spikes",
    "max_grad_norm",
    "forward_per_step",
    "cost_per_step",
]


def stability_table(results: Results) -> pd.DataFrame:
    """Per variant, over its trials that trained (ok or diverged): the mean share of clipped steps, the
    mean number of loss spikes per trial, the largest gradient norm, the forward passes of one batch per
    training step (1 for flow matching; more with teacher calls) and the cost of a step in units of a
    flow step (a backward counted as two forwards: (forward + 2 backward) / 3). A stabiliser that rescues
    one variant shows here; so does what "equal steps" means in compute."""
    trials = trial_table(results)
    if not set(TRAINING_STATS) <= set(trials.columns):
        return pd.DataFrame(columns=STABILITY_COLUMNS)
    trained = trials[trials["status"].isin([OK, DIVERGED])]
    rows = []
    for variant, group in trained.groupby("variant", sort=False):
        stats_ = group[list(TRAINING_STATS)].astype(float)
        known = stats_.dropna(subset=["backward_passes"])
        known = known[known["backward_passes"] > 0]
        forward = (known["forward_passes"] / known["backward_passes"]).mean() if len(known) else np.nan
        rows.append(
            {
                "variant": variant,
                "n_trials": len(known),
                "clipped_share": stats_["clipped_share"].mean(),
                "loss_spikes": stats_["loss_spikes"].mean(),
                "max_grad_norm": stats_["max_grad_norm"].max(),
                "forward_per_step": forward,
                "cost_per_step": (forward + 2) / 3,
            }
        )
    return pd.DataFrame(rows, columns=STABILITY_COLUMNS)


def _at_level(frame: pd.DataFrame, factor: str, level: object) -> pd.DataFrame:
    if factor not in frame.columns:
        return frame.iloc[0:0]
    return frame[frame[factor].to_numpy(object) == level]


def empty_cells(results: Results, metric: str, steps: int) -> list[str]:
    """Factorial variants without a single finished value at this metric and step count."""
    factors = factors_in_play(results)
    known = pd.concat([trial_table(results), pd.DataFrame(results.run.get("expected_trials") or [])])
    variants = pd.unique(factorial_rows(known, factors)["variant"]) if factors else []
    data = ok_values(results)
    filled = set(data.loc[(data["metric"] == metric) & (data["steps"] == steps), "variant"])
    return [v for v in variants if v not in filled]


def half_normal_scores(effects: pd.DataFrame) -> pd.DataFrame:
    """|estimate| against half-normal quantiles (Daniel plot), for designs without replication.

    With a single seed the cell means carry no CI; effects far above the line through the bulk
    of small |estimates| are the ones that stand out from noise.
    """
    finite = effects[np.isfinite(effects["estimate"].astype(float))]
    ordered = finite.assign(abs_estimate=finite["estimate"].abs()).sort_values("abs_estimate")
    m = len(ordered)
    quantiles = stats.halfnorm.ppf((np.arange(1, m + 1) - 0.5) / m) if m else []
    return ordered.assign(quantile=quantiles)[["term", "estimate", "abs_estimate", "quantile"]]


def horizon_metrics(metric_names: Sequence[str]) -> dict[str, list[tuple[int, str]]]:
    """Group per-horizon metrics ``<name>_h<t>`` by name, sorted by t (needs at least two t)."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for name in metric_names:
        match = HORIZON_PATTERN.match(name)
        if match:
            groups.setdefault(match["base"], []).append((int(match["t"]), name))
    return {base: sorted(items) for base, items in groups.items() if len(items) >= 2}
