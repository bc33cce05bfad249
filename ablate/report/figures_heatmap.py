"""The cell means at the primary K as a heatmap of the whole grid (cell_means.png).

Rows are the level combinations of the first factors, columns those of the others, split so that the
grid is a little wider than tall (4 x 4 for the four toggles, 8 x 4 with a fifth factor), reference
levels first so the paper's cell is at the top left. Each cell shows its mean (geometric mean on a
log-scale metric) with its 95 % CI, and how many seeds it rests on when some are missing; the paper and
simplified cells are outlined and named; cells without a value are hatched and say why: never run
(a fractional design), missing trials, or every seed diverged.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ablate.analysis.effects import ordered_levels
from ablate.analysis.tables import factors_in_play
from ablate.report.context import Context, better, display_name, fmt, save
from ablate.report.figures_cells import (
    centre_columns,
    combination_label,
    level_combinations,
    named_cells,
    role_styles,
    rows_at,
)
from ablate.report.layout import plain_log_axis, title_above

MAX_HEATMAP_CELLS = 64  # 6 two-level factors; beyond that the numbers in the cells are unreadable
CELL_SIZE = (1.5, 0.95)  # inches: four lines of 8 pt text, a label of 24 characters at LABEL_SIZE
LABEL_SIZE = 7


def _absent_text(ctx: Context, levels: Mapping[str, object]) -> str:
    """Why a cell has no row: its trials are expected and missing, or the design never runs it."""
    expected = pd.DataFrame(ctx.results.run.get("expected_trials") or [])
    return "missing" if len(rows_at(expected, levels)) else "not run"


def _cell_text(row: pd.Series, scale: str, n_seeds: int) -> str:
    centre, low, high = (float(row[c]) for c in centre_columns(scale))
    if not np.isfinite(centre):
        for status in ("diverged", "failed"):
            if row[f"n_{status}"]:
                return f"{status}\n{int(row[f'n_{status}'])} of {n_seeds} seeds"
        return "no value"
    lines = [fmt(centre)]
    if np.isfinite(low) and np.isfinite(high):
        lines.append(f"[{fmt(low)}, {fmt(high)}]")
    else:
        seeds = int(row["n_seeds"])
        lines.append(f"no CI ({seeds} seed{'' if seeds == 1 else 's'})")
    if np.isfinite(low) and int(row["n_seeds"]) < n_seeds:
        lines.append(f"{int(row['n_seeds'])} of {n_seeds} seeds")
    return "\n".join(lines)


@dataclass
class CellGrid:
    """The heatmap's content: one value, text and (for the paper and simplified cells) outline per cell."""

    row_labels: list[str]
    column_labels: list[str]
    values: np.ndarray
    texts: dict[tuple[int, int], str] = field(default_factory=dict)
    outlines: dict[tuple[int, int], tuple[str, dict]] = field(default_factory=dict)


def cell_grid(ctx: Context, row_factors: list[str], column_factors: list[str]) -> CellGrid:
    """The primary metric's cells at the primary K, rows and columns in level order (reference first)."""
    levels = ordered_levels(ctx.results, row_factors + column_factors)
    row_combos, column_combos = level_combinations(levels, row_factors), level_combinations(levels, column_factors)
    grid = CellGrid(
        [combination_label(row_factors, c, "\n") for c in row_combos],
        [combination_label(column_factors, c, "\n") for c in column_combos],
        np.full((len(row_combos), len(column_combos)), np.nan),
    )
    at_primary, centre, roles = ctx.primary(ctx.cells), centre_columns(ctx.scale)[0], role_styles(ctx)
    for (i, row_combo), (j, column_combo) in itertools.product(enumerate(row_combos), enumerate(column_combos)):
        at_levels = {**dict(zip(row_factors, row_combo)), **dict(zip(column_factors, column_combo))}
        rows = rows_at(at_primary, at_levels)
        if rows.empty:
            grid.texts[(i, j)] = _absent_text(ctx, at_levels)
            continue
        row = rows.iloc[0]
        grid.values[i, j] = float(row[centre])
        grid.texts[(i, j)] = _cell_text(row, ctx.scale, len(ctx.results.seeds))
        if row["variant"] in roles:
            grid.outlines[(i, j)] = roles[row["variant"]]
    return grid


def _colour_scale(values: np.ndarray, scale: str, direction: str) -> tuple[Normalize, Colormap]:
    """Colours on the metric's scale (a log norm for log-scale metrics), brighter = better either way."""
    finite = values[np.isfinite(values)]
    positive = finite[finite > 0]
    if scale == "log" and len(positive):
        norm = LogNorm(positive.min(), max(positive.max(), positive.min() * 1.01))
    else:
        low, high = (finite.min(), finite.max()) if len(finite) else (0.0, 1.0)
        norm = Normalize(low, high if high > low else low + 1e-12)
    return norm, matplotlib.colormaps["viridis_r" if direction == "min" else "viridis"].with_extremes(bad="white")


def fig_cell_means(ctx: Context) -> Figure | None:
    """The primary metric's cell means at the primary K as a heatmap of the whole grid."""
    factors = factors_in_play(ctx.results)
    if not factors:
        return None  # one cell: the tables say all there is
    levels = ordered_levels(ctx.results, factors)
    row_factors, column_factors = split_for_heatmap(levels, factors)
    size = len(level_combinations(levels, factors))
    if size > MAX_HEATMAP_CELLS:
        ctx.notes.append(
            f"{size} cells are too many to read as a heatmap (at most {MAX_HEATMAP_CELLS}): "
            "the heatmap of cell means is skipped; cells.csv has them."
        )
        return None
    grid = cell_grid(ctx, row_factors, column_factors)
    norm, cmap = _colour_scale(grid.values, ctx.scale, ctx.direction)
    fig, ax, colour_axes = _heatmap_layout(grid)
    image = ax.imshow(np.ma.masked_invalid(grid.values), cmap=cmap, norm=norm, aspect="auto")
    for (i, j), text in grid.texts.items():
        if np.isfinite(grid.values[i, j]):
            red, green, blue, _ = cmap(norm(grid.values[i, j]))
            color = "white" if 0.299 * red + 0.587 * green + 0.114 * blue < 0.5 else "black"
        else:
            color = "0.35"
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="0.8", lw=0))
        if (i, j) in grid.outlines:
            name, style = grid.outlines[(i, j)]
            outline = Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False, edgecolor=style["color"], lw=3)
            outline.set_path_effects([patheffects.withStroke(linewidth=6, foreground="white")])  # seen on any colour
            ax.add_patch(outline)
            ax.text(j, i - 0.22, name, ha="center", va="center", fontsize=8, fontweight="bold", color=color)
        ax.text(
            j, i + (0.08 if (i, j) in grid.outlines else 0), text, ha="center", va="center", fontsize=8, color=color
        )
    ax.set_xticks(range(len(grid.column_labels)), grid.column_labels, fontsize=LABEL_SIZE)
    ax.set_yticks(range(len(grid.row_labels)), grid.row_labels, fontsize=LABEL_SIZE)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    colorbar = fig.colorbar(image, cax=colour_axes)
    average = "geometric mean" if ctx.scale == "log" else "mean"
    colorbar.set_label(f"{ctx.metric}, {average} over seeds ({better(ctx.direction)})", fontsize=8)
    colorbar.ax.tick_params(labelsize=8)
    if isinstance(norm, LogNorm):
        plain_log_axis(colorbar.ax.yaxis)
    title_above(
        fig, f"{ctx.metric} per cell at K = {ctx.steps} ({average} and 95% CI over seeds)" + _baseline_text(ctx)
    )
    caption = (
        f"{ctx.metric} in every cell of the grid at K = {ctx.steps} ({average}, 95% CI over seeds"
        f"{named_cells(ctx, 'outlined')}; cells without results hatched)"
    )
    save(ctx, fig, "cell_means.png", caption)
    return fig


def _heatmap_layout(grid: CellGrid) -> tuple[Figure, Axes, Axes]:
    """A figure sized to the grid: cells of CELL_SIZE inches, margins for the level labels (about 0.6 em
    a character, 1.3 em a line) and the two-line title, a colour bar on the right."""
    em = LABEL_SIZE / 72
    left = 0.25 + 0.6 * em * max(len(line) for label in grid.row_labels for line in label.split("\n"))
    top = 0.6 + 1.3 * em * max(label.count("\n") + 1 for label in grid.column_labels)
    nrows, ncols = grid.values.shape
    cells_width, cells_height, bottom = CELL_SIZE[0] * ncols, CELL_SIZE[1] * nrows, 0.15
    width, height = left + cells_width + 1.4, top + cells_height + bottom
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((left / width, bottom / height, cells_width / width, cells_height / height))
    colour_axes = fig.add_axes(
        ((left + cells_width + 0.2) / width, bottom / height, 0.18 / width, cells_height / height)
    )
    return fig, ax, colour_axes


def _baseline_text(ctx: Context) -> str:
    """The flow baseline's level, for comparison with the grid's cells (it has no factor levels)."""
    baseline = ctx.results.baseline_variant
    rows = ctx.primary(ctx.cells)
    rows = rows[rows["variant"] == baseline]
    if baseline is None or rows.empty:
        return ""
    centre, low, high = (float(rows.iloc[0][c]) for c in centre_columns(ctx.scale))
    interval = f" [{fmt(low)}, {fmt(high)}]" if np.isfinite(low) and np.isfinite(high) else ""
    return f"\n{display_name(baseline, ctx.results)} `{baseline}`: {fmt(centre)}{interval}"


def split_for_heatmap(levels: Mapping[str, list], factors: Sequence[str]) -> tuple[list[str], list[str]]:
    """(row factors, column factors): the split whose heatmap is closest to a little wider than tall
    (4 x 4 cells for four two-level factors, 8 x 4 for five, 8 x 6 for four and a three-level one)."""

    def misfit(split: int) -> float:
        rows = len(level_combinations(levels, factors[:split]))
        columns = len(level_combinations(levels, factors[split:]))
        return abs(np.log(columns * CELL_SIZE[0] / (rows * CELL_SIZE[1]) / 1.3))

    split = min(range(len(factors)), key=misfit)
    return list(factors[:split]), list(factors[split:])
