"""MD loop with Verlet-skin neighbour reuse vs rebuilding every step.

    python benchmarks/md_verlet.py                 # Cu and Si, 300 K, 1 fs, 1,000 steps
    python benchmarks/md_verlet.py --steps 200     # quicker

Both runs start from the same atoms and velocities (NVE, velocity Verlet) with
the default backbone; reported: wall time of each loop and their ratio, the
fraction of steps that rebuilt the list, the share of a step spent building
graphs, and the largest force difference between the reused list and a fresh
build along the skin run (checked every 50 steps, outside the timed loop).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from ase import units
from ase.build import bulk
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

from common import format_table, write_results

SYSTEMS = {
    "Cu": lambda: bulk("Cu", "fcc", 3.61, cubic=True) * (3, 3, 3),
    "Si": lambda: bulk("Si", "diamond", 5.43, cubic=True) * (2, 2, 2),
}


def run(atoms, calc, steps: int, probe=None):
    atoms.calc = calc
    md = VelocityVerlet(atoms, 1.0 * units.fs)
    worst = [0.0]
    if probe is not None:
        def check():
            other = atoms.copy()
            other.calc = probe
            worst[0] = max(worst[0], float(np.abs(atoms.get_forces() - other.get_forces()).max()))
        md.attach(check, interval=50)
    t0 = time.perf_counter()
    md.run(steps)
    return time.perf_counter() - t0, worst[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--skin", type=float, default=1.0)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from mpa_ase import MPACalculator

    rows = []
    for name in args.systems:
        start = SYSTEMS[name]()
        MaxwellBoltzmannDistribution(start, temperature_K=300, rng=np.random.default_rng(0))
        reuse = MPACalculator(skin=args.skin, device="cpu")
        fresh = MPACalculator(skin=0.0, device="cpu")
        probe = MPACalculator(skin=0.0, device="cpu")
        a = start.copy()
        a.set_velocities(start.get_velocities())
        t_skin, worst = run(a, reuse, args.steps, probe=None)
        b = start.copy()
        b.set_velocities(start.get_velocities())
        t_fresh, _ = run(b, fresh, args.steps)
        # accuracy along a skin trajectory, outside the timed loops
        c = start.copy()
        c.set_velocities(start.get_velocities())
        checker = MPACalculator(skin=args.skin, device="cpu")
        _, worst = run(c, checker, args.steps, probe=probe)
        graph_t = []
        for _ in range(20):
            t0 = time.perf_counter()
            fresh.build_graph([b])
            graph_t.append(time.perf_counter() - t0)
        row = {
            "system": name, "n_atoms": len(start), "steps": args.steps, "skin_A": args.skin,
            "time_skin_s": t_skin, "time_rebuild_s": t_fresh, "ratio": t_skin / t_fresh,
            "rebuild_fraction": reuse.verlet.rebuild_fraction,
            "graph_build_ms": 1e3 * float(np.median(graph_t)),
            "step_ms": 1e3 * t_fresh / args.steps,
            "max_dF_vs_fresh_eV_per_A": worst,
        }
        rows.append(row)
        print(f"{name}: skin {t_skin:.1f}s vs rebuild {t_fresh:.1f}s (ratio {row['ratio']:.3f}); "
              f"rebuilt on {100 * row['rebuild_fraction']:.1f}% of steps; graph build "
              f"{row['graph_build_ms']:.2f} ms of a {row['step_ms']:.1f} ms step; max dF {worst:.1e} eV/Å",
              flush=True)
    table = format_table(rows, list(rows[0]))
    print(table)
    print(f"written {write_results('md_verlet', rows, table)}")


if __name__ == "__main__":
    main()
