"""Multi-task training of a shared trunk and per-task heads on cached embeddings.

Every phase of the MPA recipe runs this loop: per-source heads in
mid-training, one target head in post-training. Huber loss in each head's
standardised target space; task sampling proportional to n_task**T
(T = 1: as the data come, 0: every task equally); AdamW; early stopping on
the mean validation MAE in standardised units. A checkpoint is written
atomically after every epoch, and a run resumed from it ends with the same
weights as an uninterrupted one: the data order and dropout of each epoch
depend only on (seed, epoch).

Under ``torchrun`` (see :mod:`mpa_ase.parallel`) each rank takes
its share of every minibatch and the gradients are summed, so N processes
follow the same steps as one (to float rounding; with head dropout > 0 the
masks differ per rank). Rank 0 writes the checkpoint and decides early
stopping.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from mpa_ase import __version__
from mpa_ase.checkpoint import atomic_save, safe_load
from mpa_ase.errors import CheckpointError
from mpa_ase.graph import Segments
from mpa_ase.heads import PropertyHead, Trunk
from mpa_ase import parallel as dist
from mpa_ase.training.embeddings import EmbeddingCache
from mpa_ase.training.rng import seeded

TRAIN_FORMAT = "mpa-ase-train/1"


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """The version and a hash of the sources that decide training results
    (training, heads, data, model, graph), part of every resume fingerprint."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha1(__version__.encode())
    for folder in ("training", "heads", "data"):
        for f in sorted((root / folder).glob("*.py")):
            h.update(f.read_bytes())
    for name in ("model.py", "graph.py"):
        h.update((root / name).read_bytes())
    return h.hexdigest()


KEEP = ("best", "last")


@dataclass
class OptimConfig:
    epochs: int = 60
    batch_size: int = 64
    lr: float = 2e-3
    trunk_lr: float | None = None  # None: same as lr
    weight_decay: float = 1e-4
    patience: int = 10
    huber_delta: float = 1.0
    sampling_temperature: float = 0.5
    seed: int = 0
    # > 0: an exponential moving average of the weights (decay per optimizer step) is what
    # early stopping validates and what the run keeps, as MACE's --ema does
    ema_decay: float = 0.0
    # best: the weights of the best validation epoch, stopping after ``patience`` epochs without a
    # better one; last: all ``epochs`` and their last weights, so that the validation side is read by
    # nothing that picks weights (e.g. epochs chosen by inner CV, the side kept for calibration)
    keep: str = "best"

    @classmethod
    def from_dict(cls, d: dict | None) -> OptimConfig:
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown optim option(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        if d.get("keep", "best") not in KEEP:
            raise ValueError(f"optim.keep={d['keep']!r}; choose from {KEEP}")
        return cls(**d)


@dataclass
class TaskData:
    """One task's samples by split; ``head`` names the head trained on it.
    ``cal``: a calibration set held apart from ``val`` (which early stopping
    reads); empty when the head is calibrated on ``val``."""

    head: str
    train: list
    val: list = field(default_factory=list)
    test: list = field(default_factory=list)
    cal: list = field(default_factory=list)


class HeadSet(nn.Module):
    """The trainable part: shared trunk + one head per task."""

    def __init__(self, trunk: Trunk, heads: dict[str, PropertyHead]):
        super().__init__()
        self.trunk = trunk
        self.heads = nn.ModuleDict(heads)


def fit_transform(head: PropertyHead, samples) -> None:
    """Standardise the head's target space on its training labels."""
    y = torch.tensor([s.value for s in samples], dtype=torch.float64)
    if head.transform.kind == "log10":
        y = torch.log10(y)
    head.transform.shift.fill_(float(y.mean()))
    head.transform.scale.fill_(float(y.std()) if len(y) > 1 and float(y.std()) > 0 else 1.0)


class Batcher:
    """Turns samples into (segments, features, conformer -> sample index)."""

    def __init__(self, cache: EmbeddingCache):
        self.cache = cache

    def __call__(self, samples) -> tuple[Segments, Tensor, Tensor]:
        feats, numbers, owner = [], [], []
        for i, s in enumerate(samples):
            for k in s.keys:
                z, f = self.cache.store[k]
                feats.append(f)
                numbers.append(z)
                owner.append(i)
        n_atoms = [len(z) for z in numbers]
        segments = Segments.from_sizes(n_atoms, torch.cat(numbers))
        return segments, torch.cat(feats), torch.tensor(owner, dtype=torch.long)


def conformer_mean(values: Tensor, owner: Tensor, n: int) -> Tensor:
    """Average (..., conformers) over the conformers of each sample -> (..., n)."""
    total = values.new_zeros(values.shape[:-1] + (n,)).index_add_(-1, owner, values)
    count = torch.zeros(n, dtype=values.dtype).index_add_(0, owner, torch.ones_like(owner, dtype=values.dtype))
    return total / count


def member_predictions(headset: HeadSet, head: str, batcher: Batcher, samples) -> Tensor:
    """(members, samples) outputs in the head's model space, conformer-averaged."""
    segments, feats, owner = batcher(samples)
    z = headset.heads[head].member_outputs(headset.trunk(feats), segments)
    return conformer_mean(z, owner, len(samples))


@torch.no_grad()
def predict(headset: HeadSet, head: str, batcher: Batcher, samples, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Physical-unit mean and spread of a head on samples."""
    headset.eval()
    h = headset.heads[head]
    means, stds = [], []
    for k in range(0, len(samples), chunk):
        z = member_predictions(headset, head, batcher, samples[k:k + chunk]).double()
        zm, zs = z.mean(0), z.std(0, unbiased=False)
        means.append(h.transform.inverse(zm))
        stds.append(h.transform.inverse_std(zm, zs) * h.std_scale)
    if not means:
        return np.zeros(0), np.zeros(0)
    return torch.cat(means).numpy(), torch.cat(stds).numpy()


def _load_tolerant(module: nn.Module, state: dict, where) -> None:
    """load_state_dict that accepts checkpoints written before heads had ``std_scale``
    and interval buffers."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    bad = [k for k in missing
           if not k.endswith(("std_scale", "interval_q", "interval_level", "interval_floor"))] + list(unexpected)
    if bad:
        raise CheckpointError(f"{where} does not match this model (keys {bad[:4]}...)")


def calibrate(headset: HeadSet, head: str, batcher: Batcher, samples) -> float:
    """Scale the head's ensemble spread so that |error|/σ on ``samples`` (validation)
    matches a unit Gaussian (robust: median |z| = 0.6745). Returns the factor."""
    h = headset.heads[head]
    if len(h.members) < 2 or len(samples) < 5:
        return 1.0
    h.std_scale.fill_(1.0)
    mean, std = predict(headset, head, batcher, samples)
    return set_spread_scale(h, [s.value for s in samples], mean, std)


def set_spread_scale(h, y, mean, std) -> float:
    """Set the head's spread scale from labels and predictions with the
    uncalibrated spread ``std`` (median |z| = 0.6745); returns it."""
    z = np.abs(np.asarray(y, dtype=np.float64) - mean) / np.clip(std, 1e-12, None)
    factor = float(np.median(z) / 0.6745)
    h.std_scale.fill_(factor if np.isfinite(factor) and factor > 0 else 1.0)
    return float(h.std_scale)


MIN_CALIBRATION = 10  # fewer scores than this give no interval
INTERVAL_LEVEL = 0.9  # the heads' documented interval level


def conformal_interval(headset: HeadSet, head: str, batcher: Batcher, samples, level: float = INTERVAL_LEVEL,
                       out_of_fold: dict | None = None, name: str = "validation",
                       quantile_level: float | None = None) -> tuple[float, str] | None:
    """Split-conformal interval on validation samples: the head's q such that
    mean ± q·(std + floor) covers ``level`` of new data (finite-sample quantile
    of |y - mean| / (std + floor)), the floor being the median std on these
    samples. Without it a few compounds with a tiny ensemble spread set q, and
    every interval is wide: on 24 properties x 5 OOD seeds of
    benchmarks/interval_methods.py the floor kept coverage (89.0 vs 89.5%) and
    narrowed intervals by a third.

    With fewer than 10 validation samples, the inner cross-validation's
    out-of-fold predictions of the training side (``out_of_fold``: y, pred and
    the fold models' uncalibrated std, as :meth:`HeadStart.choose_by_cv`
    reports them) join the validation ones (cross-conformal): the fold models
    saw less data than the final one, their spread is put on the head's scale.
    ``name`` says what ``samples`` are (the validation side, or a calibration
    set held apart from early stopping). Returns (q, what it was calibrated
    on), or None with under 10 scores. ``quantile_level``: the scores' quantile
    read for the ``level`` interval where it differs (corrected for early
    stopping, :func:`mpa_ase.training.selection.selection_level`)."""
    h = headset.heads[head]
    if h.problem != "regression":
        return None
    y = np.array([s.value for s in samples], dtype=np.float64)
    mean, std = predict(headset, head, batcher, samples) if len(samples) else (np.zeros(0), np.zeros(0))
    calibrated_on = f"{name} ({len(samples)})"
    if len(samples) < MIN_CALIBRATION and out_of_fold and len(out_of_fold["y"]):
        oof = [np.asarray(out_of_fold[k], dtype=np.float64) for k in ("y", "pred", "std")]
        if len({len(a) for a in oof}) != 1:
            raise ValueError(f"head {head}: out-of-fold y, pred and std differ in length "
                             f"({', '.join(str(len(a)) for a in oof)})")
        y, mean = np.concatenate([y, oof[0]]), np.concatenate([mean, oof[1]])
        std = np.concatenate([std, oof[2] * float(h.std_scale)])
        calibrated_on = f"{name} ({len(samples)}) and inner-CV out-of-fold ({len(oof[0])})"
    return set_conformal_interval(h, y, mean, std, level, calibrated_on, quantile_level)


def set_conformal_interval(h, y, mean, std, level: float, calibrated_on: str,
                           quantile_level: float | None = None) -> tuple[float, str] | None:
    """Fit the head's split-conformal interval (:func:`conformal_fit`) to labels and
    predictions with the head's calibrated spread; None with under 10 scores.
    The head records ``level``; q is the scores' ``quantile_level`` quantile (default: ``level``)."""
    y, mean, std = (np.asarray(a, dtype=np.float64) for a in (y, mean, std))
    if len(y) < MIN_CALIBRATION:
        return None
    bad = int(np.sum(~(np.isfinite(y) & np.isfinite(mean) & np.isfinite(std))))
    if bad:
        raise ValueError(f"head {h.name}: {bad} of {len(y)} calibration predictions or labels are not finite "
                         f"({calibrated_on}); the head or a fold diverged, so no interval can be set")
    q, floor = conformal_fit(y, mean, std, level if quantile_level is None else quantile_level)
    h.set_interval(q, level, floor)
    return q, calibrated_on


def conformal_fit(y, mean, std, level: float = 0.9) -> tuple[float, float]:
    """(q, floor) of the interval mean ± q·(std + floor) calibrated on these
    labels and predictions: the floor is their median std, q the finite-sample
    ``level`` quantile of |y - mean| / (std + floor)."""
    y, mean, std = (np.asarray(a, dtype=np.float64) for a in (y, mean, std))
    if not len(y) == len(mean) == len(std) > 0:
        raise ValueError(f"conformal_fit needs equal, non-empty y, mean and std "
                         f"(got {len(y)}, {len(mean)}, {len(std)})")
    floor = float(np.median(std))
    return conformal_quantile(np.abs(y - mean) / np.clip(std + floor, 1e-12, None), level), floor


def conformal_quantile(scores, level: float) -> float:
    """The ceil((n + 1)·level)-th smallest score: with exchangeable data, a new
    score falls at or below it with probability >= level."""
    if not 0 < level < 1:
        raise ValueError(f"interval level must be in (0, 1), got {level}")
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    if not np.isfinite(scores).all():
        raise ValueError(f"conformal scores must be finite; {int(np.sum(~np.isfinite(scores)))} are not")
    n = len(scores)
    k = min(n, math.ceil((n + 1) * level))
    return float(scores[k - 1])


def interval_coverage(head, y, mean, std) -> float | None:
    """Fraction of the values ``y`` inside the head's interval around predictions (``mean``, ``std``)."""
    q = float(head.interval_q)
    if len(y) == 0 or not math.isfinite(q):
        return None
    return float(np.mean(np.abs(np.asarray(y) - mean) <= q * head.interval_scale(std)))


def data_hash(tasks: dict[str, TaskData]) -> str:
    h = hashlib.sha1()
    for name in sorted(tasks):
        t = tasks[name]
        for split in ("train", "val", "test", "cal"):  # cal is empty unless held apart: old hashes hold
            for s in getattr(t, split):
                h.update(f"{name}|{split}|{s.identity}|{s.value:.9g}|{','.join(s.keys)}\n".encode())
    return h.hexdigest()


class Trainer:
    def __init__(self, headset: HeadSet, tasks: dict[str, TaskData], cache: EmbeddingCache, optim: OptimConfig,
                 out_dir: str | Path, *, progress: bool = True, config: dict | None = None, checkpoint: bool = True,
                 record_val: bool = False):
        self.headset = headset
        # True: every epoch's validation means and spreads are kept (checkpointed), for
        # calibration.selection to correct the interval for early stopping's choice
        self.record_val = record_val
        self.tasks = {name: t for name, t in tasks.items() if t.train}
        if not self.tasks:
            raise ValueError("no task has training samples")
        self.cache = cache
        self.batcher = Batcher(cache)
        self.cfg = optim
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.checkpoint = checkpoint  # False: a throwaway fit (inner CV) that cannot be resumed
        self.ema: WeightAverage | None = None  # set by fit (optim.ema_decay), resumed from the checkpoint
        for name, t in self.tasks.items():
            for split in ("train", "val", "test"):
                setattr(t, split, [s for s in getattr(t, split) if cache.has(s)])
        self.fingerprint = hashlib.sha1(
            json.dumps({"optim": asdict(optim), "config": config or {}, "data": data_hash(self.tasks),
                        "code": code_fingerprint()},  # a code change never silently reuses old weights
                       sort_keys=True, default=str).encode()
        ).hexdigest()
        trunk_params = list(headset.trunk.parameters())
        head_params = list(headset.heads.parameters())
        self.params = head_params + trunk_params
        self.rank, self.world = dist.rank_world()
        self.optimizer = torch.optim.AdamW(
            [{"params": head_params, "lr": optim.lr},
             {"params": trunk_params, "lr": optim.trunk_lr if optim.trunk_lr is not None else optim.lr}],
            weight_decay=optim.weight_decay,
        )

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    # ------------------------------------------------------------ epochs
    def epoch_plan(self, epoch: int) -> list[list[tuple[str, object]]]:
        """Minibatches of (task, sample) for one epoch, a function of (seed, epoch) only."""
        rng = np.random.default_rng([self.cfg.seed, epoch])
        sizes = {n: len(t.train) for n, t in self.tasks.items()}
        total = sum(sizes.values())
        weights = {n: m ** self.cfg.sampling_temperature for n, m in sizes.items()}
        norm = sum(weights.values())
        items = []
        for name in sorted(self.tasks):
            train = self.tasks[name].train
            m = max(1, round(total * weights[name] / norm))
            idx = rng.permutation(len(train)) if m <= len(train) else rng.integers(0, len(train), m)
            items += [(name, train[i]) for i in idx[:m]]
        order = rng.permutation(len(items))
        items = [items[i] for i in order]
        b = self.cfg.batch_size
        return [items[k:k + b] for k in range(0, len(items), b)]

    def _step(self, batch) -> float:
        """One optimizer step on the global minibatch ``batch`` (this rank computes its share)."""
        by_task: dict[str, list] = {}
        for name, s in dist.share(batch, self.rank, self.world):
            by_task.setdefault(name, []).append(s)
        loss = None
        for name, samples in by_task.items():
            head = self.headset.heads[self.tasks[name].head]
            z = member_predictions(self.headset, self.tasks[name].head, self.batcher, samples)
            y = torch.tensor([s.value for s in samples], dtype=torch.float64)
            target = head.transform(y).to(z.dtype).expand_as(z)
            # mean over members, summed over samples, over the whole minibatch: sums across ranks
            term = nn.functional.huber_loss(z, target, delta=self.cfg.huber_delta, reduction="none").mean(0).sum()
            loss = term / len(batch) if loss is None else loss + term / len(batch)
        self.optimizer.zero_grad()
        if loss is not None:
            loss.backward()
        value = dist.sum_gradients(self.params, float(loss.detach()) if loss is not None else 0.0)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.headset)
        return value

    @torch.no_grad()
    def validation(self, recorded: dict | None = None) -> tuple[float, dict[str, float]]:
        """Mean standardised validation MAE over tasks, and the physical MAE of each;
        each task's means and spreads go into ``recorded`` when given."""
        scores, maes = [], {}
        for name, t in self.tasks.items():
            samples = t.val or t.train
            mean, std = predict(self.headset, t.head, self.batcher, samples)
            if recorded is not None:
                recorded[name] = {"pred": mean.tolist(), "std": std.tolist()}
            y = np.array([s.value for s in samples])
            mae = float(np.mean(np.abs(mean - y)))
            maes[name] = mae
            head = self.headset.heads[t.head]
            if head.transform.kind == "log10":
                err = np.abs(np.log10(np.clip(mean, 1e-300, None)) - np.log10(y))
                scores.append(float(np.mean(err)) / float(head.transform.scale))
            else:
                scores.append(mae / float(head.transform.scale))
        return float(np.mean(scores)), maes

    def fit(self, *, resume: bool = True, stop_after: int | None = None, finish: bool = False) -> dict:
        """Train to the epoch limit or early stop; returns the history.

        ``stop_after`` ends this call after that many epochs (as an interrupt
        would); calling ``fit`` again resumes from the checkpoint. ``finish``
        ends a run now: no more epochs, the best weights of its checkpoint.
        """
        state = self._resume() if resume else None
        if finish and state is None:
            raise CheckpointError(f"nothing to finish: no checkpoint in {self.out_dir}")
        if state is None:
            for name, t in self.tasks.items():
                fit_transform(self.headset.heads[t.head], t.train)
            dist.broadcast_parameters(self.headset)
            state = {"epoch": 0, "best_metric": math.inf, "bad_epochs": 0, "history": [],
                     "best_module": copy.deepcopy(self.headset.state_dict()), "ema": None,
                     "val_predictions": [] if self.record_val else None}
        self.ema = WeightAverage(self.cfg.ema_decay, state.get("ema")) if self.cfg.ema_decay else None
        done_here = 0
        bar = tqdm(total=self.cfg.epochs, initial=state["epoch"], desc="training",
                   disable=not self.progress or self.rank != 0)
        patience = self.cfg.patience if self.cfg.keep == "best" else math.inf
        while not finish and state["epoch"] < self.cfg.epochs and state["bad_epochs"] < patience:
            epoch = state["epoch"]
            self.headset.train()
            device = next(self.headset.parameters()).device
            with seeded(self.cfg.seed * 100_003 + epoch + 7919 * self.rank, device):  # dropout's stream
                losses = [self._step(b) for b in self.epoch_plan(epoch)]
            recorded = {} if self.record_val and state.get("val_predictions") is not None else None
            with WeightAverage.validated(self.ema, self.headset, state):
                metric, maes = dist.broadcast_object(self.validation(recorded) if self.rank == 0 else None)
                if metric < state["best_metric"] - 1e-9:
                    state["best_metric"] = metric
                    state["bad_epochs"] = 0
                    state["best_module"] = copy.deepcopy(self.headset.state_dict())
                else:
                    state["bad_epochs"] += 1
            state["history"].append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_metric": metric,
                                     "val_mae": maes})
            if recorded is not None:
                state["val_predictions"].append(recorded)
            state["epoch"] = epoch + 1
            self._save(state)
            bar.update(1)
            bar.set_postfix(val=f"{metric:.4f}", best=f"{state['best_metric']:.4f}")
            done_here += 1
            if stop_after is not None and done_here >= stop_after:
                bar.close()
                return {"history": state["history"], "finished": False}
        bar.close()
        if self.cfg.keep == "best":
            _load_tolerant(self.headset, state["best_module"], self.checkpoint_path)
        elif self.ema is not None and self.ema.state is not None:
            self.headset.load_state_dict(self.ema.state)
        self.headset.eval()
        return {"history": state["history"], "finished": True, "best_metric": state["best_metric"],
                "best_epochs": best_epochs(state["history"], state["best_metric"]),
                **({"val_predictions": state.get("val_predictions")} if self.record_val else {})}

    # ------------------------------------------------------- checkpoints
    def _save(self, state: dict) -> None:
        if self.checkpoint and self.rank == 0:
            save_training_state(self.checkpoint_path, TRAIN_FORMAT, self.fingerprint, self.headset,
                                self.optimizer, state)

    def _resume(self) -> dict | None:
        dist.barrier()  # no rank reads a checkpoint that rank 0 may be about to replace
        obj = load_training_state(self.checkpoint_path, TRAIN_FORMAT, self.fingerprint)
        dist.barrier()
        if obj is None:
            return None
        _load_tolerant(self.headset, obj["module"], self.checkpoint_path)
        self.optimizer.load_state_dict(obj["optimizer"])
        return resume_state(obj)


def save_training_state(path: Path, fmt: str, fingerprint: str, module: nn.Module, optimizer, state: dict) -> None:
    """One atomic checkpoint of a training run (weights, optimizer, best weights, early-stopping state,
    and the weight average where the run keeps one)."""
    atomic_save({
        "format": fmt, "fingerprint": fingerprint, "epoch": state["epoch"],
        "module": module.state_dict(), "best_module": state["best_module"],
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "best_metric": state["best_metric"], "bad_epochs": state["bad_epochs"],
        "history": json.dumps(state["history"]),
        **({"ema": state["ema"]} if state.get("ema") is not None else {}),
        **({"val_predictions": json.dumps(state["val_predictions"])} if state.get("val_predictions") else {}),
    }, path)


def load_training_state(path: Path, fmt: str, fingerprint: str) -> dict | None:
    """The checkpoint at ``path`` (None when absent); one of another run is refused."""
    if not path.exists():
        return None
    obj = safe_load(path, fmt)
    if obj["fingerprint"] != fingerprint:
        raise CheckpointError(
            f"{path} belongs to a run with another config, other data or another mpa-ase version; "
            "choose a new output folder or pass restart=True (--restart) to start over"
        )
    return obj


def resume_state(obj: dict) -> dict:
    return {"epoch": obj["epoch"], "best_metric": obj["best_metric"], "bad_epochs": obj["bad_epochs"],
            "history": json.loads(obj["history"]), "best_module": obj["best_module"], "ema": obj.get("ema"),
            "val_predictions": json.loads(obj["val_predictions"]) if "val_predictions" in obj else None}


def best_epochs(history: list[dict], best_metric: float) -> int:
    """How many epochs the best validation metric took (1 for the first; 0: none was run)."""
    for i, h in enumerate(history):
        if h["val_metric"] == best_metric:
            return i + 1
    return 0


class WeightAverage:
    """Exponential moving average of a module's floating-point state (weights and
    buffers; other entries follow the module): after each step
    ``avg = decay * avg + (1 - decay) * current``, starting from the first state seen."""

    def __init__(self, decay: float, state: dict | None = None):
        if not 0 < decay < 1:
            raise ValueError(f"optim.ema_decay must be in (0, 1) to average weights, got {decay}")
        self.decay = decay
        self.state = state

    @staticmethod
    @contextlib.contextmanager
    def validated(average: WeightAverage | None, module: nn.Module, state: dict):
        """Inside, ``module`` holds the average (what early stopping validates and the run
        keeps, recorded in ``state['ema']`` for the checkpoint); after, its live weights again,
        to train on. Without an average (None, or no step yet) the module is left as it is."""
        if average is None or average.state is None:
            yield
            return
        live = copy.deepcopy(module.state_dict())
        module.load_state_dict(average.state)
        state["ema"] = average.state
        try:
            yield
        finally:
            module.load_state_dict(live)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        current = module.state_dict()
        if self.state is None:
            self.state = {k: v.detach().clone() for k, v in current.items()}
            return
        for k, v in current.items():
            if self.state[k].device != v.device:  # resumed from a checkpoint read onto the CPU
                self.state[k] = self.state[k].to(v.device)
            if v.is_floating_point():
                self.state[k].lerp_(v, 1.0 - self.decay)
            else:
                self.state[k].copy_(v)
