"""The claims of the report's opening: each resolved test of the family in words, and its claims.csv row.

Built together (class :class:`Claims`), so that every claim in report.md has its row and no row lacks its
words. A claim quotes its estimate with the interval at the level its test used and the family's adjusted
p-value, as family.csv has them (:mod:`ablate.analysis.family`). On a fractional design a claim about a term
names the terms it is aliased with: the test cannot tell them apart.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ablate.report.context import Context, ci_text, fmt

CLAIM_COLUMNS = [
    "kind",
    "term",
    "within",
    "metric",
    "steps",
    "direction",
    "estimate",
    "ci_low",
    "ci_high",
    "ci_level",
    "p_adjusted",
    "family",
    "scale",
    "statement",
]
FAMILY_NAME = "opening"


def value_text(row: Mapping, scale: str) -> str:
    return f"x{fmt(row['estimate'])}" if scale == "log" else f"{row['estimate']:+.3g}"


def level_text(level: float) -> str:
    """A confidence level such as 0.99722 as '99.7%', with enough digits to differ from 100."""
    percent = 100 * level
    digits = 1
    while digits < 6 and round(percent, digits) >= 100:
        digits += 1
    return f"{percent:.{digits}f}%"


def quoted(row: Mapping, scale: str) -> str:
    """``+0.1 (99.7% CI [0.05, 0.15], adjusted p = 0.004)``: the claim's numbers as family.csv has them."""
    interval = ci_text(row["ci_low"], row["ci_high"])
    level = f"{level_text(row['ci_level'])} CI {interval}" if np.isfinite(row["ci_level"]) else "no CI"
    return f"{value_text(row, scale)} ({level}, adjusted p = {fmt(row['p_adjusted'])})"


def alias_words(row: Mapping) -> str:
    """`` (aliased with `half_step:tau2_weight`)`` for a term of a fraction that has aliases, else empty."""
    aliases = row.get("aliases")
    if not isinstance(aliases, str) or not aliases:
        return ""
    return " (aliased with " + " and ".join(f"`{alias}`" for alias in aliases.split(" = ")) + ")"


def _up(row: Mapping, scale: str) -> bool:
    return bool(row["estimate"] > (1.0 if scale == "log" else 0.0))


class Claims:
    """The opening's sentences and the claims.csv rows they rest on, built together so that every
    claim in the text has its row and no row lacks its words."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.rows: list[dict] = []

    def claim(self, row: Mapping, statement: str) -> str:
        self.rows.append(
            {
                "kind": row["kind"],
                "term": row["term"],
                "within": row["within"],
                "metric": self.ctx.metric,
                "steps": self.ctx.steps,
                "direction": row["direction"],
                "estimate": row["estimate"],
                "ci_low": row["ci_low"],
                "ci_high": row["ci_high"],
                "ci_level": row["ci_level"],
                "p_adjusted": row["p_adjusted"],
                "family": FAMILY_NAME,
                "scale": row["scale"],
                "statement": statement,
            }
        )
        return statement

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=CLAIM_COLUMNS)


def _levels(ctx: Context, factor: str) -> tuple[object, object]:
    refs, levels = ctx.results.reference_levels, ctx.results.factor_levels
    return refs[factor], next(level for level in levels[factor] if level != refs[factor])


def _main_sentence(ctx: Context, claims: Claims, row: Mapping) -> str:
    plus, minus = _levels(ctx, row["term"])
    good = _up(row, ctx.scale) == (ctx.direction == "max")
    statement = (
        f"`{row['term']}`{alias_words(row)}: {plus} is {'better' if good else 'worse'} than {minus}, "
        f"{quoted(row, ctx.scale)}"
    )
    return claims.claim(row, statement)


def _interaction_sentences(ctx: Context, claims: Claims, row: Mapping, family: pd.DataFrame) -> list[str]:
    """A resolved two-way interaction, then what its resolved follow-ups say about each factor."""
    first, second = row["term"].split(":")
    plus, minus = _levels(ctx, first)
    ref, other = _levels(ctx, second)
    gains_at_ref = _up(row, ctx.scale) == (ctx.direction == "max")
    statement = (
        f"`{first}` and `{second}`{alias_words(row)} interact ({quoted(row, ctx.scale)}): {plus} vs {minus} is "
        f"relatively better with {second} = {ref if gains_at_ref else other} than with "
        f"{other if gains_at_ref else ref}"
    )
    sentences = [claims.claim(row, statement)]
    follow = family[(family["parent"] == row["id"]) & family["resolved"].astype(bool)]
    for factor, given in ((first, second), (second, first)):
        sentences += _follow_up_sentences(ctx, claims, follow[follow["term"] == factor], factor, given)
    return sentences


def _follow_up_sentences(ctx: Context, claims: Claims, rows: pd.DataFrame, factor: str, given: str) -> list[str]:
    """Resolved simple effects of ``factor`` within the levels of ``given``: flips, matters only with,
    or plain simple effects; an equivalence is said only next to a resolved simple effect."""
    plus, minus = _levels(ctx, factor)
    simple = rows[rows["kind"] == "simple"]
    equivalent = rows[rows["kind"] == "equivalence"]
    if simple.empty:
        return []
    words = {}
    for _, s in simple.iterrows():
        words[s["within"]] = "better" if _up(s, ctx.scale) == (ctx.direction == "max") else "worse"
    if len(simple) == 2 and len(set(words.values())) == 2:
        parts = [
            claims.claim(s, f"with {s['within']}: {plus} is {words[s['within']]}, {quoted(s, ctx.scale)}")
            for _, s in simple.iterrows()
        ]
        return [f"`{factor}` flips with `{given}`: " + "; ".join(parts)]
    sentences = []
    for _, s in simple.iterrows():
        lead = f"with {s['within']}, {plus} is {words[s['within']]} than {minus}, {quoted(s, ctx.scale)}"
        others = equivalent[equivalent["within"] != s["within"]]
        if len(simple) == 1 and len(others):
            e = others.iloc[0]
            margin = f"x{fmt(1 / e['margin'])} to x{fmt(e['margin'])}" if ctx.scale == "log" else f"±{fmt(e['margin'])}"
            tail = claims.claim(
                e,
                f"with {e['within']} its effect is negligible, within {margin} (equivalence test; "
                f"{level_text(e['ci_level'])} CI {ci_text(e['ci_low'], e['ci_high'])}, adjusted p = "
                f"{fmt(e['p_adjusted'])})",
            )
            sentences.append(f"`{factor}` matters only with {s['within']}: " + claims.claim(s, lead) + "; " + tail)
        else:
            sentences.append(f"`{factor}`: " + claims.claim(s, lead))
    return sentences


def _pair_sentence(ctx: Context, claims: Claims, row: Mapping) -> str:
    results = ctx.results
    name = "The simplified variant" if row["variant"] == results.simplified_variant else "The flow baseline"
    what = "variant / paper" if ctx.scale == "log" else "variant − paper"
    good = row["direction"] == "variant better"
    statement = (
        f"{name} `{row['variant']}` is {'better' if good else 'worse'} than the paper's `{results.paper_variant}` "
        f"({what} {quoted(row, ctx.scale)}, paired by seed)"
    )
    return claims.claim(row, statement)


def _worsening_sentence(ctx: Context, claims: Claims, row: Mapping) -> str:
    what = "ratio" if ctx.scale == "log" else "difference"
    statement = (
        f"The paper's variant gets worse with more sampling steps: {ctx.metric} at K = {ctx.results.eval_steps[-1]} "
        f"against K = {ctx.steps}, {what} {quoted(row, ctx.scale)} (one-sided, paired by seed)"
    )
    return claims.claim(row, statement)


def resolved_sentences(ctx: Context, claims: Claims) -> list[str]:
    family = ctx.family
    done = family[family["resolved"].astype(bool) & family["parent"].isna()]
    sentences = []
    for kind in ("main", "anova", "interaction"):
        for _, row in done[done["kind"] == kind].iterrows():
            if kind == "main":
                sentences.append(_main_sentence(ctx, claims, row))
            elif kind == "anova":
                levels = len(ctx.results.factor_levels[row["term"]])
                statement = (
                    f"`{row['term']}` ({levels} levels){alias_words(row)}: its levels differ (Hotelling's T², "
                    f"adjusted p = {fmt(row['p_adjusted'])})"
                )
                sentences.append(claims.claim(row, statement))
            else:
                sentences += _interaction_sentences(ctx, claims, row, family)
    for _, row in done[done["kind"].str.match(r"interaction\d")].iterrows():
        order = len(row["term"].split(":"))
        statement = (
            f"the {order}-way interaction `{row['term']}`{alias_words(row)} is resolved, {quoted(row, ctx.scale)}"
        )
        sentences.append(claims.claim(row, statement))
    for _, row in done[done["kind"] == "pair"].iterrows():
        sentences.append(_pair_sentence(ctx, claims, row))
    for _, row in done[done["kind"] == "worsening"].iterrows():
        if row["direction"] == "worse with more steps":
            sentences.append(_worsening_sentence(ctx, claims, row))
    return sentences
