"""The CHGNet plugin against the backbone conformance kit, and parity with
chgnet's own CHGNetCalculator on the same weights."""

from __future__ import annotations

import pytest
import torch

from mpa_ase.testing import conformance as kit

pytest.importorskip("chgnet")


def test_chgnet_passes_the_conformance_kit():
    report = kit.check_backbone("chgnet", "0.3.0")
    assert report["contract"]["elements"] >= 89 and report["forces_fd"] < 1e-3


def test_chgnet_parity_with_the_native_calculator():
    import warnings

    from chgnet.model import CHGNet, CHGNetCalculator

    from mpa_ase import MPACalculator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        native = CHGNetCalculator(CHGNet.load(model_name="0.3.0", verbose=False), use_device="cpu")
    crystals = [a for a in kit.default_structures() if a.pbc.all()]  # CHGNet's converter needs a 3D cell
    kit.check_parity(MPACalculator(backbone="chgnet", model="0.3.0", device="cpu"), native, crystals,
                     tol=(1e-4, 1e-3, 1e-4))  # float32 on both sides


def _energy_forces_and_weight_grads(backbone, graphs):
    out = []
    for graph in graphs:
        pos = graph.positions.detach().requires_grad_(True)
        res = backbone(graph.replace(positions=pos))
        params = [p for p in backbone.parameters() if p.requires_grad]
        grads = torch.autograd.grad(res["energies"].sum() + res["magmoms"].sum(), [pos, *params], allow_unused=True)
        out.append((res["energies"].detach(), res["features"].detach(), res["magmoms"].detach(),
                    [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]))
    return out


def test_split_layers_compute_what_chgnets_own_layers_do():
    """The split first layers (mpa_ase_chgnet.factored) against CHGNet's own
    layer forward, float64: energies, features, magmoms, forces and every
    weight's gradient (fine-tuning goes through the split path too)."""
    from ase.build import bulk

    from mpa_ase.backbones import load_backbone
    from mpa_ase.graph import AtomsGraph

    backbone = load_backbone("chgnet", model="0.3.0").double()
    backbone.train()  # the path fine-tuning takes; CHGNet 0.3.0 has no active dropout
    si = bulk("Si", "diamond", 5.43, cubic=True)
    si.rattle(0.05, seed=4)
    structures = [*kit.default_structures(), si]
    graphs = [AtomsGraph.from_atoms(a, backbone.cutoff, dtype=torch.float64) for a in structures]
    assert backbone.factored.usable()
    split = _energy_forces_and_weight_grads(backbone, graphs)
    backbone.factored.known = False
    assert not backbone.factored.usable()
    own = _energy_forces_and_weight_grads(backbone, graphs)
    for atoms, (e1, f1, m1, g1), (e2, f2, m2, g2) in zip(structures, split, own):
        assert torch.allclose(e1, e2, rtol=0, atol=1e-10), atoms.get_chemical_formula()
        assert torch.allclose(f1, f2, rtol=0, atol=1e-9)
        assert torch.allclose(m1, m2, rtol=0, atol=1e-10)
        assert len(g1) > 100
        for a, b in zip(g1, g2):
            assert torch.allclose(a, b, rtol=1e-8, atol=1e-10)


def test_split_layers_step_aside_for_dropout_on_their_input():
    """Dropout on a concatenated layer input cannot be split by input: while
    training with it active, CHGNet's own layers run."""
    from mpa_ase.backbones import load_backbone

    backbone = load_backbone("chgnet", model="0.3.0")
    backbone.factored = type(backbone.factored)(backbone.model)
    assert backbone.factored.usable()
    for module in backbone.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.1
    backbone.factored = type(backbone.factored)(backbone.model)
    backbone.train()
    assert not backbone.factored.usable()
    backbone.eval()
    assert backbone.factored.usable()
