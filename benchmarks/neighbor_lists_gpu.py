"""Neighbour lists on a CUDA GPU: Triton kernel vs the torch reference (and
vesin's CUDA path when installed), same systems as neighbor_lists.py.

    python benchmarks/neighbor_lists_gpu.py --sizes 4096 32768 100000

Needs a CUDA device; exits with a message otherwise. Results are checked
against the Numba list on the CPU before timing.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from common import format_table, median, write_results
from neighbor_lists import SYSTEMS


def timed_cuda(fn, repeats):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 32768, 100000])
    parser.add_argument("--cutoff", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run this on a GPU machine")
    from mpa_ase.neighbors import neighbor_list

    rows = []
    for name, make in SYSTEMS.items():
        for n in args.sizes:
            pos, cell, pbc = make(n)
            ref = neighbor_list(pos, cell, pbc, args.cutoff, backend="numba", sort=True)
            pos_t = torch.from_numpy(pos).cuda()
            cell_t = torch.from_numpy(cell).cuda()
            row = {"system": name, "n_atoms": len(pos), "pairs": len(ref[0])}
            for backend in ["triton", "torch"]:
                if backend == "torch" and len(pos) > 32768:
                    continue  # O(N^2) reference
                t, out = timed_cuda(lambda: neighbor_list(pos_t, cell_t, pbc, args.cutoff, backend=backend),
                                    args.repeats)
                i, j, s = (x.cpu().numpy() for x in out)
                order = np.lexsort((s[:, 2], s[:, 1], s[:, 0], j, i))
                assert np.array_equal(i[order], ref[0]) and np.array_equal(s[order], ref[2]), backend
                row[f"{backend}_ms"] = 1e3 * t
                row[f"{backend}_ns_per_pair"] = 1e9 * t / max(1, len(i))
            rows.append(row)
            print(row, flush=True)
    table = format_table(rows, list(dict.fromkeys(k for r in rows for k in r)))
    print(table)
    print(f"written {write_results('neighbor_lists_gpu', rows, table, {'gpu': torch.cuda.get_device_name()})}")


if __name__ == "__main__":
    main()
