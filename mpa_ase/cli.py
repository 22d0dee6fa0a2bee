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


def _head_columns(calc, results: dict) -> dict:
    """"value ± std" per property head, the unit in the column name."""
    row = {}
    for name, info in calc.heads.items():
        if name in results:
            row[f"{name} ({info['unit']})"] = f"{results[name]:.4g} ± {results[name + '_std']:.2g}"
    return row


def _average_conformers(results: list[dict], heads: dict) -> dict:
    """MPA inference on molecules: head values averaged over conformers."""
    import numpy as np

    out = {}
    for name in heads:
        values = np.array([r[name] for r in results])
        stds = np.array([r[name + "_std"] for r in results])
        out[name] = float(values.mean())
        # ensemble spread and conformer spread both count
        out[name + "_std"] = float(np.sqrt(np.mean(stds ** 2) + values.var()))
    return out


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
            row.update(_head_columns(calc, calc.results))
            rows.append(row)
    for smiles in args.smiles or []:
        from mpa_ase.data.molecules import conformers

        confs = conformers(smiles, n=args.conformers, seed=0)
        results = calc.calculate_batch(confs)
        row = {"structure": smiles, "formula": confs[0].get_chemical_formula(), "n_atoms": len(confs[0]),
               "conformers": len(confs)}
        row.update(_head_columns(calc, _average_conformers(results, calc.heads)))
        rows.append(row)
    if not rows:
        print("nothing to predict: give structure files and/or --smiles", file=sys.stderr)
        return 2
    columns = list(dict.fromkeys(c for r in rows for c in r))
    if args.csv:
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    else:
        print(_table(rows, columns))
    return 0


def cmd_train(args) -> int:
    import json

    from mpa_ase.training import run_phase

    summary = run_phase(args.phase, args.config, progress=not args.quiet, restart=args.restart)
    for task, m in summary.get("metrics", {}).items():
        test = m.get("test") or m.get("val") or m.get("train")
        print(f"{task}: MAE {test['mae']:.4g} {m['unit']} (R² {test['r2']:.3f}, n_train {m['n_train']}, "
              f"n_test {m['n_test']})")
    print(json.dumps({"model": summary.get("model"), "output": summary.get("output")}))
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

    p = sub.add_parser("predict", help="energy, forces, stress and property heads of structure files or SMILES")
    p.add_argument("files", nargs="*", help="structure files (any format ASE reads)")
    p.add_argument("--smiles", action="append", help="a molecule as SMILES (RDKit conformers); repeatable")
    p.add_argument("--conformers", type=int, default=4, help="conformers averaged per SMILES")
    p.add_argument("--csv", action="store_true", help="write CSV instead of a table")
    model_args(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("train", help="run one phase of the MPA recipe from a YAML config")
    p.add_argument("phase", choices=["pretrain", "midtrain", "posttrain"])
    p.add_argument("--config", required=True, help="YAML file (see examples/training/)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint in the output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

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
