"""The arithmetic behind the reported MPA-vs-direct figures (benchmarks/), on
small hand-computed cases: a wrong pairing or average there changes every
headline number without any training code changing."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _module(name):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def _rec(prop, seed, method, mae, coverage=None):
    return {"property": prop, "split": "ood", "split_kind": "scaffold", "seed": seed, "method": method,
            "mae": mae, "unit": "K", "spearman_abs_err_std": 0.1, "interval_coverage_test": coverage}


def test_summary_pairs_by_seed_and_averages_over_seeds_then_properties():
    mvd = _module("mpa_vs_direct")
    records = [
        # property a: seeds 1 and 2 paired; -50% and +0% -> -25%
        _rec("a", 1, "direct_cv", 10.0), _rec("a", 1, "mpa_cv", 5.0, 0.90),
        _rec("a", 2, "direct_cv", 4.0), _rec("a", 2, "mpa_cv", 4.0, 0.80),
        # property b: seed 3 has no baseline and must not count; -> +20%
        _rec("b", 1, "direct_cv", 5.0), _rec("b", 1, "mpa_cv", 6.0, 0.95),
        _rec("b", 3, "mpa_cv", 100.0, 0.95),
        *[_rec(p, s, "direct", 1.0) for p, s in (("a", 1), ("a", 2), ("b", 1), ("b", 3))],
    ]
    numbers = mvd.summarise(records)["numbers"]
    pair = numbers["ood/mpa_cv vs direct_cv"]
    assert pair["mean_rel_change"] == pytest.approx((-0.25 + 0.20) / 2)
    assert pair["median_rel_change"] == pytest.approx((-0.25 + 0.20) / 2)
    assert (pair["n_improved"], pair["n_properties"]) == (1, 2)
    # the bootstrap over two properties spans their two values
    assert pair["ci95"][0] == pytest.approx(-0.25) and pair["ci95"][1] == pytest.approx(0.20)
    # coverage per property averaged over seeds (a: 0.85, b: 0.95), both inside the closed band
    cover = numbers["ood/mpa_cv"]["interval_coverage"]
    assert cover["mean"] == pytest.approx(0.90) and cover["in_85_95"] == 2


def test_bootstrap_ci_brackets_the_mean_and_is_seeded():
    mvd = _module("mpa_vs_direct")
    values = np.random.default_rng(0).normal(-0.1, 0.2, 30)
    lo, hi = mvd.bootstrap_ci(values)
    se = values.std(ddof=1) / np.sqrt(len(values))
    # the percentile interval of the mean is close to mean +- 1.96 standard errors for 30 normal values
    assert lo == pytest.approx(values.mean() - 1.96 * se, abs=0.3 * se)
    assert hi == pytest.approx(values.mean() + 1.96 * se, abs=0.3 * se)
    assert mvd.bootstrap_ci(values) == [lo, hi]


def _line(method, ids, y, pred, std, std_scale=1.0, oof=None):
    side = {"identity": ids, "y": y, "pred": pred, "std": std}
    return {"property": "p", "seed": 0, "method": method, "std_scale": std_scale, "val": side, "test": side,
            "out_of_fold": oof}


def test_ensemble_combines_members_by_identity():
    te = _module("trunk_ensemble")
    a = _line("m0", ["x", "y"], [1.0, 2.0], [0.0, 4.0], [1.0, 2.0])
    b = _line("m1", ["x", "y"], [1.0, 2.0], [2.0, 4.0], [3.0, 2.0])
    out = te.combine([a, b], "test")
    np.testing.assert_allclose(out["pred"], [1.0, 4.0])
    # variance: mean of member variances + variance of member means
    np.testing.assert_allclose(out["std"], [np.sqrt((1 + 9) / 2 + 1.0), 2.0])
    # out-of-fold spreads are stored before the run's scale: scaled as the heads calibrate them
    oof_a = {"identity": ["z", "x"], "y": [0.0, 1.0], "pred": [1.0, 1.0], "std": [1.0, 1.0]}
    oof_b = {"identity": ["x", "z"], "y": [1.0, 0.0], "pred": [3.0, 3.0], "std": [1.0, 1.0]}
    a["out_of_fold"], b["out_of_fold"], b["std_scale"] = oof_a, oof_b, 2.0
    out = te.combine([a, b], "out_of_fold")
    np.testing.assert_allclose(out["pred"], [2.0, 2.0])  # x and z, sorted
    np.testing.assert_allclose(out["std"], [np.sqrt((1 + 4) / 2 + 1.0)] * 2)
    b["test"] = {**b["test"], "identity": ["y", "x"]}
    with pytest.raises(ValueError, match="test compounds differ"):
        te.combine([a, b], "test")


def test_ensemble_interval_is_calibrated_as_a_head_is():
    te = _module("trunk_ensemble")
    from mpa_ase.training.trainer import conformal_fit

    rng = np.random.default_rng(1)
    ids = [f"c{i}" for i in range(40)]
    y = rng.normal(0, 1, 40)
    one = _line("m", ids, list(y), list(y + rng.normal(0, 0.5, 40)), list(rng.uniform(0.2, 1.0, 40)))
    covered, n, width = te.coverage([one])
    q, floor = conformal_fit(one["val"]["y"], one["val"]["pred"], one["val"]["std"], 0.9)
    scores = np.abs(y - np.asarray(one["val"]["pred"])) / (np.asarray(one["val"]["std"]) + floor)
    # calibrated and tested on the same 40 compounds: ceil(41 * 0.9) = 37 of them inside
    assert covered == int(np.sum(scores <= q)) == 37 and n == 40
    mae = np.mean(np.abs(y - np.asarray(one["val"]["pred"])))
    assert width == pytest.approx(np.mean(2 * q * (np.asarray(one["val"]["std"]) + floor)) / mae)  # in test MAEs
    # under 10 validation compounds and no out-of-fold predictions: no interval
    small = _line("m", ids[:5], list(y[:5]), list(y[:5]), [1.0] * 5)
    assert te.coverage([small])[1] == 0


def test_ensemble_members_are_named_in_pairs():
    te = _module("trunk_ensemble")
    assert te.member_lists("mpa_cv, mpa_cv_m1", "direct_cv,direct_cv_m1") == (
        ["mpa_cv", "mpa_cv_m1"], ["direct_cv", "direct_cv_m1"])
    for mpa, direct, match in (("mpa_cv,mpa_cv_m1", "direct_cv", "as many methods"),
                               ("", "", "as many methods"),
                               ("mpa_cv,mpa_cv", "direct_cv,direct_cv_m1", "named twice")):
        with pytest.raises(ValueError, match=match):
            te.member_lists(mpa, direct)


def test_auxiliary_samples_refuses_a_bad_cap_before_loading_anything():
    mvd = _module("mpa_vs_direct")
    for cap in (0, -5, 2.5, True, "1000"):
        with pytest.raises(ValueError, match="samples per auxiliary task"):
            mvd.auxiliary_samples(cap, {})


def test_partial_methods_are_left_out_per_seed_only():
    from mpa_vs_direct import without_partial_methods

    def rec(prop, seed, method):
        return {"property": prop, "split": "ood", "seed": seed, "method": method, "mae": 1.0}

    full = [rec(p, s, m) for s in (1, 2) for p in ("a", "b", "c") for m in ("direct", "mpa_cv")]
    sel = [rec(p, 1, "mpa_cv_sel") for p in ("a", "b", "c")] + [rec("a", 2, "mpa_cv_sel")]
    kept, left_out = without_partial_methods(full + sel)
    # seed 2 ran the variant on one target of three: that seed's lines go, seed 1's stay whole
    assert sorted((r["seed"], r["property"]) for r in kept if r["method"] == "mpa_cv_sel") == [(1, "a"), (1, "b"), (1, "c")]
    assert [r for r in kept if r["method"] != "mpa_cv_sel"] == full
    assert left_out == ["mpa_cv_sel [ood, seed 2], 1 of 3 targets"]
    assert without_partial_methods(full) == (full, [])
