"""`ablate run EXP.yaml`, `ablate report FOLDER`, `ablate compare` and `ablate merge`: a thin shell over
experiment, runner, merge, compare and report."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from ablate.experiment import Experiment, ExperimentError, load_experiment
from ablate.records import rebuild_tables
from ablate.results import ResultsError
from ablate.rounds import plan_lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ablate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run an experiment's variant x seed grid on Ray Tune")
    run.add_argument("experiment", help="path to an experiment YAML, e.g. experiments/quickstart.yaml")
    run.add_argument(
        "overrides",
        nargs="*",
        default=[],  # optional: without a default argparse lists a "*" positional as required
        metavar="KEY=VALUE",
        help="override the file: dotted keys, YAML values, e.g. train.steps=500 seeds=[0,1,2] "
        "factors.tau2_weight=[true]; before, between or after the options",
    )
    run.add_argument("--dry-run", action="store_true", help="print the trial matrix and resources, run nothing")
    run.add_argument("--resume", action="store_true", help="finish what an interrupted run left undone")
    run.add_argument("--force", action="store_true", help="delete an existing output folder and start over")
    run.add_argument("--output", help="results folder (default: results/<name>)")
    run.add_argument("--address", help="join this Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    run.add_argument("--no-report", action="store_true", help="write the tables but not the report")

    report = commands.add_parser(
        "report", help="write report.md, figures and the analysis tables (cells, effects, strata, power, comparisons)"
    )
    report.add_argument("folder", help="a results folder, e.g. results/quickstart")
    report.add_argument("--metric", help="primary metric (default: the task's)")
    report.add_argument("--steps", type=int, help="primary number of sampling steps (default: 4)")
    report.add_argument("--format", default="png", help="figure formats, comma-separated: png,pdf,svg")
    report.add_argument("--color-by", help="colour the other variants by this factor's level")
    report.add_argument("--scale", help=SCALE_HELP)
    report.add_argument(
        "--rebuild", action="store_true", help="rebuild metrics, curves and trials tables from the trial records first"
    )

    compare = commands.add_parser("compare", help="two or more results folders side by side (compare.md)")
    compare.add_argument("folders", nargs="+", help="results folders, e.g. results/toy2d results/digits")
    compare.add_argument("--output", required=True, help="folder for compare.md, compare.csv and figures/")
    compare.add_argument("--metric", help="the metric to compare (default: each folder's primary one)")
    compare.add_argument(
        "--steps", help="the K to compare, or several comma-separated, e.g. 1,4 (default: each folder's primary K)"
    )
    compare.add_argument("--scale", help=SCALE_HELP)

    merge = commands.add_parser(
        "merge", help="one results folder from runs of one experiment on different seeds (e.g. seeds=[2] later)"
    )
    merge.add_argument("folders", nargs="+", help="results folders of the same experiment, on disjoint seeds")
    merge.add_argument("--output", required=True, help="the new results folder (never an existing one)")
    merge.add_argument(
        "--mixed-code",
        action="store_true",
        help="merge runs of different commits or package versions (run.json and the report list each)",
    )
    merge.add_argument("--no-report", action="store_true", help="write the tables but not the report")

    args, extra = parser.parse_known_args(argv)
    if args.command == "run":  # argparse leaves the overrides after an option unparsed: they are overrides too
        args.overrides += [arg for arg in extra if not arg.startswith("-")]
        extra = [arg for arg in extra if arg.startswith("-")]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "compare":
            return _compare(args)
        if args.command == "merge":
            return _merge(args)
        return _report(
            args.folder,
            args.metric,
            args.steps,
            rebuild=args.rebuild,
            formats=tuple(f.strip() for f in args.format.split(",") if f.strip()),
            color_by=args.color_by,
            scales=_scales(args.scale),
        )
    except (ExperimentError, ResultsError) as error:
        print(f"ablate: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `ablate run ... --dry-run | head`: the reader has gone, nothing to say
        return 0
    except OSError as error:  # a full disk, a read-only folder: nothing half-written (writes are atomic)
        where = f" ({error.filename})" if error.filename else ""
        print(
            f"ablate: error: cannot write results{where}: {error.strerror or error}; free space or fix "
            "permissions, then finish with --resume",
            file=sys.stderr,
        )
        return 1


def _run(args) -> int:
    experiment = load_experiment(args.experiment, args.overrides)
    if args.dry_run:
        _print_matrix(experiment)
        if experiment.rounds is not None:
            print("\n".join(plan_lines(experiment)))
        return 0
    from ablate.runner import resolve_output, run_experiment  # imports Ray: only when running

    output = resolve_output(experiment, args.output)
    planned = f"{'up to ' if experiment.rounds else ''}{len(experiment.trials)} trials"  # in rounds: a maximum
    print(f"[ablate] {experiment.name}: {planned} -> {output}", flush=True)
    outcome = run_experiment(experiment, output, resume=args.resume, force=args.force, address=args.address)
    print(
        f"[ablate] {outcome.finished}/{outcome.expected} trials finished, {outcome.failed} failed; "
        f"tables in {outcome.output}",
        flush=True,
    )
    if outcome.interrupted:
        again = " ".join([args.experiment, *args.overrides])
        print(
            f"[ablate] interrupted: finish with `ablate run {again} --resume"
            f"{' --output ' + args.output if args.output else ''}`",
            flush=True,
        )
        return 130
    if not args.no_report:
        _report(str(outcome.output), None, None, rebuild=False)
    return 0 if outcome.failed == 0 else 1


def _report(
    folder: str,
    metric: str | None,
    steps: int | None,
    rebuild: bool,
    formats: tuple[str, ...] = ("png",),
    color_by: str | None = None,
    scales: dict[str, str] | None = None,
) -> int:
    from ablate.report import write_report

    if not (Path(folder) / "run.json").is_file():
        raise ExperimentError(f"{folder} is not a results folder (no run.json)")
    if rebuild:
        rebuild_tables(folder)
        print(f"[ablate] rebuilt the tables of {folder} from its trial records")
    try:
        path = write_report(
            folder, primary_metric=metric, primary_steps=steps, formats=formats, color_by=color_by, scales=scales
        )
    except ValueError as error:  # an unknown --metric or --steps: one line, not a traceback
        raise ExperimentError(str(error)) from error
    print(f"[ablate] report: {path}")
    return 0


def _compare(args) -> int:
    from ablate.compare import compare

    for folder in args.folders:
        if not (Path(folder) / "run.json").is_file():
            raise ExperimentError(f"{folder} is not a results folder (no run.json)")
    try:
        steps = [int(k) for k in args.steps.split(",")] if args.steps else None
    except ValueError:
        raise ExperimentError(
            f"--steps {args.steps}: give step counts as integers, comma-separated (e.g. 1,4)"
        ) from None
    try:
        path = compare(args.folders, args.output, args.metric, steps, _scales(args.scale))
    except ValueError as error:
        raise ExperimentError(str(error)) from error
    print(f"[ablate] comparison: {path}")
    return 0


SCALE_HELP = "read these metrics on this scale instead of the task's, e.g. fd=raw,w2=log (log: ratios)"


def _scales(text: str | None) -> dict[str, str] | None:
    """`--scale fd=raw,w2=log` as {metric: scale}; the metrics and scales are checked against the run."""
    if text is None:
        return None
    pairs = [item.strip().partition("=") for item in text.split(",") if item.strip()]
    if not pairs or any(not metric or not sep or not scale for metric, sep, scale in pairs):
        raise ExperimentError(f"--scale {text}: give metric=scale pairs, comma-separated (e.g. fd=raw,w2=log)")
    return {metric.strip(): scale.strip() for metric, _, scale in pairs}


def _merge(args) -> int:
    from ablate.merge import merge_runs

    for folder in args.folders:
        if not (Path(folder) / "run.json").is_file():
            raise ExperimentError(f"{folder} is not a results folder (no run.json)")
    output = merge_runs(args.folders, args.output, mixed_code=args.mixed_code)
    print(f"[ablate] merged {len(args.folders)} runs into {output}")
    if not args.no_report:
        _report(str(output), None, None, rebuild=False)
    return 0


def _print_matrix(experiment: Experiment) -> None:
    spec = experiment.spec
    cells = Counter(t.variant for t in experiment.trials)
    if experiment.overrides:
        print(f"overrides: {' '.join(experiment.overrides)}")
    print(
        f"experiment {experiment.name}: task {spec['task']}, k_max {experiment.k_max}, "
        f"{len(cells)} cells x {len({t.seed for t in experiment.trials})} seeds = {len(experiment.trials)} trials"
    )
    for name, levels in experiment.factors.items():
        print(f"  factor {name}: {levels} (reference {experiment.reference[name]!r})")
    for line in experiment.design.describe().splitlines():  # which cells, and what a fraction aliases
        print(f"  {line}")
    print(
        f"  seeds: {spec['seeds']}; train steps {spec['train']['steps']}, batch {spec['train']['batch_size']}, "
        f"teacher {spec['train']['teacher']}"
    )
    print(
        f"  resources per trial: cpu {experiment.resources['cpu']}, gpu {experiment.resources['gpu']}; "
        f"max concurrent: {experiment.max_concurrent or 'as many as fit'}"
    )
    packs = experiment.packs()
    if len(packs) < len(experiment.trials):
        print(f"  packs: {len(packs)} of at most {experiment.pack_size} trials, one process each (`pack`)")
        for index, pack in enumerate(packs):
            print(f"  pack{index:03d}: " + ", ".join(t.trial_id for t in pack))
        return
    for trial in experiment.trials:
        print(f"  {trial.trial_id}")


if __name__ == "__main__":
    sys.exit(main())
