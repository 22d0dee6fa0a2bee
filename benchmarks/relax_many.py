"""Batched in-flight relaxation (workflows.relax_many) vs looping workflows.relax,
same structures, same calculator, one process run.

    python benchmarks/relax_many.py                     # 1000 WBM cells of 2-16 atoms
    python benchmarks/relax_many.py --n 200 --max-atoms 1024

Structures: matcalc's WBM set (real PBE-relaxed cells, 2-16 atoms), cell
relaxation (FrechetCellFilter) with FIRE to fmax 0.05 eV/Å, at most 300 steps.
The batched side's time includes relax_many's probe of the atoms per call
(printed as max_atoms and probe_s). The two sides take turns over
``--rounds`` consecutive slices of the structures (batched, then the loop,
slice after slice), so that a change of machine load during the run falls
on both. Reports structures/s of each side, the ratio, the largest
difference of the final energies per atom, and the peak resident memory of
the process after the first batched slice (ru_maxrss) and at the end.
"""

from __future__ import annotations

import argparse
import resource
import time
import warnings

import numpy as np

from common import format_table, write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--max-atoms", type=int, default=None, help="atoms per model call (default: relax_many's)")
    ap.add_argument("--fmax", type=float, default=0.05)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5, help="slices the two sides take turns over")
    ap.add_argument("--name", default="relax_many", help="results file name")
    ap.add_argument("--dtype", default=None, help="the calculator's dtype (default: the backbone's, float32)")
    args = ap.parse_args()
    if args.rounds < 1 or args.n < args.rounds:
        ap.error(f"--rounds must be between 1 and --n ({args.n}), got {args.rounds}")
    warnings.filterwarnings("ignore")

    from mpa_ase import MPACalculator
    from mpa_ase.data.dft import load_wbm
    from mpa_ase.workflows import relax, relax_many
    from mpa_ase.workflows.relax import default_max_atoms

    pool = [s.atoms for s in load_wbm(seed=0) if 2 <= len(s.atoms) <= 16]
    structures = pool[: args.n]
    calc = MPACalculator(device="cpu", dtype=args.dtype)
    relax_many(structures[:4], calc, fmax=args.fmax, steps=5)  # warm-up both paths
    relax(structures[0], calc, fmax=args.fmax, steps=5)

    t0 = time.perf_counter()
    max_atoms = args.max_atoms or default_max_atoms(calc, structures)  # what relax_many would probe
    t_probe = time.perf_counter() - t0
    t_batched, t_single, batched, single, rss_batched = t_probe, 0.0, [], [], None
    for piece in np.array_split(np.arange(len(structures)), args.rounds):
        part = [structures[k] for k in piece]
        t0 = time.perf_counter()
        batched += relax_many(part, calc, fmax=args.fmax, steps=args.steps, max_atoms=max_atoms, progress=True)
        t_batched += time.perf_counter() - t0
        rss_batched = rss_batched or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        single += [relax(a, calc, fmax=args.fmax, steps=args.steps) for a in part]
        t_single += time.perf_counter() - t0
    rss_all = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    loop_n = len(structures)
    de = np.array([abs(a.energy - b.energy) / len(a.atoms) for a, b in zip(single, batched)])
    same_steps = sum(a.steps == b.steps for a, b in zip(single, batched))
    row = {
        "n_structures": len(structures), "rounds": args.rounds,
        "atoms_min_max": f"{min(len(a) for a in structures)}-{max(len(a) for a in structures)}",
        "max_atoms": max_atoms, "probe_s": t_probe,
        "batched_structures_per_s": len(structures) / t_batched,
        "loop_structures_per_s": loop_n / t_single,
        "speedup": (len(structures) / t_batched) / (loop_n / t_single),
        "max_dE_meV_per_atom": 1000 * float(de.max()),
        "median_dE_meV_per_atom": 1000 * float(np.median(de)),
        "n_dE_over_1meV": int((de > 1e-3).sum()),
        "same_step_count": f"{same_steps}/{loop_n}",
        "converged_batched": sum(r.converged for r in batched),
        "peak_rss_after_batched_MiB": rss_batched, "peak_rss_after_loop_MiB": rss_all,
    }
    table = format_table([row], list(row))
    print(table)
    # the structures whose relaxations ended apart: step counts and whether both converged
    apart = [{"index": k, "n_atoms": len(a.atoms), "dE_meV_per_atom": 1000 * float(d), "steps_loop": a.steps,
              "steps_batched": b.steps, "converged_loop": a.converged, "converged_batched": b.converged}
             for k, (a, b, d) in enumerate(zip(single, batched, de)) if d > 1e-3]
    print(f"written {write_results(args.name, [row], table, extra={'apart': apart})}")


if __name__ == "__main__":
    main()
