"""Simulation workflows that take ``atoms, calc`` and return standard objects."""

from mpa_ase.workflows.elastic import ElasticResult, elastic
from mpa_ase.workflows.phonons import frequencies, imaginary_modes, phonons, supercell_forces, thermal_properties
from mpa_ase.workflows.batch import evaluate_many
from mpa_ase.workflows.eos import eos
from mpa_ase.workflows.md import MDResult, run_md, run_md_many
from mpa_ase.workflows.relax import RelaxResult, relax, relax_many
from mpa_ase.workflows.screen import iter_structures, screen

__all__ = ["ElasticResult", "MDResult", "RelaxResult", "elastic", "eos", "evaluate_many", "frequencies",
           "imaginary_modes", "relax_many", "run_md_many",
           "iter_structures", "phonons", "relax", "run_md", "screen", "supercell_forces", "thermal_properties"]
