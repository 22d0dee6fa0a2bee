"""The MACE plugin against the backbone conformance kit, on a small MACE
trained here on Alexandria PBE data (scripts/train_small_mace.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mpa_ase.testing import conformance as kit

pytest.importorskip("mace")

REPO = Path(__file__).resolve().parents[3]


def test_small_mace_passes_the_conformance_kit(tmp_path):
    kit.shared_data_or_skip()
    sys.path.insert(0, str(REPO / "scripts"))
    from train_small_mace import train

    path = tmp_path / "small.model"
    train(path, structures=40, epochs=1, verbose=False)
    from mpa_ase import MPACalculator

    numbers = MPACalculator(backbone="mace", model=str(path), device="cpu").model.backbone.supported_numbers
    report = kit.check_backbone("mace", str(path), kit.structures_for(numbers))
    assert report["forces_fd"] < 1e-3
