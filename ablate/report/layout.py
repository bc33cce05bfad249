"""Layout and axes helpers shared by the report's figures.

Margins are fixed in inches and figures are sized to hold their panels, so that no layout engine has to
draw a figure to place it (constrained layout costs about a second per figure, and a report draws a
dozen); legends sit in a margin, never over the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure


@dataclass(frozen=True)
class Margins:
    """Space around and between panels, in inches. Fixed margins cost nothing, where a layout engine
    draws the figure to find them (constrained layout: about a second per figure)."""

    left: float = 0.8
    right: float = 0.2
    top: float = 0.75
    bottom: float = 0.55
    between_columns: float = 0.25
    between_rows: float = 0.75


def panel_grid(
    nrows: int, ncols: int, panel: tuple[float, float], margins: Margins = Margins(), **subplots
) -> tuple[Figure, np.ndarray]:
    """A figure of ``nrows`` x ``ncols`` panels of ``panel`` (width, height) inches, sized to fit them
    and the margins; ``subplots`` go to ``Figure.subplots`` (sharey=True, ...)."""
    width = margins.left + ncols * panel[0] + (ncols - 1) * margins.between_columns + margins.right
    height = margins.top + nrows * panel[1] + (nrows - 1) * margins.between_rows + margins.bottom
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(
        left=margins.left / width,
        right=1 - margins.right / width,
        top=1 - margins.top / height,
        bottom=margins.bottom / height,
        wspace=margins.between_columns / panel[0],
        hspace=margins.between_rows / panel[1],
    )
    return fig, fig.subplots(nrows, ncols, squeeze=False, **subplots)


def legend_below(fig: Figure, handles: list, ncol: int) -> None:
    """One legend for every panel at the foot of the figure, never over the data (leave it a bottom
    margin of about 0.2 inch per row of entries)."""
    fig.legend(handles=handles, fontsize=7, frameon=False, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=ncol)


def title_above(fig: Figure, text: str) -> None:
    """The figure's title in its top margin."""
    fig.suptitle(text, fontsize=10, y=1 - 0.08 / fig.get_figheight(), va="top")


class PlainLogLocator(ticker.Locator):
    """Log-axis ticks at 1, 2, 5 x 10^k over more than a factor of 10; within one, where those leave
    two ticks or fewer (ratios of 0.9 to 1.4 are common), evenly spaced plain ones such as 0.9, 1, 1.1."""

    def __init__(self) -> None:
        self.wide = ticker.LogLocator(subs=(1.0, 2.0, 5.0))
        self.narrow = ticker.MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10])

    def set_axis(self, axis) -> None:
        super().set_axis(axis)
        self.wide.set_axis(axis)
        self.narrow.set_axis(axis)

    def __call__(self) -> np.ndarray:
        return self.tick_values(*self.axis.get_view_interval())

    def tick_values(self, vmin: float, vmax: float) -> np.ndarray:
        low, high = sorted((vmin, vmax))
        if low > 0 and high / low < 10:
            ticks = self.narrow.tick_values(low, high)
            return ticks[ticks > 0]
        return self.wide.tick_values(vmin, vmax)


def plain_log_axis(axis) -> None:
    """Log-scale ticks written as plain numbers (0.2, 1, 5), without minor labels: mathtext labels
    overlap on short ranges and cost a second of parsing per figure."""
    axis.set_major_locator(PlainLogLocator())
    axis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())
