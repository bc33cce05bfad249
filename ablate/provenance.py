"""What run.json records of a run: the experiment as resolved, its sessions, the code and packages.

The runner's driver writes it after every finished trial; the report and `ablate compare` read it as
part of the results contract (results/README.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from ablate import results
from ablate.analysis.sequential import sequential_record
from ablate.experiment import Experiment
from ablate.families import flow
from ablate.rounds import RECORD, recorded_looks, run_seeds
from ablate.variants import TOGGLES, Variant, full_toggle_grid

PACKAGES = (
    "ablate",
    "torch",
    "ray",
    "numpy",
    "pandas",
    "scipy",
    "statsmodels",
    "POT",
    "scikit-learn",
    "matplotlib",
    "pyyaml",
)


def run_info(experiment: Experiment, output: Path, started: float, resumed: bool, provenance: dict) -> dict:
    task = experiment.task  # built and described when the experiment was validated
    eval_steps = experiment.spec["eval"]["steps"] or [2**i for i in range(experiment.k_max.bit_length())]
    primary = experiment.spec["primary"]
    try:  # earlier sessions of this run; a damaged run.json is rewritten from this session on
        previous = json.loads((output / "run.json").read_text()) if (output / "run.json").is_file() else {}
    except ValueError:
        previous = {}
    now = time.time()
    earlier = [s for s in previous.get("sessions", []) if s.get("started") != iso_time(started)]
    sessions = earlier + [
        {  # this session's entry, rewritten by every refresh of the live tables
            "started": iso_time(started),
            "finished": iso_time(now),
            "wall_seconds": now - started,
            "resumed": resumed,
            **provenance,
        }
    ]
    extras_reference = "".join(
        f",{n}={experiment.reference[n]}" for n in experiment.factors if n not in TOGGLES and n != "preset"
    )
    return {
        "name": experiment.name,
        "task": {
            "name": experiment.spec["task"],
            "params": experiment.spec["task_params"],
            "sample_format": task["sample_format"],
        },
        "factors": [
            {"name": n, "levels": levels, "reference": experiment.reference[n]}
            for n, levels in experiment.factors.items()
        ],
        "design": design_record(experiment),
        "seeds": run_seeds(experiment),
        "eval_steps": eval_steps,
        "k_max": experiment.k_max,
        "expected_trials": experiment.expected_trials(),
        "paper_variant": _paper_variant(experiment),
        "simplified_variant": (  # the reviewed code's cell: only in a grid of all four toggles at both levels
            Variant.simplified().label + extras_reference if full_toggle_grid(experiment.factors) else None
        ),
        "baseline_variant": flow.LABEL + extras_reference if experiment.spec["baseline"] else None,
        "primary_metric": primary.get("metric", task["primary_metric"]),
        "primary_steps": primary.get("steps", results.default_primary_steps(eval_steps)),
        "metric_directions": task["metric_directions"],
        # the task's declarations (ablate.tasks.Task): the report reads them, never guesses them from the data
        "metric_scales": task["metric_scales"],
        "share_metrics": task["share_metrics"],
        "learnability_gate": task["learnability_gate"],
        "labels": experiment.spec["labels"],  # display names for figures, by cell label or role
        "config": jsonable(experiment.spec),  # resolved: the file with its overrides applied
        "overrides": list(experiment.overrides),
        **provenance,  # of the latest session; every session's own is in `sessions`
        "started": sessions[0]["started"],
        "finished": sessions[-1]["finished"],
        "wall_seconds": sum(s["wall_seconds"] for s in sessions),
        "sessions": sessions,
        # a study in rounds: its plan and the looks made so far (ablate.round_runner adds each look)
        **({RECORD: sequential_record(experiment.rounds, recorded_looks(previous))} if experiment.rounds else {}),
    }


def design_record(experiment: Experiment) -> dict:
    """The design as run.json states it. `generators`, with `factors` (their order and reference levels),
    rebuild it: ``parse_design({"generators": ...} if any else "full", levels, references)``. Effects are
    estimated on the regular fraction (`runs` runs); `extra_cells` are the corner it lacked, run for the
    corner comparison only (see ablate.design.Design)."""
    design = experiment.design
    extra = design.extra_cells()
    extra_cells = [t.variant for t in experiment.trials if t.levels in extra]
    return {
        "spec": jsonable(experiment.design_given),
        "generators": list(design.generators),
        "words": list(design.words),
        "resolution": design.resolution,
        "defining_relation": design.defining_relation,
        "runs": len(design.runs),
        "extra_cells": list(dict.fromkeys(extra_cells)),  # one per cell, not per seed
    }


def package_versions() -> dict:
    versions = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """The commit of the ablate checkout in use, with `-dirty` when it has uncommitted changes."""
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def iso_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def jsonable(value):
    return json.loads(json.dumps(value, default=results.json_default))


def _paper_variant(experiment) -> str | None:
    """The cell at every factor's reference level (the paper's toggles, the ``paper`` preset): the report's
    "paper variant", unless that cell is another implementation's preset (a study that starts from the
    dreamer4 preset has no paper cell, and the report must not call one so)."""
    reference = {name: experiment.reference[name] for name in experiment.factors}
    cell = next((t for t in experiment.trials if t.levels == reference), None)
    if cell is None or cell.config.objective.preset not in (None, "paper"):
        return None
    return cell.variant
