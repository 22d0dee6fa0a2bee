"""Choose a head start by inner CV, or average the candidates? Measured on stored test predictions.

    python benchmarks/candidate_bagging.py --work runs/mpa_eqtune --split ood

For every target and seed of a mpa_vs_direct run folder, the test predictions
of the first candidate (``mpa``: correlated top 3; ``direct``: a fresh head)
and of the one the inner CV chose (``mpa_cv``, ``direct_cv``) are averaged
compound by compound (the same prediction twice where the CV chose the first
candidate). ``bag2`` compares these averages of MPA and of direct
fine-tuning; ``selected`` the CV's choices, as in the benchmark. Two of the
four candidates only, from predictions already stored: nothing is retrained.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import format_table, write_results  # noqa: E402

METHODS = ("mpa", "mpa_cv", "direct", "direct_cv")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="runs/mpa_eqtune")
    ap.add_argument("--split", default="ood", choices=("ood", "random"))
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default: all in the folder)")
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    only = {int(x) for x in args.seeds.split(",")} if args.seeds else None
    work = Path(args.work)
    done = defaultdict(set)
    for line in (work / "records.jsonl").read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            if r["split"] == args.split and (only is None or r["seed"] in only):
                done[(r["property"], r["seed"])].add(r["method"])
    per = defaultdict(lambda: defaultdict(list))
    for (task, seed), methods in sorted(done.items()):
        if not set(METHODS) <= methods:
            continue
        preds = {}
        for m in METHODS:
            p = json.loads((work / f"{args.split}_s{seed}" / "post" / f"{task.replace(' ', '_')}_{m}" /
                            "metrics.json").read_text())[task]["test_predictions"]
            preds[m] = dict(zip(p["identity"], zip(p["y"], p["pred"])))
        ids = sorted(preds["mpa"])
        assert all(sorted(preds[m]) == ids for m in METHODS), (task, seed)
        y = np.array([preds["mpa"][i][0] for i in ids])
        pred = {m: np.array([preds[m][i][1] for i in ids]) for m in METHODS}
        mae = {m: float(np.mean(np.abs(pred[m] - y))) for m in METHODS}
        bag = {k: float(np.mean(np.abs((pred[k] + pred[k + "_cv"]) / 2 - y))) for k in ("mpa", "direct")}
        per[task]["selected"].append(mae["mpa_cv"] / mae["direct_cv"] - 1)
        per[task]["bag2"].append(bag["mpa"] / bag["direct"] - 1)
        per[task]["mpa bag2 vs mpa_cv"].append(bag["mpa"] / mae["mpa_cv"] - 1)
        per[task]["direct bag2 vs direct_cv"].append(bag["direct"] / mae["direct_cv"] - 1)
    rows = [{"property": t, "seeds": len(v["bag2"]), **{f"{k} %": 100 * float(np.mean(x)) for k, x in v.items()}}
            for t, v in per.items()]
    keys = [k for k in rows[0] if k.endswith("%")]
    summary = [{"comparison": k[:-2], "mean %": float(np.mean([r[k] for r in rows])),
                "properties below 0": f"{sum(r[k] < 0 for r in rows)}/{len(rows)}"} for k in keys]
    seeds = sorted({s for (_, s) in done})
    table = (format_table(summary, list(summary[0])) + "\n\n" + format_table(rows, list(rows[0]))
             + f"\n\n{args.split} splits, seeds {seeds}: 'selected' and 'bag2' are MPA vs direct fine-tuning "
             "(relative MAE change averaged over seeds, then properties); the last two, each method's average of "
             "two candidates vs its CV choice.")
    print(table)
    write_results(args.name or f"candidate_bagging_{args.split}", rows, table, extra={"summary": summary})


if __name__ == "__main__":
    main()
