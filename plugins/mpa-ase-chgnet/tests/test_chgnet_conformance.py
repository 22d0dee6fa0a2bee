"""The CHGNet plugin against the backbone conformance kit, and parity with
chgnet's own CHGNetCalculator on the same weights."""

from __future__ import annotations

import pytest

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
