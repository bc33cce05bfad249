"""Experiment files: parse and validate a YAML spec, then expand it into the factor x seed trial matrix.

Everything is checked here, before Ray starts or a file is written: a typo names the key, the allowed
values and a did-you-mean suggestion.
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from ablate.families import BASELINE_FAMILY, family_spec, load_family
from ablate.objective import ShortcutForcing
from ablate.tasks import BUILTIN_TASKS, make_task
from ablate.trackers import parse_loggers
from ablate.trial import DEFAULTS, TEACHERS, build_objective
from ablate.variants import TOGGLES

TOP_LEVEL = (
    "name",
    "task",
    "task_params",
    "objective",
    "factors",
    "baseline",
    "seeds",
    "train",
    "eval",
    "resources",
    "max_concurrent",
    "primary",
    "output",
    "checkpoint_seconds",
    "max_failures",
    "labels",
    "loggers",
)
OBJECTIVE_KEYS = (
    "family",
    "k_max",
    "ramp",
    "step_sizes",
    "bootstrap_fraction",
    "bootstrap_weight",
    "teacher_context",
    *TOGGLES,
)
TRAIN_KEYS = {  # YAML key under `train:` -> trial config key
    "steps": "train_steps",
    "batch_size": "batch_size",
    "lr": "lr",
    "lr_final": "lr_final",
    "grad_clip": "grad_clip",
    "teacher": "teacher",
    "teacher_decay": "teacher_decay",
    "bootstrap_start": "bootstrap_start",
    "eval_ema": "eval_ema",
    "log_every": "log_every",
    "divergence_loss": "divergence_loss",
    "timeout_seconds": "timeout_seconds",
}
EVAL_KEYS = ("steps", "seed")
RESOURCE_KEYS = ("cpu", "gpu")
PRIMARY_KEYS = ("metric", "steps")
# Keys a factor may vary: the toggles, the objective's other knobs, the training keys, and task params
# written as `task_params.NAME`.
FACTOR_KEYS = (*OBJECTIVE_KEYS, *TRAIN_KEYS)
DEFAULT_FACTORS = {name: list(levels) for name, levels in TOGGLES.items()}


class ExperimentError(ValueError):
    """A problem in an experiment file, reported as one line naming the key."""


@dataclass(frozen=True)
class TrialSpec:
    trial_id: str
    variant: str
    levels: dict  # factor name -> level (None for toggles of the baseline cell)
    seed: int
    config: dict  # the flat trial config (see ablate.trial.DEFAULTS)


@dataclass
class Experiment:
    name: str
    source: Path | None
    spec: dict  # resolved, defaults filled in
    factors: dict[str, list]
    reference: dict  # factor -> the level coded +1 (the paper's for the toggles, else the first listed)
    trials: list[TrialSpec]
    resources: dict
    max_concurrent: int | None
    task: dict  # what the report needs of the task: sample_format, primary_metric, metric_directions
    overrides: tuple = ()  # the command-line overrides applied to the file, as given

    @property
    def k_max(self) -> int:
        return self.spec["objective"]["k_max"]

    def expected_trials(self) -> list[dict]:
        """Every trial of the matrix as the results contract lists it: id, cell label, levels, seed."""
        return [{"trial_id": t.trial_id, "variant": t.variant, **t.levels, "seed": t.seed} for t in self.trials]


def _suggest(key: str, allowed) -> str:
    close = difflib.get_close_matches(str(key), [str(a) for a in allowed], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; allowed: {', '.join(map(str, allowed))}"


def _check_keys(section: str, mapping, allowed) -> None:
    if not isinstance(mapping, dict):
        raise ExperimentError(f"{section}: must be a mapping of key: value, got {type(mapping).__name__}")
    for key in mapping:
        if key not in allowed and not (section == "factors" and str(key).startswith("task_params.")):
            where = f"{section}.{key}" if section else str(key)
            raise ExperimentError(f"{where}: unknown key{_suggest(key, allowed)}")


def _number(where: str, value, *, integer=False, minimum=None, positive=False, allow_none=False):
    """Numbers from YAML; `1e-3` (a string to YAML 1.1) is accepted as the number it means."""
    if value is None and allow_none:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ExperimentError(f"{where}: expected a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ExperimentError(f"{where}: expected a {'whole ' if integer else ''}number, got {value!r}")
    if integer:
        if value != int(value):
            raise ExperimentError(f"{where}: expected a whole number, got {value!r}")
        value = int(value)
    if positive and value <= 0:
        raise ExperimentError(f"{where}: must be > 0, got {value!r}")
    if minimum is not None and value < minimum:
        raise ExperimentError(f"{where}: must be >= {minimum}, got {value!r}")
    return value


def load_experiment(path: str | Path, overrides: Sequence[str] = ()) -> Experiment:
    """Read, override (``train.steps=500``, ``seeds=[0,1,2]``, ...) and validate an experiment file."""
    path = Path(path)
    if not path.is_file():
        raise ExperimentError(f"{path}: no such experiment file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ExperimentError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    try:
        experiment = parse_experiment(apply_overrides(raw, overrides), source=path)
    except ExperimentError as error:
        raise ExperimentError(f"{path}{' with ' + ' '.join(overrides) if overrides else ''}: {error}") from None
    experiment.overrides = tuple(overrides)
    return experiment


def apply_overrides(raw, overrides: Sequence[str]) -> dict:
    """Command-line overrides ``dotted.key=value`` (the value is YAML: ``[0, 1]``, ``true``, ``1e-3``)
    applied to the parsed file, then validated exactly like the file. A factor override replaces that
    factor's levels and keeps the others (the four toggles when the file names none)."""
    if not overrides:
        return raw
    raw = dict(raw) if isinstance(raw, dict) else {}
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ExperimentError(f"override {override!r}: expected dotted.key=value, e.g. train.steps=500")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ExperimentError(
                f"override {override!r}: the value is not valid YAML ({str(error).splitlines()[0]})"
            ) from None
        head, _, rest = key.partition(".")
        if not rest:
            raw[head] = value
            continue
        if head not in TOP_LEVEL:
            raise ExperimentError(f"{head}: unknown key{_suggest(head, TOP_LEVEL)}")
        section = raw.get(head)
        if section is None and head == "factors":
            section = {name: list(levels) for name, levels in DEFAULT_FACTORS.items()}
        section = dict(section or {}) if isinstance(section, dict) or section is None else section
        if not isinstance(section, dict):
            raise ExperimentError(f"{head}: is not a mapping, so {key} cannot be set")
        section[rest] = value  # `factors.task_params.x` keeps its dotted name, as in the file
        raw[head] = section
    return raw


def parse_experiment(raw, source: Path | None = None) -> Experiment:
    """Validate a spec (the parsed YAML) and expand its trial matrix."""
    if not isinstance(raw, dict):
        raise ExperimentError("the file must hold a mapping with at least `name`, `task` and `seeds`")
    _check_keys("", raw, TOP_LEVEL)
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ExperimentError(f"name: must be a word of letters, digits, '_', '-' or '.', got {name!r}")

    task = raw.get("task", "toy2d")
    if not isinstance(task, str):
        raise ExperimentError(
            f"task: must be a built-in name ({', '.join(BUILTIN_TASKS)}), "
            f"'module:function' or a path to a .py file, got {task!r}"
        )
    task = _absolute_task_path(task, source)
    task_params = raw.get("task_params") or {}
    if not isinstance(task_params, dict):
        raise ExperimentError("task_params: must be a mapping")

    objective = {k: DEFAULTS[k] for k in OBJECTIVE_KEYS}
    _check_keys("objective", raw.get("objective") or {}, OBJECTIVE_KEYS)
    objective.update(raw.get("objective") or {})
    objective["k_max"] = _number("objective.k_max", objective["k_max"], integer=True, positive=True)
    try:  # the family must import here, before any trial runs
        load_family(family_spec(str(objective["family"])))
    except ValueError as error:
        raise ExperimentError(str(error)) from None

    train = {k: DEFAULTS[v] for k, v in TRAIN_KEYS.items()}
    _check_keys("train", raw.get("train") or {}, TRAIN_KEYS)
    train.update(raw.get("train") or {})
    _check_train(train)

    evaluation = {"steps": None, "seed": 0, **_section(raw, "eval", EVAL_KEYS)}
    evaluation["seed"] = _number("eval.seed", evaluation["seed"], integer=True, minimum=0)

    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds:
        raise ExperimentError("seeds: must be a non-empty list of whole numbers, e.g. [0, 1, 2]")
    seeds = [_number("seeds", s, integer=True, minimum=0) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise ExperimentError(f"seeds: must not repeat a seed, got {seeds}")

    factors = _parse_factors(raw.get("factors", DEFAULT_FACTORS))
    for key in set(factors) & set(TRAIN_KEYS):  # each level checked as if it were the `train:` value
        factors[key] = [_check_train({**train, key: level})[key] for level in factors[key]]
    baseline = raw.get("baseline", False)
    if not isinstance(baseline, bool):
        raise ExperimentError(f"baseline: must be true or false, got {baseline!r}")

    resources = {"cpu": 1, "gpu": 0, **_section(raw, "resources", RESOURCE_KEYS)}
    resources["cpu"] = _number("resources.cpu", resources["cpu"], positive=True)
    if resources["gpu"] != "auto":
        resources["gpu"] = _number("resources.gpu", resources["gpu"], minimum=0)
        if resources["gpu"] > 1 and resources["gpu"] != int(resources["gpu"]):
            raise ExperimentError(f"resources.gpu: a share above 1 must be whole, got {resources['gpu']}")
    max_concurrent = _number("max_concurrent", raw.get("max_concurrent"), integer=True, positive=True, allow_none=True)

    labels = raw.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise ExperimentError(
            "labels: must map a cell label or a role (paper, simplified, baseline) to a "
            "display name, e.g. {paper: DreamerV4, simplified: port}"
        )
    try:
        loggers = parse_loggers(raw.get("loggers"), _suggest)
    except ValueError as error:
        raise ExperimentError(str(error)) from None
    spec = {
        "name": name,
        "task": task,
        "labels": {str(k): v for k, v in labels.items()},
        "loggers": loggers,
        "task_params": task_params,
        "objective": objective,
        "factors": factors,
        "baseline": baseline,
        "seeds": seeds,
        "train": train,
        "eval": evaluation,
        "resources": resources,
        "max_concurrent": max_concurrent,
        "primary": _section(raw, "primary", PRIMARY_KEYS),
        "output": raw.get("output"),
        "checkpoint_seconds": _number("checkpoint_seconds", raw.get("checkpoint_seconds", 10.0), positive=True),
        "max_failures": _number("max_failures", raw.get("max_failures", 2), integer=True, minimum=0),
    }
    reference = {f: (TOGGLES[f][0] if f in TOGGLES else levels[0]) for f, levels in factors.items()}
    trials = _expand(spec, factors)
    task = _check_task(spec, factors)
    return Experiment(name, source, spec, factors, reference, trials, resources, max_concurrent, task)


def _section(raw: dict, key: str, allowed) -> dict:
    value = raw.get(key) or {}
    _check_keys(key, value, allowed)
    return dict(value)


def _absolute_task_path(task: str, source: Path | None) -> str:
    """Trials run in another working directory: a user task file is made absolute now."""
    file_part, sep, function = task.partition(":") if not task.endswith(".py") else (task, "", "")
    if not file_part.endswith(".py"):
        return task
    path = Path(file_part).expanduser()
    if not path.is_absolute():
        candidates = [Path.cwd() / path] + ([source.parent / path] if source else [])
        path = next((p for p in candidates if p.is_file()), candidates[0])
    return str(path.resolve()) + sep + function


def _check_train(train: dict) -> dict:
    train["steps"] = _number("train.steps", train["steps"], integer=True, positive=True)
    train["batch_size"] = _number("train.batch_size", train["batch_size"], integer=True, positive=True)
    train["log_every"] = _number("train.log_every", train["log_every"], integer=True, positive=True)
    train["bootstrap_start"] = _number("train.bootstrap_start", train["bootstrap_start"], integer=True, minimum=0)
    for key in ("lr", "lr_final", "divergence_loss"):
        train[key] = _number(f"train.{key}", train[key], positive=True)
    train["grad_clip"] = _number("train.grad_clip", train["grad_clip"], positive=True, allow_none=True)
    train["timeout_seconds"] = _number(
        "train.timeout_seconds", train["timeout_seconds"], positive=True, allow_none=True
    )
    train["eval_ema"] = _number("train.eval_ema", train["eval_ema"], minimum=0, allow_none=True)
    train["teacher_decay"] = _number("train.teacher_decay", train["teacher_decay"], minimum=0)
    for key in ("teacher_decay", "eval_ema"):
        if train[key] is not None and not train[key] < 1:
            raise ExperimentError(f"train.{key}: an EMA decay must be in [0, 1), got {train[key]}")
    if train["teacher"] not in TEACHERS:
        raise ExperimentError(
            f"train.teacher: {train['teacher']!r} is not allowed{_suggest(train['teacher'], TEACHERS)}"
        )
    return train


def _parse_factors(factors) -> dict[str, list]:
    if factors is None:
        factors = {}
    _check_keys("factors", factors, FACTOR_KEYS)
    parsed = {}
    for name, levels in factors.items():
        if not isinstance(levels, list) or not levels:
            raise ExperimentError(f"factors.{name}: must be a non-empty list of levels, e.g. [a, b]")
        if len({repr(level) for level in levels}) != len(levels):
            raise ExperimentError(f"factors.{name}: repeats a level: {levels}")
        if name in TOGGLES:
            for level in levels:
                if level not in TOGGLES[name] or type(level) is not type(TOGGLES[name][0]):
                    raise ExperimentError(
                        f"factors.{name}: level {level!r} is not allowed{_suggest(level, TOGGLES[name])}"
                    )
        parsed[str(name)] = list(levels)
    return parsed


def _cell_config(spec: dict, levels: dict, baseline: bool) -> dict:
    """The flat trial config of one cell (without seed and id)."""
    o, t, e = spec["objective"], spec["train"], spec["eval"]
    config = {k: o[k] for k in OBJECTIVE_KEYS}
    config.update({TRAIN_KEYS[k]: v for k, v in t.items()})
    config.update(task=spec["task"], task_params=dict(spec["task_params"]), eval_steps=e["steps"], eval_seed=e["seed"])
    for name, level in levels.items():
        if name.startswith("task_params."):
            config["task_params"][name.split(".", 1)[1]] = level
        elif level is not None:
            config[TRAIN_KEYS.get(name, name)] = level
    # what a Ray worker imports: the family's "module:attribute" (the baseline cells: the flow family)
    config["family"] = family_spec(BASELINE_FAMILY if baseline else str(config["family"]))
    return config


def _expand(spec: dict, factors: dict) -> list[TrialSpec]:
    """The factor x seed matrix, plus the flow-only baseline cells (one per level of the non-toggle factors)."""
    cells = []
    names = list(factors)
    for combo in itertools.product(*factors.values()):
        cells.append((dict(zip(names, combo)), False))
    if spec["baseline"]:
        extras = [n for n in names if n not in TOGGLES]
        for combo in itertools.product(*(factors[n] for n in extras)):
            levels = {n: None for n in names if n in TOGGLES} | dict(zip(extras, combo))
            cells.append((levels, True))
    trials = []
    for levels, baseline in cells:
        config = _cell_config(spec, levels, baseline)
        label = cell_label(config, levels)
        _check_cell(config, label)
        for seed in spec["seeds"]:
            trial_id = re.sub(r"[^A-Za-z0-9_.=-]+", "-", f"{label}__seed{seed}")
            trials.append(TrialSpec(trial_id, label, levels, seed, {**config, "seed": seed}))
    return trials


def cell_label(config: dict, levels: dict) -> str:
    """The family's name for the cell, then ``,factor=level`` for every factor that is not a toggle."""
    extras = "".join(f",{name}={level}" for name, level in levels.items() if name not in TOGGLES)
    return load_family(config["family"]).cell_label(config) + extras


def _check_cell(config: dict, label: str) -> None:
    """Build the cell's objective and check eval steps: impossible values fail before anything runs."""
    try:
        objective: ShortcutForcing = build_objective(config)
    except ValueError as error:
        raise ExperimentError(f"cell {label}: {error}") from None
    steps = config["eval_steps"]
    if steps is not None:
        if not isinstance(steps, list) or not steps:
            raise ExperimentError(f"eval.steps: must be a non-empty list of step counts, got {steps!r}")
        for k in steps:
            if k not in objective.step_counts:
                raise ExperimentError(
                    f"eval.steps: {k!r} is not a power of two <= k_max="
                    f"{objective.k_max}; allowed: {list(objective.step_counts)}"
                )


def _check_task(spec: dict, factors: dict) -> dict:
    """Build the task once per task-param combination, so a bad param fails now, not in a trial; return
    what the report needs of it (from the first combination)."""
    task_factors = {n: v for n, v in factors.items() if n.startswith("task_params.")}
    first = None
    for combo in itertools.product(*task_factors.values()) if task_factors else [()]:
        params = dict(spec["task_params"])
        params.update({n.split(".", 1)[1]: level for n, level in zip(task_factors, combo)})
        try:
            task = make_task(spec["task"], params)
        except ValueError as error:
            raise ExperimentError(f"task_params: {error}") from None
        except Exception as error:  # a user's task may raise anything: still one line, before any trial
            raise ExperimentError(f"task: building {spec['task']!r} failed: {type(error).__name__}: {error}") from None
        first = task if first is None else first
    return {
        "sample_format": first.sample_format,
        "primary_metric": first.primary_metric,
        "metric_directions": dict(first.metric_directions),
    }
