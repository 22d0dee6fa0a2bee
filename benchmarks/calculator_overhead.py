"""Time per calculator call (energy + forces + stress): MPACalculator vs the
backbone's native ASE calculator, same weights, in one process run.

    python benchmarks/calculator_overhead.py                 # 8, 64, 512, 4096 atoms
    python benchmarks/calculator_overhead.py --sizes 8 64    # quicker
    python benchmarks/calculator_overhead.py --backbone matgl --model $MPA_SHARED_DATA/weights/matgl/TensorNet-MatPES-PBE-v2025.1-PES
    python benchmarks/calculator_overhead.py --backbone mace --model small.model   # scripts/train_small_mace.py

Cold: the first call on a new structure. Steady: repeated calls on slightly
moved atoms, as in MD (median of --repeats). Ours and native calls alternate
so that machine noise hits both. Also reports where our time goes (graph
build, model forward, backward) and the largest energy/force difference.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import warnings

import numpy as np
import torch
from ase.build import bulk

from common import format_table, median, timed, write_results

SUPERCELLS = {8: (1, 1, 1), 64: (2, 2, 2), 512: (4, 4, 4), 4096: (8, 8, 8)}


def native_calculator(backbone: str, model: str | None):
    if backbone == "chgnet":
        from chgnet.model.dynamics import CHGNetCalculator

        with contextlib.redirect_stdout(io.StringIO()):
            return CHGNetCalculator(use_device="cpu")
    if backbone == "mace":
        from mace.calculators import MACECalculator

        previous = torch.get_default_dtype()
        calc = MACECalculator(model_paths=model, device="cpu", default_dtype="float32")
        torch.set_default_dtype(previous)
        return calc
    if backbone == "matgl":
        import matgl
        from matgl.ext.ase import PESCalculator

        return PESCalculator(matgl.load_model(model), stress_unit="eV/A3")
    raise SystemExit(f"no native calculator known for backbone {backbone!r}")


def call(calc, atoms):
    atoms.calc = calc
    e = atoms.get_potential_energy()
    f = atoms.get_forces()
    s = atoms.get_stress()
    return e, f, s


def breakdown(calc, atoms) -> dict:
    """Split one steady-state call of ours into graph build, forward, backward."""
    t_graph, graph = timed(calc.build_graph, [atoms])
    model = calc.model
    pos = graph.positions.detach().requires_grad_(True)
    g = graph.replace(positions=pos)
    t_fwd, out = timed(lambda: model.backbone(g))
    e = out["energies"].sum()
    t_bwd, _ = timed(torch.autograd.grad, e, [pos])
    return {"ours_graph_s": t_graph, "ours_forward_s": t_fwd, "ours_backward_s": t_bwd}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="chgnet")
    parser.add_argument("--model", default=None, help="model file/folder for the backbone (mace, matgl)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 64, 512, 4096])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shipped", action="store_true", help="ours = MPACalculator() (default model with heads)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    from mpa_ase import MPACalculator

    # --shipped: MPACalculator() itself, the default model with its heads (asked for E, F, S only)
    ours = (MPACalculator(device="cpu") if args.shipped
            else MPACalculator(backbone=args.backbone, model=args.model or "default", device="cpu"))
    native = native_calculator(args.backbone, args.model)
    label = args.backbone if args.backbone != "matgl" else f"matgl-{ours.model.backbone.architecture}"
    rng = np.random.default_rng(0)
    rows = []
    for n in args.sizes:
        base = bulk("Si", "diamond", 5.43, cubic=True) * SUPERCELLS[n]
        base.rattle(0.02, seed=n)
        repeats = args.repeats if n <= 512 else max(1, args.repeats // 3)
        # cold: a fresh structure each side (warm-up of kernels excluded by a first tiny call)
        call(ours, bulk("Si", "diamond", 5.43))
        call(native, bulk("Si", "diamond", 5.43))
        t_ours_cold, (e1, f1, s1) = timed(call, ours, base.copy())
        t_nat_cold, (e2, f2, s2) = timed(call, native, base.copy())
        steady_ours, steady_nat = [], []
        a_ours, a_nat = base.copy(), base.copy()
        for _ in range(repeats):
            step = rng.normal(scale=0.002, size=base.positions.shape)
            a_ours.positions += step
            a_nat.positions += step
            steady_ours.append(timed(call, ours, a_ours)[0])
            steady_nat.append(timed(call, native, a_nat)[0])
        row = {
            "backbone": label,
            "n_atoms": n,
            "ours_cold_s": t_ours_cold,
            "native_cold_s": t_nat_cold,
            "cold_ratio": t_ours_cold / t_nat_cold,
            "ours_steady_s": median(steady_ours),
            "native_steady_s": median(steady_nat),
            "steady_ratio": median(steady_ours) / median(steady_nat),
            "max_dE_per_atom_eV": abs(e1 - e2) / n,
            "max_dF_eV_per_A": float(np.abs(f1 - f2).max()),
            "max_dstress_eV_per_A3": float(np.abs(s1 - s2).max()),
            "repeats": repeats,
        }
        row.update(breakdown(ours, a_ours))
        rows.append(row)
        print(f"{n:5d} atoms: cold {row['ours_cold_s']:.3f}s vs {row['native_cold_s']:.3f}s "
              f"(ratio {row['cold_ratio']:.3f}); steady {row['ours_steady_s']:.3f}s vs "
              f"{row['native_steady_s']:.3f}s (ratio {row['steady_ratio']:.3f}); "
              f"dE/atom {row['max_dE_per_atom_eV']:.1e} eV, dF {row['max_dF_eV_per_A']:.1e} eV/Å; "
              f"ours: graph {row['ours_graph_s']:.3f}s fwd {row['ours_forward_s']:.3f}s "
              f"bwd {row['ours_backward_s']:.3f}s", flush=True)
    columns = ["backbone", "n_atoms", "ours_cold_s", "native_cold_s", "cold_ratio", "ours_steady_s",
               "native_steady_s", "steady_ratio", "max_dE_per_atom_eV", "max_dF_eV_per_A",
               "ours_graph_s", "ours_forward_s", "ours_backward_s"]
    table = format_table(rows, columns)
    print(table)
    path = write_results(f"calculator_overhead_{label}{'_shipped' if args.shipped else ''}", rows, table)
    print(f"written {path}")


if __name__ == "__main__":
    main()
