"""Experiment trackers through Ray Tune's own logger callbacks (TensorBoard, MLflow, W&B, CSV).

The experiment key ``loggers`` lists them, each with optional settings::

    loggers: [tensorboard, csv, {mlflow: {tracking_uri: "file:/tmp/mlruns"}}, {wandb: {project: x, mode: offline}}]

MLflow defaults to a local file store in ``<output>/mlruns`` (MLflow 3 needs
``MLFLOW_ALLOW_FILE_STORE=true`` for it, set here for a ``file:`` URI; read it back with the same
variable set). Each Tune trial is named by its ``trial_id`` (cell label + seed), and its config carries the cell
(``trial/variant``), the factor levels (``trial/levels/<factor>``) and the seed, so a tracker can
group runs by cell. Training curves stream as the trial reports (``loss``, ``step``); the evaluation
metrics arrive with the trial's last report as ``eval/<metric>/K<k>``. Each tracker is an optional
extra (``pip install 'ablate[mlflow]'``); a missing one is one line naming the extra.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path

TRACKERS = {  # name -> (module it needs, the ablate extra that installs it, settings it accepts)
    "tensorboard": ("tensorboardX", "tensorboard", ()),
    "csv": (None, None, ()),
    "mlflow": ("mlflow", "mlflow", ("tracking_uri", "experiment_name", "tags")),
    "wandb": ("wandb", "wandb", ("project", "group", "mode", "entity", "dir")),
}


def parse_loggers(value, suggest) -> dict[str, dict]:
    """The ``loggers`` key as {name: settings}; raises ValueError (one line) naming what is wrong."""
    if value is None:
        return {}
    items = value if isinstance(value, list) else [value] if isinstance(value, (str, dict)) else None
    if items is None:
        raise ValueError("loggers: must be a list such as [tensorboard, {mlflow: {tracking_uri: ...}}]")
    loggers: dict[str, dict] = {}
    for item in items:
        entries = item.items() if isinstance(item, dict) else [(item, {})]
        for name, settings in entries:
            if name not in TRACKERS:
                raise ValueError(f"loggers: {name!r} is not a tracker{suggest(name, TRACKERS)}")
            settings = dict(settings or {}) if isinstance(settings, dict) or settings is None else None
            if settings is None:
                raise ValueError(f"loggers.{name}: settings must be a mapping")
            allowed = TRACKERS[name][2]
            for key in settings:
                if key not in allowed:
                    raise ValueError(f"loggers.{name}.{key}: unknown setting{suggest(key, allowed or ['(none)'])}")
            module, extra, _ = TRACKERS[name]
            if module is not None and importlib.util.find_spec(module) is None:
                raise ValueError(f"loggers.{name}: needs the {module} package: pip install 'ablate[{extra}]'")
            loggers[name] = settings
    return loggers


def logger_callbacks(loggers: Mapping[str, dict], output: Path, experiment_name: str) -> list:
    """Ray Tune logger callbacks for the experiment's trackers (imported only when asked for)."""
    callbacks = []
    for name, settings in loggers.items():
        if name == "tensorboard":
            from ray.tune.logger import TBXLoggerCallback

            callbacks.append(TBXLoggerCallback())
        elif name == "csv":
            from ray.tune.logger import CSVLoggerCallback

            callbacks.append(CSVLoggerCallback())
        elif name == "mlflow":
            from ray.air.integrations.mlflow import MLflowLoggerCallback

            uri = settings.get("tracking_uri", (output / "mlruns").resolve().as_uri())
            if uri.startswith("file:"):  # MLflow 3 asks for this opt-in to keep writing local file stores
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            callbacks.append(
                MLflowLoggerCallback(
                    tracking_uri=uri,
                    experiment_name=settings.get("experiment_name", experiment_name),
                    tags=settings.get("tags"),
                    save_artifact=False,
                )
            )
        elif name == "wandb":
            from ray.air.integrations.wandb import WandbLoggerCallback

            if settings.get("mode") in ("offline", "disabled"):  # Ray asks for an API key unless this is set
                os.environ.setdefault("WANDB_MODE", settings["mode"])
            callbacks.append(WandbLoggerCallback(**{"project": experiment_name, **settings}))
    return callbacks


def eval_metrics(metrics: Mapping[int, Mapping[str, float]]) -> dict[str, float]:
    """A trial's evaluation as flat tracker metrics: ``eval/<metric>/K<k>``."""
    return {f"eval/{name}/K{k}": value for k, per_k in metrics.items() for name, value in per_k.items()}
