"""MPACalculator(backbone="chgnet") against CHGNet's own ASE calculator."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import reference_structures

NAMES = sorted(reference_structures())


def _native_view(atoms):
    """CHGNet's converter needs a 3D periodic cell: put vacuum systems in a box
    large enough that no image is within the 6 Å cutoff (same graph)."""
    atoms = atoms.copy()
    if not atoms.pbc.all():
        if not atoms.pbc.any():
            atoms.center(vacuum=10.0)
        atoms.pbc = True
    return atoms


def test_enough_structures():
    names = reference_structures()
    assert len(names) >= 20
    elements = set()
    for a in names.values():
        elements |= set(a.get_chemical_symbols())
    assert {"O", "Li", "Cu", "Fe"} <= elements


@pytest.mark.parametrize("name", NAMES)
def test_parity_float32(name, structures, chgnet_calc, chgnet_native):
    atoms = structures[name].copy()
    atoms.calc = chgnet_calc
    e = atoms.get_potential_energy()
    f = atoms.get_forces()
    m = atoms.calc.results["magmoms"]
    native = _native_view(structures[name])
    native.calc = chgnet_native
    e_ref = native.get_potential_energy()
    f_ref = native.get_forces()
    m_ref = native.calc.results["magmoms"]
    n = len(atoms)
    assert abs(e - e_ref) / n <= 1e-4
    assert np.abs(f - f_ref).max() <= 1e-3
    assert np.abs(m - m_ref).max() <= 1e-3
    if atoms.pbc.all():
        s = atoms.get_stress()
        s_ref = native.get_stress()
        assert np.abs(s - s_ref).max() <= 1e-4
    # the reference is not trivial
    assert abs(e_ref) > 0.5 * n


def test_per_atom_energies_sum_to_energy(structures, chgnet_calc):
    atoms = structures["TiO2_rutile"].copy()
    atoms.calc = chgnet_calc
    e = atoms.get_potential_energy()
    assert np.isclose(atoms.get_potential_energies().sum(), e, atol=1e-4)
