"""Elastic constants from stress-strain: C_ij (GPa), Voigt-Reuss-Hill moduli."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms, units

from mpa_ase.workflows.batch import evaluate_many

EV_PER_A3_TO_GPA = 1.0 / units.GPa


@dataclass
class ElasticResult:
    C: np.ndarray  # (6, 6) GPa, Voigt order xx yy zz yz xz xy, engineering shear strains
    K_voigt: float
    K_reuss: float
    K_vrh: float
    G_voigt: float
    G_reuss: float
    G_vrh: float
    strains: np.ndarray  # (6, n) applied Voigt strains
    stresses: np.ndarray  # (6, n, 6) GPa
    fit_residual: float  # GPa, largest residual of the linear fits

    def as_dict(self) -> dict:
        return {"C_GPa": self.C.tolist(), "K_voigt_GPa": self.K_voigt, "K_reuss_GPa": self.K_reuss,
                "K_vrh_GPa": self.K_vrh, "G_voigt_GPa": self.G_voigt, "G_reuss_GPa": self.G_reuss,
                "G_vrh_GPa": self.G_vrh, "fit_residual_GPa": self.fit_residual}


def voigt_strain_tensor(component: int, value: float) -> np.ndarray:
    """Symmetric strain tensor of one Voigt component (shear as engineering strain 2ε_ij)."""
    eps = np.zeros((3, 3))
    if component < 3:
        eps[component, component] = value
    else:
        i, j = {3: (1, 2), 4: (0, 2), 5: (0, 1)}[component]
        eps[i, j] = eps[j, i] = value / 2
    return eps


def vrh(C: np.ndarray) -> dict:
    """Voigt, Reuss and Hill bulk and shear moduli of a 6x6 stiffness matrix."""
    S = np.linalg.inv(C)
    kv = (C[0, 0] + C[1, 1] + C[2, 2] + 2 * (C[0, 1] + C[1, 2] + C[0, 2])) / 9
    gv = (C[0, 0] + C[1, 1] + C[2, 2] - (C[0, 1] + C[1, 2] + C[0, 2]) + 3 * (C[3, 3] + C[4, 4] + C[5, 5])) / 15
    kr = 1 / (S[0, 0] + S[1, 1] + S[2, 2] + 2 * (S[0, 1] + S[1, 2] + S[0, 2]))
    gr = 15 / (4 * (S[0, 0] + S[1, 1] + S[2, 2]) - 4 * (S[0, 1] + S[1, 2] + S[0, 2]) + 3 * (S[3, 3] + S[4, 4] + S[5, 5]))
    return {"K_voigt": kv, "K_reuss": kr, "K_vrh": (kv + kr) / 2, "G_voigt": gv, "G_reuss": gr, "G_vrh": (gv + gr) / 2}


def elastic(atoms: Atoms, calc, max_strain: float = 0.005, n_strains: int = 4, relax_ions: bool = True,
            fmax: float = 0.005, batch_size: int | None = None) -> ElasticResult:
    """Elastic tensor of a (relaxed) crystal by finite strains.

    Each of the six Voigt strains is applied at ``n_strains`` magnitudes in
    [-max_strain, max_strain] (zero excluded); ions are relaxed at fixed cell
    when ``relax_ions`` (needed for crystals with internal degrees of
    freedom); C_ij is the slope of stress i against strain j, symmetrised.
    The residual stress of the unstrained cell is removed by the linear fit.
    """
    if not atoms.pbc.all():
        raise ValueError("elastic constants need a 3D periodic crystal")
    if not np.isfinite(max_strain) or not 0 < max_strain <= 0.05:
        raise ValueError(f"max_strain must be in (0, 0.05] (a small linear strain), got {max_strain}")
    if n_strains < 2 or n_strains % 2:
        raise ValueError("n_strains must be an even number >= 2")
    half = np.linspace(max_strain / (n_strains // 2), max_strain, n_strains // 2)
    magnitudes = np.concatenate([-half[::-1], half])
    base = atoms.copy()
    base.set_constraint()  # e.g. FixSymmetry would symmetrise the applied strain away
    cells, index = [], []
    for comp in range(6):
        for k, e in enumerate(magnitudes):
            a = base.copy()
            a.set_cell(base.cell.array @ (np.eye(3) + voigt_strain_tensor(comp, e)), scale_atoms=True)
            cells.append(a)
            index.append((comp, k))
    if relax_ions:
        from mpa_ase.workflows.relax import relax

        cells = [relax(a, calc, fmax=fmax, cell=False, steps=300).atoms for a in cells]
    results = evaluate_many(cells, calc, batch_size=batch_size, properties=("energy", "forces", "stress"))
    stresses = np.zeros((6, len(magnitudes), 6))
    for (comp, k), r in zip(index, results):
        stresses[comp, k] = np.asarray(r["stress"]) * EV_PER_A3_TO_GPA
    C = np.zeros((6, 6))
    residual = 0.0
    for j in range(6):
        for i in range(6):
            slope, intercept = np.polyfit(magnitudes, stresses[j, :, i], 1)
            C[i, j] = slope
            residual = max(residual, float(np.abs(stresses[j, :, i] - (slope * magnitudes + intercept)).max()))
    C = 0.5 * (C + C.T)
    m = vrh(C)
    return ElasticResult(C=C, strains=np.tile(magnitudes, (6, 1)), stresses=stresses, fit_residual=residual,
                         **{k: float(v) for k, v in m.items()})
