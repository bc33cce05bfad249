"""What a resolved main effect costs on toy2d: full design, half fraction and seeds added until resolved.

**What it measures.** For the toy2d study (four two-level toggles, 16 cells, plus the flow baseline; primary
metric ``structure``, higher is better, read at K = 4), the trials and CPU-seconds each design spends per
main effect that the report's opening resolves, with the opening's own statistics (the one family of tests
at a 5 % family-wise error, :mod:`ablate.analysis.family`; over the looks of a study run in rounds, the
group-sequential procedure of :mod:`ablate.analysis.sequential`). The arms:

- ``full``, fixed seeds: the 16 cells + the flow baseline (17 trials a seed) at 2, 3, 4 and 5 seeds;
- ``half``, fixed seeds (the same counts): ``design: half`` (2^(4-1), D = ABC, resolution IV; 8 cells + the
  baseline, 9 trials a seed; main effects aliased with three-way interactions, two-way ones with each other);
- ``seq``: ``seeds: {start: 2, max: 8, until: resolved}`` (looks at 2, 4, 6, 8 seeds) and ``{start: 3, max: 9}``
  (looks at 3, 6, 9), on the full and on the half design.

No model is trained: grids are **simulated** with the effects and the seed-to-seed noise measured in the real
toy2d study (docs/measured.md, "toy2d": 3 seeds, 8000 steps, 51 trials), and every simulated study goes through
the package's family, boundaries and graphical procedure, vectorised as in ``tests/sequential_simulation.py``
(the family's hypotheses read off :func:`~ablate.analysis.family.build_family` as linear maps of one seed's
values, on the design's own cells, so a fraction's family is the fraction's: 7 estimable terms, not 15);
each run first checks on a few studies of each design that this decides exactly as
:func:`~ablate.analysis.sequential.sequential_family` and its stopping rule do.

**The measured study it is calibrated to.** Main effects at K = 4 (paper's level minus the other, 95 % CI over
3 seeds): (1 - tau)^2 weight +0.100 [0.093, 0.107], velocity bootstrap +0.112 [0.086, 0.139], velocity half
step +0.236 [0.152, 0.320], grid tau +0.014 [-0.029, 0.057]. Each term's per-seed contrast sd is read off its
interval, sd = half-width x sqrt(3) / t(0.975, 2). The true effects are those point estimates (so grid tau is
a real but tiny +0.014; "the three clear effects" are the other three). The mean of the factorial cells at K
= 4 is 0.590: the paper corner's measured 0.821 minus half the sum of the main effects (the additive model
below; the study's "MDE 0.050 = 8 % of the mean" puts the mean between 0.588 and 0.667). It sets the
stopping rule's margin (a main effect whose 95 % interval lies within +-10 % of the mean is decided
negligible). The flow baseline is the paper corner minus 0.095 (measured, paired, at K = 4).

**Noise model (assumptions).**

1. Additive truth: every interaction of the toggles is 0 (null), so the paper corner is the mean plus half
   the sum of the main effects (0.821 measured, 0.821 here by construction; the simplified corner comes out
   at 0.359, measured 0.340). K = 64 has the same true means as K = 4 (the paper variant does not get worse
   with more steps: measured 0.826 vs 0.821), so the pre-specified worsening test is a true null.
2. Cell noise is as the simulation helpers model it, iid normal per cell, K and seed (and the baseline),
   with one sd sigma = 2 x s_pool, s_pool the root-mean-square of the four measured per-seed main-effect sds
   (so every interaction's per-seed contrast has the sd of a typical main effect), **except** that each
   main effect's component of the noise is rescaled so that its per-seed contrast has exactly its measured
   sd on the full design. The same rule on the half's 8 cells gives each main effect's per-seed contrast
   sqrt(2) times its full-design sd (half the cells per seed, cell-level noise): the stated assumption for
   the fraction. It is optimistic for the fraction where a main effect's measured sd is much smaller than
   the cells' noise (the weight's 0.0028 against s_pool 0.020): if instead the fraction's cells kept the
   full design's noise, its contrast would also carry its three-way alias's noise; a second table repeats
   the half arms under that model (each main effect's half contrast sd = sqrt(sd^2 + s_pool^2)).
3. Single cells (what the paper-vs-flow and paper-vs-simplified pairs compare) get sigma, 0.040: between the
   paper cell's measured per-seed sd (0.004) and the simplified cell's (0.051). The pairs are not counted
   below; they only pass alpha on in the family's graph.

**Cost.** Trials = (cells + 1 baseline) x seeds used: 17 a seed for the full design, 9 for the half. CPU
seconds per trial = the measured 10 min of 2 idle cores for the third seed's 17 trials = 70.6 CPU-s.

**How to read it.** Per arm: ``seeds`` and ``trials`` are means over the simulated studies (a sequential
study stops when every main effect is decided, or at its maximum); ``resolved`` the mean number of main
effects of 4 that the family rejected with the sign of the truth (grid tau's +0.014 counts when resolved
positive); ``P(3)`` the share of studies that resolve all three clear effects (weight, bootstrap, half step);
``trials/res`` and ``CPU-s/res`` the mean trials (times 70.6 CPU-s) over the mean resolved; ``vs full@3`` that
cost relative to the full design at 3 seeds (below 1: cheaper per resolved effect); ``false`` the share of
studies with any false claim (a claim the truth contradicts) in the measured scenario; ``null false`` the
same with every effect 0 (all cells and the baseline equal): it should be at most 5 % for every arm. A lever
pays when its CPU-s per resolved effect is below the full design's **and** its ``P(3)`` is not much lower
(fewer trials that resolve less is not a saving). ``null seeds``: the mean seeds a study uses when nothing is
there. Fixed 4 seeds is not one of the asked-for arms: it is the fixed design nearest the sequential rule's
mean. Monte Carlo error: with N studies a share's standard error is at most 0.5 / sqrt(N) (0.0035 at the
default 20000).

Usage::

    python benchmarks/study_cost.py [STUDIES]

STUDIES (default 20000) simulated studies per arm and scenario; the default took 103 s of wall time (about
80 CPU-s) on a 2-core machine busy with other work.
(the group-sequential boundaries are tabulated once per look plan, a few seconds each).
"""

from __future__ import annotations

import functools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import sequential_simulation as sim  # noqa: E402
from claims_simulation import STEPS, cells, coded, results_of  # noqa: E402

from ablate.analysis.family import RELEVANT_CHANGE, build_family, family_graph  # noqa: E402
from ablate.analysis.sequential import sequential_family, stop_decision  # noqa: E402
from ablate.variants import TOGGLES  # noqa: E402

# --- the measured toy2d study (docs/measured.md, "toy2d") ---------------------------------------------------
MEASURED_SEEDS = 3
MAIN_CI = {  # main effect at K = 4, paper's level minus the other: estimate, 95 % CI over 3 seeds
    "tau2_weight": (0.100, 0.093, 0.107),
    "bootstrap_space": (0.112, 0.086, 0.139),
    "half_step": (0.236, 0.152, 0.320),
    "tau_sampling": (0.014, -0.029, 0.057),
}
CLEAR = ("tau2_weight", "bootstrap_space", "half_step")  # the three real effects; grid tau is +0.014
PAPER_AT_4 = 0.821  # the paper corner's structure at K = 4
PAPER_MINUS_FLOW = 0.095  # paired over seeds at K = 4
THIRD_SEED_MINUTES, CORES, THIRD_SEED_TRIALS = 10.0, 2, 17
CPU_S_PER_TRIAL = THIRD_SEED_MINUTES * 60 * CORES / THIRD_SEED_TRIALS

FULL, HALF = None, "half"  # claims_simulation's design argument: None is the full factorial
FIXED_SEEDS = (2, 3, 4, 5)  # 4: not asked for, the fixed design nearest the sequential rule's mean seeds
PLANS = {"start 2, max 8": (2, 4, 6, 8), "start 3, max 9": (3, 6, 9)}  # ablate.rounds.SeedRounds.looks
REFERENCE = ("full", "fixed 3 seeds")


def per_seed_sd(low: float, high: float, n: int = MEASURED_SEEDS) -> float:
    """The per-seed sd of a contrast whose 95 % t interval over n seeds is [low, high]."""
    return (high - low) / 2 * math.sqrt(n) / stats.t.ppf(0.975, n - 1)


MAIN_SD = {term: per_seed_sd(low, high) for term, (_, low, high) in MAIN_CI.items()}
EFFECTS = {term: estimate for term, (estimate, _, _) in MAIN_CI.items()}
S_POOL = math.sqrt(np.mean([sd**2 for sd in MAIN_SD.values()]))
SIGMA = 2 * S_POOL  # iid cell noise whose 16-cell main-effect contrast has sd S_POOL
MEAN_AT_4 = PAPER_AT_4 - sum(EFFECTS.values()) / 2  # additive truth: the paper corner is +1 on every code


# --- the family of a design as linear maps (tests/sequential_simulation.py, on the design's cells) ----------


@dataclass(frozen=True)
class Grid:
    """A design's cells, its family as linear maps of one seed's values, and trials per seed."""

    name: str
    cells: list[tuple]
    family: sim.LinearFamily
    codes: np.ndarray  # (cells, 4): each main effect's +-1 code, TOGGLES order

    @property
    def values(self) -> int:
        return len(STEPS) * (len(self.cells) + 1)  # every cell at both K, then the baseline at both

    @property
    def trials_per_seed(self) -> int:
        return len(self.cells) + 1


def _results(per_seed: np.ndarray, design: object, grid_cells: list[tuple]):
    split = {cell: per_seed[:, 2 * i : 2 * i + 2] for i, cell in enumerate(grid_cells)}
    return results_of(split, per_seed[:, -2:], design=design)


@functools.lru_cache(maxsize=2)
def grid_of(design: object) -> Grid:
    """As sequential_simulation.linear_family, for any design: each hypothesis' combination of one seed's
    values is read off build_family by perturbing one value at a time (the last seed is the reference)."""
    grid_cells = cells(design)
    n = len(STEPS) * (len(grid_cells) + 1)
    values = np.vstack([sim.BASE + np.eye(n), np.full((1, n), sim.BASE)])
    family = build_family(_results(values, design, grid_cells), "m", STEPS[0])
    hypotheses = family.hypotheses
    weights, transitions = family_graph(hypotheses)
    factorial = np.zeros(n, bool)
    factorial[0 : 2 * len(grid_cells) : 2] = True
    linear = sim.LinearFamily(
        tuple(h.kind for h in hypotheses),
        tuple(h.term + (f" within {h.within}" if h.within else "") for h in hypotheses),
        np.array([h.contrast.per_seed[:-1] - h.contrast.per_seed[-1] for h in hypotheses]),
        tuple(weights),
        tuple(tuple(row) for row in transitions),
        factorial,
    )
    codes = np.array([[coded(cell)[name] for name in TOGGLES] for cell in grid_cells], float)
    return Grid("full" if design is None else str(design), grid_cells, linear, codes)


# --- simulated seeds -------------------------------------------------------------------------------------


def truth_vector(grid: Grid, effects: dict[str, float], null: bool) -> np.ndarray:
    """One seed's true values: each cell at K = 4 and 64 (equal), then the baseline at both."""
    cell_means = MEAN_AT_4 + grid.codes @ np.array([effects.get(name, 0.0) for name in TOGGLES]) / 2
    paper = MEAN_AT_4 + sum(effects.values()) / 2
    baseline = paper if null else paper - PAPER_MINUS_FLOW
    return np.concatenate([np.repeat(cell_means, len(STEPS)), [baseline] * len(STEPS)])


def main_scales(grid: Grid, subset_noise: bool) -> np.ndarray:
    """How much each main effect's share of iid cell noise is scaled. On any design the per-seed contrast
    of a main effect of iid noise sigma is 2 sigma / sqrt(cells): S_POOL on 16 cells, sqrt(2) S_POOL on 8;
    scaling by sd / S_POOL gives the measured sd on the full design and sqrt(2) times it on the half.
    ``subset_noise``: the half's contrast keeps the full design's cells' noise instead, sd^2 + S_POOL^2
    (its own and its three-way alias's), so its scale is sqrt(sd^2 + S_POOL^2) / (sqrt(2) S_POOL)."""
    sds = np.array([MAIN_SD[name] for name in TOGGLES])
    if subset_noise and len(grid.cells) < 16:
        return np.sqrt(sds**2 + S_POOL**2) / (math.sqrt(2) * S_POOL)
    return sds / S_POOL


def draw(grid: Grid, truth: np.ndarray, scales: np.ndarray, studies: int, seeds: int, rng) -> np.ndarray:
    """(studies, seeds, values): truth + iid sigma noise per cell, K and seed, each main effect's component
    of the cells' noise (its projection on the code, at each K) scaled by ``scales``."""
    noise = SIGMA * rng.standard_normal((studies, seeds, grid.values))
    n_cells = len(grid.cells)
    for k in range(len(STEPS)):
        at = noise[..., k : 2 * n_cells : len(STEPS)]  # a view: this K's cells
        along = at @ grid.codes / n_cells  # (studies, seeds, 4): the noise's coordinate on each code
        at += (along * (scales - 1)) @ grid.codes.T
    return truth + noise


# --- the arms --------------------------------------------------------------------------------------------


@dataclass
class Arm:
    design: str
    rule: str
    seeds: float
    trials: float
    resolved: float
    all_clear: float
    false: float
    null_false: float = math.nan
    null_seeds: float = math.nan

    @property
    def trials_per_resolved(self) -> float:
        return self.trials / self.resolved if self.resolved else math.inf


def true_contrasts(grid: Grid, truth: np.ndarray) -> np.ndarray:
    return grid.family.coefficients @ truth


def false_claims(grid: Grid, outcome: sim.Outcome, truth: np.ndarray, tolerance: float = 1e-9) -> np.ndarray:
    """Per study: a resolved claim that the truth contradicts (as tests/claims_simulation.false_claims)."""
    family, true = grid.family, true_contrasts(grid, truth)
    margin = RELEVANT_CHANGE * abs(truth[family.factorial_at_primary].mean())
    bad = np.zeros(outcome.rejected.shape, bool)
    for i, kind in enumerate(family.kinds):
        if kind == "equivalence":
            wrong = np.full(len(bad), abs(true[i]) >= margin)
        elif kind == "worsening":
            wrong = np.full(len(bad), true[i] >= -tolerance)  # "max": a worsening is a negative change
        else:
            wrong = (abs(true[i]) <= tolerance) | (np.sign(outcome.estimate[:, i]) != np.sign(true[i]))
        bad[:, i] = outcome.rejected[:, i] & wrong
    return bad.any(axis=1)


def resolved_mains(grid: Grid, outcome: sim.Outcome, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per study: how many main effects were resolved with the sign of their (nonzero) truth, and whether
    the three clear ones all were."""
    family, true = grid.family, true_contrasts(grid, truth)
    count, clear = np.zeros(len(outcome.rejected)), np.ones(len(outcome.rejected), bool)
    for i, (kind, term) in enumerate(zip(family.kinds, family.terms)):
        if kind != "main":
            continue
        right = outcome.rejected[:, i] & (np.sign(outcome.estimate[:, i]) == np.sign(true[i])) & (true[i] != 0)
        count += right
        if term in CLEAR:
            clear &= right
    return count, clear


def simulate(grid: Grid, sizes: tuple[int, ...], sequential: bool, null: bool, studies: int, rng, subset: bool):
    effects = {} if null else EFFECTS
    truth = truth_vector(grid, effects, null)
    values = draw(grid, truth, main_scales(grid, subset), studies, sizes[-1], rng)
    outcome = sim.run(grid.family, sim.looks(grid.family, values, sizes), sizes, stop_early=sequential)
    return outcome, truth


def arm(grid: Grid, rule: str, sizes: tuple[int, ...], sequential: bool, studies: int, rng, subset: bool) -> Arm:
    outcome, truth = simulate(grid, sizes, sequential, False, studies, rng, subset)
    count, clear = resolved_mains(grid, outcome, truth)
    seeds = float(outcome.stop_seeds.mean())
    result = Arm(
        grid.name,
        rule,
        seeds,
        seeds * grid.trials_per_seed,
        float(count.mean()),
        float(clear.mean()),
        float(false_claims(grid, outcome, truth).mean()),
    )
    null, null_truth = simulate(grid, sizes, sequential, True, studies, rng, subset)
    result.null_false = float(false_claims(grid, null, null_truth).mean())
    result.null_seeds = float(null.stop_seeds.mean())
    return result


def calibration(grid: Grid, subset: bool, rng, studies: int = 20000) -> list[str]:
    """Each main effect's per-seed contrast sd in simulated seeds (the family's own contrast), to check
    the noise model against its targets."""
    values = draw(grid, truth_vector(grid, {}, True), main_scales(grid, subset), studies, 1, rng)[:, 0]
    out = []
    for i, (kind, term) in enumerate(zip(grid.family.kinds, grid.family.terms)):
        if kind == "main":
            out.append(f"{term} {np.std(values @ grid.family.coefficients[i]):.4f}")
    return out


def check(grid: Grid, design: object, rng, studies: int = 6) -> int:
    """The vectorised procedure decides as the package's sequential_family does, on a few simulated
    studies of this design (p-values, stopping look, rejections); returns how many were compared."""
    sizes = PLANS["start 2, max 8"]
    values = draw(grid, truth_vector(grid, EFFECTS, False), main_scales(grid, False), studies, sizes[-1], rng)
    data = sim.looks(grid.family, values, sizes)
    outcome = sim.run(grid.family, data, sizes)
    for study in range(studies):
        results = _results(values[study], design, grid.cells)
        sequential = sequential_family(results, "m", STEPS[0], [list(range(n)) for n in sizes], sizes)
        p = np.array([[f.hypotheses[i].p_value for f in sequential.families] for i in range(len(grid.family.kinds))])
        stop = next(k for k in range(len(sizes)) if stop_decision(sequential, k, sizes)[0])
        if not (
            np.allclose(p, data.p[study], rtol=1e-9)
            and stop == outcome.stop_look[study]
            and sequential.outcomes[stop].rejected == list(outcome.rejected[study])
        ):
            raise AssertionError(f"{grid.name}: the simulation departs from sequential_family in study {study}")
    return studies


def table(arms: list[Arm]) -> list[str]:
    reference = next(a for a in arms if (a.design, a.rule) == REFERENCE)
    cost = reference.trials_per_resolved * CPU_S_PER_TRIAL
    head = (
        f"{'design':6s} {'rule':22s} {'seeds':>5s} {'trials':>6s} {'resolved':>8s} {'P(3)':>5s} "
        f"{'trials/res':>10s} {'CPU-s/res':>9s} {'vs full@3':>9s} {'false':>6s} {'null false':>10s} {'null seeds':>10s}"
    )
    lines = [head, "-" * len(head)]
    for a in arms:
        per = a.trials_per_resolved * CPU_S_PER_TRIAL
        lines.append(
            f"{a.design:6s} {a.rule:22s} {a.seeds:5.2f} {a.trials:6.1f} {a.resolved:8.2f} {a.all_clear:5.3f} "
            f"{a.trials_per_resolved:10.1f} {per:9.0f} {per / cost:9.2f} {a.false:6.3f} {a.null_false:10.3f} "
            f"{a.null_seeds:10.2f}"
        )
    return lines


def main(studies: int) -> None:
    started = time.perf_counter()
    rng = np.random.default_rng(20240524)
    full, half = grid_of(FULL), grid_of(HALF)
    print(f"toy2d, simulated: {studies} studies per arm and scenario; the opening's family at 5 % family-wise")
    print(
        "measured per-seed main-effect sds (from the 95 % CIs over 3 seeds): "
        + ", ".join(f"{name} {MAIN_SD[name]:.4f}" for name in TOGGLES)
        + f"; rms {S_POOL:.4f}, cell sd {SIGMA:.4f}"
    )
    print(
        f"true effects: the measured estimates, interactions 0; factorial mean at K = 4 {MEAN_AT_4:.3f} "
        f"(margin {RELEVANT_CHANGE * MEAN_AT_4:.3f}); {CPU_S_PER_TRIAL:.1f} CPU-s a trial; trials a seed: "
        f"full {full.trials_per_seed}, half {half.trials_per_seed}; primary hypotheses: full "
        f"{sum(w > 0 for w in full.family.weights)}, half {sum(w > 0 for w in half.family.weights)}"
    )
    print("simulated per-seed main-effect sds, full: " + ", ".join(calibration(full, False, rng)))
    print("simulated per-seed main-effect sds, half: " + ", ".join(calibration(half, False, rng)))
    compared = check(full, FULL, rng) + check(half, HALF, rng)
    print(f"vectorised procedure = ablate.analysis.sequential.sequential_family on {compared} studies (both designs)")
    arms = []
    for grid in (full, half):
        for n in FIXED_SEEDS:
            arms.append(arm(grid, f"fixed {n} seeds", (n,), False, studies, rng, False))
    for grid in (full, half):
        for name, sizes in PLANS.items():
            arms.append(arm(grid, f"seq {name}", sizes, True, studies, rng, False))
    print()
    print("\n".join(table(arms)))
    print(
        "\nhalf arms if the fraction's cells keep the full design's cell noise, per-seed "
        "main-effect sds: " + ", ".join(calibration(half, True, rng))
    )
    extra = [next(a for a in arms if (a.design, a.rule) == REFERENCE)]  # for the ratio
    for n in FIXED_SEEDS:
        extra.append(arm(half, f"fixed {n} seeds", (n,), False, studies, rng, True))
    for name, sizes in PLANS.items():
        extra.append(arm(half, f"seq {name}", sizes, True, studies, rng, True))
    print("\n".join(table(extra)))
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000)
