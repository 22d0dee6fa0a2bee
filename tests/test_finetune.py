"""Fine-tuning the backbone on DFT energies/forces/stress: unit conversions of
the offline data, a run that lowers the validation error and loads in the
calculator, bit-identical resume, partial trainability, a second backbone,
and bad input named."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mpa_ase.data.dft import (EV_PER_A3_PER_GPA, LabelledStructure, energy_from_enthalpy, load_structures,
                              vasp_kbar_to_ase)
from mpa_ase.training import run_phase
from mpa_ase.training.finetune import FinetuneOptim, parse_trainable, read_finetune_config, set_trainable

ALEX = {"loader": "alexandria_pressure", "limit": 16, "pressures": [0, 50, 150], "max_atoms": 8}
FAST = {"epochs": 3, "batch_size": 8, "lr": 2e-4}


def test_vasp_units_pinned():
    # 10 kBar compressive (VASP) is -1 GPa tensile (ASE), in eV/Å³; Voigt order xx yy zz yz xz xy
    voigt = vasp_kbar_to_ase([[10.0, 0.0, 0.0], [0.0, 20.0, 3.0], [0.0, 3.0, 30.0]])
    np.testing.assert_allclose(voigt, np.array([-1.0, -2.0, -3.0, -0.3, 0.0, 0.0]) / 160.21766208, rtol=1e-12)
    assert energy_from_enthalpy(-10.0, 100.0, 20.0) == pytest.approx(-10.0 - 100 * 20 / 160.21766208)
    assert EV_PER_A3_PER_GPA == pytest.approx(0.0062415091, rel=1e-8)


def test_alexandria_energies_and_stresses_are_thermodynamically_consistent(shared_data):
    """Between 0 and 25 GPa, dH = V dP (trapezoid in P; V(P) is nearly linear):
    with H = E + P·V from the converted energies this holds to a few percent;
    taking the file's number as the energy (it is the enthalpy) fails it. The
    converted stresses give the target pressure with ASE's sign."""
    structs = load_structures({"loader": "alexandria_pressure", "limit": 30, "pressures": [0, 25],
                               "max_atoms": 16, "seed": 4})
    by = {}
    for s in structs:
        by.setdefault(s.group, {})[s.info["pressure_GPa"]] = s
    p = 25.0 * EV_PER_A3_PER_GPA
    converted, raw = [], []
    for pair in by.values():
        a, b = pair[0], pair[25]
        assert -b.stress[:3].mean() / EV_PER_A3_PER_GPA == pytest.approx(25.0, abs=2.5)
        assert abs(a.stress[:3].mean()) / EV_PER_A3_PER_GPA < 2.5
        va, vb = a.atoms.get_volume(), b.atoms.get_volume()
        expected = 0.5 * (va + vb) * p
        converted.append(abs((b.energy + p * vb) - a.energy - expected) / expected)
        raw.append(abs((b.info["enthalpy_eV"] + p * vb) - a.info["enthalpy_eV"] - expected) / expected)
    assert len(converted) >= 20
    assert np.median(converted) < 0.03 and np.median(raw) > 0.5
    zf = load_structures({"loader": "alexandria_pressure", "limit": 2, "pressures": [25], "zero_forces": True})
    assert all(s.forces.shape == (len(s.atoms), 3) and not s.forces.any() for s in zf)


def test_held_out_data_never_trains(shared_data):
    with pytest.raises(ValueError, match="held out"):
        load_structures({"loader": "phonopy_forces", "names": ["NaCl", "Si"]})
    forces = load_structures({"loader": "phonopy_forces", "names": ["NaCl"]})
    assert forces and all(s.forces is not None and s.energy is None for s in forces)
    # an elemental Si, C or Cu structure is dropped from any training set
    from ase.build import bulk

    from mpa_ase.data.dft import is_held_out

    assert is_held_out(LabelledStructure(bulk("Cu"), "x", "s", "g", energy=-3.0))
    assert not is_held_out(LabelledStructure(bulk("NaCl", "rocksalt", 5.64), "y", "s", "g", energy=-3.0))


def test_bad_config_and_labels_are_named(tmp_path):
    base = {"output": str(tmp_path / "x"), "data": [ALEX]}
    with pytest.raises(ValueError, match="trainable='some'"):
        read_finetune_config({**base, "trainable": "some"})
    with pytest.raises(ValueError, match="last N"):
        parse_trainable("last 0")
    with pytest.raises(ValueError, match="'epochz' \\(did you mean 'epochs'\\?\\)"):
        read_finetune_config({**base, "optim": {"epochz": 3}})
    with pytest.raises(ValueError, match="'stres' \\(did you mean 'stress'\\?\\)"):
        read_finetune_config({**base, "loss": {"stres": 1.0}})
    with pytest.raises(ValueError, match="'modle' \\(did you mean 'model'\\?\\)"):
        read_finetune_config({**base, "backbone": {"name": "chgnet", "modle": "0.3.0"}})
    with pytest.raises(ValueError, match="loss.energy must be"):
        read_finetune_config({**base, "loss": {"energy": -1}})
    with pytest.raises(ValueError, match="needs data"):
        read_finetune_config({"output": "x"})
    for bad in (1.0, -0.1, "0.99", True):
        with pytest.raises(ValueError, match="optim.ema_decay must be a number in \\[0, 1\\)"):
            FinetuneOptim.from_dict({"ema_decay": bad}, 0)
    from ase.build import bulk

    with pytest.raises(ValueError, match="convert to ASE's eV/Å³"):
        LabelledStructure(bulk("NaCl", "rocksalt", 5.64), "x", "s", "g", stress=np.full(6, 150.0))
    with pytest.raises(ValueError, match="forces must be a finite"):
        LabelledStructure(bulk("NaCl", "rocksalt", 5.64), "x", "s", "g", forces=np.zeros((3, 3)))


@pytest.fixture(scope="module")
def chgnet_runs(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("finetune")
    cfg = {"data": [ALEX], "loss": {"forces": 0.0}, "optim": FAST, "split": {"val": 0.25}, "seed": 1}
    full = run_phase("finetune", {**cfg, "output": str(root / "full")}, progress=False)
    first = run_phase("finetune", {**cfg, "output": str(root / "killed")}, progress=False, stop_after=1)
    resumed = run_phase("finetune", {**cfg, "output": str(root / "killed")}, progress=False)
    return {"root": root, "cfg": cfg, "full": full, "first": first, "resumed": resumed}


@pytest.mark.slow
def test_finetuning_lowers_validation_error_and_loads_in_the_calculator(chgnet_runs, shared_data):
    from mpa_ase import MPACalculator

    m = chgnet_runs["full"]["metrics"]
    assert m["val_after"]["stress_mae_GPa"] < m["val_before"]["stress_mae_GPa"]
    assert m["val_after"]["energy_mae_eV_per_atom"] < m["val_before"]["energy_mae_eV_per_atom"]
    assert m["n_train"] > 0 and m["n_val"] > 0 and all(r > 0 for r in m["structures_per_s"])
    path = chgnet_runs["full"]["model"]
    tuned = MPACalculator(model=path, device="cpu")
    base = MPACalculator(backbone="chgnet", device="cpu")
    assert tuned.model.energy_shift is not None and not tuned.heads
    s = load_structures({**ALEX, "limit": 2})[1]
    a = s.atoms.copy()
    a.calc = tuned
    e_tuned, stress_tuned = a.get_potential_energy(), a.get_stress()
    a.calc = base
    assert abs(e_tuned - a.get_potential_energy()) > 1e-3  # the file's weights and energy shift are used
    # conservative forces of the fine-tuned model: finite differences
    from ase.build import bulk

    nacl = bulk("NaCl", "rocksalt", 5.64) * (2, 1, 1)
    nacl.rattle(0.05, seed=2)
    calc64 = MPACalculator(model=path, device="cpu", dtype="float64")
    nacl.calc = calc64
    forces = nacl.get_forces()
    h = 1e-4
    for atom, axis in ((0, 0), (3, 2)):
        plus, minus = nacl.copy(), nacl.copy()
        plus.positions[atom, axis] += h
        minus.positions[atom, axis] -= h
        plus.calc = minus.calc = calc64
        fd = -(plus.get_potential_energy() - minus.get_potential_energy()) / (2 * h)
        assert fd == pytest.approx(forces[atom, axis], abs=1e-5)
    assert np.all(np.isfinite(stress_tuned))


@pytest.mark.slow
def test_killed_finetuning_resumes_to_identical_weights(chgnet_runs):
    assert chgnet_runs["first"]["finished"] is False
    a = torch.load(chgnet_runs["full"]["model"], weights_only=True)
    b = torch.load(chgnet_runs["resumed"]["model"], weights_only=True)
    assert set(a["backbone_state"]) == set(b["backbone_state"])
    for k in a["backbone_state"]:
        assert torch.equal(a["backbone_state"][k], b["backbone_state"][k]), k
    assert torch.equal(a["energy_shift"], b["energy_shift"])
    meta = a["meta"]
    assert meta["base_model"] == "chgnet:default" and meta["data"] == [ALEX] and meta["phase"] == "finetune"


@pytest.mark.slow
def test_last_n_blocks_leaves_the_rest_untouched(tmp_path, shared_data):
    from mpa_ase.backbones import load_backbone

    bb = load_backbone("chgnet")
    params = set_trainable(bb, "last 1")
    last = set(id(p) for p in bb.blocks()[-1].parameters())
    assert params and {id(p) for p in params} == last
    assert all(not p.requires_grad for b in bb.blocks()[:-1] for p in b.parameters())
    with pytest.raises(ValueError, match="has .* blocks"):
        set_trainable(bb, f"last {len(bb.blocks()) + 1}")
    out = run_phase("finetune", {"output": str(tmp_path / "last1"), "data": [{**ALEX, "limit": 6}],
                                 "loss": {"forces": 0.0}, "optim": {"epochs": 1, "batch_size": 6},
                                 "trainable": "last 1"}, progress=False)
    state = torch.load(out["model"], weights_only=True)["backbone_state"]
    ref = load_backbone("chgnet").state_dict()
    first_block = {k for k in ref if k.startswith("model.atom_embedding")}
    assert first_block and all(torch.equal(state[k], ref[k]) for k in first_block)
    readout = [k for k in ref if k.startswith("model.mlp")]
    assert any(not torch.equal(state[k], ref[k]) for k in readout)


@pytest.mark.slow
def test_missing_labels_are_named(tmp_path, shared_data):
    with pytest.raises(ValueError, match="loss.forces = 1.0 but no training structure has forces"):
        run_phase("finetune", {"output": str(tmp_path / "f"), "data": [{**ALEX, "limit": 4}]}, progress=False)


@pytest.mark.slow
def test_finetune_a_second_backbone_matgl(tmp_path, shared_data):
    pytest.importorskip("matgl")
    from mpa_ase import MPACalculator

    path = str(shared_data / "weights" / "matgl" / "TensorNet-MatPES-PBE-v2025.1-PES")
    out = run_phase("finetune", {"output": str(tmp_path / "tn"), "backbone": {"name": "matgl", "model": path},
                                 "data": [{**ALEX, "limit": 6}, {"loader": "phonopy_forces", "names": ["NaCl"]}],
                                 "loss": {"forces": 1.0}, "optim": {"epochs": 2, "batch_size": 6, "lr": 1e-4},
                                 "split": {"val": 0.3}}, progress=False)
    m = out["metrics"]
    assert m["val_after"]["stress_mae_GPa"] <= m["val_before"]["stress_mae_GPa"]
    tuned = MPACalculator(model=out["model"], device="cpu")
    assert tuned.model.backbone.name == "matgl"
    s = load_structures({**ALEX, "limit": 2})[0]
    a = s.atoms.copy()
    a.calc = tuned
    e = a.get_potential_energy()
    a.calc = MPACalculator(backbone="matgl", model=path, device="cpu")
    assert abs(e - a.get_potential_energy()) > 1e-4


@pytest.mark.slow
def test_ema_finetuning_validates_the_average_and_resumes_bit_for_bit(tmp_path, shared_data):
    cfg = {"data": [{**ALEX, "limit": 6}], "loss": {"forces": 0.0}, "trainable": "last 1", "seed": 1,
           "split": {"val": 0.34}}

    def run(name, ema, **kw):
        optim = {"epochs": 3, "batch_size": 2, "lr": 5e-4, "patience": 5, "ema_decay": ema}
        return run_phase("finetune", {**cfg, "optim": optim, "output": str(tmp_path / name)}, progress=False, **kw)

    def curve(out):
        return [h["val_metric"] for h in out["history"]]

    plain, tiny, ema = run("plain", 0.0), run("tiny", 1e-12), run("ema", 0.5)
    # a vanishing decay averages nothing away: the plain run's validation curve
    assert curve(tiny) == pytest.approx(curve(plain), rel=1e-6, abs=1e-9)
    assert max(abs(a - b) for a, b in zip(curve(ema)[1:], curve(plain)[1:])) > 1e-6
    # the run keeps what early stopping validated: the average, when the best epoch is the last
    ckpt = torch.load(tmp_path / "ema" / "checkpoint.pt", weights_only=True)
    kept = torch.load(ema["model"], weights_only=True)["backbone_state"]
    metrics = curve(ema)
    assert ckpt["ema"] is not None and min(metrics) == metrics[-1]
    moved = 0
    for k, v in kept.items():
        assert torch.equal(v, ckpt["ema"]["backbone." + k].to(v.dtype)), k
        moved += not torch.equal(ckpt["ema"]["backbone." + k], ckpt["module"]["backbone." + k])
    assert moved > 0  # the average is not the live weights
    # interrupted after one epoch and resumed: the same weights bit for bit
    assert run("killed", 0.5, stop_after=1)["finished"] is False
    resumed = torch.load(run("killed", 0.5)["model"], weights_only=True)["backbone_state"]
    assert all(torch.equal(resumed[k], kept[k]) for k in kept)
