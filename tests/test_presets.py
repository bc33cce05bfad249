"""Named implementations as cells: `objective.preset` and a `preset` factor, labelled by name."""

from __future__ import annotations

import pytest
from conftest import TINY_TASK

from ablate.experiment import ExperimentError, parse_experiment
from ablate.presets import PRESETS, preset_toggles
from ablate.variants import Variant


def _experiment(**spec):
    return parse_experiment({"name": "x", "task": TINY_TASK, "seeds": [0], **spec})


def test_a_preset_factor_makes_one_cell_per_implementation_named_by_it_with_the_paper_as_reference():
    experiment = _experiment(objective={"k_max": 8}, factors={"preset": ["dreamer4", "paper", "reviewed"]})
    cells = {t.variant: t.config for t in experiment.trials}
    assert set(cells) == {"paper", "reviewed", "dreamer4"}
    assert experiment.reference == {"preset": "paper"}
    dreamer4 = cells["dreamer4"]
    for key, value in PRESETS["dreamer4"].objective.items():
        assert getattr(dreamer4.objective, key) == value, key
    assert (dreamer4.train.teacher, dreamer4.objective.preset, dreamer4.objective.k_max) == ("self", "dreamer4", 8)
    reviewed = cells["reviewed"]
    assert (
        Variant(
            *(getattr(reviewed.objective, t) for t in ("tau_sampling", "bootstrap_space", "half_step", "tau2_weight"))
        )
        == Variant.simplified()
    )
    assert (reviewed.objective.step_sizes, reviewed.objective.d_per, reviewed.train.teacher) == (
        "inverse",
        "sequence",
        "self",
    )
    assert cells["paper"].train.teacher == "ema"  # the file's (and every cell's) default: the paper preset sets none


def test_objective_preset_sets_defaults_that_the_files_keys_and_factors_override():
    experiment = _experiment(
        objective={"k_max": 8, "preset": "dreamer4", "sample_clamp": 2.0},
        train={"teacher": "ema"},
        factors={"flow_on_bootstrap": [True, False], "tau2_weight": [True, False]},
    )
    labels = {t.variant for t in experiment.trials}
    assert labels == {
        "dreamer4,flow_on_bootstrap=True",
        "dreamer4,flow_on_bootstrap=False",
        "dreamer4:grid_vboot_vstep_now2,flow_on_bootstrap=True",
        "dreamer4:grid_vboot_vstep_now2,flow_on_bootstrap=False",
    }
    config = experiment.trials[0].config
    assert (config.objective.sample_clamp, config.train.teacher, config.objective.ramp) == (2.0, "ema", "flow")


def test_an_unknown_preset_is_one_line_naming_the_presets():
    with pytest.raises(ExperimentError, match="'dreamer5' is not a preset .*did you mean 'dreamer4'"):
        _experiment(objective={"preset": "dreamer5"})
    with pytest.raises(ExperimentError, match="preset"):
        _experiment(factors={"preset": ["paper", "nope"]})


def test_the_paper_and_dreamer4_presets_keep_the_papers_toggles_and_the_review_its_corner():
    assert preset_toggles("paper") == preset_toggles("dreamer4") == Variant.paper().label
    assert preset_toggles("reviewed") == Variant.simplified().label


def test_a_preset_study_has_one_flow_baseline_and_a_paper_role_only_for_the_paper_preset():
    from ablate.provenance import _paper_variant

    experiment = _experiment(objective={"k_max": 8}, factors={"preset": ["paper", "dreamer4"]}, baseline=True)
    assert sorted({t.variant for t in experiment.trials}) == ["dreamer4", "flow", "paper"]
    assert _paper_variant(experiment) == "paper"
    from_dreamer4 = _experiment(
        objective={"k_max": 8, "preset": "dreamer4"}, factors={"flow_on_bootstrap": [True, False]}
    )
    assert _paper_variant(from_dreamer4) is None  # its reference cell is the package's objective, not the paper's
