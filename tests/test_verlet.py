"""Verlet-skin neighbour reuse: same pairs and forces as rebuilding every step."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.langevin import Langevin
from ase.md.verlet import VelocityVerlet

from mpa_ase import MPACalculator
from mpa_ase.neighbors import neighbor_list
from mpa_ase.workflows.md import thermalize_atoms
from mpa_ase.neighbors.verlet import VerletNeighbors


def _pairs(i, j, s):
    """The pairs as rows (i, j, S) in one canonical order: equal lists give equal
    arrays (a repeated pair too, where a set would hide it); sorting in numpy
    keeps 1,000 comparisons of ~16k pairs cheap."""
    rows = np.column_stack([np.asarray(i), np.asarray(j), np.asarray(s)]).astype(np.int64)
    return rows[np.lexsort(rows.T[::-1])]


def test_verlet_list_equals_fresh_list_over_md():
    """Cu at 300 K, 1 fs, 1,000 steps (EMT dynamics): the reused list equals a
    fresh one at every step, and is rebuilt on under 10% of the steps."""
    atoms = bulk("Cu", "fcc", 3.61, cubic=True) * (3, 3, 3)
    atoms.calc = EMT()
    thermalize_atoms(atoms, 600, np.random.default_rng(0))
    verlet = VerletNeighbors(cutoff=5.0, skin=1.0)
    md = VelocityVerlet(atoms, 1.0 * units.fs)
    checked = 0

    def check():
        nonlocal checked
        got = verlet.get(atoms.positions, atoms.cell.array, atoms.pbc)
        ref = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 5.0)
        assert np.array_equal(_pairs(*got), _pairs(*ref))
        checked += 1

    md.attach(check, interval=1)
    md.run(1000)
    assert checked == 1001
    assert verlet.n_builds >= 2  # the skin was really exceeded and rebuilt
    assert verlet.rebuild_fraction < 0.10


def test_verlet_rebuilds_on_cell_change_and_big_moves():
    atoms = bulk("Cu", "fcc", 3.61, cubic=True) * (2, 2, 2)
    verlet = VerletNeighbors(cutoff=4.0, skin=0.6)
    verlet.get(atoms.positions, atoms.cell.array, atoms.pbc)
    pos = atoms.positions.copy()
    pos[0] += [0.25, 0.0, 0.0]  # < skin/2: reuse
    verlet.get(pos, atoms.cell.array, atoms.pbc)
    assert verlet.n_builds == 1
    pos[0] += [0.1, 0.0, 0.0]  # > skin/2 in total: rebuild
    verlet.get(pos, atoms.cell.array, atoms.pbc)
    assert verlet.n_builds == 2
    verlet.get(pos, atoms.cell.array * 1.001, atoms.pbc)  # strained cell: rebuild
    assert verlet.n_builds == 3


def test_calculator_skin_gives_rebuild_every_step_forces():
    """Si at 300 K: MPACalculator with a skin equals skin=0 (float64) to 1e-6 eV/Å."""
    atoms = bulk("Si", "diamond", 5.43, cubic=True) * (2, 2, 2)
    reuse = MPACalculator(backbone="chgnet", dtype="float64", skin=0.3)
    fresh = MPACalculator(backbone="chgnet", dtype="float64", skin=0.0)
    atoms.calc = reuse
    thermalize_atoms(atoms, 900, np.random.default_rng(1))
    md = Langevin(atoms, 2.0 * units.fs, temperature_K=900, friction=0.01, fixcm=False, rng=np.random.default_rng(2))
    worst = []

    def compare():
        probe = atoms.copy()
        probe.calc = fresh
        worst.append(np.abs(atoms.get_forces() - probe.get_forces()).max())
        assert abs(atoms.get_potential_energy() - probe.get_potential_energy()) < 1e-8

    md.attach(compare, interval=1)
    md.run(40)
    assert max(worst) <= 1e-6
    assert 1 < reuse.verlet.n_builds < reuse.verlet.n_calls
    assert fresh.verlet.n_builds == fresh.verlet.n_calls


def test_negative_skin_rejected():
    with pytest.raises(ValueError, match="skin"):
        VerletNeighbors(5.0, skin=-1.0)
