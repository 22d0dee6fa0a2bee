"""The ASE contract of MPACalculator: it computes what is asked, keeps its
settings in ``parameters``, decides in one place what ``model=`` means, and
gives the same float32 numbers wherever a structure sits."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from mpa_ase import MPACalculator
from mpa_ase.checkpoint import FORMAT, CheckpointError, load_model
from mpa_ase.errors import MPAInputError


@pytest.fixture(scope="module")
def default_calc():
    return MPACalculator(device="cpu", skin=0.0)


def _spy(calc):
    """Record the work flags of every model call."""
    calls = []
    forward = calc.model.forward

    def recording(graph, compute_forces=True, compute_stress=True, compute_heads=True):
        calls.append({"stress": compute_stress, "heads": compute_heads})
        return forward(graph, compute_forces=compute_forces, compute_stress=compute_stress,
                       compute_heads=compute_heads)

    calc.model.forward = recording
    return calls


def test_forces_only_skips_stress_and_heads(default_calc):
    calc = default_calc
    calls = _spy(calc)
    try:
        atoms = bulk("Si", "diamond", 5.43, cubic=True)
        atoms.rattle(0.03, seed=0)
        atoms.calc = calc
        forces = atoms.get_forces()
        assert calls == [{"stress": False, "heads": False}]
        assert "stress" not in calc.results and "band_gap" not in calc.results
        energy = atoms.get_potential_energy()  # cached: no second call
        assert len(calls) == 1
        stress = atoms.get_stress()  # ASE asks again for what is missing
        assert calls[-1] == {"stress": True, "heads": False}
        gap = calc.get_property("band_gap", atoms)
        assert calls[-1] == {"stress": True, "heads": True} and len(calls) == 3  # stress: asked before
        # what was known is kept, and equals a call that asks for everything
        assert {"energy", "forces", "stress", "band_gap", "band_gap_std"} <= set(calc.results)
        full = calc.calculate_batch([atoms])[0]
        np.testing.assert_allclose(forces, full["forces"], atol=1e-6)
        np.testing.assert_allclose(stress, full["stress"], atol=1e-8)
        assert energy == pytest.approx(full["energy"], abs=1e-6)
        assert gap == pytest.approx(full["band_gap"], abs=1e-6)
        # a changed structure clears everything; the stress, asked for once, now comes with every call
        atoms.positions[0, 0] += 0.01
        atoms.get_forces()
        assert "band_gap" not in calc.results and calls[-1] == {"stress": True, "heads": False}
    finally:
        del calc.model.forward


def test_cell_relaxation_costs_one_model_call_per_step():
    """The cell filter asks for the stress, then the forces, every step: one
    model call per configuration (the start and each step), each with the stress."""
    from mpa_ase.workflows import relax

    calc = MPACalculator(backbone="chgnet", device="cpu", skin=0.0)
    calls = _spy(calc)
    try:
        atoms = bulk("Cu", "fcc", 3.7) * (2, 1, 1)
        atoms.rattle(0.02, seed=1)
        res = relax(atoms, calc, fmax=0.05, steps=30)
        assert res.steps > 3 and len(calls) == res.steps + 1
        assert all(c["stress"] for c in calls)
    finally:
        del calc.model.forward


def test_parameters_todict_and_set():
    calc = MPACalculator(backbone="chgnet", device="cpu", dtype="float64", skin=0.5)
    params = calc.todict()
    assert params["backbone"] == "chgnet" and params["dtype"] == "float64" and params["skin"] == 0.5
    assert calc.parameters["model"] == "default" and calc.parameters["neighbor_backend"] == "auto"
    atoms = bulk("Cu", "fcc", 3.61)
    atoms.calc = calc
    atoms.get_potential_energy()
    changed = calc.set(skin=0.2)
    assert changed == {"skin": 0.2} and calc.neighbors.skin == 0.2 and not calc.results
    assert calc.set(skin=0.2) == {}
    calc.set(dtype="float32")
    assert next(calc.model.parameters()).dtype == torch.float32 and calc.parameters["dtype"] == "float32"
    with pytest.raises(ValueError, match="unknown MPACalculator setting.*skni"):
        calc.set(skni=0.3)
    with pytest.raises(ValueError, match="skin"):
        MPACalculator(backbone="chgnet", skin=-1)
    with pytest.raises(ValueError, match="float16"):
        MPACalculator(backbone="chgnet", dtype=torch.float16)


def test_triton_on_cpu_is_a_clear_error(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(MPAInputError, match="triton.*CUDA.*numba"):
        MPACalculator(backbone="chgnet", device="cpu", neighbor_backend="triton")
    with pytest.raises(MPAInputError, match="unknown neighbour-list backend"):
        MPACalculator(backbone="chgnet", device="cpu", neighbor_backend="cuda")


def test_model_argument_decided_in_one_place(tmp_path, monkeypatch):
    from mpa_ase import checkpoint

    # an mpa-ase model file is read once, and refused with another backbone
    src = checkpoint.DEFAULT_MODEL
    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: reads.append(a[0]) or real_load(*a, **k))
    model = load_model(str(src))
    assert [str(r) for r in reads].count(str(src)) == 1 and len(model.heads) >= 5
    monkeypatch.setattr(torch, "load", real_load)
    with pytest.raises(CheckpointError, match="built on the 'chgnet' backbone, not 'mace'"):
        load_model(str(src), backbone="mace")
    assert len(load_model(str(src), backbone="chgnet").heads) == len(model.heads)
    # damaged, foreign and absent files
    bad = tmp_path / "bad.pt"
    bad.write_bytes(src.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupted or truncated, or not a readable mpa-ase model file"):
        MPACalculator(model=str(bad))
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "mpa-ase-checkpoint/1"}, foreign)
    with pytest.raises(CheckpointError, match="not a model file"):
        load_model(foreign)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "absent.pt")
    obj = torch.load(src, weights_only=True)
    del obj["heads"]
    torch.save(obj, tmp_path / "noheads.pt")
    assert obj["format"] == FORMAT
    with pytest.raises(CheckpointError, match="damaged model file"):
        load_model(tmp_path / "noheads.pt")
    # a missing shipped model is an error, never a silent bare backbone
    monkeypatch.setattr(checkpoint, "DEFAULT_MODEL", tmp_path / "gone.pt")
    with pytest.raises(CheckpointError, match="shipped default model.*missing"):
        MPACalculator()
    # naming the backbone gives that backbone's own weights, without heads
    assert len(MPACalculator(backbone="chgnet").model.heads) == 0


@pytest.mark.parametrize("shift", [1e3, 1e5])
def test_float32_results_do_not_depend_on_where_the_structure_sits(shift):
    """Ethanol in vacuum vs translated far from the origin (float32)."""
    calc = MPACalculator(backbone="chgnet", device="cpu", dtype="float32", skin=0.0)
    ref = molecule("CH3CH2OH")
    far = ref.copy()
    far.positions += shift
    far.cell = np.eye(3) * 2 * shift
    r0, r1 = calc.calculate_batch([ref, far], properties=["energy", "forces"])
    assert abs(r0["energy"] - r1["energy"]) < 1e-5
    np.testing.assert_allclose(r0["forces"], r1["forces"], atol=1e-5)
    # a crystal translated by 1e5 Å: stress too
    si = bulk("Si", "diamond", 5.43, cubic=True)
    si.rattle(0.05, seed=1)
    moved = si.copy()
    moved.positions += shift
    a, b = calc.calculate_batch([si, moved])
    np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-5)
    np.testing.assert_allclose(a["stress"], b["stress"], atol=1e-7)


def test_neighbour_lists_respect_the_users_thread_setting():
    """With OMP_NUM_THREADS=1 no Numba thread pool is started behind the user's back."""
    code = (
        "import numpy as np\n"
        "from ase.build import bulk\n"
        "from mpa_ase.neighbors import neighbor_list\n"
        "from numba.np.ufunc import parallel\n"
        "a = bulk('Cu', 'fcc', 3.61) * (8, 8, 8)\n"
        "i, j, s = neighbor_list(a.positions, a.cell.array, a.pbc, 5.0)\n"
        "from ase.neighborlist import neighbor_list as ase_nl\n"
        "print(len(i) - len(ase_nl('i', a, 5.0)), parallel._is_initialized)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    difference, started = out.stdout.split()
    assert int(difference) == 0 and started == "False"
