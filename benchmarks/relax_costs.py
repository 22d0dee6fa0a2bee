"""Where a small-cell relaxation step spends its time, ours beside the peer in
one process run:

1. the cell filter: ASE's ``FrechetCellFilter`` vs our ``FastFrechetCellFilter``
   doing what a FIRE step asks (forces twice, positions once, new positions),
   with the forces and stress fixed so only the filter is timed;
2. the model: one ``MPACalculator`` call per structure vs ``calculate_batch``
   with a given number of atoms per call (energy, forces, stress), the time
   per structure; this bounds what batching structures can gain.

    python benchmarks/relax_costs.py                  # 200 WBM cells of 2-16 atoms
    python benchmarks/relax_costs.py --n 100 --steps 10 --atoms-per-call 32 64 256

The two sides of each part take turns (structure by structure for the
filter, slice by slice for the model) so that load changes hit both.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from common import format_table, write_results


class _Fixed(Calculator):
    """The same forces and stress for any configuration: times the filter alone."""

    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self, n: int, rng):
        super().__init__()
        self.fixed = {"energy": 0.0, "forces": rng.normal(0, 0.1, (n, 3)), "stress": rng.normal(0, 0.005, 6)}

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = {k: np.array(v, copy=True) if k != "energy" else v for k, v in self.fixed.items()}


def filter_seconds(kind, structures, steps: int, seed: int) -> float:
    from ase.filters import FrechetCellFilter

    from mpa_ase.workflows.relax import FastFrechetCellFilter

    cls = FrechetCellFilter if kind == "ase" else FastFrechetCellFilter
    total = 0.0
    for k, start in enumerate(structures):
        rng = np.random.default_rng([seed, k])
        atoms = start.copy()
        atoms.calc = _Fixed(len(atoms), rng)
        moves = rng.normal(0, 0.01, (steps, len(atoms) + 3, 3))
        t0 = time.perf_counter()
        filt = cls(atoms)
        for move in moves:
            filt.get_forces()  # convergence check
            filt.get_forces()  # the step's forces
            filt.set_positions(filt.get_positions() + move)
        total += time.perf_counter() - t0
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="WBM cells of 2-16 atoms")
    ap.add_argument("--steps", type=int, default=20, help="filter steps per structure")
    ap.add_argument("--atoms-per-call", type=int, nargs="+", default=[32, 64, 256])
    ap.add_argument("--rounds", type=int, default=4, help="slices the model sides take turns over")
    args = ap.parse_args()
    if args.n < 1 or args.steps < 1 or args.rounds < 1 or args.n < args.rounds:
        ap.error("--n, --steps and --rounds must be >= 1, and --n >= --rounds")
    if any(a < 1 for a in args.atoms_per_call):
        ap.error("--atoms-per-call values must be >= 1")
    warnings.filterwarnings("ignore")
    from mpa_ase import MPACalculator
    from mpa_ase.data.dft import load_wbm

    structures = [s.atoms for s in load_wbm(seed=0) if 2 <= len(s.atoms) <= 16][: args.n]
    rows = []

    # 1. the filter, sides alternating structure by structure
    filter_s = {"ase": 0.0, "ours": 0.0}
    filter_seconds("ours", structures[:2], 2, 0)  # imports and warm-up
    filter_seconds("ase", structures[:2], 2, 0)
    for k, atoms in enumerate(structures):
        for kind in ("ase", "ours") if k % 2 == 0 else ("ours", "ase"):
            filter_s[kind] += filter_seconds(kind, [atoms], args.steps, k)
    n_steps = len(structures) * args.steps
    rows.append({"part": "cell filter per step", "peer": "ASE FrechetCellFilter", "peer_ms": 1e3 * filter_s["ase"] / n_steps,
                 "ours": "FastFrechetCellFilter", "ours_ms": 1e3 * filter_s["ours"] / n_steps,
                 "ratio": filter_s["ours"] / filter_s["ase"]})

    # 2. the model: one call per structure vs batches, slices alternating
    calc = MPACalculator(device="cpu")
    props = ["energy", "forces", "stress"]
    calc.calculate_batch(structures[:8], properties=props)  # warm-up
    for atoms in structures[:4]:
        calc.calculate_batch([atoms], properties=props)

    def batches(part, max_atoms):
        group, n = [], 0
        for atoms in part:
            if group and n + len(atoms) > max_atoms:
                yield group
                group, n = [], 0
            group.append(atoms)
            n += len(atoms)
        if group:
            yield group

    single = 0.0
    batched = dict.fromkeys(args.atoms_per_call, 0.0)
    for piece in np.array_split(np.arange(len(structures)), args.rounds):
        part = [structures[k] for k in piece]
        t0 = time.perf_counter()
        for atoms in part:
            calc.calculate_batch([atoms], properties=props)
        single += time.perf_counter() - t0
        for max_atoms in args.atoms_per_call:
            t0 = time.perf_counter()
            for group in batches(part, max_atoms):
                calc.calculate_batch(group, properties=props)
            batched[max_atoms] += time.perf_counter() - t0
    n = len(structures)
    for max_atoms, seconds in batched.items():
        rows.append({"part": f"model per structure, {max_atoms} atoms per call", "peer": "one call per structure",
                     "peer_ms": 1e3 * single / n, "ours": "calculate_batch", "ours_ms": 1e3 * seconds / n,
                     "ratio": seconds / single})
    sizes = [len(a) for a in structures]
    table = format_table(rows, list(rows[0]))
    table += (f"\n\n{n} WBM cells of {min(sizes)}-{max(sizes)} atoms (mean {np.mean(sizes):.1f}); filter: "
              f"{args.steps} steps per structure with fixed forces and stress; model: energy, forces and stress, "
              "CHGNet default model, float32. ratio = ours / peer time.")
    print(table)
    write_results("relax_costs", rows, table)


if __name__ == "__main__":
    main()
