"""Shared fixtures: reference structures, calculators, the shared-data folder."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.spacegroup import crystal

REPO = Path(__file__).resolve().parents[1]

# Without a GPU, Triton kernels are tested in Triton's interpreter; the
# variable must be set before triton is first imported.
import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def shared_data_dir() -> Path | None:
    """``$MPA_SHARED_DATA`` or ``../shared/data`` beside the repository."""
    path = Path(os.environ.get("MPA_SHARED_DATA", REPO.parent / "shared" / "data"))
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        msg = "../shared/data is absent (set MPA_SHARED_DATA to its location)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must run every test: {msg}")
        pytest.skip(msg)
    return path


def _strained(atoms: Atoms, eps) -> Atoms:
    atoms = atoms.copy()
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + np.asarray(eps)), scale_atoms=True)
    return atoms


def _rattled(atoms: Atoms, amount: float = 0.05, seed: int = 0) -> Atoms:
    atoms = atoms.copy()
    atoms.rattle(amount, seed=seed)
    return atoms


def reference_structures() -> dict[str, Atoms]:
    """>= 20 structures of >= 8 chemistries: metals, oxides, a Li compound,
    a triclinic cell, rattled and strained cells, a molecule, a slab."""
    shear = [[0.01, 0.02, 0.0], [0.0, -0.015, 0.01], [0.005, 0.0, 0.02]]
    triclinic = Atoms(
        "LiCoO2",
        scaled_positions=[[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.25, 0.27, 0.24], [0.74, 0.76, 0.77]],
        cell=[[3.9, 0.0, 0.0], [0.9, 4.1, 0.0], [0.6, 0.8, 4.4]],
        pbc=True,
    )
    li2o = crystal(["Li", "O"], [(0.25, 0.25, 0.25), (0, 0, 0)], spacegroup=225, cellpar=[4.61, 4.61, 4.61, 90, 90, 90])
    rutile = crystal(["Ti", "O"], [(0, 0, 0), (0.305, 0.305, 0)], spacegroup=136, cellpar=[4.59, 4.59, 2.96, 90, 90, 90])
    srtio3 = crystal(["Sr", "Ti", "O"], [(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0)], spacegroup=221, cellpar=[3.905] * 3 + [90] * 3)
    quartz = crystal(["Si", "O"], [(0.4697, 0, 0), (0.4135, 0.2669, 0.1191)], spacegroup=154, cellpar=[4.916, 4.916, 5.405, 90, 90, 120])
    ethanol = molecule("CH3CH2OH")
    ethanol.pbc = False
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=8.0)
    slab.pbc = (True, True, False)
    return {
        "Si_rattled": _rattled(bulk("Si", "diamond", 5.43, cubic=True), 0.05, 1),
        "Si_sheared": _strained(bulk("Si", "diamond", 5.43), shear),
        "Cu_rattled": _rattled(bulk("Cu", "fcc", 3.61) * (2, 2, 2), 0.05, 2),
        "Al_strained": _strained(bulk("Al", "fcc", 4.05, cubic=True), np.diag([0.02, -0.01, 0.03])),
        "Fe_bcc_rattled": _rattled(bulk("Fe", "bcc", 2.87, cubic=True) * (2, 2, 2), 0.04, 3),
        "W_bcc_strained": _strained(bulk("W", "bcc", 3.165), shear),
        "Mg_hcp_rattled": _rattled(bulk("Mg", "hcp", 3.21, 5.21) * (2, 2, 1), 0.05, 4),
        "NaCl_rattled": _rattled(bulk("NaCl", "rocksalt", 5.64), 0.05, 5),
        "MgO_supercell": _rattled(bulk("MgO", "rocksalt", 4.21, cubic=True) * (2, 2, 2), 0.03, 6),
        "MgO_strained": _strained(bulk("MgO", "rocksalt", 4.21), np.diag([-0.02, -0.02, 0.04])),
        "Li2O_rattled": _rattled(li2o, 0.04, 7),
        "LiF": bulk("LiF", "rocksalt", 4.03),
        "Li_bcc": _rattled(bulk("Li", "bcc", 3.49, cubic=True), 0.05, 8),
        "TiO2_rutile": _rattled(rutile, 0.03, 9),
        "ZnO_wurtzite": _strained(bulk("ZnO", "wurtzite", a=3.25, c=5.21), shear),
        "GaAs": _rattled(bulk("GaAs", "zincblende", 5.65, cubic=True), 0.04, 10),
        "SrTiO3": _rattled(srtio3, 0.04, 11),
        "SiO2_quartz": _rattled(quartz, 0.03, 12),
        "LiCoO2_triclinic": triclinic,
        "CsCl": bulk("CsCl", "cesiumchloride", 4.12),
        "ethanol_molecule": ethanol,
        "Cu111_slab": _rattled(slab, 0.03, 13),
    }


@pytest.fixture(scope="session")
def structures() -> dict[str, Atoms]:
    return reference_structures()


@pytest.fixture(scope="session")
def chgnet_calc():
    from mpa_ase import MPACalculator

    return MPACalculator(backbone="chgnet")


@pytest.fixture(scope="session")
def chgnet_calc64():
    from mpa_ase import MPACalculator

    return MPACalculator(backbone="chgnet", dtype="float64")


@pytest.fixture(scope="session")
def chgnet_native():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from chgnet.model.dynamics import CHGNetCalculator

        return CHGNetCalculator(use_device="cpu")
