"""Simulation workflows that take ``atoms, calc`` and return standard objects."""

from mpa_ase.workflows.phonons import frequencies, imaginary_modes, phonons, supercell_forces

__all__ = ["frequencies", "imaginary_modes", "phonons", "supercell_forces"]
