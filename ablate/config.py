"""Typed configuration: one frozen dataclass per section of an experiment file, field for field.

A setting has one name everywhere: ``train.steps`` in the YAML file, ``config.train.steps`` in code,
``train.steps=500`` on the command line, ``steps`` as a factor. Each section checks its own values
when it is built, once, with a one-line error that names the key; what only an objective can judge
(e.g. whether a ``ramp`` exists) is judged by building the family's objective, in one place.
Torch-free, so the CLI validates a file without importing torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ablate.families import DEFAULT_FAMILY
from ablate.presets import PRESETS
from ablate.variants import TOGGLES

TEACHERS = ("self", "ema")  # "self": the student under stop-gradient (the paper); "ema": an EMA copy


class ExperimentError(ValueError):
    """A problem in an experiment file or a trial config, reported as one line naming the key."""


def suggest(key: object, allowed: Sequence) -> str:
    """`` (did you mean 'x'?); allowed: a, b`` for an error message."""
    close = difflib.get_close_matches(str(key), [str(a) for a in allowed], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; allowed: {', '.join(map(str, allowed))}"


def check_keys(section: str, mapping: object, allowed: Sequence) -> None:
    if not isinstance(mapping, Mapping):
        raise ExperimentError(f"{section}: must be a mapping of key: value, got {type(mapping).__name__}")
    for key in mapping:
        if key not in allowed and not (section == "factors" and str(key).startswith("task_params.")):
            where = f"{section}.{key}" if section else str(key)
            raise ExperimentError(f"{where}: unknown key{suggest(key, allowed)}")


def number(where: str, value, *, integer=False, minimum=None, positive=False, allow_none=False):
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


def _set(section: object, name: str, value: object) -> None:
    object.__setattr__(section, name, value)  # normalising a frozen dataclass's own field while it is built


def _names(section: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(section))


@dataclass(frozen=True)
class ObjectiveConfig:
    """``objective:``: the objective family and its knobs (see docs/objective-spec.md).

    The four toggles are fields too: a cell of the ablation is an ObjectiveConfig. Whether a value is
    allowed (a ramp, a k_max that is a power of two, ...) is decided by the family's objective, built
    once per cell before anything runs.
    """

    family: str = DEFAULT_FAMILY  # shortcut_forcing, flow, or "module:attr" / "file.py:attr"
    k_max: int = 64  # largest number of sampling steps (a power of two); d_min = 1 / k_max
    ramp: str = "both"  # where the Eq. 8 weight goes: both terms, the flow term, none
    step_sizes: str = "uniform"  # Eq. 4 levels uniform, or "inverse" (P(d) ~ 1/d, the review's reading)
    bootstrap_fraction: float | None = None  # None: Eq. 4; f: that share of rows above d_min
    bootstrap_weight: float = 1.0  # multiplies the bootstrap term
    teacher_context: str = "stepped"  # sequences: what the second teacher call sees of the other frames
    bootstrap_draw: str = "row"  # which rows bootstrap: each row its own d (Eq. 4), or one coin per "batch"
    bootstrap_probability: float | None = None  # batch draws: P(a bootstrap batch); None: 1 - 1/log2(k_max)
    flow_on_bootstrap: bool = False  # the flow term on bootstrap rows too (the dreamer4 package)
    full_step: bool = True  # whether d = 1 is drawn (the dreamer4 package: never)
    d_per: str = "frame"  # sequences: a step size per "frame" or per "sequence"
    sample_clamp: float | None = None  # the sampler's output clamped to [-c, c] (the dreamer4 package: 1)
    preset: str | None = None  # a named implementation (ablate.presets): its keys are this cell's defaults
    tau_sampling: str = "grid"  # the four toggles, at the paper's levels by default
    bootstrap_space: str = "velocity"
    half_step: str = "velocity"
    tau2_weight: bool = True

    def __post_init__(self) -> None:
        _set(self, "family", str(self.family))
        _set(self, "k_max", number("objective.k_max", self.k_max, integer=True, positive=True))
        _set(self, "bootstrap_weight", number("objective.bootstrap_weight", self.bootstrap_weight))
        fraction = number("objective.bootstrap_fraction", self.bootstrap_fraction, allow_none=True)
        _set(self, "bootstrap_fraction", fraction)
        for name in ("bootstrap_probability", "sample_clamp"):
            _set(self, name, number(f"objective.{name}", getattr(self, name), allow_none=True))
        for name in ("flow_on_bootstrap", "full_step"):
            if not isinstance(getattr(self, name), bool):
                raise ExperimentError(f"objective.{name}: must be true or false, got {getattr(self, name)!r}")
        if self.preset is not None and self.preset not in PRESETS:
            raise ExperimentError(
                f"objective.preset: {self.preset!r} is not a preset{suggest(self.preset, list(PRESETS))}"
            )
        for name, levels in TOGGLES.items():
            value = getattr(self, name)
            if value not in levels or type(value) is not type(levels[0]):
                raise ExperimentError(f"objective.{name}: {value!r} is not allowed{suggest(value, levels)}")


@dataclass(frozen=True)
class TrainConfig:
    """``train:``: the budget, the optimiser and the stabilisers (docs/training.md, "Training defaults")."""

    steps: int = 3000  # training steps of every trial
    batch_size: int = 256  # rows per training batch
    lr: float = 1e-3  # Adam, cosine decay from lr to lr_final
    lr_final: float = 1e-4  # the learning rate the cosine decay ends at
    grad_clip: float | None = 1.0  # the gradient-norm clip; None: no clipping
    teacher: str = "ema"  # TEACHERS
    teacher_decay: float = 0.99  # decay of the (bias-corrected) EMA teacher
    bootstrap_start: int = 0  # steps of flow rows only (d = d_min) before bootstrap rows begin
    eval_ema: float | None = 0.995  # decay of the (bias-corrected) weight EMA evaluated; None: raw weights
    log_every: int = 100  # steps between logged curve points (and checkpoint chances)
    divergence_loss: float = 1e3  # a loss above this (or NaN/inf) ends the trial as diverged
    timeout_seconds: float | None = None  # a trial attempt longer than this fails (reason timeout)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every"):
            _set(self, name, number(f"train.{name}", getattr(self, name), integer=True, positive=True))
        _set(self, "bootstrap_start", number("train.bootstrap_start", self.bootstrap_start, integer=True, minimum=0))
        for name in ("lr", "lr_final", "divergence_loss"):
            _set(self, name, number(f"train.{name}", getattr(self, name), positive=True))
        for name in ("grad_clip", "timeout_seconds"):
            _set(self, name, number(f"train.{name}", getattr(self, name), positive=True, allow_none=True))
        _set(self, "teacher_decay", number("train.teacher_decay", self.teacher_decay, minimum=0))
        _set(self, "eval_ema", number("train.eval_ema", self.eval_ema, minimum=0, allow_none=True))
        for name in ("teacher_decay", "eval_ema"):
            decay = getattr(self, name)
            if decay is not None and not decay < 1:
                raise ExperimentError(f"train.{name}: an EMA decay must be in [0, 1), got {decay}")
        if self.teacher not in TEACHERS:
            raise ExperimentError(f"train.teacher: {self.teacher!r} is not allowed{suggest(self.teacher, TEACHERS)}")


@dataclass(frozen=True)
class EvalConfig:
    """``eval:``: the sampling step counts K and the evaluation noise (the same for every trial)."""

    steps: tuple[int, ...] | None = None  # None: 1, 2, 4, ..., k_max
    seed: int = 0  # seed of the evaluation noise, the same for every trial and K

    def __post_init__(self) -> None:
        if self.steps is not None:
            if isinstance(self.steps, (str, bytes)) or not isinstance(self.steps, Sequence) or not self.steps:
                raise ExperimentError(f"eval.steps: must be a non-empty list of step counts, got {self.steps!r}")
            _set(self, "steps", tuple(number("eval.steps", k, integer=True, positive=True) for k in self.steps))
        _set(self, "seed", number("eval.seed", self.seed, integer=True, minimum=0))


SECTIONS: dict[str, type] = {"objective": ObjectiveConfig, "train": TrainConfig, "eval": EvalConfig}
# Keys a factor may vary, by their field name: the objective's and the training keys (and task params,
# written `task_params.NAME`).
FACTOR_SECTIONS = {name: section for section in ("objective", "train") for name in _names(SECTIONS[section])}


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial needs: the task, the three sections, the seed and where it runs."""

    task: str = "toy2d"  # a built-in name, "module:function" or a task file (see ablate.tasks)
    task_params: Mapping[str, Any] = field(default_factory=dict)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0  # model init, data, noise and (tau, d) streams all derive from it
    threads: int = 1  # torch threads: one per CPU share of the trial
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not isinstance(self.task_params, Mapping):
            raise ExperimentError("task_params: must be a mapping")
        _set(self, "task_params", dict(self.task_params))
        _set(self, "seed", number("seed", self.seed, integer=True, minimum=0))
        _set(self, "threads", number("threads", self.threads, integer=True, positive=True))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialConfig:
        """From nested plain data (a record, Ray's param space, a script): sections as mappings."""
        check_keys("trial config", data, _names(cls))
        sections = {}
        for name, section in SECTIONS.items():
            values = data.get(name) or {}
            check_keys(name, values, _names(section))
            sections[name] = values if isinstance(values, section) else section(**values)
        return cls(**{**data, **sections})

    def to_dict(self) -> dict[str, Any]:
        """Nested plain data (JSON and Ray Tune friendly); ``from_dict`` reads it back."""
        data = dataclasses.asdict(self)
        data["eval"]["steps"] = None if self.eval.steps is None else list(self.eval.steps)
        return data

    def with_preset(self, name: str | None) -> TrialConfig:
        """This config with a preset's objective and training keys (ablate.presets) and its name."""
        if name is not None and name not in PRESETS:
            raise ExperimentError(f"preset: {name!r} is not a preset{suggest(name, list(PRESETS))}")
        preset = PRESETS[name] if name is not None else None
        objective = dataclasses.replace(self.objective, **(dict(preset.objective) if preset else {}), preset=name)
        train = dataclasses.replace(self.train, **(dict(preset.train) if preset else {}))
        return dataclasses.replace(self, objective=objective, train=train)

    def with_levels(self, levels: Mapping[str, object]) -> TrialConfig:
        """This config with factors set to levels, by field name (``lr``, ``tau2_weight``, ``steps``: the
        training steps) or ``task_params.NAME``; each changed section checks itself again. A ``preset``
        level comes first, so the other factors' levels are set on top of its keys."""
        config = self
        for factor, level in sorted(levels.items(), key=lambda item: item[0] != "preset"):
            if factor == "preset":
                config = config.with_preset(level)
                continue
            if factor.startswith("task_params."):
                params = {**config.task_params, factor.split(".", 1)[1]: level}
                config = dataclasses.replace(config, task_params=params)
                continue
            if factor not in FACTOR_SECTIONS:
                raise ExperimentError(f"{factor}: not a factor{suggest(factor, list(FACTOR_SECTIONS))}")
            section = FACTOR_SECTIONS[factor]
            config = dataclasses.replace(
                config, **{section: dataclasses.replace(getattr(config, section), **{factor: level})}
            )
        return config
