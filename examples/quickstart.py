"""Drop MPACalculator into an ordinary ASE script: relax, then MD.

    python examples/quickstart.py
"""

import numpy as np
from ase import units
from ase.build import bulk, molecule
from ase.filters import FrechetCellFilter
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

from mpa_ase import MPACalculator

calc = MPACalculator()  # CHGNet 0.3.0 backbone, offline

# A crystal: relax positions and cell together.
mgo = bulk("MgO", "rocksalt", a=4.3)
mgo.calc = calc
BFGS(FrechetCellFilter(mgo), logfile=None).run(fmax=0.01)
print(f"MgO: a = {mgo.cell.cellpar()[0] * 2 ** 0.5:.3f} Å (exp. 4.21 Å), E = {mgo.get_potential_energy():.3f} eV")

# A molecule in vacuum (no cell, pbc=False): no stress, forces as usual.
water = molecule("H2O")
water.calc = calc
print(f"H2O: E = {water.get_potential_energy():.3f} eV, |F|max = {np.abs(water.get_forces()).max():.3f} eV/Å")

# NVE MD on a Si supercell; the neighbour list is reused between steps (Verlet skin).
si = bulk("Si", "diamond", 5.43, cubic=True) * (2, 2, 2)
si.calc = calc
thermalize_momenta(si, temperature_K=300, rng=np.random.default_rng(0))
md = VelocityVerlet(si, 1.0 * units.fs)
e0 = si.get_total_energy()
md.run(100)
print(f"Si NVE, 100 fs: energy drift {(si.get_total_energy() - e0) / len(si) * 1e3:.3f} meV/atom; "
      f"neighbour list rebuilt {calc.verlet.n_builds} times in {calc.verlet.n_calls} calls")

# Many structures in one batched model call.
results = calc.calculate_batch([bulk("Cu", "fcc", 3.61), bulk("NaCl", "rocksalt", 5.64), water])
print("batched energies (eV):", [round(r["energy"], 3) for r in results])
