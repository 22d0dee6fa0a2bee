"""Screening on a local Dask cluster (2 worker processes): the same table as a
single-process screen, bad files listed, a worker SIGKILLed mid-run loses
nothing and duplicates nothing, and a killed screen resumes from its parts."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import write

pd = pytest.importorskip("pandas")
distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.slow


def _files(folder):
    rng = np.random.default_rng(0)
    files = []
    for k in range(24):
        base = [bulk("Si", "diamond", 5.43), bulk("NaCl", "rocksalt", 5.64), bulk("Cu", "fcc", 3.61),
                bulk("MgO", "rocksalt", 4.21)][k % 4].repeat((1, 1, 1 + k % 2))
        base.rattle(0.03, seed=int(rng.integers(1 << 30)))
        path = folder / f"s{k:02d}.extxyz"
        write(path, [base, base.copy()] if k % 5 == 0 else base)  # some files hold two structures
        files.append(str(path))
    (folder / "garbage.cif").write_text("data_x\n_this is not a cif\n loop_ ]]\n")
    write(folder / "overlap.xyz", Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.01]]))
    return files[:10] + [str(folder / "garbage.cif")] + files[10:] + [str(folder / "overlap.xyz")]


@pytest.fixture(scope="module")
def client():
    from mpa_ase.workflows.screen_dask import local_client

    c = local_client(2)
    yield c
    c.close()
    c.cluster.close()


def _table(path):
    return pd.read_parquet(path) if str(path).endswith(".parquet") else pd.read_csv(path)


def test_cluster_screen_equals_one_process_and_survives_a_killed_worker(client, chgnet_calc, tmp_path):
    from mpa_ase import MPACalculator
    from mpa_ase.workflows import screen
    from mpa_ase.workflows.screen import errors_path
    from mpa_ase.workflows.screen_dask import parts_dir

    sources = _files(tmp_path)
    calc = MPACalculator()  # the default model: heads in the table too
    ref = screen(sources, calc, tmp_path / "ref.csv", batch_size=4, progress=False)

    out = tmp_path / "cluster.parquet"
    pids = client.run(os.getpid)
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("out", screen(
        sources, calc, out, client=client, shard_size=2, batch_size=4, progress=False)))
    worker.start()
    killed = None
    deadline = time.time() + 300
    while worker.is_alive() and time.time() < deadline:
        if parts_dir(out).exists() and any(parts_dir(out).glob("part-*.errors.parquet")):
            victim = sorted(pids)[1]
            os.kill(pids[victim], signal.SIGKILL)
            killed = victim
            break
        time.sleep(0.02)
    worker.join(timeout=600)
    assert killed is not None and result.get("out") == out
    n_parts = len(list(parts_dir(out).glob("part-??????.parquet")))
    assert n_parts == len(range(0, len(sources), 2))

    a, b = _table(ref), _table(out)
    assert list(b.columns) == list(a.columns) and "boiling_point_in_domain" in b.columns
    assert not b["id"].duplicated().any()
    assert list(b["id"]) == list(a["id"]) and len(b) == 24 + 5  # 5 files hold two structures
    # other batch compositions change float32 BLAS blocking: 1e-5-relative differences in the heads
    for col in a.columns[2:]:
        np.testing.assert_allclose(b[col].to_numpy(float), a[col].to_numpy(float), rtol=1e-4, atol=1e-5)
    ea, eb = _table(errors_path(ref)), _table(errors_path(out))
    assert sorted(eb["id"]) == sorted(ea["id"]) and len(eb) == 2
    assert any("cannot be read" in r for r in eb["reason"]) and any("too close" in r or "overlap" in r.lower()
                                                                   for r in eb["reason"])

    # a screen killed after some shards: parts kept, the rest computed, the same table
    for p in sorted(parts_dir(out).glob("part-00000[3-9]*")):
        p.unlink()
    again = screen(sources, calc, out, client=client, shard_size=2, batch_size=4, progress=False)
    pd.testing.assert_frame_equal(_table(again), b)
    with pytest.raises(ValueError, match="other inputs"):
        screen(sources[:-1], calc, out, client=client, shard_size=2, progress=False)
    with pytest.raises(TypeError, match="MPACalculator or a zero-argument function"):
        screen(sources, object(), tmp_path / "x.csv", client=client)


def test_cli_screen_on_a_local_cluster(tmp_path, capsys):
    from mpa_ase.cli import main
    from mpa_ase.workflows.screen import errors_path

    sources = _files(tmp_path)[:6] + [str(tmp_path / "garbage.cif")]
    out = tmp_path / "cli.csv"
    assert main(["screen", *sources, "--out", str(out), "--workers", "1", "--shard-size", "3", "--quiet",
                 "--backbone", "chgnet", "--device", "cpu"]) == 0
    table = _table(out)
    assert len(table) == 6 + 2 and not table["id"].duplicated().any()  # s00 and s05 hold two structures
    assert list(_table(errors_path(out))["id"]) == [f"{tmp_path / 'garbage.cif'}@0"]
    assert "written" in capsys.readouterr().out
