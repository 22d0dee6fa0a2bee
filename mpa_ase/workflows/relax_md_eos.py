"""Relaxation, molecular dynamics and equations of state with ASE's own tools."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms, units

from mpa_ase.workflows.phonons import evaluate_many


@dataclass
class RelaxResult:
    atoms: Atoms
    converged: bool
    steps: int
    energy: float  # eV
    fmax: float  # eV/Å, largest atomic force at the end
    smax: float | None  # eV/Å^3, largest stress component at the end (cell relaxations)


def relax(atoms: Atoms, calc, fmax: float = 0.02, steps: int = 500, cell: bool = True,
          symmetry: bool = False, optimizer: str = "FIRE", logfile=None) -> RelaxResult:
    """Relax positions (and the cell, through ``FrechetCellFilter``) of a copy of ``atoms``.

    Not converging within ``steps`` is reported in the result and as a warning.
    """
    from ase import optimize
    from ase.filters import FrechetCellFilter

    atoms = atoms.copy()
    atoms.calc = calc
    if symmetry:
        from ase.constraints import FixSymmetry

        atoms.set_constraint(FixSymmetry(atoms))
    cell = cell and bool(atoms.pbc.all())
    target = FrechetCellFilter(atoms) if cell else atoms
    if not isinstance(getattr(optimize, optimizer, None), type):
        raise ValueError(f"unknown optimizer {optimizer!r}; use an ase.optimize class name (FIRE, BFGS, LBFGS, ...)")
    opt = getattr(optimize, optimizer)(target, logfile=logfile)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    forces = atoms.get_forces()
    if symmetry:
        atoms.set_constraint()  # the result is a plain structure; FixSymmetry would follow it around
    result = RelaxResult(
        atoms=atoms, converged=converged, steps=opt.nsteps, energy=atoms.get_potential_energy(),
        fmax=float(np.linalg.norm(forces, axis=1).max()),
        smax=float(np.abs(atoms.get_stress()).max()) if cell else None,
    )
    if not converged:
        warnings.warn(f"relaxation of {atoms.get_chemical_formula()} did not converge in {steps} steps "
                      f"(fmax {result.fmax:.3g} eV/Å > {fmax})", stacklevel=2)
    return result


@dataclass
class MDResult:
    atoms: Atoms
    times_fs: np.ndarray
    potential_energy: np.ndarray  # eV
    total_energy: np.ndarray  # eV
    temperature: np.ndarray  # K
    drift_meV_per_atom: float = field(default=0.0)  # (E_tot end - start) per atom


def run_md(atoms: Atoms, calc, ensemble: str = "nve", temperature_K: float = 300.0, timestep_fs: float = 1.0,
           steps: int = 1000, interval: int = 10, friction: float = 0.01, ttime_fs: float = 100.0,  # friction in 1/fs
           pressure_GPa: float = 0.0, seed: int = 0, trajectory: str | None = None,
           logfile: str | None = None, thermalize: bool = True) -> MDResult:
    """Molecular dynamics on a copy of ``atoms`` with ASE's integrators.

    ensemble: "nve" (velocity Verlet), "langevin", "nose-hoover" (NVT chain)
    or "npt" (Nosé-Hoover with isotropic barostat, MTK). Records energies and
    temperature every ``interval`` steps.
    """
    from ase.md import Langevin, VelocityVerlet

    atoms = atoms.copy()
    atoms.calc = calc
    rng = np.random.default_rng(seed)
    if thermalize:
        try:
            from ase.md.velocitydistribution import thermalize_momenta
        except ImportError:  # pragma: no cover - ASE < 3.29
            from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta
        thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)
    dt = timestep_fs * units.fs
    if ensemble == "nve":
        dyn = VelocityVerlet(atoms, dt, trajectory=trajectory, logfile=logfile)
    elif ensemble == "langevin":
        dyn = Langevin(atoms, dt, temperature_K=temperature_K, friction=friction / units.fs,
                       fixcm=False, rng=rng, trajectory=trajectory, logfile=logfile)
    elif ensemble == "nose-hoover":
        from ase.md.nose_hoover_chain import NoseHooverChainNVT

        dyn = NoseHooverChainNVT(atoms, dt, temperature_K=temperature_K, tdamp=ttime_fs * units.fs,
                                 trajectory=trajectory, logfile=logfile)
    elif ensemble == "npt":
        from ase.md.nose_hoover_chain import IsotropicMTKNPT

        dyn = IsotropicMTKNPT(atoms, dt, temperature_K=temperature_K, pressure_au=pressure_GPa * units.GPa,
                              tdamp=ttime_fs * units.fs, pdamp=10 * ttime_fs * units.fs,
                              trajectory=trajectory, logfile=logfile)
    else:
        raise ValueError(f"unknown ensemble {ensemble!r}; choose nve, langevin, nose-hoover or npt")
    record = {"t": [], "epot": [], "etot": [], "temp": []}

    def sample():
        epot = atoms.get_potential_energy()
        record["t"].append(dyn.nsteps * timestep_fs)
        record["epot"].append(epot)
        record["etot"].append(epot + atoms.get_kinetic_energy())
        record["temp"].append(atoms.get_temperature())

    dyn.attach(sample, interval=interval)  # ASE also calls it at step 0
    dyn.run(steps)
    etot = np.array(record["etot"])
    return MDResult(
        atoms=atoms, times_fs=np.array(record["t"]), potential_energy=np.array(record["epot"]),
        total_energy=etot, temperature=np.array(record["temp"]),
        drift_meV_per_atom=float(1e3 * (etot[-1] - etot[0]) / len(atoms)),
    )


def eos(atoms: Atoms, calc, n_points: int = 11, max_strain: float = 0.04, eos_name: str = "birchmurnaghan",
        relax_positions: bool = False) -> dict:
    """Equation of state from ``n_points`` isotropically scaled cells (linear
    strain up to ±``max_strain``), all evaluated in one batch where possible.

    Returns v0 (Å³), e0 (eV), bulk_modulus (GPa), the fit type, the volumes,
    energies and fit residuals (eV).
    """
    from ase.eos import EquationOfState

    if n_points < 5 or not 0 < max_strain < 0.5:
        raise ValueError(f"eos needs n_points >= 5 and 0 < max_strain < 0.5, got {n_points}, {max_strain}")
    scales = np.linspace(1 - max_strain, 1 + max_strain, n_points)
    cells = []
    for s in scales:
        a = atoms.copy()
        a.set_cell(atoms.cell.array * s, scale_atoms=True)
        if relax_positions:
            a = relax(a, calc, cell=False).atoms
        cells.append(a)
    energies = np.array([r["energy"] for r in evaluate_many(cells, calc, properties=("energy", "forces"))])
    volumes = np.array([a.get_volume() for a in cells])
    fit = EquationOfState(volumes, energies, eos=eos_name)
    v0, e0, b = fit.fit()
    residuals = energies - fit.func(volumes, *fit.eos_parameters)
    return {
        "v0": float(v0), "e0": float(e0), "bulk_modulus": float(b / units.GPa), "fit": eos_name,
        "volumes": volumes, "energies": energies, "residuals": residuals,
        "max_residual": float(np.abs(residuals).max()),
    }
