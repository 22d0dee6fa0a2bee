"""How far a few seeds move the headline figures: over every window of k
consecutive OOD seeds of a merged mpa_vs_direct results file, mpa_cv vs
direct_cv (mean relative MAE change, as the summary computes it) and mpa_cv's
90% intervals (test coverage averaged per property over the window's seeds;
mean, and properties within 85-95%). Both methods' records come from the
same runs; nothing is retrained. Used to read a new series of k seeds
against the older series.

    python benchmarks/seed_windows.py --records benchmarks/results/mpa_vs_direct_eqtune.json --k 8
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import format_table, write_results  # noqa: E402
from mpa_vs_direct import summarise  # noqa: E402

BAND = (0.85, 0.95)


def coverage(records: list[dict], method: str) -> dict[str, float]:
    """Test coverage of ``method``'s intervals, averaged per property over the records' seeds."""
    by = defaultdict(list)
    for r in records:
        if r["method"] == method and r.get("interval_coverage_test") is not None:
            by[r["property"]].append(r["interval_coverage_test"])
    return {p: float(np.mean(v)) for p, v in by.items()}


def windows(records: list[dict], k: int, method: str = "mpa_cv", baseline: str = "direct_cv") -> list[dict]:
    if k < 1:
        raise ValueError(f"window length k must be at least 1, got {k}")
    records = [r for r in records if r["split"] == "ood" and r["method"] in (method, baseline)]
    seeds = sorted({r["seed"] for r in records})
    if len(seeds) < k:
        raise ValueError(f"{len(seeds)} OOD seeds in the records, fewer than the window length {k}")
    rows = []
    for a in range(len(seeds) - k + 1):
        inside = set(seeds[a:a + k])
        rs = [r for r in records if r["seed"] in inside]
        change = summarise(rs)["numbers"][f"ood/{method} vs {baseline}"]["mean_rel_change"]
        cov = coverage(rs, method)
        rows.append({"seeds": f"{min(inside)}-{max(inside)}", "change_%": 100 * change,
                     "coverage_mean_%": 100 * float(np.mean(list(cov.values()))),
                     "within_85_95": sum(BAND[0] <= c <= BAND[1] for c in cov.values()), "properties": len(cov)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", required=True, help="a merged mpa_vs_direct results file (list of records)")
    ap.add_argument("--k", type=int, required=True, help="seeds per window")
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    rows = windows(json.loads(Path(args.records).read_text()), args.k)
    span = {c: (min(r[c] for r in rows), max(r[c] for r in rows)) for c in ("change_%", "coverage_mean_%", "within_85_95")}
    table = format_table(rows, ["seeds", "change_%", "coverage_mean_%", "within_85_95", "properties"])
    table += (f"\n\n{len(rows)} windows of {args.k} seeds: mpa_cv vs direct_cv {span['change_%'][0]:+.1f}% to "
              f"{span['change_%'][1]:+.1f}%; mean coverage {span['coverage_mean_%'][0]:.1f}-"
              f"{span['coverage_mean_%'][1]:.1f}%; properties within 85-95% {span['within_85_95'][0]}-"
              f"{span['within_85_95'][1]} (median {np.median([r['within_85_95'] for r in rows]):g})")
    print(table)
    name = args.name or f"seed_windows_{Path(args.records).stem}_k{args.k}"
    write_results(name, rows, table, extra={"records": args.records, "k": args.k})


if __name__ == "__main__":
    main()
