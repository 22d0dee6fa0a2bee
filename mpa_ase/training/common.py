"""What the three phases share: config reading, data loading, heads, outputs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from mpa_ase.backbones import load_backbone
from mpa_ase.checkpoint import atomic_save, model_file, read_parts
from mpa_ase.data import group_tasks, load_source
from mpa_ase.heads import PropertyHead, TargetTransform, Trunk
from mpa_ase.training.embeddings import EmbeddingCache
from mpa_ase.training.trainer import (Batcher, HeadSet, OptimConfig, TaskData, Trainer, calibrate, conformer_mean,
                                      data_hash, predict)
from mpa_ase.validation.splits import apply_split, split

log = logging.getLogger(__name__)

PHASES = ("pretrain", "midtrain", "posttrain")
KNOWN_KEYS = {
    "phase", "output", "backbone", "init", "data", "target", "split", "trunk", "head", "optim",
    "cache_dir", "trainable", "head_name", "exclude_target_task", "seed", "head_init", "head_init_top",
}
HEAD_INITS = ("correlated", "related", "fresh")
DEFAULT_HEAD_INIT, DEFAULT_HEAD_INIT_TOP = "correlated", 3


def check_head_init(head_init, top) -> None:
    if head_init not in HEAD_INITS:
        raise ValueError(f"head_init={head_init!r}; choose from {HEAD_INITS}")
    if not isinstance(top, int) or isinstance(top, bool) or top < 1:
        raise ValueError(f"head_init_top={top!r}: the number of source heads must be an integer >= 1")


def read_config(path_or_dict) -> dict:
    if isinstance(path_or_dict, dict):
        cfg = dict(path_or_dict)
    else:
        import yaml

        path = Path(path_or_dict)
        if not path.exists():
            raise FileNotFoundError(f"config file {path} not found")
        cfg = yaml.safe_load(path.read_text()) or {}
    unknown = set(cfg) - KNOWN_KEYS
    if unknown:
        raise ValueError(f"unknown config key(s) {sorted(unknown)}; known: {sorted(KNOWN_KEYS)}")
    if cfg.get("trainable", "frozen") != "frozen":
        raise ValueError(
            f"trainable={cfg['trainable']!r}: only a frozen backbone (trainable: frozen, with the shared "
            "trunk and heads trained) is implemented"
        )
    check_head_init(cfg.get("head_init", DEFAULT_HEAD_INIT), cfg.get("head_init_top", DEFAULT_HEAD_INIT_TOP))
    if "output" not in cfg:
        raise ValueError("config needs an 'output' folder")
    return cfg


def load_samples(cfg: dict) -> list:
    samples = []
    for spec in cfg.get("data", []):
        samples.extend(load_source(spec))
    return samples


def task_meta(samples) -> dict:
    """Unit, nature and kind of a task, from its samples and the property tables."""
    from mpa_ase.data.molecules import CHEM_PROPERTIES, QM9_PROPERTIES

    s = samples[0]
    extensive = False
    transform = "identity"
    if s.property in CHEM_PROPERTIES:
        extensive = CHEM_PROPERTIES[s.property].extensive
        transform = CHEM_PROPERTIES[s.property].transform
    for _, (name, _, _, ext) in QM9_PROPERTIES.items():
        if s.source == "QM9" and s.property == name:
            extensive = ext
    crystal = s.formula is not None
    if crystal:
        extensive = False  # per-cell totals depend on the (arbitrary) cell: crystal labels are per formula/atom
    return {"unit": s.unit, "extensive": extensive, "transform": transform, "kind": s.kind,
            "property": s.property, "source": s.source, "crystal": crystal}


def make_head(name: str, meta: dict, dim: int, head_cfg: dict, trained_on: str) -> PropertyHead:
    cfg = {"readout": "hybrid", "hidden": 64, "members": 1, "dropout": 0.0, **(head_cfg or {})}
    readout = cfg["readout"]
    if meta.get("crystal") and readout in ("hybrid", "sum"):
        # a supercell is the same crystal: only size-invariant readouts give it the same value
        readout = "attention"
    return PropertyHead(
        name, meta["unit"], dim, extensive=meta["extensive"], readout=readout,
        transform=TargetTransform(meta["transform"]), members=int(cfg["members"]), hidden=int(cfg["hidden"]),
        dropout=float(cfg["dropout"]), trained_on=trained_on,
    )


def head_key(task: str) -> str:
    """A ModuleDict-safe head name for a task ("boiling_point@CRC_ORG" -> "boiling_point__CRC_ORG")."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in task.replace("@", "__"))


def backbone_and_trunk(cfg: dict):
    """Backbone spec, loaded backbone, trunk and trained heads: from ``init`` when
    given (its heads are what post-training's head start chooses from), else
    fresh with no heads."""
    seed = int(cfg.get("seed", 0))
    if cfg.get("init"):
        spec, trunk, heads, _ = read_parts(cfg["init"])
        backbone = load_backbone(spec["name"], model=spec.get("model"))
        if trunk is None:
            raise ValueError(f"{cfg['init']} has no trunk to start from")
        return spec, backbone, trunk, heads
    bb = cfg.get("backbone") or {"name": "chgnet"}
    spec = {"name": bb.get("name", "chgnet"), "model": bb.get("model")}
    backbone = load_backbone(spec["name"], model=spec["model"])
    torch.manual_seed(seed)
    t = {"hidden": 128, "depth": 2, "dropout": 0.0, **(cfg.get("trunk") or {})}
    trunk = Trunk(backbone.embedding_dim, hidden=int(t["hidden"]), depth=int(t["depth"]), dropout=float(t["dropout"]))
    return spec, backbone, trunk, {}


def related_head(heads: dict[str, PropertyHead], prop: str) -> PropertyHead | None:
    """The mid-training head of the same property from another source (the one
    trained on most samples), or None. Head names are ``property__source``."""
    import re

    found = []
    for name, head in heads.items():
        if name.startswith(prop + "__"):
            m = re.search(r"n_train=(\d+)", head.trained_on or "")
            found.append((int(m.group(1)) if m else 0, name, head))
    return max(found, key=lambda x: (x[0], x[1]))[2] if found else None


def _negate_output(readout) -> None:
    """Flip the sign of a readout's output (its last linear layers)."""
    for lin in (getattr(readout, "pooled_mlp", [None])[-1], getattr(getattr(readout, "atomwise", None), "out", None)):
        if lin is not None:
            lin.weight.neg_()
            lin.bias.neg_()


@torch.no_grad()
def init_from_head(head: PropertyHead, source, seed: int, noise: float = 0.05) -> int:
    """Start the ensemble members of ``head`` from trained heads (parameters of the
    same name and shape), each perturbed by ``noise`` x the tensor's spread so
    the members still differ. Returns the number of tensors copied.

    ``source`` is one head, or a list of ``(head, sign)``: member k starts from
    entry k mod len, with its output negated where sign < 0.
    """
    sources = [(source, 1.0)] if isinstance(source, PropertyHead) else list(source)
    g = torch.Generator().manual_seed(seed)
    copied = 0
    for k, member in enumerate(head.members):
        src_head, sign = sources[k % len(sources)]
        src_member = src_head.members[(k // len(sources)) % len(src_head.members)]
        src = dict(src_member.named_parameters())
        for name, p in member.named_parameters():
            if name in src and src[name].shape == p.shape:
                q = src[name].to(p.dtype)
                spread = float(q.std()) if q.numel() > 1 else 0.0
                p.copy_(q + noise * spread * torch.randn(p.shape, generator=g, dtype=p.dtype))
                copied += 1
        if sign < 0:
            _negate_output(member)
    return copied


@torch.no_grad()
def rank_source_heads(trunk: Trunk, heads: dict[str, PropertyHead], target: PropertyHead, samples,
                      cache: EmbeddingCache) -> list[tuple[float, str]]:
    """Trained heads ordered by how well they already predict ``samples`` (the
    target's training set only): |Pearson r| between a head's ensemble-mean
    output and the target labels (log10 where the target is log-transformed).
    Only heads with the target's readout kind are candidates (a full copy),
    which also keeps crystal and molecular heads apart. Returns [(r, name)]."""
    if not heads or len(samples) < 5:
        return []
    batcher = Batcher(cache)
    y = np.array([s.value for s in samples], dtype=float)
    if target.transform.kind == "log10":
        y = np.log10(y)
    graph, feats, owner = batcher(samples)
    was_training = trunk.training
    trunk.eval()
    x = trunk(feats)
    trunk.train(was_training)
    ranked = []
    for name, head in heads.items():
        if head.readout_kind != target.readout_kind or head.task != "regression":
            continue
        head.eval()
        z = conformer_mean(head.member_outputs(x, graph), owner, len(samples)).mean(0).double().numpy()
        if np.std(z) == 0 or not np.isfinite(z).all():
            continue
        r = float(np.corrcoef(z, y)[0, 1])
        if np.isfinite(r):
            ranked.append((r, name))
    return sorted(ranked, key=lambda t: (-abs(t[0]), t[1]))


def choose_sources(head_init: str, heads: dict[str, PropertyHead] | None, target_head: PropertyHead, prop: str,
                   train, trunk: Trunk, cache: EmbeddingCache, top: int = DEFAULT_HEAD_INIT_TOP,
                   min_r: float = 0.3):
    """The ``(head, sign)`` list a new target head starts from ([] = fresh), and a description.

    related: the same property from another source (most training samples);
    correlated: the ``top`` heads whose outputs correlate best with the
    target's training labels, if |r| >= min_r (any property: a solid-entropy
    target may start from a liquid-entropy head)."""
    check_head_init(head_init, top)
    if not heads or head_init == "fresh":
        return [], "fresh"
    if head_init == "related":
        h = related_head(heads, prop)
        return ([(h, 1.0)], h.trained_on) if h is not None else ([], "fresh")
    ranked = [(r, n) for r, n in rank_source_heads(trunk, heads, target_head, train, cache) if abs(r) >= min_r]
    chosen = ranked[:top]
    return ([(heads[n], 1.0 if r >= 0 else -1.0) for r, n in chosen],
            "; ".join(f"{heads[n].trained_on} r={r:+.2f}" for r, n in chosen) or "fresh")


def split_cfg(cfg: dict) -> dict:
    return {"kind": "random", "val": 0.1, "test": 0.2, "seed": int(cfg.get("seed", 0)), **(cfg.get("split") or {})}


def split_task(samples, cfg: dict):
    sc = split_cfg(cfg)
    extra = {"threshold": sc["threshold"]} if "threshold" in sc else {}
    return apply_split(samples, split(samples, sc["kind"], sc["val"], sc["test"], sc["seed"], **extra))


def train_and_write(cfg: dict, phase: str, spec: dict, backbone, trunk: Trunk, tasks: dict[str, list],
                    *, members: int | None = None, progress: bool = True, split_all: bool = True,
                    extra_meta: dict | None = None, stop_after: int | None = None, resume: bool = True,
                    cache: EmbeddingCache | None = None, finish: bool = False,
                    source_heads: dict[str, PropertyHead] | None = None) -> dict:
    """Train trunk + one head per task, evaluate, write model.pt, metrics.json and plots.

    ``source_heads`` are trained heads (mid-training's) that a new head may
    start from, chosen by ``cfg["head_init"]`` (see ``choose_sources``) on the
    task's training split only.

    Returns a summary dict (per-task metrics, paths); ``finished`` is False
    when ``stop_after`` interrupted the run.
    """
    out = Path(cfg["output"])
    out.mkdir(parents=True, exist_ok=True)
    seed = int(cfg.get("seed", 0))
    cache = cache or EmbeddingCache(backbone, cfg.get("cache_dir"), progress=progress)
    all_samples = [s for group in tasks.values() for s in group]
    cache.fill(all_samples)
    head_cfg = dict(cfg.get("head") or {})
    if members is not None:
        head_cfg.setdefault("members", members)
    torch.manual_seed(seed + 1)
    heads, task_data, head_inits = {}, {}, {}
    for task, samples in sorted(tasks.items()):
        samples = [s for s in samples if cache.has(s)]
        if len(samples) < 5:
            log.warning("task %s has %d usable samples; skipped", task, len(samples))
            continue
        meta = task_meta(samples)
        name = cfg.get("head_name") if phase == "posttrain" and cfg.get("head_name") else head_key(task)
        heads[name] = make_head(name, meta, backbone.embedding_dim, head_cfg, trained_on=f"{task} ({meta['kind']})")
        train, val, test = split_task(samples, cfg) if split_all else (samples, [], [])
        if source_heads:
            chosen, described = choose_sources(cfg.get("head_init", DEFAULT_HEAD_INIT), source_heads, heads[name],
                                               samples[0].property, train, trunk, cache,
                                               top=cfg.get("head_init_top", DEFAULT_HEAD_INIT_TOP))
            if chosen:
                init_from_head(heads[name], chosen, seed)
            head_inits[task] = described
        task_data[task] = TaskData(name, train, val, test)
    optim = OptimConfig.from_dict({"seed": seed, **(cfg.get("optim") or {})})
    headset = HeadSet(trunk, heads)
    trainer = Trainer(headset, task_data, cache, optim, out, progress=progress,
                      config={k: v for k, v in cfg.items() if k != "output"})
    result = trainer.fit(stop_after=stop_after, resume=resume, finish=finish)
    if not result["finished"]:
        return {"finished": False, "output": str(out)}
    metrics = {}
    calibration = {t.head: calibrate(headset, t.head, trainer.batcher, t.val) for t in trainer.tasks.values()}
    for task, t in trainer.tasks.items():
        evals = {}
        predictions = {}
        for split_name in ("train", "val", "test"):
            samples = getattr(t, split_name)
            if samples:
                predictions[split_name] = predict(headset, t.head, trainer.batcher, samples)
                evals[split_name] = regression_metrics(np.array([s.value for s in samples]), *predictions[split_name])
        metrics[task] = {"head": t.head, "unit": heads[t.head].unit, "std_scale": calibration[t.head],
                         "n_train": len(t.train),
                         "n_val": len(t.val), "n_test": len(t.test), **evals}
        if task in head_inits:
            metrics[task]["head_init"] = head_inits[task]
        if t.test:
            mean, std = predictions["test"]
            metrics[task]["test_predictions"] = {
                "identity": [s.identity for s in t.test], "y": [s.value for s in t.test],
                "pred": mean.tolist(), "std": std.tolist(),
            }
        trained = heads[t.head]
        trained.trained_on = f"{task} ({trained.trained_on.split('(')[-1][:-1]}, n_train={len(t.train)})"
        trained.config["trained_on"] = trained.trained_on
    meta = {"phase": phase, "config": {k: v for k, v in cfg.items()}, "data_hash": data_hash(trainer.tasks),
            "history": result["history"], "metrics": {k: {kk: vv for kk, vv in v.items() if kk != "test_predictions"}
                                                       for k, v in metrics.items()}, **(extra_meta or {})}
    atomic_save(model_file(spec, trunk, heads, **meta), out / "model.pt")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float))
    plot_learning_curve(result["history"], out / "learning_curve.png")
    plot_parity(metrics, out / "parity.png")
    return {"finished": True, "output": str(out), "model": str(out / "model.pt"), "metrics": metrics,
            "history": result["history"]}


def regression_metrics(y, pred, std=None) -> dict:
    from mpa_ase.validation import metrics as vm

    out = vm.regression_metrics(y, pred)
    if std is not None and len(y) > 2:
        out["spearman_abs_err_std"] = vm.spearman_error_vs_std(y, pred, std)
        out["miscalibration_area"] = vm.miscalibration_area(y, pred, std)
    return out


def plot_learning_curve(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(epochs, [h["train_loss"] for h in history], label="train loss (Huber, standardised)")
    ax.plot(epochs, [h["val_metric"] for h in history], label="val MAE (standardised)")
    ax.set_xlabel("epoch")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_parity(metrics: dict, path: Path, max_panels: int = 6) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t, m in metrics.items() if "test_predictions" in m][:max_panels]
    if not tasks:
        return
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        p = metrics[task]["test_predictions"]
        y, pred = np.array(p["y"]), np.array(p["pred"])
        ax.errorbar(y, pred, yerr=np.array(p["std"]), fmt="o", ms=3, alpha=0.6, elinewidth=0.5)
        lo, hi = min(y.min(), pred.min()), max(y.max(), pred.max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        unit = metrics[task]["unit"]
        ax.set_title(f"{task}\nMAE {metrics[task]['test']['mae']:.3g} {unit}", fontsize=8)
        ax.set_xlabel(f"measured ({unit})")
        ax.set_ylabel(f"predicted ({unit})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
