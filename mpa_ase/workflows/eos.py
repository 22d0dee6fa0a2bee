"""Equation of state from batched energies and ASE's EquationOfState."""

from __future__ import annotations

import numpy as np
from ase import Atoms, units

from mpa_ase.workflows.batch import evaluate_many
from mpa_ase.workflows.relax import relax


def eos(atoms: Atoms, calc, n_points: int = 11, max_strain: float = 0.04, eos_name: str = "birchmurnaghan",
        relax_positions: bool = False) -> dict:
    """Equation of state from ``n_points`` isotropically scaled cells (linear
    strain up to ±``max_strain``), all evaluated in one batch where possible.

    Returns v0 (Å³), e0 (eV), bulk_modulus (GPa), the fit type, the volumes,
    energies and fit residuals (eV).
    """
    from ase.eos import EquationOfState

    if not atoms.pbc.all() or atoms.cell.rank < 3:
        raise ValueError("an equation of state needs a 3D periodic crystal (pbc on all axes and a full cell); "
                         f"got pbc={atoms.pbc.tolist()}")
    if n_points < 5 or not 0 < max_strain < 0.5:
        raise ValueError(f"eos needs n_points >= 5 and 0 < max_strain < 0.5, got {n_points}, {max_strain}")
    scales = np.linspace(1 - max_strain, 1 + max_strain, n_points)
    cells = []
    for s in scales:
        a = atoms.copy()
        a.set_cell(atoms.cell.array * s, scale_atoms=True)
        if relax_positions:
            a = relax(a, calc, cell=False).atoms
        cells.append(a)
    energies = np.array([r["energy"] for r in evaluate_many(cells, calc, properties=("energy", "forces"))])
    volumes = np.array([a.get_volume() for a in cells])
    fit = EquationOfState(volumes, energies, eos=eos_name)
    v0, e0, b = fit.fit()
    residuals = energies - fit.func(volumes, *fit.eos_parameters)
    return {
        "v0": float(v0), "e0": float(e0), "bulk_modulus": float(b / units.GPa), "fit": eos_name,
        "volumes": volumes, "energies": energies, "residuals": residuals,
        "max_residual": float(np.abs(residuals).max()),
    }
