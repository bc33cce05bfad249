"""Statistics of an ablation grid, as plain tables (no plotting).

Every function takes a :class:`ablate.results.Results` and returns a DataFrame, so the report,
the notebook and users share one implementation. Only trials with ``status == "ok"`` and a finite
value enter estimates; diverged and failed trials are counted, never silently dropped.

Factor effects follow the usual two-level factorial convention: a factor is coded +1 at its
reference level (the paper's level for the four toggles) and -1 at the other, an interaction's
code is the product of its factors' codes, and

    estimate = mean(y | code = +1) - mean(y | code = -1).

Positive estimates therefore mean "the reference level gives a larger metric value".
"""

from __future__ import annotations

import gc
import itertools
import re
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.anova import anova_lm
from statsmodels.stats.multitest import multipletests

from ablate.results import DIVERGED, FAILED, MISSING, OK, Results

CONFIDENCE = 0.95
# Below this many seeds BCa's bias and acceleration estimates come from too few distinct
# resamples to be trusted, so the percentile interval is used instead.
MIN_N_BCA = 5
N_RESAMPLES = 4999
EFFECT_COLUMNS = [
    "term", "metric", "steps", "estimate", "ci_low", "ci_high", "p_value", "p_holm",
    "n", "method", "kind", "plus_level", "minus_level",
]
HORIZON_PATTERN = re.compile(r"^(?P<base>.+)_h(?P<t>\d+)$")
FLOOR_SUFFIX = "_floor"


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
    return {name.removesuffix(FLOOR_SUFFIX): name for name in metric_names
            if name.endswith(FLOOR_SUFFIX) and name.removesuffix(FLOOR_SUFFIX) in names}


def quality_metrics(metric_names: Sequence[str]) -> list[str]:
    """The metrics that compare variants: every metric except the noise floors."""
    floors = set(floor_metrics(metric_names).values())
    return [name for name in metric_names if name not in floors]


def _quality_rows(results: Results) -> pd.DataFrame:
    m = results.metrics
    return m[m["metric"].isin(quality_metrics(results.metric_names))]


def _factors_in_play(results: Results) -> list[str]:
    return [name for name, levels in results.factor_levels.items() if len(levels) >= 2]


def _factorial_rows(frame: pd.DataFrame, factors: Sequence[str]) -> pd.DataFrame:
    """Rows of the factorial cells, i.e. without baselines such as ``flow`` (empty factors)."""
    if not factors:
        return frame.iloc[0:0]
    return frame[frame[list(factors)].notna().all(axis=1)]


def bootstrap_ci(
    values: np.ndarray, confidence: float = CONFIDENCE, rng: np.random.Generator | None = None
) -> tuple[float, float, str]:
    """CI of the mean over seeds: BCa where it works, else percentile; NaN with one value."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return np.nan, np.nan, "none (n<2)"
    rng = rng if rng is not None else np.random.default_rng(0)
    if len(values) >= MIN_N_BCA:
        low, high = _bootstrap(values, "BCa", confidence, rng)
        if np.isfinite(low) and np.isfinite(high):  # BCa is NaN when all values are equal
            return low, high, "BCa"
    return (*_bootstrap(values, "percentile", confidence, rng), "percentile")


def _bootstrap(values: np.ndarray, method: str, confidence: float, rng) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate data: scipy warns and returns NaN
        ci = stats.bootstrap((values,), np.mean, confidence_level=confidence, method=method,
                             n_resamples=N_RESAMPLES, rng=rng).confidence_interval
    return float(ci.low), float(ci.high)


def cell_summary(results: Results, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """One row per variant x steps x metric: mean, std, CI over seeds, and divergence counts.

    Noise floors get no rows: they are the same in every cell (see :func:`noise_floors`).
    """
    rng = np.random.default_rng(0)
    m = _quality_rows(results)
    finite = np.isfinite(m["value"].astype(float))
    rows = []
    for (variant, steps, metric), group in m.groupby(["variant", "steps", "metric"], sort=False):
        values = group.loc[(group["status"] == OK) & finite.loc[group.index], "value"].to_numpy(float)
        low, high, method = bootstrap_ci(values, confidence, rng)
        rows.append({
            "variant": variant, "steps": int(steps), "metric": metric,
            "n_seeds": len(values),
            "n_diverged": group.loc[group["status"] == DIVERGED, "trial_id"].nunique(),
            "n_failed": group.loc[group["status"] == FAILED, "trial_id"].nunique(),
            "mean": values.mean() if len(values) else np.nan,
            "std": values.std(ddof=1) if len(values) > 1 else np.nan,
            "ci_low": low, "ci_high": high, "ci_method": method,
        })
    cells = pd.DataFrame(rows)
    if cells.empty:
        return cells
    cells = results.variant_levels().merge(cells, on="variant", how="right")
    return cells.sort_values(["metric", "steps", "variant"], kind="stable").reset_index(drop=True)


def _term_names(two_level: Sequence[str]) -> list[tuple[str, ...]]:
    return [(a,) for a in two_level] + list(itertools.combinations(two_level, 2))


def _coded(frame: pd.DataFrame, factor: str, reference: object) -> np.ndarray:
    return np.where(frame[factor].to_numpy(object) == reference, 1.0, -1.0)


def _design(group: pd.DataFrame, results: Results, two: Sequence[str], multi: Sequence[str]):
    """Model frame with c<i> = ±1 codes for two-level factors and m<j> labels for the others."""
    refs = results.reference_levels
    frame = pd.DataFrame({"y": group["value"].to_numpy(float), "seed": group["seed"].astype(str).to_numpy()})
    for i, name in enumerate(two):
        frame[f"c{i}"] = _coded(group, name, refs[name])
    for j, name in enumerate(multi):
        frame[f"m{j}"] = group[name].astype(str).to_numpy()
    return frame


def _ols_effects(group, results, two, multi, confidence) -> list[dict]:
    """Full factorial OLS (main effects + all two-way interactions, seed block)."""
    frame = _design(group, results, two, multi)
    predictors = [f"c{i}" for i in range(len(two))] + [f"C(m{j}, Sum)" for j in range(len(multi))]
    rhs = f"({' + '.join(predictors)})**2" if len(predictors) > 1 else predictors[0]
    n_seeds = frame["seed"].nunique()
    if n_seeds > 1:
        rhs += " + C(seed, Sum)"
    fit = smf.ols(f"y ~ {rhs}", frame).fit()
    inferable = fit.df_resid >= 1
    counts = group.groupby("variant").size()
    if n_seeds == 1:
        method = "ols_full_factorial (single seed: error from higher-order interactions)"
    elif counts.nunique() > 1:
        method = f"ols_full_factorial (unbalanced: {counts.min()}-{counts.max()} seeds per cell)"
    else:
        method = "ols_full_factorial"
    index = {name: f"c{i}" for i, name in enumerate(two)}
    alpha = 1 - confidence
    conf = fit.conf_int(alpha) if inferable else None
    rows = []
    for term in _term_names(two):
        param = ":".join(index[name] for name in term)
        rows.append({
            "term": ":".join(term), "estimate": 2 * fit.params[param],
            "ci_low": 2 * conf.loc[param, 0] if inferable else np.nan,
            "ci_high": 2 * conf.loc[param, 1] if inferable else np.nan,
            "p_value": fit.pvalues[param] if inferable else np.nan,
            "n": int(fit.nobs), "method": method,
        })
    rows += _anova_rows(fit if inferable else None, multi, int(fit.nobs), "anova (full factorial OLS)")
    return rows


def _anova_rows(fit, multi: Sequence[str], n: int, method: str) -> list[dict]:
    """Type-2 ANOVA p-value of each factor with more than two levels."""
    if not multi:
        return []
    table = anova_lm(fit, typ=2) if fit is not None else None
    return [{
        "term": name, "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan,
        "p_value": table.loc[f"C(m{j}, Sum)", "PR(>F)"] if table is not None else np.nan,
        "n": n, "method": method if table is not None else f"{method}: no residual df",
    } for j, name in enumerate(multi)]


def _matched_effects(group, results, two, multi, confidence) -> list[dict]:
    """Contrasts of cell means over the complete pairs (quartets) of cells.

    Used when some cells have no data: the full factorial is then unbalanced or singular, but a
    main effect can still be estimated from pairs of cells that differ only in that factor, and
    a two-way interaction from quartets that differ only in its two factors. Cells are
    independent, so the contrast's standard error comes from a cell-means OLS (pooled
    within-cell variance).
    """
    factors = list(two) + list(multi)
    refs = results.reference_levels
    levels = results.factor_levels
    cell_key = group[factors].apply(tuple, axis=1)
    codes = {key: f"k{i}" for i, key in enumerate(pd.unique(cell_key))}
    frame = pd.DataFrame({"y": group["value"].to_numpy(float), "cell": cell_key.map(codes).to_numpy()})
    fit = smf.ols("y ~ 0 + C(cell)", frame).fit()
    counts = frame["cell"].value_counts()
    params = list(fit.params.index)
    rows = []
    for term in _term_names(two):
        others = [f for f in factors if f not in term]
        weights, complete, total = {}, 0, 0
        for rest in itertools.product(*[levels[f] for f in others]):
            total += 1
            block = {}
            for signs in itertools.product((1, -1), repeat=len(term)):
                key = dict(zip(others, rest))
                for name, sign in zip(term, signs):
                    key[name] = refs[name] if sign == 1 else _other_level(levels[name], refs[name])
                block[codes.get(tuple(key[f] for f in factors))] = float(np.prod(signs))
            if None not in block:
                complete += 1
                weights.update(block)
        unit = "pairs" if len(term) == 1 else "quartets"
        row = {"term": ":".join(term), "method": f"matched_{unit} ({complete} of {total} {unit})"}
        if complete == 0:
            rows.append({**row, "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                         "p_value": np.nan, "n": 0})
            continue
        scale = complete * (1 if len(term) == 1 else 2)
        contrast = np.zeros(len(params))
        for code, weight in weights.items():
            contrast[params.index(f"C(cell)[{code}]")] = weight / scale
        estimate = float(contrast @ fit.params.to_numpy())
        if fit.df_resid >= 1:
            test = fit.t_test(contrast)
            low, high = np.asarray(test.conf_int(alpha=1 - confidence)).ravel()
            p_value = float(np.asarray(test.pvalue).ravel()[0])
        else:
            low = high = p_value = np.nan
        rows.append({**row, "estimate": estimate, "ci_low": low, "ci_high": high,
                     "p_value": p_value, "n": int(counts[list(weights)].sum())})
    rows += _anova_main_effects(group, results, two, multi)
    return rows


def _anova_main_effects(group, results, two, multi) -> list[dict]:
    """ANOVA of multi-level factors from a main-effects model when cells are missing."""
    if not multi:
        return []
    frame = _design(group, results, two, multi)
    predictors = [f"c{i}" for i, name in enumerate(two) if frame[f"c{i}"].nunique() > 1]
    predictors += [f"C(m{j}, Sum)" for j in range(len(multi))]
    usable = all(frame[f"m{j}"].nunique() > 1 for j in range(len(multi)))
    fit = smf.ols(f"y ~ {' + '.join(predictors)}", frame).fit() if usable else None
    if fit is not None and fit.df_resid < 1:
        fit = None
    return _anova_rows(fit, multi, len(frame), "anova_main_effects (empty cells)")


def _other_level(levels: Sequence, reference: object) -> object:
    return next(level for level in levels if level != reference)


def factor_effects(results: Results, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Main effects and two-way interactions per metric x steps, Holm-corrected per family.

    With every factorial cell observed, estimates, CIs and p-values come from one OLS of the
    full factorial (±1 codes, so the estimate is twice the coefficient). With empty cells
    (all seeds diverged, or trials missing) the OLS would silently extrapolate, so matched
    comparisons of cell means are used instead and the ``method`` column says how many pairs
    they rest on. Factors with more than two levels get an ANOVA p-value row.
    """
    factors = _factors_in_play(results)
    two = [f for f in factors if f in results.two_level_factors]
    multi = [f for f in factors if f not in two]
    if not factors:
        return pd.DataFrame(columns=EFFECT_COLUMNS)
    data = _factorial_rows(ok_values(results), factors)
    expected = set(itertools.product(*[results.factor_levels[f] for f in factors]))
    refs, levels = results.reference_levels, results.factor_levels
    rows = []
    for metric, steps in _metric_steps(results):
        group = data[(data["metric"] == metric) & (data["steps"] == steps)]
        observed = set(group[factors].apply(tuple, axis=1)) if len(group) else set()
        if not len(group):
            family = [{"term": ":".join(t), "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                       "p_value": np.nan, "n": 0, "method": "impossible (no data)"}
                      for t in _term_names(two)]
        elif expected <= observed:
            family = _ols_effects(group, results, two, multi, confidence)
        else:
            family = _matched_effects(group, results, two, multi, confidence)
        _holm(family)
        for row in family:
            names = row["term"].split(":")
            kind = "anova" if row["term"] in multi else ("main" if len(names) == 1 else "interaction")
            main = kind == "main"
            rows.append({
                **row, "metric": metric, "steps": int(steps), "kind": kind,
                "plus_level": refs[names[0]] if main else None,
                "minus_level": _other_level(levels[names[0]], refs[names[0]]) if main else None,
            })
    return pd.DataFrame(rows, columns=EFFECT_COLUMNS)


def _metric_steps(results: Results) -> list[tuple[str, int]]:
    """The (quality metric, steps) families to test; noise floors are constants, never tested."""
    pairs = _quality_rows(results)[["metric", "steps"]].drop_duplicates()
    return [(m, int(s)) for m, s in pairs.itertuples(index=False)]


def _holm(family: list[dict]) -> None:
    """Holm correction across the terms of one metric x steps (NaN p-values stay NaN).

    statsmodels' Holm branch calls ``gc.collect()`` on every use, which costs a tenth of a second
    with pandas and matplotlib loaded; freezing the existing heap makes that scan cheap.
    """
    finite = [row for row in family if np.isfinite(row["p_value"])]
    gc.freeze()
    try:
        adjusted = multipletests([row["p_value"] for row in finite], method="holm")[1] if finite else []
    finally:
        gc.unfreeze()
    for row in family:
        row["p_holm"] = np.nan
    for row, p in zip(finite, adjusted):
        row["p_holm"] = float(p)


def noise_floors(results: Results, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """One row per metric that has a floor: the floor's mean over finished trials, with its CI.

    Each trial contributes the mean of its floor values over K, so the CI is over trials (seeds
    and variants). The floor is a property of the task, so the CI has zero width unless trials
    scored against different reference sets; it is kept so that such a run shows it.
    """
    data = ok_values(results)
    rng = np.random.default_rng(0)
    rows = []
    for metric, floor in floor_metrics(results.metric_names).items():
        per_trial = data[data["metric"] == floor].groupby("trial_id")["value"].mean().to_numpy(float)
        low, high, method = bootstrap_ci(per_trial, confidence, rng)
        rows.append({"metric": metric, "floor_metric": floor, "n_trials": len(per_trial),
                     "mean": per_trial.mean() if len(per_trial) else np.nan,
                     "ci_low": low, "ci_high": high, "ci_method": method})
    columns = ["metric", "floor_metric", "n_trials", "mean", "ci_low", "ci_high", "ci_method"]
    numbers = {"n_trials": int, "mean": float, "ci_low": float, "ci_high": float}
    return pd.DataFrame(rows, columns=columns).astype(numbers)  # typed even when empty


def worsening_after_best_steps(
    results: Results, variant: str, metric: str, confidence: float = CONFIDENCE
) -> pd.DataFrame:
    """Whether ``variant`` gets worse from its best step count to the largest one evaluated.

    Shortcut models can lose quality at many sampling steps (e.g. when few training rows use the
    smallest step size), so "more steps is better" is not a given. The best K is the one with the
    best mean; the difference (largest K - best K) is paired within trials, since both come from
    the same trained model, and ``worse`` is true only when its CI excludes 0 on the bad side.
    One row, or none when the variant has no finished values of the metric.
    """
    data = ok_values(results)
    data = data[(data["variant"] == variant) & (data["metric"] == metric)]
    columns = ["variant", "metric", "best_steps", "best_mean", "max_steps", "max_steps_mean",
               "difference", "ci_low", "ci_high", "ci_method", "n_pairs", "worse"]
    if data.empty:
        return pd.DataFrame(columns=columns)
    means = data.groupby("steps")["value"].mean()
    lower_is_better = results.metric_directions.get(metric, "min") == "min"
    best = int(means.idxmin() if lower_is_better else means.idxmax())
    last = int(means.index.max())
    per_trial = data.pivot_table(index="trial_id", columns="steps", values="value")
    differences = (per_trial[last] - per_trial[best]).dropna().to_numpy(float)
    low, high, method = bootstrap_ci(differences, confidence)
    worse = low > 0 if lower_is_better else high < 0
    return pd.DataFrame([{
        "variant": variant, "metric": metric, "best_steps": best, "best_mean": means[best],
        "max_steps": last, "max_steps_mean": means[last],
        "difference": differences.mean() if len(differences) else np.nan,
        "ci_low": low, "ci_high": high, "ci_method": method, "n_pairs": len(differences),
        "worse": bool(worse),
    }], columns=columns)


def _verdict(difference: float, low: float, high: float, direction: str) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return "no CI"
    if low <= 0 <= high:
        return "indistinguishable"
    variant_larger = difference > 0
    return "variant better" if variant_larger == (direction == "max") else "paper better"


def paper_vs_others(
    results: Results,
    confidence: float = CONFIDENCE,
    metrics: Sequence[str] | None = None,
    steps: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Each variant against the paper's (Dunnett, control = paper), plus simplified vs paper (Welch).

    ``difference`` is mean(variant) - mean(paper); ``verdict`` reads it with the metric's
    direction: ``indistinguishable`` when the CI covers 0, ``no CI`` when there are too few seeds.
    Dunnett's p-values need a multivariate-t integral (about a second for 16 variants), so
    ``metrics`` and ``steps`` restrict the work to the comparisons wanted.
    """
    paper, simplified = results.paper_variant, results.simplified_variant
    columns = ["metric", "steps", "variant", "comparison", "difference", "ci_low", "ci_high",
               "p_value", "n_paper", "n_variant", "verdict"]
    data = ok_values(results)
    directions = results.metric_directions
    rows = []
    wanted = [
        (m, k) for m, k in _metric_steps(results)
        if (metrics is None or m in metrics) and (steps is None or k in steps)
    ]
    for metric, k in wanted:
        group = data[(data["metric"] == metric) & (data["steps"] == k)]
        samples = {v: g["value"].to_numpy(float) for v, g in group.groupby("variant", sort=False)}
        control = samples.get(paper, np.array([]))
        others = [v for v in samples if v != paper]
        rows += [
            {"metric": metric, "steps": k, **row,
             "verdict": _verdict(row["difference"], row["ci_low"], row["ci_high"], directions[metric])}
            for row in _dunnett_rows(samples, others, control, confidence)
            + _welch_rows(samples, simplified, control, confidence)
        ]
    return pd.DataFrame(rows, columns=columns)


def _dunnett_rows(samples, others, control, confidence) -> list[dict]:
    n_total = len(control) + sum(len(samples[v]) for v in others)
    usable = len(control) >= 1 and others and n_total - len(others) - 1 >= 1
    if usable:
        result = stats.dunnett(*[samples[v] for v in others], control=control, rng=0)
        ci = result.confidence_interval(confidence_level=confidence)
    rows = []
    for i, v in enumerate(others):
        rows.append({
            "variant": v, "comparison": "dunnett" if usable else "dunnett impossible (too few seeds)",
            "difference": samples[v].mean() - control.mean() if len(control) else np.nan,
            "ci_low": ci.low[i] if usable else np.nan, "ci_high": ci.high[i] if usable else np.nan,
            "p_value": result.pvalue[i] if usable else np.nan,
            "n_paper": len(control), "n_variant": len(samples[v]),
        })
    return rows


def _welch_rows(samples, simplified, control, confidence) -> list[dict]:
    if simplified is None:
        return []
    values = samples.get(simplified, np.array([]))
    row = {"variant": simplified, "n_paper": len(control), "n_variant": len(values),
           "difference": values.mean() - control.mean() if len(values) and len(control) else np.nan}
    if len(values) < 2 or len(control) < 2:
        return [{**row, "comparison": "welch impossible (fewer than 2 seeds)",
                 "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan}]
    test = stats.ttest_ind(values, control, equal_var=False)
    ci = test.confidence_interval(confidence_level=confidence)
    return [{**row, "comparison": "welch", "ci_low": ci.low, "ci_high": ci.high, "p_value": test.pvalue}]


def _trial_table(results: Results) -> pd.DataFrame:
    if len(results.trials):
        return results.trials
    return results.metrics.drop_duplicates("trial_id")


def missing_trials(results: Results) -> pd.DataFrame:
    """Expected trials (run.json ``expected_trials``) that never ran.

    A trial counts as present when trials.csv lists it with a status other than ``missing``.
    """
    trials = _trial_table(results)
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
    trials = _trial_table(results)
    trials = trials[trials["status"] != MISSING]
    missing = missing_trials(results)
    pieces = [("all", "all", trials, missing)]
    variants = list(pd.unique(pd.concat([trials["variant"], missing.get("variant", pd.Series())])))
    pieces += [("variant", v, trials[trials["variant"] == v], missing[missing["variant"] == v])
               for v in variants]
    for factor in results.factor_names:
        for level in results.factor_levels[factor]:
            pieces.append((factor, level, _at_level(trials, factor, level),
                           _at_level(missing, factor, level)))
    rows = []
    for group, level, subset, absent in pieces:
        status = subset["status"]
        n = len(subset)
        rows.append({
            "group": group, "level": level, "n_trials": n, "n_ok": int((status == OK).sum()),
            "n_diverged": int((status == DIVERGED).sum()), "n_failed": int((status == FAILED).sum()),
            "n_missing": len(absent),
            "share_diverged": (status == DIVERGED).sum() / n if n else np.nan,
        })
    return pd.DataFrame(rows)


def _at_level(frame: pd.DataFrame, factor: str, level: object) -> pd.DataFrame:
    if factor not in frame.columns:
        return frame.iloc[0:0]
    return frame[frame[factor].to_numpy(object) == level]


def empty_cells(results: Results, metric: str, steps: int) -> list[str]:
    """Factorial variants without a single finished value at this metric and step count."""
    factors = _factors_in_play(results)
    known = pd.concat([_trial_table(results), pd.DataFrame(results.run.get("expected_trials") or [])])
    variants = pd.unique(_factorial_rows(known, factors)["variant"]) if factors else []
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
