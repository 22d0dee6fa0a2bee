"""Cell bookkeeping shared by every neighbour-list backend.

Backends work on positions wrapped into the cell along periodic directions and
on a *completed* cell whose non-periodic vectors are replaced by an orthonormal
complement of the periodic ones, so that a missing or zero cell vector along a
non-periodic direction (molecules, slabs) is never inverted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpa_ase.errors import MPAInputError

_AXES = "abc"


def as_pbc(pbc) -> np.ndarray:
    """Return pbc as a (3,) bool array from a bool or a 3-sequence."""
    arr = np.asarray(pbc if pbc is not None else False, dtype=bool)
    if arr.ndim == 0:
        arr = np.repeat(arr, 3)
    if arr.shape != (3,):
        raise MPAInputError(f"pbc must be a bool or three bools, got shape {arr.shape}")
    return arr


def as_cell(cell) -> np.ndarray:
    """Return the cell as a float64 (3, 3) array (zeros when ``cell`` is None)."""
    if cell is None:
        return np.zeros((3, 3))
    arr = np.asarray(cell, dtype=np.float64)
    if arr.shape == (3,):  # orthorhombic lengths, as ASE accepts
        arr = np.diag(arr)
    if arr.shape != (3, 3):
        raise MPAInputError(f"cell must be 3x3, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise MPAInputError("cell contains NaN or inf")
    return arr


def complete_cell(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Cell whose periodic vectors are the given ones and whose other vectors
    are an orthonormal complement; raises if a periodic vector is degenerate."""
    periodic = np.flatnonzero(pbc)
    full = np.zeros((3, 3))
    if len(periodic) == 0:
        return np.eye(3)
    vecs = cell[periodic]
    norms = np.linalg.norm(vecs, axis=1)
    for k, n in zip(periodic, norms):
        if n < 1e-8:
            raise MPAInputError(
                f"pbc is True along cell vector {_AXES[k]} but that vector is zero; "
                "set a cell or pbc=False along it"
            )
    _, s, vt = np.linalg.svd(vecs / norms[:, None])
    if s[-1] < 1e-6:
        raise MPAInputError(
            "the periodic cell vectors are linearly dependent (zero cell volume); "
            f"cell={cell.tolist()}, pbc={pbc.tolist()}"
        )
    full[periodic] = vecs
    nonperiodic = np.flatnonzero(~pbc)
    full[nonperiodic] = vt[len(periodic):]
    return full


@dataclass(frozen=True)
class CellInfo:
    """What a backend needs to know about one system's cell."""

    cell: np.ndarray  # (3, 3) completed, Minkowski-reduced cell
    inverse: np.ndarray  # (3, 3) inverse of ``cell``
    pbc: np.ndarray  # (3,) bool
    n_images: np.ndarray  # (3,) int: images needed each side along each vector
    to_input: np.ndarray | None = None  # (3, 3) int: shifts @ to_input are shifts of the given cell

    def shifts_to_input(self, shifts):
        """Shifts found in ``cell`` expressed in the caller's cell (numpy or torch)."""
        if self.to_input is None:
            return shifts
        op = self.to_input
        if isinstance(shifts, np.ndarray):  # integer matmul has no BLAS: spell it out
            return shifts[:, 0:1] * op[0] + shifts[:, 1:2] * op[1] + shifts[:, 2:3] * op[2]
        import torch

        op = torch.as_tensor(op, device=shifts.device)
        return (shifts[:, :, None] * op[None]).sum(1)


def cell_info(cell, pbc, cutoff: float) -> CellInfo:
    if not np.isfinite(cutoff) or cutoff <= 0:
        raise MPAInputError(f"cutoff must be a positive finite number, got {cutoff}")
    pbc = as_pbc(pbc)
    full = complete_cell(as_cell(cell), pbc)
    to_input = None
    if pbc.any():
        # A skewed cell is searched in its Minkowski-reduced form (same
        # lattice): fewer images and bins; shifts are mapped back afterwards.
        from ase.geometry import minkowski_reduce

        reduced, op = minkowski_reduce(full, pbc=pbc)
        if not np.array_equal(op, np.eye(3, dtype=op.dtype)):
            full, to_input = np.asarray(reduced, dtype=np.float64), np.asarray(op, dtype=np.int64)
    inv = np.linalg.inv(full)
    # Distance between lattice planes k is 1/|column k of inv|; images needed
    # on each side for wrapped positions is ceil(cutoff / spacing).
    spacing_inv = np.linalg.norm(inv, axis=0)
    n_images = np.where(pbc, np.ceil(cutoff * spacing_inv), 0).astype(np.int64)
    return CellInfo(cell=full, inverse=inv, pbc=pbc, n_images=n_images, to_input=to_input)


def check_positions(positions: np.ndarray) -> None:
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise MPAInputError(f"positions must have shape (N, 3), got {positions.shape}")
    if not np.all(np.isfinite(positions)):
        bad = np.flatnonzero(~np.all(np.isfinite(positions), axis=1))
        raise MPAInputError(
            f"positions contain NaN or inf (atoms {bad[:10].tolist()})"
        )


BINS_PER_CUTOFF = 2  # bins this many times thinner than the cutoff when atoms are dense enough


@dataclass(frozen=True)
class BinGrid:
    """Cell-list grid over fractional coordinates (shared by the backends)."""

    lo: np.ndarray  # (3,) fractional origin of the grid
    width: np.ndarray  # (3,) fractional extent of the grid
    nb: np.ndarray  # (3,) bins per axis
    reach: np.ndarray  # (3,) bins to scan on each side


def bin_grid(frac_min: np.ndarray, frac_max: np.ndarray, info: CellInfo, cutoff: float, n_atoms: int,
             bins_per_cutoff: float = BINS_PER_CUTOFF) -> BinGrid:
    """Grid for wrapped fractional coordinates: the unit cell along periodic
    axes, the atoms' span along the others (whose completed vectors are unit
    length). Bins are ``cutoff / bins_per_cutoff`` thick, but never so thin that
    there are more bins than atoms."""
    lo = np.where(info.pbc, 0.0, frac_min)
    width = np.where(info.pbc, 1.0, frac_max - lo)
    spacing = 1.0 / np.linalg.norm(info.inverse, axis=0)  # Å per fractional unit
    extent = width * spacing
    min_len = cutoff / bins_per_cutoff
    volume = float(np.prod(np.maximum(extent, min_len)))
    bin_len = max(min_len, (volume / max(n_atoms, 1)) ** (1.0 / 3.0))
    nb = np.maximum(1, np.floor(extent / bin_len)).astype(np.int64)
    thickness = np.where(extent > 0, extent / nb, np.inf)
    reach = np.ceil(cutoff / thickness)
    reach = np.where(info.pbc, reach, np.minimum(nb - 1, reach)).astype(np.int64)
    return BinGrid(lo=lo, width=width, nb=nb, reach=reach)
