"""How many properties can a perfectly calibrated 90% interval put within
85-95% coverage, given each property's validation and test sizes?

    python benchmarks/coverage_noise.py --method mpa_cv --split ood     # reads runs/mpa_eqtune
    python benchmarks/coverage_noise.py --runs runs/mpa_eqtune runs/mpa_smallcal_a runs/mpa_smallcal_b \
        --name coverage_noise_ood_mpa_cv_s9_15

Reads the post-training metrics of a mpa_vs_direct run folder (validation
size, test size and measured test coverage of each property and seed) and
simulates split-conformal intervals on exchangeable data (no shift between
validation and test): with n calibration scores the interval at the
ceil((n+1)·0.9)-th score covers a new point with probability Beta(k, n+1-k)
(mean k/(n+1), above 0.9 for small n), and a test set of m points sees a
binomial fraction of it. The report gives, per property, the chance that the
mean over seeds falls within 85-95%, and the distribution of the count of
such properties, beside the measured count.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from common import format_table, write_results


def read_sizes(folders: list[Path], method: str, split: str) -> dict[str, list[tuple[int, int, float]]]:
    """task -> [(calibration size, test size, measured test coverage)] over seeds; a
    (task, seed) found in several folders is taken from the last. The calibration
    set is the validation side, plus the training side where the head was also
    calibrated on its inner CV's out-of-fold predictions."""
    by_seed = {}
    for runs in folders:
        for path in sorted(runs.glob(f"{split}_s*/post/*_{method}/metrics.json")):
            seed = int(path.parts[-4].split("_s")[-1])
            for task, m in json.loads(path.read_text()).items():
                interval = (m.get("interval") or {}) if isinstance(m, dict) else {}
                if interval.get("coverage_test") is not None:
                    n_cal = int(m["n_val"]) + (int(m["n_train"]) if "out-of-fold" in
                                               interval.get("calibrated_on", "") else 0)
                    by_seed[task, seed] = (n_cal, int(m["n_test"]), float(interval["coverage_test"]))
    sizes = defaultdict(list)
    for (task, _), row in sorted(by_seed.items()):
        sizes[task].append(row)
    return dict(sizes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", default=[str(Path(__file__).resolve().parents[1] / "runs" / "mpa_eqtune")],
                    help="run folders; a (property, seed) found in several is taken from the last")
    ap.add_argument("--name", default=None, help="results file prefix (default coverage_noise_<split>_<method>)")
    ap.add_argument("--method", default="mpa_cv")
    ap.add_argument("--split", default="ood")
    ap.add_argument("--level", type=float, default=0.9)
    ap.add_argument("--draws", type=int, default=20_000)
    args = ap.parse_args()
    if not 0.05 < args.level < 0.95 or args.draws < 1:
        ap.error("--level must lie in (0.05, 0.95) (the band is level ± 0.05) and --draws must be >= 1")
    sizes = read_sizes([Path(r) for r in args.runs], args.method, args.split)
    if not sizes:
        raise SystemExit(f"no {args.split} metrics of method {args.method} with intervals under {args.runs}")
    rng = np.random.default_rng(0)
    count = np.zeros(args.draws)
    rows = []
    for task, runs in sorted(sizes.items()):
        mean = np.zeros(args.draws)
        for n_val, n_test, _ in runs:
            k = math.ceil((n_val + 1) * args.level)
            mean += rng.binomial(n_test, rng.beta(k, n_val + 1 - k, size=args.draws)) / n_test
        mean /= len(runs)
        inside = (mean >= args.level - 0.05) & (mean <= args.level + 0.05)
        count += inside
        measured = float(np.mean([c for _, _, c in runs]))
        rows.append({"property": task, "seeds": len(runs), "n_calibration": runs[0][0], "n_test": runs[0][1],
                     "expected_coverage": round(float(np.mean(mean)), 3),
                     "p_within_band": round(float(inside.mean()), 3), "measured_coverage": round(measured, 3),
                     "measured_within_band": abs(measured - args.level) <= 0.05})
    measured_count = sum(r["measured_within_band"] for r in rows)
    lo, mid, hi = np.percentile(count, [5, 50, 95])
    table = format_table(rows, list(rows[0]))
    table += (f"\n\nProperties with intervals: {len(rows)}. Within {args.level - 0.05:.0%}-{args.level + 0.05:.0%} "
              f"if the intervals were exactly calibrated (no shift): expected {count.mean():.1f}, median {mid:.0f}, "
              f"5-95% range {lo:.0f}-{hi:.0f}. Measured: {measured_count}.")
    print(table)
    write_results(args.name or f"coverage_noise_{args.split}_{args.method}", rows, table,
                  extra={"expected_within_band": float(count.mean()), "range_5_95": [float(lo), float(hi)],
                         "measured_within_band": measured_count, "runs": args.runs})


if __name__ == "__main__":
    main()
