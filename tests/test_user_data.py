"""Bring your own data: a CSV of SMILES and values trained end to end through
`mpa train`, an extxyz file with values in atoms.info, bad rows named."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("rdkit")
pytest.importorskip("chemicals")
pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def flash_csv(tmp_path_factory):
    """Real DIPPR flash points written as a user's own table, plus 3 bad rows."""
    from mpa_ase.data import load_source

    samples = load_source({"loader": "chemicals", "property": "flash_point", "sources": ["Serat DIPPR (2017)"],
                           "n_conformers": 1, "limit": 160})
    path = tmp_path_factory.mktemp("user") / "flash.csv"
    lines = ["smiles,flash_K"] + [f"{s.smiles},{s.value}" for s in samples]
    lines += ["not_a_smiles,300.0", "CCO,", "CCCC,hot"]
    path.write_text("\n".join(lines) + "\n")
    return path, {s.identity: s.value for s in samples}


def test_table_loader_reads_values_and_names_bad_rows(flash_csv):
    from mpa_ase.data import load_source

    path, truth = flash_csv
    with pytest.warns(UserWarning, match="3 row\\(s\\) not used.*not_a_smiles"):
        samples = load_source({"loader": "table", "path": str(path), "smiles_column": "smiles",
                               "value_column": "flash_K", "property": "flash_point", "unit": "K",
                               "source": "my_lab"})
    assert {s.identity for s in samples} == set(truth)
    assert all(s.value == pytest.approx(truth[s.identity]) and s.task == "flash_point@my_lab" for s in samples)
    assert all(s.extensive is False and s.transform == "identity" for s in samples)
    with pytest.raises(ValueError, match="no column 'flash'"):
        load_source({"loader": "table", "path": str(path), "smiles_column": "smiles", "value_column": "flash",
                     "property": "flash_point", "unit": "K"})
    with pytest.raises(ValueError, match="needs 'property'"):
        load_source({"loader": "table", "path": str(path), "smiles_column": "smiles", "property": "x", "unit": ""})


@pytest.mark.slow
def test_user_csv_trains_a_head_through_mpa_train(flash_csv, tmp_path):
    import yaml

    from mpa_ase import MPACalculator
    from mpa_ase.cli import main

    path, _ = flash_csv
    pre = tmp_path / "pre.yaml"
    pre.write_text(yaml.safe_dump({"output": str(tmp_path / "pre"), "cache_dir": str(tmp_path / "cache")}))
    assert main(["train", "pretrain", "--config", str(pre), "--quiet"]) == 0
    post = tmp_path / "post.yaml"
    post.write_text(yaml.safe_dump({
        "output": str(tmp_path / "post"), "cache_dir": str(tmp_path / "cache"), "init": str(tmp_path / "pre/model.pt"),
        "target": {"task": "flash_point@my_lab",
                   "data": {"loader": "table", "path": str(path), "smiles_column": "smiles",
                            "value_column": "flash_K", "property": "flash_point", "unit": "K", "source": "my_lab"}},
        "head": {"members": 3}, "optim": {"epochs": 15, "patience": 5}}))
    with pytest.warns(UserWarning, match="not used"):
        assert main(["train", "posttrain", "--config", str(post), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "post/metrics.json").read_text())["flash_point@my_lab"]
    assert metrics["unit"] == "K" and metrics["n_test"] > 0
    y = np.array(metrics["test_predictions"]["y"])
    assert metrics["test"]["mae"] < np.mean(np.abs(y - y.mean()))  # better than predicting the mean
    calc = MPACalculator(model=str(tmp_path / "post/model.pt"), device="cpu")
    assert calc.heads["flash_point"]["unit"] == "K"


def test_ase_loader_reads_values_from_info(tmp_path):
    from ase.build import bulk
    from ase.io import write
    from pymatgen.core import Element

    from mpa_ase.data import load_source

    structures = []
    for sym in ("Al", "Cu", "Ni", "Ag", "Au", "W"):
        a = bulk(sym)
        a.info["B_exp"] = float(Element(sym).bulk_modulus)
        structures.append(a)
    structures[2].info.pop("B_exp")
    write(tmp_path / "el.extxyz", structures)
    with pytest.warns(UserWarning, match="1 row"):
        samples = load_source({"loader": "ase", "path": str(tmp_path / "el.extxyz"), "key": "B_exp",
                               "property": "bulk_modulus", "unit": "GPa", "kind": "experimental"})
    assert {s.formula: s.value for s in samples} == {sym: float(Element(sym).bulk_modulus)
                                                     for sym in ("Al", "Cu", "Ag", "Au", "W")}
