"""Molecular dynamics with ASE's integrators."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase import Atoms, units


def thermalize_atoms(atoms: Atoms, temperature_K: float, rng) -> None:
    """Maxwell-Boltzmann momenta (ASE's ``thermalize_momenta``; its older name before ASE 3.29)."""
    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # pragma: no cover - ASE < 3.29
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta
    thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)


def _check_md_settings(timestep_fs, temperature_K, steps, interval) -> None:
    if not np.isfinite(timestep_fs) or timestep_fs <= 0:
        raise ValueError(f"timestep_fs must be positive, got {timestep_fs}")
    if not np.isfinite(temperature_K) or temperature_K < 0:
        raise ValueError(f"temperature_K is an absolute temperature (>= 0 K), got {temperature_K}")
    if int(steps) < 0 or int(interval) < 1:
        raise ValueError(f"steps must be >= 0 and interval >= 1, got steps={steps}, interval={interval}")


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
           logfile: str | None = None, thermalize: bool = True, progress: bool = False) -> MDResult:
    """Molecular dynamics on a copy of ``atoms`` with ASE's integrators.

    ensemble: "nve" (velocity Verlet), "langevin", "nose-hoover" (NVT chain)
    or "npt" (Nosé-Hoover with isotropic barostat, MTK). Records energies and
    temperature every ``interval`` steps; ``progress`` shows a bar of steps.
    """
    from ase.md import Langevin, VelocityVerlet

    _check_md_settings(timestep_fs, temperature_K, steps, interval)
    if ensemble == "npt" and not atoms.pbc.all():
        raise ValueError("NPT needs a 3D periodic cell")
    atoms = atoms.copy()
    atoms.calc = calc
    rng = np.random.default_rng(seed)
    if thermalize:
        thermalize_atoms(atoms, temperature_K, rng)
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
    from tqdm.auto import tqdm

    bar = tqdm(total=int(steps), desc=f"MD ({ensemble})", unit="step", disable=not progress)
    dyn.attach(lambda: bar.update(1) if dyn.nsteps > 0 else None, interval=1)
    dyn.run(steps)
    bar.close()
    etot = np.array(record["etot"])
    return MDResult(
        atoms=atoms, times_fs=np.array(record["t"]), potential_energy=np.array(record["epot"]),
        total_energy=etot, temperature=np.array(record["temp"]),
        drift_meV_per_atom=float(1e3 * (etot[-1] - etot[0]) / len(atoms)),
    )


def run_md_many(structures, calc, ensemble: str = "nve", temperature_K: float = 300.0, timestep_fs: float = 1.0,
                steps: int = 1000, interval: int = 10, friction: float = 0.01, seed: int = 0,
                thermalize: bool = True, batch_size: int | None = None) -> list[MDResult]:
    """MD of many structures in lockstep, the forces of all of them from one
    batched model call per step (``calc.calculate_batch``; any ASE calculator
    works, one call each). The same arguments and results as :func:`run_md`
    for "nve" (velocity Verlet, the same update as ASE's ``VelocityVerlet``)
    and "langevin" (BAOAB splitting; friction in 1/fs). ``batch_size`` bounds
    the structures per model call.
    """
    from mpa_ase.workflows.batch import evaluate_many

    if ensemble not in ("nve", "langevin"):
        raise ValueError(f"run_md_many supports 'nve' and 'langevin', got {ensemble!r} (use run_md for others)")
    _check_md_settings(timestep_fs, temperature_K, steps, interval)
    if not np.isfinite(friction) or friction < 0:
        raise ValueError(f"friction must be >= 0 (1/fs), got {friction}")
    rng = np.random.default_rng(seed)
    systems = [a.copy() for a in structures]
    for a in systems:
        if thermalize:
            thermalize_atoms(a, temperature_K, rng)
    dt = timestep_fs * units.fs
    gamma = friction / units.fs
    masses = [a.get_masses()[:, None] for a in systems]

    def forces_and_energies():
        res = evaluate_many(systems, calc, batch_size=batch_size, properties=("energy", "forces"))
        return [np.asarray(r["forces"]) for r in res], [float(r["energy"]) for r in res]

    records = [{"t": [], "epot": [], "etot": [], "temp": []} for _ in systems]

    def sample(step, energies):
        for a, rec, e in zip(systems, records, energies):
            rec["t"].append(step * timestep_fs)
            rec["epot"].append(e)
            rec["etot"].append(e + a.get_kinetic_energy())
            rec["temp"].append(a.get_temperature())

    forces, energies = forces_and_energies()
    sample(0, energies)
    kT = units.kB * temperature_K
    for step in range(1, int(steps) + 1):
        for a, f, m in zip(systems, forces, masses):
            p = a.get_momenta() + 0.5 * dt * f  # B
            if ensemble == "nve":
                a.set_positions(a.get_positions() + dt * p / m)  # A
            else:
                a.set_positions(a.get_positions() + 0.5 * dt * p / m)  # A
                c = np.exp(-gamma * dt)  # O: exact Ornstein-Uhlenbeck step of the momenta
                p = c * p + np.sqrt((1 - c * c) * kT * m) * rng.standard_normal(p.shape)
                a.set_positions(a.get_positions() + 0.5 * dt * p / m)  # A
            a.set_momenta(p)
        forces, energies = forces_and_energies()
        for a, f in zip(systems, forces):
            a.set_momenta(a.get_momenta() + 0.5 * dt * f)  # B
        if step % int(interval) == 0:
            sample(step, energies)
    out = []
    for a, rec in zip(systems, records):
        etot = np.array(rec["etot"])
        out.append(MDResult(atoms=a, times_fs=np.array(rec["t"]), potential_energy=np.array(rec["epot"]),
                            total_energy=etot, temperature=np.array(rec["temp"]),
                            drift_meV_per_atom=float(1e3 * (etot[-1] - etot[0]) / len(a))))
    return out
