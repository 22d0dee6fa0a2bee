"""The batched atoms graph: the one structure that flows through mpa-ase.

``AtomsGraph`` holds one or many systems concatenated: atoms carry a system
index (``batch``), edges carry integer cell shifts, and every backbone reads
its geometry through :meth:`AtomsGraph.edge_vectors`, so that forces and
stress follow by autograd through positions and cell.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mpa_ase.errors import MPAInputError, OverlappingAtomsError
from mpa_ase.neighbors import neighbor_list
from mpa_ase.neighbors.geometry import as_cell, as_pbc, check_positions

MIN_DISTANCE = 0.1  # Å; closer atoms are an input error, not a structure


def to_ase(structure):
    """Accept ASE ``Atoms`` and pymatgen ``Structure``/``Molecule`` alike."""
    from ase import Atoms

    if isinstance(structure, Atoms):
        return structure
    module = type(structure).__module__
    if module.startswith("pymatgen"):
        from pymatgen.io.ase import AseAtomsAdaptor

        return AseAtomsAdaptor.get_atoms(structure)
    raise MPAInputError(
        f"expected ase.Atoms or a pymatgen Structure/Molecule, got {type(structure).__name__}"
    )


@dataclass
class SystemNeighbors:
    """Neighbour list of one system, in numpy, before batching."""

    i: np.ndarray
    j: np.ndarray
    shifts: np.ndarray


def system_neighbors(
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    cutoff: float,
    backend: str = "auto",
    min_distance: float = MIN_DISTANCE,
    label: str = "structure",
    neighbors=None,
    cached: bool = False,
) -> SystemNeighbors:
    """Neighbour list of one system with the overlap check applied.

    ``neighbors`` (a :class:`~mpa_ase.neighbors.verlet.VerletNeighbors`)
    builds the list on its backend and device; with ``cached`` it reuses its
    Verlet list of this system from an earlier call."""
    if neighbors is not None:
        i, j, s = neighbors.get(positions, cell, pbc) if cached else neighbors.build(positions, cell, pbc)
    else:
        i, j, s = neighbor_list(positions, cell, pbc, cutoff, backend=backend)
    if len(i):
        k, d = closest_pair(positions[j] - positions[i] + s @ cell)
        if d < min_distance:
            raise overlap_error(label, int(i[k]), int(j[k]), d, min_distance)
    return SystemNeighbors(i, j, s)


def closest_pair(vectors: np.ndarray) -> tuple[int, float]:
    """Index and length of the shortest of ``vectors`` (pair vectors)."""
    d2 = np.einsum("ij,ij->i", vectors, vectors)
    k = int(np.argmin(d2))
    return k, float(np.sqrt(d2[k]))


def overlap_error(label: str, a: int, b: int, distance: float, min_distance: float) -> OverlappingAtomsError:
    return OverlappingAtomsError(f"{label}: atoms {a} and {b} are {distance:.4f} Å apart "
                                 f"(minimum {min_distance} Å); check the positions")


SMALL_SYSTEM = 48  # atoms; batches of systems no larger than this get their lists in one Numba call


def small_systems_neighbors(atoms_list, cutoff: float, min_distance: float = MIN_DISTANCE) -> list[SystemNeighbors]:
    """Neighbour lists of many small systems in one Numba call, input checks and
    the overlap check included (see ``numba_cpu.neighbor_list_small_batch``)."""
    from mpa_ase.neighbors.geometry import complete_cell
    from mpa_ase.neighbors.numba_cpu import neighbor_list_small_batch

    cells, pbcs = [], []
    for k, atoms in enumerate(atoms_list):
        label = f"structure {k} ({atoms.get_chemical_formula()})"
        validate_atoms(atoms, label)
        pbc = as_pbc(atoms.pbc)
        try:
            cells.append(complete_cell(as_cell(atoms.cell.array), pbc))
        except MPAInputError as err:
            raise MPAInputError(f"{label}: {err}") from None
        pbcs.append(pbc)
    n_atoms = np.array([len(a) for a in atoms_list], dtype=np.int64)
    pos = np.concatenate([np.asarray(a.positions, dtype=np.float64) for a in atoms_list])
    cells = np.stack(cells)
    i, j, shifts, per_system = neighbor_list_small_batch(pos, cells, np.stack(pbcs), n_atoms, cutoff)
    if len(i):
        system = np.repeat(np.arange(len(atoms_list)), n_atoms)
        vec = pos[j] - pos[i] + np.einsum("ek,ekl->el", shifts.astype(np.float64),
                                         np.stack([as_cell(a.cell.array) for a in atoms_list])[system[i]])
        e, d = closest_pair(vec)
        if d < min_distance:
            s = int(system[i[e]])
            start = int(n_atoms[:s].sum())
            raise overlap_error(f"structure {s} ({atoms_list[s].get_chemical_formula()})", int(i[e]) - start,
                                int(j[e]) - start, d, min_distance)
    starts = np.concatenate([[0], np.cumsum(n_atoms)[:-1]])
    bounds = np.concatenate([[0], np.cumsum(per_system)])
    return [SystemNeighbors(i[bounds[s]:bounds[s + 1]] - starts[s], j[bounds[s]:bounds[s + 1]] - starts[s],
                            shifts[bounds[s]:bounds[s + 1]]) for s in range(len(atoms_list))]


def validate_atoms(atoms, label: str = "structure") -> None:
    """Raise :class:`MPAInputError` naming the problem with ``atoms``."""
    if len(atoms) == 0:
        raise MPAInputError(f"{label}: empty Atoms (no atoms to evaluate)")
    check_positions(np.asarray(atoms.positions))
    numbers = np.asarray(atoms.numbers)
    if np.any(numbers <= 0):
        raise MPAInputError(f"{label}: atomic numbers must be positive, got {sorted(set(numbers[numbers <= 0]))}")
    try:
        as_cell(atoms.cell.array)
    except MPAInputError as err:
        raise MPAInputError(f"{label}: {err}") from None


@dataclass(frozen=True)
class Segments:
    """Which atom belongs to which system: all that a readout pools over.

    ``numbers`` (per atom) and ``periodic`` (per system) are there for the
    heads' domain checks; a readout needs only ``index`` and ``sizes``. An
    :class:`AtomsGraph` gives its own (``graph.segments``); heads reading
    cached embeddings make one from the atom counts (:meth:`from_sizes`).
    """

    index: Tensor  # (N,) long: the system of each atom
    sizes: Tensor  # (S,) long: atoms per system
    numbers: Tensor | None = None  # (N,) long
    periodic: Tensor | None = None  # (S,) bool: periodic along every axis

    @classmethod
    def from_sizes(cls, sizes, numbers=None, periodic=None, *, device="cpu") -> Segments:
        sizes = torch.as_tensor(sizes, dtype=torch.long, device=device).reshape(-1)
        if bool((sizes < 1).any()):
            raise MPAInputError(f"every system needs at least one atom; sizes {sizes.tolist()}")
        n = int(sizes.sum())
        index = torch.repeat_interleave(torch.arange(int(sizes.shape[0]), device=device), sizes)
        numbers = None if numbers is None else torch.as_tensor(numbers, dtype=torch.long, device=device)
        periodic = None if periodic is None else torch.as_tensor(periodic, dtype=torch.bool, device=device)
        if numbers is not None and numbers.shape != (n,):
            raise MPAInputError(f"numbers has shape {tuple(numbers.shape)}; the sizes add up to {n} atoms")
        if periodic is not None and periodic.shape != sizes.shape:
            raise MPAInputError(f"periodic has shape {tuple(periodic.shape)}, one flag per system "
                                f"({sizes.shape[0]}) expected")
        return cls(index, sizes, numbers, periodic)

    @property
    def count(self) -> int:
        """The number of systems."""
        return int(self.sizes.shape[0])

    def sum(self, per_atom: Tensor) -> Tensor:
        """Sum a per-atom tensor over the atoms of each system."""
        out = per_atom.new_zeros((self.count,) + tuple(per_atom.shape[1:]))
        return out.index_add_(0, self.index, per_atom)

    def mean(self, per_atom: Tensor) -> Tensor:
        counts = self.sizes.to(per_atom.dtype).reshape((-1,) + (1,) * (per_atom.dim() - 1))
        return self.sum(per_atom) / counts

    def softmax(self, scores: Tensor) -> Tensor:
        """Softmax of per-atom scores over the atoms of each system."""
        index = self.index.view(-1, *([1] * (scores.dim() - 1))).expand_as(scores)
        shape = (self.count,) + tuple(scores.shape[1:])
        # the per-system maximum only stabilises exp(); it carries no gradient
        max_per = scores.new_full(shape, float("-inf")).scatter_reduce_(
            0, index, scores.detach(), reduce="amax", include_self=False
        )
        e = torch.exp(scores - max_per[self.index])
        return e / self.sum(e)[self.index]


def as_segments(x) -> Segments:
    """``x`` itself if it is :class:`Segments`, else its ``segments`` (an :class:`AtomsGraph`'s)."""
    return x if isinstance(x, Segments) else x.segments


@dataclass
class AtomsGraph:
    """One or many atomic systems with their neighbour graph.

    Edge ``e`` goes from centre ``edge_index[0, e]`` (i) to neighbour
    ``edge_index[1, e]`` (j); its vector is ``r_j - r_i + shifts[e] @ cell``.
    """

    positions: Tensor  # (N, 3)
    numbers: Tensor  # (N,) int64
    cell: Tensor  # (S, 3, 3)
    pbc: Tensor  # (S, 3) bool
    edge_index: Tensor  # (2, E) int64
    shifts: Tensor  # (E, 3) float, integer valued
    batch: Tensor  # (N,) int64 system index of each atom
    n_atoms: Tensor  # (S,) int64
    cutoff: float

    # ---------------------------------------------------------------- build
    @classmethod
    def from_atoms(
        cls,
        structures,
        cutoff: float,
        *,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
        neighbor_backend: str = "auto",
        min_distance: float = MIN_DISTANCE,
        neighbors=None,
        reuse_neighbors: bool = False,
    ) -> AtomsGraph:
        """Build from one structure or a sequence of them (ASE or pymatgen).

        ``neighbors`` (a :class:`~mpa_ase.neighbors.verlet.VerletNeighbors`)
        builds the lists in place of ``neighbor_backend``; with
        ``reuse_neighbors`` it reuses its Verlet list of a single structure
        across calls.
        """
        items = [structures] if not isinstance(structures, (list, tuple)) else list(structures)
        if not items:
            raise MPAInputError("no structures given")
        atoms_list = [to_ase(s) for s in items]
        if reuse_neighbors and (neighbors is None or len(atoms_list) != 1):
            raise ValueError("a Verlet neighbour cache serves one structure at a time")
        backend = neighbors.backend if neighbors is not None else neighbor_backend
        on_cpu = neighbors is None or neighbors.device.type == "cpu"
        if (len(atoms_list) > 1 and not reuse_neighbors and on_cpu and backend in ("auto", "numba")
                and max(len(a) for a in atoms_list) <= SMALL_SYSTEM):
            lists = small_systems_neighbors(atoms_list, cutoff, min_distance)
            return cls.from_parts(atoms_list, lists, cutoff, dtype=dtype, device=device)
        lists = []
        for k, atoms in enumerate(atoms_list):
            label = f"structure {k} ({atoms.get_chemical_formula()})" if len(items) > 1 else (
                f"structure {atoms.get_chemical_formula()}" if len(atoms) else "structure"
            )
            validate_atoms(atoms, label)
            pos = np.asarray(atoms.positions, dtype=np.float64)
            lists.append(
                system_neighbors(
                    pos, as_cell(atoms.cell.array), as_pbc(atoms.pbc), cutoff,
                    backend=neighbor_backend, min_distance=min_distance, label=label, neighbors=neighbors,
                    cached=reuse_neighbors,
                )
            )
        return cls.from_parts(atoms_list, lists, cutoff, dtype=dtype, device=device)

    @classmethod
    def from_parts(
        cls,
        atoms_list: Sequence,
        neighbors: Sequence[SystemNeighbors],
        cutoff: float,
        *,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
    ) -> AtomsGraph:
        """Concatenate systems whose neighbour lists are already known."""
        n_atoms = np.array([len(a) for a in atoms_list], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(n_atoms)[:-1]])
        pos = np.concatenate([np.asarray(a.positions, dtype=np.float64) for a in atoms_list])
        # Each system relative to its first atom, in float64 before any cast: a
        # float32 model then sees the same numbers wherever the structure sits
        # (energy, forces and stress are translation invariant).
        pos = pos - np.repeat(pos[offsets], n_atoms, axis=0)
        numbers = np.concatenate([np.asarray(a.numbers, dtype=np.int64) for a in atoms_list])
        cell = np.stack([as_cell(a.cell.array) for a in atoms_list])
        pbc = np.stack([as_pbc(a.pbc) for a in atoms_list])
        i = np.concatenate([nb.i + o for nb, o in zip(neighbors, offsets)])
        j = np.concatenate([nb.j + o for nb, o in zip(neighbors, offsets)])
        shifts = np.concatenate([nb.shifts for nb in neighbors])
        batch = np.repeat(np.arange(len(atoms_list)), n_atoms)
        t = lambda a, dt: torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dt)  # noqa: E731
        return cls(
            positions=t(pos, dtype),
            numbers=t(numbers, torch.long),
            cell=t(cell, dtype),
            pbc=t(pbc, torch.bool),
            edge_index=t(np.stack([i, j]), torch.long),
            shifts=t(shifts, dtype),
            batch=t(batch, torch.long),
            n_atoms=t(n_atoms, torch.long),
            cutoff=float(cutoff),
        )

    @property
    def segments(self) -> Segments:
        """System membership of the atoms (what heads pool over), with the
        atomic numbers and each system's periodicity."""
        return Segments(self.batch, self.n_atoms, self.numbers, self.pbc.all(dim=1))

    # ------------------------------------------------------------ geometry
    @property
    def num_systems(self) -> int:
        return int(self.n_atoms.shape[0])

    @property
    def num_atoms(self) -> int:
        return int(self.positions.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return self.positions.dtype

    @property
    def device(self) -> torch.device:
        return self.positions.device

    def edge_vectors(self) -> Tensor:
        """``r_j - r_i + shift @ cell`` for every edge, differentiable in
        positions and cell."""
        i, j = self.edge_index
        edge_batch = self.batch[i]
        offset = torch.einsum("ek,ekl->el", self.shifts, self.cell[edge_batch])
        return self.positions[j] - self.positions[i] + offset

    def volumes(self) -> Tensor:
        return torch.linalg.det(self.cell).abs()

    def sum_per_system(self, per_atom: Tensor) -> Tensor:
        """Sum a per-atom tensor over the atoms of each system."""
        return Segments(self.batch, self.n_atoms).sum(per_atom)

    def mean_per_system(self, per_atom: Tensor) -> Tensor:
        return Segments(self.batch, self.n_atoms).mean(per_atom)

    def split(self, per_atom: Tensor) -> list[Tensor]:
        """Split a per-atom tensor into one tensor per system."""
        return list(torch.split(per_atom, self.n_atoms.tolist()))

    # ----------------------------------------------------------- plumbing
    def replace(self, **changes) -> AtomsGraph:
        return dataclasses.replace(self, **changes)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> AtomsGraph:
        """Move to ``device`` and cast floating tensors to ``dtype``."""
        changes = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                dt = dtype if (dtype is not None and v.is_floating_point()) else None
                changes[f.name] = v.to(device=device if device is not None else v.device, dtype=dt)
        return self.replace(**changes)

    def unique_elements(self) -> set[int]:
        return set(torch.unique(self.numbers).tolist())



# ------------------------------------------------------------------ edge tools
def undirected_edges(edge_index: Tensor, shifts: Tensor) -> tuple[Tensor, Tensor]:
    """Pair each directed edge (i, j, s) with its reverse (j, i, -s).

    Returns ``edge_to_undirected`` (E,) and ``undirected_to_edge`` (U,), the
    latter pointing at one of the two directed edges of each undirected bond.
    Raises if the list is not symmetric (a neighbour list from
    :func:`mpa_ase.neighbors.neighbor_list` always is).
    """
    i, j = edge_index
    s = torch.round(shifts).to(torch.long)
    positive = (s[:, 0] > 0) | ((s[:, 0] == 0) & ((s[:, 1] > 0) | ((s[:, 1] == 0) & (s[:, 2] > 0))))
    forward = (i < j) | ((i == j) & positive)
    a = torch.where(forward, i, j)
    b = torch.where(forward, j, i)
    cs = torch.where(forward[:, None], s, -s)
    # One int64 key per undirected bond; torch.unique over rows (dim=0) is
    # far slower than over scalars.
    n_atoms = int(edge_index.max()) + 1 if edge_index.numel() else 1
    reach = int(s.abs().max()) if s.numel() else 0
    base = 2 * reach + 1
    cs = cs + reach
    key = (((a * n_atoms + b) * base + cs[:, 0]) * base + cs[:, 1]) * base + cs[:, 2]
    _, inverse = torch.unique(key, return_inverse=True)
    n_und = int(inverse.max()) + 1 if inverse.numel() else 0
    counts = torch.bincount(inverse, minlength=n_und)
    if bool((counts != 2).any()):
        raise ValueError("edge list is not symmetric: some edge has no reverse edge")
    edge_ids = torch.arange(i.shape[0], device=i.device)
    und_to_edge = torch.empty(n_und, dtype=torch.long, device=i.device)
    und_to_edge[inverse[forward]] = edge_ids[forward]
    return inverse, und_to_edge


def edge_pairs_by_centre(centres: Tensor, selected: Tensor, num_atoms: int) -> tuple[Tensor, Tensor]:
    """All ordered pairs (e1, e2), e1 != e2, of selected edges sharing a centre.

    ``selected`` holds edge ids; returns the two edge-id columns of the pairs
    (sum over atoms of k(k-1) rows for k selected edges at an atom).
    """
    dev = centres.device
    if selected.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        return empty, empty
    c = centres[selected]
    order = torch.argsort(c, stable=True)
    sel = selected[order]
    c = c[order]
    per_atom = torch.bincount(c, minlength=num_atoms)
    start = torch.cumsum(per_atom, 0) - per_atom
    k = per_atom[c]  # partners (self included) of each selected edge
    first = torch.repeat_interleave(torch.arange(sel.shape[0], device=dev), k)
    within = torch.arange(first.shape[0], device=dev) - torch.repeat_interleave(torch.cumsum(k, 0) - k, k)
    second = start[c[first]] + within
    keep = second != first
    return sel[first[keep]], sel[second[keep]]
