"""Experiment files: parse and validate a YAML spec, then expand it into the trial matrix: the cells of its
design (:mod:`ablate.design`; the full factorial unless `design:` says otherwise) x seeds.

Everything is checked here, before Ray starts or a file is written: a typo names the key, the allowed
values and a did-you-mean suggestion.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from ablate.config import (
    FACTOR_SECTIONS,
    SECTIONS,
    EvalConfig,
    ExperimentError,
    ObjectiveConfig,
    TrainConfig,
    TrialConfig,
    check_keys,
    number,
    suggest,
)
from ablate.design import Design, parse_design
from ablate.experiment_checks import check_cell, check_task
from ablate.families import BASELINE_FAMILY, family_spec, load_family
from ablate.packing import pack_key
from ablate.presets import PRESETS
from ablate.rounds import SeedRounds, parse_seed_rounds
from ablate.tasks import BUILTIN_TASKS
from ablate.trackers import parse_loggers
from ablate.variants import TOGGLES

TOP_LEVEL = (
    "name",
    "task",
    "task_params",
    "objective",
    "factors",
    "design",
    "baseline",
    "seeds",
    "train",
    "eval",
    "resources",
    "max_concurrent",
    "pack",
    "primary",
    "output",
    "checkpoint_seconds",
    "max_failures",
    "labels",
    "loggers",
)
RESOURCE_KEYS = ("cpu", "gpu")
PRIMARY_KEYS = ("metric", "steps")
AUTO_PACK_GPU = 32  # `pack: auto` with a GPU: up to this many trials vectorised in one process
DEFAULT_FACTORS = {name: list(levels) for name, levels in TOGGLES.items()}
# Keys the resolved spec gained after results folders were written: an experiment.json without one ran
# the key's default (every grid before `design:` was the full factorial), so it is read with it.
LATER_SPEC_DEFAULTS = {"design": "full"}


@dataclass(frozen=True)
class TrialSpec:
    trial_id: str
    variant: str
    levels: dict  # factor name -> level (None for toggles of the baseline cell)
    seed: int
    config: TrialConfig


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
    task: dict  # what the report needs of the task: sample_format, primary_metric, metric_directions, declarations
    design: Design  # which cells the matrix holds; spec["design"] holds it normalised
    design_given: object  # the `design:` value as the file (or an override) gave it, for run.json
    overrides: tuple = ()  # the command-line overrides applied to the file, as given
    rounds: SeedRounds | None = None  # `seeds: {start, max, until}`: run in rounds (ablate.rounds); trials: every seed

    @property
    def pack_size(self) -> int:
        """Most trials per pack (ablate.packing): the `pack` key, or for `auto` 1 on CPUs (measured: only
        1.2x per member-step there, see docs/performance.md) and AUTO_PACK_GPU when trials get a GPU."""
        pack = self.spec["pack"]
        if pack != "auto":
            return pack
        return 1 if self.resources["gpu"] == 0 else AUTO_PACK_GPU

    def packs(self) -> list[list[TrialSpec]]:
        """The trials in packs of at most `pack_size`, each of trials that can share one (same task,
        model, batch and step schedule), in matrix order; with pack 1, one trial each. A group is cut
        into as few packs as the size allows, of sizes that differ by at most one (34 trials at most 32
        to a pack: 17 and 17, not 32 and 2), since a pack takes about as long as its largest sibling."""
        size = self.pack_size
        groups: dict[tuple, list[TrialSpec]] = {}
        for trial in self.trials:
            groups.setdefault(pack_key(trial.config) if size > 1 else (trial.trial_id,), []).append(trial)
        packs = []
        for group in groups.values():
            count = -(-len(group) // size)  # ceil
            base, extra = divmod(len(group), count)  # the first `extra` packs take one trial more
            start = 0
            for index in range(count):
                end = start + base + (index < extra)
                packs.append(group[start:end])
                start = end
        return packs

    @property
    def k_max(self) -> int:
        return self.spec["objective"]["k_max"]

    def expected_trials(self) -> list[dict]:
        """Every trial of the matrix as the results contract lists it: id, cell label, levels, seed."""
        return [{"trial_id": t.trial_id, "variant": t.variant, **t.levels, "seed": t.seed} for t in self.trials]


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
            raise ExperimentError(f"{head}: unknown key{suggest(head, TOP_LEVEL)}")
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
    check_keys("", raw, TOP_LEVEL)
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

    fields = {name: [f.name for f in dataclasses.fields(kind)] for name, kind in SECTIONS.items()}
    sections = {name: _section(raw, name, fields[name]) for name in SECTIONS}
    try:  # the family must import here, before any trial runs
        load_family(family_spec(str(sections["objective"].get("family", ObjectiveConfig.family))))
    except ValueError as error:
        raise ExperimentError(str(error)) from None
    preset = sections["objective"].get("preset")
    if preset is not None:  # the preset's keys are the defaults; keys the file sets win
        if preset not in PRESETS:
            raise ExperimentError(f"objective.preset: {preset!r} is not a preset{suggest(preset, list(PRESETS))}")
        sections["objective"] = {**PRESETS[preset].objective, **sections["objective"]}
        sections["train"] = {**PRESETS[preset].train, **sections["train"]}
    base = TrialConfig(
        task=task,
        task_params=task_params,
        objective=ObjectiveConfig(**sections["objective"]),
        train=TrainConfig(**sections["train"]),
        eval=EvalConfig(**sections["eval"]),
    )

    seeds = raw.get("seeds", [0])
    rounds = parse_seed_rounds(seeds) if isinstance(seeds, dict) else None
    if rounds is not None:  # the matrix holds every planned seed; each round runs its own
        seeds = rounds.seeds(len(rounds.looks) - 1)
    if not isinstance(seeds, list) or not seeds:
        raise ExperimentError(
            "seeds: must be a non-empty list of whole numbers, e.g. [0, 1, 2], or rounds, e.g. "
            "{start: 2, max: 8, until: resolved}"
        )
    seeds = [number("seeds", s, integer=True, minimum=0) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise ExperimentError(f"seeds: must not repeat a seed, got {seeds}")

    factors = _parse_factors(raw.get("factors", DEFAULT_FACTORS), base)
    reference = {f: _reference_level(f, levels) for f, levels in factors.items()}
    design_given = raw.get("design", "full")
    try:
        design = parse_design(design_given, factors, reference)
    except ValueError as error:
        raise ExperimentError(str(error)) from None
    baseline = raw.get("baseline", False)
    if not isinstance(baseline, bool):
        raise ExperimentError(f"baseline: must be true or false, got {baseline!r}")

    resources = {"cpu": 1, "gpu": 0, **_section(raw, "resources", RESOURCE_KEYS)}
    resources["cpu"] = number("resources.cpu", resources["cpu"], positive=True)
    if resources["gpu"] != "auto":
        resources["gpu"] = number("resources.gpu", resources["gpu"], minimum=0)
        if resources["gpu"] > 1 and resources["gpu"] != int(resources["gpu"]):
            raise ExperimentError(f"resources.gpu: a share above 1 must be whole, got {resources['gpu']}")
    max_concurrent = number("max_concurrent", raw.get("max_concurrent"), integer=True, positive=True, allow_none=True)
    pack = raw.get("pack", "auto")
    if pack != "auto":
        pack = number("pack", pack, integer=True, positive=True)

    labels = raw.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise ExperimentError(
            "labels: must map a cell label or a role (paper, simplified, baseline) to a "
            "display name, e.g. {paper: DreamerV4, simplified: port}"
        )
    try:
        loggers = parse_loggers(raw.get("loggers"), suggest)
    except ValueError as error:
        raise ExperimentError(str(error)) from None
    spec = {
        "name": name,
        "task": task,
        "labels": {str(k): v for k, v in labels.items()},
        "loggers": loggers,
        "task_params": dict(base.task_params),
        "objective": dataclasses.asdict(base.objective),
        "factors": factors,
        "design": normalised_design(design),
        "baseline": baseline,
        "seeds": seeds,
        "train": dataclasses.asdict(base.train),
        "eval": base.to_dict()["eval"],
        "resources": resources,
        "max_concurrent": max_concurrent,
        "pack": pack,
        "primary": _section(raw, "primary", PRIMARY_KEYS),
        "output": raw.get("output"),
        "checkpoint_seconds": number("checkpoint_seconds", raw.get("checkpoint_seconds", 10.0), positive=True),
        "max_failures": number("max_failures", raw.get("max_failures", 2), integer=True, minimum=0),
    }
    trials = _expand(spec, base, factors, design)
    task = check_task(spec, trials)
    if rounds is not None:
        spec["seeds"] = rounds.spec()  # the plan, as experiment.json keeps it and --resume compares it
    parsed = (name, source, spec, factors, reference, trials, resources, max_concurrent, task, design, design_given)
    return Experiment(*parsed, rounds=rounds)


def normalised_design(design: Design) -> object:
    """The spec's `design` value: ``full``, or the generators, whichever way the file named the fraction
    (``half`` and ``{generators: [D = ABC]}`` are one design), so that `--resume` and `ablate merge`
    compare designs, not spellings; it parses back to the same design."""
    return "full" if design.resolution is None else {"generators": list(design.generators)}


def with_later_defaults(recorded: object) -> object:
    """A saved experiment.json with the defaults of the keys added since it was written (see
    LATER_SPEC_DEFAULTS), so that a folder from before them resumes and merges as the run it is."""
    return {**LATER_SPEC_DEFAULTS, **recorded} if isinstance(recorded, dict) else recorded  # damaged: unequal


def _reference_level(factor: str, levels: list) -> object:
    """The level coded +1: the paper's for a toggle and for ``preset`` (when listed), else the first."""
    if factor in TOGGLES:
        return TOGGLES[factor][0]
    return "paper" if factor == "preset" and "paper" in levels else levels[0]


def _section(raw: dict, key: str, allowed) -> dict:
    value = raw.get(key) or {}
    check_keys(key, value, allowed)
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


def _parse_factors(factors, base: TrialConfig) -> dict[str, list]:
    """Factor levels, each checked (and normalised, e.g. ``1e-3`` to 0.001) as its section checks it."""
    if factors is None:
        factors = {}
    check_keys("factors", factors, list(FACTOR_SECTIONS))
    parsed = {}
    for name, levels in factors.items():
        if not isinstance(levels, list) or not levels:
            raise ExperimentError(f"factors.{name}: must be a non-empty list of levels, e.g. [a, b]")
        if len({repr(level) for level in levels}) != len(levels):
            raise ExperimentError(f"factors.{name}: repeats a level: {levels}")
        parsed[str(name)] = [_level(base, str(name), level) for level in levels]
    return parsed


def _level(base: TrialConfig, name: str, level: object) -> object:
    if name.startswith("task_params."):
        return level
    try:
        config = base.with_levels({name: level})
    except TypeError as error:  # a dataclass rejects a value its own check cannot read
        raise ExperimentError(f"factors.{name}: level {level!r}: {error}") from None
    except ExperimentError as error:
        raise ExperimentError(f"factors.{name}: level {level!r} is not allowed ({error})") from None
    return getattr(getattr(config, FACTOR_SECTIONS[name]), name)


def _cell_config(base: TrialConfig, levels: dict, baseline: bool) -> TrialConfig:
    """The trial config of one cell (seed 0: the trials set theirs)."""
    config = base.with_levels({name: level for name, level in levels.items() if level is not None})
    # what a Ray worker imports: the family's "module:attribute" (the baseline cells: the flow family)
    family = family_spec(BASELINE_FAMILY if baseline else config.objective.family)
    return dataclasses.replace(config, objective=dataclasses.replace(config.objective, family=family))


def _expand(spec: dict, base: TrialConfig, factors: dict, design: Design) -> list[TrialSpec]:
    """The design's cells x seeds, plus the flow-only baseline cells (one per level of the non-toggle
    factors). Cells come in the order of the full product (first factor outermost, levels as listed),
    so a full design's matrix, trial ids and packs are those of every grid before designs."""
    names = list(factors)
    cells = [(cell, False) for cell in sorted(design.cells(), key=lambda cell: _product_position(factors, cell))]
    if spec["baseline"]:
        extras = [n for n in names if n not in TOGGLES and n != "preset"]  # one flow baseline, not one per preset
        for combo in itertools.product(*(factors[n] for n in extras)):
            levels = {n: None for n in names if n in TOGGLES or n == "preset"} | dict(zip(extras, combo))
            cells.append((levels, True))
    trials = []
    for levels, baseline in cells:
        config = _cell_config(base, levels, baseline)
        label = cell_label(config, levels)
        check_cell(config, label)
        for seed in spec["seeds"]:
            trial_id = re.sub(r"[^A-Za-z0-9_.=-]+", "-", f"{label}__seed{seed}")
            trials.append(TrialSpec(trial_id, label, levels, seed, dataclasses.replace(config, seed=seed)))
    return trials


def _product_position(factors: dict, cell: dict) -> list[int]:
    """Where a cell stands in the product of the factors' levels: each level's index, type-strict (the
    level True is not the level 1)."""
    return [
        next(i for i, level in enumerate(levels) if type(level) is type(cell[name]) and level == cell[name])
        for name, levels in factors.items()
    ]


def cell_label(config: TrialConfig, levels: dict) -> str:
    """The family's name for the cell, then ``,factor=level`` for every factor that is not a toggle (nor
    ``preset``, which names the cell itself)."""
    extras = "".join(f",{name}={level}" for name, level in levels.items() if name not in TOGGLES and name != "preset")
    return load_family(config.objective.family).cell_label(config.objective) + extras
