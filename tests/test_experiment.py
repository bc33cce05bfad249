"""Experiment files: the shipped ones parse, factors expand into the right trial configs, bad ones are named."""

import importlib.util
from pathlib import Path

import pytest
import torch
from conftest import TINY_TASK

from ablate.experiment import ExperimentError, load_experiment, parse_experiment
from ablate.trial import Trial, run_trial

NEEDS_PACKAGE = {"dreamer4_world": "dreamer4"}  # examples of a public model: parsed where its package is installed
EXPERIMENTS = [
    pytest.param(
        path,
        marks=pytest.mark.skipif(
            path.stem in NEEDS_PACKAGE and importlib.util.find_spec(NEEDS_PACKAGE[path.stem]) is None,
            reason=f"needs the {NEEDS_PACKAGE.get(path.stem)} package (pip install {NEEDS_PACKAGE.get(path.stem)})",
        ),
    )
    for path in sorted((Path(__file__).parent.parent / "experiments").glob("*.yaml"))
]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: getattr(p, "stem", str(p)))
def test_shipped_experiments_parse(path):
    experiment = load_experiment(path)
    assert experiment.name == path.stem
    cells = {t.variant for t in experiment.trials}
    assert len(experiment.trials) == len(cells) * len(experiment.spec["seeds"])
    assert len({t.trial_id for t in experiment.trials}) == len(experiment.trials)


def test_default_factors_are_the_four_toggles_with_the_paper_as_reference():
    experiment = parse_experiment(
        {"name": "x", "task": TINY_TASK, "objective": {"k_max": 8}, "seeds": [0, 1], "baseline": True}
    )
    assert experiment.reference == {
        "tau_sampling": "grid",
        "bootstrap_space": "velocity",
        "half_step": "velocity",
        "tau2_weight": True,
    }
    assert len(experiment.trials) == 17 * 2
    flow = [t for t in experiment.trials if t.variant == "flow"]
    assert len(flow) == 2 and all(t.config.objective.family == "ablate.families.flow:FAMILY" for t in flow)
    assert all(v is None for v in flow[0].levels.values())


def test_training_objective_and_task_keys_can_be_factors():
    experiment = parse_experiment(
        {
            "name": "x",
            "task": TINY_TASK,
            "objective": {"k_max": 8},
            "seeds": [3],
            "factors": {"lr": ["1e-3", 3e-4], "k_max": [4, 8], "task_params.separation": [1.0, 3.0]},
            "eval": {"steps": [1, 4]},
        }
    )
    assert len(experiment.trials) == 8
    configs = [t.config for t in experiment.trials]
    assert {c.train.lr for c in configs} == {1e-3, 3e-4}  # "1e-3" (a string to YAML 1.1) is read as a number
    assert {c.objective.k_max for c in configs} == {4, 8}
    assert {c.task_params["separation"] for c in configs} == {1.0, 3.0}
    assert all(c.seed == 3 for c in configs)
    assert experiment.trials[0].variant == "grid_vboot_vstep_w2,lr=0.001,k_max=4,task_params.separation=1.0"


def test_a_model_is_told_each_k_max_and_one_that_cannot_take_a_level_fails_before_any_trial():
    """A model that looks d up in a table of k_max + 1 rows (tests/tiny_task.py) is sized from each
    cell's k_max and trains; a table too small for k_max is one line naming the level, from a check that
    leaves torch's random state as it was (the trials' numbers do not change)."""
    spec = {
        "name": "x",
        "task": f"{TINY_TASK}:make_step_table_task",
        "factors": {"k_max": [4, 8]},
        "train": {"steps": 5, "batch_size": 8, "log_every": 5},
        "eval": {"steps": [1, 4]},
    }
    state = torch.get_rng_state()
    experiment = parse_experiment(spec)
    assert torch.equal(torch.get_rng_state(), state)
    for trial in experiment.trials:
        assert Trial(trial.config).model.step_table.num_embeddings == trial.config.objective.k_max + 1
        assert run_trial(trial.config).status == "ok"
    with pytest.raises(
        ExperimentError,
        match=r"^model of task '.*:make_step_table_task' rejects d = 1/8 \(objective.k_max = 8\): "
        r"IndexError: index out of range in self$",
    ):
        parse_experiment({**spec, "task_params": {"steps": 5}})


def test_eval_steps_must_fit_every_k_max_level():
    with pytest.raises(ExperimentError, match="eval.steps"):
        parse_experiment({"name": "x", "task": TINY_TASK, "factors": {"k_max": [4, 8]}, "eval": {"steps": [8]}})


def test_a_relative_user_task_path_is_made_absolute(tmp_path, monkeypatch):
    (tmp_path / "task.py").write_text(Path(TINY_TASK).read_text())
    (tmp_path / "exp.yaml").write_text("name: rel\ntask: task.py\nobjective: {k_max: 8}\n")
    monkeypatch.chdir("/")
    experiment = load_experiment(tmp_path / "exp.yaml")
    assert experiment.trials[0].config.task == str(tmp_path / "task.py")


def test_invalid_yaml_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ExperimentError, match="not valid YAML"):
        load_experiment(path)


def test_packs_group_trials_that_can_share_one_in_as_few_even_packs_as_the_size_allows():
    spec = {"name": "x", "task": TINY_TASK, "objective": {"k_max": 8}, "seeds": [0, 1], "baseline": True}
    sizes = lambda pack: [len(p) for p in parse_experiment({**spec, "pack": pack}).packs()]  # noqa: E731
    assert sizes(32) == [17, 17] and sizes(10) == [9, 9, 8, 8] and sizes(34) == [34] and sizes(1) == [1] * 34
    packs = parse_experiment({**spec, "pack": 10}).packs()
    assert [t.trial_id for p in packs for t in p] == [t.trial_id for t in parse_experiment(spec).trials]
    different_batch = {**spec, "factors": {"batch_size": [8, 16]}, "baseline": False, "pack": 32}
    packs = parse_experiment(different_batch).packs()
    assert [len(p) for p in packs] == [2, 2] and all(len({t.config.train.batch_size for t in p}) == 1 for p in packs)
