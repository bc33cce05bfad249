"""The report's opening answer, in words.

At the primary metric and K it says what each toggle does: its average effect when nothing it
interacts with changes its sign or size, its effect within each level of the toggle it interacts with
(simple effects) when an interaction's CI excludes no effect, and, when the average is
indistinguishable from zero, in how many strata of the other toggles it helps or hurts and by how
much. It then says what the seeds can detect (power), and compares the paper's variant with the
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
    Context,
    better,
    cell_text,
    ci_text,
    effect_text,
    fmt,
    mean_ci,
    roles,
    scale_phrase,
    significant,
)
from ablate.results import Results

TERM_KINDS = ("main", "interaction")


def is_term(kind: str) -> bool:
    """Rows of the full factorial (main effects and interactions of any order)."""
    return kind.startswith(TERM_KINDS)


def plus_word(row: Mapping, scale: str, direction: str, adjusted: bool = True) -> str:
    """Whether the row's reference (+1) level is ``better``, ``worse`` or ``indistinguishable``."""
    prefix, null = ("ratio_", 1.0) if scale == "log" else ("", 0.0)
    low, high = row[f"{prefix}ci_low"], row[f"{prefix}ci_high"]
    if not (np.isfinite(low) and np.isfinite(high)):
        return "without a CI"
    p = row[f"{prefix}p_holm"] if adjusted else row[f"{prefix}p_value"]
    if low <= null <= high or (np.isfinite(p) and p > ALPHA):
        return "indistinguishable"
    return "better" if (low > null) == (direction == "max") else "worse"


def size_text(row: Mapping, scale: str) -> str:
    return f"x{fmt(row['ratio'])}" if scale == "log" else f"{row['estimate']:+.3g}"


def _strata_phrase(ctx: Context, factor: str, plus: object) -> str:
    """In how many strata of the other factors the reference level is better / worse, and by how
    much (95 % CIs over seeds, Holm over the strata), or "" when no stratum shows a difference."""
    strata = ctx.primary(ctx.strata)
    strata = strata[strata["term"] == factor]
    words = [(plus_word(row, ctx.scale, ctx.direction), row) for _, row in strata.iterrows()]
    sides = {w: [row for word, row in words if word == w] for w in ("better", "worse")}
    if not sides["better"] and not sides["worse"]:
        return ""
    parts = []
    for word, rows in sides.items():
        if rows:
            ends = sorted({size_text(r, ctx.scale) for r in rows}, key=lambda text: float(text.lstrip("x")))
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
        details = [(row["within"], plus_word(row, scale, direction), row) for _, row in mine.iterrows()]
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
            f"{size_text(first, scale)}): {within}. Averaged over the other factors it changes {metric} by "
            f"{average}"
            + (f"; it is also part of {', '.join(f'`{t}`' for t in also)}" if also else "")
            + (f"; {strata}" if strata else "")
        )
    word = plus_word(main, scale, direction)
    if word in ("better", "worse"):
        strata = _strata_phrase(ctx, factor, plus)
        opposite = "worse" if word == "better" else "better"
        return f"`{factor}`: {plus} (reference) vs {minus} changes {metric} by {average}, so {plus} is {word}" + (
            f"; {strata}" if f"{opposite} in" in strata else ""
        )
    if word == "without a CI":
        return f"`{factor}`: {plus} (reference) vs {minus} changes {metric} by {size_text(main, scale)} (no CI)"
    strata = _strata_phrase(ctx, factor, plus)
    return (
        f"`{factor}`: {plus} (reference) vs {minus} changes {metric} by {average} on average, "
        "indistinguishable from zero" + (f"; but {strata}" if strata else "")
    )


def opening(ctx: Context, divergence: pd.DataFrame, missing: pd.DataFrame) -> str:
    results, metric, steps = ctx.results, ctx.metric, ctx.steps
    effects = ctx.primary_effects()
    terms = effects[effects["kind"].map(is_term)]
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
    tested = np.isfinite(quiet["ci_low"].astype(float))
    if tested.any():
        parts.append(
            f" The other {int(tested.sum())} interaction terms (two-way and higher) are indistinguishable from zero."
        )
    if (~tested).any():  # one seed: an estimate without a CI is neither zero nor not
        parts.append(f" The {int((~tested).sum())} interaction terms (two-way and higher) have no CI.")
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
