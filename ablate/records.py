"""The per-trial result records of a run, and the tables built from them.

A trial that finishes writes one record (``<folder>/trials/<trial_id>.json``, its samples first in
``<folder>/samples/``): its existence is what "done" means to the runner, `--resume` and `ablate merge`.
The driver turns the records into the metrics, curves and trials tables (:func:`collect_tables`);
:func:`rebuild_tables` does it again from run.json after a damaged table. The layout and the tables'
columns are defined in :mod:`ablate.results`, which also reads them back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from ablate.results import (
    CURVE_METRICS,
    CURVES_COLUMNS,
    FAILED,
    METRICS_COLUMNS,
    MISSING,
    RECORDS_DIR,
    SAMPLES_DIR,
    TRIALS_COLUMNS,
    ResultsError,
    atomic_write,
    first_line,
    json_default,
    read_run,
    write_tables,
    write_text,
)


def record_path(folder: str | Path, trial_id: str) -> Path:
    """Where a finished trial's result file lives; its existence means the trial is done."""
    return Path(folder) / RECORDS_DIR / f"{trial_id}.json"


def write_trial_result(
    folder: str | Path,
    trial_id: str,
    record: dict,
    samples: Mapping[int, np.ndarray] | None = None,
    real: np.ndarray | None = None,
) -> None:
    """Samples first, then the result record, each atomically (temporary file + rename): a result
    file always means a finished trial, and an interrupted write leaves no partial file behind.

    ``record`` holds ``status``, ``diverged_step``, ``train_seconds``, ``eval_seconds``, ``node``,
    ``metrics`` ({K: {metric: value}}), ``curves`` (dicts of ``step`` and CURVE_METRICS) and ``config``.
    """
    folder = Path(folder)
    if samples:
        samples_dir = folder / SAMPLES_DIR
        samples_dir.mkdir(parents=True, exist_ok=True)
        arrays = {f"steps_{k}": np.asarray(v) for k, v in samples.items()}
        if real is not None:
            arrays["real"] = np.asarray(real)
        atomic_write(samples_dir / f"{trial_id}.npz", lambda tmp: _save_npz(tmp, arrays))
    path = record_path(folder, trial_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(
        path,
        json.dumps(
            {**record, "trial_id": trial_id, "metrics": {str(k): v for k, v in record["metrics"].items()}},
            default=json_default,
        ),
    )


def _save_npz(path: Path, arrays: dict) -> None:
    with open(path, "wb") as handle:  # a file object: np.savez would append ".npz" to a path
        np.savez_compressed(handle, **arrays)


def record_names(folder: str | Path) -> frozenset[str]:
    """The ids of the trials with a result record (cheap: no file is read)."""
    records_dir = Path(folder) / RECORDS_DIR
    return frozenset(p.stem for p in records_dir.glob("*.json")) if records_dir.is_dir() else frozenset()


def read_trial_records(folder: str | Path) -> dict[str, dict]:
    """Every finished trial's result record, by trial id; a damaged one is a ResultsError naming it."""
    records_dir = Path(folder) / RECORDS_DIR
    if not records_dir.is_dir():
        return {}
    records = {}
    for path in sorted(records_dir.glob("*.json")):
        try:
            records[path.stem] = json.loads(path.read_text())
            records[path.stem]["metrics"], records[path.stem]["curves"], records[path.stem]["status"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ResultsError(
                f"{path} is damaged ({first_line(error)}): delete it and run `ablate run "
                "EXPERIMENT --resume` to run that trial again"
            ) from None
    return records


def rebuild_tables(folder: str | Path) -> None:
    """Rebuild metrics, curves and trials from run.json and the trial records (e.g. after a damaged
    table). Trials without a record become ``missing`` (a trial Tune had given up on, ``failed``
    before, is then ``missing`` too: ``--resume`` runs it again)."""
    folder = Path(folder)
    run = read_run(folder)
    expected = run.get("expected_trials")
    if not expected:
        raise ResultsError(f"{folder / 'run.json'} lists no expected trials: cannot rebuild the tables")
    tables = collect_tables(expected, [f["name"] for f in run.get("factors", [])], read_trial_records(folder))
    write_tables(folder, *tables, run)


def collect_tables(
    expected: Sequence[Mapping],
    factor_names: Sequence[str],
    records: Mapping[str, dict],
    failed: Mapping[str, Mapping] = MappingProxyType({}),
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """metrics, curves and trials tables over the expected trials (dicts of ``trial_id``, ``variant``,
    one level per factor, ``seed``). A trial without a record is ``failed`` if it is in ``failed``
    (Tune gave up on it; its values, e.g. ``error`` and ``attempts``, fill its row), else ``missing``
    (never ran, or interrupted)."""
    metric_keys = sorted({(int(k), m) for r in records.values() for k, per_k in r["metrics"].items() for m in per_k})
    metric_rows, curve_rows, trial_rows = [], [], []
    for spec in expected:
        ident = {
            "trial_id": spec["trial_id"],
            "variant": spec["variant"],
            **{f: spec.get(f) for f in factor_names},
            "seed": spec["seed"],
        }
        record = records.get(spec["trial_id"])
        status = record["status"] if record else FAILED if spec["trial_id"] in failed else MISSING
        row = {c: record.get(c) if record else None for c in TRIALS_COLUMNS[4:]}
        if record is None and status == FAILED:
            row.update(failed[spec["trial_id"]], reason="error")
        trial_rows.append({**ident, "status": status, **row})
        if record is None:
            continue
        for k, name in metric_keys:
            value = record["metrics"].get(str(k), {}).get(name, float("nan"))
            metric_rows.append({**ident, "status": status, "steps": k, "metric": name, "value": value})
        for point in record["curves"]:
            curve_rows.extend(
                {**ident, "status": status, "step": point["step"], "metric": name, "value": point[name]}
                for name in CURVE_METRICS
            )
    head = ["trial_id", "variant", *factor_names]
    return (
        pd.DataFrame(metric_rows, columns=head + METRICS_COLUMNS[2:]),
        pd.DataFrame(curve_rows, columns=head + CURVES_COLUMNS[2:]),
        pd.DataFrame(trial_rows, columns=head + TRIALS_COLUMNS[2:]),
    )
