"""The template plugin passes the backbone conformance kit (a plugin author's
first test: copy it and name your backbone)."""

from __future__ import annotations

from mpa_ase.testing import conformance as kit


def test_morse_passes_the_conformance_kit():
    from mpa_ase_morse import MorseBackbone

    structures = kit.structures_for(MorseBackbone().supported_numbers)
    # a pair potential with fixed parameters (buffers): nothing to fine-tune
    report = kit.check_backbone("morse", "Cu", structures, finetune=False)
    assert report["forces_fd"] < 1e-6 and report["stress_fd"] < 1e-7
