"""Every cell of the grid against K, each one identifiable, and what the cell figures share.

The overview of quality against K (:func:`ablate.report.figures.plot_quality_vs_steps`) names the
paper, simplified and flow cells and leaves the rest grey. Here the factors in play are split in two:
the first ones make one panel per level combination, the last ones (at most six combinations) one line
per combination in every panel, coloured and marked alike in all panels and named in one legend; the
paper and simplified cells are drawn thicker and named at their line's end, the flow baseline is dashed
in every panel. Levels come in level order, reference first, so the paper's cell is in the first panel.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ablate.analysis.effects import ordered_levels
from ablate.analysis.tables import factors_in_play
from ablate.report.context import (
    BASELINE_STYLE,
    PAPER_STYLE,
    SIMPLIFIED_STYLE,
    Context,
    better,
    display_name,
    main_metrics,
    safe_name,
    save,
)
from ablate.report.figures import draw_references
from ablate.report.figures_k import steps_axis
from ablate.report.layout import Margins, legend_below, panel_grid, plain_log_axis, title_above

MAX_PANELS = 16
MAX_LINES_PER_PANEL = 6  # six colours and markers are told apart at a glance; more are not
CELL_COLORS = ("tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")
CELL_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def level_combinations(levels: Mapping[str, list], factors: Sequence[str]) -> list[tuple]:
    """Every combination of the factors' levels, the first factor varying slowest; one empty one for no factor."""
    return list(itertools.product(*[levels[f] for f in factors]))


def combination_label(factors: Sequence[str], combination: Sequence, separator: str) -> str:
    """``half_step=velocity, tau2_weight=True``: levels named with their factor, since two toggles share
    the level ``velocity``."""
    return separator.join(f"{factor}={level}" for factor, level in zip(factors, combination))


def rows_at(table: pd.DataFrame, levels: Mapping[str, object]) -> pd.DataFrame:
    """Rows of a per-variant table (cells, expected trials) at the given factor levels; compared as
    objects, so that True matches True and never 1."""
    chosen = np.ones(len(table), bool)
    for factor, level in levels.items():
        if factor not in table.columns:
            return table.iloc[0:0]
        chosen &= table[factor].to_numpy(object) == level
    return table[chosen]


def centre_columns(scale: str) -> tuple[str, str, str]:
    """cells.csv's centre and CI columns: geometric means on the log scale, means on the raw scale."""
    return ("gmean", "gmean_ci_low", "gmean_ci_high") if scale == "log" else ("mean", "ci_low", "ci_high")


def role_styles(ctx: Context) -> dict[str, tuple[str, dict]]:
    """The paper's and the simplified cell's display name and style, by variant."""
    results = ctx.results
    named = ((results.paper_variant, PAPER_STYLE), (results.simplified_variant, SIMPLIFIED_STYLE))
    return {variant: (display_name(variant, results), style) for variant, style in named if variant is not None}


def named_cells(ctx: Context, how: str) -> str:
    """``; the paper and simplified cells outlined``: the captions name only the cells the run has."""
    names = [name for name, _ in role_styles(ctx).values()]
    if not names:
        return ""
    return f"; the {' and '.join(names)} cell{'s' if len(names) > 1 else ''} {how}"


def split_for_panels(levels: Mapping[str, list], factors: Sequence[str]) -> tuple[list[str], list[str]]:
    """(panel factors, line factors): the last factors whose level combinations fit in one panel's
    lines (at least one factor), the others one panel per combination."""
    lines = 1
    split = len(factors)
    while split > 0 and (split == len(factors) or lines * len(levels[factors[split - 1]]) <= MAX_LINES_PER_PANEL):
        lines *= len(levels[factors[split - 1]])
        split -= 1
    return list(factors[:split]), list(factors[split:])


def fig_cells_vs_steps(ctx: Context) -> list[Figure]:
    """Each main metric against K for every cell: small multiples, every line named by its levels."""
    results = ctx.results
    factors = factors_in_play(results)
    if not factors:
        return []
    levels = ordered_levels(results, factors)
    panel_factors, line_factors = split_for_panels(levels, factors)
    panel_combos, line_combos = level_combinations(levels, panel_factors), level_combinations(levels, line_factors)
    if len(panel_combos) > MAX_PANELS:
        ctx.notes.append(
            f"{len(panel_combos)} panels are too many for the figure of every cell against K: it is skipped."
        )
        return []
    figures = []
    for metric in main_metrics(results):
        data = ctx.cells[ctx.cells["metric"] == metric].sort_values("steps")
        if not np.isfinite(data["mean"].astype(float)).any():
            continue
        figures.append(_cells_vs_steps(ctx, metric, data, (panel_factors, panel_combos), (line_factors, line_combos)))
    return figures


def _cells_vs_steps(ctx: Context, metric: str, data: pd.DataFrame, panels: tuple, lines: tuple) -> Figure:
    """One metric's figure: ``panels`` and ``lines`` are (factors, their level combinations)."""
    (panel_factors, panel_combos), (line_factors, line_combos) = panels, lines
    results, scale = ctx.results, ctx.scales.get(metric, "raw")
    centre, low, high = centre_columns(scale)
    roles = role_styles(ctx)
    baseline = data[data["variant"] == results.baseline_variant] if results.baseline_variant else data.iloc[0:0]
    ncols = len(panel_combos) if len(panel_combos) <= 3 else 2 if len(panel_combos) == 4 else 4
    nrows = -(-len(panel_combos) // ncols)
    legend_rows = -(-(len(line_combos) + 2) // 3)  # the lines, the baseline and the noise floor, three a row
    title_separator = ", " if len(panel_factors) <= 2 else "\n"  # a panel's title fits its width
    title_height = 0.15 * (1 if len(panel_factors) <= 2 else len(panel_factors))
    margins = Margins(
        left=0.85,
        top=0.5 + title_height,
        bottom=0.55 + 0.18 * legend_rows,
        between_columns=0.2,
        between_rows=0.25 + title_height,
    )
    fig, axes = panel_grid(nrows, ncols, (3.4, 2.5), margins, sharex=True, sharey=True)
    steps = sorted(pd.unique(data["steps"]).tolist())
    drawn: list[float] = []
    for ax, panel_combo in zip(axes.flat, panel_combos):
        at_panel = dict(zip(panel_factors, panel_combo))
        for index, line_combo in enumerate(line_combos):
            rows = rows_at(data, {**at_panel, **dict(zip(line_factors, line_combo))})
            if rows.empty:
                continue
            color, variant = CELL_COLORS[index % len(CELL_COLORS)], rows["variant"].iloc[0]
            ax.plot(
                rows["steps"],
                rows[centre],
                color=color,
                marker=CELL_MARKERS[index % len(CELL_MARKERS)],
                ms=4,
                lw=2.8 if variant in roles else 1.3,
                label=combination_label(line_factors, line_combo, ", "),
                gid=f"cell:{variant}",
            )
            band = rows[np.isfinite(rows[low].astype(float))]
            ax.fill_between(band["steps"], band[low], band[high], color=color, alpha=0.12, lw=0)
            if variant in roles:
                _label_line_end(ax, rows, centre, roles[variant][0], color)
        if len(baseline):
            ax.plot(baseline["steps"], baseline[centre], **{**BASELINE_STYLE, "lw": 1.4}, label=_baseline_label(ctx))
        drawn += draw_references(ax, results, metric)
        steps_axis(ax, steps)
        ax.set_xlim(steps[0] / 1.2, steps[-1] * (1.8 if roles else 1.2))  # room for the names at the line ends
        ax.set_title(combination_label(panel_factors, panel_combo, title_separator), fontsize=8)
    for ax in axes.flat[len(panel_combos) :]:
        ax.set_visible(False)
    _limit_levels(axes[0, 0], pd.concat([data[centre], pd.Series(drawn, dtype=float)]), scale)
    average = "geometric mean" if scale == "log" else "mean"
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{metric}, {average} ({better(results.metric_directions.get(metric, 'min'))})", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("sampling steps K")
    legend_below(fig, _legend_handles(axes, line_factors, line_combos), ncol=3)
    title_above(fig, f"{metric} against K in every cell ({average} over seeds, 95% CI)")
    by = f"panels by {', '.join(panel_factors)}, " if panel_factors else ""
    baseline_text = f"; the {_baseline_label(ctx)} dashed in each panel" if len(baseline) else ""
    caption = (
        f"{metric} against K in every cell ({by}lines by {', '.join(line_factors)}; {average}s with 95% CIs "
        f"over seeds{named_cells(ctx, 'named at the end of their line')}{baseline_text})"
    )
    save(ctx, fig, f"steps_cells_{safe_name(metric)}.png", caption, tight=False)
    return fig


def _baseline_label(ctx: Context) -> str:
    return display_name(ctx.results.baseline_variant, ctx.results)


def _label_line_end(ax: Axes, rows: pd.DataFrame, centre: str, name: str, color: str) -> None:
    """Name a cell (paper, simplified) at its line's last finite point, where the name cannot be lost."""
    finite = rows[np.isfinite(rows[centre].astype(float))]
    if len(finite):
        last = finite.iloc[-1]
        ax.annotate(
            name,
            (last["steps"], last[centre]),
            xytext=(5, 0),
            textcoords="offset points",
            fontsize=7,
            fontweight="bold",
            color=color,
            va="center",
        )


def _limit_levels(ax: Axes, levels: pd.Series, scale: str) -> None:
    """Shared y-range from the means and reference lines: wide CI bands (t(1) = 12.7 at two seeds) run
    off the axes instead of flattening every line."""
    values = levels.to_numpy(float)
    values = values[np.isfinite(values)]
    if scale == "log":
        ax.set_yscale("log")
        plain_log_axis(ax.yaxis)
        values = values[values > 0]
        if len(values):
            ax.set_ylim(values.min() / 1.2, values.max() * 1.2)
    elif len(values):
        margin = 0.08 * max(values.max() - values.min(), 1e-12)
        ax.set_ylim(values.min() - margin, values.max() + margin)


def _legend_handles(axes: np.ndarray, line_factors: Sequence[str], line_combos: list[tuple]) -> list:
    """One entry per line combination (in level order, even where a panel lacks it), then the baseline
    and reference lines."""
    handles = [
        Line2D(
            [],
            [],
            color=CELL_COLORS[i % len(CELL_COLORS)],
            marker=CELL_MARKERS[i % len(CELL_MARKERS)],
            ms=4,
            lw=1.3,
            label=combination_label(line_factors, combo, ", "),
        )
        for i, combo in enumerate(line_combos)
    ]
    seen = {h.get_label() for h in handles}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in seen:
                seen.add(label)
                handles.append(handle)
    return handles
