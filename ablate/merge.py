"""`ablate merge A B --output C`: one study from runs of one experiment on disjoint seeds.

A study too long for one sitting, or spread over machines, is run seed by seed (`seeds=[0,1]` today,
`seeds=[2]` tomorrow, elsewhere). A trial depends only on its configuration and seed, so those runs are
one study: this module copies (never moves) their trial records and samples into a new folder whose
experiment holds the union of the seeds, and writes the tables and run.json as the runner would. The
report, `ablate compare` and `--resume` then treat the folder as one run.

What it refuses, in one line each, before writing anything: runs of experiments that differ in anything
but seeds and scheduling; a seed in two sources; a source that an `ablate run` is still writing; sources
whose code differs (commit or package versions), unless `mixed_code` says the caller knows, and then
run.json and the report list each source's code; an output folder that already exists. The output is
written under its folder lock, as `ablate run` writes.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from ablate import records, results
from ablate.experiment import Experiment, ExperimentError, parse_experiment, with_later_defaults
from ablate.locking import LOCK_NAME, folder_lock, in_use
from ablate.provenance import iso_time, jsonable, run_info
from ablate.rounds import RECORD, held_seeds

# Keys that say how and where a run was scheduled, not what it computes: they may differ between sources.
SCHEDULING_KEYS = ("name", "seeds", "output", "resources", "max_concurrent", "pack", "checkpoint_seconds", "loggers")


def merge_runs(sources: Sequence[str | Path], output: str | Path, mixed_code: bool = False) -> Path:
    """Write the merged results folder `output` and return it (its tables; the report is the CLI's)."""
    sources = [Path(s) for s in sources]
    output = Path(output)
    if len(sources) < 2:
        raise ExperimentError("merge needs two or more results folders")
    for source in sources:
        holder = in_use(source)
        if holder:
            raise ExperimentError(f"{source} is being written by an `ablate run` ({holder}): merge it once it is done")
    with folder_lock(output, lambda: _check_new(output)):
        return _merge_locked(sources, output, mixed_code)


def _check_new(output: Path) -> None:
    if any(p.name != LOCK_NAME for p in output.iterdir()):
        raise ExperimentError(f"{output} already exists: merge into a new folder (results are never overwritten)")


def _merge_locked(sources: list[Path], output: Path, mixed_code: bool) -> Path:
    specs = [_saved_spec(s) for s in sources]
    runs = [results.read_run(s) for s in sources]
    _check_same_experiment(sources, specs)
    seeds = _disjoint_seeds(sources, [{**spec, "seeds": held_seeds(spec, run)} for spec, run in zip(specs, runs)])
    code = [_code(run) for run in runs]
    if not mixed_code and any(c != code[0] for c in code[1:]):
        which = next(i for i, c in enumerate(code) if c != code[0])
        raise ExperimentError(
            f"{sources[0]} and {sources[which]} ran different code ({_describe(code[0])} vs "
            f"{_describe(code[which])}): check that the difference cannot change a number, then pass --mixed-code"
        )
    experiment = parse_experiment({**specs[0], "seeds": seeds})
    for source in sources:
        _copy_trials(source, output, experiment)
    (output / "experiment.json").write_text(json.dumps(jsonable(experiment.spec), indent=2))
    info = _merged_run_info(experiment, output, sources, runs, code)
    tables = records.collect_tables(
        experiment.expected_trials(), list(experiment.factors), records.read_trial_records(output)
    )
    results.write_tables(output, *tables, info)
    return output


def _saved_spec(source: Path) -> dict:
    path = source / "experiment.json"
    if not path.is_file():
        raise ExperimentError(f"{source} is not a results folder of `ablate run` (no experiment.json)")
    try:
        return with_later_defaults(json.loads(path.read_text()))
    except ValueError:
        raise ExperimentError(f"{path} is damaged: cannot tell which experiment {source} holds") from None


def _check_same_experiment(sources: list[Path], specs: list[dict]) -> None:
    first = {k: v for k, v in specs[0].items() if k not in SCHEDULING_KEYS}
    for source, spec in zip(sources[1:], specs[1:]):
        other = {k: v for k, v in spec.items() if k not in SCHEDULING_KEYS}
        key = _first_difference(first, other)
        if key is not None:
            raise ExperimentError(
                f"{sources[0]} and {source} are different experiments ({key}: {_at(first, key)!r} vs "
                f"{_at(other, key)!r}): only runs that differ in seeds can be merged"
            )


def _first_difference(a: dict, b: dict, prefix: str = "") -> str | None:
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            inner = _first_difference(left, right, f"{prefix}{key}.")
            if inner is not None:
                return inner
        elif left != right:
            return f"{prefix}{key}"
    return None


def _at(spec: dict, dotted: str):
    for part in dotted.split("."):
        spec = spec.get(part) if isinstance(spec, dict) else None
    return spec


def _disjoint_seeds(sources: list[Path], specs: list[dict]) -> list:
    owner: dict = {}
    for source, spec in zip(sources, specs):
        for seed in spec["seeds"]:
            if seed in owner:
                raise ExperimentError(
                    f"seed {seed} is in both {owner[seed]} and {source}: merge runs on different seeds"
                )
            owner[seed] = source
    return sorted(owner)


def _code(run: dict) -> tuple:
    """What computed a run's numbers: every session's commit and package versions."""
    sessions = run.get("sessions") or [run]
    return tuple(
        sorted({(s.get("git_commit"), json.dumps(s.get("versions"), sort_keys=True)) for s in sessions}, key=str)
    )


def _describe(code: tuple) -> str:
    return ", ".join(f"commit {commit}" for commit, _ in code) + (
        "" if len({v for _, v in code}) <= 1 else ", several package versions"
    )


def _copy_trials(source: Path, output: Path, experiment: Experiment) -> None:
    """The source's records and samples of the merged experiment's trials (copies: sources stay whole)."""
    expected = {t["trial_id"] for t in experiment.expected_trials()}
    for trial_id in sorted(records.record_names(source) & expected):
        for folder, suffix in ((results.SAMPLES_DIR, ".npz"), (results.RECORDS_DIR, ".json")):
            path = source / folder / f"{trial_id}{suffix}"
            if path.is_file():  # samples first: a record always means a finished trial
                (output / folder).mkdir(exist_ok=True)
                shutil.copy2(path, output / folder / path.name)


def _merged_run_info(
    experiment: Experiment, output: Path, sources: list[Path], runs: list[dict], code: list[tuple]
) -> dict:
    """run.json as the runner writes it, with every source's sessions (each naming its source) and a
    `merged_from` list of the sources, their seeds and code (`_code` of each run)."""
    latest = max(runs, key=lambda r: r.get("finished") or "")
    provenance = {"versions": latest.get("versions"), "git_commit": latest.get("git_commit")}
    info = run_info(experiment, output, time.time(), False, provenance)
    sessions = [
        {**session, "source": str(source)}
        for source, run in zip(sources, runs)
        for session in (run.get("sessions") or [])
    ]
    return {
        **info,
        "git_commit": latest.get("git_commit") if len(set(code)) == 1 else "mixed: see merged_from",
        "sessions": sessions,
        "started": min((s["started"] for s in sessions), default=info["started"]),
        "finished": max((s["finished"] for s in sessions), default=iso_time(time.time())),
        "wall_seconds": sum(s.get("wall_seconds", 0.0) for s in sessions),
        "merged_from": [
            {
                "folder": str(source.resolve()),
                "seeds": run.get("seeds"),
                "git_commit": ", ".join(sorted({str(commit) for commit, _ in run_code})),
                "versions": run.get("versions"),
                **({RECORD: run[RECORD]} if run.get(RECORD) else {}),  # a study in rounds: its plan and looks
            }
            for source, run, run_code in zip(sources, runs, code)
        ],
    }
