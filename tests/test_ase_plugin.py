"""MPACalculator is registered with ASE's plugin system."""

from __future__ import annotations

import pytest


def test_ase_plugin_collection_lists_mpa():
    plugins_mod = pytest.importorskip("ase._4.plugins")
    collection = plugins_mod.PluginCollection.from_entry_points()
    calcs = {p.name: p for p in collection.calculators}
    assert "mpa" in calcs
    from mpa_ase.calculator import MPACalculator

    assert calcs["mpa"].implementation is MPACalculator
    assert calcs["mpa"].package == "mpa_ase"
    assert calcs["mpa"].version  # read from the installed distribution's metadata
