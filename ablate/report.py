"""Write the statistical report of one results folder.

``write_report`` adds ``report.md``, ``cells.csv``, ``effects.csv`` and ``figures/*.png`` to the
folder. The report opens with the answer (which toggles change quality, by how much, with CIs)
and treats divergence and missing trials as results to be stated, not errors. Noise floors
(``<m>_floor``, real data scored against the reference) are no quality metric: they are drawn
and quoted next to ``<m>`` and get no figure, cells or effects of their own.

Figures are drawn on ``matplotlib.figure.Figure`` objects, which render with Agg and never touch
pyplot's global state, so importing this module from a notebook keeps the notebook's backend.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ablate import analysis
from ablate.results import OK, Results, load

DPI = 120
ALPHA = 0.05
PAPER_STYLE = {"color": "tab:blue", "lw": 2.2, "zorder": 5}
SIMPLIFIED_STYLE = {"color": "tab:red", "lw": 2.2, "zorder": 4}
BASELINE_STYLE = {"color": "black", "lw": 1.8, "ls": "--", "zorder": 3}
OTHER_STYLE = {"color": "0.6", "lw": 0.8, "alpha": 0.7, "zorder": 1}
FLOOR_LABEL = "noise floor (real vs real)"
FLOOR_STYLE = {"color": "0.5", "lw": 1.2, "ls": "--", "zorder": 2, "label": FLOOR_LABEL}
MAX_TABLE_ROWS = 20


@dataclass
class _Context:
    """What every section and figure needs; built once per report."""

    results: Results
    cells: pd.DataFrame
    effects: pd.DataFrame
    floors: pd.DataFrame
    metric: str
    steps: int
    notes: list[str]
    figures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def single_seed(self) -> bool:
        return len(self.results.seeds) <= 1

    @property
    def figure_dir(self) -> Path:
        return self.results.folder / "figures"

    def primary_effects(self) -> pd.DataFrame:
        e = self.effects
        return e[(e["metric"] == self.metric) & (e["steps"] == self.steps)]

    def primary_floor(self) -> pd.Series | None:
        """The primary metric's noise floor (mean, CI), or None when the task reports none."""
        floors = self.floors
        rows = floors[(floors["metric"] == self.metric) & np.isfinite(floors["mean"])]
        return rows.iloc[0] if len(rows) else None

    def quoted_steps(self) -> list[int]:
        """K = 1, the primary K and k_max: the step counts researchers quote, where evaluated."""
        wanted = (1, self.steps, self.results.k_max)
        return sorted({k for k in wanted if k in self.results.eval_steps})


# --- small helpers ---------------------------------------------------------------------------


def _fmt(x: object) -> str:
    """Three significant digits; p-values and tiny numbers in scientific notation."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    if isinstance(x, (int, np.integer)) or isinstance(x, str):
        return str(x)
    return f"{x:.3g}"


def _ci(low: float, high: float) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return "no CI"
    return f"[{_fmt(low)}, {_fmt(high)}]"


def _mean_ci(row: pd.Series) -> str:
    """``mean`` with its CI from a cells or floors row; a zero-width CI (a constant such as the
    noise floor) adds nothing."""
    mean, low, high = (float(row[c]) for c in ("mean", "ci_low", "ci_high"))
    if not np.isfinite(mean):
        return "n/a"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{_fmt(mean)} (no CI)"
    if np.isclose(low, high, rtol=1e-9, atol=0):
        return _fmt(mean)
    return f"{_fmt(mean)} {_ci(low, high)}"


def _md_table(frame: pd.DataFrame) -> str:
    """GitHub markdown table of already formatted values (avoids a tabulate dependency)."""
    if frame.empty:
        return "_(none)_"
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_fmt(v) if not isinstance(v, str) else v for v in row) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _better(direction: str) -> str:
    return "lower is better" if direction == "min" else "higher is better"


def _style(variant: str, results: Results) -> dict:
    """Line style: the paper, simplified and baseline variants stand out, the rest are grey."""
    if variant == results.paper_variant:
        return {**PAPER_STYLE, "label": f"paper: {variant}"}
    if variant == results.simplified_variant:
        return {**SIMPLIFIED_STYLE, "label": f"simplified: {variant}"}
    if variant == results.baseline_variant:
        return {**BASELINE_STYLE, "label": f"baseline: {variant}"}
    return dict(OTHER_STYLE)


def _highlighted(variants: Sequence[str], results: Results) -> list[str]:
    """Paper, simplified and baseline variants, in that order, where present."""
    wanted = [results.paper_variant, results.simplified_variant, results.baseline_variant]
    return [v for v in wanted if v in variants]


def _line_styles(variants: Sequence[str], results: Results) -> list[tuple[str, dict, bool]]:
    """(variant, line style, highlighted) with grey variants first, so highlighted lines are on
    top; only the first grey line gets a legend entry ("other variants")."""
    highlighted = _highlighted(variants, results)
    grey = [v for v in variants if v not in highlighted]
    styles = [(v, dict(OTHER_STYLE, label="other variants" if i == 0 else None), False)
              for i, v in enumerate(grey)]
    return styles + [(v, _style(v, results), True) for v in highlighted]


def _save(ctx: _Context, fig: Figure, name: str, caption: str, tight: bool = True) -> None:
    """Save under figures/ and remember the caption for report.md.

    ``tight=False`` skips the extra draw of ``bbox_inches="tight"``: figures laid out by
    ``tight_layout`` or by hand do not need it, and each draw costs about a second.
    """
    ctx.figure_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(ctx.figure_dir / name, dpi=DPI, bbox_inches="tight" if tight else None)
    ctx.figures.append((caption, f"figures/{name}"))


def _main_metrics(results: Results) -> list[str]:
    """Metrics that get their own figures; per-horizon metrics get the horizon figure instead,
    and noise floors are a line in their metric's figure."""
    horizon = {name for items in analysis.horizon_metrics(results.metric_names).values()
               for _, name in items}
    return [m for m in analysis.quality_metrics(results.metric_names) if m not in horizon]


def _roles(results: Results) -> list[tuple[str, str]]:
    """(role, variant) for the paper, simplified and baseline variants the run names."""
    roles = [("paper", results.paper_variant), ("simplified", results.simplified_variant),
             ("baseline", results.baseline_variant)]
    return [(role, variant) for role, variant in roles if variant is not None]


def _cell_text(cells: pd.DataFrame, variant: str, steps: int) -> str:
    """A variant's mean and CI at one K from cells indexed by (variant, steps)."""
    return _mean_ci(cells.loc[(variant, steps)]) if (variant, steps) in cells.index else "n/a"


def _significant(effects: pd.DataFrame) -> pd.Series:
    """Distinguishable from zero: the 95% CI excludes 0 and the Holm p-value is at most 0.05."""
    low, high, p = (effects[c].astype(float) for c in ("ci_low", "ci_high", "p_holm"))
    return ((low > 0) | (high < 0)) & (p <= ALPHA)


# --- figures -----------------------------------------------------------------------------------


def plot_quality_vs_steps(ax: Axes, cells: pd.DataFrame, results: Results, metric: str) -> None:
    """Mean over seeds vs sampling steps (log2 axis) per variant, with CI bands.

    The paper, simplified and baseline variants are highlighted; the rest are thin grey lines.
    A dashed grey line marks the metric's noise floor where the task reports one. Public so the
    notebook draws the same figure.
    """
    data = cells[cells["metric"] == metric].sort_values("steps")
    for variant, style, highlighted in _line_styles(list(pd.unique(data["variant"])), results):
        rows = data[data["variant"] == variant]
        ax.plot(rows["steps"], rows["mean"], marker="o", ms=3, **style)
        band = rows[np.isfinite(rows["ci_low"])]
        if len(band):
            ax.fill_between(band["steps"], band["ci_low"], band["ci_high"], color=style["color"],
                            alpha=0.15 if highlighted else 0.05, lw=0)
    _draw_noise_floor(ax, results, metric)
    ax.set_xscale("log", base=2)
    steps = sorted(pd.unique(data["steps"]))
    ax.set_xticks(steps, [str(s) for s in steps])
    ax.set_xlabel("sampling steps K")
    ax.set_ylabel(f"{metric} ({_better(results.metric_directions.get(metric, 'min'))})")
    ax.legend(fontsize=7, frameon=False, loc="upper right")
    ax.grid(alpha=0.3)


def _draw_noise_floor(ax: Axes, results: Results, metric: str) -> None:
    """Horizontal line at the floor: real data scores there, so no variant can be expected to
    beat it, and a gap to it is the room left for improvement."""
    floors = analysis.noise_floors(results).set_index("metric")["mean"]
    if metric in floors.index and np.isfinite(floors[metric]):
        ax.axhline(floors[metric], **FLOOR_STYLE)


def _fig_steps(ctx: _Context) -> None:
    for metric in _main_metrics(ctx.results):
        if not np.isfinite(ctx.cells.loc[ctx.cells["metric"] == metric, "mean"]).any():
            continue
        fig = Figure(figsize=(6, 4))
        ax = fig.add_subplot()
        plot_quality_vs_steps(ax, ctx.cells, ctx.results, metric)
        ax.set_title(f"{metric} vs sampling steps (mean over seeds, 95% CI)")
        _save(ctx, fig, f"steps_{_safe(metric)}.png", f"{metric} vs number of sampling steps")


def _fig_forest(ctx: _Context) -> None:
    effects = ctx.effects[(ctx.effects["steps"] == ctx.steps) & (ctx.effects["kind"] != "anova")]
    estimated = set(effects.loc[np.isfinite(effects["estimate"].astype(float)), "metric"])
    metrics = [m for m in _main_metrics(ctx.results) if m in estimated]
    if not metrics:
        return
    ncols = min(3, len(metrics))
    nrows = -(-len(metrics) // ncols)
    terms = list(pd.unique(effects["term"]))
    fig = Figure(figsize=(3.6 * ncols + 1.5, 0.32 * len(terms) * nrows + 1.2))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    y = np.arange(len(terms))[::-1]
    for ax, metric in zip(axes.flat, metrics):
        rows = effects[effects["metric"] == metric].set_index("term").reindex(terms)
        significant = _significant(rows).to_numpy()
        est = rows["estimate"].to_numpy(float)
        err = np.abs(np.vstack([est - rows["ci_low"], rows["ci_high"] - est]).astype(float))
        ax.errorbar(est, y, xerr=np.nan_to_num(err), fmt="none", ecolor="0.3", lw=1)
        ax.plot(est[significant], y[significant], "o", color="tab:blue", label="CI excludes 0, Holm p ≤ 0.05")
        ax.plot(est[~significant], y[~significant], "o", mfc="white", color="0.3",
                label="not significant")
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(f"{metric} ({_better(ctx.results.metric_directions.get(metric, 'min'))})",
                     fontsize=9)
        ax.set_xlabel("effect: reference − other level")
        ax.grid(axis="x", alpha=0.3)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    axes[0, 0].set_yticks(y, terms, fontsize=8)
    axes[0, 0].legend(fontsize=7, frameon=False, loc="lower right")
    fig.suptitle(f"Factor effects at K = {ctx.steps} (95% CI)", fontsize=10)
    _save(ctx, fig, "effects_forest.png", f"Effects with 95% CIs at K = {ctx.steps}")


def _fig_interactions(ctx: _Context, how_many: int = 3) -> None:
    effects = ctx.primary_effects()
    top = effects[(effects["kind"] == "interaction") & np.isfinite(effects["estimate"])]
    top = top.reindex(top["estimate"].abs().sort_values(ascending=False).index).head(how_many)
    if top.empty:
        return
    results = ctx.results
    data = analysis.ok_values(results)
    data = data[(data["metric"] == ctx.metric) & (data["steps"] == ctx.steps)]
    refs, levels = results.reference_levels, results.factor_levels
    fig = Figure(figsize=(3.4 * len(top), 3.2))
    axes = fig.subplots(1, len(top), squeeze=False)[0]
    for ax, term in zip(axes, top["term"]):
        a, b = term.split(":")
        a_levels = [refs[a]] + [lv for lv in levels[a] if lv != refs[a]]
        for b_level in [refs[b]] + [lv for lv in levels[b] if lv != refs[b]]:
            means = [data.loc[(data[a].to_numpy(object) == a_level)
                              & (data[b].to_numpy(object) == b_level), "value"].mean()
                     for a_level in a_levels]
            ax.plot(range(len(a_levels)), means, marker="o", label=f"{b} = {b_level}")
        ax.set_xticks(range(len(a_levels)), [str(lv) for lv in a_levels])
        ax.set_xlim(-0.4, len(a_levels) - 0.6)
        ax.set_xlabel(a)
        ax.set_ylabel(f"{ctx.metric} at K = {ctx.steps}")
        ax.set_title(term, fontsize=9)
        ax.legend(fontsize=7, frameon=False, loc="upper right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    caption = (f"Largest two-way interactions for {ctx.metric} at K = {ctx.steps} "
               "(means over seeds and the other factors; parallel lines = no interaction)")
    _save(ctx, fig, "interactions.png", caption, tight=False)


def _fig_curves(ctx: _Context) -> None:
    curves = ctx.results.curves
    if curves.empty:
        return
    curves = curves[(curves["status"] == OK) & np.isfinite(curves["value"].astype(float))]
    quantities = list(pd.unique(curves["metric"]))
    if not quantities:
        return
    ncols = min(2, len(quantities))
    nrows = -(-len(quantities) // ncols)
    fig = Figure(figsize=(4.5 * ncols, 3 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, quantity in zip(axes.flat, quantities):
        mean = curves[curves["metric"] == quantity].groupby(["variant", "step"])["value"].mean()
        for variant, style, _ in _line_styles(list(mean.index.unique("variant")), ctx.results):
            ax.plot(mean[variant].index, mean[variant].to_numpy(), **style)
        if (mean > 0).all() and mean.max() > 3 * mean.min():  # losses spanning a range
            ax.set_yscale("log")
            # plain-text labels: the default mathtext ones cost a second of parsing per figure
            ax.yaxis.set_major_formatter(ticker.LogFormatter())
            ax.yaxis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False))
        ax.set_xlabel("training step")
        ax.set_ylabel(quantity)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False, loc="upper right")
    for ax in axes.flat[len(quantities):]:
        ax.set_visible(False)
    fig.suptitle("Training curves (mean over finished seeds)", fontsize=10)
    fig.tight_layout()
    _save(ctx, fig, "training_curves.png", "Training curves per variant (mean over seeds)",
          tight=False)


def _sample_trials(results: Results) -> dict[str, Path]:
    """Per variant, the sample file of its lowest finished seed."""
    trials = results.trials if len(results.trials) else results.metrics.drop_duplicates("trial_id")
    chosen = {}
    for variant, group in trials[trials["status"] == OK].sort_values("seed").groupby(
            "variant", sort=False):
        for trial_id in group["trial_id"]:
            if results.sample_path(trial_id).exists():
                chosen[variant] = results.sample_path(trial_id)
                break
    return chosen


def _tile(array: np.ndarray, fmt: str) -> np.ndarray:
    """One 2-D picture per variant: a 4x4 mosaic of images, or the frames of one video."""
    if fmt == "image":
        n = int(np.floor(np.sqrt(min(len(array), 16))))
        padded = np.pad(array[: n * n].astype(float), ((0, 0), (0, 1), (0, 1)), constant_values=np.nan)
        rows = padded.reshape(n, n, *padded.shape[1:])
        return np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)[:-1, :-1]
    frames = np.pad(array[0][:8].astype(float), ((0, 0), (0, 0), (0, 1)), constant_values=np.nan)
    return np.concatenate(list(frames), axis=1)[:, :-1]


def _label(ax: Axes, x: float, y: float, variant: str, results: Results) -> None:
    ax.text(x, y, variant, ha="center", va="bottom", fontsize=6,
            color=_style(variant, results)["color"])


def _points_grid(ax: Axes, arrays: dict[str, np.ndarray], ncols: int, results: Results) -> None:
    """Point clouds in a grid of unit boxes on one axes, all on one common scale.

    One axes instead of one per variant keeps the figure cheap to draw; the common scale keeps a
    blurry variant visibly wider than a sharp one.
    """
    everything = np.concatenate(list(arrays.values()))
    low, high = np.nanpercentile(everything, [0.5, 99.5], axis=0)
    centre, span = (low + high) / 2, max(float(np.max(high - low)), 1e-12)
    for i, (variant, points) in enumerate(arrays.items()):
        x0, y0 = (i % ncols) * 1.1, -(i // ncols) * 1.3
        scaled = (points[:, :2] - centre) / span * 0.9
        inside = np.all(np.abs(scaled) <= 0.5, axis=1)
        ax.scatter(x0 + scaled[inside, 0], y0 + scaled[inside, 1], s=1.5, lw=0, alpha=0.6,
                   color="tab:blue")
        ax.plot(x0 + np.array([-0.5, 0.5, 0.5, -0.5, -0.5]),
                y0 + np.array([-0.5, -0.5, 0.5, 0.5, -0.5]), color="0.85", lw=0.6)
        _label(ax, x0, y0 + 0.53, variant, results)
    nrows = -(-len(arrays) // ncols)
    ax.set_xlim(-0.55, (ncols - 1) * 1.1 + 0.55)
    ax.set_ylim(-(nrows - 1) * 1.3 - 0.55, 0.75)
    ax.set_aspect("equal")


def _picture_grid(ax: Axes, tiles: dict[str, np.ndarray], ncols: int, results: Results) -> None:
    """Image mosaics or frame strips as one canvas with a label band above each tile."""
    height = max(t.shape[0] for t in tiles.values())
    width = max(t.shape[1] for t in tiles.values())
    band, gap = max(3, height // 4), max(1, width // 16)
    nrows = -(-len(tiles) // ncols)
    canvas = np.full((nrows * (height + band), ncols * (width + gap)), np.nan)
    for i, (variant, tile) in enumerate(tiles.items()):
        top, left = (i // ncols) * (height + band) + band, (i % ncols) * (width + gap)
        canvas[top: top + tile.shape[0], left: left + tile.shape[1]] = tile
        _label(ax, left + width / 2 - 0.5, top - 1, variant, results)
    low, high = np.nanpercentile(canvas, [1, 99])
    cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")
    ax.imshow(canvas, cmap=cmap, vmin=low, vmax=high, interpolation="nearest")


def _fig_samples(ctx: _Context) -> None:
    results = ctx.results
    fmt = results.sample_format
    files = _sample_trials(results)
    if fmt not in ("points", "image", "video") or not files:
        ctx.notes.append("No sample files (samples/<trial_id>.npz) found: sample figures skipped.")
        return
    highlighted = _highlighted(list(files), results)
    variants = highlighted + [v for v in files if v not in highlighted]
    ncols = 3 if fmt == "video" else 6
    width = ncols * (3.2 if fmt == "video" else 1.6)
    for k in sorted({k for k in (1, 4, results.k_max) if k in results.eval_steps}):
        arrays = {}
        for variant in variants:
            with np.load(files[variant]) as npz:
                if f"steps_{k}" in npz:
                    arrays[variant] = npz[f"steps_{k}"]
        if not arrays:
            continue
        fig = Figure()
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_axis_off()
        if fmt == "points":
            _points_grid(ax, arrays, ncols, results)
        else:
            _picture_grid(ax, {v: _tile(a, fmt) for v, a in arrays.items()}, ncols, results)
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        height, title = width * abs(y1 - y0) / abs(x1 - x0), 0.45  # figure follows the grid shape
        fig.set_size_inches(width, height + title)
        ax.set_position((0, 0, 1, height / (height + title)))
        fig.suptitle(f"Samples at K = {k} sampling steps (lowest finished seed per variant)",
                     fontsize=10)
        _save(ctx, fig, f"samples_K{k}.png", f"Samples per variant at K = {k}", tight=False)


def _fig_half_normal(ctx: _Context) -> None:
    effects = ctx.primary_effects()
    scores = analysis.half_normal_scores(effects[effects["kind"] != "anova"])
    if scores.empty:
        return
    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    ax.plot(scores["quantile"], scores["abs_estimate"], "o", color="tab:blue")
    # reference line through the origin and the median point: pure noise would follow it
    slope = scores["abs_estimate"].median() / scores["quantile"].median()
    q = np.array([0, scores["quantile"].max()])
    ax.plot(q, slope * q, "--", color="0.5", lw=1, label="line through the median effect")
    outliers = scores[scores["abs_estimate"] > 2 * slope * scores["quantile"]].tail(5)
    for i, (_, row) in enumerate(outliers[::-1].iterrows()):
        ax.annotate(row["term"], (row["quantile"], row["abs_estimate"]), fontsize=7,
                    xytext=(-6, -4 - 10 * i), textcoords="offset points", ha="right")
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    ax.set_xlabel("half-normal quantile")
    ax.set_ylabel(f"|effect| on {ctx.metric} at K = {ctx.steps}")
    ax.set_title("Half-normal plot of effects (single seed)", fontsize=10)
    ax.grid(alpha=0.3)
    _save(ctx, fig, "half_normal.png",
          "Half-normal plot: effects far above the line of the small ones stand out from noise")


def _fig_horizon(ctx: _Context) -> None:
    results = ctx.results
    k_values = ctx.quoted_steps()
    for base, items in analysis.horizon_metrics(results.metric_names).items():
        horizon = {name: t for t, name in items}
        data = ctx.cells[ctx.cells["metric"].isin(horizon)]
        data = data.assign(t=data["metric"].map(horizon)).sort_values("t")
        fig = Figure(figsize=(4 * len(k_values), 3.4))
        axes = fig.subplots(1, len(k_values), squeeze=False, sharey=True)[0]
        for ax, k in zip(axes, k_values):
            at_k = data[data["steps"] == k]
            for variant, style, _ in _line_styles(list(pd.unique(at_k["variant"])), results):
                rows = at_k[at_k["variant"] == variant]
                ax.plot(rows["t"], rows["mean"], marker=".", **style)
            ax.set_title(f"K = {k}", fontsize=9)
            ax.set_xlabel("horizon step t")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel(f"{base} per horizon step")
        axes[0].legend(fontsize=7, frameon=False, loc="upper left")
        fig.suptitle(f"Growth of {base} over the horizon (mean over seeds)", fontsize=10)
        fig.tight_layout()
        _save(ctx, fig, f"horizon_{_safe(base)}.png", f"{base} over the prediction horizon",
              tight=False)


# --- text -------------------------------------------------------------------------------------


def _resolve_primary(
    results: Results, metric: str | None, steps: int | None
) -> tuple[str, int, list[str]]:
    """Primary metric and step count: argument, else run.json, else a documented fallback."""
    notes = []
    quality = analysis.quality_metrics(results.metric_names)
    metrics = _main_metrics(results) or quality
    if metric is not None and metric not in quality:
        raise ValueError(f"metric {metric!r} not in the results' quality metrics (noise floors "
                         f"are not); have {quality}")
    if metric is None:
        metric = results.run.get("primary_metric")
        if metric not in quality:
            notes.append(f"run.json primary_metric {metric!r} is not a quality metric with rows; "
                         f"using {metrics[0]!r}.")
            metric = metrics[0]
    available = results.eval_steps
    if steps is not None and int(steps) not in available:
        raise ValueError(f"steps={steps} not evaluated; have {available}")
    if steps is None:
        steps = results.run.get("primary_steps")
        if steps is None or int(steps) not in available:
            notes.append(f"run.json primary_steps {steps!r} not evaluated; using K = {max(available)}.")
            steps = max(available)
    return metric, int(steps), notes


def _effect_sentence(row: pd.Series, results: Results, metric: str) -> str:
    direction = results.metric_directions.get(metric, "min")
    est = row["estimate"]
    numbers = f"{est:+.3g} (95% CI {_ci(row['ci_low'], row['ci_high'])}, Holm p = {_fmt(row['p_holm'])})"
    if row["kind"] == "main":
        reference_larger = est > 0
        verdict = "better" if reference_larger == (direction == "max") else "worse"
        return (f"`{row['term']}`: {row['plus_level']} (reference) vs {row['minus_level']} changes "
                f"{metric} by {numbers}, so {row['plus_level']} is {verdict}")
    return f"interaction `{row['term']}`: {numbers}, so the two toggles do not act independently"


def _opening(ctx: _Context, divergence: pd.DataFrame, missing: pd.DataFrame,
             simplified: pd.DataFrame) -> str:
    results, metric, steps = ctx.results, ctx.metric, ctx.steps
    effects = ctx.primary_effects()
    estimable = effects[(effects["kind"] != "anova") & np.isfinite(effects["estimate"])]
    significant = estimable[_significant(estimable)]
    null_terms = [t for t in estimable["term"] if t not in set(significant["term"])]
    impossible = effects[(effects["kind"] != "anova") & ~np.isfinite(effects["estimate"])]
    total = divergence[divergence["group"] == "all"].iloc[0]
    n_expected = int(total["n_trials"] + total["n_missing"])
    parts = [f"At **{metric}** ({_better(results.metric_directions.get(metric, 'min'))}) with "
             f"**K = {steps}** sampling steps ({len(results.seeds)} seed(s), {total['n_ok']} of "
             f"{n_expected} expected trials finished without diverging)"]
    main = significant[significant["kind"] == "main"]
    if len(main):
        parts.append(f", {len(main)} toggle(s) change quality: "
                     + "; ".join(_effect_sentence(r, results, metric) for _, r in main.iterrows())
                     + ".")
    elif len(estimable):
        parts.append(", no toggle has a main effect distinguishable from zero.")
    else:
        parts.append(", no toggle effect can be estimated.")
    inter = significant[significant["kind"] == "interaction"]
    if len(inter):
        sentences = [_effect_sentence(r, results, metric) for _, r in inter.iterrows()]
        parts.append(" " + "; ".join(sentences)[0].upper() + "; ".join(sentences)[1:] + ".")
    if null_terms:
        parts.append(" Indistinguishable from zero (95% CI covers 0 or Holm p > 0.05): "
                     + ", ".join(f"`{t}`" for t in null_terms) + ".")
    if len(impossible):
        parts.append(" Not estimable (no finished trials in the cells needed): "
                     + ", ".join(f"`{t}`" for t in impossible["term"]) + ".")
    for _, row in effects[effects["kind"] == "anova"].iterrows():
        parts.append(f" `{row['term']}` (more than two levels): ANOVA p = {_fmt(row['p_value'])}, "
                     f"Holm p = {_fmt(row['p_holm'])}.")
    parts += [" " + s for s in (_levels_sentence(ctx), _worsening_sentence(ctx)) if s]
    parts.append(" " + _simplified_sentence(ctx, simplified, divergence))
    parts.append(" " + _balance_sentence(ctx, effects))
    parts.append(" " + _divergence_sentence(divergence, results))
    if len(missing):
        parts.append(f" {len(missing)} expected trial(s) are missing (listed below); the "
                     "analysis uses the trials present.")
    if ctx.single_seed:
        parts.append(" Single seed: no CI over seeds is possible for cell means or for the "
                     "paper-vs-simplified difference; the effect CIs above assume three- and "
                     "four-way interactions are zero, so check them against the half-normal plot.")
    return "".join(parts)


def _levels_sentence(ctx: _Context) -> str:
    """The paper's and the baseline's values at the primary K next to the noise floor: the
    numbers researchers quote, and how far both are from what real data scores."""
    cells = ctx.cells[ctx.cells["metric"] == ctx.metric].set_index(["variant", "steps"])
    values = [f"{_cell_text(cells, variant, ctx.steps)} for the {role} variant `{variant}`"
              for role, variant in _roles(ctx.results) if role != "simplified"]
    if not values:
        return ""
    floor = ctx.primary_floor()
    against = f", against a {FLOOR_LABEL} of {_mean_ci(floor)}" if floor is not None else ""
    return f"At K = {ctx.steps}, {ctx.metric} is {' and '.join(values)}{against}."


def _worsening_sentence(ctx: _Context) -> str:
    """Flag a paper variant that loses quality at many steps, but only when the CI shows it."""
    paper = ctx.results.paper_variant
    trend = (analysis.worsening_after_best_steps(ctx.results, paper, ctx.metric)
             if paper is not None else pd.DataFrame())
    if trend.empty or not trend["worse"].iloc[0]:
        return ""
    row = trend.iloc[0]
    return (f"The paper's variant gets worse with more sampling steps: {ctx.metric} is "
            f"{_fmt(row['max_steps_mean'])} at K = {row['max_steps']} against "
            f"{_fmt(row['best_mean'])} at its best K = {row['best_steps']} (difference "
            f"{row['difference']:+.3g}, 95% CI {_ci(row['ci_low'], row['ci_high'])}, paired "
            "over seeds).")


def _simplified_sentence(ctx: _Context, simplified: pd.DataFrame, divergence: pd.DataFrame) -> str:
    results = ctx.results
    paper, simple = results.paper_variant, results.simplified_variant
    if simplified.empty or not np.isfinite(simplified["difference"].iloc[0]):
        per_variant = divergence[divergence["group"] == "variant"].set_index("level")
        status = "; ".join(
            f"`{v}`: {per_variant.loc[v, 'n_ok']} finished, {per_variant.loc[v, 'n_diverged']} "
            f"diverged of {per_variant.loc[v, 'n_trials']}" if v in per_variant.index
            else f"`{v}`: no trials" for v in (simple, paper))
        return (f"The simplified variant cannot be compared with the paper's at this step count "
                f"({status}).")
    row = simplified.iloc[0]
    difference = f"by {row['difference']:+.3g} (simplified − paper"
    if row["verdict"] == "no CI":
        return (f"The simplified variant `{simple}` differs from the paper's `{paper}` "
                f"{difference}; no CI possible with fewer than two seeds per variant).")
    judgement = ("indistinguishable from the paper's" if row["verdict"] == "indistinguishable"
                 else "better" if row["verdict"] == "variant better" else "worse")
    test = "Dunnett" if row["comparison"] == "dunnett" else "Welch"
    return (f"The simplified variant `{simple}` differs from the paper's `{paper}` {difference}, "
            f"{test} 95% CI {_ci(row['ci_low'], row['ci_high'])}, p = {_fmt(row['p_value'])}): "
            f"the simplified variant is {judgement}.")


def _simplified_comparison(comparisons: pd.DataFrame, simplified: str | None) -> pd.DataFrame:
    """Paper vs simplified from Dunnett when it ran: its error variance is pooled over every cell, so with
    few seeds it is far tighter than Welch's two-sample test (which keeps its own row in the tables)."""
    dunnett = comparisons[(comparisons["comparison"] == "dunnett") & (comparisons["variant"] == simplified)]
    if not dunnett.empty and np.isfinite(dunnett["ci_low"].iloc[0]):
        return dunnett
    return comparisons[comparisons["comparison"].str.startswith("welch")]


def _balance_sentence(ctx: _Context, effects: pd.DataFrame) -> str:
    matched = effects[effects["method"].str.startswith(("matched", "impossible"))]
    if matched.empty:
        return "Every cell of the factorial has finished trials, so all effects come from one OLS fit."
    empty = analysis.empty_cells(ctx.results, ctx.metric, ctx.steps)
    if (effects["method"] == "impossible (no data)").all():
        return "No factorial cell has a finished trial at this step count: no effect can be estimated."
    return ("The full factorial is unbalanced: "
            + (f"cells {', '.join(f'`{v}`' for v in empty)} have no finished trial" if empty
               else "some cells have no finished trial")
            + ", so the OLS would extrapolate. Effects use matched comparisons of cell means instead: "
            + "; ".join(", ".join(f"`{t}`" for t in rows["term"]) + f" from {method}"
                        for method, rows in matched.groupby("method", sort=False)) + ".")


def _divergence_sentence(divergence: pd.DataFrame, results: Results) -> str:
    total = divergence[divergence["group"] == "all"].iloc[0]
    if total["n_diverged"] == 0 and total["n_failed"] == 0:
        return "No trial diverged or failed."
    per_variant = divergence[(divergence["group"] == "variant") & (divergence["n_diverged"] > 0)]
    levels = divergence[~divergence["group"].isin(["all", "variant"])]
    by_level = []
    for factor, rows in levels.groupby("group", sort=False):
        if rows["n_diverged"].nunique() > 1:
            by_level.append(f"`{factor}`: " + ", ".join(
                f"{r['level']} {r['n_diverged']}/{r['n_trials']}" for _, r in rows.iterrows()))
    text = (f"Divergence is a result: {total['n_diverged']} of {total['n_trials']} trials diverged"
            + (f" and {total['n_failed']} failed" if total["n_failed"] else "")
            + (" (" + ", ".join(f"`{r['level']}` {r['n_diverged']}/{r['n_trials']}"
                                for _, r in per_variant.iterrows()) + ")" if len(per_variant) else ""))
    if by_level:
        text += "; by toggle level: " + "; ".join(by_level)
    return text + "."


def _levels_section(ctx: _Context) -> str:
    """Paper, simplified, baseline and noise floor at K = 1, the primary K and k_max."""
    steps = ctx.quoted_steps()
    cells = ctx.cells[ctx.cells["metric"] == ctx.metric].set_index(["variant", "steps"])
    rows = [[f"{role} `{variant}`", *(_cell_text(cells, variant, k) for k in steps)]
            for role, variant in _roles(ctx.results)]
    floor = ctx.primary_floor()
    lead = (f"{ctx.metric} at K = {', '.join(map(str, steps))} "
            f"({_better(ctx.results.metric_directions.get(ctx.metric, 'min'))}; mean over seeds, "
            "95% CI)")
    if floor is not None:
        rows.append([FLOOR_LABEL, *[_mean_ci(floor)] * len(steps)])
        lead += (f"; the noise floor is {ctx.metric} of a second real sample set against the "
                 "reference, the same for every variant and K")
    table = pd.DataFrame(rows, columns=["variant", *(f"K = {k}" for k in steps)])
    return f"{lead}:\n\n{_md_table(table)}"


def _floor_note(ctx: _Context) -> str:
    """The floor next to the cell means, so the table says how far the best cell is from it."""
    floor = ctx.primary_floor()
    return f" The {FLOOR_LABEL} of {ctx.metric} is {_mean_ci(floor)}." if floor is not None else ""


def _cells_table(ctx: _Context) -> str:
    cells = ctx.cells[(ctx.cells["metric"] == ctx.metric) & (ctx.cells["steps"] == ctx.steps)]
    ascending = ctx.results.metric_directions.get(ctx.metric, "min") == "min"
    cells = cells.sort_values("mean", ascending=ascending, na_position="last").head(MAX_TABLE_ROWS)
    table = pd.DataFrame({
        "variant": [f"`{v}`" for v in cells["variant"]], "n_seeds": cells["n_seeds"],
        "n_diverged": cells["n_diverged"], "mean": cells["mean"], "std": cells["std"],
        "95% CI": [_ci(lo, hi) for lo, hi in zip(cells["ci_low"], cells["ci_high"])],
        "CI method": cells["ci_method"],
    })
    return _md_table(table)


def _effects_table(ctx: _Context) -> str:
    effects = ctx.primary_effects()
    table = pd.DataFrame({
        "term": [f"`{t}`" for t in effects["term"]], "estimate": effects["estimate"],
        "95% CI": [_ci(lo, hi) for lo, hi in zip(effects["ci_low"], effects["ci_high"])],
        "p": effects["p_value"], "Holm p": effects["p_holm"], "method": effects["method"],
    })
    return _md_table(table)


def _dunnett_table(comparisons: pd.DataFrame) -> str:
    table = pd.DataFrame({
        "variant": [f"`{v}`" for v in comparisons["variant"]],
        "test": comparisons["comparison"],
        "variant − paper": comparisons["difference"],
        "95% CI": [_ci(lo, hi) for lo, hi in zip(comparisons["ci_low"], comparisons["ci_high"])],
        "p": comparisons["p_value"], "verdict": comparisons["verdict"],
    })
    return _md_table(table)


def _divergence_tables(divergence: pd.DataFrame) -> str:
    show = divergence.assign(level=divergence["level"].map(lambda v: f"`{v}`"))
    columns = ["level", "n_trials", "n_ok", "n_diverged", "n_failed", "n_missing"]
    per_variant = show[show["group"] == "variant"][columns].rename(columns={"level": "variant"})
    per_level = show[~show["group"].isin(["all", "variant"])]
    per_level = per_level[["group", *columns]].rename(columns={"group": "factor"})
    return (f"Per variant:\n\n{_md_table(per_variant)}\n\n"
            f"Per factor level:\n\n{_md_table(per_level)}")


HOW_TO_READ = """\
One row per term (factor or two-way interaction) x `metric` x `steps` (number of sampling steps).
Each two-level factor is coded +1 at its **reference** level (run.json `factors[].reference`; for
the four toggles the paper's level, shown in `plus_level`) and -1 at the other (`minus_level`); an
interaction's code is the product of its factors' codes.

- `estimate` = mean(metric | code = +1) − mean(metric | code = −1). For a main effect: how much the
  metric changes when switching from `minus_level` to the reference level, averaged over all other
  toggles. Whether that is good depends on the metric's direction (run.json `metric_directions`).
- `ci_low`, `ci_high`: 95% CI of the estimate; `p_value`: two-sided test of estimate = 0;
  `p_holm`: Holm-corrected across the terms of one metric x steps (use this one).
- `method`: `ols_full_factorial` when every cell has finished trials (one OLS with all main effects,
  all two-way interactions and a seed block; the estimate is twice the ±1 coefficient);
  `matched_pairs (k of m pairs)` / `matched_quartets (k of m quartets)` when some cells are empty:
  the estimate averages the differences of cell means over the k complete pairs (or quartets) only.
- `kind = anova` rows are factors with more than two levels: only an ANOVA p-value, no estimate.
- `n`: number of trial values used.
"""


def write_report(folder: str | Path, primary_metric: str | None = None,
                 primary_steps: int | None = None) -> Path:
    """Analyse a results folder and write report.md, cells.csv, effects.csv and figures/*.png.

    Returns the path of report.md. Partial results (missing or diverged trials) are analysed as
    they are and listed, never treated as errors.
    """
    results = load(folder)
    if results.metrics.empty:
        return _write_empty_report(results)
    metric, steps, notes = _resolve_primary(results, primary_metric, primary_steps)
    cells = analysis.cell_summary(results)
    effects = analysis.factor_effects(results)
    cells.to_csv(results.folder / "cells.csv", index=False)
    effects.to_csv(results.folder / "effects.csv", index=False)
    ctx = _Context(results, cells, effects, analysis.noise_floors(results), metric, steps, notes)
    for stale in ctx.figure_dir.glob("*.png"):  # from an earlier report with other choices
        stale.unlink()

    comparisons = analysis.paper_vs_others(results, metrics=[metric], steps=[steps])
    dunnett = comparisons[comparisons["comparison"].str.startswith("dunnett")]
    simplified = _simplified_comparison(comparisons, results.simplified_variant)
    divergence = analysis.divergence_table(results)
    missing = analysis.missing_trials(results)

    for draw in (_fig_steps, _fig_forest, _fig_interactions, _fig_curves, _fig_samples,
                 _fig_horizon):
        draw(ctx)
    if ctx.single_seed:
        _fig_half_normal(ctx)

    welch = comparisons[comparisons["comparison"].str.startswith("welch")]
    text = _render(ctx, divergence, missing, simplified, dunnett, welch)
    path = results.folder / "report.md"
    path.write_text(text)
    return path


def _write_empty_report(results: Results) -> Path:
    """Nothing has metric rows yet: say so, with the trial status, instead of failing."""
    divergence = analysis.divergence_table(results)
    missing = analysis.missing_trials(results)
    path = results.folder / "report.md"
    path.write_text("\n\n".join([
        f"# Ablation report: {results.name}",
        "No trial has metric rows yet, so there is nothing to compare. "
        + _divergence_sentence(divergence, results),
        "## Missing trials",
        _md_table(missing.astype(str)) if len(missing) else "None.",
    ]) + "\n")
    return path


def _render(ctx: _Context, divergence, missing, simplified, dunnett, welch) -> str:
    results = ctx.results
    run = results.run
    missing_text = (_md_table(missing.astype(str)) if len(missing)
                    else "None: every expected trial is present.")
    sections = [
        f"# Ablation report: {results.name}",
        _opening(ctx, divergence, missing, simplified),
        _levels_section(ctx),
        *(f"_Note: {n}_" for n in ctx.notes),
        "## Divergence",
        _divergence_sentence(divergence, results) + "\n\n" + _divergence_tables(divergence),
        "## Missing trials",
        missing_text,
        f"## Cell means: {ctx.metric} at K = {ctx.steps}",
        "From `cells.csv` (best first; CI over seeds by bootstrap, BCa where it works)."
        + _floor_note(ctx) + "\n\n" + _cells_table(ctx),
        f"## Factor effects: {ctx.metric} at K = {ctx.steps}",
        "From `effects.csv` (every metric but the noise floors, and every step count, is there)."
        "\n\n" + _effects_table(ctx),
        f"## Paper vs the other variants: {ctx.metric} at K = {ctx.steps}",
        f"Dunnett's test with the paper's variant `{results.paper_variant}` as control (differences"
        " are variant − paper, CIs and p-values adjusted for the many comparisons); the simplified"
        " variant is also compared alone with Welch's t-test.\n\n"
        + _dunnett_table(pd.concat([dunnett, welch])),
        "## Figures",
        "\n\n".join(f"![{caption}]({path})\n\n*{caption}.*" for caption, path in ctx.figures),
        "## How to read effects.csv",
        HOW_TO_READ,
        "## Run",
        "\n".join([
            f"- task: {(run.get('task') or {}).get('name')} ({results.sample_format})",
            f"- factors: " + ", ".join(f"`{f['name']}` {f['levels']} (reference {f.get('reference')})"
                                       for f in results.factors),
            f"- seeds: {results.seeds}; sampling steps: {results.eval_steps}",
            f"- git commit: {run.get('git_commit')}; wall time: {_fmt(run.get('wall_seconds'))} s",
            f"- versions: {run.get('versions')}",
        ]),
    ]
    return "\n\n".join(sections) + "\n"


def main(argv: Sequence[str] | None = None) -> Path:
    """``python -m ablate.report FOLDER [--metric M] [--steps K]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--metric", default=None)
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args(argv)
    path = write_report(args.folder, primary_metric=args.metric, primary_steps=args.steps)
    print(path)
    return path


if __name__ == "__main__":
    main()
