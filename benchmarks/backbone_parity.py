"""Largest differences between our backbones and their own ASE calculators over
the 22 reference structures of the test suite, float32 and float64.

    python benchmarks/backbone_parity.py --mace small.model   # from scripts/train_small_mace.py

The tests assert the issue's bounds; this prints the actual maxima.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from common import format_table, write_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mace", required=True, help="MACE .model file")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import matgl
    import test_backbone_parity as t
    from conftest import reference_structures
    from mace.calculators import MACECalculator
    from matgl.ext.ase import PESCalculator

    from mpa_ase import MPACalculator
    from mpa_ase.data import shared_data_dir

    structures = reference_structures()
    rows = []
    for dtype in ("float32", "float64"):
        calcs = {"mace": (MPACalculator(backbone="mace", model=args.mace, dtype=dtype, device="cpu"),
                          t._keep_default_dtype(lambda: MACECalculator(model_paths=args.mace, device="cpu",
                                                                       default_dtype=dtype)))}
        for name in t.MATGL_MODELS:
            path = str(shared_data_dir() / "weights" / "matgl" / name)
            pot = matgl.load_model(path)
            calcs[name] = (MPACalculator(backbone="matgl", model=path, dtype=dtype, device="cpu"),
                           PESCalculator(pot.double() if dtype == "float64" else pot, stress_unit="eV/A3"))
        for key, (ours, native) in calcs.items():
            de = df = ds = 0.0
            for atoms0 in structures.values():
                a = atoms0.copy()
                a.calc = ours
                e, f = a.get_potential_energy(), a.get_forces()
                r = atoms0.copy()
                if r.pbc.any() and not r.pbc.all():
                    r.pbc = True
                r.calc = native
                with t._native_precision(key, dtype):
                    er, fr = r.get_potential_energy(), r.get_forces()
                    sr = r.get_stress() if a.pbc.all() else None
                de = max(de, abs(e - er) / len(a))
                df = max(df, float(np.abs(f - fr).max()))
                if sr is not None:
                    ds = max(ds, float(np.abs(a.get_stress() - sr).max()))
            rows.append({"backbone": key, "dtype": dtype, "structures": len(structures),
                         "max_dE_per_atom_eV": de, "max_dF_eV_per_A": df, "max_dstress_eV_per_A3": ds})
            print(rows[-1], flush=True)
    table = format_table(rows, list(rows[0]))
    print(table)
    write_results("backbone_parity", rows, table)


if __name__ == "__main__":
    main()
