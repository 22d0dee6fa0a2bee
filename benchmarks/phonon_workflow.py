"""Phonon workflow wall time: our batched supercell forces vs one call per
displacement vs matcalc's PhononCalc, all with the same MPACalculator (CHGNet).

    python benchmarks/phonon_workflow.py [--repeats 3]

Each structure: force constants + thermal properties (0-1000 K, 10 K steps),
no relaxation (the same input cell for all three), phonopy's default mesh; our
side through ``workflows.thermal_properties`` (frequencies only), matcalc's
with eigenvectors, as it does. One warm-up round first; runs alternate so
machine noise hits all sides; medians of --repeats. model_s_* is the time
spent inside the calculator (the rest is phonopy and glue). Also checks that
the three give the same frequencies at Γ.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from ase.build import bulk
from ase.spacegroup import crystal

from common import format_table, median, timed, write_results


class OneByOne:
    """The same calculator seen without calculate_batch: one model call per supercell."""

    def __init__(self, calc):
        self.calc = calc

    def __getattr__(self, name):
        if name == "calculate_batch":
            raise AttributeError(name)
        return getattr(self.calc, name)


def structures():
    rutile = crystal(["Ti", "O"], [(0, 0, 0), (0.305, 0.305, 0)], spacegroup=136,
                     cellpar=[4.59, 4.59, 2.96, 90, 90, 90])
    # quartz's coordinates in ASE's P3_221 setting give Si6O6 (12 atoms), not SiO2:
    # kept as a low-symmetry test cell (12 displacements), labelled for what it is
    quartz = crystal(["Si", "O"], [(0.4697, 0, 0), (0.4135, 0.2669, 0.1191)], spacegroup=154,
                     cellpar=[4.916, 4.916, 5.405, 90, 90, 120])
    return {
        "Si (2x2x2 conv., 64 at.)": (bulk("Si", "diamond", 5.43, cubic=True), (2, 2, 2)),
        "NaCl (2x2x2 conv., 64 at.)": (bulk("NaCl", "rocksalt", 5.64, cubic=True), (2, 2, 2)),
        "TiO2 rutile (2x2x3, 72 at.)": (rutile, (2, 2, 3)),
        "Si6O6 P3_221 test cell (2x2x2, 96 at.)": (quartz, (2, 2, 2)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from matcalc import PhononCalc

    from mpa_ase import MPACalculator
    from mpa_ase.workflows import phonons, thermal_properties
    from mpa_ase.workflows.phonons import to_ase_atoms

    calc = MPACalculator(backbone="chgnet", device="cpu")
    force_time = [0.0]

    def timing(fn):
        def wrapped(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                force_time[0] += time.perf_counter() - t0
        return wrapped

    # model time on every side: our batched call, and the per-structure ASE calls
    calc.calculate_batch = timing(calc.calculate_batch)
    calc.calculate = timing(calc.calculate)

    def ours(atoms, sc, c):
        # no force-constant symmetrisation: matcalc does none, and on unrelaxed cells it matters
        ph = phonons(atoms, c, supercell=sc, displacement=0.01, primitive_matrix="P", symmetrize=False)
        thermal_properties(ph, t_min=0, t_max=1000, t_step=10)  # phonopy's default mesh, as matcalc
        return ph

    def theirs(atoms, sc):
        pc = PhononCalc(calculator=calc, supercell_matrix=np.diag(sc), atom_disp=0.01, relax_structure=False,
                        t_min=0, t_max=1000, t_step=10, write_force_constants=False, write_band_structure=False,
                        write_total_dos=False, write_phonon=False, fix_imaginary_attempts=0)
        return pc.calc(atoms.copy())["phonon"]

    def run(fn, *a):
        # ASE calculators return cached results for unchanged atoms: with one
        # displacement the last supercell of one side is the first of the next
        calc.reset()
        force_time[0] = 0.0
        t, out = timed(fn, *a)
        return t, force_time[0], out

    # warm-up: numba's cached kernels, torch's first autograd pass and phonopy's
    # imports load once per process; without this the first structure pays them
    si, sc0 = structures()["Si (2x2x2 conv., 64 at.)"]
    ours(si, sc0, calc), ours(si, sc0, OneByOne(calc)), theirs(si, sc0)

    rows = []
    for name, (atoms, sc) in structures().items():
        t_b, t_s, t_m, f_b, f_s, f_m = [], [], [], [], [], []
        for _ in range(args.repeats):
            t, f, ph_b = run(ours, atoms, sc, calc)
            t_b.append(t), f_b.append(f)
            t, f, ph_s = run(ours, atoms, sc, OneByOne(calc))
            t_s.append(t), f_s.append(f)
            t, f, ph_m = run(theirs, atoms, sc)
            t_m.append(t), f_m.append(f)
        f = [np.sort(p.get_frequencies([0, 0, 0])) for p in (ph_b, ph_s, ph_m)]
        row = {"structure": name, "displacements": len(ph_b.supercells_with_displacements),
               "batched_s": median(t_b), "one_by_one_s": median(t_s), "matcalc_s": median(t_m),
               "batched_vs_one_by_one": median(t_b) / median(t_s), "batched_vs_matcalc": median(t_b) / median(t_m),
               "model_s_batched": median(f_b), "model_s_one_by_one": median(f_s), "model_s_matcalc": median(f_m),
               "max_dfreq_vs_matcalc_THz": float(np.abs(f[0] - f[2]).max()),
               "max_dfreq_vs_one_by_one_THz": float(np.abs(f[0] - f[1]).max())}
        rows.append(row)
        print(row, flush=True)
    table = format_table(rows, list(rows[0]))
    # does one call for many supercells cost less per supercell than one call each?
    quartz, sc = structures()["Si6O6 P3_221 test cell (2x2x2, 96 at.)"]
    ph = phonons(quartz, calc, supercell=sc, displacement=0.01, primitive_matrix="P", symmetrize=False)
    cells = [to_ase_atoms(c) for c in ph.supercells_with_displacements]
    scaling = []
    for n in (1, 2, 4, len(cells)):
        t = median([timed(calc.calculate_batch, cells[:n], properties=("energy", "forces"))[0]
                    for _ in range(args.repeats)])
        scaling.append({"supercells_per_call": n, "atoms_per_call": n * len(cells[0]), "s_per_supercell": t / n})
    table += "\n\nModel time per supercell against the number of supercells in one call (Si6O6 cell, 96 atoms):\n\n"
    table += format_table(scaling, list(scaling[0]))
    print(table)
    write_results("phonon_workflow", rows, table, extra={"batch_scaling": scaling})


if __name__ == "__main__":
    main()
