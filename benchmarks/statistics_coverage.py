"""Coverage of the confidence intervals `ablate` could use on an ablation grid (why Student t).

Simulates many synthetic 2^4 grids (16 cells x n seeds) whose true cell means are KNOWN,

    y[cell, seed] = mu[cell] + b[seed] + e[cell, seed],   b ~ N(0, 0.3^2),  e ~ N(0, sigma_cell^2),

with mu = 1 + sum over terms of (effect / 2) x (product of the term's +-1 codes), the code being +1
at a factor's reference level. For every scenario, number of seeds (2, 3, 5) and method it prints

    coverage  the share of nominal-95 % intervals that contain the true value (should be ~95 %),
    width     the average length of those intervals (shorter is better, but only at ~95 % coverage).

"cell" rows cover each cell's true mean mu[cell] (pooled over the 16 cells); "effect" rows cover
each term's true effect mean(mu | product = +1) - mean(mu | product = -1) (pooled over the 15
terms, or over the 10 main + 2-way terms for the model that estimates only those). A coverage well
below 95 % means the method's intervals are too short (its "significant" results are too many); a
coverage above 95 % means they are wider than needed. `student t` (cells, via `t_interval`) and
`seed-paired t` (effects, via `term_contrast`) are the methods `ablate` uses.

    OMP_NUM_THREADS=1 python benchmarks/statistics_coverage.py [--reps 400]
"""

from __future__ import annotations

import argparse
import itertools
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ablate.analysis.grid import Grid, term_contrast
from ablate.analysis.inference import t_interval

FACTORS = ("a", "b", "c", "d")
LEVELS = {f: (0, 1) for f in FACTORS}  # reference level first: coded +1
CODES = np.array(list(itertools.product((1.0, -1.0), repeat=len(FACTORS))))  # (16 cells, 4), Grid order
TERMS = [t for k in range(1, 5) for t in itertools.combinations(FACTORS, k)]  # 4 + 6 + 4 + 1 = 15
LOW_ORDER = [i for i, t in enumerate(TERMS) if len(t) <= 2]
HIGH_ORDER = [i for i, t in enumerate(TERMS) if len(t) >= 3]
SEED_SD, BASE_SIGMA, SPREAD = 0.3, 0.05, 30.0
SEED_COUNTS = (2, 3, 5)
CONFIDENCE = 0.95
N_RESAMPLES = 999


def term_column(term: tuple[str, ...]) -> np.ndarray:
    """The term's +-1 code in each of the 16 cells."""
    return np.prod(CODES[:, [FACTORS.index(f) for f in term]], axis=1)


TERM_COLUMNS = np.stack([term_column(t) for t in TERMS], axis=1)  # (16, 15)


@dataclass(frozen=True)
class Scenario:
    name: str
    effects: dict[tuple[str, ...], float]
    variances: Callable[[np.random.Generator], np.ndarray]  # rng -> 16 cell-noise variances

    def true_effects(self) -> np.ndarray:
        return np.array([self.effects.get(t, 0.0) for t in TERMS])

    def true_means(self) -> np.ndarray:
        return 1.0 + TERM_COLUMNS @ (self.true_effects() / 2)


def equal_variances(rng: np.random.Generator) -> np.ndarray:
    return np.full(16, BASE_SIGMA**2)


def spread_variances(rng: np.random.Generator) -> np.ndarray:
    """Variances evenly spaced on the log scale over a 30x range, in random cells."""
    return rng.permutation(BASE_SIGMA**2 * np.geomspace(1.0, SPREAD, 16))


def one_wild_cell(rng: np.random.Generator) -> np.ndarray:
    variances = np.full(16, BASE_SIGMA**2)
    variances[rng.integers(16)] *= SPREAD
    return variances


BASE_EFFECTS = {("a",): 0.2, ("a", "b"): 0.1}
SCENARIOS = [
    Scenario("equal variances", BASE_EFFECTS, equal_variances),
    Scenario("30x variance spread", BASE_EFFECTS, spread_variances),
    Scenario("one wild cell", BASE_EFFECTS, one_wild_cell),
    Scenario(
        "strong 3- and 4-way interactions",
        {**BASE_EFFECTS, ("a", "b", "c"): 0.3, ("a", "b", "c", "d"): 0.2},
        spread_variances,
    ),
]


def simulate(scenario: Scenario, n: int, reps: int, rng: np.random.Generator) -> np.ndarray:
    """values[rep, cell, seed] for ``reps`` independent grids."""
    sigma = np.sqrt(np.stack([scenario.variances(rng) for _ in range(reps)]))  # (reps, 16)
    seed_effect = rng.normal(0.0, SEED_SD, (reps, 1, n))
    noise = rng.normal(0.0, 1.0, (reps, 16, n)) * sigma[:, :, None]
    return scenario.true_means()[None, :, None] + seed_effect + noise


# ---- cell-mean intervals: arrays (reps, 16) of low and high ----


def bootstrap_cells(values: np.ndarray, method: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate-distribution warnings
        ci = stats.bootstrap(
            (values,),
            np.mean,
            axis=-1,
            vectorized=True,
            n_resamples=N_RESAMPLES,
            confidence_level=CONFIDENCE,
            method=method,
            batch=100,
            rng=rng,
        ).confidence_interval
    return ci.low, ci.high


def student_t_cells(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    intervals = [[t_interval(cell, CONFIDENCE) for cell in grid] for grid in values]
    return (
        np.array([[i.low for i in row] for row in intervals]),
        np.array([[i.high for i in row] for row in intervals]),
    )


# ---- effect intervals: arrays (reps, terms) of low and high ----


def ols_effects(values: np.ndarray, terms: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Least squares on intercept + the given term columns + seed dummies, pooled residual error.

    Observation order is values[cell, seed] flattened; effect = 2 x coefficient."""
    reps, cells, n = values.shape
    columns = [np.ones(cells * n), *(np.repeat(TERM_COLUMNS[:, t], n) for t in terms)]
    columns += [np.tile(np.eye(n)[s], cells) for s in range(1, n)]
    design = np.stack(columns, axis=1)
    df = cells * n - design.shape[1]
    y = values.reshape(reps, -1)
    coef = y @ np.linalg.pinv(design).T
    sigma2 = ((y - coef @ design.T) ** 2).sum(axis=1) / df
    unscaled = np.diag(np.linalg.inv(design.T @ design))[1 : 1 + len(terms)]
    estimate = 2 * coef[:, 1 : 1 + len(terms)]
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, df) * 2 * np.sqrt(sigma2[:, None] * unscaled[None, :])
    return estimate - half, estimate + half


def seed_paired_effects(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lows, highs = [], []
    for grid_values in values:
        grid = Grid(FACTORS, LEVELS, tuple(range(grid_values.shape[1])), grid_values)
        intervals = [term_contrast(grid, term).interval for term in TERMS]
        lows.append([i.low for i in intervals])
        highs.append([i.high for i in intervals])
    return np.array(lows), np.array(highs)


# ---- summarising ----


@dataclass(frozen=True)
class Row:
    scenario: str
    n: int
    target: str
    method: str
    coverage: float
    width: float


def summarise(
    scenario: str, n: int, target: str, method: str, low: np.ndarray, high: np.ndarray, truth: np.ndarray
) -> Row:
    covered = (low <= truth) & (truth <= high)
    return Row(scenario, n, target, method, float(covered.mean()), float((high - low).mean()))


def evaluate(scenario: Scenario, n: int, reps: int, rng: np.random.Generator) -> list[Row]:
    values = simulate(scenario, n, reps, rng)
    means, effects = scenario.true_means()[None, :], scenario.true_effects()[None, :]
    rows = [
        summarise(scenario.name, n, "cell", "percentile bootstrap", *bootstrap_cells(values, "percentile", rng), means)
    ]
    if n == 5:
        rows.append(summarise(scenario.name, n, "cell", "BCa bootstrap", *bootstrap_cells(values, "BCa", rng), means))
    rows.append(summarise(scenario.name, n, "cell", "student t", *student_t_cells(values), means))

    low, high = ols_effects(values, LOW_ORDER)
    rows.append(
        summarise(
            scenario.name, n, "effect", "OLS main + 2-way + seed block (10 terms)", low, high, effects[:, LOW_ORDER]
        )
    )
    methods = {
        "full-factorial OLS, pooled error": ols_effects(values, list(range(len(TERMS)))),
        "seed-paired t": seed_paired_effects(values),
    }
    has_high_order = bool(np.any(effects[0, HIGH_ORDER]))
    for method, (low, high) in methods.items():
        rows.append(summarise(scenario.name, n, "effect", method, low, high, effects))
        if has_high_order:
            rows.append(
                summarise(
                    scenario.name,
                    n,
                    "effect",
                    f"{method} (3-/4-way only)",
                    low[:, HIGH_ORDER],
                    high[:, HIGH_ORDER],
                    effects[:, HIGH_ORDER],
                )
            )
    return rows


def print_table(rows: list[Row], reps: int) -> None:
    print(
        f"Coverage of nominal 95 % intervals: {reps} simulated grids per scenario x seed count "
        f"(16 cells, seed sd {SEED_SD}, base cell sd {BASE_SIGMA})"
    )
    header = f"{'scenario':<34} {'seeds':>5}  {'target':<6}  {'method':<48} {'coverage':>8} {'width':>8}"
    print(header)
    print("-" * len(header))
    previous = None
    for row in rows:
        if previous is not None and (row.scenario, row.n) != previous:
            print()
        previous = (row.scenario, row.n)
        print(
            f"{row.scenario:<34} {row.n:>5}  {row.target:<6}  {row.method:<48} "
            f"{100 * row.coverage:>7.1f}% {row.width:>8.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=400, help="simulated grids per scenario x seed count")
    parser.add_argument("--seed", type=int, default=20240601, help="random seed of the whole run")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    rows = [row for scenario in SCENARIOS for n in SEED_COUNTS for row in evaluate(scenario, n, args.reps, rng)]
    print_table(rows, args.reps)


if __name__ == "__main__":
    main()
