"""The ``mpa`` command line."""

from __future__ import annotations

import argparse
import sys
import warnings


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


def _launch_ranks(args) -> int:
    """``mpa train --nproc N``: the same command under torchrun, one process per rank."""
    import os
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
           "-m", "mpa_ase.cli", *(["--debug"] if args.debug else []), "train", args.phase, "--config", args.config]
    cmd += [flag for flag, on in (("--restart", args.restart), ("--finish", args.finish), ("--quiet", args.quiet)) if on]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # N processes on N cores; raise it yourself for more
    return subprocess.run(cmd, env=env).returncode


def cmd_train(args) -> int:
    import json
    import os

    from mpa_ase.training import run_phase

    if args.nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {args.nproc}")
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_ranks(args)

    summary = run_phase(args.phase, args.config, progress=not args.quiet, restart=args.restart, finish=args.finish)
    if os.environ.get("RANK", "0") != "0":
        return 0  # rank 0 reports
    if args.phase == "finetune":
        m = summary.get("metrics", {})
        for when in ("val_before", "val_after"):
            if m.get(when):
                print(f"{when}: " + ", ".join(f"{k} {v:.4g}" for k, v in m[when].items() if k != "n"))
        print(json.dumps({"model": summary.get("model"), "output": summary.get("output")}))
        return 0
    for task, m in summary.get("metrics", {}).items():
        test = m.get("test") or m.get("val") or m.get("train")
        print(f"{task}: MAE {test['mae']:.4g} {m['unit']} (R² {test['r2']:.3f}, n_train {m['n_train']}, "
              f"n_test {m['n_test']})")
    print(json.dumps({"model": summary.get("model"), "output": summary.get("output")}))
    return 0


def _read_one(path: str):
    from ase.io import read

    return read(path)


def _plot_path(args, default: str):
    if not getattr(args, "plot", None):
        return None
    return args.plot if isinstance(args.plot, str) and args.plot != "auto" else default


def _matplotlib():
    """pyplot on a file backend, for plotting APIs that draw only through it
    (phonopy's); our own plots draw on a ``Figure`` and switch nothing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def cmd_relax(args) -> int:
    from ase.io import write

    from mpa_ase.workflows import relax

    calc = _calculator(args)
    res = relax(_read_one(args.file), calc, fmax=args.fmax, steps=args.steps, cell=not args.fixed_cell,
                symmetry=args.symmetry, optimizer=args.optimizer, progress=not args.quiet)
    print(_table([{"formula": res.atoms.get_chemical_formula(), "converged": res.converged, "steps": res.steps,
                   "energy_eV": f"{res.energy:.6f}", "fmax_eV/A": f"{res.fmax:.4f}",
                   "smax_eV/A3": "" if res.smax is None else f"{res.smax:.2e}",
                   "volume_A3": f"{res.atoms.get_volume():.3f}" if res.atoms.pbc.all() else ""}],
                 ["formula", "converged", "steps", "energy_eV", "fmax_eV/A", "smax_eV/A3", "volume_A3"]))
    if args.out:
        write(args.out, res.atoms)
        print(f"written {args.out}")
    return 0 if res.converged else 3


def cmd_md(args) -> int:
    from mpa_ase.workflows import run_md

    calc = _calculator(args)
    res = run_md(_read_one(args.file), calc, ensemble=args.ensemble, temperature_K=args.temperature,
                 timestep_fs=args.timestep, steps=args.steps, interval=args.interval, trajectory=args.trajectory,
                 pressure_GPa=args.pressure, progress=not args.quiet)
    rows = [{"time_fs": f"{t:.1f}", "Epot_eV": f"{e:.5f}", "Etot_eV": f"{et:.5f}", "T_K": f"{temp:.1f}"}
            for t, e, et, temp in zip(res.times_fs, res.potential_energy, res.total_energy, res.temperature)]
    print(_table(rows[:: max(1, len(rows) // 20)], ["time_fs", "Epot_eV", "Etot_eV", "T_K"]))
    print(f"total-energy drift: {res.drift_meV_per_atom:.3f} meV/atom")
    path = _plot_path(args, "md.png")
    if path:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 5))
        a1, a2 = fig.subplots(2, 1, sharex=True)
        a1.plot(res.times_fs, res.potential_energy, label="E_pot")
        a1.plot(res.times_fs, res.total_energy, label="E_tot")
        a1.set_ylabel("energy (eV)")
        a1.legend()
        a2.plot(res.times_fs, res.temperature)
        a2.set_ylabel("T (K)")
        a2.set_xlabel("time (fs)")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        print(f"plot: {path}")
    return 0


def cmd_phonons(args) -> int:
    from mpa_ase.workflows import frequencies, imaginary_modes, phonons, thermal_properties

    calc = _calculator(args)
    ph = phonons(_read_one(args.file), calc, supercell=args.supercell, displacement=args.displacement,
                 progress=not args.quiet)
    ph.auto_band_structure(npoints=51)
    tp = thermal_properties(ph, t_min=0, t_max=args.tmax, t_step=max(1, args.tmax // 10), mesh=args.mesh)
    ph.run_total_dos()
    rows = [{"T_K": f"{t:.0f}", "F_kJ/mol": f"{f:.3f}", "S_J/(K mol)": f"{sv:.3f}", "Cv_J/(K mol)": f"{c:.3f}"}
            for t, f, sv, c in zip(tp["temperatures"], tp["free_energy"], tp["entropy"], tp["heat_capacity"])]
    print(_table(rows, ["T_K", "F_kJ/mol", "S_J/(K mol)", "Cv_J/(K mol)"]))
    freqs = frequencies(ph, [0, 0, 0])
    print("Gamma frequencies (THz):", " ".join(f"{f:.3f}" for f in freqs))
    bad = imaginary_modes(ph)
    print(f"imaginary modes: {len(bad)} q-points" + (f", lowest {min(min(b['frequencies_THz']) for b in bad):.3f} THz"
                                                     if bad else ""))
    if args.out:
        ph.save(args.out)
        print(f"written {args.out}")
    path = _plot_path(args, "phonons.png")
    if path:
        _matplotlib()
        plot = ph.plot_band_structure_and_dos()
        plot.savefig(path, dpi=120)
        print(f"plot: {path}")
    return 0


def cmd_eos(args) -> int:
    from mpa_ase.workflows import eos

    calc = _calculator(args)
    r = eos(_read_one(args.file), calc, n_points=args.points, max_strain=args.max_strain, eos_name=args.fit)
    print(_table([{"fit": r["fit"], "v0_A3": f"{r['v0']:.4f}", "e0_eV": f"{r['e0']:.6f}",
                   "bulk_modulus_GPa": f"{r['bulk_modulus']:.2f}", "max_residual_eV": f"{r['max_residual']:.2e}"}],
                 ["fit", "v0_A3", "e0_eV", "bulk_modulus_GPa", "max_residual_eV"]))
    path = _plot_path(args, "eos.png")
    if path:
        from ase.eos import EquationOfState

        from matplotlib.figure import Figure

        fit = EquationOfState(r["volumes"], r["energies"], eos=r["fit"])
        fit.fit()
        ax = fit.plot(ax=Figure().add_subplot(), show=False)
        ax.figure.savefig(path, dpi=120)
        print(f"plot: {path}")
    return 0


def cmd_elastic(args) -> int:
    import numpy as np

    from mpa_ase.workflows import elastic

    calc = _calculator(args)
    r = elastic(_read_one(args.file), calc, max_strain=args.max_strain, relax_ions=not args.no_relax)
    print("C_ij (GPa), Voigt order xx yy zz yz xz xy:")
    print(np.array2string(r.C, precision=1, suppress_small=True))
    print(_table([{k: f"{v:.2f}" for k, v in r.as_dict().items() if k != "C_GPa"}],
                 [k for k in r.as_dict() if k != "C_GPa"]))
    return 0


def cmd_screen(args) -> int:
    from mpa_ase.workflows import screen

    calc = _calculator(args)
    if args.workers is not None and args.scheduler:
        raise ValueError("give --workers (a local cluster) or --scheduler (a running one), not both")
    client = None
    if args.scheduler:
        from distributed import Client

        client = Client(args.scheduler)
    elif args.workers is not None:
        from mpa_ase.workflows.screen_dask import local_client

        client = local_client(args.workers)
    try:
        out = screen(args.files, calc, args.out, relax=args.relax, fmax=args.fmax, batch_size=args.batch_size,
                     resume=not args.restart, progress=not args.quiet, client=client, shard_size=args.shard_size)
    finally:
        if client is not None:
            cluster = client.cluster if args.workers is not None else None
            client.close()
            if cluster is not None:
                cluster.close()
    print(f"written {out}")
    return 0


def cmd_validate(args) -> int:
    import json

    if args.predictions:
        import csv

        from mpa_ase.validation import all_metrics

        rows = list(csv.DictReader(open(args.predictions)))
        if not rows or not {"y", "pred", "split"} <= set(rows[0]):
            print("a predictions CSV needs columns y, pred, split (train/test) and optionally std", file=sys.stderr)
            return 2
        train = [float(r["y"]) for r in rows if r["split"] == "train"]
        test = [r for r in rows if r["split"] == "test"]
        std = [float(r["std"]) for r in test] if "std" in rows[0] else None
        result = all_metrics(train, [float(r["y"]) for r in test], [float(r["pred"]) for r in test], std)
    else:
        from mpa_ase.training.validate import validate

        if not (args.model and args.data and args.task):
            print("give --predictions FILE, or --model, --data and --task", file=sys.stderr)
            return 2
        result = validate(args.model, json.loads(args.data), args.task, head=args.head, split_kind=args.split,
                          seed=args.seed, threshold=args.threshold, splits=args.splits, progress=not args.quiet)
        result.pop("predictions")
    print(_table([{k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in result.items()}], list(result)))
    return 0


def cmd_demo(args) -> int:
    """Relax a rattled rock-salt crystal, then run a short MD, printing energies."""
    import numpy as np
    from ase import units
    from ase.build import bulk
    from ase.filters import FrechetCellFilter
    from ase.md.langevin import Langevin
    from ase.optimize import FIRE

    from mpa_ase.workflows.md import thermalize_atoms

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
    thermalize_atoms(atoms, 300, np.random.default_rng(0))
    md = Langevin(atoms, 2 * units.fs, temperature_K=300, friction=0.02, fixcm=False, rng=np.random.default_rng(1))
    for step in range(0, args.md_steps + 1, max(1, args.md_steps // 5)):
        if step:
            md.run(max(1, args.md_steps // 5))
        print(f"MD step {md.nsteps:4d}: Epot = {atoms.get_potential_energy():.4f} eV, "
              f"T = {atoms.get_temperature():6.1f} K")
    if calc.heads:
        # the property heads: an experimental property of this crystal, and of a molecule
        from ase.build import molecule

        ethanol = molecule("CH3CH2OH")
        for label, structure in (("NaCl (relaxed)", atoms), ("ethanol", ethanol)):
            with warnings.catch_warnings():  # the domain flag is printed beside each value
                warnings.simplefilter("ignore")
                r = calc.calculate_batch([structure])[0]
            print(f"property heads, {label}:")
            for name, info in calc.heads.items():
                flag = "" if r.get(f"{name}_in_domain", 1.0) >= 0.5 else "   (outside the head's training domain)"
                interval = (f"  [{r[name + '_lo']:.4g}, {r[name + '_hi']:.4g}] ({100 * info['interval_level']:.0f}%)"
                            if f"{name}_lo" in r else "")
                print(f"  {name:22s} {r[name]:10.4g} ± {r[name + '_std']:.3g} {info['unit']}{interval}{flag}")
    return 0


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows the default of every option that has one (ours say "(default: ...)" in words already)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)".strip()


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    # argparse prints no help line at all for an option without help text
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _show_defaults(sub)
        elif action.option_strings and not action.help and action.default not in (None, False, argparse.SUPPRESS):
            action.help = "(default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    from mpa_ase.validation.splits import DEFAULT_THRESHOLD, SPLITS

    from mpa_ase import __version__

    fmt = _DefaultsFormatter
    parser = argparse.ArgumentParser(prog="mpa", description="mpa-ase: materials foundation models in ASE "
                                     "(units: eV, Å, eV/Å, eV/Å³, GPa for moduli, K, THz)", formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"mpa-ase {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser = sub.add_parser
    sub.add_parser = lambda *a, **k: add_parser(*a, formatter_class=fmt, **k)  # defaults shown in every --help

    def model_args(p):
        if not any("--quiet" in a.option_strings for a in p._actions):
            p.add_argument("--quiet", action="store_true", help="no progress bars")
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

    p = sub.add_parser("relax", help="relax positions and cell (FrechetCellFilter)")
    p.add_argument("file")
    p.add_argument("--fmax", type=float, default=0.02, help="force criterion, eV/Å")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--fixed-cell", action="store_true")
    p.add_argument("--symmetry", action="store_true", help="keep the space group (FixSymmetry)")
    p.add_argument("--optimizer", default="FIRE")
    p.add_argument("--out", help="write the relaxed structure (any ASE format)")
    model_args(p)
    p.set_defaults(func=cmd_relax)

    p = sub.add_parser("md", help="molecular dynamics with ASE integrators")
    p.add_argument("file")
    p.add_argument("--ensemble", default="nve", choices=["nve", "langevin", "nose-hoover", "npt"])
    p.add_argument("--temperature", type=float, default=300.0, help="K")
    p.add_argument("--timestep", type=float, default=1.0, help="fs")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--interval", type=int, default=10)
    p.add_argument("--pressure", type=float, default=0.0, help="GPa (npt)")
    p.add_argument("--trajectory", help="ASE trajectory file")
    p.add_argument("--plot", nargs="?", const="auto", help="energy/temperature plot (PNG path)")
    model_args(p)
    p.set_defaults(func=cmd_md)

    p = sub.add_parser("phonons", help="phonopy phonons: bands, DOS, thermal properties")
    p.add_argument("file")
    p.add_argument("--supercell", type=int, nargs=3, default=[2, 2, 2])
    p.add_argument("--displacement", type=float, default=0.01, help="Å")
    p.add_argument("--mesh", type=int, nargs=3, default=[20, 20, 20])
    p.add_argument("--tmax", type=int, default=1000, help="K")
    p.add_argument("--out", help="write phonopy yaml with force constants")
    p.add_argument("--plot", nargs="?", const="auto", help="band structure + DOS plot (PNG path)")
    model_args(p)
    p.set_defaults(func=cmd_phonons)

    p = sub.add_parser("eos", help="equation of state and bulk modulus")
    p.add_argument("file")
    p.add_argument("--points", type=int, default=11)
    p.add_argument("--max-strain", type=float, default=0.04)
    p.add_argument("--fit", default="birchmurnaghan")
    p.add_argument("--plot", nargs="?", const="auto", help="E(V) plot (PNG path)")
    model_args(p)
    p.set_defaults(func=cmd_eos)

    p = sub.add_parser("elastic", help="elastic tensor and Voigt-Reuss-Hill moduli")
    p.add_argument("file")
    p.add_argument("--max-strain", type=float, default=0.005)
    p.add_argument("--no-relax", action="store_true", help="no ionic relaxation in strained cells")
    model_args(p)
    p.set_defaults(func=cmd_elastic)

    p = sub.add_parser("screen", help="stream many structures to CSV/Parquet (resumable)")
    p.add_argument("files", nargs="+", help="structure files or ASE .db databases")
    p.add_argument("--out", required=True, help="CSV or .parquet")
    p.add_argument("--relax", action="store_true")
    p.add_argument("--fmax", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--restart", action="store_true", help="start over instead of resuming")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--workers", type=int, help="run on a local Dask cluster of this many 1-thread worker processes")
    p.add_argument("--scheduler", help="run on a running Dask cluster: its scheduler address (tcp://host:8786)")
    p.add_argument("--shard-size", type=int, default=16, help="files per Dask task (with --workers/--scheduler)")
    model_args(p)
    p.set_defaults(func=cmd_screen)

    p = sub.add_parser("validate", help="accuracy, OOD and uncertainty metrics of a head on a real split")
    p.add_argument("--model", help="mpa-ase model file (model.pt)")
    p.add_argument("--head", help="head name (needed when the model has several)")
    p.add_argument("--data", help='loader spec as JSON, e.g. \'{"loader": "chemicals", "property": "flash_point"}\'')
    p.add_argument("--task", help="property@source to evaluate")
    p.add_argument("--split", default="random", choices=list(SPLITS))
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help="redundancy split: no test compound this similar (or more) to a training one")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--splits", help="the training run's splits.json (default: the one beside --model); "
                                    "--split/--seed apply only when no stored split is found")
    p.add_argument("--predictions", help="or: a CSV with columns y, pred, split[, std]")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("train", help="run one phase of the MPA recipe, or fine-tune a backbone, from a YAML config")
    p.add_argument("phase", choices=["pretrain", "midtrain", "posttrain", "finetune"],
                   help="finetune: train the potential itself on DFT energies/forces/stress")
    p.add_argument("--config", required=True, help="YAML file (see examples/training/)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint in the output folder")
    p.add_argument("--finish", action="store_true",
                   help="stop an interrupted run now: write the best model from its checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--nproc", type=int, default=1,
                   help="data-parallel processes on this machine (runs torchrun; gloo on CPU, NCCL on GPU)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="relax a crystal and run a short MD with the default model")
    p.add_argument("--relax-steps", type=int, default=200)
    p.add_argument("--md-steps", type=int, default=50)
    model_args(p)
    p.set_defaults(func=cmd_demo)
    _show_defaults(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.debug:
        return int(args.func(args) or 0)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("mpa: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one clear line; --debug shows the traceback
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if isinstance(exc, ModuleNotFoundError) and exc.name in ("rdkit", "scipy", "pandas", "chemicals", "pymatgen"):
            message += " (training, validation and SMILES input need the extra: pip install 'mpa-ase[train]')"
        print(f"mpa {args.command}: error: {type(exc).__name__}: {message} (--debug shows the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
