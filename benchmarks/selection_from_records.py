"""Would choosing between the trained MPA and direct heads by validation MAE help? And how well does each inner CV foresee its test MAE?

    python benchmarks/selection_from_records.py            # reads results/mpa_vs_direct_eqtune.json

From the stored benchmark records alone (nothing is retrained), per property
and seed: ``mpa_cv`` vs ``direct_cv`` as in the summary; ``val_select`` the
one of the two with the lower validation MAE (both stopped early on that
side) vs ``direct_cv``; and, per method, the chosen candidate's inner-CV MAE
over the final head's test MAE (above 1: the inner CV rated the start worse
than it turned out). Relative changes are averaged over seeds, then over
properties, as in ``mpa_vs_direct_summary``.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from common import RESULTS, format_table, write_results

PAIR = ("mpa_cv", "direct_cv")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", default=str(RESULTS / "mpa_vs_direct_eqtune.json"))
    ap.add_argument("--name", default="selection_from_records")
    args = ap.parse_args()
    records = json.loads(Path(args.records).read_text())
    paired = defaultdict(dict)  # (split, property, seed) -> method -> record
    for r in records:
        if r["method"] in PAIR:
            paired[r["split"], r["property"], r["seed"]][r["method"]] = r
    per = defaultdict(lambda: defaultdict(list))  # (split, property) -> column -> per-seed values
    seeds = defaultdict(set)
    for (split, prop, seed), m in sorted(paired.items()):
        if set(PAIR) - set(m):
            continue
        a, b = m["mpa_cv"], m["direct_cv"]
        if not all(math.isfinite(x["val_mae"]) for x in (a, b)):
            raise SystemExit(f"{prop} [{split}, seed {seed}]: a record without a validation MAE")
        seeds[split].add(seed)
        pick = b if b["val_mae"] < a["val_mae"] else a
        row = per[split, prop]
        row["mpa_cv %"].append(100 * (a["mae"] / b["mae"] - 1))
        row["val_select %"].append(100 * (pick["mae"] / b["mae"] - 1))
        row["mpa chosen by val"].append(pick is a)
        for name, x in (("mpa_cv", a), ("direct_cv", b)):
            cv = x["head_start_cv"]["cv_mae"][x["head_start_cv"]["candidate"]]
            row[f"{name} cv/test"].append(cv / x["mae"])
    rows = [{"split": split, "property": prop, "seeds": len(v["mpa_cv %"]),
             **{k: float(np.mean(x)) for k, x in v.items() if k != "mpa chosen by val"},
             "mpa chosen by val": f"{sum(v['mpa chosen by val'])}/{len(v['mpa chosen by val'])}"}
            for (split, prop), v in sorted(per.items())]
    summary = []
    for split in sorted(seeds):
        sub = [r for r in rows if r["split"] == split]
        summary.append({"split": split, "seeds": ",".join(map(str, sorted(seeds[split]))), "properties": len(sub),
                        **{f"mean {k}": float(np.mean([r[k] for r in sub])) for k in ("mpa_cv %", "val_select %")},
                        **{f"median {k}": float(np.median([r[k] for r in sub]))
                           for k in ("mpa_cv cv/test", "direct_cv cv/test")}})
    table = (format_table(summary, list(summary[0])) + "\n\n" + format_table(rows, list(rows[0]))
             + f"\n\nRecords: {args.records}. mpa_cv % and val_select % are relative test-MAE changes against "
             "direct_cv; cv/test is the chosen start's inner-CV MAE over the final head's test MAE.")
    print(table)
    write_results(args.name, rows, table, extra={"summary": summary, "records": args.records})


if __name__ == "__main__":
    main()
