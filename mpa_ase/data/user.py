"""Bring your own data: a table (CSV or Parquet) of SMILES or structure files
with values, or an ASE file/database with values in ``atoms.info``.

Config entries (``data``/``target`` of any training phase)::

    {loader: table, path: mine.csv, property: viscosity, unit: "mPa s",
     smiles_column: smiles, value_column: value, source: my_lab,
     kind: experimental, extensive: false, transform: log10}
    {loader: table, path: gaps.csv, structure_column: cif_path, property: band_gap, unit: eV}
    {loader: ase, path: data.extxyz, key: band_gap, property: band_gap, unit: eV}

Molecules get RDKit conformers and InChIKey identities, crystals a reduced
formula identity (polymorphs on one side of any split). Each sample carries
its property's nature (unit, extensive, transform), so no loader table is
consulted downstream. Rows that cannot be used (missing or non-finite
value, unparsable SMILES, unreadable structure) are counted and named in a
warning, never silently dropped.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np

from mpa_ase.data.samples import KINDS, Sample, deduplicate, structure_key

TRANSFORMS = ("identity", "log10")


def _check(prop: str, unit: str, kind: str, transform: str) -> None:
    if not prop or not unit:
        raise ValueError("a user data source needs 'property' (its name) and 'unit' (e.g. K, eV, 'mPa s')")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")


def _crystal_sample(atoms, *, prop, source, kind, unit, value, extensive, transform) -> Sample:
    from pymatgen.core import Composition

    atoms = atoms.copy()
    atoms.calc = None
    formula = Composition(atoms.get_chemical_formula()).reduced_formula
    return Sample(identity=f"formula:{formula}", property=prop, source=source, kind=kind, unit=unit,
                  value=float(value), keys=[structure_key(atoms)], build=functools.partial(lambda a: [a], atoms),
                  formula=formula, extensive=extensive, transform=transform)


def _report(skipped: list[str], path) -> None:
    if skipped:
        warnings.warn(f"{path}: {len(skipped)} row(s) not used: {'; '.join(skipped[:5])}"
                      + (" ..." if len(skipped) > 5 else ""), stacklevel=3)


def load_table(path: str, property: str, unit: str, value_column: str = "value", smiles_column: str | None = None,
               structure_column: str | None = None, source: str = "user", kind: str = "experimental",
               extensive: bool = False, transform: str = "identity", n_conformers: int = 1, seed: int = 0,
               max_heavy_atoms: int = 60) -> list[Sample]:
    """Samples from a CSV/Parquet table: one row per compound, SMILES or a structure file path."""
    import pandas as pd

    from mpa_ase.data.molecules import _parse, molecule_sample

    _check(property, unit, kind, transform)
    if (smiles_column is None) == (structure_column is None):
        raise ValueError("give exactly one of smiles_column (molecules) or structure_column (structure files)")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"data table {p} not found")
    table = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    for col in (value_column, smiles_column or structure_column):
        if col not in table.columns:
            raise ValueError(f"{p}: no column {col!r}; columns: {list(table.columns)}")
    samples, skipped = [], []
    for k, row in table.iterrows():
        try:
            value = float(row[value_column])
        except (TypeError, ValueError):
            value = float("nan")
        if not np.isfinite(value) or (transform == "log10" and value <= 0):
            skipped.append(f"row {k}: value {row[value_column]!r}")
            continue
        if smiles_column is not None:
            parsed = _parse(str(row[smiles_column]), max_heavy_atoms)
            if parsed is None:
                skipped.append(f"row {k}: SMILES {row[smiles_column]!r} not a neutral organic molecule RDKit parses")
                continue
            smiles, key = parsed
            samples.append(molecule_sample(smiles, key, prop=property, source=source, kind=kind, unit=unit,
                                           value=value, n_conformers=n_conformers, seed=seed,
                                           extensive=bool(extensive), transform=transform))
        else:
            from ase.io import read

            file = Path(str(row[structure_column]))
            file = file if file.is_absolute() else p.parent / file
            try:
                atoms = read(file)
            except Exception as exc:  # noqa: BLE001 - named in the warning
                skipped.append(f"row {k}: {file} unreadable ({type(exc).__name__})")
                continue
            samples.append(_crystal_sample(atoms, prop=property, source=source, kind=kind, unit=unit, value=value,
                                           extensive=bool(extensive), transform=transform))
    _report(skipped, p)
    if not samples:
        raise ValueError(f"{p}: no usable rows")
    return deduplicate(samples)


def load_ase(path: str, key: str, property: str | None = None, unit: str = "", source: str = "user",
             kind: str = "computational", extensive: bool = False, transform: str = "identity") -> list[Sample]:
    """Samples from any ASE-readable file or database, the value in ``atoms.info[key]``
    (or a database row's key-value pair)."""
    from ase.io import iread

    property = property or key
    _check(property, unit, kind, transform)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"structure file {p} not found")
    samples, skipped = [], []
    if p.suffix == ".db":
        from ase.db import connect

        items = ((row.id, row.toatoms(), row.key_value_pairs.get(key)) for row in connect(str(p)).select())
    else:
        items = ((k, a, a.info.get(key)) for k, a in enumerate(iread(str(p), index=":")))
    for k, atoms, raw in items:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            skipped.append(f"structure {k}: no numeric {key!r}")
            continue
        if not np.isfinite(value):
            skipped.append(f"structure {k}: {key}={raw!r}")
            continue
        if atoms.pbc.all():
            samples.append(_crystal_sample(atoms, prop=property, source=source, kind=kind, unit=unit, value=value,
                                           extensive=bool(extensive), transform=transform))
        else:
            a = atoms.copy()
            a.calc = None
            samples.append(Sample(identity=f"struct:{structure_key(a)}", property=property, source=source,
                                  kind=kind, unit=unit, value=value, keys=[structure_key(a)],
                                  build=functools.partial(lambda x: [x], a), extensive=bool(extensive),
                                  transform=transform))
    _report(skipped, p)
    if not samples:
        raise ValueError(f"{p}: no structure with a numeric {key!r}")
    return deduplicate(samples)
