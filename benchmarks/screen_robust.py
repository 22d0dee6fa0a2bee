"""`mpa screen` on 1000 files of which 5% are bad, SIGKILLed at a random point
and resumed, against an uninterrupted run of the same command.

    python benchmarks/screen_robust.py                 # 950 good + 50 bad files, kill after 25-75% of the run
    python benchmarks/screen_robust.py --n 200 --seed 3

Good files: real structures (matcalc's WBM set, then Alexandria at 0 GPa;
2-16 atoms) as CIF and extxyz. Bad files, 10 of each kind: unreadable
(garbage text), empty, overlapping atoms, an element the model lacks (Og),
partially occupied sites (Fe0.5Co0.5O). Checks: every good file's result is
in both tables exactly once, equal between them; every bad file is in the
errors table with its reason; nothing else is.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import format_table, write_results

from mpa_ase.testing.structures import DISORDERED_CIF as FECO


def make_files(folder: Path, n: int, seed: int) -> tuple[list[str], dict[str, str]]:
    from ase import Atoms
    from ase.io import write

    from mpa_ase.data.dft import load_structures, load_wbm

    n_bad = n // 20
    n_good = n - n_bad
    pool = [s.atoms for s in load_wbm(seed=0) if 2 <= len(s.atoms) <= 16][:n_good]
    if len(pool) < n_good:
        extra = load_structures({"loader": "alexandria_pressure", "pressures": [0], "max_atoms": 16,
                                 "limit": 2 * (n_good - len(pool))})
        pool += [s.atoms for s in extra if len(s.atoms) >= 2][: n_good - len(pool)]
    files, bad = [], {}
    for k, atoms in enumerate(pool):
        path = folder / (f"g{k:04d}.cif" if k % 2 else f"g{k:04d}.extxyz")
        write(path, atoms)
        files.append(str(path))
    kinds = ["garbage", "empty", "overlap", "element", "disorder"]
    for k in range(n_bad):
        kind = kinds[k % len(kinds)]
        path = folder / f"bad{k:03d}_{kind}" 
        if kind == "garbage":
            path = path.with_suffix(".cif")
            path.write_text("data_x\n_this is not a cif\n loop_ ]]\n")
        elif kind == "empty":
            path = path.with_suffix(".xyz")
            path.write_text("")
        elif kind == "overlap":
            path = path.with_suffix(".extxyz")
            write(path, Atoms("Si2", positions=[[0, 0, 0], [0, 0, 0.05]], cell=[5, 5, 5], pbc=True))
        elif kind == "element":
            path = path.with_suffix(".extxyz")
            write(path, Atoms("Og", positions=[[0, 0, 0]], cell=[5, 5, 5], pbc=True))
        else:
            path = path.with_suffix(".cif")
            path.write_text(FECO)
        files.append(str(path))
        bad[str(path)] = kind
    order = np.random.default_rng(seed).permutation(len(files))
    return [files[i] for i in order], bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import pandas as pd

    tmp = Path(tempfile.mkdtemp(prefix="mpa_screen_robust_"))
    files, bad = make_files(tmp, args.n, args.seed)
    listing = tmp / "files.txt"
    listing.write_text("\n".join(files))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def command(out):
        return [sys.executable, "-m", "mpa_ase.cli", "screen", *files, "--out", str(out), "--quiet",
                "--device", "cpu"]

    t0 = time.perf_counter()
    subprocess.run(command(tmp / "full.csv"), check=True, env=env, stdout=subprocess.DEVNULL)
    t_full = time.perf_counter() - t0
    rng = np.random.default_rng(args.seed)
    kill_after = float(rng.uniform(0.25, 0.75)) * t_full
    proc = subprocess.Popen(command(tmp / "cut.csv"), env=env, stdout=subprocess.DEVNULL)
    time.sleep(kill_after)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    rows_at_kill = max(0, sum(1 for _ in open(tmp / "cut.csv")) - 1) if (tmp / "cut.csv").exists() else 0
    subprocess.run(command(tmp / "cut.csv"), check=True, env=env, stdout=subprocess.DEVNULL)

    full, cut = pd.read_csv(tmp / "full.csv"), pd.read_csv(tmp / "cut.csv")
    efull, ecut = pd.read_csv(tmp / "full.errors.csv"), pd.read_csv(tmp / "cut.errors.csv")
    good_files = [f for f in files if f not in bad]
    src = lambda ids: {i.rsplit("@", 1)[0] for i in ids}  # noqa: E731
    merged = full.merge(cut, on="id", suffixes=("", "_cut"))
    num = [c for c in full.columns if c not in ("id", "formula")]
    max_diff = float(np.nanmax(np.abs(merged[num].to_numpy(float) - merged[[c + "_cut" for c in num]].to_numpy(float))))
    reasons = {kind: sorted({r.split(":")[0] for f, r in zip(ecut["id"], ecut["reason"])
                             if bad.get(f.rsplit("@", 1)[0]) == kind}) for kind in sorted(set(bad.values()))}
    row = {
        "files": len(files), "good": len(good_files), "bad": len(bad),
        "full_run_s": t_full, "killed_after_s": kill_after, "rows_written_at_kill": rows_at_kill,
        "rows_full": len(full), "rows_resumed": len(cut),
        "duplicates_resumed": int(cut["id"].duplicated().sum()) + int(ecut["id"].duplicated().sum()),
        "every_good_file_in_both": src(full["id"]) == src(cut["id"]) == set(good_files),
        "every_bad_file_listed": src(efull["id"]) == src(ecut["id"]) == set(bad),
        "same_ids_same_order": list(full["id"]) == list(cut["id"]),
        "max_abs_diff_values": max_diff,
    }
    table = format_table([row], list(row)) + "\n\nreasons by kind of bad file (exception names):\n\n" + "\n".join(
        f"- {k}: {', '.join(v)}" for k, v in reasons.items())
    print(table)
    print(f"written {write_results('screen_robust', [row], table, extra={'reasons': reasons})}")


if __name__ == "__main__":
    main()
