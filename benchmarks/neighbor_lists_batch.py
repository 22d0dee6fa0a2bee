"""Neighbour lists of many small cells: one Numba call for the whole batch
(neighbor_list_small_batch, as AtomsGraph.from_atoms uses it) vs one call per
cell (ours and vesin's), same cells, one process run, single thread.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/neighbor_lists_batch.py
    python benchmarks/neighbor_lists_batch.py --n 1000 --cutoff 6.0

Cells: matcalc's WBM structures of 2-16 atoms (real crystals). Every list is
checked equal to the per-cell list before timing.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from common import format_table, median, write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--cutoff", type=float, nargs="+", default=[5.0, 6.0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from mpa_ase.data.dft import load_wbm
    from mpa_ase.neighbors import neighbor_list, sort_pairs
    from mpa_ase.neighbors.geometry import complete_cell
    from mpa_ase.neighbors.numba_cpu import neighbor_list_small_batch

    cells = [s.atoms for s in load_wbm(seed=0) if 2 <= len(s.atoms) <= 16][: args.n]
    pos = np.concatenate([a.positions for a in cells])
    full = np.stack([complete_cell(a.cell.array, a.pbc) for a in cells])
    pbcs = np.stack([a.pbc for a in cells])
    n_atoms = np.array([len(a) for a in cells])
    try:
        import vesin
    except ImportError:
        vesin = None
    rows = []
    for cutoff in args.cutoff:
        i, j, s, per = neighbor_list_small_batch(pos, full, pbcs, n_atoms, cutoff)  # compile + check
        starts = np.concatenate([[0], np.cumsum(n_atoms)[:-1]])
        bounds = np.concatenate([[0], np.cumsum(per)])
        for k, a in enumerate(cells):
            sl = slice(bounds[k], bounds[k + 1])
            got = sort_pairs(i[sl] - starts[k], j[sl] - starts[k], s[sl])
            ref = sort_pairs(*neighbor_list(a.positions, a.cell.array, a.pbc, cutoff))
            assert all(np.array_equal(x, y) for x, y in zip(got, ref)), k
        t_batch, t_loop, t_vesin = [], [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            neighbor_list_small_batch(pos, full, pbcs, n_atoms, cutoff)
            t_batch.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for a in cells:
                neighbor_list(a.positions, a.cell.array, a.pbc, cutoff)
            t_loop.append(time.perf_counter() - t0)
            if vesin is not None:
                nl = vesin.NeighborList(cutoff=cutoff, full_list=True)
                t0 = time.perf_counter()
                for a in cells:
                    nl.compute(a.positions, a.cell.array, True, "ijS")
                t_vesin.append(time.perf_counter() - t0)
        row = {"n_cells": len(cells), "atoms": int(n_atoms.sum()), "cutoff_A": cutoff, "pairs": int(len(i)),
               "one_call_s": median(t_batch), "ours_per_cell_s": median(t_loop),
               "speedup_vs_ours_per_cell": median(t_loop) / median(t_batch)}
        if t_vesin:
            row["vesin_per_cell_s"] = median(t_vesin)
            row["speedup_vs_vesin_per_cell"] = median(t_vesin) / median(t_batch)
        rows.append(row)
        print(row, flush=True)
    table = format_table(rows, list(rows[0]))
    print(table)
    print(f"written {write_results('neighbor_lists_batch', rows, table)}")


if __name__ == "__main__":
    main()
