"""The calculator's neighbour-list object: cutoff, backend, device and a
Verlet skin that reuses a list between nearby configurations.

The list is built at ``cutoff + skin`` and reused, with only the distances
recomputed and pairs beyond ``cutoff`` dropped, while no atom has moved more
than ``skin / 2`` since the build and the cell is unchanged (to ``cell_tol``).
Any pair now closer than ``cutoff`` was then closer than ``cutoff + skin`` at
the build, so the filtered list holds exactly the pairs a fresh build would.
"""

from __future__ import annotations

import numpy as np

from mpa_ase.neighbors import neighbor_list
from mpa_ase.neighbors.geometry import as_pbc


class VerletNeighbors:
    """Neighbour lists at one cutoff, on one backend and device, with a cache of
    one system's list across calls (e.g. MD steps).

    ``build`` makes a fresh list (any system); ``get`` reuses the cached one
    while the skin allows. With a CUDA ``device`` the list is built there
    (Triton by default) and handed back as numpy.
    """

    def __init__(self, cutoff: float, skin: float = 1.0, backend: str = "auto", cell_tol: float = 1e-9,
                 device="cpu"):
        import torch

        from mpa_ase.neighbors import resolve_backend

        if not np.isfinite(skin) or skin < 0:
            raise ValueError(f"skin must be a finite number >= 0 (Å), got {skin}")
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.device = torch.device(device)
        self.backend = backend
        # fail now, not at the first calculation, for a backend this device cannot run
        resolve_backend(backend, on_cuda=self.device.type == "cuda")
        self.cell_tol = float(cell_tol)
        self.n_builds = 0
        self.n_calls = 0
        self.reset()

    def reset(self) -> None:
        self._ref_positions = None
        self._ref_cell = None
        self._ref_pbc = None
        self._pairs = None

    def _valid_for(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> bool:
        if self._pairs is None or self.skin == 0.0:
            return False
        if positions.shape != self._ref_positions.shape or not np.array_equal(pbc, self._ref_pbc):
            return False
        if np.abs(cell - self._ref_cell).max() > self.cell_tol:
            return False
        moved2 = np.einsum("ij,ij->i", positions - self._ref_positions, positions - self._ref_positions)
        # 1e-9 Å margin so rounding in the distance test cannot lose a pair
        return float(moved2.max(initial=0.0)) <= (0.5 * self.skin - 1e-9) ** 2

    def build(self, positions, cell, pbc, cutoff: float | None = None):
        """A fresh list (i, j, shifts) as numpy arrays; no cache involved."""
        cutoff = self.cutoff if cutoff is None else float(cutoff)
        if self.device.type == "cuda":
            import torch

            pos = torch.as_tensor(np.asarray(positions, dtype=np.float64), device=self.device)
            i, j, s = neighbor_list(pos, cell, pbc, cutoff, backend=self.backend)
            return i.cpu().numpy(), j.cpu().numpy(), s.cpu().numpy()
        return neighbor_list(positions, cell, pbc, cutoff, backend=self.backend)

    def get(self, positions, cell, pbc) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pairs closer than ``cutoff`` for this configuration: (i, j, shifts)."""
        positions = np.asarray(positions, dtype=np.float64)
        cell = np.asarray(cell, dtype=np.float64)
        pbc = as_pbc(pbc)
        self.n_calls += 1
        if not self._valid_for(positions, cell, pbc):
            self._pairs = self.build(positions, cell, pbc, self.cutoff + self.skin)
            self._ref_positions = positions.copy()
            self._ref_cell = cell.copy()
            self._ref_pbc = pbc.copy()
            self.n_builds += 1
            if self.skin == 0.0:
                return self._pairs
        i, j, s = self._pairs
        vec = positions[j] - positions[i] + s @ cell
        keep = np.einsum("ij,ij->i", vec, vec) < self.cutoff**2
        return i[keep], j[keep], s[keep]

    @property
    def rebuild_fraction(self) -> float:
        return self.n_builds / max(1, self.n_calls)
