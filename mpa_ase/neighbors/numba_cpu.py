"""Numba cell-list neighbour search for the CPU.

Atoms are wrapped into the cell, binned on a grid of cutoff-thick bins in
fractional coordinates (see :func:`~mpa_ase.neighbors.geometry.bin_grid`) and
stored in bin order, so the inner loop streams contiguous memory. The loop
runs over pairs of bins: for each bin, the forward half of the bin offsets
within reach (each reached bin standing for one periodic image), and every
pair of atoms between the two bins. The image's shift is worked out once per
bin pair, not once per atom (with bins half the cutoff thick and an atom or
two in each, that per-visit work had been most of the time), and every pair
found is written in both directions: half the distance work of a full scan.
One pass, parallel over chunks of whole bins, each chunk writing into its own
slice sized from the local density; a chunk that overflows its slice is
scanned again straight into its final place (the whole scan reruns at exact
sizes only when all slices together are too small). Deterministic.
"""

from __future__ import annotations

import numba
import numpy as np

from mpa_ase.neighbors.geometry import BINS_PER_CUTOFF, CellInfo, bin_grid

_CHUNKS_PER_THREAD = 4
_MARGIN = 1.15  # slice size over the density estimate (3x3x3-bin local density: within a few % on crystals)
# Bins one cutoff thick: 14 bin visits per bin instead of ~63 with half-cutoff
# bins, for 1.7x the distance checks; measured 1.5-2x faster at 4k-32k atoms.
_SCAN_BINS_PER_CUTOFF = 1.0
_PARALLEL_MIN_PAIRS = 50_000  # ~1,200 atoms of a metal at 5 Å


@numba.njit(cache=True, nogil=True)
def _scan_bins(b0, b1, ps, ids, offop, bin_start, nb, reach, pbc, cell, op, cutoff2,
               out_i, out_j, out_s, w0, cap):
    w = 0
    nyz = nb[1] * nb[2]
    for b in range(b0, b1):
        p0 = bin_start[b]
        p1 = bin_start[b + 1]
        if p0 == p1:
            continue
        bx = b // nyz
        by = (b - bx * nyz) // nb[2]
        bz = b - bx * nyz - by * nb[2]
        for dx in range(0, reach[0] + 1):
            qx = bx + dx
            sx = qx // nb[0]
            cx = qx - sx * nb[0]
            if sx != 0 and not pbc[0]:
                continue
            for dy in range(-reach[1] if dx > 0 else 0, reach[1] + 1):
                qy = by + dy
                sy = qy // nb[1]
                cy = qy - sy * nb[1]
                if sy != 0 and not pbc[1]:
                    continue
                for dz in range(-reach[2] if (dx > 0 or dy > 0) else 0, reach[2] + 1):
                    qz = bz + dz
                    sz = qz // nb[2]
                    cz = qz - sz * nb[2]
                    if sz != 0 and not pbc[2]:
                        continue
                    b2 = (cx * nb[1] + cy) * nb[2] + cz
                    q0 = bin_start[b2]
                    q1 = bin_start[b2 + 1]
                    if q0 == q1:
                        continue
                    ox = sx * cell[0, 0] + sy * cell[1, 0] + sz * cell[2, 0]
                    oy = sx * cell[0, 1] + sy * cell[1, 1] + sz * cell[2, 1]
                    oz = sx * cell[0, 2] + sy * cell[1, 2] + sz * cell[2, 2]
                    # this image's shift in the caller's cell
                    tx0 = sx * op[0, 0] + sy * op[1, 0] + sz * op[2, 0]
                    ty0 = sx * op[0, 1] + sy * op[1, 1] + sz * op[2, 1]
                    tz0 = sx * op[0, 2] + sy * op[1, 2] + sz * op[2, 2]
                    own = dx == 0 and dy == 0 and dz == 0
                    for p in range(p0, p1):
                        xp = ps[p, 0] - ox
                        yp = ps[p, 1] - oy
                        zp = ps[p, 2] - oz
                        for q in range(p + 1 if own else q0, q1):  # own bin, own image: each pair once
                            ddx = ps[q, 0] - xp
                            ddy = ps[q, 1] - yp
                            ddz = ps[q, 2] - zp
                            if ddx * ddx + ddy * ddy + ddz * ddz >= cutoff2:
                                continue
                            if w + 2 <= cap:
                                k = w0 + w
                                ip = ids[p]
                                iq = ids[q]
                                # plus both atoms' unwrapping into the cell
                                tx = tx0 + offop[p, 0] - offop[q, 0]
                                ty = ty0 + offop[p, 1] - offop[q, 1]
                                tz = tz0 + offop[p, 2] - offop[q, 2]
                                out_i[k] = ip
                                out_j[k] = iq
                                out_s[k, 0] = tx
                                out_s[k, 1] = ty
                                out_s[k, 2] = tz
                                out_i[k + 1] = iq
                                out_j[k + 1] = ip
                                out_s[k + 1, 0] = -tx
                                out_s[k + 1, 1] = -ty
                                out_s[k + 1, 2] = -tz
                            w += 2
    return w


@numba.njit(cache=True, parallel=True)
def _scan_all(bounds, starts, caps, ps, ids, off, bin_start, nb, reach, pbc, cell, op, cutoff2,
              out_i, out_j, out_s, written):
    for c in numba.prange(len(caps)):
        written[c] = _scan_bins(bounds[c], bounds[c + 1], ps, ids, off, bin_start, nb, reach, pbc,
                                cell, op, cutoff2, out_i, out_j, out_s, starts[c], caps[c])


@numba.njit(cache=True)
def _scan_serial(bounds, starts, caps, ps, ids, off, bin_start, nb, reach, pbc, cell, op, cutoff2,
                 out_i, out_j, out_s, written):
    # One thread: no call into Numba's thread pool, which would start it (one
    # thread per core, whatever the user asked for) and leave it spinning.
    for c in range(len(caps)):
        written[c] = _scan_bins(bounds[c], bounds[c + 1], ps, ids, off, bin_start, nb, reach, pbc,
                                cell, op, cutoff2, out_i, out_j, out_s, starts[c], caps[c])


def thread_budget() -> int:
    """Threads the user allows: the smallest of Numba's setting, torch's
    (``torch.set_num_threads``, which follows ``OMP_NUM_THREADS``) and
    ``OMP_NUM_THREADS`` itself; never more than any of them."""
    import os
    import sys

    budget = numba.config.NUMBA_NUM_THREADS if not _pool_started() else numba.get_num_threads()
    if "torch" in sys.modules:
        budget = min(budget, sys.modules["torch"].get_num_threads())
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        budget = min(budget, int(omp))
    return max(1, int(budget))


def _pool_started() -> bool:
    try:
        from numba.np.ufunc import parallel as _parallel

        return bool(getattr(_parallel, "_is_initialized", False))
    except ImportError:  # pragma: no cover - numba internals moved
        return True


@numba.njit(cache=True)
def _place(starts, dest, written, skip, out_i, out_j, out_s):
    """Move each chunk's pairs from ``starts`` to ``dest`` in place, leaving the
    ``skip`` chunks alone. Destinations are disjoint and in chunk order, so a
    chunk's destination never covers another chunk's source: chunks moving
    right go last to first, copying backwards, then chunks moving left go
    first to last, copying forwards."""
    for c in range(len(starts) - 1, -1, -1):
        if skip[c] or dest[c] <= starts[c]:
            continue
        for k in range(written[c] - 1, -1, -1):
            out_i[dest[c] + k] = out_i[starts[c] + k]
            out_j[dest[c] + k] = out_j[starts[c] + k]
            for x in range(3):
                out_s[dest[c] + k, x] = out_s[starts[c] + k, x]
    for c in range(len(starts)):
        if skip[c] or dest[c] >= starts[c]:
            continue
        for k in range(written[c]):
            out_i[dest[c] + k] = out_i[starts[c] + k]
            out_j[dest[c] + k] = out_j[starts[c] + k]
            for x in range(3):
                out_s[dest[c] + k, x] = out_s[starts[c] + k, x]


def _flat_bins(frac: np.ndarray, grid) -> np.ndarray:
    nb = grid.nb
    scaled = (frac - grid.lo) / np.where(grid.width > 0, grid.width, 1.0)
    bin_of = np.clip(np.floor(scaled * nb), 0, nb - 1).astype(np.int64)
    return (bin_of[:, 0] * nb[1] + bin_of[:, 1]) * nb[2] + bin_of[:, 2]


def _expected_pairs(frac: np.ndarray, fmin: np.ndarray, fmax: np.ndarray, info: CellInfo,
                    cutoff: float) -> np.ndarray:
    """Each atom's expected neighbour count from the atoms in the 3x3x3 bins
    (half a cutoff thick) around it over their volume. The own bin alone
    overestimates twofold on lattices, where occupancies alternate; bins a
    cutoff thick underestimate up to 5x at a cluster's surface."""
    grid = bin_grid(fmin, fmax, info, cutoff, len(frac), BINS_PER_CUTOFF)
    flat = _flat_bins(frac, grid)
    occupancy = np.bincount(flat, minlength=int(np.prod(grid.nb)))
    spacing = 1.0 / np.linalg.norm(info.inverse, axis=0)
    thickness = np.where(grid.width > 0, grid.width * spacing / grid.nb, cutoff)
    bin_volume = float(np.prod(np.maximum(thickness, 1e-3)))
    sphere = 4.0 / 3.0 * np.pi * cutoff**3
    local = _box_sum(occupancy.reshape(tuple(grid.nb)), info.pbc).reshape(-1) / 27.0
    return local[flat] * (sphere / bin_volume)


def neighbor_list_numba(
    positions: np.ndarray, info: CellInfo, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos = np.ascontiguousarray(positions, dtype=np.float64)
    n = len(pos)
    # int32 where it fits: 20 bytes per pair instead of 40 (memory and write bandwidth)
    index = np.int32 if n < 2**31 - 1 else np.int64
    if n == 0:
        z = np.zeros(0, dtype=index)
        return z, z.copy(), np.zeros((0, 3), dtype=np.int32)
    frac = pos @ info.inverse
    offsets = np.where(info.pbc, np.floor(frac), 0.0)
    frac -= offsets
    fmin, fmax = frac.min(axis=0), frac.max(axis=0)
    grid = bin_grid(fmin, fmax, info, cutoff, n, _SCAN_BINS_PER_CUTOFF)
    nb = grid.nb
    flat = _flat_bins(frac, grid)
    order = np.argsort(flat, kind="stable")
    n_bins = int(np.prod(nb))
    bin_start = np.zeros(n_bins + 1, dtype=np.int64)
    np.cumsum(np.bincount(flat, minlength=n_bins), out=bin_start[1:])
    ps = np.ascontiguousarray((frac @ info.cell)[order])
    ids = order.astype(np.int64)
    op = info.to_input if info.to_input is not None else np.eye(3, dtype=np.int64)
    # each atom's unwrapping offset in the caller's cell, in bin order (no cache misses)
    off = np.ascontiguousarray((offsets.astype(np.int64) @ op)[order])

    expected = _expected_pairs(frac, fmin, fmax, info, cutoff)[order]
    # a parallel region costs a wake-up of the pool and, on a loaded machine,
    # waits for its slowest thread: not worth it for a list of a millisecond or less
    threads = thread_budget() if expected.sum() >= _PARALLEL_MIN_PAIRS else 1
    n_chunks = 1 if threads == 1 else max(1, min(n_bins, threads * _CHUNKS_PER_THREAD))
    # chunks of whole bins holding about equal numbers of atoms
    bounds = np.searchsorted(bin_start, np.linspace(0, n, n_chunks + 1), side="left").astype(np.int64)
    bounds[0], bounds[-1] = 0, n_bins
    atom_bounds = bin_start[bounds]
    csum = np.concatenate([[0.0], np.cumsum(expected)])
    caps = (_MARGIN * (csum[atom_bounds[1:]] - csum[atom_bounds[:-1]]) + 64).astype(np.int64) & ~np.int64(1)
    starts = np.concatenate([[0], np.cumsum(caps)[:-1]]).astype(np.int64)
    total_cap = int(caps.sum())
    out_i = np.empty(total_cap, dtype=index)
    out_j = np.empty(total_cap, dtype=index)
    out_s = np.empty((total_cap, 3), dtype=np.int32)
    written = np.zeros(n_chunks, dtype=np.int64)
    cell = np.ascontiguousarray(info.cell)
    pbc = info.pbc.astype(np.bool_)
    reach = grid.reach
    cutoff2 = float(cutoff) ** 2
    _scan(threads, bounds, starts, caps, ps, ids, off, bin_start, nb, reach, pbc, cell, op, cutoff2,
          out_i, out_j, out_s, written)

    if int(written.sum()) > total_cap:  # rare: denser than estimated overall; rescan at the exact sizes
        caps = np.maximum(caps, written)
        starts = np.concatenate([[0], np.cumsum(caps)[:-1]]).astype(np.int64)
        grown = int(caps.sum())
        out_i = np.empty(grown, dtype=index)
        out_j = np.empty(grown, dtype=index)
        out_s = np.empty((grown, 3), dtype=np.int32)
        _scan(threads, bounds, starts, caps, ps, ids, off, bin_start, nb, reach, pbc, cell, op, cutoff2,
              out_i, out_j, out_s, written)
    # Pairs move to their final, contiguous places. A chunk denser than its
    # slice (the others' slack holds its excess) is scanned again straight
    # into its place: no second buffer.
    overflow = written > caps
    dest = np.concatenate([[0], np.cumsum(written)[:-1]]).astype(np.int64)
    _place(starts, dest, written, overflow, out_i, out_j, out_s)
    for c in np.flatnonzero(overflow):
        _scan_bins(bounds[c], bounds[c + 1], ps, ids, off, bin_start, nb, reach, pbc, cell, op, cutoff2,
                   out_i, out_j, out_s, dest[c], written[c])
    total = int(written.sum())
    return out_i[:total], out_j[:total], out_s[:total]


def _box_sum(grid: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Sum over each bin's 3x3x3 neighbourhood (periodic along periodic axes, zeros beyond the others)."""
    out = grid.astype(np.float64)
    for axis in range(3):
        if pbc[axis] and out.shape[axis] >= 3:
            out = out + np.roll(out, 1, axis) + np.roll(out, -1, axis)
        elif pbc[axis]:  # 1-2 bins across a periodic axis: each neighbour bin is one of these
            out = out * 3.0 / out.shape[axis] if out.shape[axis] == 1 else out + np.roll(out, 1, axis) * 2
        else:
            padded = np.pad(out, [(1, 1) if k == axis else (0, 0) for k in range(3)])
            out = (padded[tuple(slice(0, -2) if k == axis else slice(None) for k in range(3))]
                   + padded[tuple(slice(1, -1) if k == axis else slice(None) for k in range(3))]
                   + padded[tuple(slice(2, None) if k == axis else slice(None) for k in range(3))])
    return out


def _scan(threads: int, *args) -> None:
    if threads == 1:
        _scan_serial(*args)
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(min(threads, previous))
    try:
        _scan_all(*args)
    finally:
        numba.set_num_threads(previous)


# ------------------------------------------------------- many small systems
@numba.njit(cache=True)
def _batch_pairs(wrapped, starts, counts, cells, reach, pbc, cutoff2, out_i, out_j, out_n, fill):
    """All (i, j, image) pairs of every system closer than the cutoff, by
    brute force over the images within reach; with ``fill`` False only counts."""
    w = 0
    for s in range(len(starts)):
        a0 = starts[s]
        n = counts[s]
        rx = reach[s, 0]
        ry = reach[s, 1]
        rz = reach[s, 2]
        for p in range(a0, a0 + n):
            for q in range(a0, a0 + n):
                bx = wrapped[q, 0] - wrapped[p, 0]
                by = wrapped[q, 1] - wrapped[p, 1]
                bz = wrapped[q, 2] - wrapped[p, 2]
                for na in range(-rx, rx + 1):
                    for nb in range(-ry, ry + 1):
                        for nc in range(-rz, rz + 1):
                            if p == q and na == 0 and nb == 0 and nc == 0:
                                continue
                            dx = bx + na * cells[s, 0, 0] + nb * cells[s, 1, 0] + nc * cells[s, 2, 0]
                            dy = by + na * cells[s, 0, 1] + nb * cells[s, 1, 1] + nc * cells[s, 2, 1]
                            dz = bz + na * cells[s, 0, 2] + nb * cells[s, 1, 2] + nc * cells[s, 2, 2]
                            if dx * dx + dy * dy + dz * dz < cutoff2:
                                if fill:
                                    out_i[w] = p
                                    out_j[w] = q
                                    out_n[w, 0] = na
                                    out_n[w, 1] = nb
                                    out_n[w, 2] = nc
                                w += 1
    return w


def neighbor_list_small_batch(positions: np.ndarray, cells: np.ndarray, pbcs: np.ndarray, n_atoms: np.ndarray,
                              cutoff: float):
    """Neighbour lists of many small systems in one Numba call (no per-system
    Python): the same contract as :func:`mpa_ase.neighbors.neighbor_list` for
    each system, with i, j indexing the concatenated ``positions`` and pairs
    ordered by system. ``cells`` (S, 3, 3) must be complete (non-periodic
    vectors replaced, see ``geometry.complete_cell``). Cost per system grows as
    n_atoms² x images: meant for cells of up to a few dozen atoms.

    Returns (i, j, shifts, pairs_per_system); shifts are integer cell shifts of
    the unwrapped input positions.
    """
    pos = np.ascontiguousarray(positions, dtype=np.float64)
    cells = np.ascontiguousarray(cells, dtype=np.float64)
    pbcs = np.asarray(pbcs, dtype=bool)
    n_atoms = np.asarray(n_atoms, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(n_atoms)[:-1]]).astype(np.int64)
    system = np.repeat(np.arange(len(n_atoms)), n_atoms)
    inv = np.linalg.inv(cells)
    frac = np.einsum("ni,nij->nj", pos, inv[system])
    off = np.where(pbcs[system], np.floor(frac), 0.0)
    wrapped = np.ascontiguousarray(np.einsum("ni,nij->nj", frac - off, cells[system]))
    reach = np.where(pbcs, np.ceil(cutoff * np.linalg.norm(inv, axis=1)), 0).astype(np.int64)
    cutoff2 = float(cutoff) ** 2
    dummy_i = np.zeros(0, dtype=np.int64)
    dummy_n = np.zeros((0, 3), dtype=np.int64)
    total = _batch_pairs(wrapped, starts, n_atoms, cells, reach, pbcs, cutoff2, dummy_i, dummy_i, dummy_n, False)
    out_i = np.empty(total, dtype=np.int64)
    out_j = np.empty(total, dtype=np.int64)
    out_n = np.empty((total, 3), dtype=np.int64)
    _batch_pairs(wrapped, starts, n_atoms, cells, reach, pbcs, cutoff2, out_i, out_j, out_n, True)
    off_int = off.astype(np.int64)
    shifts = out_n + off_int[out_i] - off_int[out_j]
    per_system = np.bincount(system[out_i], minlength=len(n_atoms)).astype(np.int64)
    return out_i, out_j, shifts, per_system
