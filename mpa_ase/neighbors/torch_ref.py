"""Plain-torch reference neighbour list: every pair against every needed image.

O(N^2 * images) work in bounded-memory blocks. It is the yardstick the fast
backends are tested against, and a fallback on any device torch runs on.
"""

from __future__ import annotations

import torch

from mpa_ase.neighbors.geometry import CellInfo

_BLOCK_ELEMENTS = 1 << 22  # pair-image candidates held at once


def wrap_positions(pos: torch.Tensor, info: CellInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """Wrap positions into the cell along periodic directions.

    Returns the wrapped positions and the integer cell offsets removed, so that
    ``pos = wrapped + offsets @ cell``.
    """
    cell = torch.as_tensor(info.cell, dtype=pos.dtype, device=pos.device)
    inv = torch.as_tensor(info.inverse, dtype=pos.dtype, device=pos.device)
    pbc = torch.as_tensor(info.pbc, device=pos.device)
    frac = pos @ inv
    offsets = torch.where(pbc, torch.floor(frac), torch.zeros_like(frac))
    return pos - offsets @ cell, offsets.to(torch.long)


def neighbor_list_torch(
    positions: torch.Tensor, info: CellInfo, cutoff: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dev = positions.device
    pos = positions.to(torch.float64)
    n = pos.shape[0]
    empty = torch.zeros(0, dtype=torch.long, device=dev)
    if n == 0:
        return empty, empty, torch.zeros((0, 3), dtype=torch.long, device=dev)
    wrapped, offsets = wrap_positions(pos, info)
    cell = torch.as_tensor(info.cell, dtype=torch.float64, device=dev)
    grids = [torch.arange(-int(k), int(k) + 1, device=dev) for k in info.n_images]
    images = torch.stack(torch.meshgrid(*grids, indexing="ij"), dim=-1).reshape(-1, 3)
    image_vecs = images.to(torch.float64) @ cell
    zero_image = int(torch.nonzero((images == 0).all(dim=1))[0])
    cutoff2 = float(cutoff) ** 2

    n_img = images.shape[0]
    rows = max(1, min(n, _BLOCK_ELEMENTS // max(n * n_img, 1)))
    img_chunk = max(1, min(n_img, _BLOCK_ELEMENTS // (rows * n)))
    out_i, out_j, out_s = [], [], []
    for i0 in range(0, n, rows):
        i1 = min(n, i0 + rows)
        base = wrapped[None, :, :] - wrapped[i0:i1, None, :]  # (B, N, 3): r_j - r_i
        for s0 in range(0, n_img, img_chunk):
            s1 = min(n_img, s0 + img_chunk)
            d = base[:, :, None, :] + image_vecs[None, None, s0:s1, :]
            mask = (d * d).sum(-1) < cutoff2  # (B, N, S)
            if s0 <= zero_image < s1:
                r = torch.arange(i0, i1, device=dev)
                mask[r - i0, r, zero_image - s0] = False
            bi, jj, ss = torch.nonzero(mask, as_tuple=True)
            out_i.append(bi + i0)
            out_j.append(jj)
            out_s.append(ss + s0)
    i = torch.cat(out_i)
    j = torch.cat(out_j)
    shifts = images[torch.cat(out_s)] - offsets[j] + offsets[i]
    return i, j, info.shifts_to_input(shifts)
