"""The report's text: the opening (``ablate.report.opening``), then the tables and the run facts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ablate import analysis
from ablate.analysis.fraction import design_sentence
from ablate.report.context import (
    FLOOR_LABEL,
    MAX_TABLE_ROWS,
    Context,
    better,
    cell_text,
    ci_text,
    fmt,
    md_table,
    mean_ci,
    roles,
    scale_phrase,
)
from ablate.report.opening import divergence_sentence, is_term, opening, plus_word, size_text


def _levels_section(ctx: Context) -> str:
    """Paper, simplified, baseline and noise floor at K = 1, the primary K and k_max."""
    steps = ctx.quoted_steps()
    cells = ctx.cells[ctx.cells["metric"] == ctx.metric].set_index(["variant", "steps"])
    rows = [
        [f"{role} `{variant}`", *(cell_text(cells, variant, k) for k in steps)] for role, variant in roles(ctx.results)
    ]
    floor = ctx.primary_floor()
    lead = (
        f"{ctx.metric} at K = {', '.join(map(str, steps))} "
        f"({better(ctx.results.metric_directions.get(ctx.metric, 'min'))}; mean over seeds, "
        "95% CI)"
    )
    if floor is not None:
        rows.append([FLOOR_LABEL, *[mean_ci(floor)] * len(steps)])
        lead += (
            f"; the noise floor is {ctx.metric} of a second real sample set against the "
            "reference, the same for every variant and K"
        )
    table = pd.DataFrame(rows, columns=["variant", *(f"K = {k}" for k in steps)])
    return f"{lead}:\n\n{md_table(table)}"


def _floor_note(ctx: Context) -> str:
    """The floor next to the cell means, so the table says how far the best cell is from it."""
    floor = ctx.primary_floor()
    text = f" The {FLOOR_LABEL} of {ctx.metric} is {mean_ci(floor)}." if floor is not None else ""
    references = analysis.reference_values(ctx.results)
    references = references[references["metric"] == ctx.metric]
    if len(references):
        text += (
            " For reading a number: "
            + "; ".join(f"{r} scores {fmt(v)}" for r, v in zip(references["reference"], references["value"]))
            + "."
        )
    return text


def _cells_table(ctx: Context) -> str:
    cells = ctx.primary(ctx.cells)
    ascending = ctx.direction == "min"
    cells = cells.sort_values("mean", ascending=ascending, na_position="last").head(MAX_TABLE_ROWS)
    table = pd.DataFrame(
        {
            "variant": [f"`{v}`" for v in cells["variant"]],
            "n_seeds": cells["n_seeds"],
            "n_diverged": cells["n_diverged"],
            "mean": cells["mean"],
            "std": cells["std"],
            "95% CI": [ci_text(lo, hi) for lo, hi in zip(cells["ci_low"], cells["ci_high"])],
        }
    )
    if ctx.scale == "log":
        table["geometric mean"] = cells["gmean"].to_numpy()
        table["95% CI (geometric)"] = [ci_text(lo, hi) for lo, hi in zip(cells["gmean_ci_low"], cells["gmean_ci_high"])]
    return md_table(table)


def _effects_table(ctx: Context, kind: str = "terms") -> str:
    effects = ctx.primary_effects()
    effects = (
        effects[effects["kind"].map(is_term) | (effects["kind"] == "anova")]
        if kind == "terms"
        else effects[effects["kind"] == "simple"]
    )
    table = pd.DataFrame({"term": [f"`{t}`" for t in effects["term"]]})
    if kind == "simple":
        table["within"] = effects["within"].to_numpy()
    else:
        table["kind"] = effects["kind"].to_numpy()
    table["estimate"] = effects["estimate"].to_numpy()
    table["95% CI"] = [ci_text(lo, hi) for lo, hi in zip(effects["ci_low"], effects["ci_high"])]
    table["Holm p"] = effects["p_holm"].to_numpy()
    if np.isfinite(effects["ratio"].astype(float)).any():
        table["ratio"] = effects["ratio"].to_numpy()
        table["ratio 95% CI"] = [ci_text(lo, hi) for lo, hi in zip(effects["ratio_ci_low"], effects["ratio_ci_high"])]
        table["ratio Holm p"] = effects["ratio_p_holm"].to_numpy()
    table["method"] = effects["method"].to_numpy()
    if "aliases" in effects and effects["aliases"].fillna("").astype(bool).any():
        table["aliases"] = [f"`{a}`" if a else "" for a in effects["aliases"].fillna("")]
    return md_table(table)


def _strata_table(ctx: Context) -> str:
    strata = ctx.primary(ctx.strata)
    table = pd.DataFrame(
        {
            "term": [f"`{t}`" for t in strata["term"]],
            "within": strata["within"].to_numpy(),
            "effect": [size_text(row, ctx.scale) for _, row in strata.iterrows()],
            "95% CI": [
                ci_text(
                    *((r["ratio_ci_low"], r["ratio_ci_high"]) if ctx.scale == "log" else (r["ci_low"], r["ci_high"]))
                )
                for _, r in strata.iterrows()
            ],
            "Holm p": strata["ratio_p_holm" if ctx.scale == "log" else "p_holm"].to_numpy(),
            "reference level": [plus_word(r, ctx.scale, ctx.direction) for _, r in strata.iterrows()],
        }
    )
    return md_table(table)


def _power_table(ctx: Context) -> str:
    power = ctx.primary(ctx.power)
    columns = [
        "term",
        "kind",
        "n_seeds",
        "contrast_sd",
        "alpha",
        "mde",
        "mde_percent",
        "seeds_for_10pct",
        "seeds_for_25pct",
    ]
    return md_table(power[columns].assign(term=power["term"].map(lambda t: f"`{t}`")))


def _family_table(ctx: Context) -> str:
    """The opening's tests: every primary one, and the follow-ups that received alpha."""
    family = ctx.family
    shown = family[family["parent"].isna() | (family["alpha_local"].astype(float) > 0)]
    if shown.empty:
        return "_(no test)_"
    log = ctx.scale == "log"
    table = pd.DataFrame(
        {
            "test": shown["kind"].to_numpy(),
            "term": [
                f"`{v}` vs paper" if k == "pair" else f"`{t}`"
                for k, t, v in zip(shown["kind"], shown["term"], shown["variant"])
            ],
            "within": shown["within"].fillna("").to_numpy(),
            ("ratio" if log else "estimate"): shown["estimate"].to_numpy(),
            "CI at the test's level": [
                f"{fmt(100 * lv)}% {ci_text(lo, hi)}" if np.isfinite(lv) else "no CI"
                for lv, lo, hi in zip(shown["ci_level"], shown["ci_low"], shown["ci_high"])
            ],
            "p": shown["p_value"].to_numpy(),
            "adjusted p": shown["p_adjusted"].to_numpy(),
            "resolved": ["yes" if r else "no" for r in shown["resolved"]],
            "method": shown["method"].to_numpy(),
        }
    )
    return md_table(table)


def _comparisons_table(ctx: Context) -> str:
    rows = ctx.primary(ctx.comparisons)
    log = ctx.scale == "log"
    table = pd.DataFrame(
        {
            "variant": [f"`{v}`" for v in rows["variant"]],
            ("variant / paper" if log else "variant − paper"): rows["ratio" if log else "difference"].to_numpy(),
            "95% CI": [
                ci_text(*((r["ratio_ci_low"], r["ratio_ci_high"]) if log else (r["ci_low"], r["ci_high"])))
                for _, r in rows.iterrows()
            ],
            "p": rows["ratio_p_value" if log else "p_value"].to_numpy(),
            "Holm p": rows["ratio_p_holm" if log else "p_holm"].to_numpy(),
            "seeds": rows["n_pairs"].to_numpy(),
            "verdict": rows["verdict"].to_numpy(),
        }
    )
    return md_table(table)


def _divergence_tables(divergence: pd.DataFrame) -> str:
    show = divergence.assign(level=divergence["level"].map(lambda v: f"`{v}`"))
    columns = ["level", "n_trials", "n_ok", "n_diverged", "n_failed", "n_missing"]
    per_variant = show[show["group"] == "variant"][columns].rename(columns={"level": "variant"})
    per_level = show[~show["group"].isin(["all", "variant"])]
    per_level = per_level[["group", *columns]].rename(columns={"group": "factor"})
    return f"Per variant:\n\n{md_table(per_variant)}\n\nPer factor level:\n\n{md_table(per_level)}"


HOW_TO_READ = """\
One row per term x `metric` x `steps` (number of sampling steps). Each two-level factor is coded +1
at its **reference** level (run.json `factors[].reference`; for the four toggles the paper's level,
shown in `plus_level`) and -1 at the other (`minus_level`); an interaction's code is the product of
its factors' codes. `kind` is `main`, `interaction` (two-way), `interaction3`, `interaction4`, ...
(the full factorial), `anova` (a factor with more than two levels) or `simple` (one factor within the
levels given in `within`, added when an interaction's CI excludes no effect).

- `estimate` = mean(metric | code = +1) − mean(metric | code = −1) on the raw scale. For a main
  effect: how much the metric changes when switching from `minus_level` to the reference level,
  averaged over all other factors. Whether that is good depends on the metric's direction.
- `ratio` = geometric mean at +1 / geometric mean at −1 (metrics with only positive values), with
  `ratio_ci_low`, `ratio_ci_high`, `ratio_p_value`, `ratio_p_holm`. `scale` says which of the two
  the report reads: what the task declares for the metric (`log` for distances such as FD, KID, W2;
  `raw` for shares), or `ablate report --scale`; never chosen from the values.
- Intervals are **seed-paired**: each seed's contrast of its own cells, then a Student-t interval
  over seeds (`n_seeds - 1` degrees of freedom). The seed's shared data and noise cancel, unequal cell
  variances are allowed, and interactions of every order are estimated, never pooled into the error.
  `p_holm`: Holm-corrected across the terms of one metric x steps (simple effects: across the simple
  effects of one metric x steps).
- `method`: how many seeds and strata (combinations of the other factors) the contrast used; fewer
  than all when trials diverged or are missing, chosen by which trials finished, never by their values.
- `n`: number of trial values used. A CI that covers 0 means "not detectable with these seeds", not
  "no effect": `power.csv` gives the smallest detectable effect.
- `aliases`, `resolution`: on a fractional design, the terms whose contrast on its runs is this term's
  (joined by ` = `; the estimate is their sum) and the design's resolution; one term per alias class has
  a row. Empty and `full` on the full factorial.
"""


def _span(values: pd.Series) -> str:
    low, high = fmt(values.min()), fmt(values.max())
    return low if low == high else f"{low} to {high}"


def _stability_section(stability: pd.DataFrame) -> str:
    """The stabilisers' work and the compute per step, per variant (stability.csv)."""
    known = stability.dropna(subset=["forward_per_step"])
    if known.empty:
        return "Not recorded for these trials (results written before ablate recorded them)."
    cost = _span(known["cost_per_step"])
    sentence = (
        ("Every cell's" if " to " not in cost else "At equal training steps the cells did not spend equal compute: a")
        + f" step cost {cost} flow steps (teacher calls: forward passes of one batch; a backward counted as "
        f"two forwards). {_clipping_clause(known)}; a cell that depends on clipping or other stabilisers "
        "shows it here. A loss spike is a step whose loss is over 10x the median of the previous 100."
    )
    table = known.assign(variant=known["variant"].map(lambda v: f"`{v}`"))
    return sentence + "\n\n" + md_table(table)


def _clipping_clause(stability: pd.DataFrame) -> str:
    """How much clipping acted, naming the cell that leaned on it most; a cell is named "most" only
    when clipping acted at all (every cell at 0 % has no "most")."""
    shares = stability["clipped_share"].astype(float)
    if not (shares > 0).any():
        return "Gradient clipping never acted" if shares.notna().any() else "Gradient clipping was not recorded"
    most = stability.loc[shares.idxmax(), "variant"]
    return f"Gradient clipping acted on {_span(100 * shares)} % of the steps (most in `{most}`)"


def render(
    ctx: Context, divergence: pd.DataFrame, missing: pd.DataFrame, stability: pd.DataFrame
) -> tuple[str, pd.DataFrame]:
    """report.md's text, and the claims.csv rows of its opening."""
    results = ctx.results
    answer, claims = opening(ctx, divergence, missing)
    run = results.run
    missing_text = md_table(missing.astype(str)) if len(missing) else "None: every expected trial is present."
    simple = ctx.primary_effects()
    simple = simple[simple["kind"] == "simple"]
    design = design_sentence(results.design)
    sections = [
        f"# Ablation report: {results.name}",
        answer,
        *([design] if design else []),
        _levels_section(ctx),
        f"## The opening's tests: {ctx.metric} at K = {ctx.steps}",
        "From `family.csv`: every pre-specified test and every follow-up that received alpha, with the "
        "interval at the level the test used (it excludes no effect exactly when the test resolved it) and "
        "the adjusted p-value of the whole family (resolved: at most 0.05). Each claim of the opening is a "
        "row of `claims.csv`.\n\n" + _family_table(ctx),
        *(f"_Note: {n}_" for n in ctx.notes),
        "## Divergence",
        divergence_sentence(divergence, results) + "\n\n" + _divergence_tables(divergence),
        "## Missing trials",
        missing_text,
        "## Stabilisers and compute",
        "From `stability.csv`. " + _stability_section(stability),
        f"## Cell means: {ctx.metric} at K = {ctx.steps}",
        "From `cells.csv` (best first; 95% Student-t CI over seeds)." + _floor_note(ctx) + "\n\n" + _cells_table(ctx),
        f"## Factor effects: {ctx.metric} at K = {ctx.steps}",
        "From `effects.csv` (every metric but the noise floors, and every step count, is there); "
        f"{scale_phrase(ctx.scale, ctx.scale_overridden)}. Exploratory: raw 95% CIs, Holm over the terms of "
        "this metric and K alone; the opening's verdicts are the tests above.\n\n" + _effects_table(ctx),
        *(
            [
                f"### Simple effects: {ctx.metric} at K = {ctx.steps}",
                "Exploratory: each factor of an interaction whose raw CI excludes no effect, within each "
                "level of the others.\n\n" + _effects_table(ctx, "simple"),
            ]
            if len(simple)
            else []
        ),
        f"## Each toggle within each combination of the others: {ctx.metric} at K = {ctx.steps}",
        "From `strata.csv` (exploratory: seed-paired 95% CIs; Holm over the strata of each toggle): where "
        "a toggle helps and where it hurts."
        + (
            "\n\n" + _strata_table(ctx)
            if len(ctx.primary(ctx.strata)) or not design
            else " On this fraction a toggle has no run at both levels within fixed levels of the other "
            "toggles, and no factor is crossed in full with it: there are no strata."
        ),
        f"## What these seeds can resolve: {ctx.metric} at K = {ctx.steps}",
        "From `power.csv`: per term, `mde` is the smallest effect (in effects.csv units; on the log scale "
        "the log of the ratio) that the opening's rule resolves with 80% power: the term's seed-paired "
        "t-test at its share `alpha` of the family's 0.05, from its own seed-to-seed spread and the seeds "
        "it rests on; `seeds_for_10pct` / `seeds_for_25pct` the seeds it needs for a 10% / 25% "
        "change.\n\n" + _power_table(ctx),
        f"## Paper vs the other variants: {ctx.metric} at K = {ctx.steps}",
        f"Paired by seed with the paper's variant `{results.paper_variant}` (exploratory: raw 95% CIs, Holm "
        "over the variants; the opening tests the simplified and baseline rows in its family above). From "
        "`comparisons.csv`.\n\n" + _comparisons_table(ctx),
        "## Figures",
        "\n\n".join(f"![{caption}]({path})\n\n*{caption}.*" for caption, path in ctx.figures),
        "## How to read effects.csv",
        HOW_TO_READ,
        "## Run",
        "\n".join(
            [
                f"- task: {(run.get('task') or {}).get('name')} ({results.sample_format})",
                "- factors: "
                + ", ".join(f"`{f['name']}` {f['levels']} (reference {f.get('reference')})" for f in results.factors),
                f"- seeds: {results.seeds}; sampling steps: {results.eval_steps}",
                "- metric scales: " + ", ".join(f"{m}: {s}" for m, s in ctx.scales.items()),
                f"- git commit: {run.get('git_commit')}; wall time: {fmt(run.get('wall_seconds'))} s",
                f"- versions: {run.get('versions')}",
                *(
                    f"- merged from {m['folder']}: seeds {m['seeds']}, git commit {m['git_commit']}"
                    for m in run.get("merged_from", [])
                ),
            ]
        ),
    ]
    return "\n\n".join(sections) + "\n", claims


def _latex(text: str) -> str:
    return "".join("\\" + c if c in "_&%#$" else c for c in str(text))


def effects_latex(ctx: Context) -> str:
    """effects.tex: the primary metric's factor effects at the primary K as a booktabs table
    (every estimable term of the design; ratios on a log-scale metric), ready for \\input{}."""
    effects = ctx.primary_effects()
    effects = effects[effects["kind"].map(is_term)]
    log = ctx.scale == "log"
    value, low, high, p = (
        ("ratio", "ratio_ci_low", "ratio_ci_high", "ratio_p_holm")
        if log
        else ("estimate", "ci_low", "ci_high", "p_holm")
    )
    rows = [
        f"{_latex(r['term'].replace(':', ' x '))} & {fmt(r[value])} & [{fmt(r[low])}, {fmt(r[high])}] & "
        f"{fmt(r[p])} \\\\"
        for _, r in effects.iterrows()
    ]
    what = "ratio (reference / other)" if log else "effect (reference $-$ other)"
    return "\n".join(
        [
            f"% {ctx.metric} at K = {ctx.steps}, {len(ctx.results.seeds)} seeds; written by ablate report",
            "\\begin{tabular}{lrrr}",
            "\\toprule",
            f"term & {what} & 95\\% CI & Holm $p$ \\\\",
            "\\midrule",
            *rows,
            "\\bottomrule",
            "\\end{tabular}",
            "",
        ]
    )
