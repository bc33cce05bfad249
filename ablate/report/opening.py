"""The report's opening answer, in words: every claim a rejected test of one family.

At the primary metric and K, the opening states what the family of :mod:`ablate.analysis.family`
resolved (toggles, interactions and their follow-ups, the paper against the simplified variant and
the flow baseline, more steps against the primary K) and nothing else: each claim is a row of
claims.csv with the interval at the level its test used, so the words hold the family's 5 %
together. What the family did not resolve is listed as not resolved, never as "no effect"; strata
and the other tables are exploratory and never quoted as claims. Before the verdicts it says when
the testbed did not learn (the task's learnability gate), and after them what the seeds can resolve.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ablate import analysis
from ablate.analysis.fraction import is_fraction
from ablate.report.claims import Claims, level_text, resolved_sentences, value_text
from ablate.report.context import (
    Context,
    better,
    cell_text,
    ci_text,
    fmt,
    mean_ci,
    roles,
    scale_phrase,
)
from ablate.results import Results
from ablate.rounds import looks_sentence

TERM_KINDS = ("main", "interaction")


def is_term(kind: str) -> bool:
    """Rows of the full factorial (main effects and interactions of any order)."""
    return kind.startswith(TERM_KINDS)


def plus_word(row: Mapping, scale: str, direction: str, adjusted: bool = True) -> str:
    """Whether an exploratory row's reference (+1) level is ``better``, ``worse`` or ``unclear`` at
    the row's own Holm-adjusted level (strata.csv)."""
    prefix, null = ("ratio_", 1.0) if scale == "log" else ("", 0.0)
    low, high = row[f"{prefix}ci_low"], row[f"{prefix}ci_high"]
    if not (np.isfinite(low) and np.isfinite(high)):
        return "without a CI"
    p = row[f"{prefix}p_holm"] if adjusted else row[f"{prefix}p_value"]
    if low <= null <= high or (np.isfinite(p) and p > 0.05):
        return "unclear"
    return "better" if (low > null) == (direction == "max") else "worse"


def size_text(row: Mapping, scale: str) -> str:
    return f"x{fmt(row['ratio'])}" if scale == "log" else f"{row['estimate']:+.3g}"


def _rule_sentence(ctx: Context) -> str:
    family = ctx.family
    primary = family[family["parent"].isna()]
    kinds = primary["kind"]
    parts = []
    n_terms = int(kinds.map(is_term).sum())
    if n_terms:
        parts.append(f"{n_terms} factorial term{'s' if n_terms != 1 else ''}")
    if (kinds == "anova").any():
        parts.append(f"{int((kinds == 'anova').sum())} level test(s) of factors with more than two levels")
    for _, row in primary[kinds == "pair"].iterrows():
        parts.append("paper vs simplified" if row["variant"] == ctx.results.simplified_variant else "paper vs flow")
    if (kinds == "worsening").any():
        parts.append(f"K = {ctx.results.eval_steps[-1]} vs K = {ctx.steps}")
    return (
        f"The rule: {len(primary)} pre-specified tests ({', '.join(parts)}) share a 5 % family-wise error "
        "(Holm-type graphical procedure); simple effects and equivalences are tested only behind an interaction "
        "it resolved, with the alpha it passes down. Each claim quotes the interval at its own test's level "
        "(claims.csv); strata and the other tables are exploratory."
    )


def _unresolved_sentence(ctx: Context, any_resolved: bool) -> str:
    """What the family tested and did not resolve, with the intervals at the tests' levels; and what it
    could not test (one seed, tied seeds, no complete stratum), with the reason."""
    family = ctx.family
    open_ = family[~family["resolved"].astype(bool) & family["parent"].isna()]
    testable = open_[np.isfinite(open_["p_value"].astype(float))]
    parts = [
        f"`{r['term']}` {value_text(r, ctx.scale)} ({_interval_words(r)})"
        for _, r in testable[testable["kind"] == "main"].iterrows()
    ]
    interactions = testable[testable["kind"].map(lambda k: k.startswith("interaction"))]
    if len(interactions):
        parts.append(f"{len(interactions)} interaction term{'s' if len(interactions) != 1 else ''}")
    for _, r in testable[testable["kind"].isin(["pair", "worsening", "anova"])].iterrows():
        label = {"anova": f"`{r['term']}`'s levels", "worsening": "more steps for the paper's variant"}.get(
            r["kind"], f"`{r['variant']}` vs the paper's"
        )
        parts.append(label + (f" {value_text(r, ctx.scale)} ({_interval_words(r)})" if r["kind"] != "anova" else ""))
    lead = "Not resolved at this error rate: " if any_resolved else "Nothing is resolved at this error rate: "
    text = (lead + "; ".join(parts) + ".") if parts else ("" if any_resolved else "Nothing is resolved.")
    untested = open_[~np.isfinite(open_["p_value"].astype(float))]
    reasons = {
        "seeds tie": untested[untested["method"].str.contains("tie")],
        "one seed": untested[untested["n_seeds"].astype(int) == 1],
        "none": untested[untested["n_seeds"].astype(int) == 0],
    }
    if len(reasons["seeds tie"]):
        text += (
            " No test for "
            + ", ".join(f"`{t}`" for t in reasons["seeds tie"]["term"])
            + ": every seed gives the same contrast and the metric declares no measurement noise, so the "
            "seeds cannot say how sure that is."
        )
    if len(reasons["one seed"]):
        text += f" {len(reasons['one seed'])} test(s) rest on a single seed: no test is possible."
    if len(reasons["none"]):
        text += (
            " Not estimable (no seed has every cell needed): "
            + ", ".join(f"`{t}`" for t in reasons["none"]["term"])
            + "."
        )
    return (text + _uncompared(ctx)).strip()


def _uncompared(ctx: Context) -> str:
    """The pre-specified comparisons the family could not form: a cell with no finished trial here."""
    results = ctx.results
    have = set(ctx.family.loc[ctx.family["kind"] == "pair", "variant"])
    text = ""
    for name, other in (
        ("simplified variant", results.simplified_variant),
        ("flow baseline", results.baseline_variant),
    ):
        if other is not None and results.paper_variant is not None and other not in have:
            text += (
                f" The {name} `{other}` cannot be compared with the paper's `{results.paper_variant}` at this step "
                "count: one of them has no finished trial in a shared seed."
            )
    return text


def _interval_words(row: Mapping) -> str:
    if not np.isfinite(row["ci_level"]):
        return "no CI"
    return f"{level_text(row['ci_level'])} CI {ci_text(row['ci_low'], row['ci_high'])}"


def _gate_passed_sentence(ctx: Context, gate: pd.DataFrame) -> str:
    """That the testbed learned its data, with the numbers: a reader should not have to assume it."""
    passed = gate[gate["passed"].eq(True)]
    if passed.empty or len(passed) < len(gate):  # no gate, or one not evaluable (no such metric or cell)
        return ""
    who = passed["variant"].iloc[0]
    role = "The flow baseline" if who == ctx.results.baseline_variant else "The best cell"
    meets = " and ".join(
        f"{r['metric']} {fmt(r['value'])} {r['op']} {fmt(r['threshold'])}" for _, r in passed.iterrows()
    )
    return f"{role} `{who}` passes the task's learnability gate ({meets} at K = {passed['steps'].iloc[0]})."


def gate_sentence(ctx: Context) -> str:
    """First words of the opening: whether the testbed learned its data (the task's gate)."""
    gate = analysis.learnability(ctx.results)
    failed = gate[gate["passed"].eq(False).fillna(False).astype(bool)]
    if failed.empty:
        return _gate_passed_sentence(ctx, gate)
    who = failed["variant"].iloc[0]
    role = "the flow baseline" if who == ctx.results.baseline_variant else "the best cell"
    misses = "; ".join(
        f"{r['metric']} {fmt(r['value'])} at K = {r['steps']}, where the gate asks {r['op']} {fmt(r['threshold'])}"
        for _, r in failed.iterrows()
    )
    return (
        f"**The testbed did not learn its data: {role} `{who}` misses the task's learnability gate ({misses}).** "
        "Every verdict below compares models that have not learned the data."
    )


def opening(ctx: Context, divergence: pd.DataFrame, missing: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """The opening paragraph and its claims.csv rows."""
    results, metric, steps = ctx.results, ctx.metric, ctx.steps
    claims = Claims(ctx)
    total = divergence[divergence["group"] == "all"].iloc[0]
    n_expected = int(total["n_trials"] + total["n_missing"])
    partial = f"**Partial: {int(total['n_trials'])} of {n_expected} trials.** " if int(total["n_missing"]) else ""
    gate = gate_sentence(ctx)
    parts = [
        partial + (gate + " " if gate else ""),
        f"At **{metric}** ({better(ctx.direction)}) with **K = {steps}** sampling steps "
        f"({len(results.seeds)} seed(s), {total['n_ok']} of {n_expected} expected trials finished without "
        f"diverging; {scale_phrase(ctx.scale, ctx.scale_overridden)}).",
    ]
    if not ctx.family.empty:
        parts.append(" " + _rule_sentence(ctx))
        if looks_sentence(results.run):  # seeds added in rounds: the looks made and why it stopped
            parts.append(" " + looks_sentence(results.run))
        resolved = resolved_sentences(ctx, claims)
        if resolved:
            parts.append(" Resolved: " + ". ".join(resolved) + ".")
        unresolved = _unresolved_sentence(ctx, bool(resolved))
        if unresolved:
            parts.append(" " + unresolved)
    else:
        parts.append(" No factor varies and no pre-specified comparison exists: there is nothing to test.")
    parts += [
        " " + s
        for s in (
            _power_sentence(ctx),
            _levels_sentence(ctx),
            _balance_sentence(ctx),
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
    return "".join(parts), claims.table()


def _power_sentence(ctx: Context) -> str:
    power = ctx.primary(ctx.power)
    mains = power[(power["kind"] == "main") & np.isfinite(power["mde"].astype(float))]
    if mains.empty:
        return ""
    n = int(mains["n_seeds"].max())
    if ctx.scale == "log":
        low, high = np.exp(mains["mde"].min()), np.exp(mains["mde"].max())
        smallest = f"x{fmt(low)}" if fmt(low) == fmt(high) else f"x{fmt(low)} to x{fmt(high)}"
    else:
        low, high = mains["mde"].min(), mains["mde"].max()
        smallest = fmt(low) if fmt(low) == fmt(high) else f"{fmt(low)} to {fmt(high)}"
    need = mains["seeds_for_10pct"].astype(float)
    need_text = fmt(need.min()) if fmt(need.min()) == fmt(need.max()) else f"{fmt(need.min())} to {fmt(need.max())}"
    text = (
        f"With {n} seeds, the main effects this rule resolves with {mains['power'].iloc[0]:.0%} power are "
        f"{smallest} or larger (each toggle from its own seed-to-seed spread, at its share of the 5 %); a 10 % "
        f"change needs {need_text} seeds (power.csv)."
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
    against = f", against a noise floor (real vs real) of {mean_ci(floor)}" if floor is not None else ""
    return f"At K = {ctx.steps}, {ctx.metric} is {' and '.join(values)} (95% CIs over seeds){against}."


def _balance_sentence(ctx: Context) -> str:
    """Which estimand the effects use when cells lost seeds (missing not at random is said)."""
    effects = ctx.primary_effects()
    if effects.empty or "kind" not in effects:
        return ""
    terms = effects[effects["kind"].map(is_term)]
    methods = terms["method"].astype(str)
    if not len(terms) or (~np.isfinite(terms["estimate"].astype(float))).all():
        return (
            "No factorial cell has a finished trial at this step count: no effect can be estimated."
            if len(terms)
            else ""
        )
    counts = methods.str.extract(r"(\d+) of (\d+) strata")
    complete = counts[0] == counts[1]
    seeds = terms["n_seeds"].astype(int)
    if complete.fillna(False).all() and (seeds == len(ctx.results.seeds)).all():
        where = "run of the fraction" if is_fraction(ctx.results.design) else "cell of the factorial"
        return f"Every effect uses every {where} in every seed."
    empty = analysis.empty_cells(ctx.results, ctx.metric, ctx.steps)
    return (
        "Not every cell finished in every seed"
        + (f" (cells {', '.join(f'`{v}`' for v in empty)} have none)" if empty else "")
        + ": each effect is estimated on the strata (combinations of the other factors) and seeds in which "
        "every cell it compares finished, so it is the effect among those, not over the whole factorial; when "
        "trials diverged or went missing because of what they would have scored, those estimates can be "
        "biased. For example " + "; ".join(f"`{t}` {m}" for t, m in zip(terms["term"][:3], methods[:3])) + "."
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
