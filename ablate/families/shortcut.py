"""Shortcut forcing (DreamerV4, Eq. 1-8): the family of the 16 variants of the four toggles."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ablate.objective import ShortcutForcing
from ablate.variants import TOGGLES, Variant

if TYPE_CHECKING:
    from ablate.config import ObjectiveConfig


class ShortcutForcingFamily:
    name = "shortcut_forcing"

    def build(self, config: ObjectiveConfig) -> ShortcutForcing:
        return ShortcutForcing(
            self.variant(config),
            k_max=config.k_max,
            ramp=config.ramp,
            step_sizes=config.step_sizes,
            bootstrap_fraction=config.bootstrap_fraction,
            bootstrap_weight=config.bootstrap_weight,
            teacher_context=config.teacher_context,
        )

    def sampler_d(self, objective: ShortcutForcing) -> None:
        return None  # the K-step sampler tells the model d = 1/K

    def cell_label(self, config: ObjectiveConfig) -> str:
        return self.variant(config).label

    @staticmethod
    def variant(config: ObjectiveConfig) -> Variant:
        return Variant(*(getattr(config, name) for name in TOGGLES))


FAMILY = ShortcutForcingFamily()
