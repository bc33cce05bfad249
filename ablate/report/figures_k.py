"""Contrasts against the number of sampling steps K: each toggle's main effect, and paper minus flow.

The question behind the grid is about few steps, so these figures put K on a log2 axis and draw each
contrast at every evaluated K with its 95 % CI over seeds, on the metric's scale: differences with a
line at 0 on the raw scale, ratios on a log axis with a line at 1 on the log scale. Every number is
read from effects.csv and comparisons.csv, so the figure and the tables cannot disagree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ablate.analysis.effects import MAIN
from ablate.report.context import Context, better, display_name, main_metrics, save, significant
from ablate.report.layout import Margins, legend_below, panel_grid, plain_log_axis, title_above

CONTRAST_COLOR = "0.25"
SIGNIFICANT_COLOR = "tab:blue"  # as in the forest plot
INTERVAL_TEXT = {True: "95% CI over seeds", False: "one seed: no CI"}


def scale_columns(scale: str) -> tuple[str, str, str]:
    """effects.csv's estimate and CI columns on a scale: differences (raw) or ratios (log)."""
    return ("ratio", "ratio_ci_low", "ratio_ci_high") if scale == "log" else ("estimate", "ci_low", "ci_high")


def main_effects_by_steps(ctx: Context) -> pd.DataFrame:
    """The primary metric's main-effect rows of effects.csv at every K, on its scale.

    Columns: term, plus_level, minus_level, steps, centre, low, high, significant (the CI excludes no
    effect and the Holm p-value over that K's terms is at most 0.05, as in the forest plot).
    """
    rows = ctx.effects[(ctx.effects["metric"] == ctx.metric) & (ctx.effects["kind"] == MAIN)]
    centre, low, high = scale_columns(ctx.scale)
    frame = pd.DataFrame(
        {
            "term": rows["term"],
            "plus_level": rows["plus_level"],
            "minus_level": rows["minus_level"],
            "steps": rows["steps"].astype(int),
            "centre": rows[centre].astype(float),
            "low": rows[low].astype(float),
            "high": rows[high].astype(float),
            "significant": significant(rows, ctx.scale).to_numpy(bool),
        }
    )
    order = {term: rank for rank, term in enumerate(pd.unique(frame["term"]))}  # effects.csv's: factors as declared
    frame = frame.assign(order=frame["term"].map(order)).sort_values(["order", "steps"], kind="stable")
    return frame.drop(columns="order").reset_index(drop=True)


def paper_minus_baseline(ctx: Context, metric: str) -> pd.DataFrame:
    """paper − flow baseline (a ratio paper / flow on the log scale) per K, paired by seed.

    comparisons.csv holds each variant against the paper (variant − paper), so the paper's side is
    the same contrast turned round: −difference with its CI mirrored, or 1 / ratio.
    """
    table = ctx.comparisons
    rows = table[(table["metric"] == metric) & (table["variant"] == ctx.results.baseline_variant)]
    rows = rows.sort_values("steps")
    if ctx.scales.get(metric, "raw") == "log":
        centre, low, high = 1 / rows["ratio"], 1 / rows["ratio_ci_high"], 1 / rows["ratio_ci_low"]
    else:
        centre, low, high = -rows["difference"], -rows["ci_high"], -rows["ci_low"]
    return pd.DataFrame(
        {
            "steps": rows["steps"].astype(int).to_numpy(),
            "centre": centre.astype(float).to_numpy(),
            "low": low.astype(float).to_numpy(),
            "high": high.astype(float).to_numpy(),
            "n_pairs": rows["n_pairs"].to_numpy(),
        }
    )


def draw_contrast(
    ax: Axes, rows: pd.DataFrame, scale: str, significant: pd.Series | None = None, gid: str = ""
) -> None:
    """One contrast against K: a line through the estimates, its CI as a band, a line at no effect.

    Markers are blue where ``significant`` says so and hollow elsewhere; without it, all are plain.
    ``gid`` names the estimate line so that a test can find it.
    """
    finite = rows[np.isfinite(rows["centre"])]
    ax.plot(finite["steps"], finite["centre"], color=CONTRAST_COLOR, lw=1.4, zorder=3, gid=gid)
    band = finite[np.isfinite(finite["low"]) & np.isfinite(finite["high"])]
    ax.fill_between(band["steps"], band["low"], band["high"], color=CONTRAST_COLOR, alpha=0.15, lw=0, zorder=2)
    if significant is None:
        ax.plot(finite["steps"], finite["centre"], "o", color=CONTRAST_COLOR, ms=4, zorder=4)
        filled = np.ones(len(finite), bool)
    else:
        filled = significant.loc[finite.index].to_numpy(bool)
        ax.plot(finite["steps"][filled], finite["centre"][filled], "o", color=SIGNIFICANT_COLOR, ms=5, zorder=4)
    ax.plot(finite["steps"][~filled], finite["centre"][~filled], "o", mfc="white", color=CONTRAST_COLOR, ms=5, zorder=4)
    ax.axhline(1.0 if scale == "log" else 0.0, color="black", lw=0.8, zorder=1)
    if scale == "log":
        ax.set_yscale("log")
        plain_log_axis(ax.yaxis)


def steps_axis(ax: Axes, steps: list[int], primary: int | None = None) -> None:
    """K on a log2 axis with a tick at every evaluated K, and a dotted line at the primary K."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(steps, [str(k) for k in steps])
    ax.minorticks_off()
    ax.set_xlim(steps[0] / 1.25, steps[-1] * 1.25)  # markers off the frame
    if primary is not None:
        ax.axvline(primary, color="0.6", lw=0.8, ls=":", zorder=1)
    ax.grid(alpha=0.3)


def worse_side(level: str, scale: str, direction: str) -> str:
    """Which side of no effect means ``level`` is worse, e.g. ``> 0: grid worse`` on a lower-is-better metric."""
    null = "1" if scale == "log" else "0"
    return f"{'>' if direction == 'min' else '<'} {null}: {level} worse"


def fig_effects_vs_steps(ctx: Context) -> Figure | None:
    """Each two-level factor's main effect on the primary metric against K, one panel per factor."""
    frame = main_effects_by_steps(ctx)
    terms = [t for t in pd.unique(frame["term"]) if np.isfinite(frame.loc[frame["term"] == t, "centre"]).any()]
    if not terms:
        ctx.notes.append(
            f"No two-level factor has a main effect on {ctx.metric}: the effect-against-K figure is skipped."
        )
        return None
    ncols = 2 if len(terms) in (2, 4) else min(len(terms), 3)
    nrows = -(-len(terms) // ncols)
    margins = Margins(top=0.95, bottom=0.85, between_columns=0.2, between_rows=0.95)
    fig, axes = panel_grid(nrows, ncols, (3.6, 2.4), margins, sharey=True)
    steps = sorted(pd.unique(frame["steps"]).tolist())
    operator = "/" if ctx.scale == "log" else "−"
    for ax, term in zip(axes.flat, terms):
        rows = frame[frame["term"] == term]
        plus, minus = rows["plus_level"].iloc[0], rows["minus_level"].iloc[0]
        draw_contrast(ax, rows, ctx.scale, rows["significant"], gid=f"effect:{term}")
        steps_axis(ax, steps, ctx.steps)
        ax.set_title(f"{term}: {plus} {operator} {minus}\n({worse_side(plus, ctx.scale, ctx.direction)})", fontsize=9)
    for ax in axes.flat[len(terms) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("sampling steps K")
    kind = "ratio" if ctx.scale == "log" else "effect"
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{kind} on {ctx.metric}")
    with_ci = has_intervals(frame)
    legend_below(fig, _legend_handles(ctx.steps, with_ci), ncol=2)
    title_above(
        fig,
        f"Main effect of each factor on {ctx.metric} ({better(ctx.direction)}) against K:\n"
        f"reference level {operator} other level, {INTERVAL_TEXT[with_ci]}",
    )
    caption = (
        f"Main effect of each factor on {ctx.metric} at every K, as a "
        f"{'ratio on a log axis' if ctx.scale == 'log' else 'difference'} ({INTERVAL_TEXT[with_ci]}; from effects.csv)"
    )
    save(ctx, fig, "effects_vs_steps.png", caption, tight=False)
    return fig


def _legend_handles(primary: int, with_ci: bool) -> list[Line2D]:
    """Markers, band and primary K; without any CI (one seed) a hollow marker is no verdict."""
    hollow = Line2D([], [], marker="o", ls="", mfc="white", color=CONTRAST_COLOR)
    if not with_ci:
        hollow.set_label("estimate (one seed: no CI, no test)")
        return [hollow, _primary_handle(primary)]
    hollow.set_label("not significant")
    return [
        Line2D([], [], marker="o", ls="", color=SIGNIFICANT_COLOR, label="CI excludes no effect, Holm p ≤ 0.05"),
        hollow,
        Line2D([], [], color=CONTRAST_COLOR, lw=6, alpha=0.15, label="95% CI over seeds"),
        _primary_handle(primary),
    ]


def _primary_handle(primary: int) -> Line2D:
    return Line2D([], [], color="0.6", lw=0.8, ls=":", label=f"primary K = {primary}")


def has_intervals(frame: pd.DataFrame) -> bool:
    """Whether any row has a CI: none with one seed, or where the seeds tie."""
    return bool((np.isfinite(frame["low"]) & np.isfinite(frame["high"])).any())


def fig_paper_vs_baseline(ctx: Context) -> Figure | None:
    """The paper's cell minus the flow baseline against K, paired by seed, one panel per metric."""
    results = ctx.results
    paper, baseline = results.paper_variant, results.baseline_variant
    if baseline is None or paper is None:
        missing = "flow baseline" if baseline is None else "paper cell"
        ctx.notes.append(f"No {missing} in this run: the figure of the paper cell against the baseline is skipped.")
        return None
    frames = {metric: paper_minus_baseline(ctx, metric) for metric in main_metrics(results)}
    frames = {metric: rows for metric, rows in frames.items() if np.isfinite(rows["centre"]).any()}
    if not frames:
        ctx.notes.append(
            f"No seed ran both the paper cell and the baseline `{baseline}` to the end: "
            "the paper − baseline figure is skipped."
        )
        return None
    paper_name, baseline_name = display_name(paper, results), display_name(baseline, results)
    ncols = min(len(frames), 3)
    nrows = -(-len(frames) // ncols)
    margins = Margins(left=0.9, top=0.95, bottom=0.85, between_columns=0.95, between_rows=0.85)
    fig, axes = panel_grid(nrows, ncols, (3.6, 2.5), margins)
    for ax, (metric, rows) in zip(axes.flat, frames.items()):
        scale = ctx.scales.get(metric, "raw")
        draw_contrast(ax, rows, scale, gid=f"paper_vs_baseline:{metric}")
        steps_axis(ax, sorted(rows["steps"].tolist()), ctx.steps)
        operator = "/" if scale == "log" else "−"
        ax.set_ylabel(f"{metric}: {paper_name} {operator} {baseline_name}")
        ax.set_xlabel("sampling steps K")
        direction = results.metric_directions.get(metric, "min")
        ax.set_title(f"{metric} ({worse_side(paper_name, scale, direction)})", fontsize=9)
    for ax in axes.flat[len(frames) :]:
        ax.set_visible(False)
    with_ci = any(has_intervals(rows) for rows in frames.values())
    band = Line2D([], [], color=CONTRAST_COLOR, lw=6, alpha=0.15, label="95% CI over seeds (paired)")
    legend_below(fig, [band, _primary_handle(ctx.steps)] if with_ci else [_primary_handle(ctx.steps)], ncol=2)
    title_above(
        fig, f"{paper_name} `{paper}` against {baseline_name} `{baseline}`\npaired by seed, {INTERVAL_TEXT[with_ci]}"
    )
    on_log = [m for m in frames if ctx.scales.get(m, "raw") == "log"]
    ratio = f", a ratio on {', '.join(on_log)}" if on_log else ""
    caption = (
        f"{paper_name} minus {baseline_name} at every K{ratio}, paired by seed "
        f"({INTERVAL_TEXT[with_ci]}; from comparisons.csv)"
    )
    save(ctx, fig, "paper_vs_baseline.png", caption, tight=False)
    return fig
