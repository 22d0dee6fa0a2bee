"""Neighbour lists: every backend against ASE and vesin, plus edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.neighborlist import primitive_neighbor_list
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpa_ase.errors import MPAInputError
from mpa_ase.neighbors import BACKENDS, neighbor_list

N_CASES = 2000


def pair_set(i, j, s):
    return set(zip(np.asarray(i).tolist(), np.asarray(j).tolist(), map(tuple, np.asarray(s).tolist())))


def distances(pos, cell, i, j, s):
    return np.linalg.norm(pos[j] - pos[i] + s @ cell, axis=1)


@st.composite
def systems(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(0, 24))
    pbc = np.array(draw(st.lists(st.booleans(), min_size=3, max_size=3)))
    cutoff = draw(st.floats(0.5, 6.0))
    kind = draw(st.sampled_from(["ortho", "triclinic", "skewed", "none"]))
    if kind == "ortho":
        cell = np.diag(rng.uniform(1.5, 9.0, 3))
    elif kind == "triclinic":
        cell = np.diag(rng.uniform(2.0, 8.0, 3)) + np.tril(rng.uniform(-2, 2, (3, 3)), -1)
    elif kind == "skewed":
        a = rng.uniform(2.0, 6.0)
        cell = np.array([[a, 0, 0], [rng.uniform(-3, 3) * a, a, 0], [rng.uniform(-2, 2) * a, rng.uniform(-2, 2) * a, a]])
    else:
        cell = np.zeros((3, 3))
        pbc = np.zeros(3, dtype=bool)
    spacing = 1 / np.linalg.norm(np.linalg.inv(cell), axis=0) if kind != "none" else [np.inf] * 3
    # keep the ASE reference affordable: at most ~8 images per direction
    if kind != "none" and np.any(pbc & (cutoff / np.asarray(spacing) > 8)):
        cutoff = 0.5 * float(np.min(np.asarray(spacing)[pbc]))
    frac = rng.uniform(-0.6, 1.6, (n, 3))
    pos = frac @ cell if kind != "none" else rng.uniform(-4, 4, (n, 3))
    return pos, cell, pbc, cutoff


def _need(backend):
    if backend == "triton":
        pytest.importorskip("triton")


def _check_against_reference(pos, cell, pbc, cutoff, backend, got=None):
    """``got``: the backend's (i, j, S) already computed on this system."""
    _need(backend)
    ai, aj, aS = primitive_neighbor_list("ijS", pbc, cell, pos, cutoff, self_interaction=False)
    i, j, s = got if got is not None else neighbor_list(pos, cell, pbc, cutoff, backend=backend)
    assert len(i) == len(ai)
    assert pair_set(i, j, s) == pair_set(ai, aj, aS)
    if len(i):
        got = dict(zip(zip(i.tolist(), j.tolist(), map(tuple, s.tolist())), distances(pos, cell, i, j, s)))
        ref = distances(pos, cell, ai, aj, aS)
        for key, d in zip(zip(ai.tolist(), aj.tolist(), map(tuple, aS.tolist())), ref):
            assert abs(got[key] - d) < 1e-6
        assert np.all(distances(pos, cell, i, j, s) < cutoff)


CPU_BACKENDS = [b for b in BACKENDS if b != "triton"]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@settings(max_examples=N_CASES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(system=systems())
def test_matches_ase(backend, system):
    _check_against_reference(*system, backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@settings(max_examples=N_CASES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(system=systems())
def test_matches_vesin(backend, system):
    _check_against_vesin(system, backend)


# Triton runs in its interpreter on the CPU (~0.13 s a system, most of the
# suite's neighbour-list time), so each system's list is computed once and
# checked against both references
@settings(max_examples=N_CASES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(system=systems())
def test_triton_matches_ase_and_vesin(system):
    _need("triton")
    got = neighbor_list(*system, backend="triton")
    _check_against_reference(*system, "triton", got=got)
    _check_against_vesin(system, "triton", got=got)


def _check_against_vesin(system, backend, got=None):
    vesin = pytest.importorskip("vesin")
    _need(backend)
    pos, cell, pbc, cutoff = system
    if len(pos) == 0:
        return
    vi, vj, vS = vesin.NeighborList(cutoff=cutoff, full_list=True).compute(pos, cell, pbc.tolist(), "ijS")
    i, j, s = got if got is not None else neighbor_list(pos, cell, pbc, cutoff, backend=backend)
    assert pair_set(i, j, s) == pair_set(vi, vj, vS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_atom_cell_many_images(backend):
    cell = np.array([[2.0, 0, 0], [0.3, 2.1, 0], [0.2, 0.4, 1.9]])
    pos = np.array([[0.1, 0.2, 0.3]])
    _check_against_reference(pos, cell, np.ones(3, bool), 5.5, backend)
    i, j, s = neighbor_list(pos, cell, True, 5.5, backend=backend)
    assert np.all(i == 0) and np.all(j == 0) and not np.any(np.all(s == 0, axis=1))
    assert len(i) > 50  # self-images only, many of them


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_cutoff_is_excluded(backend):
    pos = np.array([[0.0, 0, 0], [2.0, 0, 0], [0, 1.5, 0]])
    i, j, s = neighbor_list(pos, None, False, 2.0, backend=backend)
    assert pair_set(i, j, s) == {(0, 2, (0, 0, 0)), (2, 0, (0, 0, 0))}  # 0-1 at exactly 2.0 Å: out


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_and_isolated(backend):
    i, j, s = neighbor_list(np.zeros((0, 3)), None, False, 3.0, backend=backend)
    assert i.shape == (0,) and s.shape == (0, 3)
    i, j, s = neighbor_list(np.array([[0.0, 0, 0], [10, 0, 0]]), None, False, 3.0, backend=backend)
    assert len(i) == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_in_torch_out_and_sorted(backend):
    rng = np.random.default_rng(0)
    cell = np.diag([5.0, 6.0, 7.0])
    pos = rng.uniform(0, 5, (30, 3))
    i, j, s = neighbor_list(torch.from_numpy(pos), torch.from_numpy(cell), torch.tensor([True, False, True]), 3.0,
                            backend=backend, sort=True)
    assert isinstance(i, torch.Tensor) and i.dtype == torch.long and s.shape[1] == 3
    ni, nj, ns = neighbor_list(pos, cell, [True, False, True], 3.0, backend="torch", sort=True)
    assert np.array_equal(i.numpy(), ni) and np.array_equal(j.numpy(), nj) and np.array_equal(s.numpy(), ns)
    key = np.stack([ni, nj, *ns.T], 1)
    assert all(tuple(a) <= tuple(b) for a, b in zip(key[:-1], key[1:]))


def test_bad_input():
    with pytest.raises(MPAInputError, match="cutoff"):
        neighbor_list(np.zeros((2, 3)), None, False, -1.0)
    with pytest.raises(MPAInputError, match="NaN"):
        neighbor_list(np.array([[0.0, 0, np.nan]]), None, False, 2.0)
    with pytest.raises(MPAInputError, match="vector b"):
        neighbor_list(np.zeros((1, 3)), np.diag([3.0, 0.0, 3.0]), True, 2.0)
    with pytest.raises(MPAInputError, match="unknown neighbour-list backend"):
        neighbor_list(np.zeros((1, 3)), None, False, 2.0, backend="fortran")


def test_mixed_pbc_slab_with_zero_vacuum_vector():
    rng = np.random.default_rng(2)
    cell = np.array([[4.0, 0, 0], [1.0, 4.0, 0], [0, 0, 0]])
    pos = rng.uniform(0, 4, (12, 3))
    pbc = np.array([True, True, False])
    ref_cell = cell.copy(); ref_cell[2, 2] = 1.0  # ASE wants a cell vector; unused along c
    ai, aj, aS = primitive_neighbor_list("ijS", pbc, ref_cell, pos, 3.0, self_interaction=False)
    for backend in BACKENDS:
        i, j, s = neighbor_list(pos, cell, pbc, 3.0, backend=backend)
        assert pair_set(i, j, s) == pair_set(ai, aj, aS)


def test_numba_overflow_path(monkeypatch):
    """Slices sized too small (forced) still give the exact list."""
    from mpa_ase.neighbors import numba_cpu

    monkeypatch.setattr(numba_cpu, "_MARGIN", 0.05)
    rng = np.random.default_rng(5)
    cell = np.diag([9.0, 8.0, 10.0])
    pos = rng.uniform(0, 9, (150, 3))
    pos[:40] = rng.normal(4.0, 0.6, (40, 3))  # a dense clump beside a dilute gas
    _check_against_reference(pos, cell, np.array([True, True, False]), 4.0, "numba")


def _many_chunks(monkeypatch):
    """Chunks and threads even for small lists, as a large list gets them."""
    from mpa_ase.neighbors import numba_cpu

    monkeypatch.setattr(numba_cpu, "thread_budget", lambda: 2)
    monkeypatch.setattr(numba_cpu, "_PARALLEL_MIN_PAIRS", 0)
    return numba_cpu


@pytest.mark.parametrize("seed", range(12))
def test_numba_chunks_of_bins_match_ase(monkeypatch, seed):
    """The parallel scan (chunks of whole bins) on crystals, slabs, skewed cells and clusters."""
    _many_chunks(monkeypatch)
    rng = np.random.default_rng(seed)
    n = int(rng.integers(30, 400))
    kind = seed % 4
    if kind == 3:
        pos, cell, pbc = rng.normal(0, 5, (n, 3)), np.zeros((3, 3)), np.zeros(3, dtype=bool)
    else:
        cell = np.diag(rng.uniform(6, 14, 3)) + (np.tril(rng.uniform(-4, 4, (3, 3)), -1) if kind == 1 else 0)
        pbc = np.array([True, True, kind != 2])
        pos = rng.uniform(-0.2, 1.2, (n, 3)) @ cell
    _check_against_reference(pos, cell, pbc, float(rng.uniform(2.5, 6.0)), "numba")


def test_numba_overflowed_chunks_are_rescanned_in_place(monkeypatch):
    """A chunk denser than its estimate, while the total fits, is scanned again
    straight into its final place; the list is exact and no second buffer is made."""
    numba_cpu = _many_chunks(monkeypatch)
    real_expected, placed = numba_cpu._expected_pairs, []

    def skewed(frac, *args):  # underestimate the low half of the box, overestimate the rest
        e = real_expected(frac, *args)
        return np.where(frac[:, 0] < 0.5, 0.5 * e, 1.8 * e)

    def spy(*args):
        placed.append(args[3].copy())  # the chunks to scan again
        return real_place(*args)

    real_place = numba_cpu._place
    monkeypatch.setattr(numba_cpu, "_expected_pairs", skewed)
    monkeypatch.setattr(numba_cpu, "_place", spy)
    rng = np.random.default_rng(3)
    cell = np.diag([16.0, 15.0, 14.0])
    pos = rng.uniform(0, 1, (900, 3)) @ cell
    _check_against_reference(pos, cell, np.array([True, True, True]), 4.0, "numba")
    assert len(placed) == 1 and 0 < placed[0].sum() < len(placed[0])


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(batch=st.lists(systems(), min_size=1, max_size=6))
def test_many_small_systems_in_one_call_match_ase(batch):
    """neighbor_list_small_batch: one Numba call for many systems, each equal to ASE's list."""
    from mpa_ase.neighbors.geometry import complete_cell
    from mpa_ase.neighbors.numba_cpu import neighbor_list_small_batch

    cutoff = min(c for _, _, _, c in batch)
    n_atoms = np.array([len(p) for p, _, _, _ in batch])
    pos = np.concatenate([p.reshape(-1, 3) for p, _, _, _ in batch])
    cells = np.stack([complete_cell(c, pbc) for _, c, pbc, _ in batch])
    i, j, s, per_system = neighbor_list_small_batch(pos, cells, np.stack([b[2] for b in batch]), n_atoms, cutoff)
    start = 0
    for (p, cell, pbc, _), n in zip(batch, n_atoms):
        mine = (i >= start) & (i < start + n)
        assert np.all((j[mine] >= start) & (j[mine] < start + n))
        ai, aj, aS = primitive_neighbor_list("ijS", pbc, cell, p.reshape(-1, 3), cutoff, self_interaction=False)
        assert pair_set(i[mine] - start, j[mine] - start, s[mine]) == pair_set(ai, aj, aS)
        start += n
    assert per_system.sum() == len(i)


def test_graph_batches_small_systems_in_one_call_and_names_overlaps():
    from ase import Atoms
    from ase.build import bulk, molecule

    from mpa_ase.errors import OverlappingAtomsError
    from mpa_ase.graph import AtomsGraph

    structures = [bulk("Si", "diamond", 5.43), molecule("H2O"), bulk("NaCl", "rocksalt", 5.64) * (2, 1, 1)]
    batched = AtomsGraph.from_atoms(structures, 5.0)
    one_by_one = [AtomsGraph.from_atoms(a, 5.0) for a in structures]
    assert batched.num_edges == sum(g.num_edges for g in one_by_one)
    assert np.allclose(np.sort(np.linalg.norm(batched.edge_vectors().numpy(), axis=1)),
                       np.sort(np.concatenate([np.linalg.norm(g.edge_vectors().numpy(), axis=1) for g in one_by_one])))
    bad = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.05]])
    with pytest.raises(OverlappingAtomsError, match="structure 1 \\(H2\\): atoms 0 and 1 are 0.0500 Å apart"):
        AtomsGraph.from_atoms([structures[0], bad], 5.0)
