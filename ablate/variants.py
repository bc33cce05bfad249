"""The shortcut-forcing ablation's vocabulary, without torch: the four toggles, their levels (the
paper's first), the cell labels and the two corners (the paper's formulation, the reviewed code).

Torch-free so that the experiment parser, the results tables and the test helpers can name cells
without importing the objective; :mod:`ablate.objective` re-exports ``Variant`` and ``TOGGLES``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import ClassVar

TOGGLES: dict[str, tuple] = {  # the paper's level first
    "tau_sampling": ("grid", "continuous"),
    "bootstrap_space": ("velocity", "x"),
    "half_step": ("velocity", "renoise"),
    "tau2_weight": (True, False),
}


def full_toggle_grid(factor_levels: dict) -> bool:
    """Whether every toggle varies over both its levels: only then is the reviewed code's cell (the
    "simplified variant") in the grid. With fewer toggles varied, the cell at their non-paper levels is
    some other cell (e.g. `grid_xboot_renoise_w2`), named by its label, not by the review."""
    return all(set(factor_levels.get(name, ())) >= set(levels) for name, levels in TOGGLES.items())


def check_choice(name: str, value, allowed: tuple) -> None:
    if type(value) not in {type(a) for a in allowed} or value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}")


@dataclass(frozen=True)
class Variant:
    """One corner of the 2^4 ablation matrix. Defaults are the paper's formulation."""

    tau_sampling: str = "grid"
    bootstrap_space: str = "velocity"
    half_step: str = "velocity"
    tau2_weight: bool = True

    _SHORT: ClassVar[dict] = {
        "tau_sampling": {"grid": "grid", "continuous": "cont"},
        "bootstrap_space": {"velocity": "vboot", "x": "xboot"},
        "half_step": {"velocity": "vstep", "renoise": "renoise"},
        "tau2_weight": {True: "w2", False: "now2"},
    }

    def __post_init__(self) -> None:
        for name, allowed in TOGGLES.items():
            check_choice(name, getattr(self, name), allowed)

    @classmethod
    def paper(cls) -> Variant:
        return cls("grid", "velocity", "velocity", True)

    @classmethod
    def simplified(cls) -> Variant:
        """The reviewed re-implementation before its fixes (findings 1-4 of the code review)."""
        return cls("continuous", "x", "renoise", False)

    @classmethod
    def all(cls) -> list[Variant]:
        """All 16 combinations, the paper's first and the simplified code last."""
        return [cls(*levels) for levels in itertools.product(*TOGGLES.values())]

    @property
    def label(self) -> str:
        """Short readable name, e.g. `grid_vboot_vstep_w2` (paper), `cont_xboot_renoise_now2` (simplified)."""
        return "_".join(self._SHORT[name][getattr(self, name)] for name in TOGGLES)

    @classmethod
    def from_label(cls, label: str) -> Variant:
        by_label = {v.label: v for v in cls.all()}
        if label not in by_label:
            raise ValueError(f"variant label {label!r} is unknown; choose one of {', '.join(by_label)}")
        return by_label[label]
