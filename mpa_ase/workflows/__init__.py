"""Simulation workflows that take ``atoms, calc`` and return standard objects."""

from mpa_ase.workflows.phonons import frequencies, imaginary_modes, phonons, supercell_forces

from mpa_ase.workflows.relax_md_eos import MDResult, RelaxResult, eos, relax, run_md

__all__ = ["MDResult", "RelaxResult", "eos", "relax", "run_md", "frequencies", "imaginary_modes", "phonons", "supercell_forces"]
