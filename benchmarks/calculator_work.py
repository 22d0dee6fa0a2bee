"""What an MD or relaxation step costs with the default model: ``MPACalculator()``
(backbone + property heads) asked for forces only, vs the bare backbone
(``MPACalculator(backbone="chgnet")``), vs the default model asked for
everything (energy, forces, stress, every head: what each call cost before
the calculator computed only what is asked). One process run, calls
alternating between the sides so that machine noise hits all of them.

    python benchmarks/calculator_work.py                    # 8, 64, 512 atoms
    python benchmarks/calculator_work.py --sizes 64 --repeats 20
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
from ase.build import bulk

from common import format_table, median, timed, write_results

SUPERCELLS = {8: (1, 1, 1), 64: (2, 2, 2), 216: (3, 3, 3), 512: (4, 4, 4)}


def forces_step(calc, atoms):
    atoms.calc = calc
    return atoms.get_forces()


def everything(calc, atoms):
    return calc.calculate_batch([atoms])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 64, 512])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    from mpa_ase import MPACalculator

    default = MPACalculator(device="cpu", skin=0.0)
    bare = MPACalculator(backbone="chgnet", device="cpu", skin=0.0)
    rng = np.random.default_rng(0)
    rows = []
    for n in args.sizes:
        base = bulk("Si", "diamond", 5.43, cubic=True) * SUPERCELLS[n]
        base.rattle(0.02, seed=n)
        for calc in (default, bare):  # warm-up
            forces_step(calc, base.copy())
        everything(default, base.copy())
        t_default, t_bare, t_all = [], [], []
        a, b, c = base.copy(), base.copy(), base.copy()
        repeats = args.repeats if n <= 64 else max(3, args.repeats // 2)
        for _ in range(repeats):
            step = rng.normal(scale=0.002, size=base.positions.shape)
            for atoms in (a, b, c):
                atoms.positions += step
            t_default.append(timed(forces_step, default, a)[0])
            t_bare.append(timed(forces_step, bare, b)[0])
            t_all.append(timed(everything, default, c)[0])
        f_default = forces_step(default, a)
        f_bare = forces_step(bare, a.copy())
        row = {
            "n_atoms": n,
            "default_forces_s": median(t_default),
            "bare_backbone_forces_s": median(t_bare),
            "ratio_default_vs_bare": median(t_default) / median(t_bare),
            "default_everything_s": median(t_all),
            "ratio_everything_vs_forces": median(t_all) / median(t_default),
            "max_dF_eV_per_A": float(np.abs(f_default - f_bare).max()),
            "repeats": repeats,
        }
        rows.append(row)
        print(f"{n:4d} atoms: default forces {row['default_forces_s']:.4f}s, bare {row['bare_backbone_forces_s']:.4f}s "
              f"(ratio {row['ratio_default_vs_bare']:.3f}); everything {row['default_everything_s']:.4f}s",
              flush=True)
    columns = ["n_atoms", "default_forces_s", "bare_backbone_forces_s", "ratio_default_vs_bare",
               "default_everything_s", "ratio_everything_vs_forces", "max_dF_eV_per_A", "repeats"]
    table = format_table(rows, columns)
    print(table)
    print(f"written {write_results('calculator_work', rows, table)}")


if __name__ == "__main__":
    main()
