"""What an experiment's cells and task must pass before anything runs: every cell's objective builds, its
evaluation step counts exist, the task builds with each set of its params and its model takes every step
size its trials use. Each failure is one line (an ExperimentError) while nothing has been written yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ablate.config import ExperimentError, TrialConfig
from ablate.objective import ShortcutForcing
from ablate.tasks import check_model_levels, declarations, make_task, model_arguments, model_levels
from ablate.trial import build_objective

if TYPE_CHECKING:
    from ablate.experiment import TrialSpec


def check_cell(config: TrialConfig, label: str) -> None:
    """Build the cell's objective and check eval steps: impossible values fail before anything runs."""
    try:
        objective: ShortcutForcing = build_objective(config.objective)
    except ValueError as error:
        raise ExperimentError(f"cell {label}: {error}") from None
    if config.eval.steps is not None:
        for k in config.eval.steps:
            if k not in objective.step_counts:
                raise ExperimentError(
                    f"eval.steps: {k!r} is not a power of two <= k_max="
                    f"{objective.k_max}; allowed: {list(objective.step_counts)}"
                )


def check_task(spec: dict, trials: Sequence[TrialSpec]) -> dict:
    """Build the task once per task-param combination, so a bad param fails now, not in a trial, and call
    its model at the step sizes its trials use, once per set of them and what its factory is told
    (`check_model_levels`), so a model that cannot take a level fails now too; return what the report
    needs of the task (from the first combination)."""
    tasks, checked = {}, set()
    for config in (trial.config for trial in trials):
        params = repr(config.task_params)
        if params not in tasks:
            try:
                tasks[params] = make_task(spec["task"], config.task_params)
            except ValueError as error:
                raise ExperimentError(f"task_params: {error}") from None
            except Exception as error:  # a user's task may raise anything: still one line, before any trial
                what = f"{type(error).__name__}: {error}"
                raise ExperimentError(f"task: building {spec['task']!r} failed: {what}") from None
        task, objective = tasks[params], build_objective(config.objective)
        steps = model_levels(objective, config.eval.steps or objective.step_counts)
        key = (params, repr(model_arguments(task, config.objective)), steps)
        if key not in checked:
            checked.add(key)
            try:
                check_model_levels(task, spec["task"], config.objective, objective, steps)
            except ValueError as error:
                raise ExperimentError(str(error)) from None
    first = next(iter(tasks.values()))
    try:
        declared = declarations(first)
    except ValueError as error:
        raise ExperimentError(f"task {spec['task']!r}: {error}") from None
    return {
        "sample_format": first.sample_format,
        "primary_metric": first.primary_metric,
        "metric_directions": dict(first.metric_directions),
        **declared._asdict(),
    }
