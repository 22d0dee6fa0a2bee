"""Data-parallel training under torchrun (gloo, 2 CPU processes): the same
steps as one process to float rounding, rank-0 files only, and a run killed
on one rank resumes to the same weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

pytestmark = pytest.mark.slow

ALEX = {"loader": "alexandria_pressure", "limit": 16, "pressures": [0, 50, 150], "max_atoms": 8, "zero_forces": True}


def _env() -> dict:
    # one thread per process: the comparison is about the arithmetic, not the machine
    return {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _command(config: Path, phase: str, nproc: int) -> list[str]:
    cli = ["-m", "mpa_ase.cli", "train", phase, "--config", str(config), "--quiet"]
    if nproc == 1:
        return [sys.executable, *cli]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *cli]


def _write(tmp: Path, name: str, cfg: dict) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**cfg, "output": str(tmp / name)}))
    return path


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _state(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _max_diff(a: dict, b: dict) -> float:
    return max(float((v - b[k]).abs().max()) for k, v in a.items() if v.is_floating_point())


def test_finetune_two_ranks_equal_one_and_survive_a_killed_rank(shared_data, tmp_path):
    cfg = {"data": [ALEX], "optim": {"epochs": 4, "batch_size": 8, "lr": 2e-4, "patience": 100}}
    one = _write(tmp_path, "one", cfg)
    subprocess.run(_command(one, "finetune", 1), check=True, env=_env(), capture_output=True)

    two = _write(tmp_path, "two", cfg)
    proc = subprocess.Popen(_command(two, "finetune", 2), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "two" / "checkpoint.pt"
    killed_at, deadline = None, time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        if ckpt.exists():
            try:
                epoch = _state(ckpt)["epoch"]
            except Exception:  # being replaced right now
                epoch = 0
            ranks = _children(proc.pid)
            if epoch >= 1 and len(ranks) == 2:
                os.kill(ranks[1], signal.SIGKILL)  # rank 1 only; torchrun then stops the others
                killed_at = epoch
                break
        time.sleep(0.05)
    assert proc.wait(timeout=120) != 0 or killed_at is None
    assert killed_at is not None and killed_at < 4, "the 2-process run ended before it could be killed"
    assert not (tmp_path / "two" / "model.pt").exists()
    subprocess.run(_command(two, "finetune", 2), check=True, env=_env(), capture_output=True)

    a, b = _state(tmp_path / "one" / "checkpoint.pt"), _state(tmp_path / "two" / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 4
    from mpa_ase.checkpoint import load_model

    base = {f"backbone.{k}": v for k, v in load_model("default", backbone="chgnet").backbone.state_dict().items()}
    moved = max(float((a["module"][k] - v).abs().max()) for k, v in base.items() if v.is_floating_point())
    diff = _max_diff(a["module"], b["module"])
    # float32 sums in another order: 1e-5-level differences, against weight changes of ~1e-3
    assert moved > 1e-3 and diff < 0.05 * moved, (diff, moved)
    ha, hb = json.loads(a["history"]), json.loads(b["history"])
    for x, y in zip(ha[1:], hb[1:]):
        assert y["train_loss"] == pytest.approx(x["train_loss"], rel=1e-4)
        assert y["val_metric"] == pytest.approx(x["val_metric"], rel=1e-4)
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["processes"] == 2
    assert a["fingerprint"] == b["fingerprint"]  # the process count is not part of the run's identity


@pytest.mark.skipif(not __import__("importlib").util.find_spec("chemicals"), reason="needs mpa-ase[train]")
def test_head_training_two_ranks_equal_one(tmp_path):
    """pretrain (no data: a fresh trunk) -> posttrain on a real experimental property,
    with 1 and 2 processes; the embedding cache of the 2-process run is filled in shards."""
    base = {"seed": 0, "split": {"kind": "random", "val": 0.15, "test": 0.25},
            "optim": {"epochs": 5, "patience": 100, "batch_size": 32}}
    pre = _write(tmp_path, "pre", {**base, "cache_dir": str(tmp_path / "cache1")})
    subprocess.run(_command(pre, "pretrain", 1), check=True, env=_env(), capture_output=True)
    target = {"data": {"loader": "chemicals", "property": "flash_point", "sources": ["Serat DIPPR (2017)"],
                       "n_conformers": 1, "limit": 150}, "task": "flash_point@Serat DIPPR (2017)"}
    post = {**base, "init": str(tmp_path / "pre" / "model.pt"), "target": target}
    one = _write(tmp_path, "one", {**post, "cache_dir": str(tmp_path / "cache1")})
    subprocess.run(_command(one, "posttrain", 1), check=True, env=_env(), capture_output=True)
    two = _write(tmp_path, "two", {**post, "cache_dir": str(tmp_path / "cache2")})
    run = subprocess.run(_command(two, "posttrain", 2), env=_env(), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]

    c1 = torch.load(next((tmp_path / "cache1").glob("*.pt")), weights_only=True)["store"]
    c2 = torch.load(next((tmp_path / "cache2").glob("*.pt")), weights_only=True)["store"]
    assert set(c1) == set(c2) and len(c1) >= 100
    assert max(float((c1[k][1] - c2[k][1]).abs().max()) for k in c1) < 1e-4
    a, b = _state(tmp_path / "one" / "checkpoint.pt"), _state(tmp_path / "two" / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 5
    assert _max_diff(a["module"], b["module"]) < 1e-3
    ma = json.loads((tmp_path / "one" / "metrics.json").read_text())[target["task"]]
    mb = json.loads((tmp_path / "two" / "metrics.json").read_text())[target["task"]]
    assert ma["test_predictions"]["identity"] == mb["test_predictions"]["identity"]
    assert mb["test"]["mae"] == pytest.approx(ma["test"]["mae"], rel=1e-3)
    assert (tmp_path / "two" / "splits.json").read_text() == (tmp_path / "one" / "splits.json").read_text()


def test_nproc_launches_a_command_the_cli_parses(monkeypatch, tmp_path):
    """``mpa --debug train ... --nproc 2`` re-runs itself under torchrun: the
    command must parse (``--debug`` belongs before the subcommand)."""
    from mpa_ase import cli

    seen = {}

    def fake_run(cmd, env):
        seen["cmd"], seen["env"] = cmd, env
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(subprocess, "run", fake_run)
    assert cli.main(["--debug", "train", "finetune", "--config", "c.yaml", "--nproc", "2", "--quiet"]) == 0
    cmd = seen["cmd"]
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"] and "--nproc_per_node=2" in cmd
    args = cli.build_parser().parse_args(cmd[cmd.index("mpa_ase.cli") + 1:])
    assert args.debug and args.quiet and args.phase == "finetune" and args.nproc == 1
    with pytest.raises(ValueError, match="nproc"):
        cli.cmd_train(cli.build_parser().parse_args(["train", "finetune", "--config", "c.yaml", "--nproc", "0"]))
