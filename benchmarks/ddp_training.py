"""Data-parallel fine-tuning under torchrun: 1 process vs 2 processes (gloo,
1 thread each), the same config and global batch, one benchmark run.

    python benchmarks/ddp_training.py                       # 96 Alexandria materials x 3 pressures, 2 epochs
    python benchmarks/ddp_training.py --materials 32 --epochs 1

Fine-tunes CHGNet (energy, forces, stress; examples/training-like settings)
with ``mpa train finetune`` and ``--nproc 1`` / ``--nproc 2`` and reports the
training throughput of each epoch (structures/s, validation excluded), the
ratio, and how far the two runs' final weights and losses are apart.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from common import format_table, write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--materials", type=int, default=96)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    import torch

    tmp = Path(tempfile.mkdtemp(prefix="mpa_ddp_"))
    cfg = {"data": [{"loader": "alexandria_pressure", "limit": args.materials, "pressures": [0, 50, 150],
                     "max_atoms": 16, "zero_forces": True}],
           "optim": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": 1e-4, "patience": 100}}
    rows, states = [], {}
    for nproc in (1, 2):
        out = tmp / f"n{nproc}"
        path = tmp / f"n{nproc}.yaml"
        path.write_text(yaml.safe_dump({**cfg, "output": str(out)}))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mpa_ase.cli", "train", "finetune", "--config", str(path), "--quiet",
                        "--nproc", str(nproc)], check=True, env=env)
        wall = time.perf_counter() - t0
        metrics = json.loads((out / "metrics.json").read_text())
        states[nproc] = torch.load(out / "checkpoint.pt", weights_only=True)
        sps = metrics["structures_per_s"]
        rows.append({"processes": nproc, "threads_each": 1, "n_train": metrics["n_train"],
                     "structures_per_s_by_epoch": ", ".join(f"{x:.2f}" for x in sps),
                     "structures_per_s_mean": sum(sps) / len(sps), "wall_s_incl_start_and_validation": wall})
    ratio = rows[1]["structures_per_s_mean"] / rows[0]["structures_per_s_mean"]
    a, b = states[1], states[2]
    diff = max(float((v - b["module"][k]).abs().max()) for k, v in a["module"].items() if v.is_floating_point())
    ha, hb = json.loads(a["history"]), json.loads(b["history"])
    loss_rel = max(abs(x["train_loss"] - y["train_loss"]) / abs(x["train_loss"]) for x, y in zip(ha[1:], hb[1:]))
    summary = {"speedup_2_vs_1": ratio, "max_abs_weight_diff": diff, "max_rel_train_loss_diff": loss_rel,
               "epochs": args.epochs, "global_batch": args.batch_size}
    table = format_table(rows, list(rows[0])) + "\n\n" + format_table([summary], list(summary))
    print(table)
    print(f"written {write_results(f'ddp_training_b{args.batch_size}', rows, table, extra={'summary': summary})}")


if __name__ == "__main__":
    main()
