"""How well can 90% intervals hold per property out of distribution, and does a
size-scaled floor help the extensive targets? From the per-compound predictions
that mpa_vs_direct.py keeps (results/<name>_predictions.jsonl.gz); nothing is
retrained. Declared in session 14 before fresh OOD seeds 18 and 19 were run;
the reported results pool seeds 18-21 (interval_clusters_ood_*_s18_21.md).

    python benchmarks/interval_clusters.py \
        --predictions benchmarks/results/mpa_vs_direct_eqtune_predictions.jsonl.gz [--method direct_cv]

First each head's own interval is recomputed from its stored calibration set
(validation predictions, or those of the calibration set held apart from
early stopping where the run had one, ``calibration.fraction``; and the inner
CV's out-of-fold ones where fewer than 10 validation compounds; the cross-fit
predictions of the validation side where the run made them,
``calibration.cross_fit``), at the quantile level the run read
(``calibration.selection`` raises it): q, floor and test coverage must equal
the stored ones (checked). ``--calibrate-on validation`` instead calibrates heads that
were cross-fit on their own validation predictions, as without the option
(the same final heads, so the two calibrations compare paired). Then:

1. ``size floor``: for extensive targets (enthalpies, entropies, critical
   volume), mean ± q·(σ + floor·n/median n), n the molecule's heavy atoms and
   the median over the calibration side, q recalibrated on that side; other
   targets keep their own interval.
2. ``exchange``: what exactly calibrated intervals would give with these set
   sizes. Each head's calibration and test compounds are pooled and dealt
   again into sides of the same sizes, B times, as whole clusters of the
   split's kind (scaffolds, chemical systems, periodic-table columns) or as
   single compounds; q is calibrated on the new calibration side (plus the
   fixed out-of-fold set where the head used one) and coverage counted on the
   new test side, pooled over seeds per property. Exchanging clusters is what
   the OOD split itself does, so its spread of "properties within 85-95%" is
   the attainable range for intervals that are exchangeable at all; the
   compound-level one is the usual (optimistic) binomial reference.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import RESULTS, format_table, write_results  # noqa: E402
from mpa_vs_direct import restore_labels  # noqa: E402

LEVEL, BAND = 0.9, (0.85, 0.95)


def read_lines(paths: list[str], method: str, split: str) -> list[dict]:
    """The heads of ``method`` on ``split`` splits; those without an interval
    (under 10 calibration compounds) are left out, and counted."""
    lines = []
    for path in paths:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rt") as fh:
            lines += [json.loads(t) for t in fh if t.strip()]
    mine = restore_labels([x for x in lines if x["method"] == method and x["split"] == split])
    without = sorted({x["property"] for x in mine if not x.get("interval")})
    if without:
        print(f"{len([x for x in mine if not x.get('interval')])} heads without an interval left out: {without}")
    return [x for x in mine if x.get("interval")]


def cluster_key(smiles: str | None, formula: str | None, split_kind: str) -> str:
    from types import SimpleNamespace

    from mpa_ase.validation.splits import chemical_system, murcko_scaffold, periodic_groups

    if split_kind == "periodic_group":
        return periodic_groups(SimpleNamespace(formula=formula, identity=formula, smiles=None))
    if formula:
        return chemical_system(SimpleNamespace(formula=formula, identity=formula))
    return murcko_scaffold(smiles)


def heavy_atoms(smiles: str) -> int:
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"RDKit cannot read {smiles!r}")
    return mol.GetNumHeavyAtoms()


def is_extensive(line: dict) -> bool:
    """As the line says (lines written since session 15 carry the head's nature);
    older lines: as the built-in chemicals table says."""
    if "extensive" in line:
        return bool(line["extensive"])
    from mpa_ase.data.molecules import CHEM_PROPERTIES

    spec = CHEM_PROPERTIES.get(line["property"].split("@")[0])
    return bool(spec and spec.extensive)


def arrays(side: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.asarray(side[k], dtype=np.float64) for k in ("y", "pred", "std"))


CALIBRATE_ON = ("own", "validation", "copy_spread")


def calibration_side(line: dict, on: str = "own") -> dict:
    """The predictions the head was calibrated on: the cross-fit copies' errors
    of the validation side over the final head's spread there where the run
    made them (``on="copy_spread"``: over the copies' own spread, as session
    17 first declared; ``"validation"``: the head's own validation predictions,
    as without cross-fit), the calibration set held apart from early stopping
    where it had one, else the validation side."""
    x = line.get("crossfit")
    if not x or on == "validation":
        return line["cal"] if line.get("cal") else line["val"]
    if on == "own" and "copy_std" in x:
        return {**x, "std": [line["val"]["std"][i] for i in x["index"]]}
    # the copies' own spread on the head's scale, as the test side's σ is (the first
    # session-17 runs, whose lines say "std", were scored so)
    return {**x, "std": [v * float(line["std_scale"]) for v in x.get("copy_std") or x["std"]]}


def exchange_side(line: dict) -> dict:
    """The side dealt again with the test side: the head's own predictions of
    the compounds it was calibrated on (the validation side, for cross-fit)."""
    return line["val"] if line.get("crossfit") else calibration_side(line)


def calibrate(y, pred, std, extra=None, level: float = LEVEL) -> tuple[float, float]:
    """(q, floor) as the heads calibrate, on these compounds and ``extra`` (a fixed
    (y, pred, std) set added to them: the out-of-fold predictions); ``level``: the
    scores' quantile read (above 0.9 where the run corrected it for early
    stopping, ``calibration.selection``)."""
    from mpa_ase.training.trainer import conformal_fit

    if extra is not None:
        y, pred, std = (np.concatenate([a, b]) for a, b in zip((y, pred, std), extra))
    return conformal_fit(y, pred, std, level)


def own_interval(line: dict, on: str = "own") -> dict:
    """The head's interval recomputed from the stored calibration set, checked
    (not checked where ``on`` asks for a calibration the run did not store)."""
    vy, vp, vs = arrays(calibration_side(line, on))
    ty, tp, ts = arrays(line["test"])
    extra = None
    if "out-of-fold" in line["interval"]["calibrated_on"]:
        oof = line["out_of_fold"]
        extra = (np.asarray(oof["y"]), np.asarray(oof["pred"]), np.asarray(oof["std"]) * float(line["std_scale"]))
    level = line["interval"].get("selection", {}).get("level", LEVEL) if on == "own" else LEVEL
    q, floor = calibrate(vy, vp, vs, extra, level)
    cover = float(np.mean(np.abs(ty - tp) <= q * (ts + floor)))
    stored = line["interval"]
    checks = (("q", q, stored["q"]), ("floor", floor, stored["floor"]), ("coverage", cover, stored["coverage_test"]))
    # the spread's scale cancels in q·(σ + floor): validation-calibrated from the stored σ as it stands
    for name, mine, theirs in (checks if on == "own" or not line.get("crossfit") else ()):
        if not np.isclose(mine, theirs, rtol=1e-9, atol=1e-12):
            raise ValueError(f"{line['property']} ({line['method']}, seed {line['seed']}): the stored predictions "
                             f"give {name} {mine}, the stored interval says {theirs}; the file is not this run's")
    return {"extra": extra, "covered": int(np.sum(np.abs(ty - tp) <= q * (ts + floor))), "n": len(ty),
            "width": float(np.mean(2 * q * (ts + floor))), "mae": float(np.mean(np.abs(ty - tp)))}


def size_floor(line: dict, own: dict, on: str = "own") -> dict | None:
    """The interval with the floor scaled by heavy-atom count, or None where it does not apply."""
    cal = calibration_side(line, on)
    if not is_extensive(line) or own["extra"] is not None or "smiles" not in cal:
        return None
    vy, vp, vs = arrays(cal)
    ty, tp, ts = arrays(line["test"])
    nv = np.array([heavy_atoms(s) for s in cal["smiles"]], dtype=float)
    nt = np.array([heavy_atoms(s) for s in line["test"]["smiles"]], dtype=float)
    floor = float(np.median(vs))
    m = float(np.median(nv))
    from mpa_ase.training.trainer import conformal_quantile

    q = conformal_quantile(np.abs(vy - vp) / np.clip(vs + floor * nv / m, 1e-12, None), LEVEL)
    half = q * (ts + floor * nt / m)
    return {"covered": int(np.sum(np.abs(ty - tp) <= half)), "n": len(ty), "width": float(np.mean(2 * half))}


def exchange(lines: list[dict], own: dict, clusters: bool, draws: int, seed: int) -> tuple[np.ndarray, list]:
    """Coverage per (draw, property) when validation and test compounds are dealt
    again (as clusters or as compounds), pooled over seeds; properties sorted."""
    rng = np.random.default_rng(seed)
    props = sorted({x["property"] for x in lines})
    covered, tested = np.zeros((draws, len(props))), np.zeros((draws, len(props)))
    for line in lines:
        k = props.index(line["property"])
        cal = exchange_side(line)
        y, p, s = (np.concatenate([a, b]) for a, b in zip(arrays(cal), arrays(line["test"])))
        n_val, n_test = len(cal["y"]), len(line["test"]["y"])
        if not n_val or not n_test:
            raise ValueError(f"{line['property']} seed {line['seed']}: a head without a validation or test side "
                             "cannot be dealt again")
        key = "smiles" if "smiles" in cal else "formula"
        names = cal[key] + line["test"][key]
        groups = defaultdict(list)
        for i, name in enumerate(names):
            label = (cluster_key(name if key == "smiles" else None, name if key == "formula" else None,
                                 line["split_kind"]) if clusters and line["split_kind"] != "random" else i)
            groups[label].append(i)
        groups = list(groups.values())
        extra = own[id(line)]["extra"]
        for b in range(draws):
            val, test = [], []
            for g in (groups[i] for i in rng.permutation(len(groups))):
                # the side furthest below its size takes the cluster, as the split deals them
                (val if len(val) / n_val <= len(test) / n_test else test).extend(g)
            val, test = np.array(val), np.array(test)
            q, floor = calibrate(y[val], p[val], s[val], extra)
            covered[b, k] += np.sum(np.abs(y[test] - p[test]) <= q * (s[test] + floor))
            tested[b, k] += len(test)
    return covered / tested, props


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--predictions", nargs="+", required=True, help="predictions.jsonl(.gz) files")
    ap.add_argument("--method", default="mpa_cv")
    ap.add_argument("--split", default="ood", choices=("ood", "random"))
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--seeds", default=None, help="comma-separated seeds to pool (default: every seed in the files)")
    ap.add_argument("--name", default=None)
    ap.add_argument("--calibrate-on", default="own", choices=CALIBRATE_ON,
                    help="heads calibrated by cross-fit recalibrated on their validation predictions (validation) "
                         "or on the copies' errors over the copies' own spread (copy_spread)")
    args = ap.parse_args()
    if args.draws < 1:
        ap.error(f"--draws {args.draws}: needs at least 1")
    wanted = None
    if args.seeds:
        try:
            wanted = {int(k) for k in args.seeds.split(",")}
        except ValueError:
            ap.error(f"--seeds {args.seeds!r}: give comma-separated integers, e.g. 26,27")
    lines = read_lines(args.predictions, args.method, args.split)
    if wanted is not None:
        missing = wanted - {x["seed"] for x in lines}
        if missing:
            ap.error(f"--seeds: no {args.method} heads of seed(s) {sorted(missing)} in {args.predictions}")
        lines = [x for x in lines if x["seed"] in wanted]
    if not lines:
        raise SystemExit(f"no {args.method} heads with intervals on {args.split} splits in {args.predictions}")
    seeds = sorted({x["seed"] for x in lines})
    own = {id(x): own_interval(x, args.calibrate_on) for x in lines}
    by_prop = defaultdict(list)
    for x in lines:
        by_prop[x["property"]].append(x)
    rows = []
    for prop, group in sorted(by_prop.items()):
        o = [own[id(x)] for x in group]
        sized = [size_floor(x, own[id(x)], args.calibrate_on) for x in group]
        row = {"property": prop, "split_kind": group[0]["split_kind"], "seeds": len(group),
               "n_test": sum(r["n"] for r in o), "own_coverage": sum(r["covered"] for r in o) / sum(r["n"] for r in o),
               "own_width_per_mae": float(np.mean([r["width"] / r["mae"] for r in o]))}
        if all(r is not None for r in sized):
            row["size_floor_coverage"] = sum(r["covered"] for r in sized) / sum(r["n"] for r in sized)
            row["size_floor_width_per_mae"] = float(np.mean([r["width"] / q["mae"] for r, q in zip(sized, o)]))
        rows.append(row)
    ex = {}
    for clusters in (True, False):
        cov, props = exchange(lines, own, clusters, args.draws, seed=0)
        inside = ((cov >= BAND[0]) & (cov <= BAND[1])).sum(1)
        ex["clusters" if clusters else "compounds"] = {
            "mean_inside": float(inside.mean()), "p05_p95": [float(np.quantile(inside, 0.05)),
                                                            float(np.quantile(inside, 0.95))],
            "per_property_p05_p95": {p: [float(np.quantile(cov[:, k], 0.05)), float(np.quantile(cov[:, k], 0.95))]
                                     for k, p in enumerate(props)}}
    for r in rows:
        lo, hi = ex["clusters"]["per_property_p05_p95"][r["property"]]
        r["exchange_clusters_p05_p95"] = f"{lo:.3f}-{hi:.3f}"
        lo, hi = ex["compounds"]["per_property_p05_p95"][r["property"]]
        r["exchange_compounds_p05_p95"] = f"{lo:.3f}-{hi:.3f}"

    def inside(key):
        return sum(BAND[0] <= r.get(key, r["own_coverage"]) <= BAND[1] for r in rows)

    summary = {
        "method": args.method, "split": args.split, "seeds": seeds, "properties": len(rows),
        "calibrate_on": args.calibrate_on,
        "own_inside": inside("own_coverage"), "size_floor_inside": inside("size_floor_coverage"),
        "own_mean_coverage": float(np.mean([r["own_coverage"] for r in rows])),
        "size_floor_mean_coverage": float(np.mean([r.get("size_floor_coverage", r["own_coverage"]) for r in rows])),
        "exchange": {k: {kk: vv for kk, vv in v.items() if kk != "per_property_p05_p95"} for k, v in ex.items()},
        "draws": args.draws,
    }
    cols = ["property", "split_kind", "seeds", "n_test", "own_coverage", "own_width_per_mae", "size_floor_coverage",
            "size_floor_width_per_mae", "exchange_clusters_p05_p95", "exchange_compounds_p05_p95"]
    c, i = summary["exchange"]["clusters"], summary["exchange"]["compounds"]
    how = {"own": "", "validation": " recalibrated on validation",
           "copy_spread": " recalibrated over the cross-fit copies' own spread"}[args.calibrate_on]
    text = (f"{args.method}{how}, "
            f"{args.split} seeds {seeds}: properties with 90%-interval test coverage (pooled over "
            f"seeds) within 85-95%: own interval {summary['own_inside']}/{len(rows)} (mean "
            f"{100 * summary['own_mean_coverage']:.1f}%), size-scaled floor for extensive targets "
            f"{summary['size_floor_inside']}/{len(rows)} (mean {100 * summary['size_floor_mean_coverage']:.1f}%). "
            f"Exactly calibrated intervals, calibration (validation) and test sides dealt again ({args.draws} draws): "
            f"{c['mean_inside']:.1f}/{len(rows)} on average (5-95%: {c['p05_p95'][0]:.0f}-{c['p05_p95'][1]:.0f}) "
            f"when whole clusters are exchanged, {i['mean_inside']:.1f} ({i['p05_p95'][0]:.0f}-{i['p05_p95'][1]:.0f}) "
            "when single compounds are. Widths in units of the head's test MAE (mean over seeds).")
    print(text)
    name = args.name or f"interval_clusters_{args.split}_{args.method}"
    write_results(name, rows, text + "\n\n" + format_table(rows, cols), extra={"summary": summary})
    print(f"written {RESULTS / name}.md")


if __name__ == "__main__":
    main()
