"""Two-member ensembles, MPA against direct fine-tuning with the same number
of fits: the average of mpa_cv and mpa_cv_m1 (a second mid-training run,
seed + 1000, post-trained with the same recipe) against the average of
direct_cv and direct_cv_m1 (post-trained with seed + 1000). From the
per-compound predictions mpa_vs_direct.py keeps; nothing is retrained.

    python benchmarks/trunk_ensemble.py --predictions runs/ens_dev_s18/predictions.jsonl \\
        benchmarks/results/mpa_vs_direct_eqtune_predictions.jsonl.gz --seeds 18,19 --name ...

Per target and seed, each ensemble predicts the mean of its members' test
predictions; the relative MAE change against the baseline ensemble is
averaged over seeds, then over properties (as mpa_vs_direct.py does), with a
bootstrap interval over properties. The members' own comparisons on the same
heads are printed beside it.

Intervals: the ensemble's spread is sqrt(mean member variance + variance of
the member means) (each member's σ as its run calibrated it); its 90%
interval is calibrated as a head's is (mpa_ase.training.trainer.conformal_fit)
on the validation side, and where that has under 10 compounds, together with
the inner CV's out-of-fold predictions (the members' averaged per compound).
Test coverage is pooled over seeds per property; the members' own intervals
are recomputed the same way for the paired comparison.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration_gap import read  # noqa: E402
from common import format_table, write_results  # noqa: E402
from interval_clusters import BAND  # noqa: E402
from mpa_vs_direct import bootstrap_ci  # noqa: E402

from mpa_ase.training.trainer import INTERVAL_LEVEL, MIN_CALIBRATION, conformal_fit  # noqa: E402


def member_lists(mpa: str, direct: str) -> tuple[list[str], list[str]]:
    """The two ensembles' methods from comma-separated lists: as many on each side
    (member k of one is compared with member k of the other), none twice on a side."""
    out = [[m.strip() for m in side.split(",") if m.strip()] for side in (mpa, direct)]
    if not out[0] or len(out[0]) != len(out[1]):
        raise ValueError(f"--mpa and --direct must name as many methods each (got {out[0]} and {out[1]})")
    for side in out:
        if len(set(side)) != len(side):
            raise ValueError(f"a method is named twice in {side}: an ensemble of a method with itself is that method")
    return out[0], out[1]


def combine(lines: list[dict], side: str) -> dict | None:
    """The ensemble's (y, pred, std) on one side, members matched by identity."""
    parts = [x.get(side) for x in lines]
    if any(not p for p in parts):
        return None
    ids = parts[0]["identity"]
    if any(p["identity"] != ids for p in parts[1:]):
        if side != "out_of_fold":
            raise ValueError(f"{lines[0]['property']} seed {lines[0]['seed']}: the members' {side} compounds differ")
        ids = sorted(set.intersection(*(set(p["identity"]) for p in parts)))
    rows = [{i: k for k, i in enumerate(p["identity"])} for p in parts]
    take = lambda p, r, key: np.array([p[key][r[i]] for i in ids], dtype=np.float64)  # noqa: E731
    means = np.stack([take(p, r, "pred") for p, r in zip(parts, rows)])
    scale = [1.0 if side != "out_of_fold" else float(x["std_scale"]) for x in lines]
    var = np.stack([(take(p, r, "std") * s) ** 2 for p, r, s in zip(parts, rows, scale)])
    return {"y": take(parts[0], rows[0], "y"), "pred": means.mean(0),
            "std": np.sqrt(var.mean(0) + means.var(0))}


def coverage(lines: list[dict]) -> tuple[int, int, float]:
    """(covered, n, mean width over the test MAE) on test of the interval calibrated as a head's is."""
    val, test = combine(lines, "val"), combine(lines, "test")
    y, pred, std = (val[k] for k in ("y", "pred", "std"))
    if len(y) < MIN_CALIBRATION:
        oof = combine(lines, "out_of_fold")
        if oof is None:
            return 0, 0, float("nan")
        y, pred, std = (np.concatenate([a, oof[k]]) for a, k in zip((y, pred, std), ("y", "pred", "std")))
    q, floor = conformal_fit(y, pred, std, INTERVAL_LEVEL)
    err = np.abs(test["y"] - test["pred"])
    inside = err <= q * (test["std"] + floor)
    return int(inside.sum()), len(inside), float(np.mean(2 * q * (test["std"] + floor)) / np.mean(err))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--predictions", nargs="+", required=True)
    ap.add_argument("--mpa", default="mpa_cv,mpa_cv_m1", help="the MPA ensemble's members")
    ap.add_argument("--direct", default="direct_cv,direct_cv_m1", help="the baseline ensemble's members")
    ap.add_argument("--split", default="ood")
    ap.add_argument("--seeds", default=None, help="comma-separated; default: every seed with all members")
    ap.add_argument("--name", default="trunk_ensemble")
    args = ap.parse_args()
    mpa, direct = member_lists(args.mpa, args.direct)
    seeds = {int(s) for s in args.seeds.split(",")} if args.seeds else None
    lines = {(x["property"], x["seed"], x["method"]): x for x in read(args.predictions)
             if x["method"] in mpa + direct and x["split"] == args.split and (seeds is None or x["seed"] in seeds)}
    heads = sorted({(p, s) for p, s, _ in lines if all((p, s, m) in lines for m in mpa + direct)})
    if not heads:
        raise SystemExit("no target and seed has every member's predictions")
    comparisons = {"ensemble": (mpa, direct), **{f"{a} vs {b}": ([a], [b]) for a, b in zip(mpa, direct)}}
    rel = {k: defaultdict(list) for k in comparisons}
    cover = {k: defaultdict(lambda: [0, 0, []]) for k in ["mpa ensemble", "direct ensemble", *mpa, *direct]}
    for p, s in heads:
        for key, (ours, theirs) in comparisons.items():
            a, b = (combine([lines[p, s, m] for m in ms], "test") for ms in (ours, theirs))
            rel[key][p].append(np.mean(np.abs(a["y"] - a["pred"])) / np.mean(np.abs(b["y"] - b["pred"])) - 1)
        for key, ms in [("mpa ensemble", mpa), ("direct ensemble", direct), *[(m, [m]) for m in mpa + direct]]:
            covered, n, width = coverage([lines[p, s, m] for m in ms])
            c = cover[key][p]
            c[0] += covered
            c[1] += n
            c[2].append(width)
    props = sorted({p for p, _ in heads})
    rows = []
    for p in props:
        row = {"property": p, "seeds": len(rel["ensemble"][p])}
        for key in comparisons:
            row[f"{key} %"] = 100 * float(np.mean(rel[key][p]))
        for key in cover:
            covered, n, _ = cover[key][p]
            row[f"{key} coverage"] = covered / n if n else float("nan")
        rows.append(row)
    summary = []
    for key in comparisons:
        v = [float(np.mean(rel[key][p])) for p in props]
        lo, hi = bootstrap_ci(v)
        summary.append({"comparison": key if key != "ensemble" else f"{'+'.join(mpa)} vs {'+'.join(direct)}",
                        "mean %": 100 * float(np.mean(v)), "ci95 %": f"[{100 * lo:+.1f}, {100 * hi:+.1f}]",
                        "median %": 100 * float(np.median(v)), "improved": f"{sum(x < 0 for x in v)}/{len(v)}"})
    intervals = []
    for key, per in cover.items():
        cov = [c[0] / c[1] for c in per.values() if c[1]]
        intervals.append({"interval (90%)": key, "mean coverage": float(np.mean(cov)),
                          "properties in 85-95%": f"{sum(BAND[0] <= c <= BAND[1] for c in cov)}/{len(cov)}",
                          "width / test MAE": float(np.mean([w for c in per.values() for w in c[2]]))})
    table = "\n\n".join([
        format_table(summary, list(summary[0])), format_table(intervals, list(intervals[0])),
        format_table(rows, list(rows[0])),
        f"{args.split} splits, seeds {sorted({s for _, s in heads})}: each ensemble predicts its members' mean; "
        "relative MAE change averaged over seeds, then properties; intervals calibrated on validation (and the "
        "inner CV's out-of-fold predictions under 10 compounds), test coverage pooled over seeds."])
    print(table)
    write_results(args.name, rows, table, extra={"summary": summary, "intervals": intervals,
                                                 "heads": [list(h) for h in heads]})


if __name__ == "__main__":
    main()
