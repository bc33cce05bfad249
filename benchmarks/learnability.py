"""Does the testbed learn what it measures? The learnability gate of an experiment file (issue 11).

Trains the flow-only baseline (family `flow`) of EXPERIMENT.yaml at the file's budget with one seed, in this
process on one thread, evaluates it at K = k_max and prints its figures, the task's reference values and
PASS or FAIL. The toy2d and digits gates are the tasks' own declarations (`learnability_gate`, which the
report evaluates on a study's flow baseline too):

- toy2d: `precision` >= 0.9 (share of samples in the data's support) and `coverage` >= 0.9 (every region,
  e.g. every square of the checkerboard, hit in about the data's share: the squares are all there). A
  scatter of the samples next to real data, on fixed axes, is written to OUT/<name>_samples.png: look at
  it, the metrics are blind to the density inside a region.
- digits: FD <= 2 x the held-out floor (`fd_floor`); a grid of samples next to real digits in OUT.
- latent_world: one-step `valid` >= 0.9 x the exact flow's validity at K = k_max (the closed-form
  posterior-mean flow sampled with the same sampler: no flow model does better), measured here for any
  world; the task declares the default world's figure (0.89 at K = 64) for the report. A scatter of the
  next frames' offsets from the commanded point (the ring of modes) next to the simulator's draws.
- other tasks: the figures, no gate.

`--paper` also trains the paper's variant (family shortcut_forcing, the paper's toggles, the file's other
settings) with the same seed and budget and prints its figures at K = 1, 4 and k_max (no gate: the gate is
about the testbed, not about the objectives it compares).

    python benchmarks/learnability.py experiments/toy2d.yaml [--out DIR] [--seed 0] [--paper] [key=value ...]

Exit status 0 on PASS (or no gate), 1 on FAIL. Overrides are the CLI's (`train.steps=6000`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ablate.config import TrialConfig
from ablate.experiment import load_experiment
from ablate.families import BASELINE_FAMILY, DEFAULT_FAMILY, family_spec
from ablate.trial import TrialResult, run_trial
from ablate.variants import TOGGLES, Variant

EXACT_SHARE = 0.9  # latent_world: the flow baseline reaches this share of the exact flow's validity
EXACT_FRAMES = 8192
AXIS = 2.2  # toy2d scatter: both axes [-2.2, 2.2] in the data's standardised units
TOY2D_SHOWN = ("structure", "precision", "coverage", "w2", "energy")


def baseline_config(experiment, seed: int) -> TrialConfig:
    """The flow baseline's trial config: the experiment's baseline cell if it has one, else its first cell
    with the flow family (the flow family ignores the toggles)."""
    flow = family_spec(BASELINE_FAMILY)
    trials = [t for t in experiment.trials if t.config.objective.family == flow] or experiment.trials
    config = trials[0].config
    return replace(config, objective=replace(config.objective, family=flow), seed=seed, threads=1)


def paper_config(experiment, seed: int) -> TrialConfig:
    """The paper variant with the experiment's other settings: the default family, the paper's toggles."""
    config = baseline_config(experiment, seed)
    paper = {name: getattr(Variant.paper(), name) for name in TOGGLES}
    return replace(config, objective=replace(config.objective, family=family_spec(DEFAULT_FAMILY), **paper))


def train(config: TrialConfig, steps: list[int]) -> tuple[TrialResult, str]:
    """The trial's result and its cost: wall seconds and this process's CPU seconds (which other jobs on
    the machine inflate less than the wall clock)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = run_trial(replace(config, eval=replace(config.eval, steps=tuple(steps))))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    cost = f"{result.train_seconds:.1f} s training + {result.eval_seconds:.1f} s evaluation"
    cost += f"; {wall:.1f} s wall, {cpu:.1f} s CPU in all"
    return result, cost


def figures(metrics: dict[str, float], names) -> str:
    return ", ".join(f"{name} {metrics[name]:.3f}" for name in names if name in metrics)


def declared_gate(config: TrialConfig, result: TrialResult, k_max: int) -> tuple[bool, str]:
    """The task's own learnability gate (`learnability_gate`, what the report evaluates too) on this trial."""
    from ablate.tasks import declarations, make_task

    checks = []
    for condition in declarations(make_task(config.task, config.task_params)).learnability_gate:
        m = result.metrics[condition["steps"] or k_max]
        value, bound = m[condition["metric"]], condition["threshold"]
        rule = f"{bound:g}" if bound is not None else ""
        if condition["relative_to"] is not None:
            reference = m[condition["relative_to"]]
            bound = condition["factor"] * reference
            rule = f"{condition['factor']:g} x {condition['relative_to']} {reference:.3f} = {bound:.3f}"
        ok = value >= bound if condition["op"] == ">=" else value <= bound
        shown = condition["op"] if ok else {">=": "<", "<=": ">"}[condition["op"]]
        checks.append((ok, f"{condition['metric']} {value:.3f} {shown} {rule}"))
    return all(ok for ok, _ in checks), " and ".join(rule for _, rule in checks)


def toy2d_gate(config: TrialConfig, result: TrialResult, k: int) -> tuple[bool, str]:
    from ablate.tasks.toy2d import N_EVAL, reference_scores

    dataset = config.task_params.get("dataset", "checkerboard")
    n_eval = config.task_params.get("n_eval", N_EVAL)
    print(f"reference values ({dataset}, {n_eval} points; metric of the set against the fixed reference set):")
    for name, scores in reference_scores(dataset, n_eval).items():
        label = {"real": "second real set", "blur": "real + blur 0.25", "box": "uniform box"}[name]
        print(f"  {label:17s} {figures(scores, TOY2D_SHOWN)}")
    return declared_gate(config, result, k)


def digits_gate(config: TrialConfig, result: TrialResult, k: int) -> tuple[bool, str]:
    m = result.metrics[k]
    print(f"reference values: held-out digits fd {m['fd_floor']:.3f}, kid {m['kid_floor']:.4f}")
    return declared_gate(config, result, k)


def latent_world_gate(config: TrialConfig, result: TrialResult, k: int) -> tuple[bool, str]:
    import torch

    from ablate.objective import ShortcutForcing
    from ablate.tasks import make_task

    task = make_task(config.task, config.task_params)
    exact = task.exact_flow_validity(
        ShortcutForcing(k_max=config.objective.k_max), [k], EXACT_FRAMES, torch.Generator().manual_seed(0)
    )[k]
    print(f"reference values: exact flow at K = {k}: valid {exact['valid']:.3f}, mode_tv {exact['mode_tv']:.3f}")
    valid, bound = result.metrics[k]["valid"], EXACT_SHARE * exact["valid"]
    passed = valid >= bound
    rule = f"valid {valid:.3f} {'>=' if passed else '<'} {EXACT_SHARE:g} x exact {exact['valid']:.3f} = {bound:.3f}"
    return passed, rule


def save_points(path: Path, real: np.ndarray, panels: list[tuple[str, np.ndarray]], axis: float = AXIS) -> None:
    from matplotlib.figure import Figure

    panels = [("real data", real), *panels]
    fig = Figure(figsize=(2.6 * len(panels), 2.8))
    for i, (title, points) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.scatter(points[:, 0], points[:, 1], s=1, color="black" if i == 0 else "C0")
        ax.set_xlim(-axis, axis)
        ax.set_ylim(-axis, axis)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def save_images(path: Path, real: np.ndarray, panels: list[tuple[str, np.ndarray]]) -> None:
    from matplotlib.figure import Figure

    panels = [("real data", real), *panels]
    fig = Figure(figsize=(2.6 * len(panels), 2.8))
    for i, (title, images) in enumerate(panels):
        h, w = images.shape[1:]
        grid = np.asarray(images[:36]).reshape(6, 6, h, w).transpose(0, 2, 1, 3).reshape(6 * h, 6 * w)
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(grid, cmap="gray", vmin=-1, vmax=1)
        ax.set_axis_off()
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, as for `ablate run`")
    parser.add_argument("--out", help="folder for the sample figures (default: a new temporary folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--paper", action="store_true", help="also train the paper variant (K = 1, 4, k_max)")
    args = parser.parse_args(argv)
    experiment = load_experiment(args.experiment, args.overrides)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="learnability_"))
    out.mkdir(parents=True, exist_ok=True)
    k_max = experiment.k_max
    config = baseline_config(experiment, args.seed)
    task = config.task
    print(
        f"{experiment.name}: task {task} {config.task_params}, {config.train.steps} steps of batch "
        f"{config.train.batch_size}, lr {config.train.lr}, seed {args.seed}, one thread"
    )

    result, cost = train(config, [k_max])
    if result.status != "ok":
        print(f"flow baseline: {result.status} at step {result.diverged_step}\nFAIL")
        return 1
    m = result.metrics[k_max]
    names = TOY2D_SHOWN if task == "toy2d" else [n for n in m if not n.endswith("_floor")]
    print(f"flow baseline, K = {k_max}: {figures(m, names)} ({cost})")
    panels = [(f"flow baseline, K = {k_max}", result.samples[k_max])]

    if args.paper:
        steps = sorted({1, min(4, k_max), k_max})
        paper, paper_cost = train(paper_config(experiment, args.seed), steps)
        if paper.status != "ok":
            print(f"paper variant: {paper.status} at step {paper.diverged_step}")
        else:
            for k in steps:
                print(f"paper variant, K = {k}: {figures(paper.metrics[k], names)}")
                panels.append((f"paper variant, K = {k}", paper.samples[k]))
            print(f"paper variant: {paper_cost}")

    if task == "toy2d":
        passed, rule = toy2d_gate(config, result, k_max)
        path = out / f"{experiment.name}_samples.png"
        save_points(path, result.real_samples, panels)
    elif task == "digits":
        passed, rule = digits_gate(config, result, k_max)
        path = out / f"{experiment.name}_samples.png"
        save_images(path, result.real_samples, panels)
    elif task == "latent_world":
        passed, rule = latent_world_gate(config, result, k_max)
        path = out / f"{experiment.name}_samples.png"
        save_points(path, result.real_samples, panels, axis=1.5 * float(np.abs(result.real_samples).max()))
    else:
        print(f"no learnability gate for task {task!r}")
        return 0
    print(f"samples: {path}")
    print(f"{'PASS' if passed else 'FAIL'}: {rule}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
