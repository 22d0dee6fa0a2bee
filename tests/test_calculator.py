"""MPACalculator: finite differences, invariances, batching, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from scipy.spatial.transform import Rotation

from mpa_ase import MPACalculator
from mpa_ase.errors import BackboneNotFoundError, MPAInputError, OverlappingAtomsError, UnsupportedElementError


def _energy(atoms, calc):
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.get_potential_energy()


@pytest.mark.parametrize("name", ["Si_rattled", "LiCoO2_triclinic", "Cu111_slab", "ethanol_molecule"])
def test_forces_are_minus_energy_gradient(name, structures, chgnet_calc64):
    atoms = structures[name].copy()
    atoms.calc = chgnet_calc64
    forces = atoms.get_forces()
    h = 1e-4
    rng = np.random.default_rng(0)
    fd = np.zeros_like(forces)
    for a in rng.choice(len(atoms), size=min(4, len(atoms)), replace=False):
        for k in range(3):
            p = atoms.copy(); p.positions[a, k] += h
            m = atoms.copy(); m.positions[a, k] -= h
            fd[a, k] = -(_energy(p, chgnet_calc64) - _energy(m, chgnet_calc64)) / (2 * h)
            assert abs(fd[a, k] - forces[a, k]) <= 1e-4 * max(1.0, np.abs(forces).max())


@pytest.mark.parametrize("name", ["Si_sheared", "LiCoO2_triclinic", "Fe_bcc_rattled"])
def test_stress_is_strain_derivative(name, structures, chgnet_calc64):
    atoms = structures[name].copy()
    atoms.calc = chgnet_calc64
    stress = atoms.get_stress(voigt=False)
    volume = atoms.get_volume()
    h = 1e-5
    for a, b in [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]:
        eps = np.zeros((3, 3))
        eps[a, b] = eps[b, a] = h
        ep, em = atoms.copy(), atoms.copy()
        ep.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
        em.set_cell(atoms.cell.array @ (np.eye(3) - eps), scale_atoms=True)
        de = (_energy(ep, chgnet_calc64) - _energy(em, chgnet_calc64)) / (2 * h)
        expected = de / volume / (1 if a == b else 2)
        assert abs(expected - stress[a, b]) <= 1e-4 * max(1e-3, np.abs(stress).max())


def test_invariances_and_extensivity(structures, chgnet_calc64):
    atoms = structures["LiCoO2_triclinic"].copy()
    atoms.rattle(0.05, seed=3)
    atoms.calc = chgnet_calc64
    e0 = atoms.get_potential_energy()
    f0 = atoms.get_forces()
    s0 = atoms.get_stress(voigt=False)
    n = len(atoms)

    moved = atoms.copy(); moved.positions += [1.3, -2.1, 0.7]
    moved.calc = chgnet_calc64
    assert abs(moved.get_potential_energy() - e0) / n < 1e-5
    assert np.allclose(moved.get_forces(), f0, atol=1e-5)

    wrapped = moved.copy(); wrapped.wrap(); wrapped.calc = chgnet_calc64
    assert abs(wrapped.get_potential_energy() - e0) / n < 1e-5

    rot = Rotation.from_euler("xyz", [0.3, -1.1, 2.0]).as_matrix()
    rotated = atoms.copy()
    rotated.set_cell(atoms.cell.array @ rot.T, scale_atoms=True)
    rotated.calc = chgnet_calc64
    assert abs(rotated.get_potential_energy() - e0) / n < 1e-5
    assert np.allclose(rotated.get_forces(), f0 @ rot.T, atol=1e-5)
    assert np.allclose(rotated.get_stress(voigt=False), rot @ s0 @ rot.T, atol=1e-6)

    perm = np.random.default_rng(1).permutation(n)
    permuted = atoms[perm]; permuted.calc = chgnet_calc64
    assert abs(permuted.get_potential_energy() - e0) / n < 1e-5
    assert np.allclose(permuted.get_forces(), f0[perm], atol=1e-5)

    big = atoms * (2, 2, 2); big.calc = chgnet_calc64
    assert abs(big.get_potential_energy() / (8 * n) - e0 / n) < 1e-5
    assert np.allclose(big.get_stress(voigt=False), s0, atol=1e-6)


def test_batch_equals_single_calls(structures, chgnet_calc):
    names = ["Si_rattled", "NaCl_rattled", "ethanol_molecule", "Cu111_slab"]
    batch = chgnet_calc.calculate_batch([structures[k] for k in names])
    for name, res in zip(names, batch):
        atoms = structures[name].copy()
        atoms.calc = chgnet_calc
        assert abs(res["energy"] - atoms.get_potential_energy()) < 1e-4
        assert np.allclose(res["forces"], atoms.get_forces(), atol=1e-4)
        assert ("stress" in res) == (atoms.cell.volume > 0)
    # asking for less gives the same numbers without stress
    lean = chgnet_calc.calculate_batch([structures[k] for k in names], properties=("energy", "forces"))
    for full, res in zip(batch, lean):
        assert "stress" not in res and res["energy"] == pytest.approx(full["energy"], abs=1e-6)
        assert np.allclose(res["forces"], full["forces"], atol=1e-5)
    with pytest.raises(PropertyNotImplementedError, match="boiling"):
        chgnet_calc.calculate_batch([structures["Si_rattled"]], properties=("boiling",))


def test_pymatgen_structure_is_accepted(structures, chgnet_calc):
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = structures["GaAs"]
    struct = AseAtomsAdaptor.get_structure(atoms)
    res = chgnet_calc.calculate_batch([struct])[0]
    assert abs(res["energy"] - _energy(atoms, chgnet_calc)) < 1e-4


def test_molecule_has_no_stress(structures, chgnet_calc):
    atoms = structures["ethanol_molecule"].copy()
    atoms.calc = chgnet_calc
    atoms.get_potential_energy()
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def test_float64_does_not_touch_global_dtype(chgnet_calc64):
    assert torch.get_default_dtype() == torch.float32
    atoms = bulk("Si", "diamond", 5.43)
    atoms.calc = chgnet_calc64
    atoms.get_potential_energy()
    assert torch.get_default_dtype() == torch.float32
    assert next(chgnet_calc64.model.parameters()).dtype == torch.float64


# ------------------------------------------------------------------ bad input
def _raises(atoms, calc, exc, match):
    atoms.calc = calc
    with pytest.raises(exc, match=match):
        atoms.get_potential_energy()


def test_nan_and_inf_positions(chgnet_calc):
    atoms = bulk("Si", "diamond", 5.43)
    atoms.positions[1, 0] = np.nan
    _raises(atoms, chgnet_calc, MPAInputError, "NaN or inf")
    atoms = bulk("Si", "diamond", 5.43)
    atoms.positions[0, 2] = np.inf
    _raises(atoms, chgnet_calc, MPAInputError, "NaN or inf")


def test_nan_cell(chgnet_calc):
    atoms = bulk("Si", "diamond", 5.43)
    cell = atoms.cell.array.copy(); cell[0, 0] = np.nan
    atoms.cell.array[:] = cell
    _raises(atoms, chgnet_calc, MPAInputError, "cell contains NaN")


def test_overlapping_atoms(chgnet_calc):
    atoms = Atoms("H2O", positions=[[0, 0, 0], [0.05, 0, 0], [1, 0, 0]])
    _raises(atoms, chgnet_calc, OverlappingAtomsError, r"atoms \d and \d are 0.0500 Å apart")


def test_unsupported_element(chgnet_calc):
    atoms = Atoms("AmO", positions=[[0, 0, 0], [2, 0, 0]])
    _raises(atoms, chgnet_calc, UnsupportedElementError, "'chgnet' does not support element.*Am")


def test_pbc_with_zero_cell(chgnet_calc):
    atoms = Atoms("Si2", positions=[[0, 0, 0], [1.5, 1.5, 1.5]], pbc=True)
    _raises(atoms, chgnet_calc, MPAInputError, "pbc is True along cell vector a but that vector is zero")


def test_degenerate_periodic_cell(chgnet_calc):
    atoms = Atoms("Si2", positions=[[0, 0, 0], [1.5, 1.5, 1.5]], cell=[[3, 0, 0], [6, 0, 0], [0, 0, 3]], pbc=True)
    _raises(atoms, chgnet_calc, MPAInputError, "linearly dependent")


def test_empty_atoms(chgnet_calc):
    _raises(Atoms(), chgnet_calc, MPAInputError, "empty Atoms")


def test_unknown_property(chgnet_calc):
    atoms = bulk("Si", "diamond", 5.43)
    with pytest.raises(PropertyNotImplementedError, match="boiling_point"):
        chgnet_calc.get_property("boiling_point", atoms)


def test_unknown_backbone_names_package(monkeypatch):
    from mpa_ase import backbones

    # a known plugin that is not installed: simulate by hiding its entry point
    real = backbones.available_backbones

    def without_mace():
        return {k: v for k, v in real().items() if k != "mace"}

    monkeypatch.setattr(backbones, "available_backbones", without_mace)
    with pytest.raises(BackboneNotFoundError, match="mpa-ase-mace"):
        MPACalculator(backbone="mace")
    with pytest.raises(BackboneNotFoundError, match="'nope' is not installed"):
        MPACalculator(backbone="nope")


def test_isolated_atom_and_dimer(chgnet_calc):
    atom = Atoms("Ne", positions=[[0, 0, 0]])
    atom.calc = chgnet_calc
    assert np.isfinite(atom.get_potential_energy())
    assert np.allclose(atom.get_forces(), 0)
    dimer = molecule("H2")
    dimer.calc = chgnet_calc
    f = dimer.get_forces()
    assert np.allclose(f[0], -f[1], atol=1e-5)  # Newton's third law


def test_check_state_agrees_with_ases_own_comparison(chgnet_calc, monkeypatch):
    """The exact-match shortcut of check_state answers what ASE's
    compare_atoms answers, for no change, changes below and above ASE's
    tolerance, and every kind of change ASE watches; ignored changes stay ignored."""
    from ase.calculators.calculator import compare_atoms

    atoms = bulk("NaCl", "rocksalt", 5.64)
    atoms.positions[0] = 0.0
    atoms.calc = chgnet_calc
    atoms.get_potential_energy()
    seen = chgnet_calc.atoms

    def moved(a):
        a.positions[1, 0] += 1e-9

    def moved_below_tolerance(a):
        a.positions[0, 2] += 1e-16  # ASE: not a change (absolute tolerance 1e-15)

    def magnetised(a):
        a.set_initial_magnetic_moments([1.0, 0.0])

    def renumbered(a):
        a.numbers[1] = 9

    def strained(a):
        a.cell[0, 1] += 1e-6

    def unperiodic(a):
        a.pbc = [True, True, False]

    cases = [lambda a: None, moved, moved_below_tolerance, magnetised, renumbered, strained, unperiodic]
    answers = []
    for change in cases:
        probe = atoms.copy()
        change(probe)
        ours, ase_own = chgnet_calc.check_state(probe), compare_atoms(seen, probe, tol=1e-15)
        assert sorted(ours) == sorted(ase_own), change
        answers.append(ours)
    assert answers[0] == [] and answers[2] == [] and answers[1] == ["positions"]
    monkeypatch.setattr(chgnet_calc, "ignored_changes", {"initial_magmoms"})
    probe = atoms.copy()
    magnetised(probe)
    assert chgnet_calc.check_state(probe) == []
