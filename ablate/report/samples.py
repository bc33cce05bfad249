"""The report's sample figures: each variant's samples at K = 1, 4 and k_max next to real data.

Real data is drawn first and every panel is drawn on its scale (points: the real data's box, with the
share of points outside it; images and videos: its grey range), so a blurred or exploded sampler is
seen as such instead of being rescaled to look like the others.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ablate.report.context import Context, highlighted, save, style_of
from ablate.results import OK, Results


def _sample_trials(results: Results) -> dict[str, Path]:
    """Per variant, the sample file of its lowest finished seed."""
    trials = results.trials if len(results.trials) else results.metrics.drop_duplicates("trial_id")
    chosen = {}
    for variant, group in trials[trials["status"] == OK].sort_values("seed").groupby("variant", sort=False):
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
    color = "black" if variant == REAL else style_of(variant, results)["color"]
    ax.text(x, y, variant, ha="center", va="bottom", fontsize=6, color=color)


REAL = "real data"  # the label of the real-data panel, drawn first


def _points_grid(ax: Axes, arrays: dict[str, np.ndarray], ncols: int, results: Results) -> None:
    """Point clouds in a grid of unit boxes on one axes, all on one fixed scale.

    One axes instead of one per variant keeps the figure cheap to draw. The scale is the real data's
    (its 0.5-99.5 percentile box, padded) when the real-data panel is there, else that of all panels,
    never each panel's own: a blurry or collapsed variant looks wider or smaller than the data. Points
    outside the box are not drawn; the share of them is printed under the panel.
    """
    basis = arrays[REAL] if REAL in arrays else np.concatenate(list(arrays.values()))
    low, high = np.nanpercentile(basis, [0.5, 99.5], axis=0)
    centre, span = (low + high) / 2, max(float(np.max(high - low)), 1e-12) * (1.2 if REAL in arrays else 1.0)
    for i, (variant, points) in enumerate(arrays.items()):
        x0, y0 = (i % ncols) * 1.1, -(i // ncols) * 1.3
        scaled = (points[:, :2] - centre) / span * 0.9
        inside = np.all(np.abs(scaled) <= 0.5, axis=1)
        color = "0.2" if variant == REAL else "tab:blue"
        ax.scatter(x0 + scaled[inside, 0], y0 + scaled[inside, 1], s=1.5, lw=0, alpha=0.6, color=color)
        if not inside.all():
            ax.text(x0, y0 - 0.6, f"{100 * (1 - inside.mean()):.0f}% outside", ha="center", va="top", fontsize=5)
        ax.plot(
            x0 + np.array([-0.5, 0.5, 0.5, -0.5, -0.5]),
            y0 + np.array([-0.5, -0.5, 0.5, 0.5, -0.5]),
            color="0.85",
            lw=0.6,
        )
        _label(ax, x0, y0 + 0.53, variant, results)
    nrows = -(-len(arrays) // ncols)
    ax.set_xlim(-0.55, (ncols - 1) * 1.1 + 0.55)
    ax.set_ylim(-(nrows - 1) * 1.3 - 0.7, 0.75)  # room for the "% outside" line under the last row
    ax.set_aspect("equal")


def _picture_grid(ax: Axes, tiles: dict[str, np.ndarray], ncols: int, results: Results) -> None:
    """Image mosaics or frame strips as one canvas with a label band above each tile, on one grey scale:
    the real data's range when its panel is there (so a washed-out variant looks washed out), else the
    1-99 percentiles of all tiles."""
    height = max(t.shape[0] for t in tiles.values())
    width = max(t.shape[1] for t in tiles.values())
    band, gap = max(3, height // 4), max(1, width // 16)
    nrows = -(-len(tiles) // ncols)
    canvas = np.full((nrows * (height + band), ncols * (width + gap)), np.nan)
    for i, (variant, tile) in enumerate(tiles.items()):
        top, left = (i // ncols) * (height + band) + band, (i % ncols) * (width + gap)
        canvas[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
        _label(ax, left + width / 2 - 0.5, top - 1, variant, results)
    low, high = (np.nanmin(tiles[REAL]), np.nanmax(tiles[REAL])) if REAL in tiles else np.nanpercentile(canvas, [1, 99])
    cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")
    ax.imshow(canvas, cmap=cmap, vmin=low, vmax=high, interpolation="nearest")


def fig_samples(ctx: Context) -> None:
    results = ctx.results
    fmt = results.sample_format
    files = _sample_trials(results)
    if fmt not in ("points", "image", "video") or not files:
        ctx.notes.append("No sample files (samples/<trial_id>.npz) found: sample figures skipped.")
        return
    first = highlighted(list(files), results)
    variants = first + [v for v in files if v not in first]
    ncols = 3 if fmt == "video" else 6
    width = ncols * (3.2 if fmt == "video" else 1.6)
    real = _real_samples(files.values())
    for k in sorted({k for k in (1, 4, results.k_max) if k in results.eval_steps}):
        arrays = {} if real is None else {REAL: real}
        for variant in variants:
            with np.load(files[variant]) as npz:
                if f"steps_{k}" in npz:
                    arrays[variant] = npz[f"steps_{k}"]
        if not set(arrays) - {REAL}:
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
        fig.suptitle(f"Samples at K = {k} sampling steps (lowest finished seed per variant)", fontsize=10)
        caption = f"Samples per variant at K = {k}" + (
            ", real data first, every panel on the real data's scale" if real is not None else ""
        )
        save(ctx, fig, f"samples_K{k}.png", caption, tight=False)


def _real_samples(files) -> np.ndarray | None:
    """The real data the task stored next to a trial's samples (the same in every trial), if any."""
    for path in files:
        with np.load(path) as npz:
            if "real" in npz:
                return npz["real"]
    return None
