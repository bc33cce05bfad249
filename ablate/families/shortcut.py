"""Shortcut forcing (DreamerV4, Eq. 1-8): the family of the 16 variants of the four toggles."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ablate.objective import ShortcutForcing
from ablate.presets import preset_toggles
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
            bootstrap_draw=config.bootstrap_draw,
            bootstrap_probability=config.bootstrap_probability,
            flow_on_bootstrap=config.flow_on_bootstrap,
            full_step=config.full_step,
            d_per=config.d_per,
            sample_clamp=config.sample_clamp,
        )

    def sampler_d(self, objective: ShortcutForcing) -> None:
        return None  # the K-step sampler tells the model d = 1/K

    def cell_label(self, config: ObjectiveConfig) -> str:
        """The toggles' label; a preset's cell is named by the preset (``dreamer4``), and by the preset and
        the toggles (``dreamer4:cont_vboot_vstep_w2``) when a factor moved its toggles."""
        label = self.variant(config).label
        if config.preset is None:
            return label
        return config.preset if preset_toggles(config.preset) == label else f"{config.preset}:{label}"

    @staticmethod
    def variant(config: ObjectiveConfig) -> Variant:
        return Variant(*(getattr(config, name) for name in TOGGLES))


FAMILY = ShortcutForcingFamily()
