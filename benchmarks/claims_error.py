"""How often the report's opening claims something false, and how often it resolves a true effect.

Simulates grids with a known truth (``tests/claims_simulation.py``: the four toggles and the flow
baseline at K = 4 and 64, unit normal noise per cell and seed, or binomial shares of 1000 samples) and
prints, per scenario and seed count, the share of reports whose opening family resolves anything false,
and the share that resolve a main effect of exactly power.csv's MDE. Usage:

    python benchmarks/claims_error.py [REPLICATES]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from claims_simulation import draw, false_claims, true_means, truth  # noqa: E402

from ablate.analysis.family import ALPHA, build_family, family_table  # noqa: E402
from ablate.analysis.inference import minimum_detectable_effect  # noqa: E402

BASE = 10.0
SCENARIOS = {
    "null (all cells equal)": (true_means(BASE, {}), BASE, False),
    "share null (0.995 of 1000 samples)": (true_means(0.995, {}), 0.995, True),
    "helps at both levels (6 and 2)": (true_means(BASE, {"half_step": 4.0, "half_step:tau2_weight": 2.0}), BASE, False),
    "helps at one level only (3 and 0)": (
        true_means(BASE, {"half_step": 1.5, "half_step:tau2_weight": 1.5}),
        BASE,
        False,
    ),
}


def main(replicates: int) -> None:
    rng = np.random.default_rng(0)
    print(f"{replicates} simulated reports per row; false: any resolved claim contradicted by the truth")
    for name, (means, baseline, share) in SCENARIOS.items():
        true = truth(means, baseline)
        for n in (2, 3, 5):
            bad = sum(
                bool(false_claims(family_table(build_family(draw(means, baseline, n, rng, share=share), "m", 4)), true))
                for _ in range(replicates)
            )
            print(f"{name:40s} {n} seeds: false-claim rate {bad / replicates:.3f}")
    for n in (2, 3, 5):
        mde = minimum_detectable_effect(0.5, n, 0.8, ALPHA / 18)
        means = true_means(BASE, {"tau2_weight": mde})
        hits = 0
        for _ in range(replicates):
            family = family_table(build_family(draw(means, BASE, n, rng), "m", 4))
            row = family[family["term"] == "tau2_weight"].iloc[0]
            hits += bool(row["resolved"]) and row["estimate"] > 0
        print(f"main effect of power.csv's MDE ({mde:.3g}) {n} seeds: resolved {hits / replicates:.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 400)
