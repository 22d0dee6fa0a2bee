"""Property heads: size behaviour, invariance, learned mixing, units, calculator results."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

from mpa_ase import MPACalculator
from mpa_ase.graph import AtomsGraph
from mpa_ase.heads import PropertyHead, Readout, TargetTransform
from mpa_ase.model import MPAModel


@pytest.fixture(scope="module")
def features_of(chgnet_calc64):
    """CHGNet embeddings (float64) of a structure, with its graph."""

    def run(atoms):
        graph = chgnet_calc64.build_graph([atoms])
        with torch.no_grad():
            feats = chgnet_calc64.model.backbone(graph)["features"]
        return feats, graph

    return run


def _head(extensive, readout=None, seed=0):
    torch.manual_seed(seed)
    return PropertyHead("p", "eV", 64, extensive=extensive, readout=readout, members=3).double()


@pytest.mark.parametrize("readout", ["sum", "mean", "attention"])
def test_extensive_doubles_intensive_does_not(features_of, readout):
    atoms = bulk("NaCl", "rocksalt", 5.64, cubic=True)
    atoms.rattle(0.05, seed=1)
    f1, g1 = features_of(atoms)
    f2, g2 = features_of(atoms * (2, 1, 1))
    head = _head(extensive=(readout == "sum"), readout=readout)
    y1 = head(f1, g1)["p"].item()
    y2 = head(f2, g2)["p"].item()
    if readout == "sum":
        assert y2 == pytest.approx(2 * y1, rel=1e-6)
    else:
        assert y2 == pytest.approx(y1, rel=1e-6)
    assert abs(y1) > 1e-6


@pytest.mark.parametrize("readout", ["sum", "mean", "attention", "hybrid"])
def test_permutation_invariance(features_of, readout):
    atoms = bulk("MgO", "rocksalt", 4.21, cubic=True) * (1, 1, 2)
    atoms.rattle(0.05, seed=2)
    perm = np.random.default_rng(0).permutation(len(atoms))
    f1, g1 = features_of(atoms)
    f2, g2 = features_of(atoms[perm])
    head = _head(extensive=False, readout=readout)
    assert head(f1, g1)["p"].item() == pytest.approx(head(f2, g2)["p"].item(), rel=1e-9)


def test_hybrid_alpha_is_learned(features_of):
    """alpha is a trained parameter of each readout: it gets a gradient and
    moves during training, separately for each task. (Both branches are free
    to rescale, so alpha alone does not decide which branch wins.)"""
    systems = [bulk("Si", "diamond", 5.43, cubic=True) * (k, 1, 1) for k in (1, 2, 3)]
    for a in systems:
        a.rattle(0.05, seed=len(a))
    data = [features_of(a) for a in systems]
    alphas = {}
    for kind, target in {"extensive": [1.0, 2.0, 3.0], "intensive": [1.0, 1.0, 1.0]}.items():
        torch.manual_seed(0)
        readout = Readout("hybrid", 64, 1, hidden=16).double()
        opt = torch.optim.Adam(readout.parameters(), lr=0.01)
        y = torch.tensor(target, dtype=torch.float64)
        for _ in range(400):
            opt.zero_grad()
            pred = torch.cat([readout(f, g).view(-1) for f, g in data])
            loss = torch.nn.functional.huber_loss(pred, y)
            loss.backward()
            assert readout.alpha_logit.grad is not None
            opt.step()
        assert loss.item() < 1e-2
        alphas[kind] = readout.alpha.item()
    assert all(abs(a - 0.5) > 1e-3 for a in alphas.values()), alphas  # sigmoid(0) at start
    assert alphas["extensive"] != alphas["intensive"]


def test_log10_transform_roundtrip_and_std():
    t = TargetTransform("log10", shift=-3.0, scale=2.0)
    y = torch.tensor([1e-6, 1e-3, 0.1], dtype=torch.float64)
    assert torch.allclose(t.inverse(t(y)), y)
    z = t(y)
    eps = 1e-6
    numeric = (t.inverse(z + eps) - t.inverse(z - eps)) / (2 * eps)
    assert torch.allclose(t.inverse_std(z, torch.ones_like(z)), numeric, rtol=1e-6)
    with pytest.raises(ValueError, match="positive"):
        t(torch.tensor([0.0]))


def test_calculator_returns_heads_with_units(chgnet_calc):
    torch.manual_seed(0)
    heads = {
        "band_gap": PropertyHead("band_gap", "eV", 64, members=4),
        "melting_point": PropertyHead("melting_point", "K", 64, members=4,
                                      transform=TargetTransform(shift=1000.0, scale=500.0)),
    }
    model = MPAModel(chgnet_calc.model.backbone, heads)
    calc = MPACalculator(model=model, device="cpu")
    atoms = bulk("Si", "diamond", 5.43)
    atoms.calc = calc
    gap = calc.get_property("band_gap", atoms)
    assert isinstance(gap, float) and np.isfinite(gap)
    assert calc.results["band_gap_std"] > 0  # untrained members disagree
    assert calc.heads["band_gap"]["unit"] == "eV" and calc.heads["melting_point"]["unit"] == "K"
    # the energy is unchanged by adding heads
    assert atoms.get_potential_energy() == pytest.approx(-10.8, abs=0.3)
    batch = calc.calculate_batch([atoms, bulk("Ge", "diamond", 5.66)])
    assert batch[0]["band_gap"] == pytest.approx(gap, abs=1e-5)
    assert set(batch[1]) >= {"band_gap", "band_gap_std", "melting_point", "melting_point_std"}


def test_bad_head_arguments():
    with pytest.raises(ValueError, match="unknown readout"):
        Readout("max", 8)
    with pytest.raises(ValueError, match="unknown problem"):
        PropertyHead("p", "eV", 8, problem="ranking")
    with pytest.raises(ValueError, match="unknown transform"):
        TargetTransform("ln")


def test_head_cannot_shadow_energy(chgnet_calc):
    with pytest.raises(ValueError, match="would overwrite"):
        MPAModel(chgnet_calc.model.backbone, {"energy": PropertyHead("energy", "eV", 64)})
    with pytest.raises(ValueError, match="would overwrite"):
        MPAModel(chgnet_calc.model.backbone, {"magmoms": PropertyHead("magmoms", "muB", 64)})


def test_head_starts_from_a_related_head():
    from mpa_ase.training.head_start import init_from_head, related_head

    torch.manual_seed(0)
    small = PropertyHead("boiling_point", "K", 16, readout="hybrid", members=1, trained_on="x (experimental, n_train=90)")
    big = PropertyHead("boiling_point", "K", 16, readout="hybrid", members=1, trained_on="y (experimental, n_train=400)")
    other = PropertyHead("flash_point", "K", 16, members=1, trained_on="z (experimental, n_train=900)")
    heads = {"boiling_point__WEBBOOK": small, "boiling_point__YAWS": big, "flash_point__NFPA": other}
    assert related_head(heads, "boiling_point") is big  # most training data of that property
    assert related_head(heads, "melting_point") is None and related_head(heads, "boiling") is None
    new = PropertyHead("boiling_point", "K", 16, readout="hybrid", members=3)
    assert init_from_head(new, big, seed=0) == 3 * len(list(big.members[0].parameters()))
    src = dict(big.members[0].named_parameters())
    for member in new.members:
        for name, p in member.named_parameters():
            if p.numel() > 1:  # within the 5% perturbation, far from a fresh init
                rel = float((p - src[name]).detach().norm() / src[name].detach().norm())
                assert 0 < rel < 0.1, name
    w = [m.atomwise.out.weight for m in new.members]
    assert not torch.equal(w[0], w[1])  # ensemble members still differ
    # other readouts share what has the same name and shape, nothing else
    assert 0 < init_from_head(PropertyHead("b", "K", 16, readout="sum", members=1), big, seed=0) < len(src)


def test_members_start_from_several_heads_with_their_signs():
    from mpa_ase.graph import Segments
    from mpa_ase.training.head_start import init_from_head

    torch.manual_seed(1)
    a = PropertyHead("a", "K", 16, readout="hybrid", members=1)
    b = PropertyHead("b", "K", 16, readout="hybrid", members=1)
    new = PropertyHead("t", "K", 16, readout="hybrid", members=3)
    init_from_head(new, [(a, 1.0), (b, -1.0)], seed=0, noise=0.0)
    graph = Segments.from_sizes([3, 5], torch.tensor([1, 6, 8, 1, 1, 6, 6, 8]))
    x = torch.randn(8, 16)
    with torch.no_grad():
        za, zb = a.member_outputs(x, graph)[0], b.member_outputs(x, graph)[0]
        z = new.member_outputs(x, graph)
    # member k starts from source k mod 2; a negative correlation flips the output exactly
    assert torch.allclose(z[0], za, atol=1e-6) and torch.allclose(z[1], -zb, atol=1e-6)
    assert torch.allclose(z[2], za, atol=1e-6)
    assert not torch.allclose(za, zb)


def test_inner_folds_partition_the_training_compounds():
    from types import SimpleNamespace

    from mpa_ase.training.head_start import inner_folds

    # two conformers of one compound share an identity and must stay on one side
    train = [SimpleNamespace(identity=f"m{i // 2}", value=float(i)) for i in range(40)]
    folds = inner_folds(train, 3, seed=0)
    assert len(folds) == 3
    held_ids = [{s.identity for s in held} for _, held in folds]
    assert sorted(i for ids in held_ids for i in ids) == sorted({s.identity for s in train})  # each once
    for (fit, held), ids in zip(folds, held_ids):
        assert not ids & {s.identity for s in fit} and len(fit) + len(held) == len(train)
        assert 6 <= len(ids) <= 7
    assert inner_folds(train, 3, seed=1) != folds  # seeded
    assert inner_folds(train[:10], 3, seed=0) == []  # 5 compounds cannot make 3 folds of 2


def test_cv_selection_takes_the_lowest_mean_score_and_checks_its_options():
    from mpa_ase.training.head_start import cv_options, describe_candidate, select_by_cv

    cands = [{"head_init": "fresh"}, {"head_init": "related"}, {"head_init": "correlated", "head_init_top": 1}]
    table = {("fresh", 0): 3.0, ("fresh", 1): 1.0, ("related", 0): 1.5, ("related", 1): 1.5,
             ("correlated", 0): 2.0, ("correlated", 1): 1.0}
    folds = [(0, 0), (1, 1)]
    best, means = select_by_cv(cands, folds, lambda c, fit, held: table[(c["head_init"], fit)])
    assert (best, means) == (1, [2.0, 1.5, 1.5])  # a tie goes to the earlier candidate
    # a candidate whose fits diverge (NaN) is never chosen; without folds the first is taken unscored
    nan_first = select_by_cv(cands, folds, lambda c, fit, held: float("nan") if c["head_init"] == "fresh" else 1.0)
    assert nan_first[0] == 1
    assert select_by_cv(cands, [], lambda *a: 0.0)[0] == 0
    opts = cv_options({"head_init": "cv"})
    assert opts["folds"] == 3 and len(opts["candidates"]) == 4
    # the direct baseline's preset: the same budget, fresh heads only, at other learning rates
    direct = cv_options({"head_init_cv": {"candidates": "direct"}})["candidates"]
    assert len(direct) == len(opts["candidates"]) and {c["head_init"] for c in direct} == {"fresh"}
    assert cv_options({"head_init_cv": {"candidates": "mpa"}})["candidates"] == opts["candidates"]
    frozen = {"head_init": "correlated", "head_init_top": 3, "trunk_lr_factor": 0}
    assert cv_options({"head_init_cv": {"candidates": [frozen]}})["candidates"] == [frozen]
    assert describe_candidate(frozen) == "correlated top 3, trunk frozen"
    for bad, match in (({"folds": 1}, "folds=1"), ({"holdout": 0.2}, "unknown head_init_cv option"),
                       ({"candidates": []}, "empty"), ({"candidates": [{"head_init": "cv"}]}, "cannot itself"),
                       ({"candidates": [{"head_init": "nearest"}]}, "head_init='nearest'"),
                       ({"candidates": [{"head_init": "fresh", "lr": 1}]}, "candidate"),
                       ({"candidates": [{"head_init": "fresh", "trunk_lr_factor": -0.1}]}, "must be >= 0"),
                       ({"candidates": [{"head_init": "fresh", "lr_factor": -1}]}, "lr_factor=-1 must be positive"),
                       ({"candidates": "best"}, "presets"), ({"choose": "median"}, "choose='median'")):
        with pytest.raises(ValueError, match=match):
            cv_options({"head_init_cv": bad})


def test_one_se_rule_keeps_the_first_candidate_unless_another_is_clearly_better():
    from mpa_ase.training.head_start import cv_options, select_by_cv

    assert cv_options({})["choose"] == "min" and cv_options({"head_init_cv": {"choose": "one_se"}})["choose"] == "one_se"
    cands = [{"head_init": "correlated"}, {"head_init": "related"}, {"head_init": "fresh"}]
    folds = [(0, 0), (1, 1), (2, 2)]

    def table(rows):
        return lambda c, fit, held: rows[c["head_init"]][fit]

    # "related" is lower on the mean by 1e-4 relative, a difference the three folds cannot resolve
    tie = {"correlated": [1.0, 2.0, 3.0], "related": [0.9, 2.1, 2.9998], "fresh": [5.0, 5.0, 5.0]}
    assert select_by_cv(cands, folds, table(tie))[0] == 1
    assert select_by_cv(cands, folds, table(tie), rule="one_se")[0] == 0
    # paired differences -0.5, -0.6, -0.4: mean -0.5, standard error 0.058; clearly better
    clear = {"correlated": [1.0, 2.0, 3.0], "related": [0.5, 1.4, 2.6], "fresh": [0.9, 1.9, 2.9]}
    assert select_by_cv(cands, folds, table(clear), rule="one_se")[0] == 1
    # the first candidate failing (NaN) leaves the lowest finite mean
    broken = {"correlated": [float("nan")] * 3, "related": [2.0, 2.0, 2.0], "fresh": [1.0, 1.0, 1.0]}
    assert select_by_cv(cands, folds, table(broken), rule="one_se")[0] == 2
    with pytest.raises(ValueError, match="unknown CV rule"):
        select_by_cv(cands, folds, table(tie), rule="best")


def test_conformal_quantile_covers_the_level():
    from mpa_ase.training.trainer import conformal_quantile

    assert conformal_quantile(np.arange(1, 101), 0.9) == 91.0  # ceil(101 * 0.9) = 91st smallest
    rng = np.random.default_rng(0)
    calib, fresh = np.abs(rng.normal(size=2000)), np.abs(rng.normal(size=20000))
    q = conformal_quantile(calib, 0.9)
    assert 0.88 < np.mean(fresh <= q) < 0.92
    with pytest.raises(ValueError, match="level"):
        conformal_quantile(calib, 1.0)
    with pytest.raises(ValueError, match="1 are not"):
        conformal_quantile([*calib[:20], np.nan], 0.9)
    from mpa_ase.training.trainer import conformal_fit

    with pytest.raises(ValueError, match="equal, non-empty y, mean and std .got 3, 3, 2"):
        conformal_fit([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.1, 0.2])
    with pytest.raises(ValueError, match="got 0, 0, 0"):
        conformal_fit([], [], [])


def test_out_of_fold_calibration_is_checked_and_counted():
    """A head with no validation side is calibrated on the inner CV's out-of-fold
    predictions alone, their spread put on the head's scale; mismatched or
    non-finite predictions are refused by name instead of giving a NaN interval."""
    from mpa_ase.heads import Trunk
    from mpa_ase.training.trainer import HeadSet, conformal_interval, conformal_quantile

    head = _head(extensive=False)
    head.std_scale.fill_(2.0)
    headset = HeadSet(Trunk(64, hidden=32, depth=1), {"p": head})
    rng = np.random.default_rng(1)
    y, pred, std = rng.normal(size=12), rng.normal(size=12), rng.uniform(0.1, 1.0, 12)
    q, on = conformal_interval(headset, "p", None, [], out_of_fold={"y": y, "pred": pred, "std": std})
    assert on == "validation (0) and inner-CV out-of-fold (12)"
    floor = np.median(2.0 * std)
    assert float(head.interval_floor) == pytest.approx(floor)
    assert q == pytest.approx(conformal_quantile(np.abs(y - pred) / (2.0 * std + floor), 0.9))
    assert conformal_interval(headset, "p", None, [], out_of_fold={"y": y[:9], "pred": pred[:9], "std": std[:9]}) \
        is None  # under 10 scores: no interval
    with pytest.raises(ValueError, match="differ in length"):
        conformal_interval(headset, "p", None, [], out_of_fold={"y": y, "pred": pred[:11], "std": std})
    with pytest.raises(ValueError, match="head p: 1 of 12 .* not finite"):
        conformal_interval(headset, "p", None, [], out_of_fold={"y": y, "pred": [*pred[:11], np.nan], "std": std})


def test_head_domain_bounds_and_intervals():
    from ase.build import bulk, molecule

    from mpa_ase.heads import PropertyHead, TargetTransform

    head = PropertyHead("tb", "K", 8, members=3, elements=[1, 6, 8], material="molecule", lower_bound=0.0,
                        transform=TargetTransform("identity", shift=-500.0, scale=10.0))
    ethanol, cu, water_box = molecule("CH3CH2OH"), bulk("Cu"), molecule("H2O")
    water_box.cell, water_box.pbc = [8, 8, 8], True
    graph = AtomsGraph.from_atoms([ethanol, cu, water_box], 4.0)
    torch.manual_seed(0)
    out = head(torch.randn(graph.num_atoms, 8), graph)
    assert out["tb_in_domain"].tolist() == [1.0, 0.0, 0.0]  # Cu: unknown element; periodic water: a crystal
    # heads pool over segments alone: the same from atom counts, numbers and periodicity as from the graph
    from mpa_ase.graph import Segments

    alone = Segments.from_sizes(graph.n_atoms.tolist(), graph.numbers, [False, True, True])
    torch.manual_seed(0)
    again = head(torch.randn(graph.num_atoms, 8), alone)
    assert again.keys() == out.keys() and all(torch.equal(again[k], out[k]) for k in out)
    from mpa_ase.errors import MPAInputError

    for bad, match in ((dict(sizes=[3, 0]), "at least one atom"),
                       (dict(sizes=[3, 5], numbers=[1, 6, 8]), "add up to 8 atoms"),
                       (dict(sizes=[3, 5], periodic=[True]), "one flag per system")):
        with pytest.raises(MPAInputError, match=match):
            Segments.from_sizes(**bad)
    assert (out["tb"] == 0).all()  # ~ -500 K before the bound: never a negative absolute temperature
    assert "tb_lo" not in out
    head.set_interval(1.5, 0.9)
    out = head(torch.randn(graph.num_atoms, 8), graph)
    assert (out["tb_lo"] >= 0).all() and (out["tb_hi"] >= out["tb_lo"]).all()
    free = PropertyHead("e", "eV", 8, members=3)
    free.set_interval(2.0, 0.9)
    o = free(torch.randn(graph.num_atoms, 8), graph)
    assert torch.allclose(o["e_hi"] - o["e"], 2.0 * o["e_std"]) and "e_in_domain" not in o
    free.set_interval(2.0, 0.9, floor=0.5)
    o = free(torch.randn(graph.num_atoms, 8), graph)
    assert torch.allclose(o["e_hi"] - o["e"], 2.0 * (o["e_std"] + 0.5))
    assert torch.allclose(o["e"] - o["e_lo"], 2.0 * (o["e_std"] + 0.5))
    with pytest.raises(ValueError, match="floor"):
        free.set_interval(2.0, 0.9, floor=-1.0)
    with pytest.raises(ValueError, match="material"):
        PropertyHead("x", "K", 8, material="liquid")


def test_candidate_learning_rates_scale_the_configured_optimiser():
    from mpa_ase.training.common import post_optim

    cfg = {"optim": {"lr": 1e-3}}
    assert post_optim(cfg).lr == 1e-3 and post_optim(cfg).trunk_lr is None
    o = post_optim(cfg, {"head_init": "fresh", "lr_factor": 3.0})
    assert o.lr == pytest.approx(3e-3) and o.trunk_lr is None
    o = post_optim({"optim": {"lr": 1e-3, "trunk_lr": 1e-4}}, {"head_init": "fresh", "lr_factor": 0.5})
    assert (o.lr, o.trunk_lr) == pytest.approx((5e-4, 5e-5))
    o = post_optim(cfg, {"head_init": "fresh", "lr_factor": 2.0, "trunk_lr_factor": 0.1})
    assert (o.lr, o.trunk_lr) == pytest.approx((2e-3, 2e-4))
    # a trunk frozen on purpose stays frozen whatever the candidate
    o = post_optim({"optim": {"lr": 1e-3, "trunk_lr": 0.0}}, {"head_init": "fresh", "lr_factor": 2.0,
                                                             "trunk_lr_factor": 0.1})
    assert (o.lr, o.trunk_lr) == pytest.approx((2e-3, 0.0))
    # and a candidate can freeze it
    assert post_optim(cfg, {"head_init": "correlated", "trunk_lr_factor": 0}).trunk_lr == 0.0


def test_head_problem_is_not_a_task_and_old_files_still_load():
    """A head is a regression or classification *problem*; a task is a property
    from one source. Model files written before the rename (config key "task") load."""
    from mpa_ase.checkpoint import build_head, head_state

    head = PropertyHead("p", "", 8, members=2, problem="classification")
    entry = head_state(head)
    assert entry["config"]["problem"] == "classification" and "task" not in entry["config"]
    entry["config"]["task"] = entry["config"].pop("problem")  # as an older file has it
    old = build_head(entry)
    assert old.problem == "classification" and old.describe()["problem"] == "classification"
    with pytest.raises(ValueError, match="unknown problem 'ranking'"):
        PropertyHead("p", "", 8, problem="ranking")
