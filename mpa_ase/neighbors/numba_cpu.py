"""Numba cell-list neighbour search for the CPU.

Atoms are wrapped into the cell, binned on a grid in fractional coordinates
(see :func:`~mpa_ase.neighbors.geometry.bin_grid`), and each atom scans the
bins within reach, each reached bin standing for one periodic image. Two
passes (count, then fill) keep the output exact-sized and the work parallel
over atoms without locks; the result is deterministic for a given input.
"""

from __future__ import annotations

import numba
import numpy as np

from mpa_ase.neighbors.geometry import CellInfo, bin_grid


@numba.njit(cache=True, inline="always")
def _floordiv(a, n):
    q = a // n
    return q, a - q * n


@numba.njit(cache=True, parallel=True)
def _scan(pos, bin_of, bin_start, bin_atoms, nb, reach, pbc, cell, cutoff2, counts, out_start,
          out_i, out_j, out_s, fill):
    n = pos.shape[0]
    for i in numba.prange(n):
        bx = bin_of[i, 0]
        by = bin_of[i, 1]
        bz = bin_of[i, 2]
        xi = pos[i, 0]
        yi = pos[i, 1]
        zi = pos[i, 2]
        c = 0
        w = out_start[i] if fill else 0
        for dx in range(-reach[0], reach[0] + 1):
            sx, cx = _floordiv(bx + dx, nb[0])
            if sx != 0 and not pbc[0]:
                continue
            for dy in range(-reach[1], reach[1] + 1):
                sy, cy = _floordiv(by + dy, nb[1])
                if sy != 0 and not pbc[1]:
                    continue
                for dz in range(-reach[2], reach[2] + 1):
                    sz, cz = _floordiv(bz + dz, nb[2])
                    if sz != 0 and not pbc[2]:
                        continue
                    ox = sx * cell[0, 0] + sy * cell[1, 0] + sz * cell[2, 0]
                    oy = sx * cell[0, 1] + sy * cell[1, 1] + sz * cell[2, 1]
                    oz = sx * cell[0, 2] + sy * cell[1, 2] + sz * cell[2, 2]
                    b = (cx * nb[1] + cy) * nb[2] + cz
                    self_image = sx == 0 and sy == 0 and sz == 0
                    for p in range(bin_start[b], bin_start[b + 1]):
                        j = bin_atoms[p]
                        ddx = pos[j, 0] - xi + ox
                        ddy = pos[j, 1] - yi + oy
                        ddz = pos[j, 2] - zi + oz
                        if ddx * ddx + ddy * ddy + ddz * ddz < cutoff2:
                            if self_image and j == i:
                                continue
                            if fill:
                                out_i[w] = i
                                out_j[w] = j
                                out_s[w, 0] = sx
                                out_s[w, 1] = sy
                                out_s[w, 2] = sz
                                w += 1
                            else:
                                c += 1
        if not fill:
            counts[i] = c


def neighbor_list_numba(
    positions: np.ndarray, info: CellInfo, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos = np.ascontiguousarray(positions, dtype=np.float64)
    n = len(pos)
    if n == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z.copy(), np.zeros((0, 3), dtype=np.int64)
    frac = pos @ info.inverse
    offsets = np.where(info.pbc, np.floor(frac), 0.0)
    frac = frac - offsets
    wrapped = np.ascontiguousarray(frac @ info.cell)
    grid = bin_grid(frac.min(axis=0), frac.max(axis=0), info, cutoff, n)
    lo, width, nb, reach = grid.lo, grid.width, grid.nb, grid.reach
    scaled = (frac - lo) / np.where(width > 0, width, 1.0)
    bin_of = np.clip(np.floor(scaled * nb), 0, nb - 1).astype(np.int64)
    flat = (bin_of[:, 0] * nb[1] + bin_of[:, 1]) * nb[2] + bin_of[:, 2]
    order = np.argsort(flat, kind="stable").astype(np.int64)
    bin_start = np.zeros(int(np.prod(nb)) + 1, dtype=np.int64)
    np.cumsum(np.bincount(flat, minlength=int(np.prod(nb))), out=bin_start[1:])
    pbc = info.pbc.astype(np.bool_)
    counts = np.zeros(n, dtype=np.int64)
    dummy_i = np.zeros(0, dtype=np.int64)
    dummy_s = np.zeros((0, 3), dtype=np.int64)
    cell = np.ascontiguousarray(info.cell)
    _scan(wrapped, bin_of, bin_start, order, nb, reach, pbc, cell, cutoff * cutoff, counts,
          counts, dummy_i, dummy_i, dummy_s, False)
    out_start = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=out_start[1:])
    total = int(out_start[-1])
    out_i = np.empty(total, dtype=np.int64)
    out_j = np.empty(total, dtype=np.int64)
    out_s = np.empty((total, 3), dtype=np.int64)
    _scan(wrapped, bin_of, bin_start, order, nb, reach, pbc, cell, cutoff * cutoff, counts,
          out_start, out_i, out_j, out_s, True)
    off = offsets.astype(np.int64)
    out_s += off[out_i] - off[out_j]
    return out_i, out_j, out_s
