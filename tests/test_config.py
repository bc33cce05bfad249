"""Typed configuration: one dataclass per section of an experiment file, one name per setting."""

import dataclasses

import pytest
import yaml

from ablate.config import (
    FACTOR_SECTIONS,
    EvalConfig,
    ExperimentError,
    ObjectiveConfig,
    TrainConfig,
    TrialConfig,
)
from ablate.experiment import parse_experiment


def test_a_config_round_trips_through_plain_data_and_yaml():
    config = TrialConfig(
        task="toy2d",
        task_params={"dataset": "moons"},
        objective=ObjectiveConfig(k_max=16, tau2_weight=False),
        train=TrainConfig(steps=10, grad_clip=None),
        eval=EvalConfig(steps=[1, 4]),
        seed=3,
    )
    plain = yaml.safe_load(yaml.safe_dump(config.to_dict()))  # what records and Ray's param space hold
    assert TrialConfig.from_dict(plain) == config
    assert plain["train"]["steps"] == 10 and plain["eval"]["steps"] == [1, 4]


def test_each_yaml_section_is_its_dataclass_field_for_field():
    """The keys of `objective:` and `train:` in a file are the dataclass fields, so a file's resolved
    sections (run.json `config`) and a trial's config use the same names."""
    experiment = parse_experiment({"name": "x", "task": "toy2d", "train": {"steps": 7}, "seeds": [0]})
    assert experiment.spec["train"] == dataclasses.asdict(experiment.trials[0].config.train)
    assert set(experiment.spec["objective"]) == {f.name for f in dataclasses.fields(ObjectiveConfig)}
    assert experiment.trials[0].config.train.steps == 7


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TrainConfig(lr=-1), "train.lr: must be > 0, got -1"),
        (lambda: TrainConfig(steps=2.5), "train.steps: expected a whole number, got 2.5"),
        (lambda: TrainConfig(eval_ema=1.0), r"train.eval_ema: an EMA decay must be in \[0, 1\), got 1.0"),
        (lambda: TrainConfig(teacher="selff"), "train.teacher: 'selff' is not allowed .did you mean 'self'"),
        (lambda: ObjectiveConfig(tau2_weight="yes"), "objective.tau2_weight: 'yes' is not allowed"),
        (lambda: EvalConfig(steps=[]), "eval.steps: must be a non-empty list"),
        (lambda: TrialConfig.from_dict({"train": {"step": 5}}), "train.step: unknown key .did you mean 'steps'"),
        (lambda: TrialConfig.from_dict({"trian": {}}), "trian: unknown key .did you mean 'train'"),
    ],
)
def test_a_bad_value_is_one_line_naming_its_key(build, message):
    with pytest.raises(ExperimentError, match=message):
        build()


def test_with_levels_sets_factors_by_field_name_and_checks_them_again():
    base = TrialConfig()
    varied = base.with_levels({"lr": "3e-4", "tau2_weight": False, "steps": 10, "task_params.hidden": 64})
    assert varied.train.lr == 3e-4 and varied.objective.tau2_weight is False and varied.train.steps == 10
    assert varied.task_params == {"hidden": 64} and base.task_params == {}  # a new config: frozen, not edited
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.seed = 1
    with pytest.raises(ExperimentError, match="train.grad_clip: must be > 0"):
        base.with_levels({"grad_clip": 0})
    assert FACTOR_SECTIONS["steps"] == "train" and FACTOR_SECTIONS["half_step"] == "objective"
