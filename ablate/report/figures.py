"""The report's figures, drawn on ``matplotlib.figure.Figure`` objects.

Figures render with Agg and never touch pyplot's global state, so importing this module from a
notebook keeps the notebook's backend. Metrics read on the log scale are drawn on a log axis with
geometric means, the level their effects are about.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ablate import analysis
from ablate.analysis.fraction import is_fraction
from ablate.analysis.inference import t_interval
from ablate.report.context import (
    FLOOR_STYLE,
    Context,
    better,
    line_styles,
    main_metrics,
    safe_name,
    save,
    significant,
)
from ablate.report.layout import Margins, legend_below, panel_grid, plain_log_axis, title_above
from ablate.results import OK, Results


def plot_quality_vs_steps(
    ax: Axes, cells: pd.DataFrame, results: Results, metric: str, scale: str = "raw", color_by: str | None = None
) -> None:
    """Mean over seeds vs sampling steps (log2 axis) per variant, with 95 % Student-t CI bands.

    The paper, simplified and baseline variants are highlighted; the rest are thin grey lines. A
    dashed grey line marks the metric's noise floor where the task reports one. With ``scale="log"``
    the geometric mean and its interval are drawn on a log axis. The y-range follows the means, so a
    wide band (2 seeds: t(1) = 12.7) runs off the axes instead of flattening every line. Public so
    the notebook draws the same figure.
    """
    data = cells[cells["metric"] == metric].sort_values("steps")
    centre, low, high = ("gmean", "gmean_ci_low", "gmean_ci_high") if scale == "log" else ("mean", "ci_low", "ci_high")
    for variant, style, is_highlighted in line_styles(list(pd.unique(data["variant"])), results, color_by):
        rows = data[data["variant"] == variant]
        ax.plot(rows["steps"], rows[centre], marker="o", ms=3, **style)
        band = rows[np.isfinite(rows[low].astype(float))]
        if len(band):
            ax.fill_between(
                band["steps"], band[low], band[high], color=style["color"], alpha=0.15 if is_highlighted else 0.05, lw=0
            )
    drawn = draw_references(ax, results, metric)
    ax.set_xscale("log", base=2)
    steps = sorted(pd.unique(data["steps"]))
    ax.set_xticks(steps, [str(s) for s in steps])
    ax.set_xlabel("sampling steps K")
    average = "geometric mean" if scale == "log" else "mean"
    ax.set_ylabel(f"{metric}, {average} over seeds ({better(results.metric_directions.get(metric, 'min'))})")
    levels = data[centre].to_numpy(float)
    levels = np.append(levels[np.isfinite(levels)], drawn)
    if scale == "log":
        ax.set_yscale("log")
        plain_log_axis(ax.yaxis)
        if len(levels):
            ax.set_ylim(levels.min() / 1.3, levels.max() * 1.3)
    elif len(levels):
        margin = 0.08 * max(levels.max() - levels.min(), 1e-12)
        ax.set_ylim(levels.min() - margin, levels.max() + margin)
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)


def draw_references(ax: Axes, results: Results, metric: str) -> list[float]:
    """Horizontal lines at the floor (real data scores there, so no variant can be expected to beat
    it, and a gap to it is the room left) and at the task's references (blurred data, a uniform box:
    what a wrong answer scores). Returns the levels drawn."""
    drawn = []
    references = analysis.reference_values(results)
    for (_, row), style in zip(references[references["metric"] == metric].iterrows(), (":", "-.")):
        if np.isfinite(row["value"]):
            ax.axhline(row["value"], color="0.65", lw=1.0, ls=style, zorder=2, label=row["reference"])
            drawn.append(float(row["value"]))
    floors = analysis.noise_floors(results).set_index("metric")["mean"]
    if metric in floors.index and np.isfinite(floors[metric]):
        ax.axhline(floors[metric], **FLOOR_STYLE)
        drawn.append(float(floors[metric]))
    return drawn


def fig_steps(ctx: Context) -> None:
    for metric in main_metrics(ctx.results):
        if not np.isfinite(ctx.cells.loc[ctx.cells["metric"] == metric, "mean"]).any():
            continue
        fig = Figure(figsize=(7.5, 4))
        ax = fig.add_subplot()
        scale = ctx.scales.get(metric, "raw")
        plot_quality_vs_steps(ax, ctx.cells, ctx.results, metric, scale, ctx.color_by)
        average = "geometric mean" if scale == "log" else "mean"
        ax.set_title(f"{metric} vs sampling steps ({average} over seeds, 95% CI)", fontsize=10)
        save(ctx, fig, f"steps_{safe_name(metric)}.png", f"{metric} vs number of sampling steps")


def fig_forest(ctx: Context) -> Figure | None:
    """Every term of the full factorial per metric at the primary K, on each metric's scale."""
    effects = ctx.effects[(ctx.effects["steps"] == ctx.steps) & ~ctx.effects["kind"].isin(["anova", "simple"])]
    estimated = set(effects.loc[np.isfinite(effects["estimate"].astype(float)), "metric"])
    metrics = [m for m in main_metrics(ctx.results) if m in estimated]
    if not metrics:
        return None
    ncols = 2 if len(metrics) == 4 else min(3, len(metrics))
    nrows = -(-len(metrics) // ncols)
    terms = list(pd.unique(effects["term"]))
    label_width = 0.3 + 7 / 72 * 0.6 * max(len(t) for t in terms)  # the terms at 7 pt, about 0.6 em a character
    margins = Margins(left=label_width, top=0.6, bottom=0.85, between_columns=0.2, between_rows=0.8)
    fig, axes = panel_grid(nrows, ncols, (3.8, 0.26 * len(terms)), margins, sharey=True)
    y = np.arange(len(terms))[::-1]
    for ax, metric in zip(axes.flat, metrics):
        scale = ctx.scales.get(metric, "raw")
        rows = effects[effects["metric"] == metric].set_index("term").reindex(terms)
        is_significant = significant(rows, scale).to_numpy()
        prefix, null = ("ratio_", 1.0) if scale == "log" else ("", 0.0)
        est = rows["ratio" if scale == "log" else "estimate"].to_numpy(float)
        low, high = rows[f"{prefix}ci_low"].to_numpy(float), rows[f"{prefix}ci_high"].to_numpy(float)
        err = np.abs(np.vstack([est - low, high - est]))
        ax.errorbar(est, y, xerr=np.nan_to_num(err), fmt="none", ecolor="0.3", lw=1)
        ax.plot(
            est[is_significant], y[is_significant], "o", color="tab:blue", label="CI excludes no effect, Holm p ≤ 0.05"
        )
        ax.plot(est[~is_significant], y[~is_significant], "o", mfc="white", color="0.3", label="not significant")
        ax.axvline(null, color="black", lw=0.8)
        if scale == "log":
            ax.set_xscale("log")
            plain_log_axis(ax.xaxis)
            ax.set_xlabel("ratio: reference / other level")
        else:
            ax.set_xlabel("effect: reference − other level")
        ax.set_title(f"{metric} ({better(ctx.results.metric_directions.get(metric, 'min'))})", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes.flat[len(metrics) :]:
        ax.set_visible(False)
    axes[0, 0].set_yticks(y, terms)
    for ax in axes[:, 0]:
        ax.tick_params(axis="y", labelsize=7)
    # one legend for every panel, under them all: under the first panel it ran into the next row's title
    legend_below(fig, axes[0, 0].get_legend_handles_labels()[0], ncol=2)
    title_above(fig, f"Factor effects of every order at K = {ctx.steps} (95% CI over seeds)")
    save(ctx, fig, "effects_forest.png", f"Effects of every order with 95% CIs at K = {ctx.steps}")
    return fig


def fig_interactions(ctx: Context, how_many: int = 3) -> None:
    """The largest two-way interactions as interaction plots, with 95 % CIs over seeds.

    On a fraction a panel's non-parallelism is its alias class's (with D = ABC, A:B's lines tilt as much
    for C:D as for A:B), so each panel is drawn from the fraction's runs only, as its effect is (the
    corner added outside them would tilt the one pair of means it falls in), and is titled with the
    two-way interactions it cannot be told from: a reader sees which terms to separate with more runs
    instead of a plain interaction that it may not be."""
    effects = ctx.primary_effects()
    column = "ratio" if ctx.scale == "log" else "estimate"
    top = effects[(effects["kind"] == "interaction") & np.isfinite(effects[column].astype(float))]
    size = np.abs(np.log(top[column].astype(float))) if ctx.scale == "log" else top[column].abs()
    top = top.reindex(size.sort_values(ascending=False).index).head(how_many)
    if top.empty:
        return
    results = ctx.results
    fraction = is_fraction(results.design)
    data = analysis.ok_values(results)
    data = data[(data["metric"] == ctx.metric) & (data["steps"] == ctx.steps)]
    data = data[~data["variant"].isin((results.run.get("design") or {}).get("extra_cells") or [])]
    refs, levels = results.reference_levels, results.factor_levels
    fig = Figure(figsize=(3.6 * len(top), 3.4))
    axes = fig.subplots(1, len(top), squeeze=False)[0]
    for ax, (_, effect) in zip(axes, top.iterrows()):
        term = effect["term"]
        a, b = term.split(":")
        a_levels = [refs[a]] + [lv for lv in levels[a] if lv != refs[a]]
        for offset, b_level in zip((-0.04, 0.04), [refs[b]] + [lv for lv in levels[b] if lv != refs[b]]):
            centres, errors = [], []
            for a_level in a_levels:
                rows = data[(data[a].to_numpy(object) == a_level) & (data[b].to_numpy(object) == b_level)]
                values = rows["value"].astype(float)
                per_seed = (np.log(values) if ctx.scale == "log" else values).groupby(rows["seed"]).mean()
                interval = t_interval(per_seed.to_numpy())
                transform = np.exp if ctx.scale == "log" else (lambda v: v)
                centres.append(transform(interval.estimate))
                errors.append(
                    [
                        transform(interval.estimate) - transform(interval.low),
                        transform(interval.high) - transform(interval.estimate),
                    ]
                )
            errors = np.nan_to_num(np.array(errors).T)
            ax.errorbar(
                np.arange(len(a_levels)) + offset, centres, yerr=errors, marker="o", capsize=3, label=f"{b} = {b_level}"
            )
        if ctx.scale == "log":
            ax.set_yscale("log")
            plain_log_axis(ax.yaxis)
        ax.set_xticks(range(len(a_levels)), [str(lv) for lv in a_levels])
        ax.set_xlim(-0.4, len(a_levels) - 0.6)
        ax.set_xlabel(a)
        ax.set_ylabel(f"{ctx.metric} at K = {ctx.steps}")
        if fraction:
            # a main effect in the class would stand for it (the lowest order does): only two-way aliases remain
            two_way = [alias for alias in str(effect["aliases"]).split(" = ") if alias.count(":") == 1]
            aliased = f"aliased with {' and '.join(two_way)}" if two_way else "clear of other two-way terms"
            ax.set_title(f"{term}\n{aliased}", fontsize=9)
        else:
            ax.set_title(term, fontsize=9)
        above_title = 1.06 + (0.07 if fraction else 0.0)  # the legend clears a second title line
        ax.legend(fontsize=7, frameon=False, loc="lower center", bbox_to_anchor=(0.5, above_title), ncol=2)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    average = "geometric means" if ctx.scale == "log" else "means"
    caption = (
        f"Largest two-way interactions for {ctx.metric} at K = {ctx.steps} ({average} over the "
        "other factors, 95% CI over seeds; parallel lines = no interaction)"
    )
    if fraction:
        caption += (
            f"; on this resolution {results.design.resolution_label} fraction the means are over its runs only "
            "and each panel's tilt is its alias class's: its title names the two-way interactions it cannot be "
            "told from"
        )
    save(ctx, fig, "interactions.png", caption, tight=False)


def fig_curves(ctx: Context) -> None:
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
        for variant, style, _ in line_styles(list(mean.index.unique("variant")), ctx.results, ctx.color_by):
            ax.plot(mean[variant].index, mean[variant].to_numpy(), **style)
        if (mean > 0).all() and mean.max() > 3 * mean.min():  # losses spanning a range
            ax.set_yscale("log")
            plain_log_axis(ax.yaxis)
        ax.set_xlabel("training step")
        ax.set_ylabel(quantity)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(quantities) :]:
        ax.set_visible(False)
    fig.suptitle("Training curves (mean over finished seeds)", fontsize=10)
    fig.tight_layout()
    _legend_outside(fig, axes.flat[0])
    save(ctx, fig, "training_curves.png", "Training curves per variant (mean over seeds)")


def _legend_outside(fig: Figure, ax: Axes) -> None:
    """One legend for the whole figure, to the right of every axes, never over the data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))


def fig_half_normal(ctx: Context) -> Figure | None:
    """|effect| against half-normal quantiles (single seed): on a log-scale metric the effects are log
    ratios, the scale they are read on."""
    effects = ctx.primary_effects()
    effects = effects[effects["kind"] != "anova"]
    if ctx.scale == "log":
        effects = effects.assign(estimate=np.log(effects["ratio"].astype(float)))
    scores = analysis.half_normal_scores(effects)
    if scores.empty:
        return None
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    ax.plot(scores["quantile"], scores["abs_estimate"], "o", color="tab:blue")
    # reference line through the origin and the median point: pure noise would follow it
    slope = scores["abs_estimate"].median() / scores["quantile"].median()
    q = np.array([0, scores["quantile"].max()])
    ax.plot(q, slope * q, "--", color="0.5", lw=1, label="line through the median effect")
    ax.set_xlim(0, scores["quantile"].max() * 1.05)
    ax.set_ylim(0, max(scores["abs_estimate"].max(), 1e-12) * 1.08)
    largest = scores.tail(5)  # the labels name the largest effects that stand above the line
    _label_points(ax, largest[largest["abs_estimate"] > 2 * slope * largest["quantile"]])
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    ax.set_xlabel("half-normal quantile")
    size = "|log ratio|" if ctx.scale == "log" else "|effect|"
    ax.set_ylabel(f"{size} on {ctx.metric} at K = {ctx.steps}")
    ax.set_title("Half-normal plot of effects (single seed)", fontsize=10)
    ax.grid(alpha=0.3)
    save(
        ctx,
        fig,
        "half_normal.png",
        "Half-normal plot: effects far above the line of the small ones stand out from noise",
    )
    return fig


def _label_points(ax: Axes, points: pd.DataFrame, gap: float = 0.06) -> None:
    """Name each point just left of it, at its height, largest first; a label that would overlap the one
    above moves down and a thin line ties it to its point. Needs the axes' limits set."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    lowest = 1.0
    for _, row in points.iloc[::-1].iterrows():
        x, y = (row["quantile"] - x0) / (x1 - x0), (row["abs_estimate"] - y0) / (y1 - y0)
        lowest = min(y, lowest - gap)
        ax.annotate(
            row["term"],
            (row["quantile"], row["abs_estimate"]),
            xytext=(x - 0.03, lowest),
            textcoords="axes fraction",
            fontsize=7,
            ha="right",
            va="center",
            arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6, "shrinkA": 1, "shrinkB": 4},
        )


def fig_horizon(ctx: Context) -> None:
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
            for variant, style, _ in line_styles(list(pd.unique(at_k["variant"])), results, ctx.color_by):
                rows = at_k[at_k["variant"] == variant]
                ax.plot(rows["t"], rows["mean"], marker=".", **style)
            ax.set_title(f"K = {k}", fontsize=9)
            ax.set_xlabel("horizon step t")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel(f"{base} per horizon step")
        fig.suptitle(f"Growth of {base} over the horizon (mean over seeds)", fontsize=10)
        fig.tight_layout()
        _legend_outside(fig, axes[0])
        save(ctx, fig, f"horizon_{safe_name(base)}.png", f"{base} over the prediction horizon")
