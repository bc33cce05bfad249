"""Named implementations of shortcut forcing, each one's choices written as ablate's own keys.

A preset is a cell of the grid: ``objective.preset: dreamer4`` makes the file's cells start from that
implementation's choices (keys the file sets still win), and a factor ``preset: [paper, reviewed,
dreamer4]`` makes one cell per implementation, named by the preset in every table and figure. Further
factors then ask which of their differences matters (e.g. ``flow_on_bootstrap: [true, false]`` on the
dreamer4 cell). Every key of a preset is documented against docs/objective-spec.md in
:class:`ablate.objective.ShortcutForcing`; what a source does not show keeps ablate's default.
Torch-free, like :mod:`ablate.variants`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ablate.variants import TOGGLES, Variant


@dataclass(frozen=True)
class Preset:
    """One implementation: where its choices were read, and its objective and training keys."""

    name: str
    source: str
    objective: Mapping[str, object]
    train: Mapping[str, object] = field(default_factory=dict)


_PAPER_TOGGLES = {"tau_sampling": "grid", "bootstrap_space": "velocity", "half_step": "velocity", "tau2_weight": True}

PRESETS: dict[str, Preset] = {
    "paper": Preset(
        "paper",
        "DreamerV4 (Hafner, Yan, Lillicrap 2025), Eq. 1-8 as docs/objective-spec.md reads them: ablate's defaults",
        {
            **_PAPER_TOGGLES,
            "ramp": "both",
            "step_sizes": "uniform",
            "bootstrap_draw": "row",
            "flow_on_bootstrap": False,
            "full_step": True,
            "d_per": "frame",
            "sample_clamp": None,
        },
    ),
    "reviewed": Preset(
        "reviewed",
        "the code of shared/seeds/shortcut_forcing_code_review.md: continuous tau per frame, one step size per "
        "sequence drawn with P(d) ~ 1/d, the teacher's second x-prediction as the target after re-noising, no "
        "(1 - tau)^2 weight, the student itself as the teacher; what the review does not show keeps the defaults",
        {
            "tau_sampling": "continuous",
            "bootstrap_space": "x",
            "half_step": "renoise",
            "tau2_weight": False,
            "step_sizes": "inverse",
            "d_per": "sequence",
        },
        {"teacher": "self"},
    ),
    "dreamer4": Preset(
        "dreamer4",
        "the PyPI package dreamer4 0.20.2, DynamicsWorldModel.forward and generate (x-prediction): the paper's "
        "four toggles; one coin per batch, P(shortcut) = 1 - 1/log2(k_max); d per sequence from {2/k_max, ..., "
        "1/2} (never 1); tau per frame on d's grid; the flow loss on every row with the ramp on it alone; the "
        "student under no_grad as the teacher, no warm-up; samples clamped to [-1, 1]",
        {
            **_PAPER_TOGGLES,
            "ramp": "flow",
            "step_sizes": "uniform",
            "bootstrap_draw": "batch",
            "bootstrap_probability": None,
            "flow_on_bootstrap": True,
            "full_step": False,
            "d_per": "sequence",
            "sample_clamp": 1.0,
        },
        {"teacher": "self", "bootstrap_start": 0},
    ),
}


def preset_toggles(name: str) -> str:
    """The cell label of a preset's four toggles (``grid_vboot_vstep_w2`` for the paper and dreamer4)."""
    objective = PRESETS[name].objective
    return Variant(**{toggle: objective.get(toggle, levels[0]) for toggle, levels in TOGGLES.items()}).label
