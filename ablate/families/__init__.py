"""Objective families: the one seam between an objective and what trains, runs and reports it.

A family turns a cell's objective config (``ablate.config.ObjectiveConfig``) into an objective
(anything with ShortcutForcing's interface: ``sample_tau_d``, ``loss``, ``sample``, ``step_counts``,
``d_min``), says which step size its sampler
tells the model, and names its cells. The built-in ones are ``shortcut_forcing`` (the 16 variants of
the four toggles) and ``flow`` (the flow-only baseline). A new family is one module with a ``FAMILY``
object and one line in ``FAMILIES``; the experiment key ``objective.family`` picks it.
"""

from __future__ import annotations

import importlib
import importlib.util
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ablate.config import ObjectiveConfig


class ObjectiveFamily(Protocol):
    name: str

    def build(self, config: ObjectiveConfig) -> Any:
        """The objective of one ObjectiveConfig (k_max, the family's knobs, ...); ValueError if impossible."""

    def sampler_d(self, objective: Any) -> float | None:
        """The step size the sampler tells the model: None for d = 1/K, or a fixed one (e.g. d_min)."""

    def cell_label(self, config: ObjectiveConfig) -> str:
        """The cell's name in the results (before any ``,factor=level`` of further factors)."""


FAMILIES: dict[str, str] = {  # name -> "module:attribute" of its FAMILY
    "shortcut_forcing": "ablate.families.shortcut:FAMILY",
    "flow": "ablate.families.flow:FAMILY",
}
DEFAULT_FAMILY = "shortcut_forcing"
BASELINE_FAMILY = "flow"


def family_spec(name: str) -> str:
    """A registered name's "module:attribute" (what trial configs carry, so a Ray worker can import
    it), or a "module:attribute" / "file.py:attribute" given directly."""
    if name in FAMILIES:
        return FAMILIES[name]
    if ":" in name:
        return name
    raise ValueError(
        f"objective.family: {name!r} is not a registered family ({', '.join(FAMILIES)}) nor a 'module:attribute'"
    )


@cache
def load_family(spec: str) -> ObjectiveFamily:
    """The family object a spec names (imported once per process)."""
    module_name, _, attribute = family_spec(spec).rpartition(":")
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser().resolve()
        module_spec = importlib.util.spec_from_file_location(f"ablate_user_family_{path.stem}", path)
        if module_spec is None or not path.is_file():
            raise ValueError(f"objective.family: no file {path}")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ValueError(f"objective.family: cannot import {module_name!r} ({error})") from None
    family = getattr(module, attribute, None)
    if family is None or not all(hasattr(family, m) for m in ("build", "sampler_d", "cell_label")):
        raise ValueError(f"objective.family: {spec!r} is not a family (build, sampler_d, cell_label)")
    return family
