"""mpa-ase: materials foundation models in ASE.

``atoms.calc = MPACalculator()`` gives energy, forces and stress from a
pretrained backbone (CHGNet by default, offline) and, from property heads,
experimental properties. Heavy modules load on first use.
"""

from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "MPACalculator": "mpa_ase.calculator",
    "MPAModel": "mpa_ase.model",
    "AtomsGraph": "mpa_ase.graph",
    "neighbor_list": "mpa_ase.neighbors",
    "list_backbones": "mpa_ase.backbones",
    "load_backbone": "mpa_ase.backbones",
    "Backbone": "mpa_ase.backbones",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mpa_ase' has no attribute {name!r}")
