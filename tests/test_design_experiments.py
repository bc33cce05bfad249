"""`design:` in experiment files: a fraction's cells become the trial matrix, run.json states the design
so that the analysis rebuilds it, and `--resume` and `ablate merge` treat another design as another
experiment. The design's own algebra is tested in tests/test_design.py."""

import json

import pandas as pd
import pytest
import yaml
from conftest import TINY_TASK
from test_cli_run import write_experiment

from ablate import provenance, runner
from ablate.cli import main
from ablate.design import parse_design
from ablate.experiment import DEFAULT_FACTORS, ExperimentError, load_experiment, parse_experiment
from ablate.results import load
from ablate.variants import TOGGLES

PAPER, SIMPLIFIED = "grid_vboot_vstep_w2", "cont_xboot_renoise_now2"


def _spec(**changes) -> dict:
    spec = {"name": "x", "task": TINY_TASK, "objective": {"k_max": 8}, "seeds": [0, 1], "eval": {"steps": [1, 8]}}
    return {**spec, **changes}


def _codes(experiment, cell: dict) -> list[int]:
    """A cell's two-level factors coded +1 (reference) / -1, in the experiment's order."""
    return [
        1 if cell[n] == experiment.reference[n] else -1 for n in experiment.factors if len(experiment.factors[n]) == 2
    ]


def _cells(experiment) -> list[str]:
    return list(dict.fromkeys(t.variant for t in experiment.trials))


def test_half_of_the_four_toggles_runs_8_cells_with_both_corners():
    experiment = parse_experiment(_spec(design="half", baseline=True))
    cells = _cells(experiment)
    assert len(cells) == 8 + 1 and cells[-1] == "flow"  # the baseline cell stays, as without a design
    assert len(experiment.trials) == 9 * 2
    assert PAPER in cells and SIMPLIFIED in cells
    for trial in experiment.trials:
        if trial.variant != "flow":  # D = ABC: tau2_weight's code is the product of the other three
            a, b, c, d = _codes(experiment, trial.levels)
            assert d == a * b * c
    assert experiment.spec["design"] == {"generators": ["D = ABC"]}  # normalised: the spelling is gone
    same = [parse_experiment(_spec(design=d, baseline=True)) for d in ({"fraction": "1/2"}, {"generators": ["D=ABC"]})]
    for other in same:
        assert [t.trial_id for t in other.trials] == [t.trial_id for t in experiment.trials]
        assert other.spec == experiment.spec


def test_the_full_design_is_the_grid_of_every_combination_in_file_order():
    factors = {"tau2_weight": [False, True], "lr": [0.01, 0.001, 0.1]}  # the reference True is listed second
    experiment = parse_experiment(_spec(factors=factors))
    assert experiment.spec["design"] == "full" and experiment.design.resolution is None
    assert [t.levels for t in experiment.trials[::2]] == [
        {"tau2_weight": w, "lr": lr} for w in (False, True) for lr in (0.01, 0.001, 0.1)
    ]


def test_a_design_override_on_the_command_line(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(_spec()))
    experiment = load_experiment(path, ["design=half"])
    assert len(_cells(experiment)) == 8 and experiment.design_given == "half"
    quarter = load_experiment(path, ["design={fraction: 1/4}", "factors.lr=[0.01, 0.001]"])  # 5 factors: 2^(5-2)
    assert quarter.design.generators == ("D = AB", "E = AC") and len(_cells(quarter)) == 8 + 1  # + the odd corner


def test_e_equals_abcd_on_five_factors_adds_the_corner_it_lacks(tmp_path):
    factors = {**DEFAULT_FACTORS, "lr": [0.01, 0.001]}
    experiment = parse_experiment(_spec(factors=factors, design={"generators": ["E = ABCD"]}))
    cells = _cells(experiment)
    corner = f"{SIMPLIFIED},lr=0.001"
    assert len(cells) == 16 + 1 and f"{PAPER},lr=0.01" in cells and corner in cells
    for trial in experiment.trials:  # all -1 breaks E = ABCD (a word of odd length): only it is outside
        a, b, c, d, e = _codes(experiment, trial.levels)
        assert (e == a * b * c * d) == (trial.variant != corner)
    record = provenance.run_info(experiment, tmp_path, 1000.0, False, {})["design"]
    assert record == {
        "spec": {"generators": ["E = ABCD"]},
        "generators": ["E = ABCD"],
        "words": ["ABCDE"],
        "resolution": 5,
        "defining_relation": "I = ABCDE",
        "runs": 16,
        "extra_cells": [corner],
    }


def test_a_factor_of_three_levels_stays_crossed_in_full():
    experiment = parse_experiment(_spec(factors={**DEFAULT_FACTORS, "lr": [0.01, 0.001, 0.1]}, design="half"))
    toggles = {tuple(t.levels[n] for n in TOGGLES) for t in experiment.trials}
    assert len(toggles) == 8 and len(experiment.trials) == 8 * 3 * 2
    for combo in toggles:
        lrs = sorted(t.levels["lr"] for t in experiment.trials if tuple(t.levels[n] for n in TOGGLES) == combo)
        assert lrs == sorted([0.01, 0.001, 0.1] * 2)


@pytest.mark.parametrize(
    "design, factors, message",
    [
        ("hafl", None, "design: 'hafl' is not a design (did you mean 'half'?)"),
        ({"fraction": "1/3"}, None, "design.fraction: '1/3' is not 1/2^p"),
        ({"fracton": "1/2"}, None, "design.fracton: unknown key (did you mean 'fraction'?)"),
        ({"fraction": "1/2", "generators": ["D = ABC"]}, None, "not both"),
        ({"generators": ["D = A"]}, None, "design.generators: I = AD aliases the main effects"),
        ({"generators": "D = ABC"}, None, "design.generators: expected a non-empty list"),
        ("half", {"tau2_weight": [True, False]}, "design: half of 1 two-level factors: no basic factor left"),
        (None, None, "design: expected full, half or a mapping"),
    ],
)
def test_a_bad_design_is_one_line_naming_the_key(design, factors, message):
    extra = {"factors": factors} if factors else {}
    with pytest.raises(ExperimentError) as error:
        parse_experiment(_spec(design=design, **extra))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_dry_run_prints_the_design_its_resolution_and_aliases(tmp_path, capsys):
    path = write_experiment(tmp_path, factors=DEFAULT_FACTORS)
    assert main(["run", str(path), "design=half", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "design: 2^(4-1) fraction, D = ABC" in out and "runs: 8 of 16, both corners among them" in out
    assert (
        "resolution IV: I = ABCD" in out and "bootstrap_space:half_step = tau2_weight:tau_sampling" in out
    )  # yaml sorts the factors
    assert "8 cells x 2 seeds = 16 trials" in out
    assert out.index("resolution IV") < out.index(f"{PAPER}__seed0")  # above the matrix
    assert main(["run", str(path), "--dry-run"]) == 0
    assert "design: full factorial of 4 two-level factors, 16 runs" in capsys.readouterr().out
    assert main(["run", str(path), "design=quarter", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ablate: error: ") and err.count("\n") == 1 and "design: 'quarter' is not a design" in err
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "factors, design",
    [
        (DEFAULT_FACTORS, "full"),
        (DEFAULT_FACTORS, "half"),
        ({"tau2_weight": [False, True], **DEFAULT_FACTORS, "lr": [0.01, 0.001]}, {"generators": ["E = ABCD"]}),
        (  # the reference listed second, a factor crossed in full, the extra corner of a resolution III design
            {"lr": [0.01, 0.001, 0.1], "half_step": ["renoise", "velocity"], **DEFAULT_FACTORS, "batch_size": [8, 16]},
            {"fraction": 0.25},
        ),
    ],
)
def test_run_json_rebuilds_the_design(tmp_path, factors, design):
    """The analysis's reading of run.json (factors, their references, the generators) gives the design
    the trials ran, cell for cell, and `extra_cells` are its extra corner's cells."""
    experiment = parse_experiment(_spec(factors=factors, design=design))
    info = provenance.run_info(experiment, tmp_path, 1000.0, False, {})
    (tmp_path / "run.json").write_text(json.dumps(provenance.jsonable(info)))
    results = load(tmp_path)
    generators = results.run["design"]["generators"]
    rebuilt = parse_design(
        {"generators": generators} if generators else "full", results.factor_levels, results.reference_levels
    )
    original = experiment.design
    assert (rebuilt.two_level, rebuilt.runs, rebuilt.extra_runs) == (
        original.two_level,
        original.runs,
        original.extra_runs,
    )
    assert (rebuilt.words, rebuilt.resolution) == (original.words, original.resolution)
    assert rebuilt.cells() == original.cells()
    extra = [t.variant for t in experiment.trials if t.levels in rebuilt.extra_cells()]
    assert results.run["design"]["extra_cells"] == list(dict.fromkeys(extra))
    assert results.run["design"]["runs"] == len(rebuilt.runs) and results.run["design"]["spec"] == design


def test_resume_refuses_another_design_and_reads_an_old_folder_as_full(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    half = parse_experiment(_spec(design="half"))
    (output / "experiment.json").write_text(json.dumps(provenance.jsonable(half.spec)))
    runner.check_output(parse_experiment(_spec(design={"generators": ["D = ABC"]})), output, resume=True, force=False)
    full = parse_experiment(_spec())
    with pytest.raises(ExperimentError, match="the experiment changed"):
        runner.check_output(full, output, resume=True, force=False)
    before_designs = {k: v for k, v in provenance.jsonable(full.spec).items() if k != "design"}
    (output / "experiment.json").write_text(json.dumps(before_designs))  # a folder from before `design:`
    runner.check_output(full, output, resume=True, force=False)
    with pytest.raises(ExperimentError, match="the experiment changed"):
        runner.check_output(half, output, resume=True, force=False)


def _started_folder(folder, experiment, without_design=False):
    """A results folder as `ablate run` leaves it before any trial finished: experiment.json, run.json."""
    folder.mkdir()
    spec = provenance.jsonable(experiment.spec)
    if without_design:
        del spec["design"]
    (folder / "experiment.json").write_text(json.dumps(spec))
    (folder / "run.json").write_text(
        json.dumps(provenance.jsonable(provenance.run_info(experiment, folder, 1000.0, False, {})))
    )
    return folder


def test_merge_refuses_runs_of_different_designs(tmp_path, capsys):
    full = _started_folder(tmp_path / "full", parse_experiment(_spec(seeds=[0])))
    half = _started_folder(tmp_path / "half", parse_experiment(_spec(seeds=[1], design="half")))
    target = tmp_path / "merged"
    assert main(["merge", str(full), str(half), "--output", str(target), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ablate: error: ") and err.count("\n") == 1
    assert "different experiments (design: 'full' vs {'generators': ['D = ABC']})" in err
    assert not target.exists()
    old = _started_folder(tmp_path / "old", parse_experiment(_spec(seeds=[2])), without_design=True)
    assert main(["merge", str(full), str(old), "--output", str(target), "--no-report"]) == 0
    assert json.loads((target / "experiment.json").read_text())["design"] == "full"
    assert json.loads((target / "run.json").read_text())["design"]["runs"] == 16


@pytest.mark.slow
def test_a_half_fraction_runs_end_to_end(tmp_path, ray_session):
    path = write_experiment(
        tmp_path,
        name="half",
        factors=DEFAULT_FACTORS,
        seeds=[0],
        train={"steps": 10, "batch_size": 8, "log_every": 5},
        eval={"steps": [1, 8]},
    )
    # one pack of the 8 trials: one Ray process, half the time of eight
    assert main(["run", str(path), "design=half", "pack=8", "--no-report"]) == 0
    out = tmp_path / "results" / "half"
    trials = pd.read_csv(out / "trials.csv")
    expected = [t.trial_id for t in load_experiment(path, ["design=half"]).trials]
    assert len(expected) == 8 and sorted(trials["trial_id"]) == sorted(expected)
    assert (trials["status"] == "ok").all() and {PAPER, SIMPLIFIED} <= set(trials["variant"])
    run = json.loads((out / "run.json").read_text())
    assert run["design"]["spec"] == "half" and run["design"]["generators"] == ["D = ABC"]
    assert run["design"]["resolution"] == 4 and run["design"]["extra_cells"] == []
    assert run["config"]["design"] == {"generators": ["D = ABC"]} and run["overrides"] == ["design=half", "pack=8"]
