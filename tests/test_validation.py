"""Metrics against hand-computable cases and independent implementations."""

from __future__ import annotations

import numpy as np
import pytest

from mpa_ase.validation import (
    extrapolative_precision,
    kde_overlap,
    miscalibration_area,
    ood_recall,
    regression_metrics,
    spearman_error_vs_std,
)


def test_regression_metrics_match_sklearn_definitions():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.5, 2.0, 2.0, 5.0])
    m = regression_metrics(y, p)
    assert m["mae"] == pytest.approx(0.625)
    assert m["rmse"] == pytest.approx(np.sqrt((0.25 + 0 + 1 + 1) / 4))
    assert m["r2"] == pytest.approx(1 - 2.25 / 5.0)


def test_extrapolation_metrics():
    y_train = np.arange(10.0)  # 90% quantile 8.1
    y_test = np.array([9.0, 12.0, 3.0, 15.0])
    pred = np.array([10.0, 11.0, 9.0, 2.0])  # calls 0, 1, 2 above 8.1; true above: 0, 1, 3
    assert extrapolative_precision(y_train, y_test, pred) == pytest.approx(2 / 3)
    assert ood_recall(np.arange(20.0), np.arange(20.0)) == 1.0
    assert ood_recall(np.arange(20.0), -np.arange(20.0)) == 0.0


def test_kde_overlap_identical_and_disjoint():
    rng = np.random.default_rng(0)
    a = rng.normal(size=2000)
    assert kde_overlap(a, a) == pytest.approx(1.0, abs=1e-6)
    assert kde_overlap(a, a + 20) < 1e-3
    assert 0.5 < kde_overlap(a, rng.normal(0.5, 1, 2000)) < 0.9  # theory: 2Φ(-0.25) = 0.80


def test_calibration_of_gaussian_errors():
    rng = np.random.default_rng(1)
    std = rng.uniform(0.5, 2.0, 20000)
    y = rng.normal(0, std)
    pred = np.zeros_like(y)
    assert miscalibration_area(y, pred, std) < 0.01  # honest sigma: calibrated
    assert miscalibration_area(y, pred, std * 3) > 0.1  # over-dispersed sigma
    assert spearman_error_vs_std(y, pred, std) > 0.2
    assert spearman_error_vs_std(y, pred, rng.permutation(std)) == pytest.approx(0, abs=0.03)


def test_periodic_group_split_holds_out_whole_columns():
    """For properties of the elements (each one its own chemical system), the
    periodic_group split keeps every column on one side; compounds are grouped
    by their set of columns (all alkali halides together)."""
    from types import SimpleNamespace

    from ase.data import chemical_symbols

    from mpa_ase.validation.splits import periodic_groups, split

    elements = [SimpleNamespace(identity=f"el:{s}", formula=s, value=float(z), smiles=None)
                for z, s in enumerate(chemical_symbols[1:84], start=1)]
    column = {s.identity: periodic_groups(s) for s in elements}
    tests = set()
    for seed in range(3):
        train, val, test = split(elements, "periodic_group", val=0.15, test=0.2, seed=seed)
        assert val and test and not (train & test) and not (train & val)
        assert not {column[i] for i in train} & {column[i] for i in test | val}
        tests.add(frozenset(test))
    assert len(tests) > 1  # seeds differ
    assert periodic_groups(SimpleNamespace(identity="x", formula="NaCl", smiles=None)) == "01-17"
    assert periodic_groups(SimpleNamespace(identity="x", formula="KBr", smiles=None)) == "01-17"
    assert periodic_groups(SimpleNamespace(identity="x", formula="CeO2", smiles=None)) == "16-La"
    with pytest.raises(ValueError, match="molecule"):
        periodic_groups(SimpleNamespace(identity="mol:CCO", formula=None, smiles="CCO"))


def test_validation_depends_on_nothing_in_training():
    """Splits and metrics must be usable (and auditable) without the training code."""
    import ast
    from pathlib import Path

    import mpa_ase.validation as v

    offenders = []
    for path in sorted(Path(v.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {n}" for n in names if n.startswith("mpa_ase.training")]
    assert not offenders, offenders


def test_split_off_sets_whole_groups_apart():
    """split_off (a calibration set out of a validation side): whole groups of
    the split's kind on one side, about the asked share apart, seeded."""
    from types import SimpleNamespace

    from mpa_ase.validation.splits import murcko_scaffold, split_off

    rings = ["c1ccccc1", "C1CCCCC1", "c1ccncc1", "C1CCOC1", "c1ccsc1", "C1CC1", "c1ccc2ccccc2c1", "C1CCNCC1"]
    mols = [SimpleNamespace(identity=f"m{k}_{i}", smiles=r + "C" * (i + 1), formula=None, value=float(i))
            for k, r in enumerate(rings) for i in range(1 + k % 3)] + \
           [SimpleNamespace(identity=f"a{i}", smiles="C" * (i + 2), formula=None, value=1.0) for i in range(3)]
    scaffold = {m.identity: murcko_scaffold(m.smiles) for m in mols}
    aparts = set()
    for seed in range(6):
        kept, apart = split_off(mols, "scaffold", 0.5, seed=seed)
        assert kept | apart == {m.identity for m in mols} and not kept & apart
        assert not {scaffold[i] for i in kept} & {scaffold[i] for i in apart}
        assert abs(len(apart) - len(mols) / 2) <= 3  # largest group: 3 compounds
        aparts.add(frozenset(apart))
    assert len(aparts) > 1
    assert split_off(mols, "scaffold", 0.5, seed=3) == split_off(mols, "scaffold", 0.5, seed=3)
    kept, apart = split_off(mols, "random", 0.25, seed=0)
    assert len(apart) == pytest.approx(0.25 * len(mols), abs=1)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="fraction"):
            split_off(mols, "scaffold", bad)


def test_group_folds_deal_whole_groups_evenly():
    """group_folds (cross-fit calibration's folds of a validation side): a
    partition into whole scaffolds, sizes within the largest group, seeded;
    two folds are split_off's two halves."""
    from types import SimpleNamespace

    from mpa_ase.validation.splits import group_folds, murcko_scaffold, split_off

    rings = ["c1ccccc1", "C1CCCCC1", "c1ccncc1", "C1CCOC1", "c1ccsc1", "C1CC1", "c1ccc2ccccc2c1", "C1CCNCC1",
             "c1ccoc1", "C1CCC1"]
    mols = [SimpleNamespace(identity=f"m{k}_{i}", smiles=r + "C" * (i + 1), formula=None, value=float(i))
            for k, r in enumerate(rings) for i in range(1 + k % 3)]
    scaffold = {m.identity: murcko_scaffold(m.smiles) for m in mols}
    drawn = set()
    for seed in range(5):
        folds = group_folds(mols, "scaffold", 3, seed=seed)
        assert len(folds) == 3 and set().union(*folds) == {m.identity for m in mols}
        assert sum(map(len, folds)) == len(mols)
        groups = [{scaffold[i] for i in f} for f in folds]
        assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
        assert max(map(len, folds)) - min(map(len, folds)) <= 3  # largest group: 3 compounds
        drawn.add(tuple(frozenset(f) for f in folds))
        kept, apart = split_off(mols, "scaffold", 0.5, seed=seed)
        assert group_folds(mols, "scaffold", 2, seed=seed) == [apart, kept]
    assert len(drawn) > 1
    assert group_folds(mols, "random", 4, seed=1) == group_folds(mols, "random", 4, seed=1)
    assert sorted(map(len, group_folds(mols, "random", 4, seed=1))) == [4, 5, 5, 5]
    for bad in (1, 0, 2.5, True):
        with pytest.raises(ValueError, match="folds"):
            group_folds(mols, "scaffold", bad)


def test_held_out_groups_land_on_validation_or_test_whatever_their_size():
    """Split-conformal intervals are calibrated on the validation side and hold
    on the test side only if the two are exchangeable: a held-out group of any
    size goes to validation about as often as its share (1/3 here), and no
    held-out group is larger than the validation side could take. (Dealt
    smallest first into sides capped at their shares, the groups of 15 went to
    test on every seed.)"""
    from types import SimpleNamespace

    from ase.data import chemical_symbols

    from mpa_ase.validation.splits import chemical_system, split

    sizes = [1] * 10 + [2] * 5 + [4] * 5 + [8] * 4 + [15] * 4 + [30] * 3 + [100]
    pairs = [(a, b) for a in chemical_symbols[1:40] for b in ("O", "S", "Se", "Te") if a not in ("O", "S", "Se", "Te")]
    crystals = [SimpleNamespace(identity=f"{a}{k}{b}", formula=f"{a}{k}{b}", smiles=None, value=float(k))
                for (a, b), size in zip(pairs, sizes) for k in range(1, size + 1)]
    n = len(crystals)
    system = {c.identity: chemical_system(c) for c in crystals}
    size_of = {g: list(system.values()).count(g) for g in set(system.values())}
    on_val = {}  # group size -> for each time such a group was held out: did validation take it?
    for seed in range(200):
        train, val, test = split(crystals, "cluster", val=0.1, test=0.2, seed=seed)
        assert val and test and not train & (val | test) and len(train | val | test) == n
        for side, ids in (("val", val), ("test", test)):
            for g in {system[i] for i in ids}:
                assert size_of[g] <= 0.1 * n
                on_val.setdefault(size_of[g], []).append(side == "val")
    assert set(on_val) == {1, 2, 4, 8, 15}
    for size, landed in on_val.items():
        assert abs(np.mean(landed) - 1 / 3) < 0.1, (size, np.mean(landed))
