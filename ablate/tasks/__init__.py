"""Tasks: data, an x-predicting model, and an evaluation that turns a sampler into named metrics.

A task is any object with the attributes and methods of `Task` below. Built-in tasks are found by name
(`toy2d`, `digits`, `sequence`, `latent_world`: their classes); a user's own task by
`"package.module:function"` or `"path/to/file.py"` (function `make_task`) or `"path/to/file.py:function"`;
the function (or class) takes the task params as keyword arguments and returns a task. See
experiments/my_task.py for a complete example.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import torch

from ablate.config import ObjectiveConfig
from ablate.objective import ShortcutForcing
from ablate.results import SCALES, first_line


@dataclass
class Sampler:
    """What a task's evaluation may call: the trained (EMA) model and the objective's K-step sampler.

    `model_d` is None for shortcut models (the sampler tells the model d = 1/K) and d_min for the
    flow-only baseline, which only ever saw d_min in training and is sampled with K plain Euler steps.
    """

    model: torch.nn.Module
    objective: ShortcutForcing
    model_d: float | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters(), torch.empty(0)).device

    @property
    def d_min(self) -> float:
        """The smallest step size: the level at which context frames are shown to the model."""
        return self.objective.d_min

    def __call__(self, noise: torch.Tensor, steps: int, *, lead_dims: int = 1, **model_kwargs) -> torch.Tensor:
        """Sample on the model's device; the result comes back on the device of `noise`."""
        device = self.device
        model_kwargs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in model_kwargs.items()}
        x = self.objective.sample(
            self.model, noise.to(device), steps, lead_dims=lead_dims, model_d=self.model_d, **model_kwargs
        )
        return x.to(noise.device)

    def next_frames(
        self, past: torch.Tensor, past_tau: torch.Tensor, noise: torch.Tensor, steps: int, **model_kwargs
    ) -> torch.Tensor:
        """Sample the frames that follow `past` (N, t, ...) with K steps, for a model of whole sequences.

        The past is held fixed at its signal levels `past_tau` (N, t) with d = d_min, as in a rollout;
        only the new frames (from `noise`, (N, n_new, ...)) are stepped. An objective that gives d per
        sequence (`d_per="sequence"`) tells the model the step size of the new frames for the whole
        sequence, as the dreamer4 package's sampler does. Everything on the model's device.
        """
        t = past.shape[1]
        past_d = torch.full(past_tau.shape, self.d_min, device=past.device)

        def model_of_new_frames(z: torch.Tensor, tau: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
            whole_d = torch.cat([past_d, d], 1) if d.ndim > 1 else d  # d per sequence (d_per): the whole one's
            out = self.model(torch.cat([past, z], 1), torch.cat([past_tau, tau], 1), whole_d, **model_kwargs)
            return out[:, t:]

        return self.objective.sample(model_of_new_frames, noise, steps, lead_dims=2, model_d=self.model_d)


@dataclass
class Evaluation:
    """Metrics per sampling-step count, and some samples per step count for the report's figures."""

    metrics: dict[int, dict[str, float]]
    samples: dict[int, np.ndarray] = field(default_factory=dict)
    real: np.ndarray | None = None  # real data in the samples' format, drawn first in the sample figures


class Task(Protocol):
    """What a task must have; the three declarations after `metric_directions` are optional.

    The declarations are facts about the metrics that the report must not guess from the data (a rule
    on the values flips with one zero or near its threshold, and then one toggle reads as a difference
    in one run and a ratio in the next). A task that declares nothing still runs: every metric is then
    read on the raw scale, none is a share, and there is no learnability gate.
    """

    name: str
    sample_format: str  # "points" (N, 2), "image" (N, H, W) or "video" (N, T, H, W): how the report draws samples
    lead_dims: int  # 1: tau and d per sample; 2: per frame (B, T)
    primary_metric: str  # the metric the report leads with
    metric_directions: dict[str, str]  # {"w2": "min", ...}: "min" if lower is better
    # {"w2": "log", "precision": "raw"}: the scale effects are read on. "log" for distances (FD, KID, W2,
    # energy, MSE), which toggles change by factors; "raw" for shares and bounded scores.
    metric_scales: dict[str, str]
    # {"precision": 1000}: metrics that are shares or scores in [0, 1] computed on n samples. The statistics
    # take sqrt(p (1 - p) / n) as the measurement noise of one value and keep intervals inside [0, 1].
    share_metrics: dict[str, int]
    # Conditions (`gate_condition`) the flow baseline must meet for the testbed's verdicts to mean anything
    # (docs/learnability.md); the report evaluates them with `ablate.analysis.learnability`.
    learnability_gate: list[dict]

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """A training batch x1 and the model's keyword arguments for it (e.g. actions), seeded."""

    def make_model(self, k_max: int, objective: ObjectiveConfig) -> torch.nn.Module:
        """A fresh x-predictor `model(z, tau, d, **kwargs)`; initialised from torch's global RNG.

        Both arguments are optional: it is told the objective's `k_max` (d = 1/K for K = 1, 2, ..., k_max;
        e.g. for a table of step sizes) and the resolved `objective` when its signature takes them
        (`build_model`), and a `make_model(self)` is called with neither. Before any trial the model is
        called once at each step size its trials use (`check_model_levels`): one it cannot take is one
        line then."""

    def evaluate(self, sampler: Sampler, steps: list[int], generator: torch.Generator) -> Evaluation:
        """Sample with each K in `steps` from the same seeded noise and score the samples. A pack on a
        GPU runs its members' evaluations in threads (ablate.packed_evaluation): keep shared state locked."""


GATE_OPS = (">=", "<=")
GATE_KEYS = ("metric", "op", "threshold", "relative_to", "factor", "steps")


def gate_condition(
    metric: str,
    op: str,
    threshold: float | None = None,
    *,
    relative_to: str | None = None,
    factor: float | None = None,
    steps: int | None = None,
) -> dict:
    """One condition of a learnability gate: `metric op threshold`, or `metric op factor x relative_to`
    (e.g. fd <= 2 x fd_floor), at `steps` sampling steps (None: k_max). A plain dict, so it goes to
    run.json as it is."""
    return check_gate_condition(
        {
            "metric": metric,
            "op": op,
            "threshold": threshold,
            "relative_to": relative_to,
            "factor": factor,
            "steps": steps,
        }
    )


def check_gate_condition(condition) -> dict:
    """A gate condition with every key present, or ValueError naming what is wrong."""
    if not isinstance(condition, dict) or not set(condition) <= set(GATE_KEYS):
        raise ValueError(f"learnability_gate: {condition!r} is not a mapping of {', '.join(GATE_KEYS)}")
    full = dict.fromkeys(GATE_KEYS) | condition
    if not isinstance(full["metric"], str) or full["op"] not in GATE_OPS:
        raise ValueError(f"learnability_gate: {condition!r} needs a metric name and an op in {GATE_OPS}")
    numbers = [full[key] for key in ("threshold", "factor") if full[key] is not None]
    if any(not isinstance(x, (int, float)) or isinstance(x, bool) for x in numbers):
        raise ValueError(f"learnability_gate: {condition!r}: threshold and factor must be numbers")
    absolute = full["threshold"] is not None
    relative = full["relative_to"] is not None and full["factor"] is not None
    if absolute == relative or (full["relative_to"] is None) != (full["factor"] is None):
        raise ValueError(f"learnability_gate: {condition!r} needs a threshold, or relative_to and factor, not both")
    steps = full["steps"]
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise ValueError(f"learnability_gate: {condition!r}: steps must be a step count >= 1, or None for k_max")
    return full


class Declarations(NamedTuple):
    """A task's optional declarations (see `Task`), as run.json records them."""

    metric_scales: dict[str, str]
    share_metrics: dict[str, int]
    learnability_gate: list[dict]


def declarations(task: object) -> Declarations:
    """The task's declarations, checked, with what it leaves out empty; ValueError names a bad entry."""
    scales = dict(getattr(task, "metric_scales", None) or {})
    shares = dict(getattr(task, "share_metrics", None) or {})
    bad = {m: s for m, s in scales.items() if s not in SCALES}
    if bad:
        raise ValueError(f"metric_scales: {bad} is not one of {SCALES}")
    bad = {m: n for m, n in shares.items() if not isinstance(n, int) or isinstance(n, bool) or n < 1}
    if bad:
        raise ValueError(f"share_metrics: {bad} must give the number of samples (an integer >= 1)")
    gate = [check_gate_condition(c) for c in getattr(task, "learnability_gate", None) or []]
    return Declarations(scales, shares, gate)


def builtin_declarations(name: str, params: dict) -> Declarations | None:
    """A built-in task's declarations for these task params, from its `declare` classmethod (cheap: the
    task is not built); None for a task that is not built in. For results folders older than the
    declarations in run.json."""
    spec = BUILTIN_TASKS.get(name)
    if spec is None:
        return None
    return resolve_task_factory(spec).declare(**params)


BUILTIN_TASKS = {  # name -> "module:function", imported only when used
    "toy2d": "ablate.tasks.toy2d:Toy2DTask",
    "digits": "ablate.tasks.digits:DigitsTask",
    "sequence": "ablate.tasks.sequence:SequenceTask",
    "latent_world": "ablate.tasks.latent_world:LatentWorldTask",
}


def resolve_task_factory(spec: str) -> Callable[..., Task]:
    """Find a task factory by built-in name, `module:function`, `file.py` or `file.py:function`."""
    spec = BUILTIN_TASKS.get(spec, spec)
    path_part, _, function = spec.partition(":") if not spec.endswith(".py") else (spec, "", "")
    if path_part.endswith(".py"):
        path = Path(path_part).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"task: file {path} does not exist")
        module_spec = importlib.util.spec_from_file_location(f"ablate_user_task_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        function = function or "make_task"
    elif function:
        try:
            module = importlib.import_module(path_part)
        except ImportError as error:
            raise ValueError(f"task: cannot import module {path_part!r} ({error})") from error
    else:
        raise ValueError(
            f"task: {spec!r} is not a built-in task ({', '.join(BUILTIN_TASKS)}), "
            "a 'module:function' or a path to a .py file"
        )
    factory = getattr(module, function, None)
    if not callable(factory):
        raise ValueError(f"task: {spec!r} has no callable {function!r}")
    return factory


def make_task(spec: str, params: dict | None = None) -> Task:
    """Build a task; unknown or ill-typed params raise ValueError naming the task and the param."""
    factory = resolve_task_factory(spec)
    try:
        return factory(**(params or {}))
    except TypeError as error:
        raise ValueError(f"task {spec!r}: {error}") from error


def model_arguments(task: Task, objective: ObjectiveConfig) -> dict:
    """What `task.make_model` is told of the objective: what its signature takes of `k_max` and
    `objective` (both through `**kwargs`), so a model that embeds step sizes in a table need not repeat
    k_max in task_params (and disagree with it); nothing for a `make_model(self)`, called as it always was."""
    parameters = inspect.signature(task.make_model).parameters.values()
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters)
    takes = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    told = {"k_max": objective.k_max, "objective": objective}
    return {name: value for name, value in told.items() if takes_any or name in takes}


def build_model(task: Task, objective: ObjectiveConfig) -> torch.nn.Module:
    """A fresh model of the task for this objective (`model_arguments`)."""
    return task.make_model(**model_arguments(task, objective))


def model_levels(objective: ShortcutForcing, eval_steps: Sequence[int]) -> tuple[int, ...]:
    """The K whose step size d = 1/K a trial calls its model at: every level the objective draws in
    training (d = 1 only with `full_step`, where the objective has that knob; the teachers' half steps are
    levels too) and the K it is sampled with."""
    trained = [k for k in objective.step_counts if k > 1 or getattr(objective, "full_step", True)]
    return tuple(sorted({*trained, *eval_steps}))


def check_model_levels(
    task: Task, spec: str, config: ObjectiveConfig, objective: ShortcutForcing, steps: Sequence[int]
) -> None:
    """Build the task's model and call it on 2 rows of a batch at d = 1/K for each K of `steps`
    (`model_levels`; tau 0 on one row, 1 - d on the other), so a model that cannot take a level (a table
    of step sizes smaller than k_max) fails before any trial, as a ValueError of one line, not as an
    IndexError inside every trial. Its model, batch and levels come from a forked RNG and their own
    generators: the caller's random state is as it was."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        try:
            model = build_model(task, config)
            x1, model_kwargs = task.batch(2, torch.Generator().manual_seed(0))
            tau, d = objective.sample_tau_d(x1.shape[: task.lead_dims], generator=torch.Generator().manual_seed(0))
        except Exception as error:  # a user's task may raise anything: still one line
            raise ValueError(
                f"task {spec!r}: building its model or a batch failed: {type(error).__name__}: {first_line(error)}"
            ) from None
        precision = torch.promote_types(x1.dtype, torch.float32)  # as the objective calls the model
        for k in steps:
            start = torch.zeros_like(tau, dtype=precision)
            start[1:] = 1 - 1 / k  # the other row at the last of K steps
            try:
                model(x1, start, torch.full_like(d, 1 / k, dtype=precision), **model_kwargs)
            except Exception as error:
                raise ValueError(
                    f"model of task {spec!r} rejects d = 1/{k} (objective.k_max = {config.k_max}): "
                    f"{type(error).__name__}: {first_line(error)}"
                ) from None
