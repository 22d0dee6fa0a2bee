"""A conformance kit for backbone plugins: the checks every backbone must
pass, for a plugin's own tests to call (``plugins/<name>/tests/``).

Each check raises ``AssertionError`` naming what failed and returns the
numbers it measured. :func:`check_backbone` runs them all:

- the contract (name, cutoff, supported elements, embedding size, blocks);
- outputs: per-atom energies (N,) and features (N, embedding_dim), finite;
- forces = -dE/dx and stress = dE/dε / V by central finite differences;
- invariances: translation, rotation (forces rotate with the structure),
  permutation of atoms;
- a batch of structures equals each structure alone;
- dtype and device moves (float32 vs float64 agree; ``.to()`` moves every
  parameter);
- a short fine-tuning step: ``trainable: last 1`` changes that block only and
  lowers the loss;
- parity with the native calculator of the same weights
  (:func:`check_parity`, when the plugin passes one).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from ase import Atoms


def default_structures() -> list[Atoms]:
    """Small structures of several chemistries (a crystal, a strained triclinic
    cell, a molecule), for backbones trained on the common elements."""
    from ase.build import bulk, molecule

    nacl = bulk("NaCl", "rocksalt", 5.64).repeat((1, 1, 2))
    nacl.rattle(0.05, seed=1)
    tri = bulk("MgO", "rocksalt", 4.21)
    tri.set_cell(tri.cell.array @ (np.eye(3) + [[0.02, 0.01, 0], [0, -0.01, 0.015], [0.005, 0, 0.01]]),
                 scale_atoms=True)
    tri.rattle(0.04, seed=2)
    water = molecule("H2O")
    water.rattle(0.02, seed=3)
    return [nacl, tri, water]


def structures_for(numbers) -> list[Atoms]:
    """Structures made of a backbone's own elements (the two lowest it supports):
    a rattled rocksalt cell of both and a rattled dimer of the first in vacuum."""
    from ase.build import bulk

    z = sorted(int(x) for x in numbers)[:2]
    z = z if len(z) == 2 else z * 2
    crystal = bulk("NaCl", "rocksalt", 4.6).repeat((1, 1, 2))
    crystal.numbers = [z[k % 2] for k in range(len(crystal))]
    crystal.rattle(0.05, seed=1)
    dimer = Atoms(numbers=[z[0], z[0]], positions=[[0, 0, 0], [0.1, 0.2, 2.4]])
    return [crystal, dimer]


def shared_data_or_skip() -> Path:
    """``$MPA_SHARED_DATA`` (or ``../shared/data`` beside the repository);
    a missing folder skips, and fails under ``CI=true``."""
    import pytest

    here = Path(__file__).resolve().parents[2]
    path = Path(os.environ.get("MPA_SHARED_DATA", here.parent / "shared" / "data"))
    if path.is_dir():
        return path
    msg = "../shared/data is absent (set MPA_SHARED_DATA to its location)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must run every test: {msg}")
    pytest.skip(msg)


def _calc(backbone: str, model, dtype: str = "float64"):
    from mpa_ase import MPACalculator

    return MPACalculator(backbone=backbone, model=model, dtype=dtype, device="cpu", skin=0.0)


def _energy(calc, atoms: Atoms) -> float:
    atoms = atoms.copy()
    atoms.calc = calc
    return float(atoms.get_potential_energy())


def _efs(calc, atoms: Atoms):
    atoms = atoms.copy()
    atoms.calc = calc
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    s = atoms.get_stress() if atoms.pbc.all() else None
    return float(e), f, s


# ------------------------------------------------------------------ checks
def check_contract(backbone) -> dict:
    """The attributes and methods the core relies on."""
    from mpa_ase.backbones.base import Backbone

    assert isinstance(backbone, Backbone), f"{type(backbone).__name__} is not an mpa_ase Backbone"
    assert isinstance(backbone.name, str) and backbone.name, "name must be a non-empty string"
    assert math.isfinite(backbone.cutoff) and backbone.cutoff > 0, f"cutoff {backbone.cutoff} must be > 0 Å"
    numbers = set(backbone.supported_numbers)
    assert numbers and all(isinstance(z, int) and 1 <= z <= 118 for z in numbers), "supported_numbers: Z in 1..118"
    assert isinstance(backbone.embedding_dim, int) and backbone.embedding_dim > 0, "embedding_dim must be > 0"
    assert backbone.default_dtype in (torch.float32, torch.float64), "default_dtype: float32 or float64"
    blocks = list(backbone.blocks())
    assert blocks and all(isinstance(b, torch.nn.Module) for b in blocks), "blocks() must list nn.Modules"
    import json

    json.dumps(backbone.describe(), default=str)
    return {"cutoff": backbone.cutoff, "elements": len(numbers), "embedding_dim": backbone.embedding_dim,
            "blocks": len(blocks)}


def check_outputs(backbone, structures: Sequence[Atoms]) -> dict:
    """energies (N,) and features (N, embedding_dim), finite, for a batch."""
    from mpa_ase.graph import AtomsGraph

    dtype = next(backbone.parameters(), torch.zeros((), dtype=backbone.default_dtype)).dtype
    graph = AtomsGraph.from_atoms(list(structures), backbone.cutoff, dtype=dtype)
    with torch.no_grad():
        out = backbone(graph)
    n = graph.n_atoms.sum().item()
    assert out["energies"].shape == (n,), f"energies shape {tuple(out['energies'].shape)} != ({n},)"
    assert out["features"].shape == (n, backbone.embedding_dim), (
        f"features shape {tuple(out['features'].shape)} != ({n}, {backbone.embedding_dim})")
    assert torch.isfinite(out["energies"]).all() and torch.isfinite(out["features"]).all(), "non-finite outputs"
    for key in backbone.extra_properties:
        assert key in out and out[key].shape[0] == n, f"extra property {key!r} missing or not per atom"
    return {"atoms": n}


def check_forces_fd(calc, atoms: Atoms, step: float = 1e-4, n_components: int = 6, tol: float = 1e-3,
                    seed: int = 0) -> float:
    """Forces against central differences of the energy on random components
    (float64 recommended); returns the largest |difference| in eV/Å."""
    _, forces, _ = _efs(calc, atoms)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for k in rng.choice(len(atoms) * 3, size=min(n_components, len(atoms) * 3), replace=False):
        i, a = divmod(int(k), 3)
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, a] += step
        minus.positions[i, a] -= step
        fd = -(_energy(calc, plus) - _energy(calc, minus)) / (2 * step)
        worst = max(worst, abs(fd - forces[i, a]))
    assert worst <= tol, f"forces differ from -dE/dx by {worst:.3g} eV/Å (> {tol})"
    return worst


def check_stress_fd(calc, atoms: Atoms, step: float = 1e-5, tol: float = 1e-4) -> float:
    """Stress (Voigt, eV/Å³) against central differences of E under strain."""
    _, _, stress = _efs(calc, atoms)
    assert stress is not None, "stress must be returned for a 3D periodic cell"
    voigt = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]
    volume = atoms.get_volume()
    worst = 0.0
    for k, (a, b) in enumerate(voigt):
        energies = []
        for sign in (1, -1):
            eps = np.zeros((3, 3))
            eps[a, b] = eps[b, a] = sign * step if a == b else sign * step / 2  # Voigt: engineering shear
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
            energies.append(_energy(calc, strained))
        fd = (energies[0] - energies[1]) / (2 * step) / volume
        worst = max(worst, abs(fd - stress[k]))
    assert worst <= tol, f"stress differs from dE/dε/V by {worst:.3g} eV/Å³ (> {tol})"
    return worst


def _rotation(seed: int = 0) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def check_invariances(calc, atoms: Atoms, tol_e: float = 1e-5, tol_f: float = 1e-4) -> dict:
    """Translation, rotation and permutation leave E unchanged and move F with the atoms."""
    e0, f0, _ = _efs(calc, atoms)
    moved = atoms.copy()
    moved.positions += np.array([3.1, -7.7, 12.9])
    e1, f1, _ = _efs(calc, moved)
    rot = _rotation()
    turned = atoms.copy()
    turned.positions = atoms.positions @ rot.T
    if atoms.cell.rank == 3:
        turned.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    e2, f2, _ = _efs(calc, turned)
    order = np.random.default_rng(1).permutation(len(atoms))
    shuffled = atoms[order]
    e3, f3, _ = _efs(calc, shuffled)
    n = len(atoms)
    report = {"translation": (abs(e1 - e0) / n, np.abs(f1 - f0).max()),
              "rotation": (abs(e2 - e0) / n, np.abs(f2 - f0 @ rot.T).max()),
              "permutation": (abs(e3 - e0) / n, np.abs(f3 - f0[order]).max())}
    for what, (de, df) in report.items():
        assert de <= tol_e and df <= tol_f, f"{what}: |ΔE| {de:.3g} eV/atom, |ΔF| {df:.3g} eV/Å"
    return report


def check_batch_consistency(calc, structures: Sequence[Atoms], tol_e: float = 1e-5, tol_f: float = 1e-4) -> float:
    """``calculate_batch`` equals each structure alone; returns the largest |ΔF|."""
    batch = calc.calculate_batch(list(structures), properties=["energy", "forces"])
    worst = 0.0
    for atoms, r in zip(structures, batch):
        e, f, _ = _efs(calc, atoms)
        assert abs(r["energy"] - e) / len(atoms) <= tol_e, f"batched energy differs by {abs(r['energy'] - e):.3g} eV"
        worst = max(worst, float(np.abs(r["forces"] - f).max()))
    assert worst <= tol_f, f"batched forces differ by {worst:.3g} eV/Å"
    return worst


def check_dtype_and_device(backbone_name: str, model, atoms: Atoms, tol: float = 1e-4) -> dict:
    """float32 and float64 agree per atom; ``.to()`` moves every parameter and buffer."""
    e32 = _energy(_calc(backbone_name, model, "float32"), atoms)
    c64 = _calc(backbone_name, model, "float64")
    e64 = _energy(c64, atoms)
    de = abs(e32 - e64) / len(atoms)
    assert de <= tol, f"float32 and float64 energies differ by {de:.3g} eV/atom"
    tensors = list(c64.model.parameters()) + [b for b in c64.model.buffers() if b.is_floating_point()]
    assert all(t.dtype == torch.float64 for t in tensors), "some parameter or buffer stayed out of float64"
    devices = {t.device.type for t in list(c64.model.parameters()) + list(c64.model.buffers())}
    assert devices == {"cpu"}, f"parameters and buffers on {devices}, asked for cpu"
    return {"float32_vs_float64_eV_per_atom": de}


def check_finetune_step(backbone_name: str, model, structures: Sequence[Atoms], lr: float = 1e-4) -> dict:
    """One optimizer step on the last block (``trainable: last 1``) towards
    shifted energies and zero forces lowers that loss; with several blocks,
    the last one is a proper part of the backbone (``blocks()`` splits it)."""
    from mpa_ase.checkpoint import load_model
    from mpa_ase.graph import AtomsGraph
    from mpa_ase.training.finetune import set_trainable

    mpa = load_model(model, backbone=backbone_name).to(torch.float64)
    backbone = mpa.backbone
    before = {k: v.detach().clone() for k, v in backbone.state_dict().items()}
    params = set_trainable(backbone, "last 1")
    graph = AtomsGraph.from_atoms(list(structures), mpa.cutoff, dtype=torch.float64)
    mpa.eval()
    with torch.no_grad():
        target = mpa(graph, compute_forces=False, compute_stress=False, compute_heads=False)["energy"] + 0.1

    mpa.train()  # forces inside a loss need the graph of their own derivative

    def loss_value():
        out = mpa(graph, compute_forces=True, compute_stress=False, compute_heads=False)
        return ((out["energy"] - target) / graph.n_atoms).pow(2).mean() + out["forces"].pow(2).mean()

    opt = torch.optim.SGD(params, lr=lr)
    loss0 = loss_value()
    opt.zero_grad()
    loss0.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params), "no gradient reached the last block"
    opt.step()
    loss0 = float(loss0.detach())
    loss1 = float(loss_value().detach())
    trainable = {id(p) for p in params}
    changed = [n for n, p in backbone.named_parameters() if not torch.equal(p.detach(), before[n])]
    frozen_changed = [n for n, p in backbone.named_parameters() if n in changed and id(p) not in trainable]
    assert not frozen_changed, f"frozen parameters changed: {frozen_changed[:3]}"
    assert changed, "the step changed no parameter"
    if len(list(backbone.blocks())) > 1:
        total = sum(1 for _ in backbone.parameters())
        assert len(params) < total, f"'last 1' of {len(list(backbone.blocks()))} blocks trains every parameter"
    assert loss1 < loss0, f"loss did not decrease ({loss0:.6g} -> {loss1:.6g})"
    return {"loss_before": loss0, "loss_after": loss1, "changed_tensors": len(changed)}


def check_parity(ours, native, structures: Sequence[Atoms], tol=(1e-5, 1e-4, 1e-5),
                 prepare: Callable[[Atoms], Atoms] | None = None) -> dict:
    """Energy per atom, forces and stress of ``ours`` vs the native calculator
    of the same weights (``prepare`` adapts a structure for the native side)."""
    worst = [0.0, 0.0, 0.0]
    for atoms in structures:
        e, f, s = _efs(ours, atoms)
        e_ref, f_ref, s_ref = _efs(native, prepare(atoms) if prepare else atoms)
        worst[0] = max(worst[0], abs(e - e_ref) / len(atoms))
        worst[1] = max(worst[1], float(np.abs(f - f_ref).max()))
        if s is not None and s_ref is not None:
            worst[2] = max(worst[2], float(np.abs(s - s_ref).max()))
    labels = ("energy eV/atom", "forces eV/Å", "stress eV/Å³")
    for w, t, label in zip(worst, tol, labels):
        assert w <= t, f"parity: {label} differs by {w:.3g} (> {t})"
    return dict(zip(labels, worst))


def check_backbone(backbone_name: str, model="default", structures: Sequence[Atoms] | None = None, *,
                   fd_tol: float = 1e-3, stress_tol: float = 1e-4, dtype_tol: float = 1e-4,
                   finetune: bool = True) -> dict:
    """Every check above on one backbone and model; returns what each measured."""
    structures = list(structures or default_structures())
    calc = _calc(backbone_name, model, "float64")
    report = {"contract": check_contract(calc.model.backbone),
              "outputs": check_outputs(calc.model.backbone, structures)}
    crystal = next(a for a in structures if a.pbc.all())
    report["forces_fd"] = max(check_forces_fd(calc, a, tol=fd_tol) for a in structures)
    report["stress_fd"] = check_stress_fd(calc, crystal, tol=stress_tol)
    report["invariances"] = {i: check_invariances(calc, a) for i, a in enumerate(structures)}
    report["batch"] = check_batch_consistency(calc, structures)
    report["dtype"] = check_dtype_and_device(backbone_name, model, crystal, tol=dtype_tol)
    if finetune:
        report["finetune"] = check_finetune_step(backbone_name, model, structures[:2])
    return report
