"""The results folder of one ablation run: its layout, its tables, and how they are read back.

This module defines the file layout described in ``results/README.md``, writes the tables
(:func:`write_tables`) and reads them back (:func:`load`); the per-trial records the tables are built
from live in :mod:`ablate.records`. The runner writes through these two modules; the report and the
notebook read through this one, so a change of layout touches two files.

Factor columns may hold strings, bools or numbers, and CSV round trips turn ``True`` into
``"True"`` and ``1`` into ``1.0``. :func:`load` therefore maps every factor value back onto the
level objects listed in ``run.json``, so that downstream code can compare values with ``==``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ablate.design import Design, parse_design
from ablate.variants import full_toggle_grid

METRICS_COLUMNS = ["trial_id", "variant", "seed", "status", "steps", "metric", "value"]
CURVES_COLUMNS = ["trial_id", "variant", "seed", "status", "step", "metric", "value"]
TRIALS_COLUMNS = [
    "trial_id",
    "variant",
    "seed",
    "status",
    "diverged_step",
    "train_seconds",
    "eval_seconds",
    "node",  # the Ray node the trial finished on
    "reason",  # why a failed trial failed: "timeout" (train.timeout_seconds), "error" (it raised or crashed)
]
TRAINING_STATS = (  # per trial, after `reason`: what the stabilisers did and what the budget cost
    "clipped_share",  # share of steps whose gradient norm was above train.grad_clip (so clipped)
    "loss_spikes",  # steps whose loss was above 10x the median of the previous (up to 100) steps
    "max_grad_norm",  # the largest gradient norm before clipping
    "forward_passes",  # model forward rows in training / batch size: 1 per step, + the teacher's calls
    "backward_passes",  # backward passes over one batch: 1 per step
)
TRIALS_COLUMNS += TRAINING_STATS
TRIALS_COLUMNS.append("pack_id")  # the pack (ablate.packing) the trial trained in; empty when alone
TRIALS_COLUMNS += [  # how the trial's attempts went (ablate.failures); empty in folders written before
    "error",  # a failed trial's exception in one line, `TypeError: message (file.py:42)`
    "attempts",  # how many times the trial was started: 1 unless it was retried or resumed
    "restored_at_step",  # the checkpoint step a retried or resumed trial continued from
]
CURVE_METRICS = ("loss", "flow_loss", "bootstrap_loss", "grad_norm")  # the training curves, per logged step
RECORDS_DIR = "trials"  # <folder>/trials/<trial_id>.json: one finished trial
SAMPLES_DIR = (
    "samples"  # <folder>/samples/<trial_id>.npz: arrays steps_<K>, and `real` (real data) if the task gives it
)
# Read as text from CSV so that trial ids such as "0001" keep their zeros.
_TEXT_COLUMNS = {"trial_id": str, "variant": str, "status": str}
OK = "ok"
DIVERGED = "diverged"
FAILED = "failed"
# The runner lists every expected trial in trials.csv; one that never ran has this status.
MISSING = "missing"
SCALES = ("log", "raw")  # what a metric is read on: ratios of geometric means, or differences of means


class ResultsError(ValueError):
    """A results file that cannot be read or written, reported as one line naming the file and the fix."""


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename: a reader (or a crash, or a
    full disk) sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as error:  # name the file being written, not the temporary one
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def _factor_names(run_info: dict) -> list[str]:
    return [f["name"] for f in run_info.get("factors", [])]


def _check_columns(name: str, frame: pd.DataFrame, required: list[str]) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} is missing required columns: {missing}")


def _parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Turn object columns that mix Python types into strings so that Arrow can store them.

    :func:`load` maps the strings back onto the run.json levels, so nothing is lost.
    """
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype != object:
            continue
        types = {type(v) for v in out[col].dropna()}
        if len(types) > 1 and not types <= {bool, np.bool_}:
            out[col] = out[col].map(lambda v: v if _is_missing(v) else str(v))
    return out


def write_tables(
    folder: str | Path,
    metrics: pd.DataFrame,
    curves: pd.DataFrame,
    trials: pd.DataFrame,
    run_info: dict,
) -> None:
    """Write metrics/curves (parquet + csv), trials.csv and run.json into ``folder``.

    Raises ValueError naming the missing columns before anything is written, so a runner bug
    never leaves a half-written folder that the report would misread.
    """
    factors = _factor_names(run_info)
    _check_columns("metrics", metrics, METRICS_COLUMNS[:2] + factors + METRICS_COLUMNS[2:])
    _check_columns("curves", curves, CURVES_COLUMNS[:2] + factors + CURVES_COLUMNS[2:])
    _check_columns("trials", trials, TRIALS_COLUMNS[:2] + factors + TRIALS_COLUMNS[2:])
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in (("metrics", metrics), ("curves", curves)):
        atomic_write(folder / f"{name}.csv", lambda tmp, frame=frame: frame.to_csv(tmp, index=False))
        atomic_write(folder / f"{name}.parquet", lambda tmp, frame=frame: _to_parquet(frame, tmp))
    atomic_write(folder / "trials.csv", lambda tmp: trials.to_csv(tmp, index=False))
    write_text(folder / "run.json", json.dumps(run_info, default=str, indent=2))


def _to_parquet(frame: pd.DataFrame, path: Path) -> None:
    try:
        frame.to_parquet(path, index=False)
    except (pa.ArrowException, TypeError, ValueError):
        _parquet_safe(frame).to_parquet(path, index=False)


DEFAULT_PRIMARY_STEPS = 4  # the few-step regime the shortcut objective is for


def default_primary_steps(eval_steps: Sequence[int]) -> int:
    """The K a report leads with when none is given: 4 where evaluated, else the middle one."""
    steps = sorted(int(k) for k in eval_steps)
    return DEFAULT_PRIMARY_STEPS if DEFAULT_PRIMARY_STEPS in steps else steps[len(steps) // 2]


def first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in JSON")


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def _level_key(value: Any) -> str | None:
    """A type-blind key: True, "True" and np.True_ agree; 1, 1.0 and "1" agree."""
    if _is_missing(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, str):
        if value.strip().lower() in ("true", "false"):
            return value.strip().capitalize()
        try:
            return repr(float(value))
        except ValueError:
            return value
    if isinstance(value, (int, float, np.integer, np.floating)):
        return repr(float(value))
    return str(value)


def _canonical_factors(frame: pd.DataFrame, factors: list[dict]) -> pd.DataFrame:
    """Replace factor values by the level objects of run.json (missing stays None)."""
    out = frame.copy()
    for factor in factors:
        name = factor["name"]
        if name not in out.columns:
            continue
        lookup = {_level_key(level): level for level in factor.get("levels", [])}
        out[name] = pd.Series(
            [None if _level_key(v) is None else lookup.get(_level_key(v), v) for v in out[name].tolist()],
            index=out.index,
            dtype=object,
        )
    return out


REBUILD_HINT = "rebuild the tables from the trial records with `ablate report {folder} --rebuild`"


def _read_table(folder: Path, name: str) -> pd.DataFrame:
    parquet, csv = folder / f"{name}.parquet", folder / f"{name}.csv"
    path = parquet if parquet.exists() else csv if csv.exists() else None
    if path is None:
        return pd.DataFrame()
    try:
        if path == parquet:
            return pd.read_parquet(parquet)
        return pd.read_csv(csv, dtype=_TEXT_COLUMNS)
    except Exception as error:  # pyarrow, pandas and the OS raise many types for a damaged file
        raise ResultsError(f"{path} is damaged ({first_line(error)}): " + REBUILD_HINT.format(folder=folder)) from None


def read_run(folder: Path) -> dict:
    run_path = folder / "run.json"
    if not run_path.exists():
        raise FileNotFoundError(f"{run_path} not found: is {folder} a results folder?")
    try:
        run = json.loads(run_path.read_text())
    except (OSError, ValueError) as error:
        raise ResultsError(
            f"{run_path} is damaged ({first_line(error)}): run `ablate run EXPERIMENT --resume "
            f"--output {folder}` to write it again"
        ) from None
    if not isinstance(run, dict):
        raise ResultsError(f"{run_path} is damaged (not a JSON object)")
    return run


@dataclass
class Results:
    """The tables of one run, with the run.json facts the analysis needs at hand."""

    folder: Path
    metrics: pd.DataFrame
    curves: pd.DataFrame
    trials: pd.DataFrame
    run: dict = field(default_factory=dict)
    # `ablate report --scale fd=raw`: the scale to read a metric on, before the task's declaration
    scale_overrides: dict[str, str] = field(default_factory=dict)

    @property
    def factors(self) -> list[dict]:
        return list(self.run.get("factors", []))

    @property
    def factor_names(self) -> list[str]:
        return [f["name"] for f in self.factors]

    @property
    def factor_levels(self) -> dict[str, list]:
        return {f["name"]: list(f["levels"]) for f in self.factors}

    @property
    def reference_levels(self) -> dict[str, Any]:
        """Reference level per factor: coded +1 in effects.csv (the paper's level for toggles)."""
        return {f["name"]: f.get("reference", f["levels"][0]) for f in self.factors}

    @property
    def design(self) -> Design:
        """The cells the run planned: run.json's ``design`` generators rebuilt over its factors, in their
        order and with their reference levels (so the same letters and fraction the experiment ran), or
        the full factorial (``design: full``, or a folder written before designs)."""
        generators = (self.run.get("design") or {}).get("generators") or []
        try:
            return parse_design(
                {"generators": list(generators)} if generators else "full", self.factor_levels, self.reference_levels
            )
        except ValueError as error:
            raise ResultsError(f"{self.folder / 'run.json'} is damaged ({first_line(error)})") from None

    @property
    def two_level_factors(self) -> list[str]:
        return [name for name, levels in self.factor_levels.items() if len(levels) == 2]

    @property
    def metric_names(self) -> list[str]:
        return list(pd.unique(self.metrics["metric"])) if len(self.metrics) else []

    @property
    def metric_directions(self) -> dict[str, str]:
        """'min' or 'max' per metric; metrics without an entry are taken as lower-is-better."""
        given = self.run.get("metric_directions") or {}
        return {m: given.get(m, "min") for m in self.metric_names}

    @property
    def metric_scales(self) -> dict[str, str]:
        """'log' or 'raw' per metric as the task declared it (run.json `metric_scales`); see
        :func:`ablate.analysis.metric_scales` for the scale the analysis reads (overrides first)."""
        return dict(self._declared("metric_scales"))

    @property
    def share_metrics(self) -> dict[str, int]:
        """Metrics that are shares or scores in [0, 1], each with the number of samples it was computed on."""
        return dict(self._declared("share_metrics"))

    @property
    def learnability_gate(self) -> list[dict]:
        """The task's learnability gate (``ablate.tasks.gate_condition`` dicts); empty when it declares none."""
        return list(self._declared("learnability_gate"))

    def _declared(self, key: str) -> dict | list:
        """A task declaration from run.json; for a folder written before run.json held them, a built-in
        task's declaration for the run's task params (its class's, nothing is built), else empty."""
        if key in self.run:
            return self.run[key] or {}
        task = self.run.get("task") or {}
        from ablate.tasks import builtin_declarations  # imports torch: only for such older folders

        declared = builtin_declarations(str(task.get("name")), dict(task.get("params") or {}))
        return getattr(declared, key) if declared is not None else {}

    @property
    def eval_steps(self) -> list[int]:
        if len(self.metrics):
            return sorted(int(s) for s in pd.unique(self.metrics["steps"]))
        return sorted(int(s) for s in self.run.get("eval_steps", []))

    @property
    def k_max(self) -> int | None:
        k_max = self.run.get("k_max")
        if k_max is not None:
            return int(k_max)
        return max(self.eval_steps) if self.eval_steps else None

    @property
    def seeds(self) -> list:
        if len(self.trials):
            return sorted(pd.unique(self.trials["seed"]).tolist())
        return list(self.run.get("seeds", []))

    @property
    def paper_variant(self) -> str | None:
        return self.run.get("paper_variant")

    @property
    def simplified_variant(self) -> str | None:
        """The review's simplified cell; None unless all four toggles vary at both levels (older run.json
        files named a cell of a smaller grid, even the paper's own, "simplified")."""
        simplified = self.run.get("simplified_variant")
        return simplified if full_toggle_grid(self.factor_levels) and simplified != self.paper_variant else None

    @property
    def baseline_variant(self) -> str | None:
        return self.run.get("baseline_variant")

    @property
    def sample_format(self) -> str | None:
        return (self.run.get("task") or {}).get("sample_format")

    @property
    def name(self) -> str:
        return str(self.run.get("name") or self.folder.name)

    def variant_levels(self) -> pd.DataFrame:
        """One row per variant with its factor levels (None for the baseline)."""
        source = self.trials if len(self.trials) else self.metrics
        cols = ["variant"] + [c for c in self.factor_names if c in source.columns]
        return source[cols].drop_duplicates("variant").reset_index(drop=True)

    def sample_path(self, trial_id: str) -> Path:
        return self.folder / "samples" / f"{trial_id}.npz"


def load(folder: str | Path) -> Results:
    """Read a results folder: parquet when present (keeps dtypes), else csv."""
    folder = Path(folder)
    run = read_run(folder)
    factors = run.get("factors", [])
    tables = {}
    for name, required in (("metrics", METRICS_COLUMNS), ("curves", CURVES_COLUMNS), ("trials", TRIALS_COLUMNS[:4])):
        table = _read_table(folder, name)
        if not len(table.columns):  # not written yet (a run that has only started): empty, with its columns
            table = pd.DataFrame(columns=[*required[:2], *_factor_names(run), *required[2:]])
        tables[name] = table = _canonical_factors(table, factors)
        if not set(required) <= set(table.columns):
            raise ResultsError(
                f"{folder / (name + '.csv')} lacks columns "
                f"{sorted(set(required) - set(table.columns))}: " + REBUILD_HINT.format(folder=folder)
            )
    return Results(folder=folder, run=run, **tables)
