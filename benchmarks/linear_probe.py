"""Does mid-training align the representation? A linear probe on the mid-trained trunk beside the benchmark's methods.

    python benchmarks/linear_probe.py --work runs/mpa_eqtune --split ood

For every target and seed of a mpa_vs_direct run folder: ridge regression on
[mean, sum / 10] of the per-atom outputs of that seed's mid-trained trunk
(``ridge_mid``), and the same on the frozen backbone features (``ridge_bb``,
the benchmark's ridge baseline, whose recorded MAE it must reproduce:
checked), alpha chosen on the validation side as there. Each is also scored
by the same 3-fold inner CV on the training split as the heads' start
(:func:`mpa_ase.training.head_start.inner_folds`), so the inner CV could
choose between a trained head and the probe: ``mpa_cv+probe`` takes
``ridge_mid`` where its inner-CV MAE is below the best of ``mpa_cv``'s
candidates, ``direct_cv+probe`` likewise ``ridge_bb`` against ``direct_cv``'s.
Nothing is retrained; the heads' MAEs are the run's records.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import format_table, write_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="runs/mpa_eqtune")
    ap.add_argument("--split", default="ood", choices=("ood", "random"))
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default: all in the folder)")
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    from mpa_ase.backbones import load_backbone
    from mpa_ase.checkpoint import read_parts
    from mpa_ase.training.baselines import pooled_features, ridge_fit_predict
    from mpa_ase.training.common import task_meta
    from mpa_ase.training.embeddings import EmbeddingCache
    from mpa_ase.training.head_start import inner_folds
    from mpa_ase.validation import stored
    from mpa_vs_direct import TARGETS, cap_per_task, load

    torch.set_num_threads(1)
    cache = EmbeddingCache(load_backbone("chgnet", model="0.3.0"), args.cache_dir, progress=False)
    work = Path(args.work)
    recs = defaultdict(dict)
    for line in (work / "records.jsonl").read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            recs[(r["split"], r["property"], r["seed"])][r["method"]] = r
    runs = sorted(work.glob(f"{args.split}_s*"), key=lambda p: int(p.name.split("_s")[1]))
    if args.seeds:
        runs = [r for r in runs if int(r.name.split("_s")[1]) in {int(x) for x in args.seeds.split(",")}]

    trunks = {run: read_parts(run / "mid_all/model.pt")[1].eval() for run in runs}
    out = defaultdict(dict)
    for task, spec in TARGETS:
        samples = [s for s in cap_per_task([s for s in load(spec, 10 ** 6) if s.task == task], 400, 0)
                   if cache.has(s)]
        log = task_meta(samples)["transform"] == "log10"
        for run in runs:
            seed = int(run.name.split("_s")[1])
            d = recs.get((args.split, task, seed), {})
            if not {"mpa_cv", "direct_cv", "ridge"} <= set(d):
                continue
            train, val, test = stored.apply(samples, stored.read(run)["targets"][task], task)
            calib = val or train
            y = {id(s): s.value for s in train + val + test}
            ys = lambda ss: np.array([y[id(s)] for s in ss])  # noqa: E731
            row = {}
            for name, feats in (("ridge_mid", pooled_features(cache, train + val + test, trunks[run])),
                                ("ridge_bb", pooled_features(cache, train + val + test))):
                x = {id(s): f for s, f in zip(train + val + test, feats)}
                xs = lambda ss: np.array([x[id(s)] for s in ss])  # noqa: E731

                def fit_mae(fit, held):
                    pred, _ = ridge_fit_predict(xs(fit), ys(fit), xs(calib), ys(calib), xs(held), log)
                    return float(np.mean(np.abs(pred - ys(held))))

                mae = fit_mae(train, test)
                folds = inner_folds(train, 3, seed)
                cv = float(np.mean([fit_mae(f, h) for f, h in folds])) if folds else float("nan")
                row[name] = (mae, cv)
            assert np.isclose(row["ridge_bb"][0], d["ridge"]["mae"], rtol=1e-6), (task, seed)
            for m in ("mpa_cv", "direct_cv"):
                row[m] = (d[m]["mae"], min(d[m]["head_start_cv"]["cv_mae"].values()))
            out[task][seed] = row
        print(task, flush=True)

    def pick(row, head, probe):
        return row[probe][0] if row[probe][1] < row[head][1] else row[head][0]

    comparisons = {
        "ridge_mid vs ridge_bb": lambda r: r["ridge_mid"][0] / r["ridge_bb"][0] - 1,
        "ridge_mid vs direct_cv": lambda r: r["ridge_mid"][0] / r["direct_cv"][0] - 1,
        "mpa_cv vs direct_cv": lambda r: r["mpa_cv"][0] / r["direct_cv"][0] - 1,
        "mpa_cv+probe vs direct_cv+probe": lambda r: pick(r, "mpa_cv", "ridge_mid") / pick(r, "direct_cv", "ridge_bb") - 1,
    }
    rows, summary = [], []
    for task, by_seed in out.items():
        row = {"property": task, "seeds": len(by_seed)}
        for name, fn in comparisons.items():
            row[name + " %"] = 100 * float(np.mean([fn(r) for r in by_seed.values()]))
        row["probe chosen (mpa_cv+probe)"] = sum(r["ridge_mid"][1] < r["mpa_cv"][1] for r in by_seed.values())
        rows.append(row)
    for name in comparisons:
        v = [r[name + " %"] for r in rows]
        summary.append({"comparison": name, "mean %": float(np.mean(v)), "properties improved": f"{sum(x < 0 for x in v)}/{len(v)}"})
    seeds = sorted({s for by in out.values() for s in by})
    table = (format_table(summary, list(summary[0])) + "\n\n" + format_table(rows, list(rows[0]))
             + f"\n\n{args.split} splits, seeds {seeds}; relative MAE changes averaged over seeds per property, then "
             "over properties. ridge_bb reproduced the recorded ridge baseline on every run.")
    print(table)
    write_results(args.name or f"linear_probe_{args.split}", rows, table, extra={"summary": summary})


if __name__ == "__main__":
    main()
