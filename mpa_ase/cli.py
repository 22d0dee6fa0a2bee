"""The ``mpa`` command line."""

from __future__ import annotations

import argparse
import sys


def _table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines.append("  ".join("-" * widths[c] for c in columns))
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def cmd_list_backbones(args) -> int:
    from mpa_ase.backbones import list_backbones

    rows = list_backbones()
    if not rows:
        print("no backbones installed (pip install ./plugins/mpa-ase-chgnet)")
        return 1
    print(_table(rows, ["name", "package", "version", "entry_point"]))
    return 0


def _calculator(args):
    from mpa_ase.calculator import MPACalculator

    return MPACalculator(model=args.model, backbone=args.backbone, device=args.device, dtype=args.dtype)


def cmd_predict(args) -> int:
    import numpy as np
    from ase.io import read

    calc = _calculator(args)
    rows = []
    for path in args.files:
        for k, atoms in enumerate(read(path, index=":")):
            atoms.calc = calc
            e = atoms.get_potential_energy()
            row = {
                "structure": f"{path}@{k}",
                "formula": atoms.get_chemical_formula(),
                "n_atoms": len(atoms),
                "energy_eV": f"{e:.6f}",
                "energy_per_atom_eV": f"{e / len(atoms):.6f}",
                "fmax_eV/A": f"{np.linalg.norm(atoms.get_forces(), axis=1).max():.4f}",
            }
            if "stress" in calc.results:
                row["pressure_GPa"] = f"{-calc.results['stress'][:3].mean() * 160.21766208:.4f}"
            rows.append(row)
    columns = list(dict.fromkeys(c for r in rows for c in r))
    if args.csv:
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    else:
        print(_table(rows, columns))
    return 0


def cmd_demo(args) -> int:
    """Relax a rattled rock-salt crystal, then run a short MD, printing energies."""
    import numpy as np
    from ase import units
    from ase.build import bulk
    from ase.filters import FrechetCellFilter
    from ase.md.langevin import Langevin
    from ase.optimize import FIRE

    try:  # ASE >= 3.29
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # pragma: no cover - older ASE
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

    calc = _calculator(args)
    atoms = bulk("NaCl", "rocksalt", a=5.8, cubic=True)
    atoms.rattle(0.05, seed=0)
    atoms.calc = calc
    print(f"model: {calc.model.backbone.describe()}  device: {calc.device}  dtype: {calc.dtype}")
    print(f"{atoms.get_chemical_formula()}: E = {atoms.get_potential_energy():.4f} eV, "
          f"a = {atoms.cell.lengths()[0]:.3f} Å (start)")
    opt = FIRE(FrechetCellFilter(atoms), logfile=None)
    converged = opt.run(fmax=0.01, steps=args.relax_steps)
    fmax = np.linalg.norm(atoms.get_forces(), axis=1).max()
    print(f"relaxed ({'converged' if converged else 'NOT converged'} in {opt.nsteps} steps): "
          f"E = {atoms.get_potential_energy():.4f} eV, a = {atoms.cell.lengths()[0]:.3f} Å, fmax = {fmax:.4f} eV/Å")
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    md = Langevin(atoms, 2 * units.fs, temperature_K=300, friction=0.02, fixcm=False, rng=np.random.default_rng(1))
    for step in range(0, args.md_steps + 1, max(1, args.md_steps // 5)):
        if step:
            md.run(max(1, args.md_steps // 5))
        print(f"MD step {md.nsteps:4d}: Epot = {atoms.get_potential_energy():.4f} eV, "
              f"T = {atoms.get_temperature():6.1f} K")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mpa", description="mpa-ase: materials foundation models in ASE")
    sub = parser.add_subparsers(dest="command", required=True)

    def model_args(p):
        p.add_argument("--model", default="default", help="model name or file (default: embedded default)")
        p.add_argument("--backbone", default=None, help="backbone plugin (default: chgnet)")
        p.add_argument("--device", default="auto")
        p.add_argument("--dtype", default=None, choices=[None, "float32", "float64"])

    p = sub.add_parser("list-backbones", help="show installed backbones")
    p.set_defaults(func=cmd_list_backbones)

    p = sub.add_parser("predict", help="energies, forces and stress of structure files (any ASE format)")
    p.add_argument("files", nargs="+")
    p.add_argument("--csv", action="store_true", help="write CSV instead of a table")
    model_args(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("demo", help="relax a crystal and run a short MD with the default model")
    p.add_argument("--relax-steps", type=int, default=200)
    p.add_argument("--md-steps", type=int, default=50)
    model_args(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
