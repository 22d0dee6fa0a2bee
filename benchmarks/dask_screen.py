"""Screening on a local Dask cluster: 1 worker vs 2 workers (1 thread each),
the same files, the same calculator settings, one process run; then a
2-worker screen with one worker SIGKILLed mid-run.

    python benchmarks/dask_screen.py              # 2000 real structures, one file each
    python benchmarks/dask_screen.py --n 500 --shard-size 8

Structures: matcalc's WBM set (990 PBE-relaxed cells of 2-16 atoms), then
Alexandria's 0 GPa PBE structures of 2-16 atoms up to ``--n``, written as
one extxyz file each. Each side runs on a fresh LocalCluster whose
workers have built their calculator first (a 4-file warm-up screen), so the
rates compare screening, not start-up; the start-up (cluster + model load
on the workers) is reported beside them. The kill run checks that every
structure is in the table exactly once and equals the uninterrupted table.
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from common import format_table, write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--shard-size", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    import pandas as pd
    from ase.io import write

    from mpa_ase import MPACalculator
    from mpa_ase.data.dft import load_structures, load_wbm
    from mpa_ase.workflows import screen
    from mpa_ase.workflows.screen_dask import local_client, parts_dir

    pool = [s.atoms for s in load_wbm(seed=0) if 2 <= len(s.atoms) <= 16][: args.n]
    if len(pool) < args.n:
        extra = load_structures({"loader": "alexandria_pressure", "pressures": [0], "max_atoms": 16,
                                 "limit": 2 * (args.n - len(pool))})
        pool += [s.atoms for s in extra if len(s.atoms) >= 2][: args.n - len(pool)]
    tmp = Path(tempfile.mkdtemp(prefix="mpa_dask_screen_"))
    files = []
    for k, atoms in enumerate(pool):
        path = tmp / f"wbm{k:05d}.extxyz"
        write(path, atoms)
        files.append(str(path))
    calc = MPACalculator(device="cpu")
    opts = {"shard_size": args.shard_size, "batch_size": args.batch_size, "progress": True}

    rows, tables = [], {}
    for workers in (1, 2):
        t0 = time.perf_counter()
        client = local_client(workers)
        screen(files[:4 * workers], calc, tmp / f"warm{workers}.csv", client=client, shard_size=1, progress=False)
        startup = time.perf_counter() - t0
        out = tmp / f"w{workers}.parquet"
        t0 = time.perf_counter()
        screen(files, calc, out, client=client, **opts)
        seconds = time.perf_counter() - t0
        tables[workers] = pd.read_parquet(out)
        rows.append({"workers": workers, "structures": len(tables[workers]), "seconds": seconds,
                     "structures_per_s": len(tables[workers]) / seconds, "startup_s": startup})
        if workers == 2:
            pids = client.run(os.getpid)
            out = tmp / "killed.parquet"
            done = {}
            th = threading.Thread(target=lambda: done.setdefault("t", screen(files, calc, out, client=client,
                                                                              **{**opts, "progress": False})))
            t0 = time.perf_counter()
            th.start()
            n_shards = -(-len(files) // args.shard_size)
            killed_after = None
            while th.is_alive():
                n_done = len(list(parts_dir(out).glob("part-??????.parquet"))) if parts_dir(out).exists() else 0
                if n_done >= n_shards // 3:
                    os.kill(pids[sorted(pids)[1]], signal.SIGKILL)
                    killed_after = n_done
                    break
                time.sleep(0.05)
            th.join()
            killed_seconds = time.perf_counter() - t0
            killed = pd.read_parquet(out)
        client.close()
        client.cluster.close()
    ratio = rows[1]["structures_per_s"] / rows[0]["structures_per_s"]
    ids = list(killed["id"])
    same = list(tables[1]["id"]) == list(tables[2]["id"]) == ids
    num = [c for c in killed.columns if c not in ("id", "formula")]
    max_diff_12 = float(np.nanmax(np.abs(tables[1][num].to_numpy(float) - tables[2][num].to_numpy(float))))
    max_diff_kill = float(np.nanmax(np.abs(killed[num].to_numpy(float) - tables[2][num].to_numpy(float))))
    summary = {"speedup_2_vs_1_worker": ratio, "ids_identical_1w_2w_killed": same,
               "duplicates_after_kill": int(killed["id"].duplicated().sum()),
               "missing_after_kill": len(set(tables[2]["id"]) - set(ids)),
               "worker_killed_after_shards": killed_after, "shards": -(-len(files) // args.shard_size),
               "killed_run_seconds": killed_seconds,
               "max_abs_diff_1w_vs_2w": max_diff_12, "max_abs_diff_killed_vs_2w": max_diff_kill}
    table = format_table(rows, list(rows[0])) + "\n\n" + format_table([summary], list(summary))
    print(table)
    print(f"written {write_results('dask_screen', rows, table, extra={'summary': summary})}")


if __name__ == "__main__":
    main()
