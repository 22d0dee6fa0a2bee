"""Molecular data: experimental handbook properties (``chemicals``), QM9 DFT (``qm9pack``),
and 3D conformers from SMILES with RDKit (ETKDG + MMFF)."""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpa_ase.data.samples import Sample, deduplicate

ORGANIC_ELEMENTS = frozenset({"H", "B", "C", "N", "O", "F", "Si", "P", "S", "Cl", "Br", "I"})


@dataclass(frozen=True)
class ChemProperty:
    """How one property is read from ``chemicals``: function, unit and which
    methods are experimental; every other method (group contribution,
    correlation, ML prediction) is never used as a label."""

    module: str
    function: str
    unit: str
    experimental: tuple[str, ...]
    computational: tuple[str, ...] = ()
    scale: float = 1.0  # chemicals' SI value * scale -> our unit
    extensive: bool = False
    transform: str = "identity"


# Methods left out as estimations or derived values: JOBACK, WILSON_JASPERSON,
# FEDORS, ACENTRIC_DEFINITION, *_PREDICTIONS/ANN, the Stockmayer/diameter
# correlations and Psat-based omega.
CHEM_PROPERTIES: dict[str, ChemProperty] = {
    "boiling_point": ChemProperty("phase_change", "Tb", "K",
                                  ("CRC_ORG", "CRC_INORG", "COMMON_CHEMISTRY", "WEBBOOK", "YAWS", "WIKIDATA", "HEOS")),
    "melting_point": ChemProperty("phase_change", "Tm", "K",
                                  ("OPEN_NTBKM", "CRC_ORG", "CRC_INORG", "COMMON_CHEMISTRY", "WEBBOOK", "WIKIDATA")),
    "enthalpy_of_fusion": ChemProperty("phase_change", "Hfus", "kJ/mol", ("CRC", "WEBBOOK", "WIKIDATA"),
                                       scale=1e-3, extensive=True),
    "critical_temperature": ChemProperty("critical", "Tc", "K",
                                         ("HEOS", "IUPAC", "MATTHEWS", "CRC", "PD", "WEBBOOK", "PSRK", "PINAMARTINES", "YAWS")),
    "critical_pressure": ChemProperty("critical", "Pc", "MPa",
                                      ("HEOS", "IUPAC", "MATTHEWS", "CRC", "PD", "WEBBOOK", "PSRK", "PINAMARTINES", "YAWS"),
                                      scale=1e-6),
    "critical_volume": ChemProperty("critical", "Vc", "cm3/mol",
                                    ("HEOS", "IUPAC", "MATTHEWS", "CRC", "WEBBOOK", "PSRK", "PINAMARTINES", "YAWS"),
                                    scale=1e6, extensive=True),
    "critical_compressibility": ChemProperty("critical", "Zc", "1",
                                             ("HEOS", "IUPAC", "MATTHEWS", "CRC", "WEBBOOK", "PSRK", "PINAMARTINES", "YAWS")),
    "acentric_factor": ChemProperty("acentric", "omega", "1", ("HEOS", "PSRK", "PD", "YAWS")),
    "flash_point": ChemProperty("safety", "T_flash", "K",
                                ("IEC 60079-20-1 (2010)", "NFPA 497 (2008)", "Serat DIPPR (2017)", "WIKIDATA")),
    "autoignition_temperature": ChemProperty("safety", "T_autoignition", "K",
                                             ("IEC 60079-20-1 (2010)", "NFPA 497 (2008)", "WIKIDATA")),
    "lower_flammability_limit": ChemProperty("safety", "LFL", "vol%",
                                             ("IEC 60079-20-1 (2010)", "NFPA 497 (2008)", "WIKIDATA", "Suzuki (1994)",
                                              "Crowl and Louvar (2001)"), scale=100.0),
    "upper_flammability_limit": ChemProperty("safety", "UFL", "vol%",
                                             ("IEC 60079-20-1 (2010)", "NFPA 497 (2008)", "WIKIDATA", "Suzuki (1994)",
                                              "Crowl and Louvar (2001)"), scale=100.0),
    "dipole_moment": ChemProperty("dipole", "dipole_moment", "D", ("CCCBDB", "MULLER", "POLING"),
                                  computational=("PSI4_2022A",)),
    "logP": ChemProperty("environment", "logP", "1", ("SYRRES", "CRC", "WIKIDATA")),
    "refractive_index": ChemProperty("refractivity", "RI", "1", ("CRC", "WIKIDATA")),
    "gas_enthalpy_of_formation": ChemProperty("reaction", "Hfg", "kJ/mol",
                                              ("ATCT_G", "TRC", "CRC", "WEBBOOK", "JANAF", "YAWS"),
                                              scale=1e-3, extensive=True),
    "liquid_enthalpy_of_formation": ChemProperty("reaction", "Hfl", "kJ/mol", ("ATCT_L", "CRC", "WEBBOOK", "JANAF"),
                                                 scale=1e-3, extensive=True),
    "solid_enthalpy_of_formation": ChemProperty("reaction", "Hfs", "kJ/mol", ("CRC", "WEBBOOK"),
                                                scale=1e-3, extensive=True),
    "gas_standard_entropy": ChemProperty("reaction", "S0g", "J/(mol K)", ("CRC", "WEBBOOK", "JANAF", "YAWS"),
                                         extensive=True),
    "liquid_standard_entropy": ChemProperty("reaction", "S0l", "J/(mol K)", ("CRC", "WEBBOOK", "JANAF"),
                                            extensive=True),
    "solid_standard_entropy": ChemProperty("reaction", "S0s", "J/(mol K)", ("CRC", "WEBBOOK"), extensive=True),
    "triple_point_temperature": ChemProperty("triple", "Tt", "K", ("HEOS", "STAVELEY", "WEBBOOK")),
    "triple_point_pressure": ChemProperty("triple", "Pt", "Pa", ("HEOS", "STAVELEY", "WEBBOOK"), transform="log10"),
    "research_octane_number": ChemProperty("combustion", "RON", "1", ("FLORIAN_LIMING", "COMBUSTDB")),
    "motor_octane_number": ChemProperty("combustion", "MON", "1", ("FLORIAN_LIMING", "COMBUSTDB")),
    "radius_of_gyration": ChemProperty("molecular_geometry", "RG", "Å", ("CHEMSEP",),
                                       computational=("PSI4_2022A",), scale=1e10),
}


@functools.lru_cache(maxsize=1)
def _chemical_index() -> list[tuple[str, str]]:
    """(CAS, SMILES) of every compound ``chemicals`` knows."""
    from chemicals import identifiers

    db = identifiers.pubchem_db
    if not db.finished_loading:
        db.finish_loading()
    out = []
    for cas_int, meta in db.CAS_index.items():
        if meta.smiles:
            out.append((identifiers.int_to_CAS(cas_int), meta.smiles))
    return out


@functools.lru_cache(maxsize=200_000)
def _parse(smiles: str, max_heavy_atoms: int) -> tuple[str, str] | None:
    """(canonical SMILES, InChIKey) of a neutral organic single-fragment molecule, else None."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None or "." in smiles:
        return None
    heavy = mol.GetNumHeavyAtoms()
    if heavy < 1 or heavy > max_heavy_atoms:
        return None
    for atom in mol.GetAtoms():
        if atom.GetSymbol() not in ORGANIC_ELEMENTS or atom.GetFormalCharge() != 0 or atom.GetNumRadicalElectrons():
            return None
    key = Chem.MolToInchiKey(mol)
    if not key:
        return None
    return Chem.MolToSmiles(mol), key


def conformers(smiles: str, n: int = 1, seed: int = 0):
    """ASE molecules (pbc False, no cell) for ``n`` RDKit ETKDG + MMFF conformers.

    Raises ValueError when RDKit cannot embed the molecule.
    """
    from ase import Atoms
    from rdkit import Chem
    from rdkit.Chem import AllChem

    parsed = Chem.MolFromSmiles(smiles) if isinstance(smiles, str) and smiles.strip() else None
    if parsed is None:
        raise ValueError(f"{smiles!r} is not a valid SMILES string (RDKit cannot parse it)")
    mol = Chem.AddHs(parsed)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=n, params=params))
    if not ids:
        raise ValueError(f"RDKit could not embed {smiles!r} in 3D")
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMoleculeConfs(mol, maxIters=500)
    numbers = [a.GetAtomicNum() for a in mol.GetAtoms()]
    return [Atoms(numbers=numbers, positions=mol.GetConformer(i).GetPositions()) for i in ids]


def molecule_sample(smiles, key, *, prop, source, kind, unit, value, n_conformers, seed,
                    extensive: bool = False, transform: str = "identity") -> Sample:
    keys = [f"mol:{key}:c{k}/{n_conformers}:s{seed}" for k in range(n_conformers)]
    return Sample(
        identity=key, property=prop, source=source, kind=kind, unit=unit, value=float(value),
        keys=keys, build=functools.partial(_cached_conformers, smiles, n_conformers, seed), smiles=smiles,
        extensive=bool(extensive), transform=transform,
    )


@functools.lru_cache(maxsize=4096)
def _cached_conformers(smiles, n, seed):
    return conformers(smiles, n, seed)


def load_chemicals(
    property: str,
    sources: list[str] | None = None,
    include_computational: bool = False,
    max_heavy_atoms: int = 20,
    n_conformers: int = 2,
    seed: int = 0,
    limit: int | None = None,
) -> list[Sample]:
    """Experimental values of one property, one sample per (source, molecule).

    ``sources`` picks methods among the experimental ones of
    :data:`CHEM_PROPERTIES` (all by default); computational methods (e.g.
    PSI4 dipoles) come only with ``include_computational`` and are tagged so.
    ``limit`` keeps the first ``limit`` molecules per source in a seeded
    random order.
    """
    if property not in CHEM_PROPERTIES:
        raise ValueError(f"unknown chemicals property {property!r}; choose from {sorted(CHEM_PROPERTIES)}")
    spec = CHEM_PROPERTIES[property]
    allowed = spec.experimental + (spec.computational if include_computational else ())
    chosen = list(sources) if sources else list(allowed)
    bad = [s for s in chosen if s not in allowed]
    if bad:
        raise ValueError(
            f"source {bad[0]!r} is not an allowed source of {property} (estimations are excluded); "
            f"choose from {allowed}"
        )
    fn = getattr(importlib.import_module(f"chemicals.{spec.module}"), spec.function)
    samples = []
    for cas, smiles in _chemical_index():
        parsed = None
        for source in chosen:
            try:
                value = fn(cas, method=source)
            except Exception:  # chemicals raises for CAS it has no row for in some tables
                value = None
            if isinstance(value, tuple):  # RI returns (value, temperature)
                value = value[0]
            if value is None or not np.isfinite(value):
                continue
            parsed = parsed or _parse(smiles, max_heavy_atoms) or ("", "")
            if not parsed[1]:
                break
            kind = "computational" if source in spec.computational else "experimental"
            samples.append(molecule_sample(
                parsed[0], parsed[1], prop=property, source=source, kind=kind, unit=spec.unit,
                value=float(value) * spec.scale, n_conformers=n_conformers, seed=seed,
                extensive=spec.extensive, transform=spec.transform,
            ))
    samples = deduplicate(samples)
    return _limit_per_source(samples, limit, seed)


def _limit_per_source(samples: list[Sample], limit: int | None, seed: int) -> list[Sample]:
    if not limit:
        return samples
    rng = np.random.default_rng(seed)
    by_source: dict[str, list[Sample]] = {}
    for s in samples:
        by_source.setdefault(s.source, []).append(s)
    out = []
    for group in by_source.values():
        order = rng.permutation(len(group))[:limit]
        out.extend(group[i] for i in sorted(order))
    return out


QM9_PROPERTIES = {
    # column in qm9pack's CSV -> (name, unit, scale, extensive)
    "HOMO_au": ("homo", "eV", 27.211386, False),
    "LUMO_au": ("lumo", "eV", 27.211386, False),
    "HOMO_LUMO_gap_au": ("gap", "eV", 27.211386, False),
    "Dipole_debye": ("dipole_moment", "D", 1.0, False),
    "Heatcapacity_Cv_cal_mol_K": ("heat_capacity", "cal/(mol K)", 1.0, True),
    "ZPVE_au": ("zpve", "eV", 27.211386, True),
    "Polarizability_bohr3": ("polarizability", "bohr3", 1.0, True),
}


def _qm9_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("QM9 needs the qm9pack wheel: pip install qm9pack")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def load_qm9(properties: list[str] | None = None, limit: int = 2000, seed: int = 0) -> list[Sample]:
    """QM9 (B3LYP/6-31G(2df,p)) properties on its own DFT geometries, tagged computational.

    Reads qm9pack's CSV files directly (its ``get_data`` imports pkg_resources).
    """
    import pandas as pd
    from ase import Atoms

    folder = _qm9_dir()
    frames = [pd.read_csv(folder / f"qm9_part{k}.csv") for k in (1, 2, 3)]
    df = pd.concat(frames, ignore_index=True)
    columns = {c.lower(): c for c in df.columns}
    wanted = properties or ["gap", "dipole_moment", "heat_capacity"]
    table = {}
    for col, (name, unit, scale, extensive) in QM9_PROPERTIES.items():
        real = columns.get(col.lower())
        if name in wanted and real is not None:
            table[name] = (real, unit, scale, extensive)
    missing = set(wanted) - set(table)
    if missing:
        raise ValueError(f"QM9 has no column for {sorted(missing)}; columns: {list(df.columns)}")
    rng = np.random.default_rng(seed)
    rows = df.iloc[np.sort(rng.permutation(len(df))[:limit])]
    samples = []
    for _, row in rows.iterrows():
        parsed = _parse(str(row[columns["smiles"]]), 30)
        if parsed is None:
            continue
        atoms = _qm9_atoms(row[columns["elements"]], row[columns["xyz_ang"]], Atoms)
        if atoms is None:
            continue
        for name, (col, unit, scale, extensive) in table.items():
            value = row[col]
            if not np.isfinite(value):
                continue
            samples.append(Sample(
                identity=parsed[1], property=name, source="QM9", kind="computational", unit=unit,
                value=float(value) * scale, keys=[f"qm9:{row[columns['index']]}"],
                build=functools.partial(lambda a: [a.copy()], atoms), smiles=parsed[0],
                extensive=bool(extensive), transform="identity",
            ))
    return deduplicate(samples)


def _qm9_atoms(elements, xyz, atoms_cls):
    import ast

    try:
        symbols = ast.literal_eval(elements) if isinstance(elements, str) else list(elements)
        pos = np.asarray(ast.literal_eval(xyz) if isinstance(xyz, str) else xyz, dtype=float).reshape(-1, 3)
    except (ValueError, SyntaxError):
        return None
    if len(symbols) != len(pos):
        return None
    return atoms_cls(symbols=symbols, positions=pos)
