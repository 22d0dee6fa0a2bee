"""Neighbour lists behind one function.

Contract, for every backend: ``neighbor_list`` returns ``(i, j, shifts)`` with
integer cell shifts such that the pair vector is
``positions[j] - positions[i] + shifts @ cell``. Every pair with distance
*strictly below* ``cutoff`` is listed once per direction (both i->j and j->i),
periodic self-images (i == j, non-zero shift) included, and only i == j with a
zero shift excluded. Positions need not be wrapped into the cell; along
non-periodic directions the cell vector may be zero or absent.

numpy in gives numpy out (the Numba backend's indices and shifts are int32
while they fit); torch in gives torch out on the same device, int64.
"""

from __future__ import annotations

import os

import numpy as np

from mpa_ase.errors import MPAInputError
from mpa_ase.neighbors.geometry import as_cell, as_pbc, cell_info, check_positions

BACKENDS = ("numba", "torch", "triton")

__all__ = ["BACKENDS", "neighbor_list", "sort_pairs"]


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def sort_pairs(i, j, shifts):
    """Order pairs by (i, j, shift) so that results are reproducible."""
    if _is_torch(i):
        import torch

        key = torch.stack([i, j, shifts[:, 0], shifts[:, 1], shifts[:, 2]], dim=1)
        order = torch.from_numpy(np.lexsort(key.cpu().numpy().T[::-1])).to(i.device)
    else:
        order = np.lexsort((shifts[:, 2], shifts[:, 1], shifts[:, 0], j, i))
    return i[order], j[order], shifts[order]


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, on_cuda: bool) -> str:
    """The backend that runs for ``backend`` on data that is (not) on CUDA."""
    if backend == "auto":
        if on_cuda:
            return "triton" if _triton_available() else "torch"
        return "numba"
    if backend not in BACKENDS:
        raise MPAInputError(f"unknown neighbour-list backend {backend!r}; choose from {('auto',) + BACKENDS}")
    if backend == "triton":
        if not _triton_available():
            raise MPAInputError("neighbour-list backend 'triton' needs the triton package (pip install triton)")
        if not on_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise MPAInputError(
                "neighbour-list backend 'triton' runs on CUDA devices; on the CPU use 'numba' (or set "
                "TRITON_INTERPRET=1 to run the kernel in Triton's interpreter)"
            )
    return backend


def neighbor_list(positions, cell, pbc, cutoff: float, backend: str = "auto", sort: bool = False):
    """All pairs closer than ``cutoff`` (see module docstring for the contract).

    Args:
        positions: (N, 3) array or tensor in Å.
        cell: (3, 3) cell (rows are vectors), or None for a non-periodic system.
        pbc: bool or three bools.
        cutoff: radius in Å; pairs at exactly ``cutoff`` are excluded.
        backend: "auto" (Numba for CPU data, Triton for CUDA tensors), "numba",
            "triton" (CUDA tensors, or CPU under TRITON_INTERPRET=1) or "torch".
        sort: order the pairs by (i, j, shift).
    """
    torch_in = _is_torch(positions)
    if torch_in:
        import torch

        pos_np = positions.detach().to("cpu", torch.float64).numpy() if positions.device.type == "cpu" else None
        device = positions.device
    else:
        pos_np = np.asarray(positions, dtype=np.float64)
        device = None
    if pos_np is not None:
        check_positions(pos_np)
    elif not bool(torch.isfinite(positions).all()):
        raise MPAInputError("positions contain NaN or inf")
    if _is_torch(cell):
        cell = cell.detach().cpu().numpy()
    if _is_torch(pbc):
        pbc = pbc.detach().cpu().numpy()
    pbc = as_pbc(pbc)
    info = cell_info(as_cell(cell), pbc, float(cutoff))
    name = resolve_backend(backend, on_cuda=device is not None and device.type == "cuda")

    if name == "numba":
        from mpa_ase.neighbors.numba_cpu import neighbor_list_numba

        if pos_np is None:
            pos_np = positions.detach().to("cpu", torch.float64).numpy()
        i, j, s = neighbor_list_numba(pos_np, info, float(cutoff))
        if torch_in:  # torch indexing wants int64
            i, j, s = (torch.from_numpy(a).to(device=device, dtype=torch.long) for a in (i, j, s))
    else:
        import torch

        if name == "triton":
            from mpa_ase.neighbors.triton_gpu import neighbor_list_triton as kernel
        else:
            from mpa_ase.neighbors.torch_ref import neighbor_list_torch as kernel

        pos_t = positions.detach() if torch_in else torch.from_numpy(pos_np)
        i, j, s = kernel(pos_t, info, float(cutoff))
        if not torch_in:
            i, j, s = i.numpy(), j.numpy(), s.numpy()
    if sort:
        i, j, s = sort_pairs(i, j, s)
    return i, j, s
