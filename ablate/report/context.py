"""What every part of the report shares: the analysed tables, the primary metric and K, formatting.

The report reads only the results tables (through :mod:`ablate.results` and :mod:`ablate.analysis`).
Each metric is read on one scale (``raw``: differences; ``log``: ratios), chosen by
:func:`ablate.analysis.metric_scales` and stated in the report.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ablate import analysis
from ablate.results import Results, atomic_write, default_primary_steps

DPI = 150
FORMATS = ("png", "pdf", "svg")
ALPHA = 0.05
PAPER_STYLE = {"color": "tab:blue", "lw": 2.2, "zorder": 5}
SIMPLIFIED_STYLE = {"color": "tab:red", "lw": 2.2, "zorder": 4}
BASELINE_STYLE = {"color": "black", "lw": 1.8, "ls": "--", "zorder": 3}
OTHER_STYLE = {"color": "0.6", "lw": 0.8, "alpha": 0.7, "zorder": 1}
FLOOR_LABEL = "noise floor (real vs real)"
FLOOR_STYLE = {"color": "0.5", "lw": 1.2, "ls": "--", "zorder": 2, "label": FLOOR_LABEL}
MAX_TABLE_ROWS = 20


@dataclass
class Context:
    """What every section and figure needs; built once per report."""

    results: Results
    cells: pd.DataFrame
    effects: pd.DataFrame
    floors: pd.DataFrame
    metric: str
    steps: int
    notes: list[str]
    scales: dict[str, str]
    strata: pd.DataFrame
    power: pd.DataFrame
    comparisons: pd.DataFrame
    formats: tuple[str, ...] = ("png",)  # every figure is written in each (png, pdf, svg)
    color_by: str | None = None  # colour the non-highlighted variants by this factor's level
    figures: list[tuple[str, str]] = field(default_factory=list)
    family: pd.DataFrame = field(default_factory=pd.DataFrame)  # the opening's tests (family.csv)

    @property
    def scale(self) -> str:
        """The primary metric's scale: ``raw`` (differences) or ``log`` (ratios)."""
        return self.scales.get(self.metric, "raw")

    @property
    def scale_overridden(self) -> bool:
        return self.metric in self.results.scale_overrides

    @property
    def direction(self) -> str:
        return self.results.metric_directions.get(self.metric, "min")

    @property
    def single_seed(self) -> bool:
        return len(self.results.seeds) <= 1

    @property
    def figure_dir(self) -> Path:
        return self.results.folder / "figures"

    def primary_effects(self) -> pd.DataFrame:
        e = self.effects
        return e[(e["metric"] == self.metric) & (e["steps"] == self.steps)]

    def primary(self, table: pd.DataFrame) -> pd.DataFrame:
        """Rows of a per metric x K table at the primary metric and K."""
        return table[(table["metric"] == self.metric) & (table["steps"] == self.steps)]

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


def fmt(x: object) -> str:
    """Three significant digits; p-values and tiny numbers in scientific notation."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    if isinstance(x, (int, np.integer)) or isinstance(x, str):
        return str(x)
    return f"{x:.3g}"


def ci_text(low: float, high: float) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return "no CI"
    return f"[{fmt(low)}, {fmt(high)}]"


def mean_ci(row: pd.Series) -> str:
    """``mean`` with its CI from a cells or floors row; a zero-width CI (a constant such as the
    noise floor) adds nothing."""
    mean, low, high = (float(row[c]) for c in ("mean", "ci_low", "ci_high"))
    if not np.isfinite(mean):
        return "n/a"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{fmt(mean)} (no CI)"
    if np.isclose(low, high, rtol=1e-9, atol=0):
        return fmt(mean)
    return f"{fmt(mean)} {ci_text(low, high)}"


def md_table(frame: pd.DataFrame) -> str:
    """GitHub markdown table of already formatted values (avoids a tabulate dependency)."""
    if frame.empty:
        return "_(none)_"
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = [
        "| " + " | ".join(fmt(v) if not isinstance(v, str) else v for v in row) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([header, rule, *body])


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def better(direction: str) -> str:
    return "lower is better" if direction == "min" else "higher is better"


ROLE_NAMES = {"paper": "paper", "simplified": "simplified", "baseline": "flow baseline"}
LEVEL_COLORS = ("tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def display_name(variant: str, results: Results) -> str:
    """The name a figure shows: run.json `labels` (the experiment's `labels:` map, by cell label or by
    role) first, else "paper", "simplified", "flow baseline" for the three named cells, else the label."""
    labels = results.run.get("labels") or {}
    if variant in labels:
        return str(labels[variant])
    for role, named in (
        ("paper", results.paper_variant),
        ("simplified", results.simplified_variant),
        ("baseline", results.baseline_variant),
    ):
        if variant == named:
            return str(labels.get(role, ROLE_NAMES[role]))
    return variant


def style_of(variant: str, results: Results) -> dict:
    """Line style: the paper, simplified and baseline variants stand out, the rest are grey."""
    if variant == results.paper_variant:
        return {**PAPER_STYLE, "label": display_name(variant, results)}
    if variant == results.simplified_variant:
        return {**SIMPLIFIED_STYLE, "label": display_name(variant, results)}
    if variant == results.baseline_variant:
        return {**BASELINE_STYLE, "label": display_name(variant, results)}
    return dict(OTHER_STYLE)


def highlighted(variants: Sequence[str], results: Results) -> list[str]:
    """Paper, simplified and baseline variants, in that order, where present."""
    wanted = [results.paper_variant, results.simplified_variant, results.baseline_variant]
    return [v for v in wanted if v in variants]


def line_styles(variants: Sequence[str], results: Results, color_by: str | None = None) -> list[tuple[str, dict, bool]]:
    """(variant, line style, highlighted) with the other variants first, so highlighted lines are on
    top. The others are grey with one legend entry ("other variants"), or, with ``color_by``, coloured
    by their level of that factor with one legend entry per level."""
    first = highlighted(variants, results)
    others = [v for v in variants if v not in first]
    styles = []
    if color_by is not None:
        levels = results.factor_levels.get(color_by, [])
        by_variant = (
            results.variant_levels().set_index("variant")[color_by].to_dict()
            if color_by in results.variant_levels().columns
            else {}
        )

        def level_index(variant: str) -> int | None:
            return next((i for i, lv in enumerate(levels) if lv == by_variant.get(variant)), None)

        others.sort(key=lambda v: (level_index(v) is None, level_index(v) or 0))  # legend in level order
        labelled = set()
        for v in others:
            level, index = by_variant.get(v), level_index(v)
            color = LEVEL_COLORS[index % len(LEVEL_COLORS)] if index is not None else OTHER_STYLE["color"]
            label = f"{color_by} = {level}" if index is not None and index not in labelled else None
            labelled.add(index)
            styles.append((v, dict(OTHER_STYLE, color=color, alpha=0.8, label=label), False))
    else:
        styles = [
            (v, dict(OTHER_STYLE, label="other variants" if i == 0 else None), False) for i, v in enumerate(others)
        ]
    return styles + [(v, style_of(v, results), True) for v in first]


def save(ctx: Context, fig: Figure, name: str, caption: str, tight: bool = True) -> None:
    """Save under figures/ and remember the caption for report.md.

    ``tight=False`` skips the extra draw of ``bbox_inches="tight"``: figures laid out by
    ``tight_layout`` or by hand do not need it, and each draw costs about a second.
    """
    ctx.figure_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(name).stem
    for fmt in ctx.formats:
        atomic_write(
            ctx.figure_dir / f"{stem}.{fmt}",
            lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, dpi=DPI, bbox_inches="tight" if tight else None),
        )
    shown = "png" if "png" in ctx.formats else ctx.formats[0]  # report.md embeds one of them
    ctx.figures.append((caption, f"figures/{stem}.{shown}"))


def main_metrics(results: Results) -> list[str]:
    """Metrics that get their own figures; per-horizon metrics get the horizon figure instead,
    and noise floors are a line in their metric's figure."""
    horizon = {name for items in analysis.horizon_metrics(results.metric_names).values() for _, name in items}
    return [m for m in analysis.quality_metrics(results.metric_names) if m not in horizon]


def roles(results: Results) -> list[tuple[str, str]]:
    """(role, variant) for the paper, simplified and baseline variants the run names."""
    named = [
        ("paper", results.paper_variant),
        ("simplified", results.simplified_variant),
        ("baseline", results.baseline_variant),
    ]
    return [(role, variant) for role, variant in named if variant is not None]


def cell_text(cells: pd.DataFrame, variant: str, steps: int) -> str:
    """A variant's mean and CI at one K from cells indexed by (variant, steps)."""
    return mean_ci(cells.loc[(variant, steps)]) if (variant, steps) in cells.index else "n/a"


def significant(effects: pd.DataFrame, scale: str = "raw") -> pd.Series:
    """Distinguishable from no effect on the metric's scale: the 95% CI excludes 0 (a ratio of 1)
    and the Holm p-value is at most 0.05."""
    prefix, null = ("ratio_", 1.0) if scale == "log" else ("", 0.0)
    low, high, p = (effects[f"{prefix}{c}"].astype(float) for c in ("ci_low", "ci_high", "p_holm"))
    return ((low > null) | (high < null)) & (p <= ALPHA)


def effect_text(row: pd.Series | dict, scale: str, adjusted: bool = True) -> str:
    """``+0.3 (95% CI [0.2, 0.4], Holm p = 0.001)`` or, on the log scale, ``x0.52 (95% CI [...])``."""
    if scale == "log":
        value = f"x{fmt(row['ratio'])}"
        interval, p = ci_text(row["ratio_ci_low"], row["ratio_ci_high"]), row.get("ratio_p_holm")
        p_raw = row.get("ratio_p_value")
    else:
        value = f"{row['estimate' if 'estimate' in row else 'difference']:+.3g}"
        interval, p, p_raw = ci_text(row["ci_low"], row["ci_high"]), row.get("p_holm"), row.get("p_value")
    if adjusted and p is not None and np.isfinite(p):
        return f"{value} (95% CI {interval}, Holm p = {fmt(p)})"
    return f"{value} (95% CI {interval}, p = {fmt(p_raw)})"


def scale_phrase(scale: str, overridden: bool = False) -> str:
    """How the metric is read: on the scale its task declares (or ``--scale`` asks), never one
    guessed from the data."""
    source = "as `--scale` asks" if overridden else "as the task declares for this metric"
    return (
        f"analysed on the log scale, {source}: effects are ratios of geometric means, paper's level / other level"
        if scale == "log"
        else f"effects are differences of means, paper's level − other level (the raw scale, {source})"
    )


def resolve_primary(results: Results, metric: str | None, steps: int | None) -> tuple[str, int, list[str]]:
    """Primary metric and step count: argument, else run.json, else a documented fallback."""
    notes = []
    quality = analysis.quality_metrics(results.metric_names)
    metrics = main_metrics(results) or quality
    if metric is not None and metric not in quality:
        raise ValueError(
            f"metric {metric!r} not in the results' quality metrics (noise floors are not); have {quality}"
        )
    if metric is None:
        metric = results.run.get("primary_metric")
        if metric not in quality:
            notes.append(f"run.json primary_metric {metric!r} is not a quality metric with rows; using {metrics[0]!r}.")
            metric = metrics[0]
    available = results.eval_steps
    if steps is not None and int(steps) not in available:
        raise ValueError(f"steps={steps} not evaluated; have {available}")
    if steps is None:
        steps = results.run.get("primary_steps")
        if steps is None or int(steps) not in available:
            fallback = default_primary_steps(available)
            notes.append(f"run.json primary_steps {steps!r} not evaluated; using K = {fallback}.")
            steps = fallback
    return metric, int(steps), notes
