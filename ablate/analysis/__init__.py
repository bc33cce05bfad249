"""Statistics of an ablation grid, as plain tables (no plotting).

Every function takes a :class:`ablate.results.Results` and returns a DataFrame, so the report, the
notebook and users share one implementation. The seeds are the replicates: every interval is a
Student-t interval over per-seed numbers (a cell's value, a within-seed contrast, a paired
difference), which holds its 95 % at 2, 3 and 5 seeds whatever the cells' variances
(``tests/test_coverage.py`` simulates it; ``benchmarks/statistics_coverage.py`` compares methods).

- :mod:`~ablate.analysis.tables`: finished values, noise floors, metric scales, trial status.
- :mod:`~ablate.analysis.family`: the one family of tests behind every claim of the report's opening.
- :mod:`~ablate.analysis.gate`: the task's learnability gate on the flow baseline.
- :mod:`~ablate.analysis.inference`: t-intervals, Holm, Hotelling, power (numbers only).
- :mod:`~ablate.analysis.grid`: one metric x K as cells x seeds, seed-paired contrasts.
- :mod:`~ablate.analysis.fraction`: what a fractional design estimates (its runs, alias classes).
- :mod:`~ablate.analysis.cells`, :mod:`~ablate.analysis.effects`,
  :mod:`~ablate.analysis.comparisons`, :mod:`~ablate.analysis.power`: the tables.
"""

from ablate.analysis.cells import cell_summary, noise_floors, reference_values
from ablate.analysis.comparisons import paper_vs_others, verdict
from ablate.analysis.effects import EFFECT_COLUMNS, STRATA_COLUMNS, excludes_null, factor_effects, stratum_effects
from ablate.analysis.family import build_family, family_table
from ablate.analysis.gate import gate_passed, learnability
from ablate.analysis.inference import CONFIDENCE, POWER, t_interval
from ablate.analysis.power import power_table
from ablate.analysis.tables import (
    divergence_table,
    empty_cells,
    floor_metrics,
    half_normal_scores,
    horizon_metrics,
    metric_scales,
    missing_trials,
    ok_values,
    quality_metrics,
    scale_overrides,
    stability_table,
)

__all__ = [
    "CONFIDENCE",
    "EFFECT_COLUMNS",
    "POWER",
    "STRATA_COLUMNS",
    "build_family",
    "cell_summary",
    "divergence_table",
    "empty_cells",
    "excludes_null",
    "factor_effects",
    "family_table",
    "floor_metrics",
    "gate_passed",
    "half_normal_scores",
    "horizon_metrics",
    "learnability",
    "metric_scales",
    "missing_trials",
    "noise_floors",
    "ok_values",
    "paper_vs_others",
    "power_table",
    "quality_metrics",
    "reference_values",
    "scale_overrides",
    "stability_table",
    "stratum_effects",
    "t_interval",
    "verdict",
]
