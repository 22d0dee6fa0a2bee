"""Simulation workflows that take ``atoms, calc`` and return standard objects."""

from mpa_ase.workflows.elastic import ElasticResult, elastic
from mpa_ase.workflows.phonons import frequencies, imaginary_modes, phonons, supercell_forces, thermal_properties
from mpa_ase.workflows.relax_md_eos import MDResult, RelaxResult, eos, relax, run_md
from mpa_ase.workflows.screen import iter_structures, screen

__all__ = ["ElasticResult", "MDResult", "RelaxResult", "elastic", "eos", "frequencies", "imaginary_modes",
           "iter_structures", "phonons", "relax", "run_md", "screen", "supercell_forces", "thermal_properties"]
