"""The report's words: the opening answer, the tables and the run facts.

The opening paragraph says, at the primary metric and K, what each toggle does: its average effect
when nothing it interacts with changes its sign or size, its effect within each level of the toggle
it interacts with (simple effects) when an interaction's CI excludes no effect, and, when the average
is indistinguishable from zero, in how many strata of the other toggles it helps or hurts and by
how much. It then says what the seeds can detect (power), and compares the paper's variant with the
simplified one and with plain flow (seed-paired, pre-specified).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ablate import analysis
from ablate.analysis.comparisons import verdict
from ablate.report.context import (
    ALPHA,
    FLOOR_LABEL,
    MAX_TABLE_ROWS,
    Context,
    better,
    cell_text,
    ci_text,
    effect_text,
    fmt,
    md_table,
    mean_ci,
    roles,
    scale_phrase,
    significant,
)
from ablate.results import Results

TERM_KINDS = ("main", "interaction")


def _is_term(kind: str) -> bool:
    """Rows of the full factorial (main effects and interactions of any order)."""
    return kind.startswith(TERM_KINDS)


def _plus_word(row: Mapping, scale: str, direction: str, adjusted: bool = True) -> str:
    """Whether the row's reference (+1) level is ``better``, ``worse`` or ``indistinguishable``."""
    prefix, null = ("ratio_", 1.0) if scale == "log" else ("", 0.0)
    low, high = row[f"{prefix}ci_low"], row[f"{prefix}ci_high"]
    if not (np.isfinite(low) and np.isfinite(high)):
        return "without a CI"
    p = row[f"{prefix}p_holm"] if adjusted else row[f"{prefix}p_value"]
    if low <= null <= high or (np.isfinite(p) and p > ALPHA):
        return "indistinguishable"
    return "better" if (low > null) == (direction == "max") else "worse"


def _size(row: Mapping, scale: str) -> str:
    return f"x{fmt(row['ratio'])}" if scale == "log" else f"{row['estimate']:+.3g}"


def _strata_phrase(ctx: Context, factor: str, plus: object) -> str:
    """In how many strata of the other factors the reference level is better / worse, and by how
    much (95 % CIs over seeds, Holm over the strata), or "" when no stratum shows a difference."""
    strata = ctx.primary(ctx.strata)
    strata = strata[strata["term"] == factor]
    words = [(_plus_word(row, ctx.scale, ctx.direction), row) for _, row in strata.iterrows()]
    sides = {w: [row for word, row in words if word == w] for w in ("better", "worse")}
    if not sides["better"] and not sides["worse"]:
        return ""
    parts = []
    for word, rows in sides.items():
        if rows:
            ends = sorted({_size(r, ctx.scale) for r in rows}, key=lambda text: float(text.lstrip("x")))
            span = ends[0] if len(ends) == 1 else f"{ends[0]} to {ends[-1]}"
            parts.append(f"{word} in {len(rows)} ({span})")
    unclear = len(words) - len(sides["better"]) - len(sides["worse"])
    return (
        f"within the {len(words)} combinations of the other factors, {plus} is "
        + ", ".join(parts)
        + (f" and unclear in {unclear}" if unclear else "")
        + " (strata.csv; Holm over the strata)"
    )


def _toggle_sentence(ctx: Context, main: pd.Series, interactions: pd.DataFrame, simple: pd.DataFrame) -> str:
    """One toggle: its average effect, or its effect within the levels of what it interacts with."""
    factor, plus, minus = main["term"], main["plus_level"], main["minus_level"]
    metric, scale, direction = ctx.metric, ctx.scale, ctx.direction
    average = effect_text(main, scale)
    involved = interactions[interactions["term"].str.split(":").map(lambda t: factor in t)]
    if len(involved):
        first = involved.sort_values(["order", "p_holm"]).iloc[0]
        others = [f for f in first["term"].split(":") if f != factor]
        mine = simple[
            (simple["term"] == factor)
            & simple["within"].map(lambda w: sorted(p.split("=")[0] for p in w.split(" & ")) == sorted(others))
        ]
        details = [(row["within"], _plus_word(row, scale, direction), row) for _, row in mine.iterrows()]
        decided = {word for _, word, _ in details if word in ("better", "worse")}
        n_decided = sum(word in decided for _, word, _ in details)
        names = ", ".join(f"`{o}`" for o in others)
        if len(decided) == 2:
            lead = f"flips with {names}"
        elif n_decided == len(details) and details:
            lead = f"- {plus} is {decided.pop()} at every level of {names}, by different amounts"
        elif n_decided == 1:
            lead = f"matters only with {next(w for w, word, _ in details if word in decided)}"
        else:
            lead = f"depends on {names}"
        within = "; ".join(
            f"with {w}: {effect_text(row, scale)}, {plus} {'unclear' if word == 'indistinguishable' else word}"
            for w, word, row in details
        )
        also = [t for t in involved["term"] if t != first["term"]]
        strata = _strata_phrase(ctx, factor, plus)
        return (
            f"`{factor}` ({plus} vs {minus}) {lead} (interaction `{first['term']}` "
            f"{_size(first, scale)}): {within}. Averaged over the other factors it changes {metric} by "
            f"{average}"
            + (f"; it is also part of {', '.join(f'`{t}`' for t in also)}" if also else "")
            + (f"; {strata}" if strata else "")
        )
    word = _plus_word(main, scale, direction)
    if word in ("better", "worse"):
        strata = _strata_phrase(ctx, factor, plus)
        opposite = "worse" if word == "better" else "better"
        return f"`{factor}`: {plus} (reference) vs {minus} changes {metric} by {average}, so {plus} is {word}" + (
            f"; {strata}" if f"{opposite} in" in strata else ""
        )
    if word == "without a CI":
        return f"`{factor}`: {plus} (reference) vs {minus} changes {metric} by {_size(main, scale)} (no CI)"
    strata = _strata_phrase(ctx, factor, plus)
    return (
        f"`{factor}`: {plus} (reference) vs {minus} changes {metric} by {average} on average, "
        "indistinguishable from zero" + (f"; but {strata}" if strata else "")
    )


def _opening(ctx: Context, divergence: pd.DataFrame, missing: pd.DataFrame) -> str:
    results, metric, steps = ctx.results, ctx.metric, ctx.steps
    effects = ctx.primary_effects()
    terms = effects[effects["kind"].map(_is_term)]
    estimable = terms[np.isfinite(terms["estimate"].astype(float))]
    flagged = estimable[significant(estimable, ctx.scale)]
    interactions = flagged[flagged["kind"] != "main"]
    simple = effects[effects["kind"] == "simple"]
    total = divergence[divergence["group"] == "all"].iloc[0]
    n_expected = int(total["n_trials"] + total["n_missing"])
    n_seeds = len(results.seeds)
    partial = (
        f"**Partial: {int(total['n_trials'])} of {n_expected} trials.** " if int(total["n_missing"]) else ""
    )  # a run still going, or interrupted
    parts = [
        f"{partial}At **{metric}** ({better(ctx.direction)}) with **K = {steps}** sampling steps "
        f"({n_seeds} seed(s), {total['n_ok']} of {n_expected} expected trials finished without "
        f"diverging; {scale_phrase(ctx.scale)}):"
    ]
    mains = estimable[estimable["kind"] == "main"]
    ordered = sorted(
        mains.iterrows(),
        key=lambda item: (
            item[1]["term"] not in set(flagged["term"])
            and not interactions["term"].str.split(":").map(lambda t: item[1]["term"] in t).any()
        ),
    )
    sentences = [_toggle_sentence(ctx, row, interactions, simple) for _, row in ordered]
    if sentences:
        parts.append(" " + ". ".join(sentences) + ".")
    else:
        parts.append(" no toggle effect can be estimated.")
    if len(interactions):
        parts.append(
            " Interactions whose CI excludes no effect: "
            + "; ".join(f"`{r['term']}` {effect_text(r, ctx.scale)}" for _, r in interactions.iterrows())
            + "."
        )
    quiet = estimable[(estimable["kind"] != "main") & ~estimable["term"].isin(interactions["term"])]
    if len(quiet):
        parts.append(f" The other {len(quiet)} interaction terms (two-way and higher) are indistinguishable from zero.")
    impossible = terms[~np.isfinite(terms["estimate"].astype(float))]
    if len(impossible):
        parts.append(
            " Not estimable (no seed has every cell needed): " + ", ".join(f"`{t}`" for t in impossible["term"]) + "."
        )
    for _, row in effects[effects["kind"] == "anova"].iterrows():
        parts.append(
            f" `{row['term']}` (more than two levels): Hotelling p = {fmt(row['p_value'])}, "
            f"Holm p = {fmt(row['p_holm'])}."
        )
    parts += [
        " " + s
        for s in (
            _power_sentence(ctx),
            _levels_sentence(ctx),
            _worsening_sentence(ctx),
            _pair_sentence(ctx, "simplified", divergence),
            _pair_sentence(ctx, "baseline", divergence),
            _balance_sentence(ctx, terms),
            divergence_sentence(divergence, results),
        )
        if s
    ]
    if len(missing):
        parts.append(
            f" {len(missing)} expected trial(s) are missing (listed below); the analysis uses the trials present."
        )
    if ctx.single_seed:
        parts.append(
            " Single seed: no CI over seeds is possible for cell means, effects or "
            "comparisons; the half-normal plot shows which effects stand out from the rest."
        )
    return "".join(parts)


def _power_sentence(ctx: Context) -> str:
    power = ctx.primary(ctx.power)
    if power.empty or not np.isfinite(power["mde"].iloc[0]):
        return ""
    row = power.iloc[0]
    n = int(row["n_seeds"])
    if ctx.scale == "log":
        smallest = f"a factor of x{fmt(np.exp(row['mde']))} ({fmt(row['mde_percent'])} %)"
    else:
        smallest = f"{fmt(row['mde'])} ({fmt(row['mde_percent'])} % of the mean)"
    text = (
        f"With {n} seeds, the smallest effect these tests detect with {row['power']:.0%} power at "
        f"K = {ctx.steps} is {smallest}; a 10 % change needs {fmt(row['seeds_for_10pct'])} seeds "
        f"and a 25 % change {fmt(row['seeds_for_25pct'])} (power.csv)."
    )
    return ("**Two seeds: a demo, not a conclusion.** " + text) if n == 2 else text


def _levels_sentence(ctx: Context) -> str:
    """The paper's and the baseline's values at the primary K next to the noise floor: the
    numbers researchers quote, and how far both are from what real data scores."""
    cells = ctx.cells[ctx.cells["metric"] == ctx.metric].set_index(["variant", "steps"])
    values = [
        f"{cell_text(cells, variant, ctx.steps)} for the {role} variant `{variant}`"
        for role, variant in roles(ctx.results)
        if role != "simplified"
    ]
    if not values:
        return ""
    floor = ctx.primary_floor()
    against = f", against a {FLOOR_LABEL} of {mean_ci(floor)}" if floor is not None else ""
    return f"At K = {ctx.steps}, {ctx.metric} is {' and '.join(values)}{against}."


def _worsening_sentence(ctx: Context) -> str:
    """Flag a paper variant that is worse at k_max than at the primary K, only when the CI shows it."""
    paper = ctx.results.paper_variant
    trend = (
        analysis.worsening_at_max_steps(ctx.results, paper, ctx.metric, ctx.steps)
        if paper is not None
        else pd.DataFrame()
    )
    if trend.empty or not trend["worse"].iloc[0]:
        return ""
    row = trend.iloc[0]
    change = (
        f"ratio x{fmt(row['ratio'])}, 95% CI {ci_text(row['ratio_ci_low'], row['ratio_ci_high'])}"
        if row["scale"] == "log"
        else f"difference {row['difference']:+.3g}, 95% CI {ci_text(row['ci_low'], row['ci_high'])}"
    )
    return (
        f"The paper's variant gets worse with more sampling steps: {ctx.metric} is "
        f"{fmt(row['max_steps_mean'])} at K = {row['max_steps']} against "
        f"{fmt(row['reference_mean'])} at K = {row['reference_steps']} ({change}, paired over "
        "seeds; the two K fixed in advance)."
    )


def _pair_sentence(ctx: Context, role: str, divergence: pd.DataFrame) -> str:
    """Paper vs the simplified variant, or vs the baseline: pre-specified, paired by seed."""
    results = ctx.results
    paper = results.paper_variant
    other = results.simplified_variant if role == "simplified" else results.baseline_variant
    if other is None or paper is None:
        return ""
    rows = ctx.primary(ctx.comparisons)
    rows = rows[rows["variant"] == other]
    name = "The simplified variant" if role == "simplified" else "The flow baseline"
    if rows.empty or not np.isfinite(rows["difference"].iloc[0]):
        per_variant = divergence[divergence["group"] == "variant"].set_index("level")
        status = "; ".join(
            f"`{v}`: {per_variant.loc[v, 'n_ok']} finished, {per_variant.loc[v, 'n_diverged']} "
            f"diverged of {per_variant.loc[v, 'n_trials']}"
            if v in per_variant.index
            else f"`{v}`: no trials"
            for v in (other, paper)
        )
        return f"{name} cannot be compared with the paper's at this step count ({status})."
    row = rows.iloc[0]
    if ctx.scale == "log":
        size, what = f"a factor of x{fmt(row['ratio'])}", f"{role} / paper"
        interval, p = ci_text(row["ratio_ci_low"], row["ratio_ci_high"]), row["ratio_p_value"]
    else:
        size, what = f"{row['difference']:+.3g}", f"{role} − paper"
        interval, p = ci_text(row["ci_low"], row["ci_high"]), row["p_value"]
    pairs = int(row["n_pairs"])
    lead = f"{name} `{other}` differs from the paper's `{paper}` by {size} ({what}, paired over {pairs} seed(s)"
    word = verdict(row, ctx.scale, ctx.direction, adjusted=False)
    if word == "no CI":
        return f"{lead}; no CI possible with fewer than two seeds)."
    judgement = {
        "indistinguishable": "indistinguishable from the paper's",
        "variant better": "better",
        "paper better": "worse",
    }[word]
    return f"{lead}, 95% CI {interval}, p = {fmt(p)}): it is {judgement}."


def _balance_sentence(ctx: Context, terms: pd.DataFrame) -> str:
    methods = terms["method"].astype(str)
    if not len(terms) or (~np.isfinite(terms["estimate"].astype(float))).all():
        return "No factorial cell has a finished trial at this step count: no effect can be estimated."
    partial = methods[
        ~methods.str.extract(r"(\d+) of (\d+) strata").apply(lambda r: r[0] == r[1], axis=1).fillna(False).astype(bool)
    ]
    if partial.empty:
        return "Every effect uses every cell of the factorial in every seed."
    empty = analysis.empty_cells(ctx.results, ctx.metric, ctx.steps)
    return (
        "Not every cell has a finished trial in every seed"
        + (f" (cells {', '.join(f'`{v}`' for v in empty)} have none)" if empty else "")
        + ": each effect uses the strata (combinations of the other factors) complete in the same "
        "seeds, e.g. "
        + "; ".join(f"`{t}` {m}" for t, m in zip(terms.loc[partial.index, "term"][:3], partial[:3]))
        + "."
    )


def divergence_sentence(divergence: pd.DataFrame, results: Results) -> str:
    total = divergence[divergence["group"] == "all"].iloc[0]
    if total["n_diverged"] == 0 and total["n_failed"] == 0:
        return "No trial diverged or failed."
    per_variant = divergence[(divergence["group"] == "variant") & (divergence["n_diverged"] > 0)]
    levels = divergence[~divergence["group"].isin(["all", "variant"])]
    by_level = []
    for factor, rows in levels.groupby("group", sort=False):
        if rows["n_diverged"].nunique() > 1:
            by_level.append(
                f"`{factor}`: "
                + ", ".join(f"{r['level']} {r['n_diverged']}/{r['n_trials']}" for _, r in rows.iterrows())
            )
    text = (
        f"Divergence is a result: {total['n_diverged']} of {total['n_trials']} trials diverged"
        + (f" and {total['n_failed']} failed" if total["n_failed"] else "")
        + (
            " ("
            + ", ".join(f"`{r['level']}` {r['n_diverged']}/{r['n_trials']}" for _, r in per_variant.iterrows())
            + ")"
            if len(per_variant)
            else ""
        )
    )
    if by_level:
        text += "; by toggle level: " + "; ".join(by_level)
    return text + "."


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
    return f" The {FLOOR_LABEL} of {ctx.metric} is {mean_ci(floor)}." if floor is not None else ""


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
        effects[effects["kind"].map(_is_term) | (effects["kind"] == "anova")]
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
    return md_table(table)


def _strata_table(ctx: Context) -> str:
    strata = ctx.primary(ctx.strata)
    table = pd.DataFrame(
        {
            "term": [f"`{t}`" for t in strata["term"]],
            "within": strata["within"].to_numpy(),
            "effect": [_size(row, ctx.scale) for _, row in strata.iterrows()],
            "95% CI": [
                ci_text(
                    *((r["ratio_ci_low"], r["ratio_ci_high"]) if ctx.scale == "log" else (r["ci_low"], r["ci_high"]))
                )
                for _, r in strata.iterrows()
            ],
            "Holm p": strata["ratio_p_holm" if ctx.scale == "log" else "p_holm"].to_numpy(),
            "reference level": [_plus_word(r, ctx.scale, ctx.direction) for _, r in strata.iterrows()],
        }
    )
    return md_table(table)


def _power_table(ctx: Context) -> str:
    power = ctx.power[ctx.power["metric"] == ctx.metric]
    columns = ["steps", "scale", "n_seeds", "contrast_sd", "mde", "mde_percent", "seeds_for_10pct", "seeds_for_25pct"]
    return md_table(power[columns])


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
  the report reads: `log` when the cell means span 10x or more.
- Intervals are **seed-paired**: each seed's contrast of its own cells, then a Student-t interval
  over seeds (`n_seeds - 1` degrees of freedom). The seed's shared data and noise cancel, unequal cell
  variances are allowed, and interactions of every order are estimated, never pooled into the error.
  `p_holm`: Holm-corrected across the terms of one metric x steps (simple effects: across the simple
  effects of one metric x steps).
- `method`: how many seeds and strata (combinations of the other factors) the contrast used; fewer
  than all when trials diverged or are missing, chosen by which trials finished, never by their values.
- `n`: number of trial values used. A CI that covers 0 means "not detectable with these seeds", not
  "no effect": `power.csv` gives the smallest detectable effect.
"""


def _stability_section(stability: pd.DataFrame) -> str:
    """The stabilisers' work and the compute per step, per variant (stability.csv)."""
    known = stability.dropna(subset=["forward_per_step"])
    if known.empty:
        return "Not recorded for these trials (results written before ablate recorded them)."
    cheapest, dearest = known["cost_per_step"].min(), known["cost_per_step"].max()
    clipped = known.sort_values("clipped_share", ascending=False).iloc[0]
    sentence = (
        f"At equal training steps the cells did not spend equal compute: a step cost {fmt(cheapest)} to "
        f"{fmt(dearest)} flow steps (teacher calls: forward passes of one batch; a backward counted as two "
        f"forwards). Gradient clipping acted on {fmt(100 * known['clipped_share'].min())} % to "
        f"{fmt(100 * known['clipped_share'].max())} % of the steps (most in `{clipped['variant']}`); "
        f"a cell that depends on clipping or other stabilisers shows it here. A loss spike is a step whose "
        f"loss is over 10x the median of the previous 100."
    )
    table = known.assign(variant=known["variant"].map(lambda v: f"`{v}`"))
    return sentence + "\n\n" + md_table(table)


def render(ctx: Context, divergence: pd.DataFrame, missing: pd.DataFrame, stability: pd.DataFrame) -> str:
    results = ctx.results
    run = results.run
    missing_text = md_table(missing.astype(str)) if len(missing) else "None: every expected trial is present."
    simple = ctx.primary_effects()
    simple = simple[simple["kind"] == "simple"]
    sections = [
        f"# Ablation report: {results.name}",
        _opening(ctx, divergence, missing),
        _levels_section(ctx),
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
        f"{scale_phrase(ctx.scale)}.\n\n" + _effects_table(ctx),
        *(
            [
                f"### Simple effects: {ctx.metric} at K = {ctx.steps}",
                "Each factor of an interaction whose CI excludes no effect, within each level of the "
                "others.\n\n" + _effects_table(ctx, "simple"),
            ]
            if len(simple)
            else []
        ),
        f"## Each toggle within each combination of the others: {ctx.metric} at K = {ctx.steps}",
        "From `strata.csv` (seed-paired 95% CIs; Holm over the strata of each toggle): where a toggle "
        "helps and where it hurts."
        "\n\n" + _strata_table(ctx),
        f"## What these seeds can detect: {ctx.metric}",
        "From `power.csv`: `mde` is the smallest effect (in effects.csv units; on the log scale the "
        "log of the ratio) that the seed-paired t-test detects with 80% power at alpha 0.05, from this "
        "run's own seed-to-seed variance; `seeds_for_10pct` / `seeds_for_25pct` the seeds needed to "
        "detect a 10% / 25% change.\n\n" + _power_table(ctx),
        f"## Paper vs the other variants: {ctx.metric} at K = {ctx.steps}",
        f"Paired by seed with the paper's variant `{results.paper_variant}` (Holm over the variants; "
        "the simplified and baseline rows are also the opening's pre-specified comparisons). From "
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
            ]
        ),
    ]
    return "\n\n".join(sections) + "\n"


def _latex(text: str) -> str:
    return "".join("\\" + c if c in "_&%#$" else c for c in str(text))


def effects_latex(ctx: Context) -> str:
    """effects.tex: the primary metric's factor effects at the primary K as a booktabs table
    (every term of the full factorial; ratios on a log-scale metric), ready for \\input{}."""
    effects = ctx.primary_effects()
    effects = effects[effects["kind"].map(_is_term)]
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
