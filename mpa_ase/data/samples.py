"""The labelled sample, identities, deduplication and the leakage guard."""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

KINDS = ("experimental", "computational")


def shared_data_dir() -> Path:
    """The shared data folder: $MPA_SHARED_DATA or ../shared/data beside the checkout."""
    env = os.environ.get("MPA_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def require_file(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found; set MPA_SHARED_DATA to the folder holding the shared data"
        )
    return path


@dataclass
class Sample:
    """One labelled compound.

    ``identity`` names the compound across sources (InChIKey for molecules,
    reduced formula + structure hash for crystals); deduplication and the
    leakage guard use it. ``keys`` name each structure (conformer) uniquely
    and stably, so embeddings can be cached without rebuilding geometry;
    ``build`` makes the ASE structures on demand (RDKit conformers are slow).
    """

    identity: str
    property: str
    source: str
    kind: str
    unit: str
    value: float
    keys: list[str]
    build: Callable[[], list] = field(repr=False)
    smiles: str | None = None
    formula: str | None = None
    # the property's nature; None: looked up in the built-in loaders' tables
    extensive: bool | None = None
    transform: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"sample kind must be one of {KINDS}, got {self.kind!r}")
        if not np.isfinite(self.value):
            raise ValueError(f"non-finite label for {self.identity} ({self.property}@{self.source})")

    @property
    def task(self) -> str:
        return f"{self.property}@{self.source}"

    def structures(self) -> list:
        return self.build()


def structure_key(atoms) -> str:
    """Stable hash of an ASE structure (numbers, positions, cell, pbc)."""
    h = hashlib.sha1()
    h.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(np.round(np.asarray(atoms.positions, dtype=np.float64), 6).tobytes())
    h.update(np.round(np.asarray(atoms.cell.array, dtype=np.float64), 6).tobytes())
    h.update(np.asarray(atoms.pbc, dtype=bool).tobytes())
    return "xtal:" + h.hexdigest()


def deduplicate(samples: Iterable[Sample]) -> list[Sample]:
    """One sample per (task, identity); several values for one compound -> their median."""
    groups: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    for s in samples:
        groups[(s.task, s.identity)].append(s)
    out = []
    for group in groups.values():
        first = group[0]
        if len(group) > 1:
            first.value = float(np.median([s.value for s in group]))
        out.append(first)
    return out


def group_tasks(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    tasks: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        tasks[s.task].append(s)
    return dict(tasks)


def leakage_guard(samples: Iterable[Sample], protected: Iterable[str]) -> tuple[list[Sample], int]:
    """Drop every sample whose identity is protected (benchmark targets).

    Returns the kept samples and how many were removed.
    """
    samples = list(samples)
    protected = set(protected)
    kept = [s for s in samples if s.identity not in protected]
    return kept, len(samples) - len(kept)


# quantities that cannot be negative, by unit (absolute temperatures, pressures, moduli) or by name
NON_NEGATIVE_UNITS = {"K", "MPa", "kPa", "Pa", "bar", "GPa"}
NON_NEGATIVE_PROPERTIES = {"band_gap", "dipole_moment", "heat_capacity", "bulk_modulus", "shear_modulus",
                           "superconducting_tc", "refractive_index", "acentric_factor_abs"}


def physical_lower_bound(prop: str, unit: str) -> float | None:
    """0 for quantities that cannot be negative, else None."""
    base = prop.split("element_")[-1]
    if unit in NON_NEGATIVE_UNITS or base in NON_NEGATIVE_PROPERTIES:
        return 0.0
    return None


def sample_elements(sample) -> set[int]:
    """Atomic numbers of a sample's compound (formula for crystals, SMILES with
    hydrogens for molecules)."""
    if getattr(sample, "formula", None):
        from pymatgen.core import Composition

        return {el.Z for el in Composition(sample.formula).elements}
    if getattr(sample, "smiles", None):
        from rdkit import Chem

        mol = Chem.MolFromSmiles(sample.smiles)
        if mol is not None:
            return {a.GetAtomicNum() for a in Chem.AddHs(mol).GetAtoms()}
    return {int(z) for a in sample.build()[:1] for z in a.numbers}
