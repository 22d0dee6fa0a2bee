"""Temperature-dependent experimental tables from ``chemicals`` at a stated
temperature: values against handbook numbers, validity ranges respected,
samples ready for training."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("chemicals")
pytest.importorskip("rdkit")

from mpa_ase.data.temperature import TEMPERATURE_PROPERTIES, _table, load_chemicals_at, values_at  # noqa: E402

WATER, ETHANOL, BENZENE = "7732-18-5", "64-17-5", "71-43-2"


def test_values_at_298K_match_handbook_numbers():
    # CRC Handbook, 25 °C: water 71.97 mN/m and relative permittivity 78.36;
    # viscosity of ethanol 1.074 mPa s, of benzene 0.604 mPa s
    assert values_at("surface_tension", 298.15, "MULERO_CACHADINA")[WATER] == pytest.approx(0.07197, rel=0.01)
    assert values_at("relative_permittivity", 298.15, "CRC")[WATER] == pytest.approx(78.36, rel=0.005)
    mu = values_at("liquid_viscosity", 298.15, "DUTT_PRASAD")
    assert mu[ETHANOL] == pytest.approx(1.074e-3, rel=0.03) and mu[BENZENE] == pytest.approx(0.604e-3, rel=0.03)
    # two independent surface-tension sources agree on the compounds they share
    a = values_at("surface_tension", 298.15, "MULERO_CACHADINA")
    b = values_at("surface_tension", 298.15, "JASPER")
    shared = sorted(set(a) & set(b))
    assert len(shared) >= 20
    assert np.median([abs(b[k] / a[k] - 1) for k in shared]) < 0.02


def test_only_inside_each_correlations_validity_range():
    for prop, spec in TEMPERATURE_PROPERTIES.items():
        for source, corr in spec.sources.items():
            table = _table(corr)
            for t in (250.0, 298.15, 400.0):
                got = values_at(prop, t, source)
                assert got, (prop, source, t)
                for cas in got:
                    assert table.loc[cas, corr.tmin] <= t <= table.loc[cas, corr.tmax], (prop, source, cas, t)
            assert values_at(prop, 5000.0, source) == {}  # beyond every range: nothing, never extrapolated


def test_loader_gives_training_samples_and_refuses_bad_requests():
    from mpa_ase.data import load_source

    samples = load_source({"loader": "chemicals_at", "property": "liquid_viscosity", "temperature": 298.15,
                           "n_conformers": 1})
    assert len(samples) >= 40
    s = samples[0]
    assert s.property == "liquid_viscosity_298.15K" and s.unit == "Pa s" and s.kind == "experimental"
    assert s.transform == "log10" and s.extensive is False and s.task == "liquid_viscosity_298.15K@DUTT_PRASAD"
    assert all(1e-5 < x.value < 1.0 for x in samples)
    atoms = s.build()[0]
    assert len(atoms) > 1 and not atoms.pbc.any()
    for kwargs, match in (({"property": "vapour_pressure", "temperature": 298.15}, "unknown temperature-dependent"),
                          ({"property": "surface_tension", "temperature": -3}, "positive number in K"),
                          ({"property": "surface_tension", "temperature": 298.15, "sources": ["VN3"]},
                           "not a source of surface_tension")):
        with pytest.raises(ValueError, match=match):
            load_chemicals_at(**kwargs)
