"""The flow-only baseline: plain flow matching / diffusion forcing with x-prediction and the ramp weight.

The same objective with every row a flow row (d = d_min) and continuous tau; sampled with K plain
Euler steps while being told d = d_min, the only step size it was trained on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ablate.objective import ShortcutForcing, Variant

if TYPE_CHECKING:
    from ablate.config import ObjectiveConfig

LABEL = "flow"


class FlowBaselineFamily:
    name = "flow"

    def build(self, config: ObjectiveConfig) -> ShortcutForcing:
        return ShortcutForcing(
            Variant(tau_sampling="continuous"),
            k_max=config.k_max,
            ramp=config.ramp,
            step_sizes=config.step_sizes,
            bootstrap_fraction=0.0,
            bootstrap_weight=config.bootstrap_weight,
            d_per=config.d_per,  # the model is given d as the grid's cells give it
            sample_clamp=config.sample_clamp,
        )

    def sampler_d(self, objective: ShortcutForcing) -> float:
        return objective.d_min

    def cell_label(self, config: ObjectiveConfig) -> str:
        return LABEL


FAMILY = FlowBaselineFamily()
