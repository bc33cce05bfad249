"""`ablate compare A B [C ...]`: several results folders (tasks, budgets, code versions) side by side.

Per folder, each toggle's main effect at that folder's primary metric and K (or the ones asked for),
with its seed-paired CI on the metric's own scale (from :func:`ablate.analysis.factor_effects`).
Across folders, in the style of rliable (Agarwal et al. 2021), on per-task normalised scores:

- a cell's score in a folder is its metric oriented so that higher is better and min-max scaled over
  that folder's factorial cell means (0 = the worst cell, 1 = the best), so folders with different
  metrics and scales can be pooled;
- a toggle's **normalised effect** is the mean over folders of (score at the paper's level - score at
  the other level), matched within seed and stratum;
- its **probability of improvement** is the mean over folders of P(score at the paper's level >
  score at the other level) for a matched pair (ties count half);
- both with 95 % stratified bootstrap CIs (seeds resampled within each folder, folders resampled),
  as rliable computes them. With few seeds per folder a bootstrap interval is too narrow (see
  benchmarks/statistics_coverage.py); the per-folder seed-paired CIs are the ones to trust there.

Written with numpy: rliable 1.2.0 installs but fails to import next to pandas 3 (its dependency arch
raises a TypeError in ``deprecate_kwarg``), and its score matrices need the same number of runs in
every task, while folders here may have 2, 3 or 5 seeds.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ablate import analysis
from ablate.analysis.effects import metric_grids, ordered_levels
from ablate.results import SCALES, Results, atomic_write, default_primary_steps, load

N_BOOTSTRAP = 2000
COMPARE_COLUMNS = [
    "folder",
    "task",
    "metric",
    "steps",
    "scale",
    "term",
    "estimate",
    "ci_low",
    "ci_high",
    "p_holm",
    "ratio",
    "ratio_ci_low",
    "ratio_ci_high",
    "ratio_p_holm",
    "n_seeds",
    "normalised_effect",
    "probability_of_improvement",
]


@dataclass
class Study:
    """One folder at its chosen metric and K: per-seed normalised scores of matched cell pairs."""

    name: str
    results: Results
    metric: str
    steps: int
    pairs: dict[str, np.ndarray]  # toggle -> (seeds, strata, 2) normalised scores, [..., 0] = paper's level


def _study(name: str, results: Results, metric: str | None, steps: int | None) -> Study:
    metric = metric or results.run.get("primary_metric")
    if metric not in analysis.quality_metrics(results.metric_names):
        raise ValueError(
            f"{results.folder}: no quality metric {metric!r}; have {analysis.quality_metrics(results.metric_names)}"
        )
    steps = int(steps or results.run.get("primary_steps") or default_primary_steps(results.eval_steps))
    if steps not in results.eval_steps:
        raise ValueError(f"{results.folder}: K = {steps} not evaluated; have {results.eval_steps}")
    grid = metric_grids(results).get((metric, steps))
    if grid is None or not np.isfinite(grid.values).any():
        raise ValueError(f"{results.folder}: no finished values of {metric} at K = {steps}")
    sign = -1.0 if results.metric_directions.get(metric, "min") == "min" else 1.0
    oriented = sign * grid.values
    means = np.nanmean(oriented, axis=1)
    low, high = np.nanmin(means), np.nanmax(means)
    scores = (oriented - low) / (high - low) if high > low else np.zeros_like(oriented)
    pairs = {}
    levels = ordered_levels(results, grid.factors)
    for factor in (f for f in grid.factors if len(levels[f]) == 2):
        others = [f for f in grid.factors if f != factor]
        blocks = []
        for combo in itertools.product(*[levels[f] for f in others]):
            base = dict(zip(others, combo))
            plus = grid.cell_index({**base, factor: levels[factor][0]})
            minus = grid.cell_index({**base, factor: levels[factor][1]})
            blocks.append(np.stack([scores[plus], scores[minus]], axis=-1))  # (seeds, 2)
        pairs[factor] = np.stack(blocks, axis=1)  # (seeds, strata, 2)
    return Study(name, results, metric, steps, pairs)


def _names(folders: Sequence[str | Path]) -> list[str]:
    """Each folder's name, with its position on the command line where two share one (`compare A A`,
    or results/x/toy2d next to results/y/toy2d), so that every column and table row is one folder."""
    names = [Path(f).resolve().name for f in folders]
    return [f"{name} ({i})" if names.count(name) > 1 else name for i, name in enumerate(names, start=1)]


def _one_scale_per_metric(
    names: list[str], runs: list[Results], metric: str | None, scales: dict[str, str]
) -> tuple[dict[str, str], list[str]]:
    """The scale each compared metric is read on in every folder, and a note where the folders' tasks
    declare different ones: the override (``--scale``) if given, else the first folder's. Set as each
    folder's ``scale_overrides``, so one toggle is never a difference in one column and a ratio in the next."""
    known = {m for results in runs for m in analysis.quality_metrics(results.metric_names)}
    for name, scale in scales.items():
        if name not in known:
            raise ValueError(f"--scale {name}={scale}: no folder has a quality metric {name!r}")
        if scale not in SCALES:
            raise ValueError(f"--scale {name}={scale}: the scale must be log or raw")
    chosen: dict[str, str] = {}
    declared: dict[str, list[tuple[str, str]]] = {}
    for name, results in zip(names, runs):
        compared = metric or results.run.get("primary_metric")
        own = analysis.metric_scales(results).get(compared)
        if own is None:
            continue  # not a quality metric here: _study says so
        chosen.setdefault(compared, scales.get(compared, own))
        declared.setdefault(compared, []).append((name, own))
        results.scale_overrides = {**results.scale_overrides, compared: chosen[compared]}
    notes = [
        f"The folders declare different scales for {m}: "
        + ", ".join(f"{scale} ({name})" for name, scale in pairs)
        + f"; it is read on the {chosen[m]} scale in every folder ("
        + ("`--scale`" if m in scales else "the first folder's")
        + ")."
        for m, pairs in declared.items()
        if len({scale for _, scale in pairs}) > 1
    ]
    return chosen, notes


def _normalised_effect(pairs: np.ndarray) -> float:
    return float(np.nanmean(pairs[..., 0] - pairs[..., 1]))


def _probability_of_improvement(pairs: np.ndarray) -> float:
    plus, minus = pairs[..., 0], pairs[..., 1]
    keep = np.isfinite(plus) & np.isfinite(minus)
    return float(np.mean((plus[keep] > minus[keep]) + 0.5 * (plus[keep] == minus[keep]))) if keep.any() else np.nan


def _aggregate(studies: list[Study], toggle: str, statistic, rng: np.random.Generator) -> tuple[float, float, float]:
    """Mean over folders of a per-folder statistic, with a stratified bootstrap CI (seeds within
    folders, then folders)."""
    have = [s for s in studies if toggle in s.pairs]
    point = float(np.mean([statistic(s.pairs[toggle]) for s in have]))
    draws = []
    for _ in range(N_BOOTSTRAP):
        chosen = [have[i] for i in rng.integers(0, len(have), len(have))] if len(have) > 1 else have
        values = [
            statistic(s.pairs[toggle][rng.integers(0, len(s.pairs[toggle]), len(s.pairs[toggle]))]) for s in chosen
        ]
        draws.append(np.mean(values))
    low, high = np.percentile(draws, [2.5, 97.5])
    return point, float(low), float(high)


def compare(
    folders: list[str | Path],
    output: str | Path,
    metric: str | None = None,
    steps: int | Sequence[int] | None = None,
    scales: dict[str, str] | None = None,
) -> Path:
    """Write compare.md, compare.csv, compare_aggregate.csv and figures/compare*.png into ``output``, a
    new folder; return compare.md. `steps`: one K or several (each folder's primary K when None);
    `scales`: metric -> log or raw, read in every folder instead of what the tasks declare. Everything
    is computed before the first file is written, so an error leaves nothing behind."""
    if len(folders) < 2:
        raise ValueError("compare needs at least two results folders")
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ValueError(f"{output} already exists: compare into a new folder (results are never overwritten)")
    ks = [steps] if steps is None or isinstance(steps, int) else list(steps)
    names, runs = _names(folders), [load(Path(f)) for f in folders]
    chosen, notes = _one_scale_per_metric(names, runs, metric, dict(scales or {}))
    by_k = [[_study(name, results, metric, k) for name, results in zip(names, runs)] for k in ks]
    computed = [(studies, *_effects(studies)) for studies in by_k]
    (output / "figures").mkdir(parents=True, exist_ok=True)
    tables, aggregates, figures = [], [], []
    for studies, table, aggregate in computed:
        name = "compare.png" if len(by_k) == 1 else f"compare_K{studies[0].steps}.png"
        _figure(studies, table, aggregate, output / "figures" / name)
        tables.append(table)
        aggregates.append(aggregate)
        figures.append((studies[0].steps, f"figures/{name}"))
    table, aggregate = pd.concat(tables, ignore_index=True), pd.concat(aggregates, ignore_index=True)
    atomic_write(output / "compare.csv", lambda tmp: table.to_csv(tmp, index=False))
    atomic_write(output / "compare_aggregate.csv", lambda tmp: aggregate.to_csv(tmp, index=False))
    text = _markdown(by_k[0], table, aggregate, figures, chosen, notes)
    atomic_write(output / "compare.md", lambda tmp: tmp.write_text(text))
    return output / "compare.md"


def _effects(studies: list[Study]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per folder, each toggle's main effect at the studies' K; across folders, the aggregates."""
    rows = []
    for study in studies:
        effects = analysis.factor_effects(study.results)
        main = effects[
            (effects["metric"] == study.metric) & (effects["steps"] == study.steps) & (effects["kind"] == "main")
        ]
        for _, row in main.iterrows():
            pairs = study.pairs.get(row["term"])
            rows.append(
                {
                    "folder": study.name,
                    "task": (study.results.run.get("task") or {}).get("name"),
                    "metric": study.metric,
                    "steps": study.steps,
                    **{
                        c: row[c]
                        for c in (
                            "scale",
                            "term",
                            "estimate",
                            "ci_low",
                            "ci_high",
                            "p_holm",
                            "ratio",
                            "ratio_ci_low",
                            "ratio_ci_high",
                            "ratio_p_holm",
                            "n_seeds",
                        )
                    },
                    "normalised_effect": _normalised_effect(pairs) if pairs is not None else np.nan,
                    "probability_of_improvement": _probability_of_improvement(pairs) if pairs is not None else np.nan,
                }
            )
    table = pd.DataFrame(rows, columns=COMPARE_COLUMNS)
    rng = np.random.default_rng(0)
    toggles = list(pd.unique(table["term"]))
    aggregate = []
    for toggle in toggles:
        effect = _aggregate(studies, toggle, _normalised_effect, rng)
        improvement = _aggregate(studies, toggle, _probability_of_improvement, rng)
        aggregate.append(
            {
                "steps": studies[0].steps if len({s.steps for s in studies}) == 1 else None,
                "term": toggle,
                "n_folders": sum(toggle in s.pairs for s in studies),
                "normalised_effect": effect[0],
                "effect_ci_low": effect[1],
                "effect_ci_high": effect[2],
                "probability_of_improvement": improvement[0],
                "poi_ci_low": improvement[1],
                "poi_ci_high": improvement[2],
            }
        )
    return table, pd.DataFrame(aggregate)


def _figure(studies: list[Study], table: pd.DataFrame, aggregate: pd.DataFrame, path: Path) -> None:
    toggles = list(aggregate["term"])
    fig = Figure(figsize=(9, 0.9 + 0.55 * len(toggles)))
    ax_effect, ax_poi = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(toggles))[::-1]
    for i, study in enumerate(studies):
        values = table[table["folder"] == study.name].set_index("term").reindex(toggles)
        ax_effect.plot(values["normalised_effect"], y + 0.12 * (i + 1), "o", ms=4, label=study.name)
        ax_poi.plot(values["probability_of_improvement"], y + 0.12 * (i + 1), "o", ms=4)
    for ax, (value, low, high), null, label in (
        (
            ax_effect,
            ("normalised_effect", "effect_ci_low", "effect_ci_high"),
            0.0,
            "normalised effect: paper's level − other",
        ),
        (ax_poi, ("probability_of_improvement", "poi_ci_low", "poi_ci_high"), 0.5, "P(paper's level beats the other)"),
    ):
        est = aggregate[value].to_numpy(float)
        err = np.abs(np.vstack([est - aggregate[low], aggregate[high] - est]).astype(float))
        ax.errorbar(est, y, xerr=err, fmt="s", color="black", capsize=3, label="all folders (95% CI)")
        ax.axvline(null, color="0.4", lw=0.8)
        ax.set_xlabel(label, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    ax_effect.set_yticks(y, toggles, fontsize=8)
    ax_effect.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(0.0, -0.25), ncol=3)
    ks = sorted({s.steps for s in studies})
    fig.suptitle(
        f"Toggles across folders at K = {', '.join(map(str, ks))} (per-task normalised scores, stratified bootstrap)",
        fontsize=10,
    )
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight"))


def _ci(low, high) -> str:
    return f"[{low:.3g}, {high:.3g}]" if np.isfinite(low) and np.isfinite(high) else "no CI"


def _effect(row) -> str:
    """A toggle's effect on its folder's scale: a ratio on the log scale, else a difference."""
    if row["scale"] == "log":
        return f"x{row['ratio']:.3g} {_ci(row['ratio_ci_low'], row['ratio_ci_high'])}"
    return f"{row['estimate']:+.3g} {_ci(row['ci_low'], row['ci_high'])}"


def _p_holm(row) -> float:
    return row["ratio_p_holm" if row["scale"] == "log" else "p_holm"]


def _toggle_grid(table: pd.DataFrame) -> str:
    """Toggles x (folder, K): each effect with its CI and Holm p, bold where Holm p < 0.05."""
    folders = list(dict.fromkeys(table["folder"]))
    columns = sorted(dict.fromkeys(zip(table["folder"], table["steps"])), key=lambda c: (folders.index(c[0]), c[1]))
    lines = [
        "| toggle | "
        + " | ".join(f"{folder}, {metric} K = {k}" for (folder, k), metric in _metrics(table, columns))
        + " |",
        "|---|" + "---|" * len(columns),
    ]
    for term in dict.fromkeys(table["term"]):
        cells = []
        for folder, k in columns:
            match = table[(table["folder"] == folder) & (table["steps"] == k) & (table["term"] == term)]
            if not len(match):
                cells.append("")
                continue
            row = match.iloc[0]
            effect, p = _effect(row), _p_holm(row)
            cells.append(f"{'**' + effect + '**' if p < 0.05 else effect}, p = {p:.2g}")
        lines.append(f"| `{term}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _metrics(table: pd.DataFrame, columns: list[tuple]) -> list[tuple]:
    first = table.drop_duplicates(["folder", "steps"]).set_index(["folder", "steps"])["metric"]
    return [(column, first[column]) for column in columns]


def _markdown(
    studies: list[Study],
    table: pd.DataFrame,
    aggregate: pd.DataFrame,
    figures: list[tuple],
    scales: dict[str, str],
    notes: list[str],
) -> str:
    per_folder = [
        "| folder | task | metric (K) | toggle | effect on its scale, 95% CI | Holm p | normalised effect "
        "| P(improvement) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        per_folder.append(
            f"| {r['folder']} | {r['task']} | {r['metric']} (K = {r['steps']}) | `{r['term']}` | "
            f"{_effect(r)} | {_p_holm(r):.3g} | {r['normalised_effect']:+.3f} | "
            f"{r['probability_of_improvement']:.2f} |"
        )
    overall = [
        "| K | toggle | folders | normalised effect, 95% CI | P(paper's level beats the other), 95% CI |",
        "|---|---|---|---|---|",
    ]
    for _, r in aggregate.iterrows():
        k = "each folder's" if pd.isna(r["steps"]) else int(r["steps"])
        overall.append(
            f"| {k} | `{r['term']}` | {r['n_folders']} | {r['normalised_effect']:+.3f} "
            f"{_ci(r['effect_ci_low'], r['effect_ci_high'])} | {r['probability_of_improvement']:.2f} "
            f"{_ci(r['poi_ci_low'], r['poi_ci_high'])} |"
        )
    seeds = ", ".join(f"{s.name}: {len(s.results.seeds)}" for s in studies)
    return (
        "\n\n".join(
            [
                "# Comparison: " + ", ".join(s.name for s in studies),
                "Each folder at its primary metric and K unless `--metric`/`--steps` were given. Effects are the "
                "paper's level against the other, on each metric's own scale (ratios on the log scale), with the "
                "seed-paired 95% CIs and Holm p of each folder's `effects.csv`. Across folders, each cell's score "
                "is its metric oriented so that higher is better and min-max scaled over that folder's cells "
                "(0 = worst cell, 1 = best); the normalised effect and the probability that the paper's level "
                "beats the other (matched within seed and stratum) are averaged over folders, with stratified "
                "bootstrap 95% CIs (seeds within folders, then folders), as rliable does. Seeds per folder: "
                f"{seeds}; with fewer than about 10 a bootstrap CI is too narrow (see "
                "benchmarks/statistics_coverage.py): read the per-folder CIs first.",
                " ".join(
                    [
                        f"One scale per metric in every folder: {', '.join(f'{m} {s}' for m, s in scales.items())}.",
                        *notes,
                    ]
                ),
                "## Toggles by folder and K",
                "Bold: Holm p < 0.05 within its folder.",
                _toggle_grid(table),
                "## Across folders",
                "\n".join(overall),
                *(f"![Toggles across folders at K = {k}]({path})" for k, path in figures),
                "## Per folder",
                "\n".join(per_folder),
            ]
        )
        + "\n"
    )
