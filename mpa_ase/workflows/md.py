"""Molecular dynamics with ASE's integrators."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase import Atoms, units


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

    if not np.isfinite(timestep_fs) or timestep_fs <= 0:
        raise ValueError(f"timestep_fs must be positive, got {timestep_fs}")
    if not np.isfinite(temperature_K) or temperature_K < 0:
        raise ValueError(f"temperature_K is an absolute temperature (>= 0 K), got {temperature_K}")
    if int(steps) < 0 or int(interval) < 1:
        raise ValueError(f"steps must be >= 0 and interval >= 1, got steps={steps}, interval={interval}")
    if ensemble == "npt" and not atoms.pbc.all():
        raise ValueError("NPT needs a 3D periodic cell")
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
