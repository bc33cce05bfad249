"""The opening's family tested across looks: seeds added in rounds, one 5 % over every look.

A study run with ``seeds: {start, max, until: resolved}`` looks at its data after each round of seeds and
stops once its main effects are decided. Testing the family of :mod:`ablate.analysis.family` afresh at
each look would spend 5 % at every look; here it is spent **once over all of them**, by combining the
family's graph with group-sequential tests in the manner of Maurer & Bretz (2013, "Multiple testing in
group sequential trials using graphical approaches", Stat. Biopharm. Res. 5:311-320):

- each hypothesis of the family (built by :func:`~ablate.analysis.family.build_family` on the results
  restricted to each look's seeds) gets a group-sequential test (:mod:`ablate.analysis.boundaries`):
  Lan-DeMets O'Brien-Fleming-type spending of its local alpha over the planned looks, nominal levels from
  the pivotal joint null of its t statistics (one-sided for a worsening and for the two one-sided tests
  of an equivalence; Hotelling's T^2 for a level test);
- the graph is the fixed family's: a hypothesis rejected at some look passes its local alpha on, and the
  hypotheses that receive it are tested at their increased local alpha, at this look and with the
  boundaries of every earlier look recomputed at that alpha (Maurer & Bretz's "recycling").

Because the nominal levels are monotone in the local alpha, this is the ordinary graphical procedure
(:func:`~ablate.analysis.inference.graphical_test`) applied to each hypothesis' *stage-wise p-value*, the
smallest local alpha at which its group-sequential test rejects at some look so far. It is a closed test
of weighted Bonferroni combinations of group-sequential tests, so the family-wise error over all looks is
at most 5 % whatever the dependence between the hypotheses, and whenever the study stops: stopping at a
look only leaves later looks' rejections out (the futility stop below is non-binding). A resolved
hypothesis is quoted at the look whose statistic crossed, with the interval at that look's nominal level,
which excludes no effect exactly as the test rejected; an open one at the last look.

Stopping rule: after each look the study stops when every primary main effect is **decided**, either
resolved or its 95 % interval at the look inside +-10 % of the metric's mean (``RELEVANT_CHANGE``, a
ratio of 1.1 on the log scale); a level test of a factor with more than two levels is decided when
resolved. Otherwise it stops at its planned maximum of seeds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ablate.analysis.boundaries import SPENDING, GroupSequentialTest, spent
from ablate.analysis.effects import metric_grids
from ablate.analysis.family import (
    ALPHA,
    RELEVANT_CHANGE,
    Family,
    Hypothesis,
    build_family,
    equivalence_margin,
    family_graph,
    family_table,
)
from ablate.analysis.inference import GraphResult, graphical_test
from ablate.results import Results
from ablate.rounds import SeedRounds

ONE_SIDED_KINDS = ("worsening", "equivalence")
DECIDING_KINDS = ("main", "anova")  # the primary hypotheses whose decision stops the study
RESOLVED, NEGLIGIBLE, OPEN = "resolved", "negligible", "open"
DECIDED_REASON = "every factor's main effect was decided"


def restrict(results: Results, seeds: Sequence) -> Results:
    """The results of the given seeds only: what the study held at a look."""
    keep = set(seeds)
    return dataclasses.replace(
        results,
        metrics=results.metrics[results.metrics["seed"].isin(keep)],
        curves=results.curves[results.curves["seed"].isin(keep)] if len(results.curves) else results.curves,
        trials=results.trials[results.trials["seed"].isin(keep)],
    )


def hypothesis_key(h: Hypothesis) -> tuple:
    """What makes a hypothesis the same one at every look."""
    return (h.kind, h.term, h.within, h.variant)


def hypothesis_label(h: Hypothesis) -> str:
    return h.term + (f" within {h.within}" if h.within else "")


@dataclass
class SequentialFamily:
    """The family at each look and the outcome of the sequential graphical procedure after each look."""

    families: list[Family]  # the fixed family on each look's seeds (its p-values are the looks' statistics)
    margins: list[float]  # each look's equivalence margin (10 % of the metric's mean), on the test scale
    hypotheses: list[Hypothesis]  # the last look's family: the order, parents and graph of the procedure
    at_look: list[list[Hypothesis | None]]  # [look][i]: hypothesis i as tested at that look (None: absent)
    tests: list[GroupSequentialTest]  # hypothesis i's test over the looks where it has a p-value
    tested_looks: list[list[int]]  # the looks each test covers, in order
    stage: np.ndarray  # (m, looks): smallest local alpha at which that look's statistic rejects (1: never)
    outcomes: list[GraphResult]  # the procedure on the looks so far, after each look

    @property
    def n_looks(self) -> int:
        return len(self.families)

    def resolved_at(self, i: int) -> int | None:
        """The look at which the procedure first resolved hypothesis i (None: not resolved)."""
        return next((look for look, outcome in enumerate(self.outcomes) if outcome.rejected[i]), None)

    def nominal(self, i: int, look: int, local_alpha: float) -> float:
        """Hypothesis i's nominal level at a look, at the given local alpha (0 where it has no test)."""
        if look not in self.tested_looks[i]:
            return 0.0
        return float(self.tests[i].levels(local_alpha)[self.tested_looks[i].index(look)])

    def family(self) -> Family:
        """The family as the report quotes it: every hypothesis at the look whose statistic resolved it
        (at that look's nominal level), an open one at the last look where it was tested."""
        final = self.outcomes[-1]
        quoted, levels = [], []
        for i, h in enumerate(self.hypotheses):
            local = final.level[i]
            if final.rejected[i]:
                look = next(k for k in self.tested_looks[i] if self.stage[i, k] <= local)
            else:
                look = self.tested_looks[i][-1] if self.tested_looks[i] else self.n_looks - 1
            shown = self.at_look[look][i] or h
            quoted.append(dataclasses.replace(shown, parent=h.parent, children=h.children))
            levels.append(self.nominal(i, look, local))
        last = self.families[-1]
        return Family(
            last.metric, last.steps, last.scale, last.direction, quoted, final.adjusted, final.rejected, levels
        )

    def decisions(self, look: int) -> dict[str, str]:
        """Each deciding hypothesis (primary main effects and level tests) at a look: resolved by the
        procedure so far, negligible (95 % interval inside the margin), or open."""
        outcome, margin, out = self.outcomes[look], self.margins[look], {}
        deciding = [i for i, h in enumerate(self.hypotheses) if h.primary and h.kind in DECIDING_KINDS]
        for i in deciding:
            h = self.at_look[look][i]
            interval = h.contrast.interval if h is not None and h.contrast is not None else None
            inside = interval is not None and bool(-margin < interval.low and interval.high < margin)
            state = RESOLVED if outcome.rejected[i] else NEGLIGIBLE if inside and h.kind == "main" else OPEN
            out[hypothesis_label(self.hypotheses[i])] = state
        return out


def sequential_family(
    results: Results, metric: str, steps: int, looks: Sequence[Sequence], planned: Sequence[int]
) -> SequentialFamily:
    """The sequential procedure on the given looks (each a list of the seeds it analyses, growing), for a
    plan of ``planned`` seed counts per look (its last is the maximum: information fraction 1)."""
    if not looks:
        raise ValueError("a sequential family needs at least one look")
    families, margins = [], []
    for seeds in looks:
        at = restrict(results, seeds)
        grids = metric_grids(at)
        families.append(build_family(at, metric, steps, grids))
        grid = grids.get((metric, steps))
        margins.append(equivalence_margin(grid, families[-1].scale) if grid is not None else math.nan)
    hypotheses = families[-1].hypotheses
    keys = [hypothesis_key(h) for h in hypotheses]
    at_look = []
    for family in families:
        by_key = {hypothesis_key(h): h for h in family.hypotheses}
        at_look.append([by_key.get(key) for key in keys])
    maximum, final_look = planned[-1], len(planned) - 1
    tests, tested_looks = [], []
    stage = np.ones((len(hypotheses), len(looks)))
    for i, h in enumerate(hypotheses):
        present = [(k, at_look[k][i]) for k in range(len(looks))]
        tested = [(k, x) for k, x in present if x is not None and np.isfinite(x.p_value)]
        test = GroupSequentialTest(
            sizes=tuple(x.n_seeds for _, x in tested),
            fractions=tuple(1.0 if k >= final_look else min(x.n_seeds / maximum, 1.0) for k, x in tested),
            one_sided=h.kind in ONE_SIDED_KINDS,
            dims=len(results.factor_levels[h.term]) - 1 if h.kind == "anova" else 1,
        )
        tests.append(test)
        tested_looks.append([k for k, _ in tested])
        if tested:
            stage[i, tested_looks[-1]] = test.stage_p(np.array([x.p_value for _, x in tested]))
    weights, transitions = family_graph(hypotheses) if hypotheses else ([], [])
    so_far = np.minimum.accumulate(stage, axis=1) if len(hypotheses) else stage
    outcomes = [graphical_test(list(so_far[:, k]), weights, transitions, ALPHA) for k in range(len(looks))]
    return SequentialFamily(families, margins, hypotheses, at_look, tests, tested_looks, stage, outcomes)


def stop_decision(sequential: SequentialFamily, look: int, planned: Sequence[int]) -> tuple[bool, str]:
    """Whether the study stops after ``look`` (0-based), and why (or what is still open)."""
    decisions = sequential.decisions(look)
    open_ = [label for label, state in decisions.items() if state == OPEN]
    if not open_:
        return True, DECIDED_REASON
    if look >= len(planned) - 1:
        return True, f"the planned maximum of {planned[-1]} seeds was reached"
    return False, "not yet decided: " + ", ".join(f"`{label}`" for label in open_)


def look_record(sequential: SequentialFamily, look: int, seeds: Sequence, planned: Sequence[int]) -> dict:
    """What run.json keeps of a look: its seeds, the alpha the whole family had spent by it, each primary
    hypothesis' nominal level there (at its local alpha after the look), what it resolved, the main
    effects' decisions and whether (and why) the study stopped."""
    outcome = sequential.outcomes[look]
    nominal, resolved = {}, []
    for i, h in enumerate(sequential.hypotheses):
        label = f"{h.kind} {hypothesis_label(h)}"
        if h.primary and look in sequential.tested_looks[i]:
            nominal[label] = sequential.nominal(i, look, outcome.level[i])
        if sequential.resolved_at(i) == look:
            resolved.append(label)
    stop, reason = stop_decision(sequential, look, planned)
    fraction = 1.0 if look >= len(planned) - 1 else len(seeds) / planned[-1]
    return {
        "look": look + 1,
        "seeds": list(seeds),
        "information": fraction,
        "alpha_spent": spent(ALPHA, fraction),
        "nominal": nominal,
        "resolved": resolved,
        "decisions": sequential.decisions(look),
        "stop": stop,
        "reason": reason,
    }


def sequential_record(rounds: SeedRounds, looks: Sequence[dict]) -> dict:
    """run.json's ``sequential`` entry: the plan (with the method) and the looks made so far."""
    method = {
        "alpha": ALPHA,
        "spending": SPENDING,
        "procedure": "graphical (Maurer & Bretz 2013) over the opening's family",
        "futility": f"non-binding: a main effect whose 95 % interval lies within +-{RELEVANT_CHANGE:.0%} of the mean",
    }
    return {"plan": {**rounds.spec(), "looks": list(rounds.looks), **method}, "looks": list(looks)}


def opening_family_table(results: Results, metric: str, steps: int) -> pd.DataFrame:
    """family.csv: the fixed family, or for a study run in rounds (run.json ``sequential``) the
    sequential procedure over the looks it made; before its first look nothing is resolved yet."""
    record = results.run.get("sequential")
    if not record:
        return family_table(build_family(results, metric, steps))
    looks = [look["seeds"] for look in record.get("looks", [])]
    if not looks:
        family = build_family(results, metric, steps)
        m = len(family.hypotheses)
        return family_table(dataclasses.replace(family, adjusted=[1.0] * m, resolved=[False] * m, level=[0.0] * m))
    return family_table(sequential_family(results, metric, steps, looks, record["plan"]["looks"]).family())
