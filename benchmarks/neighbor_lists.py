"""Neighbour-list speed: ours (Numba) against vesin, matscipy, pymatgen and ASE.

    python benchmarks/neighbor_lists.py                      # full: 64 ... 100,000 atoms
    python benchmarks/neighbor_lists.py --sizes 64 4096 --quick

Systems: fcc Cu; the same Cu crystal in a strongly skewed (unimodular
transformed) triclinic cell; a non-periodic cluster; a random amorphous box.
For each: median wall time of --repeats calls (full list, i/j/shift output),
ns per pair, ratio to vesin and to the best peer, peak traced memory; the
first call of ours (Numba JIT compile or cache load) is reported apart. Run
once per thread count (--threads 1 2); peers are single-threaded.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from common import format_table, median, write_results

DENSITY = 4 / 3.61**3  # atoms per Å^3 of fcc Cu


def fcc_cu(n: int, skew: bool = False):
    k = max(1, round((n / 4) ** (1 / 3)))
    a = 3.61
    base = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    grid = np.stack(np.meshgrid(*[np.arange(k)] * 3, indexing="ij"), -1).reshape(-1, 3)
    pos = ((grid[:, None, :] + base[None]) * a).reshape(-1, 3)
    rng = np.random.default_rng(n)
    pos += rng.normal(scale=0.05, size=pos.shape)
    cell = np.eye(3) * a * k
    if skew:
        cell = np.array([[1, 0, 0], [2, 1, 0], [1, 2, 1]]) @ cell  # same lattice, skewed cell
    return pos, cell, np.array([True] * 3)


def amorphous(n: int):
    rng = np.random.default_rng(n + 1)
    length = (n / DENSITY) ** (1 / 3)
    return rng.uniform(0, length, (n, 3)), np.eye(3) * length, np.array([True] * 3)


def cluster(n: int):
    rng = np.random.default_rng(n + 2)
    radius = (3 * n / (4 * np.pi * DENSITY)) ** (1 / 3)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1)[:, None]
    pos = d * radius * rng.uniform(0, 1, (n, 1)) ** (1 / 3)
    return pos, np.zeros((3, 3)), np.array([False] * 3)


SYSTEMS = {"fcc": fcc_cu, "skewed": lambda n: fcc_cu(n, skew=True), "cluster": cluster, "amorphous": amorphous}


def ours(pos, cell, pbc, rc):
    from mpa_ase.neighbors import neighbor_list

    return neighbor_list(pos, cell, pbc, rc, backend="numba")


def vesin_nl(pos, cell, pbc, rc):
    import vesin

    return vesin.NeighborList(cutoff=rc, full_list=True).compute(pos, cell, pbc.tolist(), "ijS")


def pymatgen_nl(pos, cell, pbc, rc):
    from pymatgen.optimization.neighbors import find_points_in_spheres

    if not pbc.any():  # pymatgen needs a lattice even without periodicity
        span = pos.max(0) - pos.min(0) + 2 * rc
        cell = np.diag(span)
    return find_points_in_spheres(pos, pos, rc, pbc.astype(np.int64), np.ascontiguousarray(cell), tol=1e-8)


def matscipy_nl(pos, cell, pbc, rc):
    from matscipy.neighbours import neighbour_list

    if not pbc.any():
        span = pos.max(0) - pos.min(0) + 2 * rc
        cell = np.diag(span)
        pos = pos - pos.min(0) + rc
    return neighbour_list("ijS", positions=pos, cell=cell, pbc=pbc, cutoff=rc)


def ase_nl(pos, cell, pbc, rc):
    from ase.neighborlist import primitive_neighbor_list

    return primitive_neighbor_list("ijS", pbc, cell, pos, rc, self_interaction=False)


PEERS = {"vesin": vesin_nl, "pymatgen": pymatgen_nl, "matscipy": matscipy_nl, "ase": ase_nl}
PEER_MAX_ATOMS = {"ase": 4096, "matscipy": 32768}


def measure(fn, args, repeats: int) -> tuple[float, int, float]:
    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t0)
        if times[-1] > 2.0:  # a slow peer (ASE on big systems): one timing is enough
            break
    peak = float("nan")
    if times[-1] < 2.0:
        tracemalloc.start()
        fn(*args)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return median(times), len(out[0]), peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512, 4096, 32768, 100000])
    parser.add_argument("--cutoffs", type=float, nargs="+", default=[5.0, 6.0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS))
    parser.add_argument("--peers", nargs="+", default=list(PEERS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 repeats, rc 6 only")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.cutoffs = 3, [6.0]

    import numba

    pos, cell, pbc = fcc_cu(32)
    t0 = time.perf_counter()
    ours(pos, cell, pbc, 5.0)
    first_call = time.perf_counter() - t0
    print(f"first call of ours (JIT compile or cache load): {first_call:.2f} s")

    rows = []
    for threads in args.threads:
        numba.set_num_threads(threads)
        for name in args.systems:
            for n in args.sizes:
                pos, cell, pbc = SYSTEMS[name](n)
                for rc in args.cutoffs:
                    reps = args.repeats if len(pos) <= 32768 else max(2, args.repeats // 2)
                    t_ours, pairs, mem_ours = measure(ours, (pos, cell, pbc, rc), reps)
                    row = {"threads": threads, "system": name, "n_atoms": len(pos), "cutoff": rc, "pairs": pairs,
                           "ours_s": t_ours, "ours_ns_per_pair": 1e9 * t_ours / max(pairs, 1),
                           "ours_peak_MiB": mem_ours}
                    if threads == args.threads[0]:  # peers are single-threaded: time them once
                        for peer in args.peers:
                            if len(pos) > PEER_MAX_ATOMS.get(peer, 10**9):
                                continue
                            try:
                                t, p, mem = measure(PEERS[peer], (pos, cell, pbc, rc), reps)
                            except Exception as err:  # a peer failing is a result too
                                row[f"{peer}_error"] = type(err).__name__
                                continue
                            row[f"{peer}_s"] = t
                            row[f"{peer}_pairs"] = p
                            row[f"{peer}_peak_MiB"] = mem
                    else:
                        prev = next(r for r in rows if r["threads"] == args.threads[0] and r["system"] == name
                                    and r["n_atoms"] == len(pos) and r["cutoff"] == rc)
                        for k, v in prev.items():
                            if k.split("_")[0] in PEERS:
                                row[k] = v
                    peers_t = {p: row[f"{p}_s"] for p in args.peers if f"{p}_s" in row}
                    if "vesin_s" in row:
                        row["ratio_to_vesin"] = t_ours / row["vesin_s"]
                    if peers_t:
                        best = min(peers_t, key=peers_t.get)
                        row["best_peer"] = best
                        row["ratio_to_best_peer"] = t_ours / peers_t[best]
                    rows.append(row)
                    print(f"threads={threads} {name:9s} N={len(pos):6d} rc={rc}: ours {t_ours * 1e3:8.2f} ms "
                          f"({row['ours_ns_per_pair']:.1f} ns/pair, {pairs} pairs) | "
                          + " ".join(f"{p} {t * 1e3:.2f} ms" for p, t in peers_t.items())
                          + (f" | ratio to vesin {row['ratio_to_vesin']:.3f}, to best ({row.get('best_peer')}) "
                             f"{row.get('ratio_to_best_peer', float('nan')):.3f}" if "vesin_s" in row else ""),
                          flush=True)
    columns = ["threads", "system", "n_atoms", "cutoff", "pairs", "ours_s", "ours_ns_per_pair", "vesin_s",
               "pymatgen_s", "matscipy_s", "ase_s", "ratio_to_vesin", "best_peer", "ratio_to_best_peer",
               "ours_peak_MiB", "vesin_peak_MiB"]
    table = format_table(rows, columns)
    path = write_results("neighbor_lists", rows, table, {"first_call_s": first_call})
    print(f"written {path}")


if __name__ == "__main__":
    main()
