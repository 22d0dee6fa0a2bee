"""What the mid-training heads know about each target before post-training.

    python benchmarks/mid_heads_as_is.py --runs runs/xdeal_s{40..57} --name mid_heads_as_is_s40_57

Reads finished mpa_vs_direct.py run folders (records, stored splits and the
mid-trained model of each seed; nothing is trained). Per target and seed:

* ``related``: the mid-training head of the same property from another source
  (the one ``head_init: related`` starts from), its output mapped to the target
  by a least-squares line fitted on the training side (in the target's
  transform: log10 where the target has it), scored on validation and test;
* ``train/test``: that head's training-side MAE over its test MAE (below 1:
  mid-training saw the training compounds under other sources, not the test ones);
* ``switch``: the rule "take the related head as it is where its validation MAE
  is below the post-trained mpa_cv head's" (heads with 10 or more validation
  compounds), scored on test as a change against direct_cv, beside mpa_cv's
  own change and the better of the two per head (an oracle no rule reaches).
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


def line_fit(x, y) -> tuple[float, float]:
    a = np.vstack([x, np.ones_like(x)]).T
    slope, intercept = np.linalg.lstsq(a, y, rcond=None)[0]
    return float(slope), float(intercept)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", required=True, help="mpa_vs_direct.py work folders (one OOD seed each)")
    ap.add_argument("--name", default="mid_heads_as_is")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(args.threads)
    import mpa_vs_direct as m
    from mpa_ase.backbones import load_backbone
    from mpa_ase.checkpoint import read_parts
    from mpa_ase.training.embeddings import EmbeddingCache
    from mpa_ase.training.head_start import related_head
    from mpa_ase.training.trainer import Batcher, HeadSet, predict
    from mpa_ase.validation import stored

    cache = EmbeddingCache(load_backbone("chgnet", model="0.3.0"), None, progress=False)
    batcher = Batcher(cache)
    # the benchmark's own target samples (the same cap and order the runs used)
    targets = {t: m.cap_per_task([s for s in m.load(ld, 10 ** 6) if s.task == t], 400, 0) for t, ld in m.TARGETS}
    lines = []
    for run in map(Path, args.runs):
        folders = sorted(run.glob("ood_s*"))
        if len(folders) != 1:
            raise SystemExit(f"{run}: expected one ood_s<seed> folder, found {len(folders)}")
        seed = int(folders[0].name.split("_s")[1])
        recs = {}
        for text in (run / "records.jsonl").read_text().splitlines():
            if text.strip():
                r = json.loads(text)
                recs.setdefault((r["property"], r["method"]), r)  # the first record of a head wins, as in --merge
        splits = json.loads((folders[0] / "splits.json").read_text())["targets"]
        _, trunk, heads, _ = read_parts(folders[0] / "mid_all" / "model.pt")
        headset = HeadSet(trunk, heads)
        for task, samples in targets.items():
            samples = [s for s in samples if cache.has(s)]
            if (task, "mpa_cv") not in recs:
                continue
            if (task, "direct_cv") not in recs or "val_mae" not in recs[(task, "mpa_cv")]:
                raise SystemExit(f"{run}: {task} has an mpa_cv record but no direct_cv record or no validation "
                                 "MAE; run the benchmark with --methods mpa_cv,direct_cv first")
            rel = related_head(heads, samples[0].property)
            line = {"property": task, "seed": seed, "source_head": rel.name if rel else None,
                    "mpa_cv_test_mae": recs[(task, "mpa_cv")]["mae"], "mpa_cv_val_mae": recs[(task, "mpa_cv")]["val_mae"],
                    "direct_cv_test_mae": recs[(task, "direct_cv")]["mae"]}
            if rel is None:  # the switch leaves these heads as they are
                lines.append(line)
                continue
            train, val, test = stored.apply(samples, splits[task], task)
            log = samples[0].transform == "log10"
            fwd = (lambda v: np.log10(np.maximum(v, 1e-300))) if log else (lambda v: v)
            inv = (lambda v: 10.0 ** v) if log else (lambda v: v)
            out = {side: fwd(predict(headset, rel.name, batcher, part)[0])
                   for side, part in (("train", train), ("val", val), ("test", test))}
            slope, intercept = line_fit(out["train"], fwd(np.array([s.value for s in train])))
            mae = {side: float(np.mean(np.abs(inv(slope * out[side] + intercept) - np.array([s.value for s in part]))))
                   for side, part in (("train", train), ("val", val), ("test", test))}
            lines.append({**line, "n_val": len(val), "related_test_mae": mae["test"], "related_val_mae": mae["val"],
                          "related_train_mae": mae["train"]})
            print(json.dumps(lines[-1]), flush=True)

    by = defaultdict(list)
    for x in lines:
        by[x["property"]].append(x)

    def switched(x) -> bool:
        return x["source_head"] is not None and x["n_val"] >= 10 and x["related_val_mae"] < x["mpa_cv_val_mae"]

    def as_is(x) -> float:
        return x["related_test_mae"] if x["source_head"] else x["mpa_cv_test_mae"]

    rows = []
    for prop, xs in sorted(by.items()):
        change = lambda pick: 100 * float(np.mean([pick(x) / x["direct_cv_test_mae"] - 1 for x in xs]))
        has = xs[0]["source_head"] is not None
        rows.append({"property": prop, "seeds": len(xs), "source_head": xs[0]["source_head"] or "(none)",
                     "mpa_cv_%": change(lambda x: x["mpa_cv_test_mae"]),
                     "related_as_is_%": change(as_is) if has else "",
                     "switch_%": change(lambda x: x["related_test_mae"] if switched(x) else x["mpa_cv_test_mae"]),
                     "switched": sum(switched(x) for x in xs),
                     "oracle_%": change(lambda x: min(as_is(x), x["mpa_cv_test_mae"])),
                     "train_over_test": float(np.median([x["related_train_mae"] / x["related_test_mae"] for x in xs]))
                     if has else ""})
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("mpa_cv_%", "switch_%", "oracle_%")}
    with_head = [r for r in rows if r["source_head"] != "(none)"]
    mean["related_as_is_%_where_one"] = float(np.mean([r["related_as_is_%"] for r in with_head]))
    mean["mpa_cv_%_where_one"] = float(np.mean([r["mpa_cv_%"] for r in with_head]))
    table = format_table(rows, ["property", "seeds", "source_head", "mpa_cv_%", "related_as_is_%", "switch_%",
                                "switched", "oracle_%", "train_over_test"])
    head = (f"Mean test MAE change against direct_cv over {len(rows)} targets (seeds "
            f"{sorted({x['seed'] for x in lines})}): mpa_cv {mean['mpa_cv_%']:+.1f}%, the validation switch "
            f"{mean['switch_%']:+.1f}% ({sum(r['switched'] for r in rows)} heads switched), the per-head oracle "
            f"{mean['oracle_%']:+.1f}%. Over the {len(with_head)} targets with a same-property mid-training head: "
            f"that head as it is {mean['related_as_is_%_where_one']:+.1f}%, mpa_cv {mean['mpa_cv_%_where_one']:+.1f}%.")
    print(head)
    write_results(args.name, lines, head + "\n\n" + table, extra={"means": mean})


if __name__ == "__main__":
    main()
