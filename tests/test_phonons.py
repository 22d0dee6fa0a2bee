"""Phonon workflow: plumbing on phonopy's DFT examples, then the default model."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes

phonopy = pytest.importorskip("phonopy")

from mpa_ase.workflows import frequencies, imaginary_modes, phonons  # noqa: E402

QPOINTS = [[0, 0, 0], [0.5, 0, 0.5], [0.5, 0.5, 0.5], [0.375, 0.375, 0.75], [0.1, 0.2, 0.3]]


class ForceSetsCalculator(Calculator):
    """Returns the DFT forces stored for each displaced supercell (by position)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, supercells, forces):
        super().__init__()
        self.table = [(np.asarray(c.positions), f) for c, f in zip(supercells, forces)]

    def calculate(self, atoms=None, properties=("forces",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        for pos, forces in self.table:
            if pos.shape == self.atoms.positions.shape and np.allclose(pos, self.atoms.positions, atol=1e-8):
                self.results = {"energy": 0.0, "forces": forces}
                return
        raise KeyError("no stored forces for this supercell")


@pytest.mark.parametrize("example", ["NaCl", "MgO"])
def test_workflow_reproduces_phonopy_with_dft_forces(shared_data, example):
    folder = shared_data / "phonons" / "phonopy_examples" / example
    reference = phonopy.load(folder / "phonopy_disp.yaml", force_sets_filename=folder / "FORCE_SETS",
                             primitive_matrix="auto", is_nac=False, produce_fc=True)
    ours = phonopy.load(folder / "phonopy_disp.yaml", primitive_matrix="auto", is_nac=False, produce_fc=False)
    from mpa_ase.workflows.phonons import to_ase_atoms

    cells = [to_ase_atoms(c) for c in reference.supercells_with_displacements]
    calc = ForceSetsCalculator(cells, reference.forces)
    ours = phonons(None, calc, phonon=ours)
    for q in QPOINTS:
        assert np.allclose(frequencies(ours, q), frequencies(reference, q), atol=1e-6)
    assert frequencies(reference, [0.5, 0.5, 0.5]).max() > 3.0  # real, non-trivial spectra
    # thermal properties without eigenvectors equal phonopy's usual route with them
    from mpa_ase.workflows import thermal_properties

    tp = thermal_properties(ours, t_min=0, t_max=1000, t_step=100, mesh=[12, 12, 12])
    reference.run_mesh([12, 12, 12], with_eigenvectors=True)
    reference.run_thermal_properties(t_min=0, t_max=1000, t_step=100)
    ref = reference.thermal_properties
    for key in ("free_energy", "entropy", "heat_capacity"):
        assert np.allclose(tp[key], getattr(ref, key), rtol=1e-9, atol=1e-9), key
    assert tp["units"]["free_energy"] == "kJ/mol" and tp["heat_capacity"][-1] > 40  # 2 atoms: Dulong-Petit ~ 6R


def test_si_phonons_match_plain_phonopy_with_native_chgnet(chgnet_calc, chgnet_native):
    """One batched call for all supercells == phonopy driven by CHGNetCalculator,
    one call per displacement (same displacements), at Gamma, X and L."""
    from mpa_ase.workflows.phonons import supercell_forces, to_ase_atoms

    si = bulk("Si", "diamond", 5.43)
    ours = phonons(si, chgnet_calc, supercell=(2, 2, 2))
    plain = phonopy.Phonopy(ours.unitcell, supercell_matrix=ours.supercell_matrix, primitive_matrix="auto")
    plain.dataset = ours.dataset
    plain.forces = supercell_forces([to_ase_atoms(c) for c in plain.supercells_with_displacements], chgnet_native)
    plain.produce_force_constants()
    plain.symmetrize_force_constants()
    for q in ([0, 0, 0], [0.5, 0, 0.5], [0.5, 0.5, 0.5]):  # Gamma, X, L (primitive basis)
        assert np.allclose(frequencies(ours, q), frequencies(plain, q), atol=0.05)
    gamma = frequencies(ours, [0, 0, 0])
    assert abs(gamma[:3]).max() < 0.05  # acoustic modes at Gamma
    assert gamma[3:].max() > 10.0  # optical mode exists (CHGNet gives ~13.1 THz; experiment 15.53 THz)
    assert imaginary_modes(ours, mesh=(6, 6, 6)) == []
