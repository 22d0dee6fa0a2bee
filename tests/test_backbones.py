"""Backbone discovery through entry points, with a toy backbone package."""

from __future__ import annotations

import importlib
import sys
import textwrap

import numpy as np
import pytest
from ase.build import bulk
from ase.neighborlist import primitive_neighbor_list

import mpa_ase
from mpa_ase.backbones import ENTRY_POINT_GROUP, list_backbones, load_backbone

TOY_SOURCE = textwrap.dedent(
    '''
    import torch
    from mpa_ase.backbones import Backbone

    class PairBackbone(Backbone):
        """Morse pairs: E = sum_{i<j} D (1 - exp(-a (r - r0)))^2 - D, smoothly cut."""
        name = "toy"
        def __init__(self, cutoff=4.0):
            super().__init__()
            self.cutoff = cutoff
            self.supported_numbers = frozenset({14})
            self.embedding_dim = 1
            self.default_dtype = torch.float64
        def forward(self, graph):
            r = torch.linalg.norm(graph.edge_vectors(), dim=1)
            x = r / self.cutoff
            pair = ((1 - torch.exp(-1.5 * (r - 2.35))) ** 2 - 1) * (1 - x ** 2) ** 2
            e = pair.new_zeros(graph.num_atoms).index_add_(0, graph.edge_index[0], 0.5 * pair)
            return {"energies": e, "features": e[:, None]}

    def load_backbone(model=None, **options):
        return PairBackbone(**options)
    '''
)


def install_fake_distribution(root, monkeypatch, module: str, source: str, entry_point: str) -> None:
    """Lay out a one-module distribution the way pip installs one, on sys.path."""
    (root / f"{module}.py").write_text(source)
    dist = root / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry_point}\n")
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()


@pytest.fixture
def toy_package(tmp_path, monkeypatch):
    install_fake_distribution(tmp_path, monkeypatch, "toy_backbone", TOY_SOURCE, "toy = toy_backbone:load_backbone")
    yield
    sys.modules.pop("toy_backbone", None)


def _toy_reference_energy(atoms, cutoff=4.0):
    i, j, d = primitive_neighbor_list("ijd", atoms.pbc, atoms.cell, atoms.positions, cutoff)
    x = d / cutoff
    pair = ((1 - np.exp(-1.5 * (d - 2.35))) ** 2 - 1) * (1 - x**2) ** 2
    return 0.5 * pair.sum()


def test_toy_backbone_found_through_entry_point(toy_package):
    rows = {r["name"]: r for r in list_backbones()}
    assert rows["toy"]["package"] == "toy-backbone"
    assert "chgnet" in rows
    atoms = bulk("Si", "diamond", 5.43) * (2, 1, 1)
    atoms.rattle(0.05, seed=0)
    atoms.calc = mpa_ase.MPACalculator(backbone="toy")
    assert atoms.calc.dtype.is_floating_point
    e = atoms.get_potential_energy()
    assert e == pytest.approx(_toy_reference_energy(atoms), abs=1e-10)
    # forces by autograd equal finite differences of the reference energy
    h = 1e-5
    p = atoms.copy(); p.positions[3, 1] += h
    m = atoms.copy(); m.positions[3, 1] -= h
    fd = -(_toy_reference_energy(p) - _toy_reference_energy(m)) / (2 * h)
    assert atoms.get_forces()[3, 1] == pytest.approx(fd, abs=1e-7)


def test_toy_backbone_rejects_other_elements(toy_package):
    atoms = bulk("Ge", "diamond", 5.65)
    atoms.calc = mpa_ase.MPACalculator(backbone="toy")
    with pytest.raises(mpa_ase.errors.UnsupportedElementError, match="'toy' does not support element.*Ge"):
        atoms.get_potential_energy()


def test_loader_must_return_a_backbone(tmp_path, monkeypatch):
    install_fake_distribution(tmp_path, monkeypatch, "bad_backbone",
                              "def load(model=None, **kw):\n    return object()\n", "bad = bad_backbone:load")
    with pytest.raises(TypeError, match="not an mpa_ase.backbones.Backbone"):
        load_backbone("bad")


def test_core_does_not_import_backbone_libraries():
    import subprocess

    code = (
        "import sys, mpa_ase, mpa_ase.calculator, mpa_ase.model, mpa_ase.graph;"
        "bad = [m for m in ('chgnet', 'mace', 'matgl') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_lists_backbones():
    import subprocess

    out = subprocess.run([sys.executable, "-m", "mpa_ase.cli", "list-backbones"], check=True,
                         capture_output=True, text=True).stdout
    assert "chgnet" in out and "mpa-ase-chgnet" in out


def test_plugin_template_installs_and_runs():
    """examples/backbone-plugin-template, installed by the README test command."""
    pytest.importorskip("mpa_ase_morse", reason="pip install ./examples/backbone-plugin-template")
    assert "morse" in {r["name"] for r in list_backbones()}
    atoms = bulk("Cu", "fcc", 3.61) * (2, 2, 2)
    atoms.rattle(0.05, seed=4)
    atoms.calc = mpa_ase.MPACalculator(backbone="morse")
    i, j, d = primitive_neighbor_list("ijd", atoms.pbc, atoms.cell, atoms.positions, 6.0)
    depth, alpha, r0 = 0.3429, 1.3588, 2.866
    ref = 0.5 * np.sum(depth * ((1 - np.exp(-alpha * (d - r0))) ** 2 - 1) * (1 - (d / 6.0) ** 2) ** 2)
    assert atoms.get_potential_energy() == pytest.approx(ref, abs=1e-9)
    assert np.abs(atoms.get_forces().sum(axis=0)).max() < 1e-10  # momentum conservation


def test_matgl_hub_name_offline_is_refused_at_once(monkeypatch, tmp_path):
    pytest.importorskip("matgl")
    import time

    import matgl.config

    from mpa_ase import MPACalculator
    from mpa_ase.errors import CheckpointError

    monkeypatch.delenv("MPA_ALLOW_DOWNLOAD", raising=False)
    monkeypatch.setattr(matgl.config, "MATGL_CACHE", tmp_path)  # an empty cache
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="neither a local folder nor in matgl's cache"):
        MPACalculator(backbone="matgl", model="TensorNet-MatPES-PBE-v2025.1-PES")
    assert time.perf_counter() - t0 < 5.0  # no network retries
