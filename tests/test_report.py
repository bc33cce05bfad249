"""The report renders every figure for each task shape and states what is missing or impossible."""

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from synthetic import make_synthetic_results

from ablate import analysis
from ablate.report import FLOOR_LABEL, plot_quality_vs_steps, write_report
from ablate.results import load, write_tables

INJECTED = {"tau_sampling": 0.4, "half_step:tau2_weight": 0.25}


def _embedded_figures(report: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", report)


def _check_figures(folder, report: str, expected: set[str]) -> None:
    embedded = _embedded_figures(report)
    assert expected <= {p.split("/")[-1] for p in embedded}
    for path in embedded:
        assert (folder / path).stat().st_size < 400_000  # small enough for a repository


@pytest.mark.slow
def test_points_report_with_partial_and_diverged_trials(tmp_path):
    make_synthetic_results(
        tmp_path,
        INJECTED,
        noise_sd=0.05,
        seeds=range(3),
        steps=[1, 4, 16],
        metrics=["w2", "mmd"],
        diverge_cells=[("grid_xboot_vstep_w2", 0)],
        drop_trials=[("cont_vboot_vstep_now2", 2)],
        sample_format="points",
    )
    path = write_report(tmp_path)
    report = path.read_text()
    assert path == tmp_path / "report.md"
    assert (tmp_path / "cells.csv").exists() and (tmp_path / "effects.csv").exists()
    _check_figures(
        tmp_path,
        report,
        {
            "steps_w2.png",
            "steps_mmd.png",
            "effects_forest.png",
            "interactions.png",
            "training_curves.png",
            "samples_K1.png",
            "samples_K4.png",
            "samples_K16.png",
        },
    )
    opening = report.split("\n\n")[1]
    assert "**w2**" in opening and "**K = 4**" in opening
    assert "`tau_sampling`: grid (reference) vs continuous changes w2 by +0.4" in opening
    assert "so grid is worse" in opening  # +0.4 on a lower-is-better metric
    assert "`bootstrap_space`: velocity (reference) vs x changes w2 by" in opening
    assert "indistinguishable from zero" in opening
    assert "The simplified variant `cont_xboot_renoise_now2` differs" in opening
    assert "paired over 3 seed(s)" in opening
    assert "1 of 50 trials diverged (`grid_xboot_vstep_w2` 1/3)" in opening
    assert "1 expected trial(s) are missing" in opening
    assert "Not every cell has a finished trial in every seed" in opening
    assert "gets worse with more sampling steps" not in opening  # w2 improves up to k_max here
    assert "With 3 seeds, the smallest effect these tests detect with 80% power" in opening
    missing = report.split("## Missing trials")[1].split("##")[0]
    assert "cont_vboot_vstep_now2" in missing
    assert "## Paper vs the other variants" in report and "Holm over the variants" in report
    effects = pd.read_csv(tmp_path / "effects.csv")
    assert set(effects["metric"]) == {"w2", "mmd"} and set(effects["steps"]) == {1, 4, 16}
    for name in ("strata", "power", "comparisons"):
        table = pd.read_csv(tmp_path / f"{name}.csv")
        assert set(table["metric"]) == {"w2", "mmd"} and set(table["steps"]) == {1, 4, 16}


@pytest.mark.slow
def test_without_a_varied_toggle_there_is_no_simplified_variant(tmp_path):
    """A study of a non-toggle factor (e.g. teacher_context on the paper's cell) has no simplified cell:
    the paper's own cell must not be reported a second time as "simplified"."""
    make_synthetic_results(tmp_path, INJECTED, noise_sd=0.05, seeds=range(2), steps=[1, 4], metrics=["w2"])
    run = json.loads((tmp_path / "run.json").read_text())
    run["simplified_variant"] = run["paper_variant"]  # what run.json said before: the paper's own label
    (tmp_path / "run.json").write_text(json.dumps(run))
    assert load(tmp_path).simplified_variant is None
    report = write_report(tmp_path).read_text()
    assert "simplified" not in report.split("## Divergence")[0]


def test_image_report_with_a_single_seed_says_no_ci_and_draws_half_normal(tmp_path):
    make_synthetic_results(
        tmp_path,
        INJECTED,
        noise_sd=0.05,
        seeds=[0],
        steps=[1, 4],
        metrics=["fid", "accuracy"],
        metric_directions={"accuracy": "max"},
        sample_format="image",
    )
    report = write_report(tmp_path).read_text()
    _check_figures(
        tmp_path, report, {"half_normal.png", "samples_K1.png", "samples_K4.png", "steps_fid.png", "steps_accuracy.png"}
    )
    assert "Single seed: no CI over seeds is possible" in report
    assert "no CI possible with fewer than two seeds" in report
    assert "indistinguishable from zero" not in report.split("\n\n")[1]  # no CI, so no verdict either way
    assert "The 11 interaction terms (two-way and higher) have no CI." in report
    cells = pd.read_csv(tmp_path / "cells.csv")
    assert (cells["n_seeds"] == 1).all() and cells["ci_low"].isna().all()


@pytest.mark.slow
def test_video_report_with_horizon_metrics_and_whole_cells_diverged(tmp_path):
    make_synthetic_results(
        tmp_path,
        INJECTED,
        noise_sd=0.05,
        seeds=range(2),
        steps=[1, 4],
        metrics=["mse"],
        horizon=3,
        sample_format="video",
        diverge_cells=[{"tau2_weight": False}],
    )
    report = write_report(tmp_path).read_text()
    _check_figures(
        tmp_path, report, {"horizon_mse.png", "samples_K1.png", "samples_K4.png", "steps_mse.png", "effects_forest.png"}
    )
    assert "steps_mse_h1.png" not in report  # per-horizon metrics get the horizon figure only
    opening = report.split("\n\n")[1]
    assert "Not every cell has a finished trial in every seed" in opening
    assert "seed_paired_t (2 seeds, 4 of 8 strata)" in opening
    assert "Not estimable" in opening and "`tau2_weight`" in opening
    assert "The simplified variant cannot be compared" in opening
    assert "`tau2_weight`: True 0/16, False 16/16" in opening


@pytest.mark.slow
def test_primary_override_and_missing_samples(tmp_path):
    make_synthetic_results(
        tmp_path, INJECTED, noise_sd=0.05, seeds=range(2), steps=[1, 4], metrics=["w2", "mmd"], baseline=False
    )
    shutil.rmtree(tmp_path / "samples")
    with pytest.raises(ValueError, match="nope"):
        write_report(tmp_path, primary_metric="nope")
    with pytest.raises(ValueError, match="steps=3"):
        write_report(tmp_path, primary_steps=3)
    report = write_report(tmp_path, primary_metric="mmd", primary_steps=1).read_text()
    assert "At **mmd** (lower is better) with **K = 1**" in report
    assert "No sample files" in report and "samples_K" not in report


def test_report_before_any_trial_finished_lists_what_is_missing(tmp_path):
    make_synthetic_results(
        tmp_path,
        {},
        noise_sd=0.05,
        seeds=[0],
        steps=[1],
        metrics=["w2"],
        drop_trials=[{"tau_sampling": "grid"}, {"tau_sampling": "continuous"}],
        baseline=False,
    )
    report = write_report(tmp_path).read_text()
    assert "No trial has metric rows yet" in report
    assert report.count("| trial_0") == 16


@pytest.mark.slow
def test_noise_floors_are_quoted_and_drawn_never_compared(tmp_path):
    paper = "grid_vboot_vstep_w2"
    make_synthetic_results(
        tmp_path,
        INJECTED,
        noise_sd=0.05,
        seeds=range(3),
        steps=[1, 4, 16],
        metrics=["w2", "energy"],
        noise_floors={"w2": 0.6, "energy": 0.3},
        k_max_penalty={paper: 0.5},
        baseline=True,
    )
    shutil.rmtree(tmp_path / "samples")  # sample figures are not under test here
    report = write_report(tmp_path).read_text()
    _check_figures(tmp_path, report, {"steps_w2.png", "steps_energy.png", "effects_forest.png"})
    assert not list((tmp_path / "figures").glob("*floor*"))
    for table in ("effects.csv", "cells.csv"):
        assert set(pd.read_csv(tmp_path / table)["metric"]) == {"w2", "energy"}
    opening, lead, levels = report.split("\n\n")[1:4]
    assert f"for the paper variant `{paper}`" in opening and "for the baseline variant `flow`" in opening
    assert f"against a {FLOOR_LABEL} of 0.6." in opening
    assert "The paper's variant gets worse with more sampling steps" in opening
    assert "at K = 16 against" in opening and "at K = 4 (difference" in opening
    assert lead.startswith("w2 at K = 1, 4, 16 (lower is better")
    assert levels.startswith("| variant | K = 1 | K = 4 | K = 16 |")
    assert f"| paper `{paper}` | " in levels and "| baseline `flow` | " in levels
    assert f"| {FLOOR_LABEL} | 0.6 | 0.6 | 0.6 |" in levels
    with pytest.raises(ValueError, match="noise floors"):
        write_report(tmp_path, primary_metric="w2_floor")


def test_quality_vs_steps_draws_the_noise_floor_as_a_dashed_line(tmp_path):
    make_synthetic_results(
        tmp_path,
        {},
        noise_sd=0.05,
        seeds=range(2),
        steps=[1, 4],
        metrics=["w2", "mmd"],
        noise_floors={"w2": 0.6},
        diverge_cells=[("flow", 0)],
    )  # a diverged trial's NaN floor is skipped
    results = load(tmp_path)
    cells = analysis.cell_summary(results)
    lines = {}
    for metric in ("w2", "mmd"):
        ax = Figure().add_subplot()
        plot_quality_vs_steps(ax, cells, results, metric)
        lines[metric] = [line for line in ax.get_lines() if line.get_label() == FLOOR_LABEL]
    assert len(lines["w2"]) == 1 and lines["w2"][0].get_linestyle() == "--"
    assert list(lines["w2"][0].get_ydata()) == pytest.approx([0.6, 0.6])
    assert lines["mmd"] == []


def test_two_seeds_are_called_a_demo_yet_a_large_paired_gap_is_seen(tmp_path):
    """Paired by seed, 2 seeds give a t(1) interval: wide, honest, and still narrower than a gap of
    1.5 with a noise sd of 0.05."""
    make_synthetic_results(
        tmp_path,
        {"tau_sampling": -0.5, "bootstrap_space": -0.5, "half_step": -0.5},
        noise_sd=0.05,
        seeds=range(2),
        steps=[4],
        metrics=["w2"],
    )
    opening = write_report(tmp_path).read_text().split("\n\n")[1]
    assert "**Two seeds: a demo, not a conclusion.**" in opening
    assert "paired over 2 seed(s)" in opening and "it is worse" in opening


def _digits_like(folder) -> str:
    """FD-like values: the velocity half step is 2-20x better in 6 of 8 strata and 35x worse in 2
    (velocity bootstrap without the weight), so its raw average is near zero."""
    make_synthetic_results(folder, {}, noise_sd=0.05, seeds=range(3), steps=[1, 4], metrics=["fd"], seed=3)
    results = load(folder)
    m = results.metrics
    renoise = {("velocity", True): 1.5, ("velocity", False): 0.9, ("x", True): 6.0, ("x", False): 20.9}
    base = np.where(
        m["half_step"] == "velocity",
        0.85,
        [renoise.get((b, w), 1.0) for b, w in zip(m["bootstrap_space"], m["tau2_weight"])],
    )
    catastrophic = (m["half_step"] == "velocity") & (m["bootstrap_space"] == "velocity") & (m["tau2_weight"] == False)  # noqa: E712
    base = np.where(catastrophic, 30.0, base)
    base = np.where(m["variant"] == "flow", 2.0, base)
    metrics = m.assign(value=base * np.exp(m["value"] - m.groupby(["variant", "steps"])["value"].transform("mean")))
    write_tables(folder, metrics, results.curves, results.trials, results.run)
    return write_report(folder).read_text()


def test_a_toggle_that_helps_by_a_factor_in_most_strata_is_never_called_indistinguishable(tmp_path):
    report = _digits_like(tmp_path)
    opening = report.split("\n\n")[1]
    assert "analysed on the log scale" in opening
    sentence = opening.split("`half_step` (velocity vs renoise)")[1].split(". `")[0]
    assert "velocity is better in 6 (x0.0407 to x0.567), worse in 2 (x33.3)" in sentence
    effects = pd.read_csv(tmp_path / "effects.csv")
    assert (effects.loc[effects["metric"] == "fd", "scale"] == "log").all()
    strata = pd.read_csv(tmp_path / "strata.csv").query("term == 'half_step' and steps == 4")
    assert len(strata) == 8 and (strata["ratio"] < 0.7).sum() == 6 and (strata["ratio"] > 1.3).sum() == 2


def test_figures_for_a_paper_formats_display_names_colour_by_factor_and_latex(tmp_path, capsys):
    from ablate.cli import main
    from ablate.report.context import line_styles

    make_synthetic_results(tmp_path, INJECTED, noise_sd=0.05, seeds=range(3), steps=[1, 4], metrics=["w2"])
    run = json.loads((tmp_path / "run.json").read_text())
    (tmp_path / "run.json").write_text(json.dumps({**run, "labels": {"paper": "DreamerV4"}}))
    assert main(["report", str(tmp_path), "--format", "png,pdf,svg", "--color-by", "tau2_weight"]) == 0
    figures = {p.name for p in (tmp_path / "figures").iterdir()}
    for stem in ("steps_w2", "effects_forest", "interactions"):
        assert {f"{stem}.png", f"{stem}.pdf", f"{stem}.svg"} <= figures
    results = load(tmp_path)
    styles = line_styles(list(results.variant_levels()["variant"]), results, "tau2_weight")
    labels = [style["label"] for _, style, _ in styles if style.get("label")]
    assert labels == ["tau2_weight = True", "tau2_weight = False", "DreamerV4", "simplified", "flow baseline"]
    colours = {style["color"] for v, style, highlighted in styles if not highlighted}
    assert len(colours) == 2  # one colour per level, no anonymous grey
    ax = Figure().add_subplot()
    plot_quality_vs_steps(ax, analysis.cell_summary(results), results, "w2", color_by="tau2_weight")
    legend = ax.get_legend()
    assert legend.get_bbox_to_anchor().x0 >= ax.bbox.x1 - 1  # the legend sits outside the data
    tex = (tmp_path / "effects.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "tau\\_sampling x half\\_step" in tex
    for bad, named in ((["--format", "png,gif"]), "gif"), ((["--color-by", "nope"]), "nope"):
        capsys.readouterr()
        assert main(["report", str(tmp_path), *bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and named in err


def test_sample_panels_use_the_real_data_scale_and_draw_it_first(tmp_path):
    """With real data stored next to the samples, the figure opens with it and every panel uses its
    scale: a variant ten times too wide is mostly off its box (and says so), not shrunk to fit."""
    from ablate.report import samples

    make_synthetic_results(
        tmp_path, INJECTED, noise_sd=0.05, seeds=range(2), steps=[1, 4], metrics=["w2"], sample_format="points"
    )
    results = load(tmp_path)
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (500, 2))
    arrays = {samples.REAL: real, "wide": 10 * real, "sharp": real[:200]}
    ax = Figure().add_subplot()
    samples._points_grid(ax, arrays, 6, results)
    texts = [t.get_text() for t in ax.texts]
    assert texts[0] == samples.REAL
    outside = [t for t in texts if t.endswith("% outside")]
    assert len(outside) == 1 and int(outside[0].split("%")[0]) > 80  # only the wide variant spills over

    tiles = {samples.REAL: np.linspace(-1, 1, 16).reshape(4, 4), "faint": np.full((4, 4), 0.1)}
    ax = Figure().add_subplot()
    samples._picture_grid(ax, tiles, 6, results)
    assert ax.images[0].get_clim() == (-1.0, 1.0)  # one grey scale: the real images' range

    for path in (tmp_path / "samples").glob("*.npz"):  # real data stored with each trial's samples
        with np.load(path) as npz:
            arrays = dict(npz)
        np.savez_compressed(path, real=real, **arrays)
    report = write_report(tmp_path).read_text()
    assert "real data first, every panel on the real data's scale" in report
