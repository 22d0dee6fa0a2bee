"""Is the side a head is calibrated on easier than its test side? From the
per-compound predictions mpa_vs_direct.py keeps (nothing is retrained).

    python benchmarks/calibration_gap.py --predictions benchmarks/results/mpa_vs_direct_eqtune_predictions.jsonl.gz \
        benchmarks/results/mpa_vs_direct_cal_dev_predictions.jsonl.gz

Per method and seed: the median over heads (10 or more compounds on the side)
of MAE(side) / MAE(test), for the validation side early stopping reads and,
where a run held one apart (``calibration.fraction``), the calibration set.
Then the same ratio when each head's side and test compounds are dealt again
into sides of the same sizes (as whole clusters of the split's kind, or as
single compounds; median of 200 draws per head, median over heads): what
exchangeable sides give, so a gap beyond it is not the skew of small samples.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import format_table, write_results  # noqa: E402
from interval_clusters import arrays, cluster_key  # noqa: E402
from mpa_vs_direct import restore_labels  # noqa: E402

MIN_SIDE = 10


def read(paths: list[str]) -> list[dict]:
    import gzip
    import json

    seen = {}
    for path in paths:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt") as fh:
            for text in fh:
                if text.strip():
                    line = json.loads(text)
                    seen.setdefault((line["property"], line["split"], line["seed"], line["method"]), line)
    return restore_labels(list(seen.values()))


def mae_ratio(side: dict, test: dict) -> float:
    (ys, ps, _), (yt, pt, _) = arrays(side), arrays(test)
    return float(np.mean(np.abs(ys - ps)) / np.mean(np.abs(yt - pt)))


def exchanged(line: dict, side: dict, clusters: bool, rng, draws: int = 200) -> float:
    """Median MAE ratio when the side's and test's compounds are dealt again."""
    err = np.abs(np.concatenate([arrays(side)[0] - arrays(side)[1], arrays(line["test"])[0] - arrays(line["test"])[1]]))
    n, n_test = len(side["y"]), len(line["test"]["y"])
    key = "smiles" if "smiles" in side else "formula"
    groups = defaultdict(list)
    for i, name in enumerate(side[key] + line["test"][key]):
        label = (cluster_key(name if key == "smiles" else None, name if key == "formula" else None,
                             line["split_kind"]) if clusters and line["split_kind"] != "random" else i)
        groups[label].append(i)
    groups = list(groups.values())
    ratios = []
    for _ in range(draws):
        a, b = [], []
        for g in (groups[k] for k in rng.permutation(len(groups))):
            (a if len(a) / n <= len(b) / n_test else b).extend(g)
        ratios.append(err[a].mean() / err[b].mean())
    return float(np.median(ratios))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--predictions", nargs="+", required=True)
    ap.add_argument("--split", default="ood", choices=("ood", "random"))
    ap.add_argument("--name", default="calibration_gap")
    args = ap.parse_args()
    lines = [x for x in read(args.predictions) if x["split"] == args.split]
    rng = np.random.default_rng(0)
    by = defaultdict(lambda: defaultdict(list))
    for line in sorted(lines, key=lambda x: (x["method"], x["seed"], x["property"])):
        sides = {"validation (early stopping)": line["val"]}
        if line.get("cal"):
            sides["calibration set apart"] = line["cal"]
        if line.get("crossfit"):  # the copies' predictions, not the head's: the observed ratio only
            x = line["crossfit"]
            sides["cross-fit (copy stopped on the other folds)"] = {**x, "std": x.get("copy_std", x.get("std"))}
        for what, side in sides.items():
            if len(side["y"]) < MIN_SIDE:
                continue
            for seed in (line["seed"], "all"):
                by[(line["method"], what, seed)]["observed"].append(mae_ratio(side, line["test"]))
            if what.startswith("cross-fit"):
                continue
            by[(line["method"], what, "all")]["clusters"].append(exchanged(line, side, True, rng))
            by[(line["method"], what, "all")]["compounds"].append(exchanged(line, side, False, rng))
    rows = []
    for (method, what, seed), d in sorted(by.items(), key=lambda kv: tuple(map(str, kv[0]))):
        rows.append({"method": method, "side": what, "seeds": seed, "heads": len(d["observed"]),
                     "median_mae_ratio_side_over_test": float(np.median(d["observed"])),
                     "exchanged_clusters": float(np.median(d["clusters"])) if d["clusters"] else None,
                     "exchanged_compounds": float(np.median(d["compounds"])) if d["compounds"] else None})
    cols = ["method", "side", "seeds", "heads", "median_mae_ratio_side_over_test", "exchanged_clusters",
            "exchanged_compounds"]
    table = format_table(rows, cols)
    write_results(args.name, rows,
                  f"MAE of the side a head stops early or calibrates on over its test MAE ({args.split} splits, "
                  f"heads with {MIN_SIDE}+ compounds on the side; medians over heads), and what sides dealt "
                  "again would give.\n\n" + table)
    print(table)


if __name__ == "__main__":
    main()
