"""Bad and edge input across the public API: every case either raises an
error that names the problem, or returns the right answer (checked against
an independent reference). A silent wrong number or an unhelpful crash
fails its case.

Each case is (id, function, expected): ``expected`` is ``(exception type,
regex)`` for a refusal, or a callable that checks the returned value.
"""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError

from mpa_ase.errors import BackboneNotFoundError, CheckpointError, MPAInputError, OverlappingAtomsError


@pytest.fixture(scope="module")
def calc():
    from mpa_ase import MPACalculator

    return MPACalculator(device="cpu")


def si():
    return bulk("Si", "diamond", 5.43)


def nacl():
    return bulk("NaCl", "rocksalt", 5.64)


def energy(calc, atoms):
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.get_potential_energy()


def results(calc, atoms, prop="energy"):
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.calc.get_property(prop, atoms)


def with_positions(atoms, row, value):
    atoms = atoms.copy()
    p = atoms.positions
    p[row] = value
    atoms.positions = p
    return atoms


def close_to(reference_fn, atol=1e-4):
    """A check: the value equals an independent reference within ``atol``."""
    def check(value, ctx):
        ref = reference_fn(ctx)
        np.testing.assert_allclose(value, ref, atol=atol, rtol=1e-5)
    return check


# -------------------------------------------------------------- the cases
def calculator_cases():
    from mpa_ase import MPACalculator

    return [
        ("calc-nan-position", lambda c, t: energy(c, with_positions(si(), 0, [np.nan, 0, 0])),
         (MPAInputError, "(?i)nan|finite")),
        ("calc-inf-position", lambda c, t: energy(c, with_positions(si(), 1, [np.inf, 0, 0])),
         (MPAInputError, "(?i)inf|finite")),
        ("calc-overlapping-atoms", lambda c, t: energy(c, with_positions(si(), 1, si().positions[0] + 0.01)),
         (OverlappingAtomsError, "apart")),
        ("calc-molecule-overlap", lambda c, t: energy(c, Atoms("H2", positions=[[0, 0, 0], [0, 0, 1e-4]])),
         (OverlappingAtomsError, "apart")),
        ("calc-pbc-without-cell", lambda c, t: energy(c, Atoms("Si2", positions=[[0, 0, 0], [1.3, 1.3, 1.3]],
                                                               pbc=True)),
         (MPAInputError, "(?i)cell")),
        ("calc-pbc-flat-cell", lambda c, t: energy(c, Atoms("Si", cell=[[3, 0, 0], [0, 3, 0], [0, 0, 0]],
                                                            pbc=True)),
         (MPAInputError, "(?i)cell")),
        ("calc-empty-atoms", lambda c, t: energy(c, Atoms()), (MPAInputError, "(?i)empty")),
        ("calc-element-zero", lambda c, t: energy(c, Atoms("X", positions=[[0, 0, 0]])),
         (MPAInputError, "(?i)atomic number|element")),
        ("calc-unknown-element", lambda c, t: energy(c, Atoms("Og", positions=[[0, 0, 0]], cell=[5, 5, 5],
                                                              pbc=True)),
         (MPAInputError, "(?i)Og|element")),
        ("calc-wrong-property", lambda c, t: results(c, si(), "boiling_pt"),
         (PropertyNotImplementedError, "boiling_pt")),
        ("calc-stress-of-molecule", lambda c, t: results(c, molecule("H2O"), "stress"),
         (PropertyNotImplementedError, "(?i)stress")),
        ("calc-float16", lambda c, t: MPACalculator(dtype="float16"), (ValueError, "(?i)float16")),
        ("calc-bad-dtype", lambda c, t: MPACalculator(dtype="float128"), (ValueError, "float128")),
        ("calc-bad-device", lambda c, t: MPACalculator(device="tpu"), ((ValueError, RuntimeError), "tpu")),
        ("calc-missing-model-file", lambda c, t: MPACalculator(model=str(t / "absent.pt")),
         (CheckpointError, "does not exist")),
        ("calc-damaged-model-file", lambda c, t: MPACalculator(model=_damaged(t)),
         (CheckpointError, "(?i)corrupt|truncat|damaged")),
        ("calc-text-as-model-file", lambda c, t: MPACalculator(model=_text_file(t)),
         (CheckpointError, "(?i)not an mpa-ase|corrupt|cannot")),
        ("calc-bad-neighbor-backend", lambda c, t: MPACalculator(neighbor_backend="bogus"), (ValueError, "bogus")),
        ("calc-negative-skin", lambda c, t: MPACalculator(skin=-1.0), (ValueError, "(?i)skin")),
        ("calc-unknown-backbone", lambda c, t: MPACalculator(backbone="nonexistent"),
         (BackboneNotFoundError, "nonexistent")),
        ("calc-set-unknown", lambda c, t: c.set(cutof=5.0), (ValueError, "cutof")),
        ("calc-batch-empty", lambda c, t: c.calculate_batch([]), lambda v, ctx: _assert(v == [], "empty batch")),
        ("calc-batch-not-atoms", lambda c, t: c.calculate_batch(["Si"]), ((TypeError, MPAInputError), "(?i)atoms")),
        # right answers on edge input, against an independent reference
        ("calc-translated-1e5", lambda c, t: energy(c, _shifted(molecule("CH3CH2OH"), 1e5)),
         close_to(lambda ctx: energy(ctx, molecule("CH3CH2OH")), atol=2e-4)),
        ("calc-unwrapped-positions", lambda c, t: energy(c, _unwrapped(nacl())),
         close_to(lambda ctx: energy(ctx, nacl()))),
        ("calc-left-handed-cell", lambda c, t: energy(c, _left_handed(si())), close_to(lambda ctx: energy(ctx, si()))),
        ("calc-supercell-extensive", lambda c, t: energy(c, si().repeat((2, 1, 1))),
         close_to(lambda ctx: 2 * energy(ctx, si()), atol=2e-4)),
        ("calc-single-atom-vacuum-forces", lambda c, t: results(c, Atoms("Cu", positions=[[1, 2, 3]]), "forces"),
         close_to(lambda ctx: np.zeros((1, 3)))),
        ("calc-mixed-pbc-batch", lambda c, t: [r["energy"] for r in c.calculate_batch([si(), molecule("H2O")], properties=["energy"])],
         close_to(lambda ctx: [energy(ctx, si()), energy(ctx, molecule("H2O"))], atol=2e-4)),
        ("calc-bounded-head-nonnegative", lambda c, t: _quiet(lambda: results(c, Atoms("He", positions=[[0, 0, 0]]),
                                                                                "flash_point")),
         lambda v, ctx: _assert(v >= 0, f"flash point {v} K < 0")),
        ("calc-head-out-of-domain-flagged", lambda c, t: _quiet(lambda: results(c, bulk("Cu"), "boiling_point_in_domain")),
         lambda v, ctx: _assert(v == 0, "boiling point of Cu metal not flagged out of domain")),
    ]


def neighbor_cases():
    from mpa_ase.neighbors import neighbor_list

    cell = np.eye(3) * 4.0
    pos = np.array([[0.0, 0, 0], [1.5, 1.5, 1.5]])
    pbc = np.array([True, True, True])
    return [
        ("nl-negative-cutoff", lambda c, t: neighbor_list(pos, cell, pbc, -1.0), (ValueError, "(?i)cutoff")),
        ("nl-nan-cutoff", lambda c, t: neighbor_list(pos, cell, pbc, float("nan")), (ValueError, "(?i)cutoff")),
        ("nl-zero-cutoff", lambda c, t: neighbor_list(pos, cell, pbc, 0.0), (ValueError, "(?i)cutoff")),
        ("nl-positions-2d", lambda c, t: neighbor_list(pos[:, :2], cell, pbc, 3.0), (ValueError, "(?i)positions")),
        ("nl-cell-shape", lambda c, t: neighbor_list(pos, np.eye(2), pbc, 3.0), (ValueError, "(?i)cell")),
        ("nl-pbc-length", lambda c, t: neighbor_list(pos, cell, [True, True], 3.0), (ValueError, "(?i)pbc")),
        ("nl-bad-backend", lambda c, t: neighbor_list(pos, cell, pbc, 3.0, backend="fast"), (ValueError, "fast")),
        ("nl-nan-positions", lambda c, t: neighbor_list(np.array([[np.nan, 0, 0]]), cell, pbc, 3.0),
         (ValueError, "(?i)nan|finite")),
        ("nl-singular-periodic-cell", lambda c, t: neighbor_list(pos, np.diag([4.0, 4.0, 0.0]), pbc, 3.0),
         (ValueError, "(?i)cell")),
        ("nl-cutoff-beyond-cell", lambda c, t: _pairs(neighbor_list(pos, cell, pbc, 9.0)),
         lambda v, ctx: _assert(v == _ase_pairs(pos, cell, pbc, 9.0), "pair count differs from ASE")),
        ("nl-single-atom-self-images", lambda c, t: _pairs(neighbor_list(pos[:1], cell, pbc, 4.5)),
         lambda v, ctx: _assert(v == _ase_pairs(pos[:1], cell, pbc, 4.5), "self-image pairs differ from ASE")),
        ("nl-integer-positions", lambda c, t: _pairs(neighbor_list(np.array([[0, 0, 0], [1, 1, 1]]), cell, pbc, 3.0)),
         lambda v, ctx: _assert(v == _ase_pairs(np.array([[0.0, 0, 0], [1, 1, 1]]), cell, pbc, 3.0), "int positions")),
        ("nl-skewed-cell", lambda c, t: _pairs(neighbor_list(pos, _skewed(), pbc, 3.5)),
         lambda v, ctx: _assert(v == _ase_pairs(pos, _skewed(), pbc, 3.5), "skewed cell differs from ASE")),
        ("nl-mixed-pbc", lambda c, t: _pairs(neighbor_list(pos, cell, [True, False, True], 3.5)),
         lambda v, ctx: _assert(v == _ase_pairs(pos, cell, [True, False, True], 3.5), "mixed pbc differs")),
    ]


def workflow_cases():
    from mpa_ase.workflows import elastic, eos, phonons, relax, relax_many, run_md, run_md_many, screen
    from mpa_ase.workflows.screen_dask import calculator_spec

    return [
        ("phonons-zero-displacement", lambda c, t: phonons(si(), c, displacement=0.0),
         (ValueError, "(?i)displacement")),
        ("phonons-negative-displacement", lambda c, t: phonons(si(), c, displacement=-0.01),
         (ValueError, "(?i)displacement")),
        ("phonons-zero-supercell", lambda c, t: phonons(si(), c, supercell=(0, 2, 2)), (ValueError, "(?i)supercell")),
        ("phonons-molecule", lambda c, t: phonons(molecule("H2O"), c), (ValueError, "(?i)periodic|cell")),
        ("relax-negative-fmax", lambda c, t: relax(si(), c, fmax=-0.1), (ValueError, "fmax")),
        ("relax-nan-fmax", lambda c, t: relax(si(), c, fmax=float("nan")), (ValueError, "fmax")),
        ("relax-negative-steps", lambda c, t: relax(si(), c, steps=-1), (ValueError, "steps")),
        ("relax-unknown-optimizer", lambda c, t: relax(si(), c, optimizer="SuperFast"),
         (ValueError, "SuperFast")),
        ("md-zero-timestep", lambda c, t: run_md(si(), c, timestep_fs=0.0, steps=2), (ValueError, "timestep")),
        ("md-negative-timestep", lambda c, t: run_md(si(), c, timestep_fs=-1.0, steps=2), (ValueError, "timestep")),
        ("md-negative-temperature", lambda c, t: run_md(si(), c, ensemble="langevin", temperature_K=-5, steps=2),
         (ValueError, "temperature")),
        ("md-unknown-ensemble", lambda c, t: run_md(si(), c, ensemble="npx", steps=2), (ValueError, "npx")),
        ("md-npt-molecule", lambda c, t: run_md(molecule("H2O"), c, ensemble="npt", steps=2),
         (ValueError, "(?i)periodic|cell|npt")),
        ("md-many-negative-friction", lambda c, t: run_md_many([si()], c, ensemble="langevin", friction=-1.0,
                                                                steps=2),
         (ValueError, "friction")),
        ("eos-too-few-points", lambda c, t: eos(si(), c, n_points=3), (ValueError, "n_points")),
        ("eos-zero-strain", lambda c, t: eos(si(), c, max_strain=0.0), (ValueError, "max_strain")),
        ("eos-molecule", lambda c, t: eos(molecule("H2O"), c), (ValueError, "(?i)periodic|cell")),
        ("elastic-molecule", lambda c, t: elastic(molecule("H2O"), c), (ValueError, "periodic")),
        ("elastic-odd-strains", lambda c, t: elastic(si(), c, n_strains=3), (ValueError, "n_strains")),
        ("elastic-zero-strain", lambda c, t: elastic(si(), c, max_strain=0.0), (ValueError, "max_strain")),
        ("relax-many-zero-max-atoms", lambda c, t: relax_many([si()], c, max_atoms=0), (ValueError, "max_atoms")),
        ("relax-many-empty", lambda c, t: relax_many([], c), lambda v, ctx: _assert(v == [], "empty input")),
        ("screen-missing-file", lambda c, t: screen([str(t / "none.cif")], c, t / "o.csv", progress=False),
         (FileNotFoundError, "none.cif")),
        ("screen-zero-batch", lambda c, t: screen([_cif(t)], c, t / "o.csv", batch_size=0, progress=False),
         (ValueError, "batch_size")),
        ("screen-zero-shard", lambda c, t: screen([_cif(t)], c, t / "o.csv", shard_size=0, progress=False),
         (ValueError, "shard_size")),
        ("screen-lambda-on-cluster", lambda c, t: calculator_spec(lambda: c),
         (ValueError, "(?i)module-level function|cannot be sent")),
        ("screen-object-on-cluster", lambda c, t: calculator_spec(object()), (TypeError, "MPACalculator")),
        ("screen-garbage-file-reported", lambda c, t: _screen_errors(c, t),
         lambda v, ctx: _assert(len(v) == 1 and "cannot be read" in v[0], f"errors table {v}")),
    ]


def cli_cases():
    return [
        ("cli-missing-file", ["predict", "absent.cif"], "(?i)absent.cif"),
        ("cli-bad-smiles", ["predict", "--smiles", "C1CC(((("], "(?i)smiles"),
        ("cli-missing-config", ["train", "posttrain", "--config", "absent.yaml"], "absent.yaml"),
        ("cli-nproc-zero", ["train", "posttrain", "--config", "absent.yaml", "--nproc", "0"], "nproc"),
        ("cli-workers-and-scheduler", ["screen", "{cif}", "--out", "{tmp}/o.csv", "--workers", "1", "--scheduler",
                                       "tcp://x:1"], "not both"),
        ("cli-workers-zero", ["screen", "{cif}", "--out", "{tmp}/o.csv", "--workers", "0"], "workers"),
        ("cli-relax-negative-fmax", ["relax", "{cif}", "--fmax", "-1"], "fmax"),
        ("cli-md-zero-timestep", ["md", "{cif}", "--timestep", "0", "--steps", "2"], "timestep"),
        ("cli-phonons-molecule", ["phonons", "{xyz}"], "(?i)periodic|cell"),
        ("cli-unknown-backbone", ["predict", "{cif}", "--backbone", "nonexistent"], "nonexistent"),
        ("cli-bad-model-file", ["predict", "{cif}", "--model", "{txt}"], "(?i)not an mpa-ase|corrupt|cannot"),
        ("cli-validate-without-input", ["validate"], "(?i)--model|--predictions"),
    ]


def training_cases():
    from mpa_ase.training import run_phase
    from mpa_ase.training.finetune import read_finetune_config

    alex = {"loader": "alexandria_pressure", "limit": 2}
    return [
        ("train-unknown-phase", lambda c, t: run_phase("pretrian", {"output": str(t / "x")}), (ValueError, "pretrian")),
        ("train-data-mapping", lambda c, t: run_phase("pretrain", {"output": str(t / "x"),
                                                                   "data": {"loader": "chemicals"}}),
         (ValueError, "(?i)list")),
        ("train-nested-typo", lambda c, t: run_phase("pretrain", {"output": str(t / "x"), "trunk": {"hiden": 32}}),
         (ValueError, "hiden.*hidden")),
        ("train-top-level-typo", lambda c, t: run_phase("pretrain", {"output": str(t / "x"), "optimm": {}}),
         (ValueError, "optimm")),
        ("train-optim-typo", lambda c, t: run_phase("pretrain", {"output": str(t / "x"), "optim": {"epoch": 3}}),
         (ValueError, "epoch")),
        ("train-missing-output", lambda c, t: run_phase("pretrain", {}), (ValueError, "output")),
        ("train-missing-init-file", lambda c, t: run_phase("posttrain", {"output": str(t / "x"),
                                                                         "init": str(t / "absent.pt"),
                                                                         "target": {"data": alex, "task": "x"}}),
         ((CheckpointError, FileNotFoundError, ValueError), "absent.pt")),
        ("train-unknown-loader", lambda c, t: run_phase("pretrain", {"output": str(t / "x"),
                                                                     "data": [{"loader": "chemical"}]}),
         (ValueError, "chemical")),
        ("finetune-val-fraction", lambda c, t: read_finetune_config({"output": "x", "data": [alex],
                                                                     "split": {"val": 1.5}}),
         (ValueError, "split.val")),
        ("finetune-negative-lr", lambda c, t: read_finetune_config({"output": "x", "data": [alex],
                                                                    "optim": {"lr": -1e-3}}),
         (ValueError, "lr")),
        ("finetune-last-zero", lambda c, t: read_finetune_config({"output": "x", "data": [alex],
                                                                  "trainable": "last 0"}),
         (ValueError, "last N")),
        ("finetune-negative-loss-weight", lambda c, t: read_finetune_config({"output": "x", "data": [alex],
                                                                             "loss": {"forces": -1}}),
         (ValueError, "loss.forces")),
        ("finetune-both-backbone-and-init", lambda c, t: read_finetune_config(
            {"output": "x", "data": [alex], "backbone": {"name": "chgnet"}, "init": "m.pt"}),
         (ValueError, "either backbone")),
        ("finetune-empty-data", lambda c, t: read_finetune_config({"output": "x", "data": []}),
         (ValueError, "(?i)data")),
        ("finetune-bad-energy-reference", lambda c, t: read_finetune_config(
            {"output": "x", "data": [alex], "energy_reference": "fit"}), (ValueError, "energy_reference")),
        ("train-damaged-checkpoint", lambda c, t: _damaged_checkpoint_resume(t), (CheckpointError, "(?i)corrupt|trunc")),
    ]


# ------------------------------------------------------------- helpers
def _assert(ok, message):
    assert ok, message
    return True


def _quiet(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


def _shifted(atoms, amount):
    atoms = atoms.copy()
    atoms.positions += amount
    return atoms


def _unwrapped(atoms):
    atoms = atoms.copy()
    atoms.positions += atoms.cell.array[0] * 3 - atoms.cell.array[2] * 2
    return atoms


def _left_handed(atoms):
    atoms = atoms.copy()
    cell = atoms.cell.array.copy()
    atoms.set_cell(cell[[1, 0, 2]], scale_atoms=False)
    return atoms


def _skewed():
    return np.array([[4.0, 0, 0], [3.6, 1.2, 0], [0.5, 0.4, 4.0]])


def _pairs(result):
    return len(result[0])


def _ase_pairs(pos, cell, pbc, cutoff):
    from ase.neighborlist import neighbor_list as ase_nl

    atoms = Atoms(numbers=[14] * len(pos), positions=pos, cell=cell, pbc=pbc)
    return len(ase_nl("i", atoms, cutoff, self_interaction=False))


def _damaged(tmp):
    from mpa_ase.checkpoint import DEFAULT_MODEL

    data = DEFAULT_MODEL.read_bytes()
    path = tmp / "damaged.pt"
    path.write_bytes(data[: len(data) // 3])
    return str(path)


def _text_file(tmp):
    path = tmp / "notes.pt"
    path.write_text("this is not a model\n")
    return str(path)


def _cif(tmp):
    from ase.io import write

    path = tmp / "si.cif"
    write(path, si())
    return str(path)


def _xyz(tmp):
    from ase.io import write

    path = tmp / "water.xyz"
    write(path, molecule("H2O"))
    return str(path)


def _screen_errors(calc, tmp):
    from mpa_ase.workflows import screen
    from mpa_ase.workflows.screen import errors_path

    bad = tmp / "garbage.cif"
    bad.write_text("data_x\n_this is not a cif\n loop_ ]]\n")
    out = screen([_cif(tmp), str(bad)], calc, tmp / "screen.csv", progress=False)
    import csv

    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 1
    return [r["reason"] for r in csv.DictReader(open(errors_path(out)))]


def _damaged_checkpoint_resume(tmp):
    from mpa_ase.checkpoint import safe_load
    from mpa_ase.training.trainer import TRAIN_FORMAT

    path = tmp / "checkpoint.pt"
    path.write_bytes(b"PK\x03\x04 truncated")
    return safe_load(path, TRAIN_FORMAT)


# ---------------------------------------------------------------- tests
def _run(case, calc, tmp_path):
    name, fn, expected = case
    if isinstance(expected, tuple):
        exc, pattern = expected
        with pytest.raises(exc) as info:
            fn(calc, tmp_path)
        assert re.search(pattern, str(info.value)), f"{name}: {type(info.value).__name__}: {info.value}"
        assert len(str(info.value)) < 2000
    else:
        value = fn(calc, tmp_path)
        expected(value, calc)


CASES = {"calculator": calculator_cases, "neighbors": neighbor_cases, "workflows": workflow_cases,
         "training": training_cases}


def _ids(group):
    return [c[0] for c in CASES[group]()]


@pytest.mark.parametrize("group,index", [(g, k) for g in CASES for k in range(len(CASES[g]()))],
                         ids=[f"{g}:{n}" for g in CASES for n in _ids(g)])
def test_bad_input(group, index, calc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run(CASES[group]()[index], calc, tmp_path)


@pytest.mark.parametrize("name,argv,pattern", cli_cases(), ids=[c[0] for c in cli_cases()])
def test_cli_bad_input_one_clear_line(name, argv, pattern, tmp_path, monkeypatch, capsys):
    from mpa_ase.cli import main

    monkeypatch.chdir(tmp_path)
    files = {"cif": _cif(tmp_path), "xyz": _xyz(tmp_path), "txt": _text_file(tmp_path), "tmp": str(tmp_path)}
    argv = [a.format(**files) for a in argv]
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse refusals
        rc = exc.code
    err = capsys.readouterr().err.strip()
    assert rc not in (0, None), f"{name}: exit status 0"
    assert re.search(pattern, err), f"{name}: {err}"
    assert "Traceback" not in err and len(err.splitlines()) <= 3, err


def test_suite_size():
    n = sum(len(f()) for f in CASES.values()) + len(cli_cases())
    assert n >= 75, n
    print(json.dumps({"cases": n}))
