"""DFT-labelled structures for fine-tuning a potential: energy, forces, stress.

Loaders read the shared data folder (never shipped):

- ``alexandria_pressure``: Alexandria PBE structures relaxed at 0-150 GPa
  (energy and stress; relaxed, so no forces). VASP writes stress in kBar,
  positive = compressive; ASE's stress is eV/Å³, positive = tensile:
  ``ase = -0.1 * vasp / 160.21766208`` (:func:`vasp_kbar_to_ase`). Their
  ``energy_total`` is VASP's enthalpy under the external pressure
  (PSTRESS): H = E + P·V, so the energy is ``energy_total - P·V``
  (:func:`energy_from_enthalpy`; at 25-150 GPa P·V is 2-15 eV/atom).
- ``phonopy_forces``: phonopy's example DFT displacement force sets
  (forces of displaced supercells; no energies).
- ``wbm``: matcalc's WBM structures with PBE energies (evaluation).

All of Si, C (diamond) and Cu phonon data, and every elemental Si, C or Cu
structure, is held out of every training set (:data:`HELD_OUT_ELEMENTS`):
those are the fidelity benchmark's evaluation data.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import json
from dataclasses import dataclass, field

import numpy as np

from mpa_ase.data.samples import require_file, shared_data_dir

EV_PER_A3_PER_GPA = 1.0 / 160.21766208
HELD_OUT_ELEMENTS = frozenset({"Si", "C", "Cu"})
HELD_OUT_PHONOPY = frozenset({"Si", "Si-QHA", "Cu-QHA"})
PRESSURES_GPA = (0, 25, 50, 75, 100, 125, 150)


def vasp_kbar_to_ase(stress_3x3) -> np.ndarray:
    """VASP stress (kBar, positive = compressive, 3x3) -> ASE Voigt stress (eV/Å³, positive = tensile)."""
    from ase.stress import full_3x3_to_voigt_6_stress

    s = np.asarray(stress_3x3, dtype=np.float64)
    return full_3x3_to_voigt_6_stress(-0.1 * s * EV_PER_A3_PER_GPA)


def energy_from_enthalpy(enthalpy_eV: float, pressure_GPa: float, volume_A3: float) -> float:
    """E = H - P·V, with P in GPa and V in Å³."""
    return float(enthalpy_eV) - float(pressure_GPa) * EV_PER_A3_PER_GPA * float(volume_A3)


@dataclass
class LabelledStructure:
    """One structure with DFT labels in ASE units; a label that was not
    computed is None. ``group`` keeps related structures (one material at
    several pressures, displacements of one supercell) on one split side."""

    atoms: object
    identity: str
    source: str
    group: str
    energy: float | None = None  # eV, total
    forces: np.ndarray | None = None  # (N, 3) eV/Å
    stress: np.ndarray | None = None  # Voigt (6,) eV/Å³, ASE sign
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.atoms)
        if self.energy is not None and not np.isfinite(self.energy):
            raise ValueError(f"{self.identity}: non-finite energy")
        if self.forces is not None:
            self.forces = np.asarray(self.forces, dtype=np.float64)
            if self.forces.shape != (n, 3) or not np.isfinite(self.forces).all():
                raise ValueError(f"{self.identity}: forces must be a finite ({n}, 3) array, got {self.forces.shape}")
        if self.stress is not None:
            self.stress = np.asarray(self.stress, dtype=np.float64)
            if self.stress.shape != (6,) or not np.isfinite(self.stress).all():
                raise ValueError(f"{self.identity}: stress must be a finite Voigt 6-vector in eV/Å³")
            if np.abs(self.stress).max() > 10.0:  # 1600 GPa: a unit mistake (kBar or GPa given as eV/Å³)
                raise ValueError(f"{self.identity}: |stress| up to {np.abs(self.stress).max():.3g} eV/Å³ "
                                 "(> 1,600 GPa): convert to ASE's eV/Å³ first (e.g. vasp_kbar_to_ase)")

    @property
    def elements(self) -> set[str]:
        return set(self.atoms.get_chemical_symbols())


def is_held_out(structure: LabelledStructure) -> bool:
    """Elemental Si, C or Cu: the fidelity benchmark's evaluation materials."""
    els = structure.elements
    return len(els) == 1 and next(iter(els)) in HELD_OUT_ELEMENTS


def _atoms(d: dict):
    from ase import Atoms
    from pymatgen.core import Structure

    s = Structure.from_dict(d)
    return Atoms([site.specie.symbol for site in s], positions=s.cart_coords, cell=s.lattice.matrix, pbc=True)


def alexandria_entries(pressure_gpa: int) -> tuple[dict, ...]:
    """The entries of the Alexandria PBE structures relaxed at ``pressure_gpa``
    (pymatgen ComputedStructureEntry dicts; read only). The last file read is
    kept, so loaders of one run (band gaps, known structures) parse it once."""
    value = float(pressure_gpa)
    p = int(value) if np.isfinite(value) else None
    if p != value or p not in PRESSURES_GPA:  # 25.5 must not read the 25 GPa file
        raise ValueError(f"Alexandria high-pressure set: no data at {pressure_gpa} GPa; available: {PRESSURES_GPA}")
    return _alexandria_file(p)


@functools.lru_cache(maxsize=1)
def _alexandria_file(pressure_gpa: int) -> tuple[dict, ...]:
    # keyed by the int: lru_cache keys 0 and 0.0 apart, and would parse the file twice
    path = require_file(shared_data_dir() / "crystals" / "alexandria_high_pressure" / f"P{pressure_gpa:03d}.json.bz2")
    return tuple(json.load(bz2.open(path))["entries"])


def load_alexandria_pressure(pressures=PRESSURES_GPA, limit: int | None = None, max_atoms: int | None = 32,
                             seed: int = 0, zero_forces: bool = False) -> list[LabelledStructure]:
    """Alexandria PBE high-pressure set: ``limit`` materials (drawn by ``seed``),
    each at every pressure given (GPa), with energy and stress. The structures
    are relaxed at their pressure, so their forces vanish to the relaxation's
    tolerance: ``zero_forces`` uses that as force labels (zeros)."""
    pressures = [int(p) for p in pressures]
    bad = sorted(set(pressures) - set(PRESSURES_GPA))
    if bad:
        raise ValueError(f"alexandria_pressure: no data at {bad} GPa; available: {PRESSURES_GPA}")
    by_pressure = {p: {e["data"]["mat_id"]: e for e in alexandria_entries(p)} for p in pressures}
    ids = sorted(set.intersection(*(set(d) for d in by_pressure.values())))
    if max_atoms is not None:
        ids = [i for i in ids if by_pressure[pressures[0]][i]["data"]["nsites"] <= max_atoms]
    if limit is not None and limit < len(ids):
        rng = np.random.default_rng(seed)
        ids = sorted(ids[k] for k in rng.choice(len(ids), size=limit, replace=False))
    out = []
    for mat in ids:
        for p in pressures:
            e = by_pressure[p][mat]
            atoms = _atoms(e["structure"])
            out.append(LabelledStructure(
                atoms=atoms, identity=f"alexandria:{mat}@{p}GPa", source="Alexandria_PBE", group=f"alexandria:{mat}",
                energy=energy_from_enthalpy(e["data"]["energy_total"], p, atoms.get_volume()),
                stress=vasp_kbar_to_ase(e["data"]["stress"]),
                forces=np.zeros((len(atoms), 3)) if zero_forces else None,
                info={"pressure_GPa": p, "formula": e["data"]["formula"], "enthalpy_eV": e["data"]["energy_total"]},
            ))
    return out


def load_phonopy_forces(names: list[str] | None = None) -> list[LabelledStructure]:
    """Displaced supercells with DFT forces from phonopy's examples (``FORCE_SETS``).

    Si, Si-QHA and Cu-QHA are refused: they are held out for evaluation."""
    import phonopy

    root = shared_data_dir() / "phonons" / "phonopy_examples"
    available = sorted(p.name for p in require_file(root).iterdir()
                       if (p / "FORCE_SETS").exists() and (p / "phonopy_disp.yaml").exists())
    names = list(names) if names is not None else [n for n in available if n not in HELD_OUT_PHONOPY]
    refused = sorted(set(names) & HELD_OUT_PHONOPY)
    if refused:
        raise ValueError(f"phonopy_forces: {refused} are held out for evaluation and never trained on")
    unknown = sorted(set(names) - set(available))
    if unknown:
        raise ValueError(f"phonopy_forces: no force set for {unknown}; available: {available}")
    from ase import Atoms

    out = []
    for name in names:
        ph = phonopy.load(root / name / "phonopy_disp.yaml", force_sets_filename=root / name / "FORCE_SETS",
                          produce_fc=False, log_level=0, primitive_matrix="P")
        forces = np.asarray(ph.dataset_forces if hasattr(ph, "dataset_forces") else ph.forces)
        for k, sc in enumerate(ph.supercells_with_displacements):
            atoms = Atoms(sc.symbols, cell=sc.cell, scaled_positions=sc.scaled_positions, pbc=True)
            out.append(LabelledStructure(atoms=atoms, identity=f"phonopy:{name}:disp{k}", source="phonopy_DFT",
                                         group=f"phonopy:{name}", forces=forces[k]))
    return out


def load_wbm(limit: int | None = None, seed: int = 0, max_atoms: int | None = None) -> list[LabelledStructure]:
    """matcalc's WBM set: relaxed structures with PBE total energies (for evaluation)."""
    path = shared_data_dir() / "crystals" / "matcalc_benchmarks" / "wbm-random-pbe54-equilibrium-2025.1.json.gz"
    rows = json.load(gzip.open(require_file(path)))
    out = []
    for r in rows:
        atoms = _atoms(r["structure"])
        if max_atoms is not None and len(atoms) > max_atoms:
            continue
        out.append(LabelledStructure(atoms=atoms, identity=f"wbm:{r['material_id']}", source="WBM_PBE",
                                     group=f"wbm:{r['material_id']}", energy=float(r["energy"]),
                                     info={"formula": r["formula"]}))
    if limit is not None and limit < len(out):
        rng = np.random.default_rng(seed)
        out = [out[k] for k in sorted(rng.choice(len(out), size=limit, replace=False))]
    return out


def load_replay_binaries(limit: int | None = 200, rattle: float = 0.05, max_atoms: int | None = 16,
                         seed: int = 0) -> list[LabelledStructure]:
    """Unlabelled structures for the forgetting guard: matcalc's Alexandria
    binaries (the phonon set; not used by any fidelity evaluation), rattled by
    ``rattle`` Å so forces are not zero. The original model labels them."""
    path = shared_data_dir() / "crystals" / "matcalc_benchmarks" / "alexandria-binary-pbe-phonon-2025.1.json.gz"
    rows = json.load(gzip.open(require_file(path)))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows))
    out = []
    for k in order:
        r = rows[int(k)]
        structure = r["structure"] if isinstance(r["structure"], dict) else json.loads(
            r["structure"].replace("'", '"').replace("True", "true").replace("False", "false")
            .replace("None", "null"))
        atoms = _atoms(structure)
        if max_atoms is not None and len(atoms) > max_atoms:
            continue
        if rattle > 0:
            atoms.rattle(rattle, seed=int(k))
        out.append(LabelledStructure(atoms=atoms, identity=f"replay:{r['mp_id']}", source="replay_binaries",
                                     group=f"replay:{r['mp_id']}", info={"formula": r["formula"]}))
        if limit is not None and len(out) >= limit:
            break
    return out


LOADERS = {"alexandria_pressure": load_alexandria_pressure, "phonopy_forces": load_phonopy_forces,
           "wbm": load_wbm, "replay_binaries": load_replay_binaries}


def load_structures(spec: dict, *, for_training: bool = True) -> list[LabelledStructure]:
    """Structures a config entry names (``{"loader": name, ...options}``); for
    training, every held-out structure (elemental Si, C, Cu) is dropped."""
    options = dict(spec)
    name = options.pop("loader", None)
    if name not in LOADERS:
        raise ValueError(f"unknown structure loader {name!r}; choose from {sorted(LOADERS)}")
    try:
        structures = LOADERS[name](**options)
    except TypeError as exc:
        raise ValueError(f"loader {name!r}: {exc}") from None
    if for_training:
        structures = [s for s in structures if not is_held_out(s)]
    return structures
