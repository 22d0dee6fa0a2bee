"""Temperature-dependent experimental properties of liquids from ``chemicals``,
evaluated at one stated temperature.

Each source is a published correlation fitted to measurements (no estimation
method), evaluated with ``chemicals``' own function for it and only inside
the correlation's stated validity range: a compound whose range does not
contain the temperature is left out, never extrapolated. The property name
carries the temperature (``surface_tension_298.15K``), so tables at several
temperatures are separate tasks.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np

from mpa_ase.data.samples import Sample


@dataclass(frozen=True)
class Correlation:
    """One table of ``chemicals`` (module attribute ``table``, indexed by CAS),
    the function that evaluates a row at T (``args``: its column names after T),
    and the columns of the validity range."""

    module: str
    table: str
    function: str
    args: tuple[str, ...]
    scale: float = 1.0  # to the property's unit
    tmin: str = "Tmin"
    tmax: str = "Tmax"


@dataclass(frozen=True)
class TemperatureProperty:
    unit: str
    sources: dict[str, Correlation]
    transform: str = "identity"


TEMPERATURE_PROPERTIES: dict[str, TemperatureProperty] = {
    # Mulero & Cachadiña (2012) recommended fits; Jasper (1972) linear fits of measurements
    "surface_tension": TemperatureProperty("N/m", {
        "MULERO_CACHADINA": Correlation("chemicals.interface", "sigma_data_Mulero_Cachadina", "REFPROP_sigma",
                                        ("Tc", "sigma0", "n0", "sigma1", "n1", "sigma2", "n2")),
        "JASPER": Correlation("chemicals.interface", "sigma_data_Jasper_Lange", "Jasper", ("a", "b")),
    }),
    # Dutt & Prasad: fits of measured liquid viscosities, coefficients for mPa s (log-scale target).
    # Viswanath & Natarajan's 3-term table is left out: at 298.15 K 6 of the 47 compounds it
    # shares with Dutt & Prasad differ by 3x to 1e7x (ethanol: 3.1 instead of 1.07 mPa s)
    "liquid_viscosity": TemperatureProperty("Pa s", {
        "DUTT_PRASAD": Correlation("chemicals.viscosity", "mu_data_Dutt_Prasad", "Viswanath_Natarajan_3",
                                   ("A", "B", "C"), scale=1e-3),
    }, transform="log10"),
    # CRC Handbook: polynomial fits of measured static permittivities
    "relative_permittivity": TemperatureProperty("1", {
        "CRC": Correlation("chemicals.permittivity", "permittivity_data_CRC", "permittivity_CRC",
                           ("A", "B", "C", "D")),
    }),
}


def _table(c: Correlation):
    module = importlib.import_module(c.module)
    for loader in ("_load_mu_data", "_load_permittivity_data"):  # chemicals loads some tables lazily
        if hasattr(module, loader) and not hasattr(module, c.table):
            getattr(module, loader)()
    return getattr(module, c.table)


def values_at(property: str, temperature: float, source: str) -> dict[str, float]:
    """CAS -> value at ``temperature`` (K) of every compound whose validity range
    (of ``source``'s correlation) contains it."""
    c = TEMPERATURE_PROPERTIES[property].sources[source]
    fn = getattr(importlib.import_module(c.module), c.function)
    out = {}
    for cas, row in _table(c).iterrows():
        lo, hi = row.get(c.tmin), row.get(c.tmax)
        if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)) or not lo <= temperature <= hi:
            continue
        args = [0.0 if not np.isfinite(row[a]) else float(row[a]) for a in c.args]
        value = float(fn(temperature, *args)) * c.scale
        if np.isfinite(value) and (value > 0 or property != "liquid_viscosity"):
            out[str(cas)] = value
    return out


def load_chemicals_at(property: str, temperature: float, sources: list[str] | None = None,
                      max_heavy_atoms: int = 20, n_conformers: int = 2, seed: int = 0,
                      limit: int | None = None) -> list[Sample]:
    """Experimental values of a temperature-dependent ``property`` at
    ``temperature`` (K), one sample per (source, molecule); see
    :data:`TEMPERATURE_PROPERTIES` for the properties and their sources."""
    from mpa_ase.data.molecules import _chemical_index, _limit_per_source, _parse, molecule_sample
    from mpa_ase.data.samples import deduplicate

    if property not in TEMPERATURE_PROPERTIES:
        raise ValueError(f"unknown temperature-dependent property {property!r}; "
                         f"choose from {sorted(TEMPERATURE_PROPERTIES)}")
    spec = TEMPERATURE_PROPERTIES[property]
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature > 0:
        raise ValueError(f"temperature must be a positive number in K, got {temperature!r}")
    chosen = list(sources) if sources else list(spec.sources)
    bad = [s for s in chosen if s not in spec.sources]
    if bad:
        raise ValueError(f"source {bad[0]!r} is not a source of {property}; choose from {sorted(spec.sources)}")
    smiles_of = dict(_chemical_index())
    name = f"{property}_{float(temperature):g}K"
    samples = []
    for source in chosen:
        for cas, value in values_at(property, float(temperature), source).items():
            smiles = smiles_of.get(cas)
            parsed = _parse(smiles, max_heavy_atoms) if smiles else None
            if not parsed:
                continue
            samples.append(molecule_sample(parsed[0], parsed[1], prop=name, source=source, kind="experimental",
                                           unit=spec.unit, value=value, n_conformers=n_conformers, seed=seed,
                                           extensive=False, transform=spec.transform))
    return _limit_per_source(deduplicate(samples), limit, seed)
