"""The three-phase recipe on a small real subset: mid-training beats direct
fine-tuning on held-out data, interrupted training resumes to the same
weights, checkpoints are atomic and damaged ones are named."""

from __future__ import annotations

import copy
import json

import pytest
import torch

pytest.importorskip("chemicals")
pytest.importorskip("rdkit")

from mpa_ase.errors import CheckpointError  # noqa: E402
from mpa_ase.training import run_phase  # noqa: E402

TARGET = {"data": {"loader": "chemicals", "property": "flash_point", "sources": ["Serat DIPPR (2017)"],
                   "n_conformers": 1}, "task": "flash_point@Serat DIPPR (2017)"}
MID_DATA = [
    {"loader": "chemicals", "property": "boiling_point", "sources": ["CRC_ORG", "YAWS"], "limit": 300,
     "n_conformers": 1},
    {"loader": "chemicals", "property": "flash_point", "sources": ["IEC 60079-20-1 (2010)", "NFPA 497 (2008)",
                                                                   "WIKIDATA"], "n_conformers": 1},
    {"loader": "chemicals", "property": "critical_temperature", "sources": ["YAWS"], "limit": 300,
     "n_conformers": 1},
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """pretrain -> midtrain -> posttrain, and direct fine-tuning from phase 1, once per session."""
    root = tmp_path_factory.mktemp("mpa_runs")
    base = {"seed": 0, "cache_dir": str(root / "cache"), "split": {"kind": "random", "val": 0.15, "test": 0.25},
            "optim": {"epochs": 40, "patience": 8}}
    pre = run_phase("pretrain", {**base, "output": str(root / "pre")}, progress=False)
    mid = run_phase("midtrain", {**base, "output": str(root / "mid"), "init": pre["model"], "data": MID_DATA,
                                 "target": TARGET}, progress=False)
    post = {}
    for name, init in (("direct", pre["model"]), ("mpa", mid["model"])):
        post[name] = run_phase("posttrain", {**base, "output": str(root / name), "init": init, "target": TARGET},
                               progress=False)
    return {"root": root, "base": base, "pre": pre, "mid": mid, **post}


def _test_mae(summary):
    return summary["metrics"][TARGET["task"]]["test"]["mae"]


def test_midtraining_beats_direct_finetuning_on_held_out_data(runs):
    direct, mpa = _test_mae(runs["direct"]), _test_mae(runs["mpa"])
    m = runs["mpa"]["metrics"][TARGET["task"]]
    assert m["n_test"] >= 150 and m["n_train"] >= 400
    print(f"flash point test MAE: direct {direct:.2f} K, MPA {mpa:.2f} K ({(mpa / direct - 1) * 100:+.1f}%)")
    assert mpa < direct
    # and the head is useful at all: better than predicting the training mean
    assert m["test"]["r2"] > 0.3


def test_posttraining_head_starts_from_the_same_property_of_another_source(runs):
    from mpa_ase.checkpoint import read_parts
    from mpa_ase.training.head_start import related_head

    source = related_head(read_parts(runs["mid"]["model"])[2], "flash_point")
    # the flash-point source with most training compounds; never the target source (DIPPR)
    assert source is not None and source.trained_on.startswith("flash_point@") and "DIPPR" not in source.trained_on


def test_correlated_head_start_ranks_source_heads_on_training_labels(runs, tmp_path):
    from mpa_ase.checkpoint import read_parts
    from mpa_ase.data import load_source
    from mpa_ase.training.common import split_task
    from mpa_ase.training.head_start import choose_sources, rank_source_heads
    from mpa_ase.training.embeddings import EmbeddingCache

    spec, trunk, heads, _ = read_parts(runs["mid"]["model"])
    samples = [s for s in load_source(TARGET["data"]) if s.task == TARGET["task"]]
    train = split_task(samples, runs["base"])[0]
    from mpa_ase.backbones import load_backbone

    cache = EmbeddingCache(load_backbone(spec["name"], model=spec.get("model")), runs["base"]["cache_dir"])
    target = copy.deepcopy(heads["flash_point__WIKIDATA"])
    flipped = copy.deepcopy(heads["boiling_point__YAWS"])
    for member in flipped.members:
        member.pooled_mlp[-1].weight.data.neg_(), member.pooled_mlp[-1].bias.data.neg_()
        member.atomwise.out.weight.data.neg_(), member.atomwise.out.bias.data.neg_()
    ranked = dict((n, r) for r, n in rank_source_heads(trunk, {**heads, "flipped": flipped}, target, train, cache))
    # other flash-point sources and boiling points already predict DIPPR flash points well
    assert ranked["flash_point__WIKIDATA"] > 0.8 and ranked["boiling_point__YAWS"] > 0.6
    assert ranked["flipped"] == pytest.approx(-ranked["boiling_point__YAWS"], abs=1e-9)
    # a negatively correlated head is used with its sign flipped; an unknown choice is refused
    chosen, _ = choose_sources("correlated", {"flipped": flipped}, target, "flash_point", train, trunk, cache, top=1)
    assert [(h, sign) for h, sign in chosen] == [(flipped, -1.0)]
    with pytest.raises(ValueError, match="head_init='best'"):
        choose_sources("best", heads, target, "flash_point", train, trunk, cache)
    # the default post-training (head_init: correlated) started from the 3 best and says so
    described = runs["mpa"]["metrics"][TARGET["task"]]["head_init"]
    assert described.count("r=+0.") == 3 and "Serat DIPPR" not in described
    # the same property of another source (head_init: related) also beats direct fine-tuning
    post = run_phase("posttrain", {**runs["base"], "output": str(tmp_path / "rel"), "init": runs["mid"]["model"],
                                   "target": TARGET, "head_init": "related"}, progress=False)
    assert post["metrics"][TARGET["task"]]["head_init"].startswith("flash_point@")
    assert _test_mae(post) < _test_mae(runs["direct"])


def test_head_start_chosen_by_inner_cv_on_the_training_split(runs, tmp_path, monkeypatch):
    import json

    import mpa_ase.training.common as common

    cands = [{"head_init": "fresh"}, {"head_init": "correlated", "head_init_top": 3, "trunk_lr_factor": 0.1}]
    cfg = {**runs["base"], "output": str(tmp_path / "cv"), "init": runs["mid"]["model"], "target": TARGET,
           "head_init": "cv", "head_init_cv": {"folds": 2, "candidates": cands}}
    post = run_phase("posttrain", cfg, progress=False)
    m = post["metrics"][TARGET["task"]]
    report = m["head_start_cv"]
    # the folds partition the training split; the lowest inner-CV MAE wins
    assert report["folds"] == 2 and sum(report["held_out"]) == m["n_train"]
    scores = list(report["cv_mae"].values())
    assert report["chosen"] == scores.index(min(scores)) and all(s > 0 for s in scores)
    chosen = cands[report["chosen"]]
    print(f"inner-CV MAE (K): {report['cv_mae']}; chosen: {report['candidate']}")
    # the final head is exactly the run that asks for the chosen start directly
    direct_cfg = {k: v for k, v in cfg.items() if k not in ("head_init_cv",)}
    direct_cfg.update(output=str(tmp_path / "same"), head_init=chosen["head_init"],
                      head_init_top=chosen.get("head_init_top", 3))
    if "trunk_lr_factor" in chosen:
        direct_cfg["optim"] = {**cfg["optim"], "trunk_lr": 2e-3 * chosen["trunk_lr_factor"]}
    same = run_phase("posttrain", direct_cfg, progress=False)
    assert _test_mae(same) == pytest.approx(_test_mae(post), rel=1e-9)
    # resuming reuses the stored choice instead of refitting the folds
    saved = json.loads((tmp_path / "cv" / "head_start_cv.json").read_text())
    assert saved["chosen"] == report["chosen"]

    def refit(*args, **kwargs):
        raise AssertionError("inner folds refitted on resume")

    monkeypatch.setattr(common.HeadStart, "fold_predict", refit)
    again = run_phase("posttrain", cfg, progress=False)
    assert _test_mae(again) == pytest.approx(_test_mae(post), rel=1e-12)
    with pytest.raises(ValueError, match="folds=1"):
        run_phase("posttrain", {**cfg, "head_init_cv": {"folds": 1}})


def test_frozen_trunk_stays_frozen_under_head_start_cv(runs, tmp_path):
    """trunk_lr 0 (one trunk shared by heads post-trained apart, as for the
    shipped model): a candidate with its own trunk rate must not unfreeze it,
    so the head is evaluated on the trunk it ships on; such candidates repeat
    the others and are not fitted twice."""
    import torch

    from mpa_ase.checkpoint import read_parts

    cands = [{"head_init": "correlated", "head_init_top": 3},
             {"head_init": "correlated", "head_init_top": 3, "trunk_lr_factor": 0.1}, {"head_init": "fresh"}]
    cfg = {**runs["base"], "output": str(tmp_path / "frozen"), "init": runs["mid"]["model"], "target": TARGET,
           "head_init": "cv", "head_init_cv": {"folds": 2, "candidates": cands},
           "optim": {**runs["base"]["optim"], "trunk_lr": 0.0}}
    post = run_phase("posttrain", cfg, progress=False)
    report = post["metrics"][TARGET["task"]]["head_start_cv"]
    assert list(report["cv_mae"]) == ["correlated top 3", "fresh"]
    before, after = read_parts(runs["mid"]["model"])[1], read_parts(post["model"])[1]
    assert all(torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values()))


def test_direct_baseline_gets_its_own_inner_cv(runs, tmp_path):
    """Direct fine-tuning (from the phase-1 checkpoint: no heads to start from)
    tunes its learning rates with the same folds as MPA's head start."""
    cfg = {**runs["base"], "optim": {"epochs": 12, "patience": 4}, "output": str(tmp_path / "direct_cv"),
           "init": runs["pre"]["model"], "target": TARGET, "head_init": "cv",
           "head_init_cv": {"folds": 2, "candidates": "direct"}}
    post = run_phase("posttrain", cfg, progress=False)
    m = post["metrics"][TARGET["task"]]
    report = m["head_start_cv"]
    assert report["folds"] == 2 and sum(report["held_out"]) == m["n_train"]
    assert list(report["cv_mae"]) == ["fresh", "fresh, trunk lr x0.1", "fresh, lr x0.3", "fresh, lr x3"]
    scores = list(report["cv_mae"].values())
    assert report["chosen"] == scores.index(min(scores)) and len(set(scores)) == 4  # really different fits
    assert m["test"]["mae"] > 0


def test_midtraining_never_saw_target_test_compounds(runs):
    guard = runs["mid"]["leakage_guard"]
    # flash-point compounds of the target's val/test split also measured by other sources
    assert guard["protected_identities"] > 0 and guard["removed_by_leakage_guard"] > 0
    assert TARGET["task"] not in runs["mid"]["metrics"]


def test_outputs_plots_and_units(runs):
    out = runs["root"] / "mpa"
    assert (out / "learning_curve.png").stat().st_size > 1000
    assert (out / "parity.png").stat().st_size > 1000
    assert runs["mpa"]["metrics"][TARGET["task"]]["unit"] == "K"


def test_trained_model_runs_in_the_calculator(runs):
    from ase import Atoms

    from mpa_ase import MPACalculator
    from mpa_ase.data.molecules import conformers

    calc = MPACalculator(model=runs["mpa"]["model"], device="cpu")
    assert calc.heads["flash_point"]["unit"] == "K"
    assert "flash_point@Serat DIPPR (2017)" in calc.heads["flash_point"]["trained_on"]
    atoms = conformers("CCCCCCO", 1)[0]  # 1-hexanol, flash point 332 K (DIPPR)
    atoms.calc = calc
    value = calc.get_property("flash_point", atoms)
    assert 280 < value < 390 and calc.results["flash_point_std"] > 0
    assert isinstance(atoms.get_potential_energy(), float)
    assert isinstance(Atoms, type)


def test_resumed_after_interrupt_equals_uninterrupted(runs, tmp_path):
    base = {**runs["base"], "optim": {"epochs": 6, "patience": 100}, "init": runs["mid"]["model"], "target": TARGET}
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    full = run_phase("posttrain", {**base, "output": str(tmp_path / "full")}, progress=False)
    # training draws from seeded streams of its own: the caller's global RNG is where it was
    assert torch.equal(torch.rand(3), expected)
    part = run_phase("posttrain", {**base, "output": str(tmp_path / "cut")}, progress=False, stop_after=2)
    assert part["finished"] is False and (tmp_path / "cut" / "checkpoint.pt").exists()
    resumed = run_phase("posttrain", {**base, "output": str(tmp_path / "cut")}, progress=False)
    a = torch.load(full["model"], weights_only=True)
    b = torch.load(resumed["model"], weights_only=True)
    for key in ("trunk",):
        for name, t in a[key]["state"].items():
            assert torch.equal(t, b[key]["state"][name]), name
    for head, entry in a["heads"].items():
        for name, t in entry["state"].items():
            assert torch.equal(t, b["heads"][head]["state"][name]), (head, name)


def test_weight_average_is_the_exponential_moving_average():
    from mpa_ase.training.trainer import WeightAverage

    module = torch.nn.Linear(2, 1)
    module.register_buffer("count", torch.tensor(0))
    states = []
    avg = WeightAverage(0.75)
    for k in range(4):
        with torch.no_grad():
            module.weight.copy_(torch.tensor([[float(k), 2.0 * k]]))
            module.count.fill_(k)
        states.append(module.weight.clone())
        avg.update(module)
    # first state, then avg <- 0.75 avg + 0.25 current: 0, 0.25, 0.6875, 1.265625 (x [1, 2])
    expected = states[0]
    for w in states[1:]:
        expected = 0.75 * expected + 0.25 * w
    assert torch.allclose(avg.state["weight"], expected)
    assert float(expected[0, 0].detach()) == pytest.approx(1.265625)
    assert int(avg.state["count"]) == 3  # integer state follows the module
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="ema_decay must be in \\(0, 1\\)"):
            WeightAverage(bad)


def test_ema_run_validates_the_average_and_resumes_bit_for_bit(runs, tmp_path):
    """optim.ema_decay: early stopping and the kept weights are the moving average's.
    A decay near 0 makes the average the live weights (the plain run's numbers);
    a real decay changes them; an interrupted EMA run resumes to the same weights."""
    base = {**runs["base"], "init": runs["mid"]["model"], "target": TARGET}

    def run(name, ema, **kw):
        optim = {"epochs": 5, "patience": 100, **({"ema_decay": ema} if ema is not None else {})}
        return run_phase("posttrain", {**base, "optim": optim, "output": str(tmp_path / name)}, progress=False, **kw)

    plain, near, ema = run("plain", None), run("near", 1e-12), run("ema", 0.9)
    task = TARGET["task"]
    curve = lambda r: [h["val_metric"] for h in r["history"]]  # noqa: E731
    assert curve(near) == pytest.approx(curve(plain), rel=1e-9)
    assert near["metrics"][task]["test"]["mae"] == pytest.approx(plain["metrics"][task]["test"]["mae"], rel=1e-9)
    assert abs(ema["metrics"][task]["test"]["mae"] / plain["metrics"][task]["test"]["mae"] - 1) > 1e-4
    # the kept weights are the average at the best epoch: the checkpoint's own average when that was the last
    ckpt = torch.load(tmp_path / "ema" / "checkpoint.pt", weights_only=False)
    assert set(ckpt["ema"]) == set(ckpt["module"])
    assert any(not torch.equal(ckpt["ema"][k], ckpt["module"][k]) for k in ckpt["module"])
    if min(range(5), key=lambda e: curve(ema)[e]) == 4:
        for k in ckpt["ema"]:  # interval_q is NaN until calibrated
            torch.testing.assert_close(ckpt["ema"][k], ckpt["best_module"][k], rtol=0, atol=0, equal_nan=True)
    run("cut", 0.9, stop_after=2)
    resumed = run("cut", 0.9)
    assert curve(resumed) == curve(ema)
    a = torch.load(ema["model"], weights_only=True)
    b = torch.load(resumed["model"], weights_only=True)
    for name, t in a["trunk"]["state"].items():
        assert torch.equal(t, b["trunk"]["state"][name]), name
    for head, entry in a["heads"].items():
        for name, t in entry["state"].items():
            assert torch.equal(t, b["heads"][head]["state"][name]), (head, name)


def test_damaged_checkpoints_are_named(runs, tmp_path):
    from mpa_ase import MPACalculator
    from mpa_ase.checkpoint import load_model

    bad = tmp_path / "model.pt"
    data = open(runs["mpa"]["model"], "rb").read()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        load_model(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "absent.pt")
    # a checkpoint from another config is refused, not silently mixed in
    base = {**runs["base"], "optim": {"epochs": 2}, "init": runs["mid"]["model"], "target": TARGET}
    run_phase("posttrain", {**base, "output": str(tmp_path / "run")}, progress=False, stop_after=1)
    other = copy.deepcopy(base)
    other["optim"]["lr"] = 1e-2
    with pytest.raises(CheckpointError, match="another config"):
        run_phase("posttrain", {**other, "output": str(tmp_path / "run")}, progress=False)
    run_phase("posttrain", {**other, "output": str(tmp_path / "run")}, progress=False, restart=True)
    with pytest.raises(ValueError, match="unknown config key"):
        run_phase("posttrain", {**base, "output": str(tmp_path / "x"), "epochs": 3})
    with pytest.raises(ValueError, match="head_init='nearest'; choose from"):
        run_phase("posttrain", {**base, "output": str(tmp_path / "x"), "head_init": "nearest"})
    with pytest.raises(ValueError, match="head_init_top=0"):
        run_phase("posttrain", {**base, "output": str(tmp_path / "x"), "head_init_top": 0})
    assert MPACalculator  # imported for the calculator path above


def test_cli_train(runs, tmp_path):
    import yaml

    from mpa_ase.cli import main

    cfg = {**runs["base"], "optim": {"epochs": 3}, "output": str(tmp_path / "cli"), "init": runs["mid"]["model"],
           "target": TARGET}
    path = tmp_path / "post.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", "posttrain", "--config", str(path), "--quiet"]) == 0
    assert (tmp_path / "cli" / "model.pt").exists()


def test_example_configs_are_valid():
    from conftest import REPO
    from mpa_ase.training.common import read_config

    from mpa_ase.training.finetune import read_finetune_config

    for name in ("pretrain", "midtrain", "posttrain"):
        cfg = read_config(REPO / "examples" / "training" / f"{name}.yaml")
        assert cfg["output"].startswith("runs/")
    cfg = read_finetune_config(REPO / "examples" / "training" / "finetune.yaml")
    assert cfg["output"].startswith("runs/") and cfg["trainable"] == "full"


def test_sigkill_mid_run_then_resume_equals_uninterrupted(runs, tmp_path):
    """A real interrupt: the training process is SIGKILLed after a checkpoint, then rerun."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    base = {**runs["base"], "optim": {"epochs": 25, "patience": 100}, "init": runs["mid"]["model"], "target": TARGET}

    def command(name):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump({**base, "output": str(tmp_path / name)}))
        return [sys.executable, "-m", "mpa_ase.cli", "train", "posttrain", "--config", str(cfg), "--quiet"]

    # the reference runs in a process of its own too: same threads, same numerics
    subprocess.run(command("full"), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cmd = command("cut")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "cut" / "checkpoint.pt"
    deadline = time.time() + 300
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists():
            try:
                epoch = torch.load(ckpt, weights_only=True)["epoch"]
            except Exception:  # being replaced right now: try again
                continue
            if epoch >= 3:
                os.kill(proc.pid, signal.SIGKILL)
                killed_at = epoch
                break
        time.sleep(0.05)
    proc.wait()
    if killed_at is None:
        pytest.skip("the run finished before it could be killed (machine too fast for this timing)")
    assert not (tmp_path / "cut" / "model.pt").exists()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)
    for name, t in a["trunk"]["state"].items():
        assert torch.equal(t, b["trunk"]["state"][name]), name
    for head, entry in a["heads"].items():
        for name, t in entry["state"].items():
            assert torch.equal(t, b["heads"][head]["state"][name]), (head, name)


def test_uncertainty_is_calibrated_and_ranks_errors(runs):
    import numpy as np

    from mpa_ase.validation import miscalibration_area, spearman_error_vs_std

    m = runs["mpa"]["metrics"][TARGET["task"]]
    p = m["test_predictions"]
    y, pred, std = (np.array(p[k]) for k in ("y", "pred", "std"))
    scale = m["std_scale"]
    print(f"std_scale {scale:.2f}; miscalibration area raw {miscalibration_area(y, pred, std / scale):.3f}, "
          f"calibrated {miscalibration_area(y, pred, std):.3f}; Spearman {spearman_error_vs_std(y, pred, std):.2f}")
    assert scale != 1.0
    assert miscalibration_area(y, pred, std) < miscalibration_area(y, pred, std / scale)
    assert spearman_error_vs_std(y, pred, std) > 0


def test_interval_is_split_conformal_with_a_floor(runs):
    import numpy as np

    from mpa_ase.checkpoint import read_parts

    m = runs["mpa"]["metrics"][TARGET["task"]]
    interval, p = m["interval"], m["test_predictions"]
    head = read_parts(runs["mpa"]["model"])[2][m["head"]]
    q, floor = interval["q"], interval["floor"]
    assert floor > 0 and float(head.interval_q) == q and float(head.interval_floor) == floor
    # the calibration side is covered at least at the level (finite-sample quantile)
    assert interval["coverage_val"] >= interval["level"]
    # the stored test coverage is that of mean +- q (std + floor), not of mean +- q std
    y, pred, std = (np.array(p[k]) for k in ("y", "pred", "std"))
    assert interval["coverage_test"] == pytest.approx(np.mean(np.abs(y - pred) <= q * (std + floor)))
    # the stored validation predictions are the calibration set: floor = their median std, and q the
    # ceil((n + 1) 0.9)-th smallest score, recomputed here by hand
    v = m["val_predictions"]
    assert len(set(v["identity"])) == len(v["y"]) == m["n_val"]
    vy, vpred, vstd = (np.array(v[k]) for k in ("y", "pred", "std"))
    assert floor == pytest.approx(float(np.median(vstd)), rel=1e-12)
    scores = np.sort(np.abs(vy - vpred) / (vstd + floor))
    assert q == pytest.approx(scores[int(np.ceil((len(scores) + 1) * interval["level"])) - 1], rel=1e-12)
    # and the head returns exactly that interval
    import torch

    from mpa_ase.graph import Segments

    out = head(torch.randn(7, head.config["dim"], dtype=torch.float64).float(), Segments.from_sizes([3, 4]))
    half = q * (out[f"{m['head']}_std"] + floor)
    assert torch.allclose(out[f"{m['head']}_hi"] - out[m["head"]], half.to(out[m["head"]].dtype))


def test_small_validation_side_is_calibrated_with_inner_cv_out_of_fold_predictions(runs, tmp_path, caplog):
    """Under 10 validation compounds (the elemental targets have 5-9): the
    chosen start's out-of-fold predictions from the inner CV join them, so the
    head still gets a conformal interval, set at the finite-sample quantile of
    all those scores."""
    import json
    import logging
    import math

    import numpy as np

    from mpa_ase.checkpoint import read_parts

    cfg = {**runs["base"], "split": {"kind": "random", "val": 0.008, "test": 0.25},
           "optim": {"epochs": 12, "patience": 4}, "output": str(tmp_path / "small_val"),
           "init": runs["pre"]["model"], "target": TARGET, "head_init": "cv",  # mid-training protects its own split
           "head_init_cv": {"folds": 2, "candidates": [{"head_init": "fresh"}]}}
    post = run_phase("posttrain", cfg, progress=False)
    m = post["metrics"][TARGET["task"]]
    assert 0 < m["n_val"] < 10
    interval = m["interval"]
    oof = json.loads((tmp_path / "small_val" / "head_start_cv.json").read_text())["out_of_fold"]
    assert len(oof["y"]) == m["n_train"]
    # calibration never sees a held-out compound: the out-of-fold ones are exactly the training side
    from mpa_ase.validation import stored

    record = stored.read(tmp_path / "small_val")["tasks"][TARGET["task"]]
    assert sorted(oof["identity"]) == sorted(record["train"])
    assert not set(oof["identity"]) & stored.held_out(record)
    assert interval["calibrated_on"] == f"validation ({m['n_val']}) and inner-CV out-of-fold ({m['n_train']})"
    # q is the ceil((n + 1) * 0.9)-th smallest score over validation and out-of-fold together
    head = read_parts(post["model"])[2][m["head"]]
    q, floor, scale = interval["q"], interval["floor"], float(head.std_scale)
    y, pred, std = (np.array(oof[k]) for k in ("y", "pred", "std"))
    oof_scores = np.abs(y - pred) / (std * scale + floor)
    n = m["n_val"] + m["n_train"]
    covered = interval["coverage_val"] * m["n_val"] + np.sum(oof_scores <= q)
    assert round(covered) >= math.ceil((n + 1) * interval["level"])
    just_below = interval["coverage_val"] * m["n_val"] + np.sum(oof_scores < q)
    assert just_below < math.ceil((n + 1) * interval["level"]) or interval["coverage_val"] < 1
    print(f"n_val {m['n_val']}, q {q:.3f}, test coverage {interval['coverage_test']:.3f}")
    assert 0.8 <= interval["coverage_test"] <= 1.0
    # without an inner CV there is nothing to add: no interval, and the log says why
    plain = {k: v for k, v in cfg.items() if k != "head_init_cv"}
    plain.update(output=str(tmp_path / "small_val_plain"), head_init="fresh")
    with caplog.at_level(logging.WARNING, logger="mpa_ase"):
        m = run_phase("posttrain", plain, progress=False)["metrics"][TARGET["task"]]
    assert "interval" not in m
    assert f"{m['n_val']} validation compounds, fewer than 10 (with head_init: cv" in caplog.text


def test_calibration_set_held_apart_from_early_stopping(runs, tmp_path):
    """calibration.fraction: that share of the validation side, as whole
    scaffolds, is set apart; early stopping reads the rest, and the spread and
    the interval are calibrated on the part set apart only."""
    import math
    from collections import Counter

    import numpy as np

    from mpa_ase.checkpoint import read_parts
    from mpa_ase.data import load_source
    from mpa_ase.validation import stored
    from mpa_ase.validation.splits import murcko_scaffold

    cfg = {**runs["base"], "split": {"kind": "scaffold", "val": 0.1, "test": 0.2},
           "optim": {"epochs": 12, "patience": 4}, "output": str(tmp_path / "cal"), "init": runs["pre"]["model"],
           "target": TARGET, "head_init": "fresh", "calibration": {"fraction": 0.5}}
    post = run_phase("posttrain", cfg, progress=False)
    m = post["metrics"][TARGET["task"]]
    record = stored.read(tmp_path / "cal")["tasks"][TARGET["task"]]
    v, c = m["val_predictions"], m["cal_predictions"]
    # the stored split's validation side is divided, nothing added or lost, and the division is stored
    assert sorted(v["identity"] + c["identity"]) == sorted(record["val"])
    assert sorted(c["identity"]) == record["calibration"] and record["calibration_fraction"] == 0.5
    assert m["n_val"] == len(v["identity"]) and m["n_cal"] == len(c["identity"])
    # whole scaffolds: no scaffold on both parts, which differ in size by the largest one at most
    smiles = {s.identity: s.smiles for s in load_source(TARGET["data"])}
    scaffolds = [{murcko_scaffold(smiles[i]) for i in part["identity"]} for part in (v, c)]
    assert not scaffolds[0] & scaffolds[1]
    largest = max(Counter(murcko_scaffold(smiles[i]) for i in record["val"]).values())
    assert abs(m["n_cal"] - m["n_val"]) <= largest
    # the interval is calibrated on the part set apart: floor and q recomputed from it by hand
    interval = m["interval"]
    assert interval["calibrated_on"] == f"calibration ({m['n_cal']})"
    cy, cpred, cstd = (np.array(c[k]) for k in ("y", "pred", "std"))
    floor = float(np.median(cstd))
    assert interval["floor"] == pytest.approx(floor, rel=1e-12)
    scores = np.sort(np.abs(cy - cpred) / (cstd + floor))
    assert interval["q"] == pytest.approx(scores[math.ceil((len(scores) + 1) * interval["level"]) - 1], rel=1e-12)
    assert interval["coverage_cal"] >= interval["level"]
    head = read_parts(post["model"])[2][m["head"]]
    assert float(head.interval_q) == interval["q"]
    # the spread's scale too: median |z| on the calibration set is a unit Gaussian's
    z = np.abs(cy - cpred) / cstd
    assert float(np.median(z)) == pytest.approx(0.6745, rel=1e-6)
    # early stopping read the other part: its best epoch's validation MAE is that part's MAE
    best = min(h["val_mae"][TARGET["task"]] for h in post["history"])
    assert best == pytest.approx(m["val"]["mae"], rel=1e-5)
    # too small a validation side to divide: calibrated on all of it, as without the option
    small = {**cfg, "output": str(tmp_path / "cal_small"), "split": {"kind": "scaffold", "val": 0.02, "test": 0.2}}
    ms = run_phase("posttrain", small, progress=False)["metrics"][TARGET["task"]]
    assert "n_cal" not in ms and ms["interval"]["calibrated_on"] == f"validation ({ms['n_val']})"


def test_cross_fit_calibration_on_the_whole_validation_side(runs, tmp_path, caplog):
    """calibration.cross_fit: each validation fold (whole scaffolds) is
    predicted by a copy of the head stopped on the other folds, and those
    errors over the final head's spread set the spread's scale and the
    interval; the final head itself is the one the run trains without it."""
    import logging
    import math
    from collections import Counter

    import numpy as np

    from mpa_ase.checkpoint import read_parts
    from mpa_ase.data import load_source
    from mpa_ase.validation import stored
    from mpa_ase.validation.splits import murcko_scaffold

    cfg = {**runs["base"], "split": {"kind": "scaffold", "val": 0.1, "test": 0.2},
           "optim": {"epochs": 12, "patience": 4}, "output": str(tmp_path / "plain"), "init": runs["pre"]["model"],
           "target": TARGET, "head_init": "fresh"}
    plain = run_phase("posttrain", cfg, progress=False)["metrics"][TARGET["task"]]
    xcfg = {**cfg, "output": str(tmp_path / "xfit"), "calibration": {"cross_fit": True, "cross_fit_folds": 3}}
    post = run_phase("posttrain", xcfg, progress=False)
    m = post["metrics"][TARGET["task"]]
    # the final head is untouched: its predictions are the plain run's, bit for bit
    assert m["test_predictions"]["pred"] == plain["test_predictions"]["pred"]
    assert m["val"]["mae"] == plain["val"]["mae"]
    # every validation compound is predicted once, by the copy stopped on the folds it is not in
    record = stored.read(tmp_path / "xfit")["tasks"][TARGET["task"]]
    x, v = m["crossfit_predictions"], m["val_predictions"]
    assert sorted(x["identity"]) == sorted(record["val"]) == sorted(v["identity"])
    assert [v["identity"][i] for i in x["index"]] == x["identity"]
    folds = [sorted(i for i, f in zip(x["identity"], x["fold"]) if f == k) for k in range(3)]
    assert folds == record["cross_fit_folds"]
    smiles = {s.identity: s.smiles for s in load_source(TARGET["data"])}
    largest = max(Counter(murcko_scaffold(smiles[i]) for i in record["val"]).values())
    assert max(map(len, folds)) - min(map(len, folds)) <= largest
    scaffolds = [{murcko_scaffold(smiles[i]) for i in f} for f in folds]
    assert not (scaffolds[0] & scaffolds[1] or scaffolds[0] & scaffolds[2] or scaffolds[1] & scaffolds[2])
    # the copies are not the final head: stopped elsewhere, they predict the validation side differently
    assert any(abs(v["pred"][i] - p) > 1e-9 for i, p in zip(x["index"], x["pred"]))
    # scale and interval recomputed by hand: the copies' errors over the final head's spread
    y, pred = np.array(x["y"]), np.array(x["pred"])
    std = np.array(v["std"])[x["index"]] / m["std_scale"]
    assert m["std_scale"] == pytest.approx(float(np.median(np.abs(y - pred) / std)) / 0.6745, rel=1e-9)
    std = std * m["std_scale"]
    interval = m["interval"]
    assert interval["calibrated_on"] == "validation, cross-fit ({})".format(" + ".join(
        str(x["fold"].count(k)) for k in range(3)))
    floor = float(np.median(std))
    assert interval["floor"] == pytest.approx(floor, rel=1e-9)
    scores = np.sort(np.abs(y - pred) / (std + floor))
    assert interval["q"] == pytest.approx(scores[math.ceil((len(scores) + 1) * interval["level"]) - 1], rel=1e-9)
    head = read_parts(post["model"])[2][m["head"]]
    assert float(head.interval_q) == pytest.approx(interval["q"]) and float(head.std_scale) == pytest.approx(m["std_scale"])
    # too small a validation side: calibrated as without the option, and said
    small = {**xcfg, "output": str(tmp_path / "xfit_small"), "split": {"kind": "scaffold", "val": 0.007, "test": 0.2}}
    with caplog.at_level(logging.WARNING, logger="mpa_ase"):
        ms = run_phase("posttrain", small, progress=False)["metrics"][TARGET["task"]]
    assert 0 < ms["n_val"] < 10 and "crossfit_predictions" not in ms
    assert "cannot make 3 cross-fit folds" in caplog.text
    # one option or the other, and only for one target task
    with pytest.raises(ValueError, match="choose one"):
        run_phase("posttrain", {**xcfg, "calibration": {"cross_fit": True, "fraction": 0.5}}, progress=False)
    with pytest.raises(ValueError, match="calibration.cross_fit must be true or false"):
        run_phase("posttrain", {**xcfg, "calibration": {"cross_fit": "yes"}}, progress=False)
    with pytest.raises(ValueError, match="calibration.cross_fit_folds must be an integer >= 2"):
        run_phase("posttrain", {**xcfg, "calibration": {"cross_fit": True, "cross_fit_folds": 1}}, progress=False)
    with pytest.raises(ValueError, match="one target task"):
        run_phase("midtrain", {**runs["base"], "output": str(tmp_path / "mid"), "init": runs["pre"]["model"],
                               "data": MID_DATA[:2], "calibration": {"cross_fit": True}}, progress=False)


def test_selection_corrected_interval_reads_the_recorded_epochs(runs, tmp_path):
    """calibration.selection: the head and its predictions are the plain run's;
    the epochs recorded during training are the ones early stopping chose
    among; q is the validation scores' quantile at the bootstrap's level,
    recomputed here from the recorded epochs and the split's scaffolds; an
    interrupted run resumes its recordings."""
    import math

    import numpy as np

    from mpa_ase.checkpoint import read_parts, safe_load
    from mpa_ase.data import load_source
    from mpa_ase.training.selection import selection_level
    from mpa_ase.training.trainer import TRAIN_FORMAT
    from mpa_ase.validation.splits import murcko_scaffold

    cfg = {**runs["base"], "split": {"kind": "scaffold", "val": 0.15, "test": 0.2},
           "optim": {"epochs": 12, "patience": 4}, "output": str(tmp_path / "plain"), "init": runs["pre"]["model"],
           "target": TARGET, "head_init": "fresh"}
    plain = run_phase("posttrain", cfg, progress=False)["metrics"][TARGET["task"]]
    scfg = {**cfg, "output": str(tmp_path / "sel"), "calibration": {"selection": True}}
    post = run_phase("posttrain", scfg, progress=False)
    m = post["metrics"][TARGET["task"]]
    assert m["test_predictions"]["pred"] == plain["test_predictions"]["pred"]
    assert m["val_predictions"] == plain["val_predictions"] and m["std_scale"] == plain["std_scale"]
    sel, v = m["interval"]["selection"], m["val_predictions"]
    assert m["interval"]["level"] == 0.9 and sel["level"] >= 0.9
    # the recorded epochs: one per epoch run; the one the bootstrap's whole side picks is
    # early stopping's, and its record is the final head's validation prediction
    state = safe_load(tmp_path / "sel" / "checkpoint.pt", TRAIN_FORMAT)
    history, recorded = json.loads(state["history"]), json.loads(state["val_predictions"])
    assert len(recorded) == len(history) > sel["epoch"]
    best = min(range(len(history)), key=lambda e: (history[e]["val_metric"], e))
    assert sel["epoch"] == best
    assert np.allclose(recorded[best][TARGET["task"]]["pred"], v["pred"], rtol=1e-12, atol=0)
    # recomputed by hand from the recordings and the scaffolds of the validation side
    smiles = {s.identity: s.smiles for s in load_source(TARGET["data"])}
    groups = [murcko_scaffold(smiles[i]) for i in v["identity"]]
    preds = np.array([r[TARGET["task"]]["pred"] for r in recorded])
    stds = np.array([r[TARGET["task"]]["std"] for r in recorded])
    again = selection_level(v["y"], preds, stds, groups, 0.9, seed=runs["base"]["seed"] + 3)
    assert again == sel and sel["groups"] == len(set(groups)) >= 5
    vy, vpred, vstd = (np.array(v[k]) for k in ("y", "pred", "std"))
    floor = float(np.median(vstd))
    scores = np.sort(np.abs(vy - vpred) / (vstd + floor))
    k = min(len(scores), math.ceil((len(scores) + 1) * sel["level"]))
    assert m["interval"]["q"] == pytest.approx(scores[k - 1], rel=1e-12)
    assert m["interval"]["q"] >= plain["interval"]["q"]
    head = read_parts(post["model"])[2][m["head"]]
    assert float(head.interval_q) == pytest.approx(m["interval"]["q"]) and float(head.interval_level) == 0.9
    # interrupted after 3 epochs and resumed: the same recordings, the same level
    cut = {**scfg, "output": str(tmp_path / "cut")}
    assert run_phase("posttrain", cut, progress=False, stop_after=3)["finished"] is False
    resumed = run_phase("posttrain", cut, progress=False)["metrics"][TARGET["task"]]
    assert resumed["interval"] == m["interval"]
    # named errors: one calibration at a time; no epoch chosen, nothing to correct; typed
    with pytest.raises(ValueError, match="choose one"):
        run_phase("posttrain", {**scfg, "calibration": {"selection": True, "cross_fit": True}}, progress=False)
    with pytest.raises(ValueError, match="no epoch is chosen"):
        run_phase("posttrain", {**scfg, "output": str(tmp_path / "last"),
                                "optim": {"epochs": 3, "keep": "last"}}, progress=False)
    with pytest.raises(ValueError, match="calibration.selection must be true or false"):
        run_phase("posttrain", {**scfg, "calibration": {"selection": 1}}, progress=False)
    with pytest.raises(ValueError, match="one target task"):
        run_phase("midtrain", {**runs["base"], "output": str(tmp_path / "mid"), "init": runs["pre"]["model"],
                               "data": MID_DATA[:2], "calibration": {"selection": True}}, progress=False)


def test_calibration_part_too_small_as_drawn_falls_back_to_validation(caplog):
    """Whole scaffolds make the two parts uneven: a part under 10 compounds as
    drawn (not as expected from the fraction) leaves calibration on the whole
    validation side, with a warning naming the sizes."""
    import logging
    from types import SimpleNamespace

    from mpa_ase.training.common import hold_calibration_apart
    from mpa_ase.training.config import check_head_phase_config

    cfg = check_head_phase_config({"output": "unused", "calibration": {"fraction": 0.5}})
    record = {"kind": "scaffold"}
    mol = lambda i, smi: SimpleNamespace(identity=f"m{i}", smiles=smi, formula=None, value=float(i))  # noqa: E731
    lumpy = [mol(i, "c1ccccc1" + "C" * (i + 1)) for i in range(14)] + [mol(100 + i, "C1CC1" + "C" * i) for i in range(8)]
    with caplog.at_level(logging.WARNING, logger="mpa_ase"):
        val, cal = hold_calibration_apart(cfg, "t", lumpy, record)
    assert cal == [] and val == lumpy
    assert "gave 14 and 8" in caplog.text or "gave 8 and 14" in caplog.text
    even = [mol(i, ring + "C" * (i % 3 + 1)) for i, ring in enumerate(
        ["c1ccccc1", "C1CCCCC1", "c1ccncc1", "C1CCOC1", "c1ccsc1", "C1CC1", "C1CCNCC1", "c1ccoc1"] * 3)]
    val, cal = hold_calibration_apart(cfg, "t", even, record)
    assert len(val) >= 10 and len(cal) >= 10 and sorted(s.identity for s in val + cal) == sorted(s.identity for s in even)


def test_finish_ends_an_interrupted_run_with_its_best_weights(runs, tmp_path):
    base = {**runs["base"], "optim": {"epochs": 30, "patience": 100}, "init": runs["mid"]["model"], "target": TARGET,
            "output": str(tmp_path / "run")}
    with pytest.raises(CheckpointError, match="nothing to finish"):
        run_phase("posttrain", base, progress=False, finish=True)
    run_phase("posttrain", base, progress=False, stop_after=3)
    out = run_phase("posttrain", base, progress=False, finish=True)
    assert out["finished"] and len(out["history"]) == 3
    assert (tmp_path / "run" / "model.pt").exists()


def test_keep_last_trains_every_epoch_and_keeps_its_last_weights(runs, tmp_path):
    """optim.keep: last ignores patience and keeps the weights training ended
    with (the checkpoint's live module), not the best validation epoch's."""
    import numpy as np

    from mpa_ase.training.trainer import OptimConfig

    base = {**runs["base"], "init": runs["mid"]["model"], "target": TARGET}
    out = {}
    for keep in ("last", "best"):
        out[keep] = run_phase("posttrain", {**base, "output": str(tmp_path / keep),
                                            "optim": {"epochs": 14, "patience": 1, "keep": keep}}, progress=False)
    assert len(out["last"]["history"]) == 14
    metrics = [h["val_metric"] for h in out["last"]["history"]]
    assert int(np.argmin(metrics)) < 13  # the last epoch is not the best one: the two choices differ
    assert len(out["best"]["history"]) < 14  # patience 1 stops the usual run early
    for keep, which in (("last", "module"), ("best", "best_module")):
        ckpt = torch.load(tmp_path / keep / "checkpoint.pt", weights_only=False)[which]
        model = torch.load(out[keep]["model"], weights_only=True)
        for name, t in model["trunk"]["state"].items():
            assert torch.equal(t, ckpt["trunk." + name]), (keep, name)
        for head, entry in model["heads"].items():
            weights = [n for n in entry["state"] if n.endswith(("weight", "bias"))]  # not the calibration set later
            assert len(weights) > 10
            for name in weights:
                assert torch.equal(entry["state"][name], ckpt[f"heads.{head}.{name}"]), (keep, head, name)
    with pytest.raises(ValueError, match="optim.keep='final'"):
        OptimConfig.from_dict({"keep": "final"})


def test_final_head_trains_for_the_epochs_its_inner_folds_took(runs, tmp_path, monkeypatch):
    """head_init_cv.epochs: cv: the chosen candidate's fold fits stop early on
    validation; the final head trains for the median of their best epochs
    (rounded up) and keeps its last weights, so validation picks no weights.
    The choice is early stopping's; the head is the run that asks for that
    start, that many epochs and keep: last directly."""
    import numpy as np

    import mpa_ase.training.common as common

    histories = []
    fit = common.Trainer.fit

    def recording(self, *args, **kwargs):
        result = fit(self, *args, **kwargs)
        histories.append([h["val_metric"] for h in result["history"]])
        return result

    monkeypatch.setattr(common.Trainer, "fit", recording)
    cands = [{"head_init": "correlated", "head_init_top": 3, "trunk_lr_factor": 0.1}]
    base = {**runs["base"], "optim": {"epochs": 20, "patience": 3}, "init": runs["mid"]["model"], "target": TARGET}
    cfg = {**base, "output": str(tmp_path / "ecv"), "head_init": "cv",
           "head_init_cv": {"folds": 3, "candidates": cands, "epochs": "cv"}}
    post = run_phase("posttrain", cfg, progress=False)
    report = post["metrics"][TARGET["task"]]["head_start_cv"]
    assert len(histories) == 4  # three fold fits, then the final head
    assert report["best_epochs"] == [int(np.argmin(h)) + 1 for h in histories[:3]]
    final = int(np.ceil(np.median(report["best_epochs"])))
    assert report["final_epochs"] == final and len(post["history"]) == final == len(histories[3])
    print(f"fold best epochs {report['best_epochs']}, final head {final} epochs")
    same = run_phase("posttrain", {**base, "output": str(tmp_path / "same"), "head_init": "correlated",
                                   "head_init_top": 3,
                                   "optim": {**base["optim"], "epochs": final, "keep": "last", "trunk_lr": 2e-4}},
                     progress=False)
    assert _test_mae(same) == pytest.approx(_test_mae(post), rel=1e-9)
    # a stored choice without the fold epochs (a run before the option) is scored again, not misread
    path = tmp_path / "ecv" / "head_start_cv.json"
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in saved.items() if k != "best_epochs"}))
    again = run_phase("posttrain", {**cfg, "output": str(tmp_path / "ecv")}, progress=False, restart=True)
    assert again["metrics"][TARGET["task"]]["head_start_cv"]["best_epochs"] == report["best_epochs"]
    with pytest.raises(ValueError, match="head_init_cv.epochs='all'"):
        run_phase("posttrain", {**cfg, "head_init_cv": {"epochs": "all"}})
    with pytest.raises(ValueError, match="needs optim.keep: best"):
        run_phase("posttrain", {**cfg, "optim": {"keep": "last"}})
    with pytest.raises(ValueError, match="cannot be combined"):
        run_phase("posttrain", {**cfg, "output": str(tmp_path / "both"), "calibration": {"cross_fit": True}})


def test_nested_config_typos_are_named():
    from mpa_ase.training.common import read_config

    base = {"output": "runs/x"}
    with pytest.raises(ValueError, match="'hiden' \\(did you mean 'hidden'\\?\\)"):
        read_config({**base, "trunk": {"hiden": 64}})
    with pytest.raises(ValueError, match="'modle' \\(did you mean 'model'\\?\\)"):
        read_config({**base, "backbone": {"modle": "0.3.0"}})
    with pytest.raises(ValueError, match="'ouptut' \\(did you mean 'output'\\?\\)"):
        read_config({"output": "x", "ouptut": "y"})
    with pytest.raises(ValueError, match="data must be a list"):
        read_config({**base, "data": {"loader": "chemicals"}})
    with pytest.raises(ValueError, match="'tsak'"):
        read_config({**base, "target": {"data": {"loader": "chemicals"}, "tsak": "x"}})


def test_config_values_are_typed_and_checked_when_read():
    """Wrong types and ranges are named by key before any data is loaded; a
    valid config comes back unchanged (what the run folder and fingerprint record)."""
    from mpa_ase.training.common import read_config
    from mpa_ase.training.config import HeadPhaseConfig

    base = {"output": "runs/x"}
    for section, bad, match in (
            ("trunk", {"hidden": "128"}, "trunk.hidden must be an integer >= 1, got '128'"),
            ("trunk", {"dropout": 1.0}, "trunk.dropout must be a number in \\[0, 1\\)"),
            ("head", {"readout": "max"}, "head.readout must be one of"),
            ("head", {"members": 0}, "head.members must be an integer >= 1"),
            ("split", {"kind": "scafold"}, "split.kind must be one of"),
            ("split", {"val": 1.5}, "split.val must be a fraction"),
            ("split", {"val": 0.5, "test": 0.5}, "split.val \\+ split.test must be below 1"),
            ("split", {"kind": "redundancy", "threshold": 2}, "split.threshold must be a similarity"),
            ("optim", {"lr": "1e-3"}, "optim.lr must be a positive number, got '1e-3' \\(YAML reads 1e-3 as text"),
            ("optim", {"epochs": 0}, "optim.epochs must be an integer >= 1"),
            ("optim", {"trunk_lr": -1e-4}, "optim.trunk_lr must be a number >= 0 or null"),
            ("optim", {"batch_size": 8.5}, "optim.batch_size must be an integer"),
            ("optim", {"ema_decay": 1.0}, "optim.ema_decay must be a number in \\[0, 1\\) \\(0: off\\)"),
            ("optim", {"keep": "final"}, "optim.keep must be one of \\('best', 'last'\\), got 'final'"),
            ("backbone", {"name": ""}, "backbone.name must be a backbone name")):
        with pytest.raises(ValueError, match=match):
            read_config({**base, section: bad})
    with pytest.raises(ValueError, match="seed must be an integer"):
        read_config({**base, "seed": 1.5})
    for key, bad, match in (("head_init", "corelated", "head_init='corelated'; choose from"),
                            ("head_init_top", 0, "head_init_top=0"),
                            ("init", 3, "init must be a path or name, got 3"),
                            ("cache_dir", "", "cache_dir must be a path or name")):
        with pytest.raises(ValueError, match=match):
            read_config({**base, key: bad})
    with pytest.raises(ValueError, match="split.kind must be one of"):
        read_config({**base, "target": {"task": "t", "data": {"loader": "chemicals"}, "split": {"kind": "x"}}})
    good = {**base, "seed": 3, "trunk": {"hidden": 32}, "split": {"kind": "scaffold", "val": 0.15, "test": 0.25},
            "optim": {"lr": 1.0e-3, "epochs": 5}, "head": {"members": 2}}
    assert read_config(dict(good)) == good
    typed = HeadPhaseConfig.from_dict(good)
    assert (typed.trunk.hidden, typed.trunk.depth, typed.split.kind, typed.optim.lr, typed.optim.seed,
            typed.head.members, typed.head_init, typed.head_init_top, typed.init) == (
        32, 2, "scaffold", 1.0e-3, 3, 2, "correlated", 3, None)


def test_changed_code_does_not_reuse_old_checkpoints(runs, monkeypatch):
    """Rerunning into an old output folder after a code change is refused, not silently resumed."""
    from mpa_ase.training import trainer

    monkeypatch.setattr(trainer, "code_fingerprint", lambda: "another-code-version")
    cfg = {**runs["base"], "output": str(runs["root"] / "direct"), "init": runs["pre"]["model"], "target": TARGET}
    with pytest.raises(CheckpointError, match="another mpa-ase version"):
        run_phase("posttrain", cfg, progress=False)
