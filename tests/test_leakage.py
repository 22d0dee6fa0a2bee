"""Held out means held out: the identities a post-trained head is tested on
were never seen in pre- or mid-training, for every split kind, with the
target task itself in mid-training (its training side only); the split is
drawn once, after filtering, stored, and read back by every later step."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("chemicals")
pytest.importorskip("rdkit")

from mpa_ase.training import run_phase  # noqa: E402
from mpa_ase.validation import stored  # noqa: E402

MOL_TARGET = {"data": {"loader": "chemicals", "property": "flash_point", "sources": ["Serat DIPPR (2017)"],
                       "n_conformers": 1, "limit": 250}, "task": "flash_point@Serat DIPPR (2017)"}
MOL_MID = [
    {"loader": "chemicals", "property": "flash_point", "sources": ["Serat DIPPR (2017)", "WIKIDATA"],
     "n_conformers": 1, "limit": 250},
    {"loader": "chemicals", "property": "boiling_point", "sources": ["YAWS"], "limit": 250, "n_conformers": 1},
]
XTAL_TARGET = {"data": {"loader": "borlido", "fidelities": ["Experimental"]}, "task": "band_gap@Experimental"}
XTAL_MID = [{"loader": "borlido", "fidelities": ["Experimental", "PBE", "HSE06"]}]
QUICK = {"epochs": 2, "patience": 2}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("leak_cache"))


def _pipeline(root, cache_dir, split, target, mid_data, split_in_target=False):
    base = {"seed": 3, "cache_dir": cache_dir, "optim": QUICK}
    # the held-out split set for all targets, or per target (as the default model does)
    mid_split = {"split": {"kind": "random", "val": 0.1, "test": 0.1}} if split_in_target else {"split": split}
    mid_target = {**target, "split": split} if split_in_target else target
    pre = run_phase("pretrain", {**base, "output": str(root / "pre")}, progress=False)
    # exclude_target_task: false puts the target's own training side into mid-training (as the default model does)
    mid = run_phase("midtrain", {**base, **mid_split, "output": str(root / "mid"), "init": pre["model"],
                                 "data": mid_data, "target": mid_target, "exclude_target_task": False}, progress=False)
    mpa = run_phase("posttrain", {**base, "output": str(root / "mpa"), "init": mid["model"], "target": target,
                                  "head": {"members": 2}}, progress=False)
    direct = run_phase("posttrain", {"seed": 3, "cache_dir": cache_dir, "optim": QUICK, "output": str(root / "direct"),
                                     "init": pre["model"], "target": target, "splits": str(root / "mid"),
                                     "head": {"members": 2}}, progress=False)
    return mid, mpa, direct


def _tested(summary, task):
    return set(summary["metrics"][task]["test_predictions"]["identity"])


def _seen_in_midtraining(mid_dir) -> set[str]:
    seen = set()
    for record in stored.read(mid_dir)["tasks"].values():
        for side in stored.SIDES:
            seen |= set(record[side])
    return seen


def _check(tmp_path, mid, mpa, direct, task):
    held = stored.read(tmp_path / "mid")["targets"][task]
    tested = _tested(mpa, task)
    assert tested and tested == set(held["test"]) == _tested(direct, task)
    seen = _seen_in_midtraining(tmp_path / "mid")
    assert task in stored.read(tmp_path / "mid")["tasks"]  # the target task really was in mid-training
    assert not tested & seen
    assert not set(held["val"]) & seen
    # post-training stored the very split it was given
    assert stored.read(tmp_path / "mpa")["targets"][task] == held
    assert stored.read(tmp_path / "direct")["targets"][task] == held
    return held


@pytest.mark.slow
@pytest.mark.parametrize("split", [{"kind": "random", "val": 0.15, "test": 0.25},
                                   {"kind": "scaffold", "val": 0.15, "test": 0.25},
                                   {"kind": "redundancy", "val": 0.15, "test": 0.25, "threshold": 0.6}],
                         ids=lambda s: s["kind"])
def test_molecule_targets_tested_only_on_unseen_compounds(tmp_path, cache_dir, split):
    mid, mpa, direct = _pipeline(tmp_path, cache_dir, split, MOL_TARGET, MOL_MID,
                                 split_in_target=split["kind"] == "scaffold")
    held = _check(tmp_path, mid, mpa, direct, MOL_TARGET["task"])
    assert held["kind"] == split["kind"]
    # a config asking post-training for another split than the stored one is refused
    with pytest.raises(stored.StoredSplitError, match="stored \\(protected\\) split"):
        run_phase("posttrain", {"seed": 3, "cache_dir": cache_dir, "optim": QUICK, "output": str(tmp_path / "x"),
                                "init": mid["model"], "target": MOL_TARGET,
                                "split": {"kind": "forward", "val": 0.15, "test": 0.25}}, progress=False)


@pytest.mark.slow
def test_crystal_target_cluster_split_unseen(tmp_path, cache_dir, shared_data):
    split = {"kind": "cluster", "val": 0.15, "test": 0.25}
    mid, mpa, direct = _pipeline(tmp_path, cache_dir, split, XTAL_TARGET, XTAL_MID)
    held = _check(tmp_path, mid, mpa, direct, XTAL_TARGET["task"])
    from mpa_ase.validation.splits import chemical_system

    # leave-cluster-out: no chemical system on both sides
    from mpa_ase.data import load_source

    samples = {s.identity: s for s in load_source(XTAL_TARGET["data"])}
    systems = {side: {chemical_system(samples[i]) for i in held[side]} for side in stored.SIDES}
    assert not systems["train"] & systems["test"]
    # mpa validate reads the split stored beside the model: the same test compounds, the same error
    from mpa_ase.training.validate import validate

    report = validate(mpa["model"], XTAL_TARGET["data"], XTAL_TARGET["task"], cache_dir=cache_dir,
                      split_kind="random", seed=99)  # settings a stored split must override
    assert report["split_source"].endswith("splits.json") and report["split"] == "cluster"
    assert set(report["predictions"]["identity"]) == set(held["test"]) == _tested(mpa, XTAL_TARGET["task"])
    assert report["mae"] == pytest.approx(mpa["metrics"][XTAL_TARGET["task"]]["test"]["mae"], rel=1e-5)


def test_stored_split_refuses_samples_it_never_saw(tmp_path):
    from types import SimpleNamespace

    samples = [SimpleNamespace(identity=f"id{k}", value=float(k)) for k in range(20)]
    record = stored.draw(samples, "random", 0.1, 0.2, seed=1)
    stored.write(tmp_path, targets={"t": record})
    again = stored.read(tmp_path)["targets"]["t"]
    assert again == record and json.loads((tmp_path / "splits.json").read_text())["format"] == stored.FORMAT
    train, val, test = stored.apply(samples, again)
    assert len(train) + len(val) + len(test) == 20 and len(test) == 4
    # a split drawn on filtered samples is kept when applied to them: no second, different split
    assert stored.apply(samples[:15], record)[2] == [s for s in test if s in samples[:15]]
    with pytest.raises(stored.StoredSplitError, match="not in the stored split"):
        stored.apply(samples + [SimpleNamespace(identity="new", value=0.0)], record, "t")
    with pytest.raises(stored.StoredSplitError, match="empty test side"):
        stored.check_held_out({**record, "test": []}, "t")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(stored.StoredSplitError, match="not an mpa-ase split file"):
        stored.read(tmp_path / "bad.json")
