"""The MatGL plugin (TensorNet-MatPES-PBE weights from the shared data) against
the backbone conformance kit."""

from __future__ import annotations

import pytest

from mpa_ase.testing import conformance as kit

pytest.importorskip("matgl")


def test_tensornet_passes_the_conformance_kit():
    path = kit.shared_data_or_skip() / "weights" / "matgl" / "TensorNet-MatPES-PBE-v2025.1-PES"
    report = kit.check_backbone("matgl", str(path))
    assert report["contract"]["elements"] >= 80 and report["finetune"]["loss_after"] < report["finetune"]["loss_before"]
