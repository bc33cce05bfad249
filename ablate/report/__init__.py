"""Write the statistical report of one results folder.

``write_report`` adds ``report.md``, ``cells.csv``, ``effects.csv``, ``strata.csv``, ``power.csv``,
``comparisons.csv``, ``stability.csv`` and ``figures/*.png`` to the folder. The report opens with the answer (what each
toggle does, by how much, with CIs that hold their 95 %) and treats divergence and missing trials as
results to be stated, not errors. Noise floors (``<m>_floor``, real data scored against the
reference) are no quality metric: they are drawn and quoted next to ``<m>`` and get no figure, cells
or effects of their own.

- :mod:`~ablate.report.context`: the shared tables, primary metric and K, formatting;
- :mod:`~ablate.report.figures`: the figures; :mod:`~ablate.report.figures_cells` every cell against K,
  :mod:`~ablate.report.figures_heatmap` the cell means as a heatmap, :mod:`~ablate.report.figures_k`
  contrasts against K, :mod:`~ablate.report.layout` their shared layout;
- :mod:`~ablate.report.opening`: the opening answer in words, around its claims;
- :mod:`~ablate.report.claims`: each resolved test of the opening's family as words and a claims.csv row;
- :mod:`~ablate.report.text`: the rest of ``report.md`` (tables, run facts) and ``effects.tex``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ablate import analysis
from ablate.analysis.sequential import opening_family_table
from ablate.report.context import FLOOR_LABEL, FORMATS, Context, md_table, resolve_primary
from ablate.report.figures import (
    fig_curves,
    fig_forest,
    fig_half_normal,
    fig_horizon,
    fig_interactions,
    fig_steps,
    plot_quality_vs_steps,
)
from ablate.report.figures_cells import fig_cells_vs_steps
from ablate.report.figures_heatmap import fig_cell_means
from ablate.report.figures_k import fig_effects_vs_steps, fig_paper_vs_baseline
from ablate.report.opening import divergence_sentence
from ablate.report.samples import fig_samples
from ablate.report.text import effects_latex, render
from ablate.results import Results, atomic_write, load

__all__ = ["FLOOR_LABEL", "plot_quality_vs_steps", "write_report"]


def write_report(
    folder: str | Path,
    primary_metric: str | None = None,
    primary_steps: int | None = None,
    formats: Sequence[str] = ("png",),
    color_by: str | None = None,
    scales: Mapping[str, str] | None = None,
) -> Path:
    """Analyse a results folder and write report.md, the analysis tables, effects.tex and figures.

    ``formats``: any of png, pdf, svg (every figure in each); ``color_by``: a factor whose levels
    colour the variants other than the paper, simplified and baseline ones; ``scales``: metric ->
    ``log`` or ``raw``, read instead of what the task declared (``--scale``). Returns the path of
    report.md. Partial results (missing or diverged trials) are analysed as they are and listed,
    never treated as errors.
    """
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if not formats or unknown:
        raise ValueError(f"--format {','.join(formats)}: choose from {', '.join(FORMATS)}")
    results = load(folder)
    results.scale_overrides = analysis.scale_overrides(results, scales)
    if color_by is not None and color_by not in results.factor_names:
        raise ValueError(f"--color-by {color_by!r} is not a factor of this run; have {results.factor_names}")
    if results.metrics.empty:
        return _write_empty_report(results)
    metric, steps, notes = resolve_primary(results, primary_metric, primary_steps)
    tables = {
        "cells": analysis.cell_summary(results),
        "effects": analysis.factor_effects(results),
        "strata": analysis.stratum_effects(results),
        "power": analysis.power_table(results),
        "comparisons": analysis.paper_vs_others(results),
        "stability": analysis.stability_table(results),
    }
    for name, table in tables.items():  # atomically: a full disk leaves the old table or the new one
        atomic_write(results.folder / f"{name}.csv", lambda tmp, table=table: table.to_csv(tmp, index=False))
    ctx = Context(
        results,
        tables["cells"],
        tables["effects"],
        analysis.noise_floors(results),
        metric,
        steps,
        notes,
        analysis.metric_scales(results),
        tables["strata"],
        tables["power"],
        tables["comparisons"],
        formats,
        color_by,
        family=opening_family_table(results, metric, steps),  # across the looks, for a study in rounds
    )
    atomic_write(results.folder / "family.csv", lambda tmp: ctx.family.to_csv(tmp, index=False))
    atomic_write(results.folder / "effects.tex", lambda tmp: tmp.write_text(effects_latex(ctx)))
    for fmt in FORMATS:  # figures of an earlier report with other choices
        for stale in ctx.figure_dir.glob(f"*.{fmt}"):
            stale.unlink()
    for draw in (
        fig_steps,
        fig_cells_vs_steps,
        fig_cell_means,
        fig_effects_vs_steps,
        fig_paper_vs_baseline,
        fig_forest,
        fig_interactions,
        fig_curves,
        fig_samples,
        fig_horizon,
    ):
        draw(ctx)
    if ctx.single_seed:
        fig_half_normal(ctx)
    text, claims = render(
        ctx, analysis.divergence_table(results), analysis.missing_trials(results), tables["stability"]
    )
    atomic_write(results.folder / "claims.csv", lambda tmp: claims.to_csv(tmp, index=False))
    path = results.folder / "report.md"
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


def _write_empty_report(results: Results) -> Path:
    """Nothing has metric rows yet: say so, with the trial status, instead of failing."""
    divergence = analysis.divergence_table(results)
    missing = analysis.missing_trials(results)
    path = results.folder / "report.md"
    text = (
        "\n\n".join(
            [
                f"# Ablation report: {results.name}",
                f"**Partial: 0 of {len(results.run.get('expected_trials') or [])} trials.** "
                "No trial has metric rows yet, so there is nothing to compare. "
                + divergence_sentence(divergence, results),
                "## Missing trials",
                md_table(missing.astype(str)) if len(missing) else "None.",
            ]
        )
        + "\n"
    )
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path
