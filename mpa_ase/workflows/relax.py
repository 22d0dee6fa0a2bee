"""Relaxation with ASE's optimizers and FrechetCellFilter."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator
from ase.filters import FrechetCellFilter
from ase.stress import full_3x3_to_voigt_6_stress, voigt_6_to_full_3x3_stress
from scipy.linalg import expm, logm

from mpa_ase.calculator import ExactStateCheck


class FastFrechetCellFilter(FrechetCellFilter):
    """ASE's ``FrechetCellFilter``, the same function of the same inputs, with
    its matrix functions done cheaply. ASE's filter calls scipy's ``logm`` for
    the positions and again for the forces, and ``expm_frechet`` nine times
    per forces call: 5.1 ms of filter work per FIRE step against 0.68 ms here
    (``benchmarks/results/relax_costs.md``), beside ~12 ms for one CHGNet call
    on such a cell.

    - The log of the deformation gradient is the variable the optimizer last
      set: :meth:`set_positions` remembers it (when the cell it produced is
      exp of it, i.e. no mask or cell-adjusting constraint intervened) and
      ``logm`` runs only for a cell set from outside.
    - The cell gradient ``sum(L(A, E_ij) * G)`` over the nine unit directions
      ``E_ij`` is the one Fréchet derivative ``L(A^T, G)`` (the derivative of
      the matrix exponential is self-adjoint up to transposition), read off
      one 6x6 ``expm`` of ``[[A^T, G], [0, A^T]]``.
    - Answers are remembered while the inputs are unchanged (an optimizer
      step asks for the forces twice: convergence check, then the step).

    ``hydrostatic_strain``, ``constant_volume`` or a ``mask`` run ASE's own
    code. Agreement with ASE is to rounding (tests: 1e-12 relative)."""

    def __init__(self, atoms, mask=None, exp_cell_factor=None, hydrostatic_strain=False, constant_volume=False,
                 scalar_pressure=0.0):
        super().__init__(atoms, mask=mask, exp_cell_factor=exp_cell_factor, hydrostatic_strain=hydrostatic_strain,
                         constant_volume=constant_volume, scalar_pressure=scalar_pressure)
        self._own = mask is None and not hydrostatic_strain and not constant_volume
        self._orig_cell = atoms.get_cell().array.copy()
        self._pressure = float(scalar_pressure)
        self._log_key = self._log = None
        self._positions_key = self._forces_key = None

    def _deform_grad(self, cell) -> np.ndarray:
        return np.linalg.solve(self._orig_cell, cell).T

    def _log_deform(self, cell, deform) -> np.ndarray:
        key = cell.tobytes()
        if key != self._log_key:
            self._log_key, self._log = key, logm(deform)
        return self._log

    def get_positions(self):
        if not self._own:
            return super().get_positions()
        positions, cell = self.atoms.get_positions(), self.atoms.cell.array
        key = (positions.tobytes(), cell.tobytes())
        if self._positions_key != key:
            deform = self._deform_grad(cell)
            n = len(positions)
            out = np.zeros((n + 3, 3))
            out[:n] = np.linalg.solve(deform, positions.T).T
            # ASE's variable is log(n F) = log(F) + log(n) I, n the number of atoms
            out[n:] = (self._log_deform(cell, deform) + np.log(float(n)) * np.eye(3)) * self.exp_cell_factor
            self._positions_key, self._positions = key, out
        return self._positions.copy()

    def set_positions(self, new, **kwargs):
        super().set_positions(new, **kwargs)
        if self._own:
            # the optimizer's variable is log(cell_factor F), F the deformation gradient
            log = np.asarray(new)[len(self.atoms):] / self.exp_cell_factor - np.log(self.cell_factor) * np.eye(3)
            cell = self.atoms.cell.array
            # the cell is orig_cell exp(log)^T unless a constraint (FixSymmetry) moved it
            if np.allclose(self._deform_grad(cell), expm(log), rtol=0, atol=1e-13):
                self._log_key, self._log = cell.tobytes(), log.copy()

    def get_forces(self, **kwargs):
        # the stress first, as ASE's filter asks: a calculator computing it on request then gives all in one call
        stress, forces, cell = self.atoms.get_stress(**kwargs), self.atoms.get_forces(**kwargs), self.atoms.cell.array
        key = (tuple(sorted(kwargs.items())), forces.tobytes(), stress.tobytes(), cell.tobytes())
        if self._forces_key != key:
            if self._own:
                volume = abs(np.linalg.det(cell))
                virial = -volume * (voigt_6_to_full_3x3_stress(stress) + self._pressure * np.eye(3))
                deform = self._deform_grad(cell)
                log = self._log_deform(cell, deform)
                gradient = virial @ np.linalg.inv(deform.T)  # UnitCellFilter's cell gradient
                block = np.zeros((6, 6))
                block[:3, :3] = block[3:, 3:] = log.T
                block[:3, 3:] = gradient
                out = np.zeros((len(forces) + 3, 3))
                out[:len(forces)] = forces @ deform
                out[len(forces):] = expm(block)[:3, 3:] / self.exp_cell_factor
                self._forces, self._forces_stress = out, full_3x3_to_voigt_6_stress(-virial / volume)
            else:
                self._forces = super().get_forces(**kwargs)
                self._forces_stress = self.stress
            self._forces_key = key
        self.stress = self._forces_stress
        return self._forces.copy()


@dataclass
class RelaxResult:
    atoms: Atoms
    converged: bool
    steps: int
    energy: float  # eV
    fmax: float  # eV/Å, largest atomic force at the end
    smax: float | None  # eV/Å^3, largest stress component at the end (cell relaxations)


def relax(atoms: Atoms, calc, fmax: float = 0.02, steps: int = 500, cell: bool = True,
          symmetry: bool = False, optimizer: str = "FIRE", logfile=None, progress: bool = False) -> RelaxResult:
    """Relax positions (and the cell, through ``FrechetCellFilter``) of a copy of ``atoms``.

    Not converging within ``steps`` is reported in the result and as a warning.
    ``progress`` shows a bar of optimizer steps with the current largest force.
    """
    from ase import optimize

    if not np.isfinite(fmax) or fmax <= 0:
        raise ValueError(f"fmax must be a positive force in eV/Å, got {fmax}")
    if int(steps) < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    atoms = atoms.copy()
    atoms.calc = calc
    if symmetry:
        from ase.constraints import FixSymmetry

        atoms.set_constraint(FixSymmetry(atoms))
    cell = cell and bool(atoms.pbc.all())
    target = FastFrechetCellFilter(atoms) if cell else atoms
    if not isinstance(getattr(optimize, optimizer, None), type):
        raise ValueError(f"unknown optimizer {optimizer!r}; use an ase.optimize class name (FIRE, BFGS, LBFGS, ...)")
    opt = getattr(optimize, optimizer)(target, logfile=logfile)
    from tqdm.auto import tqdm

    bar = tqdm(total=int(steps), desc=f"relaxing {atoms.get_chemical_formula()}", unit="step",
               disable=not progress)

    def tick():  # the forces of this step are cached: no extra model call
        bar.update(1)
        bar.set_postfix(fmax=f"{np.linalg.norm(atoms.get_forces(), axis=1).max():.3g} eV/Å")

    opt.attach(tick, interval=1)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    bar.close()
    forces = atoms.get_forces()
    if symmetry:
        atoms.set_constraint()  # the result is a plain structure; FixSymmetry would follow it around
    result = RelaxResult(
        atoms=atoms, converged=converged, steps=opt.nsteps, energy=atoms.get_potential_energy(),
        fmax=float(np.linalg.norm(forces, axis=1).max()),
        smax=float(np.abs(atoms.get_stress()).max()) if cell else None,
    )
    if not converged:
        warnings.warn(_not_converged(result, steps, fmax), stacklevel=2)
    return result


def _not_converged(result: RelaxResult, steps: int, fmax: float) -> str:
    residual = f"largest force {result.fmax:.3g} eV/Å"
    if result.smax is not None:  # the cell filter's criterion includes the stress (times the volume)
        residual += f", largest stress {result.smax:.3g} eV/Å³"
    return (f"relaxation of {result.atoms.get_chemical_formula()} did not converge in {steps} steps "
            f"({residual}; fmax {fmax})")


class _Precomputed(ExactStateCheck, Calculator):
    """Results computed elsewhere (one batched call) for exactly one
    configuration; asking about any other configuration is an error."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def load(self, atoms, results) -> None:
        self.atoms = atoms.copy()
        self.results = {k: v for k, v in results.items() if k in self.implemented_properties}

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        raise RuntimeError("relax_many: a property was asked for a configuration the batch did not evaluate "
                           f"({properties}, changes {system_changes})")


def _converged(opt) -> bool:
    if hasattr(opt, "gradient_converged"):  # ASE >= 3.27
        return bool(opt.gradient_converged(opt.optimizable.get_gradient()))
    return bool(opt.converged(opt.optimizable.get_forces()))  # pragma: no cover - older ASE


CPU_CANDIDATES = (16, 32, 64, 128, 256, 512)


def default_max_atoms(calc, structures, stress: bool = True) -> int:
    """Atoms per model call. On CUDA from a memory probe of one small batch (half
    the free memory over the measured peak per atom). On the CPU from a speed
    probe: two calls at each of :data:`CPU_CANDIDATES` atoms up to an eighth of
    all the atoms to relax (stopping once the time per atom rises 20% above the
    best), the size with the least time per atom wins; the probe asks for what
    the job will (``stress`` only for cell relaxations). Per-atom cost on the CPU is not flat: small calls
    pay the model's fixed cost, large ones spill out of the core's cache (CHGNet,
    1 thread: 7.5-atom cells cost 19 ms each alone, 13 ms in calls of ~60 atoms,
    19 ms again in calls of ~1000 atoms)."""
    import time

    import torch

    device = getattr(calc, "device", torch.device("cpu"))
    if not hasattr(calc, "calculate_batch"):
        return 2048
    props = ("energy", "forces", "stress") if stress else ("energy", "forces")
    if getattr(device, "type", "cpu") == "cuda":
        probe = list(structures[: min(8, len(structures))])
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        calc.calculate_batch(probe, properties=props)
        per_atom = max(1.0, (torch.cuda.max_memory_allocated(device) - before) / sum(len(a) for a in probe))
        free, _ = torch.cuda.mem_get_info(device)
        return max(64, int(0.5 * free / per_atom))
    total = sum(len(a) for a in structures)
    if total <= CPU_CANDIDATES[1]:
        return max(total, 1)
    # the probe evaluates about 4x its largest size: keep that under half a pass over the job
    sizes = [c for c in CPU_CANDIDATES if c <= max(CPU_CANDIDATES[0], total // 8)]
    best = None
    for target in sizes:
        group, n = [], 0
        for a in structures:
            if n >= target:
                break
            group.append(a)
            n += len(a)
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            calc.calculate_batch(group, properties=props)
            times.append(time.perf_counter() - t0)
        per_atom = min(times) / n
        if best is None or per_atom < best[0]:
            best = (per_atom, target)
        elif per_atom > 1.2 * best[0]:  # past the optimum: larger calls only spill further
            break
        if n < target:  # all structures in one call already
            break
    return best[1]


def relax_many(structures, calc, fmax: float = 0.05, steps: int = 300, cell: bool = True, symmetry: bool = False,
               optimizer: str = "FIRE", max_atoms: int | None = None, max_structures: int = 512,
               progress: bool = False) -> list[RelaxResult]:
    """Relax many structures with in-flight batches; the same arguments and
    results as :func:`relax`, one :class:`RelaxResult` per structure, in order.

    Every structure keeps its own ASE optimizer (and ``FrechetCellFilter``
    for cell relaxations), exactly as :func:`relax` runs it; what is batched
    is the model: at each step the forces (and stresses) of all structures
    still relaxing come from one ``calc.calculate_batch`` call. A structure
    that converges, or reaches ``steps``, leaves the batch and the next
    waiting one enters, up to ``max_atoms`` atoms (default: probed on the
    device, see :func:`default_max_atoms`) and ``max_structures`` structures
    per call.
    Any ASE calculator works (one call per structure without
    ``calculate_batch``).

    TorchSim's batched optimizers were the first choice; its releases for
    this project's Python (3.11) stop at 0.3.0, whose API has since changed,
    so the batching here drives ASE's own optimizers instead.
    """
    from collections import deque

    from ase import optimize
    from tqdm.auto import tqdm

    from mpa_ase.workflows.batch import evaluate_many

    if not np.isfinite(fmax) or fmax <= 0:
        raise ValueError(f"fmax must be a positive force in eV/Å, got {fmax}")
    if int(steps) < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not isinstance(getattr(optimize, optimizer, None), type):
        raise ValueError(f"unknown optimizer {optimizer!r}; use an ase.optimize class name (FIRE, BFGS, LBFGS, ...)")
    if max_atoms is not None and int(max_atoms) < 1 or int(max_structures) < 1:
        raise ValueError(f"max_atoms and max_structures must be >= 1, got {max_atoms}, {max_structures}")
    structures = list(structures)
    max_atoms = int(max_atoms or default_max_atoms(calc, structures, stress=cell))
    pending = deque(range(len(structures)))
    active: list[dict] = []
    results: list[RelaxResult | None] = [None] * len(structures)
    bar = tqdm(total=len(structures), desc="relaxing", unit="structure", disable=not progress)

    def admit() -> None:
        n_atoms = sum(len(s["atoms"]) for s in active)
        while pending and len(active) < max_structures and (not active or n_atoms + len(structures[pending[0]])
                                                            <= max_atoms):
            k = pending.popleft()
            atoms = structures[k].copy()
            slot = _Precomputed()
            atoms.calc = slot
            if symmetry:
                from ase.constraints import FixSymmetry

                atoms.set_constraint(FixSymmetry(atoms))
            with_cell = cell and bool(atoms.pbc.all())
            target = FastFrechetCellFilter(atoms) if with_cell else atoms
            opt = getattr(optimize, optimizer)(target, logfile=None)
            opt.fmax = fmax
            active.append({"k": k, "atoms": atoms, "slot": slot, "opt": opt, "cell": with_cell})
            n_atoms += len(atoms)

    def finish(state: dict, converged: bool) -> None:
        atoms, opt = state["atoms"], state["opt"]
        forces = atoms.get_forces()
        result = RelaxResult(
            atoms=atoms, converged=converged, steps=opt.nsteps, energy=atoms.get_potential_energy(),
            fmax=float(np.linalg.norm(forces, axis=1).max()),
            smax=float(np.abs(atoms.get_stress()).max()) if state["cell"] else None,
        )
        if symmetry:
            atoms.set_constraint()
        plain = atoms.copy()  # a plain structure with the final results attached
        plain.calc = SinglePointCalculator(plain, **state["slot"].results)
        result.atoms = plain
        if not converged:
            warnings.warn(_not_converged(result, steps, fmax), stacklevel=3)
        results[state["k"]] = result
        bar.update(1)

    while pending or active:
        admit()
        want = ("energy", "forces", "stress") if any(s["cell"] for s in active) else ("energy", "forces")
        batch = evaluate_many([s["atoms"] for s in active], calc, properties=want)
        for state, r in zip(active, batch):
            state["slot"].load(state["atoms"], r)
        still = []
        for state in active:
            opt = state["opt"]
            converged = _converged(opt)
            if converged or opt.nsteps >= steps:
                finish(state, converged)
                continue
            opt.step()
            opt.nsteps += 1
            still.append(state)
        active = still
    bar.close()
    return results
