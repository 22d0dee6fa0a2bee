"""Harmonic phonons with phonopy, forces of all displaced supercells in one batch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms

from mpa_ase.workflows.batch import evaluate_many


def to_phonopy_atoms(atoms: Atoms):
    from phonopy.structure.atoms import PhonopyAtoms

    return PhonopyAtoms(
        symbols=atoms.get_chemical_symbols(),
        cell=np.asarray(atoms.cell.array),
        scaled_positions=atoms.get_scaled_positions(wrap=False),
        masses=atoms.get_masses(),
    )


def to_ase_atoms(cell) -> Atoms:
    return Atoms(symbols=cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions,
                 masses=cell.masses, pbc=True)


def supercell_forces(structures: Sequence[Atoms], calc, batch_size: int | None = None) -> np.ndarray:
    """(n_structures, n_atoms, 3) forces, batched where the calculator allows;
    energy and forces only (no strain derivative, no property heads)."""
    return np.array([r["forces"] for r in evaluate_many(structures, calc, batch_size, ("energy", "forces"))])


def phonons(
    atoms: Atoms | None,
    calc,
    supercell=(2, 2, 2),
    displacement: float = 0.01,
    *,
    primitive_matrix="auto",
    symprec: float = 1e-5,
    batch_size: int | None = None,
    symmetrize: bool = True,
    phonon=None,
    progress: bool = False,
):
    """Phonopy object with force constants produced from ``calc``'s forces.

    Args:
        atoms: the (relaxed) unit cell; ignored when ``phonon`` is given.
        calc: MPACalculator (supercells evaluated as one batch) or any ASE calculator.
        supercell: supercell matrix or its diagonal.
        displacement: displacement amplitude in Å.
        batch_size: supercells per model call (all in one call by default).
            On a CPU the model's cost per supercell is the same at any batch
            size (benchmarks/results/phonon_workflow.md); a smaller batch
            only bounds memory. Batching pays where per-call overhead
            dominates (GPUs).
        symmetrize: impose translational invariance and index symmetry on
            the force constants, as ``phonopy.load`` does by default.
        phonon: an existing ``phonopy.Phonopy`` whose displacement dataset is
            to be used as it is (e.g. loaded from ``phonopy_disp.yaml``).
    """
    import phonopy

    if not np.isfinite(displacement) or displacement <= 0:
        raise ValueError(f"displacement must be a positive distance in Å (0.01 is usual), got {displacement}")
    if phonon is None:
        if atoms is None:
            raise ValueError("give atoms or an existing phonopy object")
        if not atoms.pbc.all() or atoms.cell.rank < 3:
            raise ValueError("phonons need a crystal with a 3D periodic cell; for a molecule use "
                             "ase.vibrations.Vibrations")
        matrix = np.diag(supercell) if np.ndim(supercell) == 1 else np.asarray(supercell)
        if matrix.shape != (3, 3) or not np.allclose(matrix, np.round(matrix)) or round(np.linalg.det(matrix)) < 1:
            raise ValueError(f"supercell must be 3 positive integers or a 3x3 integer matrix with det >= 1, "
                             f"got {supercell!r}")
        phonon = phonopy.Phonopy(to_phonopy_atoms(atoms), supercell_matrix=matrix,
                                 primitive_matrix=primitive_matrix, symprec=symprec)
        phonon.generate_displacements(distance=displacement)
    cells = [to_ase_atoms(c) for c in phonon.supercells_with_displacements]
    if progress:
        from tqdm.auto import tqdm

        step = batch_size or 8
        forces = [supercell_forces(cells[k:k + step], calc, batch_size=batch_size)
                  for k in tqdm(range(0, len(cells), step), desc=f"phonons: {len(cells)} displaced supercells",
                                unit="batch")]
        phonon.forces = np.concatenate(forces)
    else:
        phonon.forces = supercell_forces(cells, calc, batch_size=batch_size)
    phonon.produce_force_constants()
    if symmetrize:
        phonon.symmetrize_force_constants()
    return phonon


def thermal_properties(phonon, t_min: float = 0, t_max: float = 1000, t_step: float = 10, mesh=100.0) -> dict:
    """Harmonic free energy F (kJ/mol), entropy S and heat capacity Cv (J/(K mol))
    per unit cell of ``phonon``'s primitive cell, on a Γ-symmetric mesh (phonopy's
    default density 100 Å). Frequencies only: eigenvectors are not needed for
    these sums, and skipping them is most of the mesh's cost."""
    phonon.run_mesh(mesh, with_eigenvectors=False)
    phonon.run_thermal_properties(t_min=t_min, t_max=t_max, t_step=t_step)
    tp = phonon.thermal_properties
    return {"temperatures": tp.temperatures, "free_energy": tp.free_energy, "entropy": tp.entropy,
            "heat_capacity": tp.heat_capacity, "units": {"temperatures": "K", "free_energy": "kJ/mol",
                                                            "entropy": "J/(K*mol)", "heat_capacity": "J/(K*mol)"}}


def frequencies(phonon, q) -> np.ndarray:
    """Phonon frequencies (THz) at one q-point (reduced coordinates of the primitive cell)."""
    phonon.run_qpoints([list(q)])
    return np.asarray(phonon.qpoints.frequencies[0])


def imaginary_modes(phonon, mesh=(10, 10, 10), tolerance: float = -0.05) -> list[dict]:
    """q-points of a mesh with frequencies below ``tolerance`` THz (imaginary
    modes are negative in phonopy's convention)."""
    phonon.run_mesh(list(mesh), with_eigenvectors=False, is_gamma_center=True)
    found = []
    for q, freqs in zip(phonon.mesh.qpoints, phonon.mesh.frequencies):
        low = freqs[freqs < tolerance]
        if len(low):
            found.append({"q": q.tolist(), "frequencies_THz": low.tolist()})
    return found
