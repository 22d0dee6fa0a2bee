"""Fine-tuning the potential itself: a backbone trained on DFT energies, forces
and stress through the generic ``AtomsGraph`` + autograd path, so the same
loop serves every backbone plugin (CHGNet, MACE, MatGL, ...).

Loss: Huber on energy per atom (eV/atom), forces (eV/Å) and stress (eV/Å³),
each weighted (``loss``), with structures lacking a label simply not
contributing to that term. Before training, a per-element energy reference
is refitted by least squares on the training energies (DFT settings differ
between data sets; ``energy_reference: keep`` skips it). ``trainable``:
``full``, ``frozen`` (only the energy reference), or ``last N`` (the last N of
the backbone's ``blocks()``).

Forgetting guard (``replay``): structures labelled by the *original* model
(energy, forces, stress), mixed into every epoch with weight
``replay.weight``; the fine-tuned model is pulled toward the original
where the new data say nothing (distillation).

Like the head phases: one checkpoint per epoch written atomically by rank 0,
data order a function of (seed, epoch) only, so a killed run resumes to the
same weights; under ``torchrun`` every rank takes its share of each minibatch
and the gradients are summed (:mod:`mpa_ase.parallel`); early
stopping on the validation split (whole groups: one material at all its
pressures stays on one side); ``model.pt`` carries the backbone weights with
provenance, loadable by ``MPACalculator(model=path)``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mpa_ase.checkpoint import FORMAT, atomic_save, load_model, model_file, model_from_file, safe_load
from mpa_ase.data.dft import LabelledStructure, is_held_out, load_structures
from mpa_ase.errors import CheckpointError
from mpa_ase.graph import AtomsGraph, SystemNeighbors
from mpa_ase.neighbors import neighbor_list
from mpa_ase.neighbors.geometry import as_cell, as_pbc
from mpa_ase import parallel as dist
from mpa_ase.training.config import check_ema_decay, check_keys, load_yaml_or_dict
from mpa_ase.training.rng import seeded
from mpa_ase.training.trainer import (WeightAverage, code_fingerprint, load_training_state, resume_state,
                                     save_training_state)

log = logging.getLogger(__name__)

FINETUNE_FORMAT = "mpa-ase-finetune/1"
KNOWN_KEYS = {"phase", "output", "backbone", "init", "data", "replay", "loss", "trainable", "energy_reference",
              "split", "optim", "seed", "device", "dtype"}
_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


@dataclass
class LossWeights:
    energy: float = 1.0  # per (eV/atom)
    forces: float = 1.0  # per (eV/Å)
    stress: float = 10.0  # per (eV/Å³); 10 makes 1 GPa weigh ~0.06
    huber_delta: float = 0.05

    @classmethod
    def from_dict(cls, d: dict | None) -> LossWeights:
        d = dict(d or {})
        check_keys("loss", d, cls.__dataclass_fields__)
        out = cls(**{k: float(v) for k, v in d.items()})
        for k, v in asdict(out).items():
            if not np.isfinite(v) or v < 0 or (k == "huber_delta" and v == 0):
                raise ValueError(f"loss.{k} must be a finite number >= 0 (> 0 for huber_delta), got {v}")
        return out


@dataclass
class FinetuneOptim:
    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.0
    patience: int = 5
    seed: int = 0
    # > 0: early stopping validates, and the run keeps, an exponential moving average of the
    # weights (decay per optimizer step), as MACE's --ema does and the head phases' optim.ema_decay
    ema_decay: float = 0.0

    @classmethod
    def from_dict(cls, d: dict | None, seed: int) -> FinetuneOptim:
        d = {"seed": seed, **dict(d or {})}
        check_keys("optim", d, cls.__dataclass_fields__)
        out = cls(**d)
        if out.epochs < 0 or out.batch_size < 1 or out.patience < 1 or not out.lr > 0:
            raise ValueError(f"bad optim settings {asdict(out)}: epochs >= 0, batch_size >= 1, patience >= 1, lr > 0")
        check_ema_decay(out.ema_decay)
        return out


def parse_trainable(value) -> tuple[str, int]:
    """``full`` -> ("full", 0); ``frozen`` -> ("frozen", 0); ``last N`` -> ("last", N)."""
    text = str(value).strip().lower()
    if text in ("full", "frozen"):
        return text, 0
    parts = text.split()
    if len(parts) == 2 and parts[0] == "last" and parts[1].isdigit() and int(parts[1]) > 0:
        return "last", int(parts[1])
    raise ValueError(f"trainable={value!r}: choose 'full', 'frozen' or 'last N' (N >= 1 backbone blocks)")


def read_finetune_config(path_or_dict) -> dict:
    cfg = load_yaml_or_dict(path_or_dict)
    check_keys("finetune config", cfg, KNOWN_KEYS)
    if "output" not in cfg:
        raise ValueError("config needs an 'output' folder")
    if not isinstance(cfg.get("data"), list) or not cfg["data"]:
        raise ValueError("finetune needs data: a list of structure loader specs, e.g. "
                         "[{loader: alexandria_pressure, limit: 200}]")
    if cfg.get("backbone") and cfg.get("init"):
        raise ValueError("give either backbone: {name, model} or init: <model file>, not both")
    if cfg.get("backbone") is not None:
        check_keys("backbone", dict(cfg["backbone"]), {"name", "model"})
    parse_trainable(cfg.get("trainable", "full"))
    LossWeights.from_dict(cfg.get("loss"))
    FinetuneOptim.from_dict(cfg.get("optim"), int(cfg.get("seed", 0)))
    if cfg.get("energy_reference", "refit") not in ("refit", "keep"):
        raise ValueError(f"energy_reference={cfg['energy_reference']!r}: choose 'refit' or 'keep'")
    check_keys("split", dict(cfg.get("split") or {}), {"val", "seed"})
    val = (cfg.get("split") or {}).get("val", 0.1)
    if not isinstance(val, (int, float)) or not 0 <= val < 1:
        raise ValueError(f"split.val is the validation fraction, in [0, 1); got {val!r}")
    if cfg.get("replay") is not None:
        check_keys("replay", dict(cfg["replay"]), {"data", "weight"})
    return cfg


# ----------------------------------------------------------------- helpers
def set_trainable(backbone, trainable) -> list[nn.Parameter]:
    """Switch gradients on for the trainable part of ``backbone``; returns those parameters."""
    mode, n = parse_trainable(trainable)
    for p in backbone.parameters():
        p.requires_grad_(False)
    if mode == "frozen":
        return []
    modules = [backbone] if mode == "full" else list(backbone.blocks())[-n:]
    if mode == "last" and n > len(list(backbone.blocks())):
        raise ValueError(f"trainable='last {n}': backbone {backbone.name!r} has {len(list(backbone.blocks()))} blocks")
    params = []
    seen = set()
    for m in modules:
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                p.requires_grad_(True)
                params.append(p)
    if not params:
        raise ValueError(f"trainable={trainable!r} selects no parameters of backbone {backbone.name!r}")
    return params


def group_split(structures: list[LabelledStructure], val: float, seed: int):
    """(train, val) with whole groups on one side."""
    if not 0 <= val < 1:
        raise ValueError(f"split.val must be in [0, 1), got {val}")
    groups = sorted({s.group for s in structures})
    rng = np.random.default_rng(seed)
    order = [groups[k] for k in rng.permutation(len(groups))]
    n_val = round(val * len(groups)) if len(groups) > 1 else 0
    held = set(order[:n_val])
    return [s for s in structures if s.group not in held], [s for s in structures if s.group in held]


class GraphBank:
    """Neighbour lists of fixed structures, built once; batches assembled from them."""

    def __init__(self, cutoff: float, dtype: torch.dtype, device: torch.device):
        self.cutoff, self.dtype, self.device = float(cutoff), dtype, device
        self._lists: dict[int, SystemNeighbors] = {}

    def _list(self, s: LabelledStructure) -> SystemNeighbors:
        key = id(s)
        if key not in self._lists:
            a = s.atoms
            i, j, sh = neighbor_list(a.positions, as_cell(a.cell.array), as_pbc(a.pbc), self.cutoff)
            self._lists[key] = SystemNeighbors(i, j, sh)
        return self._lists[key]

    def cost(self, s: LabelledStructure) -> int:
        """A structure's share of a step's work: its atoms plus its neighbour pairs."""
        return len(s.atoms) + len(self._list(s).i)

    def batch(self, structures: list[LabelledStructure]) -> AtomsGraph:
        lists = [self._list(s) for s in structures]
        return AtomsGraph.from_parts([s.atoms for s in structures], lists, self.cutoff, dtype=self.dtype,
                                     device=self.device)


def _voigt(stress: torch.Tensor) -> torch.Tensor:
    return torch.stack([stress[:, a, b] for a, b in _VOIGT], dim=1)


def predict_structures(model, bank: GraphBank, structures, batch_size: int = 16, stress: bool = True) -> list[dict]:
    """Energy, forces (and stress) of each structure, without training graphs."""
    model.eval()
    out = []
    for k in range(0, len(structures), batch_size):
        chunk = structures[k:k + batch_size]
        g = bank.batch(chunk)
        r = model(g, compute_forces=True, compute_stress=stress, compute_heads=False)
        forces = g.split(r["forces"].detach())
        for m, s in enumerate(chunk):
            item = {"energy": float(r["energy"][m].detach()), "forces": forces[m].double().cpu().numpy()}
            if stress and bool(s.atoms.pbc.all()):
                item["stress"] = _voigt(r["stress"].detach())[m].double().cpu().numpy()
            out.append(item)
    return out


def refit_energy_reference(model, bank: GraphBank, structures) -> tuple[torch.Tensor, dict]:
    """Per-element energies (eV) that best close E_DFT - E_model over ``structures``
    (least squares on composition counts, a small ridge keeps rare elements sane)."""
    labelled = [s for s in structures if s.energy is not None]
    shift = torch.zeros(119, dtype=torch.float64)
    if not labelled:
        return shift, {"n": 0}
    pred = predict_structures(model, bank, labelled, stress=False)
    residual = np.array([s.energy - p["energy"] for s, p in zip(labelled, pred)])
    counts = np.zeros((len(labelled), 119))
    for r, s in enumerate(labelled):
        np.add.at(counts[r], s.atoms.numbers, 1.0)
    present = np.flatnonzero(counts.sum(axis=0))
    a = counts[:, present]
    ridge = 1e-6 * np.eye(len(present))
    delta = np.linalg.solve(a.T @ a + ridge, a.T @ residual)
    shift[torch.as_tensor(present)] = torch.as_tensor(delta)
    n = counts.sum(axis=1)
    before = float(np.mean(np.abs(residual / n)))
    after = float(np.mean(np.abs((residual - a @ delta) / n)))
    return shift, {"n": len(labelled), "mae_per_atom_before_eV": before, "mae_per_atom_after_eV": after}


def teacher_labels(model, bank: GraphBank, structures: list[LabelledStructure]) -> list[LabelledStructure]:
    """``structures`` relabelled by ``model`` (energy, forces, stress): the replay set."""
    preds = predict_structures(model, bank, structures)
    return [LabelledStructure(atoms=s.atoms, identity=f"replay:{s.identity}", source="replay", group=f"replay:{s.group}",
                              energy=p["energy"], forces=p["forces"], stress=p.get("stress"))
            for s, p in zip(structures, preds)]


def errors(model, bank: GraphBank, structures) -> dict:
    """MAE of energy per atom (eV/atom), forces (eV/Å) and stress (eV/Å³ and GPa) where labelled.

    Under torch.distributed each rank evaluates its share and the sums are
    reduced, so every rank returns the same figures.
    """
    if not structures:
        return {}
    mine = dist.share(structures)
    preds = predict_structures(model, bank, mine) if mine else []
    e = [abs(p["energy"] - s.energy) / len(s.atoms) for s, p in zip(mine, preds) if s.energy is not None]
    f = [np.abs(p["forces"] - s.forces).ravel() for s, p in zip(mine, preds) if s.forces is not None]
    st = [np.abs(p["stress"] - s.stress) for s, p in zip(mine, preds) if s.stress is not None and "stress" in p]
    fs = np.concatenate(f) if f else np.zeros(0)
    sts = np.concatenate(st) if st else np.zeros(0)
    e_sum, e_n, f_sum, f_n, s_sum, s_n = dist.all_reduce_sum(
        [float(np.sum(e)), len(e), float(fs.sum()), fs.size, float(sts.sum()), sts.size])
    out = {"n": len(structures)}
    if e_n:
        out["energy_mae_eV_per_atom"] = e_sum / e_n
    if f_n:
        out["forces_mae_eV_per_A"] = f_sum / f_n
    if s_n:
        out["stress_mae_eV_per_A3"] = s_sum / s_n
        out["stress_mae_GPa"] = out["stress_mae_eV_per_A3"] * 160.21766208
    return out


# ----------------------------------------------------------------- trainer
class FinetuneTrainer:
    def __init__(self, model, train: list[LabelledStructure], weights: list[float], val: list[LabelledStructure],
                 loss: LossWeights, optim: FinetuneOptim, params: list[nn.Parameter], out_dir: Path,
                 fingerprint: str, progress: bool = True):
        self.model, self.train, self.weights, self.val = model, train, weights, val
        self.loss_w, self.cfg, self.params = loss, optim, params
        self.out_dir, self.fingerprint, self.progress = Path(out_dir), fingerprint, progress
        dtype = next(model.backbone.parameters()).dtype
        device = next(model.backbone.parameters()).device
        self.bank = GraphBank(model.cutoff, dtype, device)
        self.optimizer = torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay) if params else None
        self.rank, self.world = dist.rank_world()
        self.ema: WeightAverage | None = None  # set by fit (optim.ema_decay), resumed from the checkpoint

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def epoch_plan(self, epoch: int) -> list[list[int]]:
        """Global minibatches of structure indices, a function of (seed, epoch) only
        (each rank computes its share of every one)."""
        rng = np.random.default_rng([self.cfg.seed, epoch])
        order = rng.permutation(len(self.train))
        b = self.cfg.batch_size
        return [order[k:k + b].tolist() for k in range(0, len(order), b)]

    def _loss(self, idx: list[int], denominator: int) -> torch.Tensor:
        """Weighted Huber loss of structures ``idx`` summed, over ``denominator``
        (the whole minibatch's size, so that shares add up across ranks)."""
        chunk = [self.train[i] for i in idx]
        w = torch.tensor([self.weights[i] for i in idx], dtype=torch.float64)
        g = self.bank.batch(chunk)
        want_f = self.loss_w.forces > 0 and any(s.forces is not None for s in chunk)
        want_s = self.loss_w.stress > 0 and any(s.stress is not None for s in chunk)
        out = self.model(g, compute_forces=True, compute_stress=want_s, compute_heads=False)
        huber = nn.functional.huber_loss
        delta = self.loss_w.huber_delta
        total = torch.zeros((), dtype=out["energy"].dtype)
        dt = out["energy"].dtype
        if self.loss_w.energy > 0:
            mask = torch.tensor([s.energy is not None for s in chunk])
            if mask.any():
                n = g.n_atoms.to(dt)
                target = torch.tensor([s.energy if s.energy is not None else 0.0 for s in chunk], dtype=dt)
                per = huber(out["energy"] / n, target / n, delta=delta, reduction="none")
                total = total + self.loss_w.energy * (per * w.to(dt))[mask].sum() / denominator
        if want_f:
            forces = g.split(out["forces"])
            terms = [huber(f, torch.as_tensor(s.forces, dtype=dt), delta=delta) * float(wi)
                     for f, s, wi in zip(forces, chunk, w) if s.forces is not None]
            total = total + self.loss_w.forces * torch.stack(terms).sum() / denominator
        if want_s:
            pred = _voigt(out["stress"])
            terms = [huber(pred[m], torch.as_tensor(s.stress, dtype=dt), delta=delta) * float(w[m])
                     for m, s in enumerate(chunk) if s.stress is not None]
            total = total + self.loss_w.stress * torch.stack(terms).sum() / denominator
        return total

    def val_metric(self) -> tuple[float, dict]:
        e = errors(self.model, self.bank, self.val)
        metric = (self.loss_w.energy * e.get("energy_mae_eV_per_atom", 0.0)
                  + self.loss_w.forces * e.get("forces_mae_eV_per_A", 0.0)
                  + self.loss_w.stress * e.get("stress_mae_eV_per_A3", 0.0))
        return metric, e

    def fit(self, *, resume: bool = True, stop_after: int | None = None, finish: bool = False) -> dict:
        state = self._resume() if resume else None
        if finish and state is None:
            raise CheckpointError(f"nothing to finish: no checkpoint in {self.out_dir}")
        if state is None:
            metric, e = self.val_metric() if self.val else (math.inf, {})
            state = {"epoch": 0, "best_metric": metric, "bad_epochs": 0,
                     "history": [{"epoch": -1, "train_loss": float("nan"), "val_metric": metric, "val": e}],
                     "best_module": copy.deepcopy(self.model.state_dict()), "ema": None}
        self.ema = WeightAverage(self.cfg.ema_decay, state.get("ema")) if self.cfg.ema_decay else None
        epochs = self.cfg.epochs if self.optimizer is not None else 0
        bar = tqdm(total=epochs, initial=min(state["epoch"], epochs), desc="fine-tuning",
                   disable=not self.progress or self.rank != 0)
        done_here = 0
        while (not finish and state["epoch"] < epochs and state["bad_epochs"] < self.cfg.patience):
            epoch = state["epoch"]
            self.model.train()
            t0 = time.perf_counter()
            losses = []
            plan = self.epoch_plan(epoch)
            inner = tqdm(plan, desc=f"epoch {epoch}", unit="batch", leave=False,
                         disable=not self.progress or self.rank != 0)
            with seeded(self.cfg.seed * 100_003 + epoch + 7919 * self.rank, self.bank.device):  # dropout's stream
                for idx in inner:
                    # shares of equal cost, so no rank waits long for the others at the reduction
                    costs = [self.bank.cost(self.train[i]) for i in idx]
                    mine = dist.balanced_share(idx, costs, self.rank, self.world)
                    self.optimizer.zero_grad()
                    value = 0.0
                    if mine:
                        loss = self._loss(mine, len(idx))
                        loss.backward()
                        value = float(loss.detach())
                    losses.append(dist.sum_gradients(self.params, value))
                    self.optimizer.step()
                    if self.ema is not None:  # every rank holds the same weights, so the same average
                        self.ema.update(self.model)
            seconds = time.perf_counter() - t0
            self.model.eval()
            with WeightAverage.validated(self.ema, self.model, state):
                metric, e = self.val_metric() if self.val else (float(np.mean(losses)), {})
                metric, e = dist.broadcast_object((metric, e))  # rank 0 decides early stopping
                if metric < state["best_metric"] - 1e-12:
                    state.update(best_metric=metric, bad_epochs=0, best_module=copy.deepcopy(self.model.state_dict()))
                else:
                    state["bad_epochs"] += 1
            n_done = sum(len(b) for b in plan)
            state["history"].append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_metric": metric,
                                     "val": e, "structures_per_s": n_done / max(seconds, 1e-9)})
            state["epoch"] = epoch + 1
            self._save(state)
            bar.update(1)
            bar.set_postfix(val=f"{metric:.4g}", best=f"{state['best_metric']:.4g}",
                            sps=f"{n_done / max(seconds, 1e-9):.1f}")
            done_here += 1
            if stop_after is not None and done_here >= stop_after:
                bar.close()
                return {"history": state["history"], "finished": False}
        bar.close()
        self.model.load_state_dict(state["best_module"])
        self.model.eval()
        return {"history": state["history"], "finished": True, "best_metric": state["best_metric"]}

    def _save(self, state: dict) -> None:
        if self.rank == 0:
            save_training_state(self.checkpoint_path, FINETUNE_FORMAT, self.fingerprint, self.model,
                                self.optimizer, state)

    def _resume(self) -> dict | None:
        dist.barrier()  # no rank reads a checkpoint that rank 0 may be about to replace
        obj = load_training_state(self.checkpoint_path, FINETUNE_FORMAT, self.fingerprint)
        dist.barrier()
        if obj is None:
            return None
        self.model.load_state_dict(obj["module"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(obj["optimizer"])
        return resume_state(obj)


# ------------------------------------------------------------------- phase
def _structures_hash(structures) -> str:
    h = hashlib.sha1()
    for s in structures:
        h.update(f"{s.identity}|{s.energy}|{len(s.atoms)}|".encode())
        h.update(np.ascontiguousarray(s.atoms.positions).tobytes())
        for arr in (s.forces, s.stress):
            if arr is not None:
                h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _check_labels(train: list[LabelledStructure], loss: LossWeights) -> None:
    for name, weight in (("energy", loss.energy), ("forces", loss.forces), ("stress", loss.stress)):
        if weight > 0 and not any(getattr(s, name) is not None for s in train):
            raise ValueError(f"loss.{name} = {weight} but no training structure has {name} labels; set "
                             f"loss.{name}: 0 or add data with {name}")


def finetune(config, *, progress: bool = True, stop_after: int | None = None, finish: bool = False) -> dict:
    """Fine-tune a backbone (see the module docstring); returns a summary with the model path."""
    cfg = read_finetune_config(config)
    out = Path(cfg["output"])
    out.mkdir(parents=True, exist_ok=True)
    seed = int(cfg.get("seed", 0))
    loss = LossWeights.from_dict(cfg.get("loss"))
    optim = FinetuneOptim.from_dict(cfg.get("optim"), seed)
    if cfg.get("init"):
        obj = safe_load(cfg["init"], FORMAT)
        model, spec = model_from_file(obj, cfg["init"]), dict(obj["backbone"])
        base = str(cfg["init"])
    else:
        bb = dict(cfg.get("backbone") or {"name": "chgnet"})
        spec = {"name": bb.get("name", "chgnet"), "model": bb.get("model")}
        model = load_model(spec["model"] or "default", backbone=spec["name"])
        base = f"{spec['name']}:{spec['model'] or 'default'}"
    dropped_heads = sorted(model.heads)
    if dropped_heads:
        log.warning("fine-tuning the backbone changes its features: the %d property heads of %s are not carried "
                    "over (retrain them on the fine-tuned model)", len(dropped_heads), base)
    model.heads = nn.ModuleDict()
    model.trunk = None
    dtype = {"float32": torch.float32, "float64": torch.float64}[str(cfg.get("dtype", "float32"))]
    device = torch.device(cfg.get("device", "cpu"))
    model = model.to(device=device, dtype=dtype)

    structures = []
    for spec_d in cfg["data"]:
        structures += load_structures(spec_d, for_training=True)
    if any(is_held_out(s) for s in structures):  # pragma: no cover - load_structures already drops them
        raise AssertionError("held-out structures reached the training set")
    if not structures:
        raise ValueError("finetune: the data specs gave no structures")
    sp = {"val": 0.1, "seed": seed, **(cfg.get("split") or {})}
    train, val = group_split(structures, float(sp["val"]), int(sp["seed"]))
    replay = []
    if cfg.get("replay"):
        for spec_d in cfg["replay"].get("data", []):
            replay += load_structures(spec_d, for_training=True)
    fingerprint = hashlib.sha1(json.dumps({
        "config": {k: v for k, v in cfg.items() if k != "output"}, "code": code_fingerprint(),
        "train": _structures_hash(train), "val": _structures_hash(val), "replay": _structures_hash(replay),
    }, sort_keys=True, default=str).encode()).hexdigest()

    bank = GraphBank(model.cutoff, dtype, device)
    base_val = errors(model, bank, val)
    replay_labelled = teacher_labels(model, bank, replay) if replay else []
    refit = {"skipped": cfg.get("energy_reference", "refit") == "keep"}
    # computed from the base model on every start, resumed or not (a resume then loads the trained weights)
    if not refit["skipped"]:
        shift, refit = refit_energy_reference(model, bank, train)
        previous = model.energy_shift if model.energy_shift is not None else torch.zeros(119, dtype=torch.float64)
        model.energy_shift = (previous.double().cpu() + shift).to(device=device, dtype=dtype)
        # the replay labels live in the original reference: move them with it
        for s in replay_labelled:
            s.energy += float(shift[torch.as_tensor(s.atoms.numbers)].sum())
    elif model.energy_shift is None:
        model.energy_shift = torch.zeros(119, dtype=dtype, device=device)
    _check_labels(train + replay_labelled, loss)
    params = set_trainable(model.backbone, cfg.get("trainable", "full"))
    weight = float((cfg.get("replay") or {}).get("weight", 1.0))
    trainer = FinetuneTrainer(model, train + replay_labelled, [1.0] * len(train) + [weight] * len(replay_labelled),
                              val, loss, optim, params, out, fingerprint, progress=progress)
    result = trainer.fit(stop_after=stop_after, finish=finish)
    if not result["finished"]:
        return {"finished": False, "output": str(out)}
    for p in model.parameters():
        p.requires_grad_(False)
    final_val = errors(model, trainer.bank, val)
    metrics = {"base_model": base, "n_train": len(train), "n_val": len(val), "n_replay": len(replay_labelled),
               "energy_reference": refit, "val_before": base_val, "val_after": final_val,
               "trainable": str(cfg.get("trainable", "full")), "dropped_heads": dropped_heads,
               "structures_per_s": [h["structures_per_s"] for h in result["history"] if "structures_per_s" in h],
               "processes": trainer.world}
    if trainer.rank == 0:
        atomic_save(model_file(spec, None, {}, backbone_state=model.backbone.state_dict(),
                               energy_shift=model.energy_shift, phase="finetune", base_model=base,
                               data=cfg["data"], replay=cfg.get("replay"), config=cfg, metrics=metrics,
                               history=result["history"]),
                    out / "model.pt")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float))
        _plot(result["history"], out / "learning_curve.png")
    dist.barrier()  # the model file exists for every rank once this returns
    return {"finished": True, "output": str(out), "model": str(out / "model.pt"), "metrics": metrics,
            "history": result["history"]}


def _plot(history: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    rows = [h for h in history if h["epoch"] >= 0]
    if not rows:
        return
    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    ax.plot([h["epoch"] for h in rows], [h["train_loss"] for h in rows], label="train loss (weighted Huber)")
    ax.plot([h["epoch"] for h in history], [h["val_metric"] for h in history], label="val metric (weighted MAE)")
    ax.set_xlabel("epoch")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
