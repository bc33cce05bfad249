"""The figures a researcher looks for: drawn from the tables, on the metric's scale, every cell named,
legends clear of the data, and a report for every shape of grid (one seed, missing cells, no baseline,
three factors, a three-level factor)."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from synthetic import make_synthetic_results

from ablate import analysis
from ablate.report import figures_heatmap, write_report
from ablate.report.context import Context, resolve_primary
from ablate.report.figures import fig_forest, fig_half_normal
from ablate.report.figures_cells import fig_cells_vs_steps
from ablate.report.figures_heatmap import cell_grid, fig_cell_means, split_for_heatmap
from ablate.report.figures_k import fig_effects_vs_steps, fig_paper_vs_baseline
from ablate.results import load, write_tables

INJECTED = {"tau_sampling": 0.4, "half_step:tau2_weight": 0.25}
NEW_FIGURES = {"cell_means.png", "effects_vs_steps.png", "paper_vs_baseline.png"}


def _context(folder) -> Context:
    """The tables write_report analyses, for drawing one figure at a time."""
    results = load(folder)
    metric, steps, notes = resolve_primary(results, None, None)
    return Context(
        results,
        analysis.cell_summary(results),
        analysis.factor_effects(results),
        analysis.noise_floors(results),
        metric,
        steps,
        notes,
        analysis.metric_scales(results),
        pd.DataFrame(),
        pd.DataFrame(),
        analysis.paper_vs_others(results),
    )


def _line(fig: Figure, gid: str):
    lines = [line for ax in fig.axes for line in ax.get_lines() if line.get_gid() == gid]
    assert len(lines) == 1, gid
    return lines[0]


def _figures_in(report: str) -> dict[str, str]:
    """file name -> caption of every figure report.md embeds."""
    return {path.split("/")[-1]: caption for caption, path in re.findall(r"!\[([^\]]*)\]\((figures/[^)]+)\)", report)}


def _assert_legend_clear_of_axes(fig: Figure) -> None:
    """The figure's legend overlaps no visible panel, its title and tick labels included."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    for ax in fig.axes:
        if ax.get_visible():
            assert not box.overlaps(ax.get_tightbbox(renderer)), ax.get_title()


def test_effect_against_k_draws_effects_csv_on_each_scale(tmp_path):
    for scale in ("raw", "log"):
        folder = tmp_path / scale
        make_synthetic_results(
            folder,
            INJECTED,
            noise_sd=0.05,
            seeds=range(3),
            steps=[1, 2, 4],
            metrics=["w2"],
            metric_scales={"w2": scale},
        )
        fig = fig_effects_vs_steps(_context(folder))
        effects = analysis.factor_effects(load(folder)).query("kind == 'main'")
        assert set(effects["scale"]) == {scale}
        for term, rows in effects.groupby("term"):
            line = _line(fig, f"effect:{term}")
            rows = rows.sort_values("steps")
            assert list(line.get_xdata()) == [1, 2, 4]
            column = "ratio" if scale == "log" else "estimate"
            assert np.allclose(line.get_ydata(), rows[column].to_numpy(float))
            assert line.axes.get_xscale() == "log" and line.axes.get_yscale() == ("log" if scale == "log" else "linear")
            null = [
                other
                for other in line.axes.get_lines()
                if list(other.get_ydata()) == [1.0 if scale == "log" else 0.0] * 2
            ]
            assert null, "a line at no effect"
        assert len(fig.axes) == 4 and fig.axes[0].get_title().startswith("tau_sampling: grid")
        _assert_legend_clear_of_axes(fig)
        assert (folder / "figures" / "effects_vs_steps.png").exists()


def test_paper_minus_baseline_is_the_comparison_turned_round(tmp_path):
    make_synthetic_results(tmp_path, INJECTED, noise_sd=0.05, seeds=range(3), steps=[1, 4], metrics=["w2", "mmd"])
    ctx = _context(tmp_path)
    fig = fig_paper_vs_baseline(ctx)
    flow = ctx.comparisons.query("variant == 'flow'")
    for metric in ("w2", "mmd"):
        line = _line(fig, f"paper_vs_baseline:{metric}")
        rows = flow[flow["metric"] == metric].sort_values("steps")
        assert np.allclose(line.get_ydata(), -rows["difference"].to_numpy(float))
        band = line.axes.collections[0].get_paths()[0].vertices[:, 1]
        assert np.isclose(band.min(), -rows["ci_high"].max()) and np.isclose(band.max(), -rows["ci_low"].min())
    assert line.get_ydata()[0] < 0  # the flow baseline collapses at one step, so the paper is below it
    _assert_legend_clear_of_axes(fig)


def test_every_cell_is_named_by_its_levels_against_k(tmp_path):
    make_synthetic_results(tmp_path, INJECTED, noise_sd=0.05, seeds=range(2), steps=[1, 4], metrics=["w2"])
    ctx = _context(tmp_path)
    (fig,) = fig_cells_vs_steps(ctx)
    variants = [v for v in pd.unique(ctx.cells["variant"]) if v != "flow"]
    assert len(variants) == 16
    for ax in fig.axes:
        cells = [line for line in ax.get_lines() if str(line.get_gid()).startswith("cell:")]
        labels = [line.get_label() for line in cells]
        assert len(cells) == 4 and len(set(labels)) == 4 and not any(label.startswith("_") for label in labels)
        assert "flow baseline" in [line.get_label() for line in ax.get_lines()]
    drawn = {line.get_gid() for ax in fig.axes for line in ax.get_lines()}
    assert {f"cell:{v}" for v in variants} <= drawn
    names = {text.get_text() for ax in fig.axes for text in ax.texts}
    assert names == {"paper", "simplified"}
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert legend[:4] == [
        "half_step=velocity, tau2_weight=True",
        "half_step=velocity, tau2_weight=False",
        "half_step=renoise, tau2_weight=True",
        "half_step=renoise, tau2_weight=False",
    ]
    _assert_legend_clear_of_axes(fig)


def test_heatmap_shows_each_cell_mean_and_says_which_cells_have_none(tmp_path):
    """Cells the design never ran say "not run", expected ones without trials "missing", a cell whose
    seeds all diverged says so; the paper's cell sits top left, outlined."""
    make_synthetic_results(
        tmp_path,
        INJECTED,
        noise_sd=0.05,
        seeds=range(2),
        steps=[1, 4],
        metrics=["w2"],
        drop_trials=[{"tau_sampling": "continuous", "bootstrap_space": "x"}],
        diverge_cells=["cont_vboot_vstep_now2"],
    )
    run = json.loads((tmp_path / "run.json").read_text())
    never_run = [t for t in run["expected_trials"] if t["variant"].startswith("cont_xboot_renoise")]
    run["expected_trials"] = [t for t in run["expected_trials"] if t not in never_run]  # as a fractional design
    (tmp_path / "run.json").write_text(json.dumps(run))
    ctx = _context(tmp_path)
    grid = cell_grid(ctx, ["tau_sampling", "bootstrap_space"], ["half_step", "tau2_weight"])
    assert grid.values.shape == (4, 4) and np.isfinite(grid.values).sum() == 11
    assert [grid.texts[(3, j)] for j in range(4)] == ["missing", "missing", "not run", "not run"]
    assert grid.texts[(2, 1)] == "diverged\n2 of 2 seeds"
    cells = ctx.primary(ctx.cells).set_index("variant")
    assert grid.values[0, 0] == pytest.approx(cells.loc["grid_vboot_vstep_w2", "mean"])
    assert grid.texts[(0, 0)].startswith(f"{cells.loc['grid_vboot_vstep_w2', 'mean']:.3g}\n[")
    assert list(grid.outlines) == [(0, 0)]  # the simplified cell is among those not run
    fig = fig_cell_means(ctx)
    assert (tmp_path / "figures" / "cell_means.png").exists()
    hatched = [patch for patch in fig.axes[0].patches if patch.get_hatch()]
    assert len(hatched) == 5  # four cells without trials and the diverged one


def test_heatmap_splits_any_number_of_factors_into_a_readable_grid():
    two = [True, False]
    for levels, shape in (
        ({"a": two, "b": two}, (2, 2)),
        ({"a": two, "b": two, "c": two}, (4, 2)),
        ({"a": two, "b": two, "c": two, "d": two}, (4, 4)),
        ({"a": two, "b": two, "c": two, "d": two, "e": two}, (8, 4)),
        ({"a": two, "b": two, "c": two, "d": two, "w": [1, 2, 3]}, (8, 6)),
    ):
        rows, columns = split_for_heatmap(levels, list(levels))
        assert (int(np.prod([len(levels[f]) for f in rows])), int(np.prod([len(levels[f]) for f in columns]))) == shape


def test_forest_legend_clear_of_every_panel_and_half_normal_labels_at_their_points(tmp_path):
    make_synthetic_results(tmp_path, INJECTED, noise_sd=0.05, seeds=[0], steps=[4], metrics=["w2", "mmd", "fd", "acc"])
    ctx = _context(tmp_path)
    forest = fig_forest(ctx)
    assert sum(ax.get_visible() for ax in forest.axes) == 4
    _assert_legend_clear_of_axes(forest)

    fig = fig_half_normal(ctx)
    ax = fig.axes[0]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # places the annotations
    renderer = canvas.get_renderer()
    labels = {text.get_text(): text for text in ax.texts}
    assert set(labels) == set(INJECTED)  # the two injected effects, no small one near the origin
    points = ax.get_lines()[0].get_xydata()
    for text in labels.values():
        assert any(np.allclose(text.xy, point) for point in points)  # anchored at a drawn point
        box, point = text.get_window_extent(renderer), ax.transData.transform(text.xy)
        assert box.x1 < point[0] and abs((box.y0 + box.y1) / 2 - point[1]) < 20  # just left of it, at its height


@pytest.mark.slow
def test_report_writes_and_captions_the_new_figures_for_every_shape_of_grid(tmp_path):
    shapes = {
        "one_seed": {"seeds": [0]},
        "no_baseline": {"baseline": False},
        "missing_cells": {"drop_trials": [{"tau_sampling": "continuous", "bootstrap_space": "x"}]},
        "three_level": {"extra_factors": {"width": [64, 128, 256]}},
    }
    for name, options in shapes.items():
        folder = tmp_path / name
        make_synthetic_results(
            folder, INJECTED, noise_sd=0.05, steps=[1, 4], metrics=["w2"], **{"seeds": range(2), **options}
        )
        report = write_report(folder).read_text()
        figures = _figures_in(report)
        expected = NEW_FIGURES - ({"paper_vs_baseline.png"} if name == "no_baseline" else set())
        assert expected | {"steps_cells_w2.png"} <= set(figures), name
        assert all(caption for caption in figures.values())
        if name == "no_baseline":
            assert (
                "No flow baseline in this run: the figure of the paper cell against the baseline is skipped." in report
            )
    three = tmp_path / "three_factors"
    make_synthetic_results(three, INJECTED, noise_sd=0.05, seeds=range(2), steps=[1, 4], metrics=["w2"])
    _fix_one_toggle(three)
    report = write_report(three).read_text()
    assert NEW_FIGURES | {"steps_cells_w2.png"} <= set(_figures_in(report))
    grid = cell_grid(_context(three), ["tau_sampling", "bootstrap_space"], ["half_step"])
    assert np.isfinite(grid.values).all() and len(grid.outlines) == 1  # no simplified cell with a toggle fixed


def _fix_one_toggle(folder) -> None:
    """Keep the cells with the weight on and drop the toggle: a study of the other three."""
    results = load(folder)

    def keep(table):
        chosen = table["tau2_weight"].isna() | (table["tau2_weight"] == True)  # noqa: E712
        return table[chosen].drop(columns=["tau2_weight"])

    run = dict(results.run)
    run["factors"] = [f for f in run["factors"] if f["name"] != "tau2_weight"]
    run["expected_trials"] = keep(pd.DataFrame(run["expected_trials"])).to_dict("records")
    write_tables(folder, keep(results.metrics), keep(results.curves), keep(results.trials), run)


def test_with_one_seed_the_figures_say_there_is_no_ci(tmp_path):
    make_synthetic_results(tmp_path, INJECTED, noise_sd=0.05, seeds=[0], steps=[1, 4], metrics=["w2"])
    ctx = _context(tmp_path)
    effects = fig_effects_vs_steps(ctx)
    assert [text.get_text() for text in effects.legends[0].get_texts()] == [
        "estimate (one seed: no CI, no test)",
        "primary K = 4",
    ]
    assert "one seed: no CI" in effects.texts[0].get_text()  # the title
    assert not any(ax.collections and ax.collections[0].get_paths() for ax in effects.axes)  # no band
    grid = cell_grid(ctx, ["tau_sampling", "bootstrap_space"], ["half_step", "tau2_weight"])
    assert all(text.endswith("\nno CI (1 seed)") for text in grid.texts.values())
    baseline = fig_paper_vs_baseline(ctx)
    assert "one seed: no CI" in baseline.texts[0].get_text()


def test_too_many_cells_for_a_heatmap_are_skipped_with_a_reason(tmp_path, monkeypatch):
    make_synthetic_results(tmp_path, INJECTED, noise_sd=0.05, seeds=[0], steps=[4], metrics=["w2"])
    monkeypatch.setattr(figures_heatmap, "MAX_HEATMAP_CELLS", 8)
    ctx = _context(tmp_path)
    assert fig_cell_means(ctx) is None
    assert ctx.notes[-1].startswith("16 cells are too many to read as a heatmap")
