"""`ablate compare` on folders with a fractional design, alone and next to a full one; and the report's
interaction plots of a fraction, whose tilts are alias classes'.

No two runs of a fraction differ in one toggle alone, so a toggle's normalised effect there is the
design's contrast (mean score at the paper's level minus at the other, over the fraction's runs) and its
probability of improvement is over every (paper's-level run, other-level run) pair within one seed and
stratum of the factors crossed in full. Injected effects are chosen so that both have exact values:
w2 (lower is better) shifted by +0.4 at tau_sampling's paper level and by -0.2 at half_step's, so the
fraction's run means span 0.6 and half_step's paper-level runs beat the other level's in 3 of 4 pairs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from synthetic import TOGGLES, make_synthetic_results, variant_label

from ablate import analysis
from ablate.cli import main
from ablate.design import parse_design
from ablate.report import figures
from ablate.report.context import Context, resolve_primary
from ablate.report.figures import fig_interactions
from ablate.results import load

EFFECTS = {"tau_sampling": 0.4, "half_step": -0.2}
NOISE_SD = 0.005
RESOLUTION_III = {"generators": ["D = AB"]}  # I = ABD: tau_sampling = bootstrap_space:tau2_weight, ...
SIMPLIFIED = "cont_xboot_renoise_now2"  # every toggle at its other level: outside the D = AB fraction


def _folder(path: Path, design: object = None, seed: int = 1, **options) -> Path:
    make_synthetic_results(
        path,
        EFFECTS,
        noise_sd=NOISE_SD,
        seeds=range(3),
        steps=[4],
        metrics=["w2"],
        seed=seed,
        name=path.name,
        design=design,
        **options,
    )
    return path


def _compare(tmp_path: Path, *folders: Path) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    out = tmp_path / "cmp"
    assert main(["compare", *map(str, folders), "--output", str(out)]) == 0
    table = pd.read_csv(out / "compare.csv").set_index(["folder", "term"])
    aggregate = pd.read_csv(out / "compare_aggregate.csv").set_index("term")
    return table, aggregate, (out / "compare.md").read_text()


@pytest.mark.parametrize(
    "design, resolution, corner_outside",
    [("half", "IV", False), (RESOLUTION_III, "III", True)],
    ids=["half", "resolution-III"],
)
def test_a_fraction_recovers_each_injected_effect_as_its_contrast(tmp_path, design, resolution, corner_outside):
    # The corner outside a fraction is made far worse than any run: in a contrast or in the scaling it
    # would pull every effect towards 0.
    penalty = {SIMPLIFIED: 5.0} if corner_outside else {}
    folder = _folder(tmp_path / "frac", design, k_max_penalty=penalty)
    table, _, text = _compare(tmp_path, folder, folder)
    rows = table.loc["frac (1)"]
    assert set(rows["resolution"]) == {resolution}
    expected = {"tau_sampling": -0.4 / 0.6, "half_step": 0.2 / 0.6, "bootstrap_space": 0.0, "tau2_weight": 0.0}
    for toggle, value in expected.items():
        assert rows.loc[toggle, "normalised_effect"] == pytest.approx(value, abs=0.03), toggle
    assert rows.loc["tau_sampling", "probability_of_improvement"] == 0.0  # every pair: +0.4 +- 0.2 is worse
    # half_step's runs at the paper's level beat the other's unless the paper's has tau_sampling's paper level
    # and the other's not (0.4 - 0.2 against 0 at best): 3 of 4 pairs, not the 1 of a matched pair
    assert rows.loc["half_step", "probability_of_improvement"] == pytest.approx(0.75, abs=0.02)
    assert f"frac (1) (8 of 16 runs, resolution {resolution})" in text
    assert "over every (paper's-level run, other-level run) pair within one seed" in text


def test_resolution_III_names_the_two_way_interactions_a_main_effect_stands_for(tmp_path):
    folder = _folder(tmp_path / "r3", RESOLUTION_III)
    table, _, text = _compare(tmp_path, folder, folder)
    assert table.loc[("r3 (1)", "tau_sampling"), "aliases"].split(" = ")[0] == "bootstrap_space:tau2_weight"
    assert (
        "in r3 (1), `tau_sampling` = `bootstrap_space:tau2_weight`; `bootstrap_space` = `tau_sampling:tau2_weight`; "
        "`tau2_weight` = `tau_sampling:bootstrap_space`." in text
    )
    assert "`half_step` =" not in text  # C is in no word of length 3: clear of two-way interactions


def test_a_half_fraction_next_to_a_full_folder(tmp_path):
    full, half = _folder(tmp_path / "full", seed=1), _folder(tmp_path / "half", "half", seed=2)
    table, aggregate, text = _compare(tmp_path, full, half)
    for toggle, value in (("tau_sampling", -0.4 / 0.6), ("half_step", 0.2 / 0.6)):
        both = table.xs(toggle, level="term")["normalised_effect"]
        assert both.to_numpy() == pytest.approx([value, value], abs=0.03)
        assert aggregate.loc[toggle, "normalised_effect"] == pytest.approx(both.mean())
        assert aggregate.loc[toggle, "n_folders"] == 2
    # matched pairs on the full design, every pair on the fraction
    assert table.loc[("full", "half_step"), "probability_of_improvement"] == 1.0
    assert table.loc[("half", "half_step"), "probability_of_improvement"] == pytest.approx(0.75, abs=0.02)
    assert table.loc["full", "resolution"].eq("full").all() and table.loc["full", "aliases"].isna().all()
    assert table.loc["half", "resolution"].eq("IV").all()
    assert "Fractional designs: half (8 of 16 runs, resolution IV)." in text and "full (" not in text
    assert "At resolution III" not in text


def test_a_full_folder_keeps_its_matched_pair_numbers(tmp_path):
    """The normalised effect and probability of improvement of a full folder, computed here from
    metrics.csv by matching each cell with the one that differs in the toggle alone."""
    folder = _folder(tmp_path / "full", drop_trials=["trial_0005", "trial_0031"], extra_factors={"lr": [1, 2]})
    table, _, text = _compare(tmp_path, folder, _folder(tmp_path / "half", "half"))
    metrics = pd.read_csv(folder / "metrics.csv")
    metrics = metrics[metrics["variant"] != "flow"]
    factors = [f["name"] for f in TOGGLES] + ["lr"]
    scores = -metrics.pivot_table(index=factors, columns="seed", values="value")
    means = scores.mean(axis=1)
    scores = (scores - means.min()) / (means.max() - means.min())
    for toggle in factors:
        reference = next(f["reference"] for f in TOGGLES + [{"name": "lr", "reference": 1}] if f["name"] == toggle)
        at = scores.index.get_level_values(toggle) == reference
        paper = scores[at].droplevel(toggle).sort_index()
        other = scores[~at].droplevel(toggle).sort_index()
        difference = (paper - other).to_numpy()
        wins = (paper > other) + 0.5 * (paper == other)
        finished = np.isfinite(difference)
        assert table.loc[("full", toggle), "normalised_effect"] == pytest.approx(np.nanmean(difference), rel=1e-12)
        assert table.loc[("full", toggle), "probability_of_improvement"] == pytest.approx(
            wins.to_numpy()[finished].mean(), rel=1e-12
        )
    assert "matched within seed and stratum" in text


def test_a_crossed_factor_keeps_the_pairs_within_its_levels(tmp_path):
    # Every run at lr = 3 is made worse by 1.0: a pair across lr's levels would let tau_sampling's paper
    # level win some, pairs within a level never do.
    factors = {f["name"]: f["levels"] for f in TOGGLES} | {"lr": [1, 2, 3]}
    cells = parse_design("half", factors, {f["name"]: f["reference"] for f in TOGGLES} | {"lr": 1}).cells()
    penalty = {variant_label(cell): 1.0 for cell in cells if cell["lr"] == 3}
    folder = _folder(tmp_path / "lr", "half", extra_factors={"lr": [1, 2, 3]}, k_max_penalty=penalty)
    table, _, _ = _compare(tmp_path, folder, folder)
    assert table.loc[("lr (1)", "tau_sampling"), "probability_of_improvement"] == 0.0
    # scaled over every run, lr = 3 included: the means span 0.6 + 1.0
    assert table.loc[("lr (1)", "tau_sampling"), "normalised_effect"] == pytest.approx(-0.4 / 1.6, abs=0.02)
    assert table.loc[("lr (1)", "half_step"), "normalised_effect"] == pytest.approx(0.2 / 1.6, abs=0.02)


def _interaction_figure(folder: Path, monkeypatch) -> tuple[Figure, str]:
    """fig_interactions of a folder at its primary metric and K: the figure and its caption."""
    saved = []
    monkeypatch.setattr(figures, "save", lambda ctx, fig, name, caption, tight=True: saved.append((fig, caption)))
    results = load(folder)
    metric, steps, notes = resolve_primary(results, None, None)
    tables = (analysis.cell_summary(results), analysis.factor_effects(results), analysis.noise_floors(results))
    scales = analysis.metric_scales(results)
    empty = pd.DataFrame()
    fig_interactions(Context(results, *tables, metric, steps, notes, scales, empty, empty, empty))
    [(fig, caption)] = saved
    return fig, caption


def test_interaction_panels_of_a_fraction_name_their_aliases_and_leave_out_the_corner(tmp_path, monkeypatch):
    # A:B and C:D are one alias class on the half fraction (D = ABC): their +0.3 and -0.2 tilt one panel
    interactions = {"tau_sampling:bootstrap_space": 0.3, "half_step:tau2_weight": -0.2}
    options = {"noise_sd": NOISE_SD, "seeds": range(3), "steps": [4], "metrics": ["w2"]}
    make_synthetic_results(tmp_path / "half", interactions, design="half", **options)
    # on D = AB the corner outside the fraction is made 5.0 worse: in any pair of means it would show
    penalty = {SIMPLIFIED: 5.0}
    make_synthetic_results(tmp_path / "r3", interactions, design=RESOLUTION_III, k_max_penalty=penalty, **options)
    for name, title, resolution in (
        ("half", "tau_sampling:bootstrap_space\naliased with half_step:tau2_weight", "IV"),
        ("r3", "half_step:tau2_weight\nclear of other two-way terms", "III"),
    ):
        fig, caption = _interaction_figure(tmp_path / name, monkeypatch)
        assert fig.axes[0].get_title() == title
        assert f"on this resolution {resolution} fraction the means are over its runs only" in caption
        centres = [y for ax in fig.axes for bars in ax.containers for y in bars.lines[0].get_ydata()]
        assert len(centres) == 12 and max(centres) < 2.0  # w2 is about 1.25 +- 0.3 on every run of the fraction


def test_interaction_panels_of_a_full_design_keep_their_plain_titles(tmp_path, monkeypatch):
    make_synthetic_results(
        tmp_path / "full", {"half_step:tau2_weight": -0.2}, noise_sd=NOISE_SD, seeds=range(3), steps=[4], metrics=["w2"]
    )
    fig, caption = _interaction_figure(tmp_path / "full", monkeypatch)
    assert fig.axes[0].get_title() == "half_step:tau2_weight" and "fraction" not in caption
