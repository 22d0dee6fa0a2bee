"""Backbone discovery through the ``mpa_ase.backbones`` entry-point group.

A plugin package declares, in its ``pyproject.toml``::

    [project.entry-points."mpa_ase.backbones"]
    mybackbone = "my_package:load_backbone"

where ``load_backbone(model=None, **options)`` returns a :class:`Backbone`.
Entry points are read lazily; the core never imports a plugin's library.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from mpa_ase.backbones.base import Backbone
from mpa_ase.errors import BackboneNotFoundError

ENTRY_POINT_GROUP = "mpa_ase.backbones"

# Where the first-party backbones live, for the "not installed" message.
KNOWN_PACKAGES = {
    "chgnet": "mpa-ase-chgnet (pip install ./plugins/mpa-ase-chgnet)",
    "mace": "mpa-ase-mace (pip install ./plugins/mpa-ase-mace)",
    "matgl": "mpa-ase-matgl (pip install ./plugins/mpa-ase-matgl)",
}

__all__ = ["Backbone", "ENTRY_POINT_GROUP", "available_backbones", "list_backbones", "load_backbone"]


def available_backbones() -> dict[str, EntryPoint]:
    """Installed backbones by name (nothing is imported)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def list_backbones() -> list[dict[str, str]]:
    """Name, providing distribution and version of every installed backbone."""
    rows = []
    for name, ep in sorted(available_backbones().items()):
        dist = getattr(ep, "dist", None)
        rows.append({
            "name": name,
            "package": dist.name if dist is not None else "",
            "version": dist.version if dist is not None else "",
            "entry_point": ep.value,
        })
    return rows


def load_backbone(name: str, **options) -> Backbone:
    """Instantiate an installed backbone by name; options go to its loader."""
    found = available_backbones()
    if name not in found:
        installed = ", ".join(sorted(found)) or "none"
        hint = KNOWN_PACKAGES.get(name)
        what = f"install {hint}" if hint else "install the package that provides it"
        raise BackboneNotFoundError(
            f"backbone {name!r} is not installed ({what}); installed backbones: {installed}"
        )
    factory = found[name].load()
    import torch

    with torch.random.fork_rng(devices=[]):  # building modules to load weights into draws no numbers of the caller's
        backbone = factory(**options)
    if not isinstance(backbone, Backbone):
        raise TypeError(
            f"entry point {name!r} ({found[name].value}) returned {type(backbone).__name__}, "
            "not an mpa_ase.backbones.Backbone"
        )
    return backbone
