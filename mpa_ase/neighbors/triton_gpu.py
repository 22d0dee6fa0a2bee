"""Triton cell-list neighbour search for the GPU.

Binning and sorting are torch operations on the device. One Triton program
takes a chunk of the atoms of one bin (tile rows) and scans, as tile columns,
the flattened (neighbour-bin offset, slot) candidates within reach, each
reached bin standing for one periodic image. A counting launch sizes the
output exactly; a second launch writes pairs at per-atom offsets using a
row prefix sum, so no atomics are needed and the order is deterministic.

Runs under ``TRITON_INTERPRET=1`` on CPU tensors, which is how it is tested
without a GPU.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from mpa_ase.errors import MPAInputError
from mpa_ase.neighbors.geometry import CellInfo, bin_grid
from mpa_ase.neighbors.torch_ref import wrap_positions

BLOCK = 128  # candidate columns per tile


@triton.jit
def _floor_mod_div(c, n):
    # Triton's integer % truncates toward zero; bins need floor semantics.
    m = ((c % n) + n) % n
    return m, (c - m) // n


@triton.jit
def _neighbor_kernel(
    pos_ptr, occupied_ptr, bin_start_ptr, bin_atoms_ptr, cell_ptr,
    nb0, nb1, nb2, r0, r1, r2, p0, p1, p2, occ_max, cutoff2,
    count_ptr, offset_ptr, out_i_ptr, out_j_ptr, out_s_ptr,
    FILL: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr,
):
    b = tl.load(occupied_ptr + tl.program_id(0))
    chunk = tl.program_id(1).to(tl.int64)
    b_start = tl.load(bin_start_ptr + b)
    b_count = tl.load(bin_start_ptr + b + 1) - b_start
    if chunk * BLOCK_I < b_count:
        # rows: a chunk of the atoms in bin b
        rslot = chunk * BLOCK_I + tl.arange(0, BLOCK_I).to(tl.int64)
        rvalid = rslot < b_count
        ai = tl.load(bin_atoms_ptr + b_start + rslot, mask=rvalid, other=0)
        xi = tl.load(pos_ptr + 3 * ai, mask=rvalid, other=0.0)
        yi = tl.load(pos_ptr + 3 * ai + 1, mask=rvalid, other=0.0)
        zi = tl.load(pos_ptr + 3 * ai + 2, mask=rvalid, other=0.0)
        bz = b % nb2
        by = (b // nb2) % nb1
        bx = b // (nb1 * nb2)
        c00 = tl.load(cell_ptr + 0)
        c01 = tl.load(cell_ptr + 1)
        c02 = tl.load(cell_ptr + 2)
        c10 = tl.load(cell_ptr + 3)
        c11 = tl.load(cell_ptr + 4)
        c12 = tl.load(cell_ptr + 5)
        c20 = tl.load(cell_ptr + 6)
        c21 = tl.load(cell_ptr + 7)
        c22 = tl.load(cell_ptr + 8)
        w1 = 2 * r1 + 1
        w2 = 2 * r2 + 1
        n_cand = (2 * r0 + 1) * w1 * w2 * occ_max
        w = tl.zeros((BLOCK_I,), dtype=tl.int64)
        if FILL:
            w = tl.load(offset_ptr + ai, mask=rvalid, other=0)
        lanes = tl.arange(0, BLOCK_J).to(tl.int64)
        # columns: (neighbour-bin offset, slot in that bin) flattened, so one
        # tile covers several bins or periodic images at once
        for c0 in range(0, n_cand, BLOCK_J):
            cand = c0 + lanes
            o = cand // occ_max
            slot = cand % occ_max
            dz = o % w2 - r2
            dy = (o // w2) % w1 - r1
            dx = o // (w1 * w2) - r0
            cx, sx = _floor_mod_div(bx + dx, nb0)
            cy, sy = _floor_mod_div(by + dy, nb1)
            cz, sz = _floor_mod_div(bz + dz, nb2)
            # scalars are broadcast before logic ops: the interpreter mistypes
            # scalar-block boolean combinations
            cvalid = (cand < n_cand) & (((sx == 0) | (lanes * 0 + p0 != 0)) & ((sy == 0) | (lanes * 0 + p1 != 0))
                                        & ((sz == 0) | (lanes * 0 + p2 != 0)))
            nbin = (cx * nb1 + cy) * nb2 + cz
            n_start = tl.load(bin_start_ptr + nbin, mask=cvalid, other=0)
            n_end = tl.load(bin_start_ptr + nbin + 1, mask=cvalid, other=0)
            cvalid = cvalid & (slot < n_end - n_start)
            aj = tl.load(bin_atoms_ptr + n_start + slot, mask=cvalid, other=0)
            fx = sx.to(xi.dtype)
            fy = sy.to(xi.dtype)
            fz = sz.to(xi.dtype)
            xj = tl.load(pos_ptr + 3 * aj, mask=cvalid, other=0.0) + fx * c00 + fy * c10 + fz * c20
            yj = tl.load(pos_ptr + 3 * aj + 1, mask=cvalid, other=0.0) + fx * c01 + fy * c11 + fz * c21
            zj = tl.load(pos_ptr + 3 * aj + 2, mask=cvalid, other=0.0) + fx * c02 + fy * c12 + fz * c22
            ddx = xj[None, :] - xi[:, None]
            ddy = yj[None, :] - yi[:, None]
            ddz = zj[None, :] - zi[:, None]
            d2 = ddx * ddx + ddy * ddy + ddz * ddz
            other_image = (sx != 0) | (sy != 0) | (sz != 0)
            not_self = (aj[None, :] != ai[:, None]) | other_image[None, :]
            hit = rvalid[:, None] & cvalid[None, :] & (d2 < cutoff2) & not_self
            h = hit.to(tl.int64)
            if FILL:
                idx = w[:, None] + tl.cumsum(h, 1) - 1
                zero = h * 0
                tl.store(out_i_ptr + idx, zero + ai[:, None], mask=hit)
                tl.store(out_j_ptr + idx, zero + aj[None, :], mask=hit)
                tl.store(out_s_ptr + 3 * idx, zero + sx[None, :], mask=hit)
                tl.store(out_s_ptr + 3 * idx + 1, zero + sy[None, :], mask=hit)
                tl.store(out_s_ptr + 3 * idx + 2, zero + sz[None, :], mask=hit)
            w += tl.sum(h, 1)
        if not FILL:
            tl.store(count_ptr + ai, w, mask=rvalid)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def neighbor_list_triton(
    positions: torch.Tensor, info: CellInfo, cutoff: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dev = positions.device
    if dev.type != "cuda" and not _interpreting():
        raise MPAInputError(
            "the triton neighbour-list backend needs CUDA tensors (or TRITON_INTERPRET=1 on the CPU)"
        )
    pos = positions.detach().to(torch.float64)
    n = pos.shape[0]
    if n == 0:
        z = torch.zeros(0, dtype=torch.long, device=dev)
        return z, z.clone(), torch.zeros((0, 3), dtype=torch.long, device=dev)
    cell = torch.as_tensor(info.cell, dtype=torch.float64, device=dev)
    inv = torch.as_tensor(info.inverse, dtype=torch.float64, device=dev)
    wrapped, off = wrap_positions(pos, info)
    wrapped = wrapped.contiguous()
    frac = wrapped @ inv

    # Grid geometry is decided on the host from a few scalars (as in numba_cpu).
    grid = bin_grid(frac.min(dim=0).values.cpu().numpy(), frac.max(dim=0).values.cpu().numpy(), info, cutoff, n)
    nb = torch.from_numpy(grid.nb)
    reach = grid.reach
    lo = torch.from_numpy(grid.lo).to(dev)
    width = torch.from_numpy(grid.width).to(dev)
    nb_d = nb.to(dev)
    scaled = (frac - lo) / torch.where(width > 0, width, torch.ones_like(width))
    bin_of = torch.minimum(torch.clamp(torch.floor(scaled * nb_d), min=0).to(torch.long), nb_d - 1).contiguous()
    flat = (bin_of[:, 0] * nb_d[1] + bin_of[:, 1]) * nb_d[2] + bin_of[:, 2]
    order = torch.argsort(flat, stable=True).contiguous()
    n_bins = int(nb.prod())
    bin_start = torch.zeros(n_bins + 1, dtype=torch.long, device=dev)
    bin_start[1:] = torch.cumsum(torch.bincount(flat, minlength=n_bins), 0)
    cell_flat = cell.reshape(-1).contiguous()

    occupancy = bin_start[1:] - bin_start[:-1]
    occupied = torch.nonzero(occupancy).flatten().contiguous()
    occ_max = int(occupancy.max())
    block_i = max(16, min(64, triton.next_power_of_2(occ_max)))
    launch = (occupied.shape[0], triton.cdiv(occ_max, block_i))
    counts = torch.zeros(n, dtype=torch.long, device=dev)
    dummy_l = torch.zeros(1, dtype=torch.long, device=dev)
    args = (
        wrapped, occupied, bin_start, order, cell_flat,
        int(nb[0]), int(nb[1]), int(nb[2]), int(reach[0]), int(reach[1]), int(reach[2]),
        int(info.pbc[0]), int(info.pbc[1]), int(info.pbc[2]), occ_max, float(cutoff) ** 2,
    )
    meta = dict(BLOCK_I=block_i, BLOCK_J=BLOCK)
    _neighbor_kernel[launch](*args, counts, counts, dummy_l, dummy_l, dummy_l, FILL=False, **meta)
    starts = torch.cumsum(counts, 0) - counts
    total = int(counts.sum())
    out_i = torch.empty(total, dtype=torch.long, device=dev)
    out_j = torch.empty(total, dtype=torch.long, device=dev)
    out_s = torch.empty((total, 3), dtype=torch.long, device=dev)
    if total:
        _neighbor_kernel[launch](*args, counts, starts, out_i, out_j, out_s, FILL=True, **meta)
    out_s += off[out_i] - off[out_j]
    return out_i, out_j, info.shifts_to_input(out_s)
