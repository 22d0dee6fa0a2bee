"""Train a small MACE on real DFT data (Alexandria PBE energies and stresses) and save a .model file.

    python scripts/train_small_mace.py OUT.model [--structures 200] [--epochs 30] [--seed 0]

No MACE foundation weights exist offline, so tests and benchmarks of the
MACE backbone use this model: mace-torch's own ScaleShiftMACE, trained
through mpa-ase's MACE backbone (energy per atom, optionally stress) on
Alexandria PBE structures relaxed at 0 GPa, saved the way mace-torch
saves models (a pickled module) so MACECalculator reads the same file.
Needs mace-torch, pymatgen and the shared data folder (MPA_SHARED_DATA).
"""

from __future__ import annotations

import argparse
import bz2
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
# elements of the training subset, and of every structure the parity tests use
ELEMENTS = ("H", "Li", "C", "N", "O", "F", "Na", "Mg", "Al", "Si", "P", "S", "Cl", "K", "Ca", "Ti", "Fe",
            "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As", "Sr", "Cs", "W")
EV_PER_A3_PER_KBAR = 0.1 / 160.21766208


def load_alexandria(n: int, seed: int, pressures=("P000",)):
    from pymatgen.core import Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    sys.path.insert(0, str(ROOT))
    from mpa_ase.data import shared_data_dir

    allowed = set(ELEMENTS)
    rows = []
    for p in pressures:
        path = shared_data_dir() / "crystals/alexandria_high_pressure" / f"{p}.json.bz2"
        entries = json.load(bz2.open(path))["entries"]
        rows += [e for e in entries if set(e["data"]["elements"]) <= allowed and e["data"]["nsites"] <= 12]
    rng = np.random.default_rng(seed)
    picked = [rows[i] for i in rng.permutation(len(rows))[:n]]
    out = []
    for e in picked:
        atoms = AseAtomsAdaptor.get_atoms(Structure.from_dict(e["structure"]))
        # VASP stress in kBar, positive = compressive -> ASE eV/Å^3, positive = tensile
        stress = -np.asarray(e["data"]["stress"]) * EV_PER_A3_PER_KBAR
        out.append((atoms, float(e["data"]["energy_total"]), stress))
    return out


def build_mace(data, seed: int, r_max: float = 5.0):
    from ase.data import atomic_numbers
    from mace import modules  # first: it lets e3nn 0.4.4 load its constants under torch >= 2.6
    from e3nn import o3

    torch.manual_seed(seed)
    zs = sorted(atomic_numbers[s] for s in ELEMENTS)
    # isolated-atom energies by least squares on composition (what MACE's E0s="average" does)
    a = np.array([[np.sum(at.numbers == z) for z in zs] for at, _, _ in data], dtype=float)
    e = np.array([en for _, en, _ in data])
    n = a.sum(1)
    e0 = np.linalg.lstsq(a / n[:, None], e / n, rcond=None)[0]  # per atom, so big cells do not dominate
    resid = (e - a @ e0) / n
    from ase.neighborlist import neighbor_list

    avg_nb = float(np.mean([len(neighbor_list("i", at, r_max)) / len(at) for at, _, _ in data]))
    return modules.ScaleShiftMACE(
        r_max=r_max, num_bessel=8, num_polynomial_cutoff=5, max_ell=2,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=2, num_elements=len(zs), hidden_irreps=o3.Irreps("16x0e+16x1o"),
        MLP_irreps=o3.Irreps("16x0e"), atomic_energies=e0, avg_num_neighbors=avg_nb, atomic_numbers=zs,
        correlation=2, gate=torch.nn.functional.silu, atomic_inter_scale=float(max(np.std(resid), 0.1)),
        atomic_inter_shift=0.0,
    )


def train(out: str | Path, structures: int = 300, epochs: int = 20, seed: int = 0, batch: int = 16,
          lr: float = 5e-3, stress_weight: float = 0.0, verbose: bool = True) -> dict:
    sys.path.insert(0, str(ROOT))
    from mpa_ase.graph import AtomsGraph
    from mpa_ase.model import MPAModel
    from mpa_ase_mace import MACEBackbone

    data = load_alexandria(structures, seed)
    mace_model = build_mace(data, seed).float()
    model = MPAModel(MACEBackbone(mace_model))
    n_val = max(1, len(data) // 10)

    train_set, val_set = data[n_val:], data[:n_val]
    opt = torch.optim.Adam(mace_model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)

    def batch_loss(items, training):
        graph = AtomsGraph.from_atoms([a for a, _, _ in items], model.cutoff, dtype=torch.float32)
        # stress in the loss needs a double backward: only where asked (slow on CPU)
        out = model.train(training)(graph, compute_forces=False, compute_stress=stress_weight > 0 or not training)
        n = graph.n_atoms.to(torch.float32)
        e_ref = torch.tensor([en for _, en, _ in items], dtype=torch.float32)
        s_ref = torch.tensor(np.stack([s for _, _, s in items]), dtype=torch.float32)
        e_err = (out["energy"] - e_ref) / n
        loss = (e_err ** 2).mean()
        s_mae = torch.zeros(())
        if "stress" in out:
            s_err = (out["stress"] - s_ref) * 160.21766208  # GPa
            s_mae = s_err.abs().mean()
            if training:
                loss = loss + stress_weight * (s_err ** 2).mean()
        return loss, e_err.abs().mean().detach(), s_mae.detach()

    history = []
    for epoch in range(epochs):
        order = rng.permutation(len(train_set))
        for k in range(0, len(order), batch):
            loss, _, _ = batch_loss([train_set[i] for i in order[k:k + batch]], True)
            opt.zero_grad()
            loss.backward()
            opt.step()
        _, e_mae, s_mae = batch_loss(val_set, False)
        history.append((float(e_mae), float(s_mae)))
        if verbose:
            print(f"epoch {epoch:3d}: val energy MAE {float(e_mae) * 1000:.1f} meV/atom, stress MAE {float(s_mae):.2f} GPa")
    mace_model.eval()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(mace_model, out)
    return {"val_energy_mae_eV_per_atom": history[-1][0], "val_stress_mae_GPa": history[-1][1],
            "n_train": len(train_set), "n_val": len(val_set), "epochs": epochs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--structures", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--stress-weight", type=float, default=0.0, help="weight of the stress loss (GPa^2)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(train(args.out, args.structures, args.epochs, args.seed, stress_weight=args.stress_weight))
    return 0


if __name__ == "__main__":
    sys.exit(main())
