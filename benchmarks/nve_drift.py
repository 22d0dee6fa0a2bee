"""NVE energy conservation: 64-atom Si, 300 K, 1 fs, 5 ps, float64, MPACalculator (CHGNet).

    python benchmarks/nve_drift.py [--steps 5000]

Reports the total-energy drift (end - start, and a linear fit over the run)
per atom; the goal is < 1 meV/atom over 5 ps.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from ase.build import bulk

from common import format_table, write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--timestep", type=float, default=1.0)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from mpa_ase import MPACalculator
    from mpa_ase.workflows import run_md

    calc = MPACalculator(backbone="chgnet", dtype="float64", device="cpu")
    atoms = bulk("Si", "diamond", 5.43, cubic=True) * (2, 2, 2)
    t0 = time.time()
    res = run_md(atoms, calc, ensemble="nve", temperature_K=300, timestep_fs=args.timestep, steps=args.steps,
                 interval=10, seed=0)
    wall = time.time() - t0
    n = len(atoms)
    slope = np.polyfit(res.times_fs, res.total_energy, 1)[0]  # eV/fs
    row = {"n_atoms": n, "steps": args.steps, "timestep_fs": args.timestep,
           "drift_end_minus_start_meV_per_atom": res.drift_meV_per_atom,
           "drift_fit_meV_per_atom_per_ps": 1e3 * slope * 1000 / n,
           "etot_std_meV_per_atom": 1e3 * float(np.std(res.total_energy)) / n,
           "mean_T_K": float(np.mean(res.temperature[len(res.temperature) // 2:])),
           "rebuild_fraction": calc.verlet.rebuild_fraction, "wall_s": wall}
    table = format_table([row], list(row))
    print(table)
    write_results("nve_drift", [row], table)


if __name__ == "__main__":
    main()
