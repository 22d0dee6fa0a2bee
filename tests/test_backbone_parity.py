"""MACE and MatGL backbones against their own ASE calculators, same weights.

MACE: a small MACE trained here on Alexandria PBE data (scripts/train_small_mace.py)
against mace.calculators.MACECalculator on the same file. MatGL: TensorNet-MatPES
and M3GNet-MP weights from the shared data against matgl's PESCalculator.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import warnings

import numpy as np
import pytest
import torch

from conftest import REPO, reference_structures

NAMES = sorted(reference_structures())
TOL = {  # |dE|/atom eV, |dF| eV/Å, |dσ| eV/Å³ (the bounds)
    "float64": (1e-6, 1e-5, 1e-6),
    "float32": (1e-5, 1e-4, 1e-5),
}
MATGL_MODELS = ("TensorNet-MatPES-PBE-v2025.1-PES", "M3GNet-MP-2021.2.8-PES")


def _skip_without(module):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")


@pytest.fixture(scope="session")
def small_mace(shared_data, tmp_path_factory):
    _skip_without("mace")
    sys.path.insert(0, str(REPO / "scripts"))
    from train_small_mace import train

    path = tmp_path_factory.mktemp("mace") / "small.model"
    info = train(path, structures=60, epochs=1, verbose=False)
    assert info["n_train"] >= 50
    return str(path)


def _keep_default_dtype(make):
    previous = torch.get_default_dtype()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return make()
    finally:
        torch.set_default_dtype(previous)  # MACECalculator sets it globally


@pytest.fixture(scope="session")
def calculators(shared_data, small_mace):
    """(ours, native) per (backbone, dtype), built once."""
    from mpa_ase import MPACalculator

    out = {}
    for dtype in TOL:
        def mace_native(dtype=dtype):
            from mace.calculators import MACECalculator

            return MACECalculator(model_paths=small_mace, device="cpu", default_dtype=dtype)

        out[("mace", dtype)] = (MPACalculator(backbone="mace", model=small_mace, dtype=dtype, device="cpu"),
                                _keep_default_dtype(mace_native))
        if importlib.util.find_spec("matgl") is None:
            continue
        for name in MATGL_MODELS:
            path = str(shared_data / "weights" / "matgl" / name)

            def matgl_native(path=path, dtype=dtype):
                import matgl
                from matgl.ext.ase import PESCalculator

                pot = matgl.load_model(path)
                return PESCalculator(pot.double() if dtype == "float64" else pot, stress_unit="eV/A3")

            out[(name, dtype)] = (MPACalculator(backbone="matgl", model=path, dtype=dtype, device="cpu"),
                                  _keep_default_dtype(matgl_native))
    return out


@contextlib.contextmanager
def _native_precision(key, dtype):
    """matgl's converter builds coordinates in matgl.float_th: float64 throughout
    needs its global switch, set only around the native call."""
    if key == "mace" or dtype != "float64":
        yield
        return
    import matgl

    previous = torch.get_default_dtype()
    matgl.set_default_dtype("float", 64)
    try:
        yield
    finally:
        matgl.set_default_dtype("float", 32)
        torch.set_default_dtype(previous)


def _compare(structures, calculators, key, dtype, name):
    if (key, dtype) not in calculators:
        pytest.skip(f"{key} is not installed")
    ours, native = calculators[(key, dtype)]
    atoms = structures[name].copy()
    atoms.calc = ours
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    ref = structures[name].copy()
    if ref.pbc.any() and not ref.pbc.all():
        # matgl's converter drops periodicity unless all three directions are
        # periodic; the slab's vacuum (16 Å) exceeds every cutoff, so full pbc
        # is the same physics
        ref.pbc = True
    ref.calc = native
    with _native_precision(key, dtype):
        e_ref, f_ref = ref.get_potential_energy(), ref.get_forces()
        s_ref = ref.get_stress() if atoms.pbc.all() else None
    te, tf, ts = TOL[dtype]
    n = len(atoms)
    assert abs(e - e_ref) / n <= te, (e, e_ref)
    assert np.abs(f - f_ref).max() <= tf
    if atoms.pbc.all():
        assert np.abs(atoms.get_stress() - s_ref).max() <= ts
    assert abs(e_ref) > 0.5 * n  # not a trivial reference
    assert torch.get_default_dtype() == torch.float32


@pytest.mark.shared_data
@pytest.mark.parametrize("dtype", sorted(TOL))
@pytest.mark.parametrize("name", NAMES)
def test_mace_parity(name, dtype, structures, calculators):
    _compare(structures, calculators, "mace", dtype, name)


@pytest.mark.shared_data
@pytest.mark.parametrize("model", MATGL_MODELS)
@pytest.mark.parametrize("dtype", sorted(TOL))
@pytest.mark.parametrize("name", NAMES)
def test_matgl_parity(name, dtype, model, structures, calculators):
    _compare(structures, calculators, model, dtype, name)


@pytest.mark.shared_data
def test_embeddings_feed_heads(calculators, structures):
    """Invariant features: unchanged under rotation, one row per atom, the declared width."""
    from ase.build import bulk

    for key in ("mace", MATGL_MODELS[0]):
        if (key, "float64") not in calculators:
            continue
        calc = calculators[(key, "float64")][0]
        atoms = structures["TiO2_rutile"].copy()
        g1 = calc.build_graph([atoms])
        f1 = calc.model.backbone(g1)["features"].detach()
        atoms.rotate(37, "x", rotate_cell=True)
        atoms.rotate(-21, "z", rotate_cell=True)
        f2 = calc.model.backbone(calc.build_graph([atoms]))["features"].detach()
        assert f1.shape == (len(atoms), calc.model.backbone.embedding_dim)
        assert torch.allclose(f1, f2, atol=1e-6)
        assert f1.std() > 1e-3
    assert bulk  # noqa


def test_absent_or_bad_models_are_named(tmp_path):
    from mpa_ase.backbones import load_backbone
    from mpa_ase.errors import CheckpointError

    if importlib.util.find_spec("mace") is not None:
        bad = tmp_path / "broken.model"
        bad.write_bytes(b"not a model")
        with pytest.raises(CheckpointError, match="cannot read MACE model file"):
            load_backbone("mace", model=str(bad))
        with pytest.raises(CheckpointError, match="no such file"):
            load_backbone("mace", model=str(tmp_path / "absent.model"))
    if importlib.util.find_spec("matgl") is not None:
        with pytest.raises(CheckpointError, match="cannot load matgl model"):
            load_backbone("matgl", model=str(tmp_path))
