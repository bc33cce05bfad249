"""`ablate compare A B [C ...]`: several results folders (tasks, budgets, code versions) side by side.

Per folder, each toggle's main effect at that folder's primary metric and K (or the ones asked for),
with its seed-paired CI on the metric's own scale (from :func:`ablate.analysis.factor_effects`).
Across folders, in the style of rliable (Agarwal et al. 2021), on per-task normalised scores
(:mod:`ablate.compare_scores`):

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

A folder with a fractional design (run.json ``design``) has no two runs that differ in one toggle
alone, so "matched" means its design's contrast there: the normalised effect is, per seed, the mean
score over the fraction's runs at the paper's level minus that at the other level (within each level
combination of the factors crossed in full), as effects.csv takes it; the probability of improvement
is over every (paper's-level run, other-level run) pair within one seed and such a stratum; the scores
are scaled over the fraction's runs, and the corner a design adds outside the fraction is in none of
it. Each such effect is its alias class's (compare.csv ``aliases``), and compare.md names the two-way
interactions a main effect stands for at resolution III. On a full folder both are the matched pairs above.

Written with numpy: rliable 1.2.0 installs but fails to import next to pandas 3 (its dependency arch
raises a TypeError in ``deprecate_kwarg``), and its score matrices need the same number of runs in
every task, while folders here may have 2, 3 or 5 seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ablate import analysis
from ablate.analysis.fraction import is_fraction
from ablate.compare_scores import (
    Study,
    normalised_effect,
    pooled_over_folders,
    probability_of_improvement,
    scored_study,
)
from ablate.results import SCALES, Results, atomic_write, load

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
    "aliases",  # as in effects.csv: the terms a fraction cannot tell this main effect from; empty when full
    "resolution",  # the folder's design: "full", or the fraction's "III", "IV", ...
]


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
            continue  # not a quality metric here: scored_study() says so
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
    by_k = [[scored_study(name, results, metric, k) for name, results in zip(names, runs)] for k in ks]
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
    for folder in studies:
        effects = analysis.factor_effects(folder.results)
        main = effects[
            (effects["metric"] == folder.metric) & (effects["steps"] == folder.steps) & (effects["kind"] == "main")
        ]
        for _, row in main.iterrows():
            sides = folder.sides.get(row["term"])
            rows.append(
                {
                    "folder": folder.name,
                    "task": (folder.results.run.get("task") or {}).get("name"),
                    "metric": folder.metric,
                    "steps": folder.steps,
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
                            "aliases",
                            "resolution",
                        )
                    },
                    "normalised_effect": normalised_effect(sides) if sides is not None else np.nan,
                    "probability_of_improvement": probability_of_improvement(sides) if sides is not None else np.nan,
                }
            )
    table = pd.DataFrame(rows, columns=COMPARE_COLUMNS)
    rng = np.random.default_rng(0)
    toggles = list(pd.unique(table["term"]))
    aggregate = []
    for toggle in toggles:
        effect = pooled_over_folders(studies, toggle, normalised_effect, rng)
        improvement = pooled_over_folders(studies, toggle, probability_of_improvement, rng)
        aggregate.append(
            {
                "steps": studies[0].steps if len({s.steps for s in studies}) == 1 else None,
                "term": toggle,
                "n_folders": sum(toggle in s.sides for s in studies),
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


def _design_note(studies: list[Study]) -> str:
    """compare.md's paragraph on the folders with a fractional design (empty when none has one): what is
    matched there, and at resolution III the two-way interactions each main effect is also the effect of."""
    fractions = [(s.name, s.results.design) for s in studies if is_fraction(s.results.design)]
    if not fractions:
        return ""
    described = ", ".join(
        f"{name} ({len(d.runs)} of {2 ** len(d.two_level)} runs, resolution {d.resolution_label})"
        for name, d in fractions
    )
    sentences = [
        f"Fractional designs: {described}. No two runs of a fraction differ in one toggle alone, so there the "
        "normalised effect is the design's contrast, as in the folder's effects.csv: per seed, the mean score "
        "over the fraction's runs at the paper's level minus that at the other level; the probability of "
        "improvement is over every (paper's-level run, other-level run) pair within one seed and level "
        "combination of the factors crossed in full. Scores there are scaled over the fraction's runs, and a "
        "corner run outside the fraction is in none of it. Each effect is its alias class's (compare.csv "
        "`aliases`)."
    ]
    for name, design in fractions:
        two_way = {t: [a for a in design.aliases(t) if a.count(":") == 1] for t in design.two_level}
        named = ["`" + "` = `".join([toggle, *aliases]) + "`" for toggle, aliases in two_way.items() if aliases]
        if named:
            sentences.append(
                f"At resolution III a main effect is also two-way interactions' effect: in {name}, {'; '.join(named)}."
            )
    return " ".join(sentences)


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
                *([note] if (note := _design_note(studies)) else []),
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
