"""What the three phases share: config reading, data loading, heads, outputs."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from mpa_ase.backbones import load_backbone
from mpa_ase.checkpoint import atomic_save, model_file, read_parts
from mpa_ase.data import load_source
from mpa_ase.data.samples import physical_lower_bound, sample_elements
from mpa_ase.heads import PropertyHead, TargetTransform, Trunk
from mpa_ase.parallel import barrier, is_main
from mpa_ase.training.config import (HeadPhaseConfig, HeadSection, SplitSection, check_head_phase_config,
                                     check_keys, load_yaml_or_dict)
from mpa_ase.training.embeddings import EmbeddingCache
from mpa_ase.training.head_start import (DEFAULT_HEAD_INIT_TOP, choose_sources, cv_options, describe_candidate, init_from_head, inner_folds,
                                         select_by_cv)
from mpa_ase.training.rng import seeded
from mpa_ase.training.trainer import (INTERVAL_LEVEL, MIN_CALIBRATION, HeadSet, OptimConfig, TaskData, Trainer,
                                      calibrate, conformal_interval, data_hash, interval_coverage, predict,
                                      set_conformal_interval, set_spread_scale)
from mpa_ase.validation import stored

log = logging.getLogger(__name__)

PHASES = ("pretrain", "midtrain", "posttrain")
KNOWN_KEYS = {
    "phase", "output", "backbone", "init", "data", "target", "split", "trunk", "head", "optim",
    "cache_dir", "trainable", "head_name", "exclude_target_task", "seed", "head_init", "head_init_top",
    "head_init_cv", "splits", "calibration",
}
def read_config(path_or_dict) -> dict:
    """The config mapping, every key, type and range checked (see
    :class:`~mpa_ase.training.config.HeadPhaseConfig`) before any data is loaded."""
    cfg = load_yaml_or_dict(path_or_dict)
    check_keys("config", cfg, KNOWN_KEYS)
    check_head_phase_config(cfg)
    if cfg.get("trainable", "frozen") != "frozen":
        raise ValueError(
            f"trainable={cfg['trainable']!r}: only a frozen backbone (trainable: frozen, with the shared "
            "trunk and heads trained) is implemented"
        )
    return cfg


def load_samples(cfg: dict) -> list:
    samples = []
    for spec in cfg.get("data", []):
        samples.extend(load_source(spec))
    return samples


def task_meta(samples) -> dict:
    """Unit, nature and kind of a task, as its samples carry them (every loader
    sets ``extensive`` and ``transform``)."""
    s = samples[0]
    if s.extensive is None or s.transform is None:
        raise ValueError(f"samples of {s.task} do not say whether the property is extensive and how it is "
                         "transformed (Sample.extensive, Sample.transform); their loader must set both")
    crystal = s.formula is not None
    # per-cell totals depend on the (arbitrary) cell: crystal labels are per formula/atom
    extensive = bool(s.extensive) and not crystal
    return {"unit": s.unit, "extensive": extensive, "transform": s.transform, "kind": s.kind,
            "property": s.property, "source": s.source, "crystal": crystal}


def make_head(name: str, meta: dict, dim: int, head_cfg: dict, trained_on: str) -> PropertyHead:
    h = HeadSection(**(head_cfg or {}))
    cfg = {"readout": h.readout, "hidden": h.hidden, "members": h.members or 1, "dropout": h.dropout}
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


class PhaseModel(NamedTuple):
    """What a head phase starts from: the backbone (its spec and the loaded
    model), the shared trunk, and the trained heads a new head may start from."""

    spec: dict
    backbone: object
    trunk: Trunk
    heads: dict


def backbone_and_trunk(cfg: dict) -> PhaseModel:
    """Backbone spec, loaded backbone, trunk and trained heads: from ``init`` when
    given (its heads are what post-training's head start chooses from), else
    fresh with no heads."""
    typed = check_head_phase_config(cfg)
    if typed.init:
        spec, trunk, heads, _ = read_parts(typed.init)
        backbone = load_backbone(spec["name"], model=spec.get("model"))
        if trunk is None:
            raise ValueError(f"{typed.init} has no trunk to start from")
        return PhaseModel(spec, backbone, trunk, heads)
    spec = {"name": typed.backbone.name, "model": typed.backbone.model}
    backbone = load_backbone(typed.backbone.name, model=typed.backbone.model)
    t = typed.trunk
    with seeded(typed.seed):
        trunk = Trunk(backbone.embedding_dim, hidden=t.hidden, depth=t.depth, dropout=float(t.dropout))
    return PhaseModel(spec, backbone, trunk, {})


def split_cfg(cfg: dict) -> dict:
    sc = SplitSection(**(cfg.get("split") or {}))
    seed = int(cfg.get("seed", 0)) if sc.seed is None else sc.seed
    return {"kind": sc.kind, "val": sc.val, "test": sc.test, "seed": seed,
            **({"threshold": sc.threshold} if sc.threshold is not None else {})}


def draw_split(samples, cfg: dict) -> dict:
    """The split record (see :mod:`mpa_ase.validation.stored`) of one task's
    samples, drawn with the config's split settings; call it after every filter."""
    sc = split_cfg(cfg)
    return stored.draw(samples, sc["kind"], sc["val"], sc["test"], sc["seed"], sc.get("threshold"))


def split_task(samples, cfg: dict):
    return stored.apply(samples, draw_split(samples, cfg))


def usable(samples, cache: EmbeddingCache) -> list:
    """The samples that survive every filter before a split (today: the embedding
    step, which drops structures the backbone cannot take, e.g. molecules RDKit
    cannot embed)."""
    cache.fill(samples)
    return [s for s in samples if cache.has(s)]


def post_optim(cfg: dict, candidate: dict | None = None) -> OptimConfig:
    """The optimiser settings of ``cfg``, scaled as a head-start ``candidate`` says
    (``lr_factor``: every rate; ``trunk_lr_factor``: the trunk's rate relative to the heads')."""
    optim = OptimConfig.from_dict({"seed": int(cfg.get("seed", 0)), **(cfg.get("optim") or {})})
    candidate = candidate or {}
    if candidate.get("lr_factor") is not None:
        factor = float(candidate["lr_factor"])
        optim.lr *= factor
        optim.trunk_lr = None if optim.trunk_lr is None else optim.trunk_lr * factor
    # a trunk frozen on purpose (trunk_lr 0: one trunk shared by heads trained apart) stays frozen
    if candidate.get("trunk_lr_factor") is not None and optim.trunk_lr != 0:
        optim.trunk_lr = optim.lr * float(candidate["trunk_lr_factor"])
    return optim


@dataclass
class HeadStart:
    """One task's new head and how it starts: what every candidate start
    shares (the task, its nature, the trunk, the source heads), so that making
    a head, scoring a start on an inner fold and choosing among starts by
    cross-validation are one short call each."""

    cfg: HeadPhaseConfig
    task: str
    name: str
    meta: dict
    dim: int
    head_cfg: dict
    trunk: Trunk
    cache: EmbeddingCache
    source_heads: dict[str, PropertyHead] | None = None

    def make(self, head_init: str, top: int, train, trained_on: str = "", trunk: Trunk | None = None):
        """A new head started from the source heads as ``head_init`` says (chosen
        on ``train``), and a description of its start (None: no sources)."""
        head = make_head(self.name, self.meta, self.dim, self.head_cfg, trained_on=trained_on)
        if not self.source_heads:
            return head, None
        chosen, described = choose_sources(head_init, self.source_heads, head, self.meta["property"], train,
                                           trunk if trunk is not None else self.trunk, self.cache, top=top)
        if chosen:
            init_from_head(head, chosen, self.cfg.seed)
        return head, described

    def fold_predict(self, candidate: dict, fit, val, held) -> tuple[np.ndarray, np.ndarray, int]:
        """Mean and ensemble spread on ``held`` of one candidate start trained on
        ``fit`` with early stopping on ``val`` (an inner fold, or the other
        cross-fit folds; a throwaway copy of the trunk; the spread uncalibrated),
        and the number of epochs its best validation epoch took."""
        fold_trunk = copy.deepcopy(self.trunk)
        with seeded(self.cfg.seed + 1):
            head, _ = self.make(candidate["head_init"], candidate.get("head_init_top", DEFAULT_HEAD_INIT_TOP), fit,
                                trunk=fold_trunk)
        headset = HeadSet(fold_trunk, {self.name: head})
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(headset, {self.task: TaskData(self.name, fit, val, [])}, self.cache,
                              post_optim(self.cfg.raw, candidate), tmp, progress=False, checkpoint=False)
            result = trainer.fit(resume=False)
        return (*predict(headset, self.name, trainer.batcher, held), result["best_epochs"])

    def choose_by_cv(self, train, val, out, progress: bool = True) -> tuple[dict, dict]:
        """The ``head_init_cv`` candidate with the lowest mean held-out MAE over
        inner folds of the training split, and a report of every candidate's
        score and of the chosen one's out-of-fold predictions (``out_of_fold``:
        identity, y, pred, std; a calibration set for heads with a small
        validation side).
        The choice is kept in ``out/head_start_cv.json`` and reused while
        nothing it depends on changed (a resumed run chooses the same)."""
        raw = self.cfg.raw
        opts = cv_options(raw)
        if post_optim(raw).trunk_lr == 0:
            # with the trunk frozen, candidates that differ only in its rate are the same fit
            unique = []
            for c in opts["candidates"]:
                c = {k: v for k, v in c.items() if k != "trunk_lr_factor"}
                if c not in unique:
                    unique.append(c)
            opts["candidates"] = unique
        trunk_hash = hashlib.sha1(b"".join(t.detach().double().numpy().tobytes()
                                           for t in self.trunk.state_dict().values())).hexdigest()
        key = hashlib.sha1(json.dumps({  # how the final head's epochs are set does not change the choice
            "opts": {k: v for k, v in opts.items() if k != "epochs"}, "optim": raw.get("optim"),
            "head": self.head_cfg, "seed": raw.get("seed", 0),
            "trunk": trunk_hash, "sources": sorted(self.source_heads or {}),
            "data": data_hash({self.task: TaskData(self.name, train, val, [])}),
        }, sort_keys=True, default=str).encode()).hexdigest()
        path = Path(out) / "head_start_cv.json"
        if path.exists():
            try:
                saved = json.loads(path.read_text())
            except ValueError:
                saved = {}
            # a choice stored before the fold epochs were kept is scored again when they are needed
            if saved.get("key") == key and (opts["epochs"] != "cv" or "best_epochs" in saved or not saved.get("folds")):
                return opts["candidates"][saved["chosen"]], saved
        folds = inner_folds(train, opts["folds"], self.cfg.seed)
        bar = tqdm(total=len(folds) * len(opts["candidates"]), desc="head start (inner CV)", disable=not progress)

        out_of_fold = defaultdict(lambda: {"identity": [], "y": [], "pred": [], "std": []})
        epochs = defaultdict(list)

        def score(candidate, fit, held):
            mean, std, n_epochs = self.fold_predict(candidate, fit, val, held)
            epochs[id(candidate)].append(n_epochs)
            y = np.array([s.value for s in held])
            oof = out_of_fold[id(candidate)]
            oof["identity"] += [s.identity for s in held]  # so an audit can check they are training compounds
            for k, v in (("y", y), ("pred", mean), ("std", std)):
                oof[k] += [float(x) for x in v]
            bar.update(1)
            return float(np.mean(np.abs(mean - y)))

        best, means = select_by_cv(opts["candidates"], folds, score, rule=opts["choose"])
        bar.close()
        report = {"key": key, "chosen": best, "candidate": describe_candidate(opts["candidates"][best]),
                  "folds": len(folds), "held_out": [len(h) for _, h in folds], "rule": opts["choose"],
                  "cv_mae": {describe_candidate(c): m for c, m in zip(opts["candidates"], means)},
                  **({"out_of_fold": out_of_fold[id(opts["candidates"][best])],
                      "best_epochs": epochs[id(opts["candidates"][best])]} if folds else {})}
        if not folds:
            log.warning("%s: no inner fold could be drawn from %d training samples; head start %s taken unscored",
                        self.task, len(train), report["candidate"])
        if is_main():
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(report, indent=1))
            tmp.replace(path)
        return opts["candidates"][best], report


@dataclass
class RunOptions:
    """How a head-phase run is carried out, beside its config: ``members`` (the
    phase's default ensemble size), whether tasks are split (``split_all``) or
    read from ``stored_splits`` (task -> record of :mod:`mpa_ase.validation.stored`),
    a shared embedding ``cache``, extra metadata for the model file, and the
    checkpoint controls."""

    members: int | None = None
    progress: bool = True
    split_all: bool = True
    extra_meta: dict | None = None
    stop_after: int | None = None
    resume: bool = True
    cache: EmbeddingCache | None = None
    finish: bool = False
    stored_splits: dict[str, dict] | None = None


@dataclass
class PreparedTasks:
    """Every task split and given its started head, ready to train."""

    heads: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)  # task -> TaskData
    head_inits: dict = field(default_factory=dict)  # task -> description of the head's start
    cv_reports: dict = field(default_factory=dict)  # task -> inner-CV report
    records: dict = field(default_factory=dict)  # task -> stored split record
    chosen: dict | None = None  # the head-start candidate chosen by inner CV, if any
    final_epochs: int | None = None  # set by the inner CV (head_init_cv.epochs: cv): no early stopping
    cross_fit: dict = field(default_factory=dict)  # task -> (HeadStart, candidate, the validation folds)
    selection_seed: int | None = None  # calibration.selection: the bootstrap's seed (None: off)


def train_and_write(cfg: dict, phase: str, model: PhaseModel, tasks: dict[str, list],
                    run: RunOptions | None = None) -> dict:
    """Train trunk + one head per task, evaluate, write model.pt, metrics.json,
    splits.json and plots.

    Each task is split after filtering, or by its record in
    ``run.stored_splits``, and the splits used are written to ``splits.json``
    (section ``tasks``). A new head may start from ``model.heads`` (e.g.
    mid-training's, for post-training), as ``head_init`` says (``cv``: :meth:`HeadStart.choose_by_cv`),
    chosen on the task's training split only.

    Returns a summary dict (per-task metrics, paths); ``finished`` is False
    when ``run.stop_after`` interrupted the run.
    """
    run = run or RunOptions()
    typed = check_head_phase_config(cfg)
    out = Path(typed.output)
    out.mkdir(parents=True, exist_ok=True)
    cache = run.cache or EmbeddingCache(model.backbone, typed.cache_dir, progress=run.progress)
    cache.fill([s for group in tasks.values() for s in group])
    prepared = prepare_tasks(typed, phase, model, tasks, run, cache, out)
    stored.write(out, tasks=prepared.records)
    headset = HeadSet(model.trunk, prepared.heads)
    optim = post_optim(cfg, prepared.chosen)
    if prepared.final_epochs:
        optim.epochs, optim.keep = prepared.final_epochs, "last"
    if prepared.selection_seed is not None and optim.keep == "last":
        raise ValueError("calibration.selection corrects the interval for early stopping's choice of epoch; with "
                         "optim.keep: last (or head_init_cv.epochs: cv) no epoch is chosen, so drop one of them")
    trainer = Trainer(headset, prepared.data, cache, optim, out, progress=run.progress,
                      config={k: v for k, v in cfg.items() if k != "output"},
                      record_val=prepared.selection_seed is not None)
    result = trainer.fit(stop_after=run.stop_after, resume=run.resume, finish=run.finish)
    if not result["finished"]:
        return {"finished": False, "output": str(out)}
    cross = {task: cross_fit_predictions(prepared, task, t, progress=run.progress)
             for task, t in trainer.tasks.items() if task in prepared.cross_fit}
    # the resume fingerprint holds the config and the code, so a run with the option records from epoch 0
    metrics = evaluate(headset, trainer, prepared, cross, result.get("val_predictions"))
    for task, t in trainer.tasks.items():
        stamp_domain(prepared.heads[t.head], task, t)
    meta = {"phase": phase, "config": dict(cfg), "data_hash": data_hash(trainer.tasks), "history": result["history"],
            "metrics": {k: {kk: vv for kk, vv in v.items() if not kk.endswith("_predictions")}
                        for k, v in metrics.items()},
            **(run.extra_meta or {})}
    if is_main():
        atomic_save(model_file(model.spec, model.trunk, prepared.heads, **meta), out / "model.pt")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float))
        plot_learning_curve(result["history"], out / "learning_curve.png")
        plot_parity(metrics, out / "parity.png")
    barrier()  # the model file exists for every rank once this returns
    return {"finished": True, "output": str(out), "model": str(out / "model.pt"), "metrics": metrics,
            "history": result["history"]}


def prepare_tasks(cfg: HeadPhaseConfig, phase: str, model: PhaseModel, tasks: dict[str, list], run: RunOptions,
                  cache: EmbeddingCache, out: Path) -> PreparedTasks:
    """Split every task (or read its stored split) and start its head."""
    head_cfg = dict(cfg.raw.get("head") or {})
    if run.members is not None:
        head_cfg.setdefault("members", run.members)
    stored_splits = run.stored_splits or {}
    if cfg.calibration.cross_fit and len(tasks) != 1:
        raise ValueError(f"calibration.cross_fit calibrates the head of one target task (post-training); this run "
                         f"has {len(tasks)} tasks")
    if cfg.calibration.selection and len(tasks) != 1:
        # the bootstrap chooses each draw's epoch on one task's errors; with several the run chose on their mean
        raise ValueError(f"calibration.selection corrects the interval of one target task (post-training); this "
                         f"run has {len(tasks)} tasks")
    cv_opts = cv_options(cfg.raw) if cfg.head_init == "cv" else None
    if cv_opts and cv_opts["epochs"] == "cv" and cfg.calibration.cross_fit:
        raise ValueError("calibration.cross_fit calibrates on copies that stop early like the final head; with "
                         "head_init_cv.epochs: cv the final head does not, so the two cannot be combined")
    prepared = PreparedTasks(selection_seed=cfg.seed + 3 if cfg.calibration.selection else None)
    with seeded(cfg.seed + 1):  # heads start the same in every run of this seed
        for task, samples in sorted(tasks.items()):
            samples = [s for s in samples if cache.has(s)]
            if len(samples) < 5 and task not in stored_splits:
                log.warning("task %s has %d usable samples; skipped", task, len(samples))
                continue
            meta = task_meta(samples)
            name = cfg.head_name if phase == "posttrain" and cfg.head_name else head_key(task)
            if task in stored_splits:
                prepared.records[task] = stored_splits[task]
            elif run.split_all:
                prepared.records[task] = draw_split(samples, cfg.raw)
            train, val, test = (stored.apply(samples, prepared.records[task], task) if task in prepared.records
                                else (samples, [], []))
            val, cal = hold_calibration_apart(cfg, task, val, prepared.records.get(task))
            if cal:
                prepared.records[task] = {**prepared.records[task], "calibration_fraction": cfg.calibration.fraction,
                                          "calibration": sorted({s.identity for s in cal})}
            start = HeadStart(cfg, task, name, meta, model.backbone.embedding_dim, head_cfg, model.trunk, cache,
                              model.heads)
            head_init, top = cfg.head_init, cfg.head_init_top
            fresh_only = cv_opts is not None and all(c["head_init"] == "fresh" for c in cv_opts["candidates"])
            if head_init == "cv" and (model.heads or fresh_only):
                if len(tasks) != 1:
                    raise ValueError("head_init: cv chooses the head start of one target task; "
                                     f"this run has {len(tasks)}")
                candidate, prepared.cv_reports[task] = start.choose_by_cv(train, val, out, progress=run.progress)
                if cv_opts["epochs"] == "cv":
                    prepared.final_epochs = epochs_from_cv(task, prepared.cv_reports[task])
                head_init, top = candidate["head_init"], candidate.get("head_init_top", DEFAULT_HEAD_INIT_TOP)
                prepared.chosen = candidate
                torch.manual_seed(cfg.seed + 1)  # the final head starts as had this candidate been asked for
            prepared.heads[name], described = start.make(head_init, top, train, f"{task} ({meta['kind']})")
            if described is not None:
                prepared.head_inits[task] = described
            prepared.data[task] = TaskData(name, train, val, test, cal)
            folds = cross_fit_folds(cfg, task, val, prepared.records.get(task))
            if folds:
                prepared.records[task] = {**prepared.records[task],
                                          "cross_fit_folds": [sorted({val[i].identity for i in f}) for f in folds]}
                prepared.cross_fit[task] = (start, prepared.chosen or {"head_init": head_init, "head_init_top": top},
                                            folds)
    return prepared


def epochs_from_cv(task: str, report: dict) -> int | None:
    """The final head's epochs under ``head_init_cv.epochs: cv``: the median (rounded
    up) of the chosen candidate's inner-fold fits' best epochs. None, with a warning,
    when no fold was fitted: the head then stops early on validation as usual."""
    best = report.get("best_epochs") or []
    if not best or min(best) < 1:
        log.warning("%s: head_init_cv.epochs=cv, but no inner fold gave a best epoch (%s); the final head "
                    "stops early on validation instead", task, best)
        return None
    report["final_epochs"] = int(np.ceil(np.median(best)))
    return report["final_epochs"]


def hold_calibration_apart(cfg: HeadPhaseConfig, task: str, val: list, record: dict | None) -> tuple[list, list]:
    """(validation for early stopping, calibration set): ``calibration.fraction``
    of ``val`` set apart as whole groups of the split's kind (see
    :func:`~mpa_ase.validation.splits.split_off`), seeded by the config's seed.
    Both parts, as drawn (whole groups make them uneven), need 10 compounds
    (an interval needs 10 scores); otherwise the head is calibrated on the
    whole validation side, as without the option, and a warning says so."""
    fraction = cfg.calibration.fraction
    if not fraction or not val:
        return val, []
    if record is None:
        raise ValueError(f"{task}: calibration.fraction needs the task's split record (its kind)")
    from mpa_ase.validation.splits import DEFAULT_THRESHOLD, split_off

    # seed + 1 starts the heads; a stream of its own here, so the division does not move them
    kept, apart = split_off(val, record["kind"], fraction, seed=cfg.seed + 2,
                            threshold=record.get("threshold", DEFAULT_THRESHOLD))
    kept, apart = [s for s in val if s.identity in kept], [s for s in val if s.identity in apart]
    if min(len(kept), len(apart)) < MIN_CALIBRATION:
        log.warning("%s: setting %.0f%% of %d validation compounds apart for calibration gave %d and %d (each "
                    "part needs %d); calibrated on the validation side early stopping reads", task,
                    100 * fraction, len(val), len(kept), len(apart), MIN_CALIBRATION)
        return val, []
    return kept, apart


def cross_fit_folds(cfg: HeadPhaseConfig, task: str, val: list, record: dict | None) -> list[list[int]] | None:
    """``calibration.cross_fit_folds`` folds of the validation side (positions in
    ``val``), each made of whole groups of the split's kind
    (:func:`~mpa_ase.validation.splits.group_folds`). None, and the head is
    calibrated on the validation side with a warning, with under 10
    validation compounds or fewer groups than folds."""
    if not cfg.calibration.cross_fit or not val:
        return None
    if record is None:
        raise ValueError(f"{task}: calibration.cross_fit needs the task's split record (its kind)")
    from mpa_ase.validation.splits import DEFAULT_THRESHOLD, group_folds

    k = cfg.calibration.cross_fit_folds
    # seed + 1 starts the heads; a stream of its own here (as for calibration.fraction)
    sets = group_folds(val, record["kind"], k, seed=cfg.seed + 2, threshold=record.get("threshold", DEFAULT_THRESHOLD))
    folds = [[i for i, s in enumerate(val) if s.identity in ids] for ids in sets]
    if len(val) < MIN_CALIBRATION or not all(folds):
        log.warning("%s: %d validation compounds in %d groups cannot make %d cross-fit folds (needs %d compounds "
                    "and a group per fold); calibrated on the validation side early stopping reads", task,
                    len(val), sum(1 for f in folds if f), k, MIN_CALIBRATION)
        return None
    return folds


def cross_fit_predictions(prepared: PreparedTasks, task: str, t: TaskData, progress: bool = True) -> dict:
    """Each validation fold predicted by a copy of the head trained as the final
    one was (same start, candidate, seeds and training side) but with early
    stopping on the other folds only: errors that the epoch choice did not see,
    for the whole validation side. ``index``: positions in ``t.val``;
    ``copy_std``: the copy's own spread (uncalibrated), kept for the record."""
    start, candidate, folds = prepared.cross_fit[task]
    out: dict = {"identity": [], "index": [], "y": [], "pred": [], "copy_std": [], "fold": []}
    for k in tqdm(range(len(folds)), desc=f"{task}: cross-fit calibration", disable=not progress):
        held = [t.val[i] for i in folds[k]]
        stop = [t.val[i] for j, f in enumerate(folds) if j != k for i in f]
        mean, std, _ = start.fold_predict(candidate, t.train, stop, held)
        out["identity"] += [s.identity for s in held]
        out["index"] += folds[k]
        out["y"] += [float(s.value) for s in held]
        out["pred"] += [float(v) for v in mean]
        out["copy_std"] += [float(v) for v in std]
        out["fold"] += [k] * len(held)
    return out


def selection_correction(prepared: PreparedTasks, trainer: Trainer, task: str, t: TaskData,
                         val_predictions: list | None) -> dict:
    """calibration.selection: the quantile level of the head's interval on its
    validation side, corrected for early stopping's choice of epoch
    (:func:`~mpa_ase.training.selection.selection_level`), or why it was left
    uncorrected (``skipped``)."""
    from mpa_ase.training.selection import MIN_GROUPS, recorded_epochs, selection_level
    from mpa_ase.validation.splits import DEFAULT_THRESHOLD, group_labels

    if len(t.val) < MIN_CALIBRATION:
        return {"skipped": f"{len(t.val)} validation compounds (the inner CV's out-of-fold predictions join them)"}
    recorded = recorded_epochs(val_predictions or [], task)
    if recorded is None:
        return {"skipped": "no per-epoch validation predictions were recorded for it"}
    record = prepared.records.get(task) or {"kind": "random"}
    groups = group_labels(t.val, record["kind"], record.get("threshold", DEFAULT_THRESHOLD))
    if len(set(groups)) < MIN_GROUPS:
        return {"skipped": f"{len(set(groups))} groups on the validation side (needs {MIN_GROUPS})"}
    head = trainer.headset.heads[t.head]
    return selection_level([s.value for s in t.val], *recorded, groups, INTERVAL_LEVEL,
                           log_target=head.transform.kind == "log10", seed=prepared.selection_seed)


def evaluate(headset: HeadSet, trainer: Trainer, prepared: PreparedTasks, cross_fit: dict | None = None,
             val_predictions: list | None = None) -> dict:
    """Per-task metrics on every side of the split, after calibrating each
    head's spread and its split-conformal interval on the cross-fit predictions
    of the validation side (``cross_fit``: task -> :func:`cross_fit_predictions`),
    the calibration set held apart (``calibration.fraction``), or else the
    validation side (and the inner CV's out-of-fold predictions, when that is
    small), at a level corrected for early stopping under
    ``calibration.selection`` (``val_predictions``: the trainer's per-epoch records)."""
    cross_fit = cross_fit or {}
    calibration, intervals, selection = {}, {}, {}
    for task, t in trainer.tasks.items():
        if task in cross_fit:
            # the copies' errors over the final head's own spread: the spread
            # that the interval scales on new compounds (the copies' can differ
            # in size, stopped at another epoch)
            x = cross_fit[task]
            h = headset.heads[t.head]
            h.std_scale.fill_(1.0)
            std = predict(headset, t.head, trainer.batcher, t.val)[1][np.asarray(x["index"], dtype=int)]
            y, pred = (np.asarray(x[k], dtype=np.float64) for k in ("y", "pred"))
            calibration[t.head] = set_spread_scale(h, y, pred, std) if len(h.members) >= 2 else 1.0
            sizes = " + ".join(str(x["fold"].count(k)) for k in range(max(x["fold"]) + 1))
            intervals[t.head] = set_conformal_interval(h, y, pred, std * calibration[t.head], INTERVAL_LEVEL,
                                                       f"validation, cross-fit ({sizes})")
            continue
        calibration[t.head] = calibrate(headset, t.head, trainer.batcher, t.cal or t.val)
        if prepared.selection_seed is not None:
            selection[task] = selection_correction(prepared, trainer, task, t, val_predictions)
        intervals[t.head] = conformal_interval(headset, t.head, trainer.batcher, t.cal or t.val,
                                               out_of_fold=prepared.cv_reports.get(task, {}).get("out_of_fold"),
                                               name="calibration" if t.cal else "validation",
                                               quantile_level=selection.get(task, {}).get("level"))
    metrics = {}
    for task, t in trainer.tasks.items():
        head = headset.heads[t.head]
        evals, predictions = {}, {}
        for split_name in ("train", "val", "cal", "test"):
            samples = getattr(t, split_name)
            if samples:
                predictions[split_name] = predict(headset, t.head, trainer.batcher, samples)
                evals[split_name] = regression_metrics(np.array([s.value for s in samples]), *predictions[split_name])
        if intervals[t.head] is None and head.problem == "regression":
            log.warning("head %s has no interval: %d validation compounds, fewer than %d%s", t.head, len(t.val),
                        MIN_CALIBRATION, "" if task in prepared.cv_reports else
                        " (with head_init: cv the inner CV's out-of-fold predictions would join them)")
        if intervals[t.head] is not None:
            q, calibrated_on = intervals[t.head]
            evals["interval"] = {"level": float(head.interval_level), "q": q,
                                 "floor": float(head.interval_floor), "calibrated_on": calibrated_on,
                                 **({"selection": selection[task]} if task in selection else {}),
                                 **{f"coverage_{side}": interval_coverage(
                                     head, [s.value for s in getattr(t, side)], *predictions[side])
                                    if side in predictions else None for side in ("val", "cal", "test")}}
        metrics[task] = {"head": t.head, "unit": head.unit, "std_scale": calibration[t.head],
                         "n_train": len(t.train), "n_val": len(t.val), "n_test": len(t.test),
                         **({"n_cal": len(t.cal)} if t.cal else {}), **evals}
        if task in cross_fit:
            metrics[task]["crossfit_predictions"] = cross_fit[task]
        if task in prepared.head_inits:
            metrics[task]["head_init"] = prepared.head_inits[task]
        if task in prepared.cv_reports:
            metrics[task]["head_start_cv"] = {k: v for k, v in prepared.cv_reports[task].items()
                                              if k not in ("key", "out_of_fold")}
        # per compound, so intervals and errors can be audited without the model
        for side in ("val", "cal", "test"):
            if side in predictions:
                mean, std = predictions[side]
                metrics[task][f"{side}_predictions"] = {
                    "identity": [s.identity for s in getattr(t, side)], "y": [s.value for s in getattr(t, side)],
                    "pred": mean.tolist(), "std": std.tolist(),
                }
    return metrics


def stamp_domain(head: PropertyHead, task: str, t: TaskData) -> None:
    """Record on a trained head what it was trained on: its task and training
    size, its applicability domain (elements, crystal or molecule) and its
    physical lower bound."""
    head.trained_on = f"{task} ({head.trained_on.split('(')[-1][:-1]}, n_train={len(t.train)})"
    head.config["trained_on"] = head.trained_on
    m = task_meta(t.train)
    head.config["elements"] = sorted(set().union(*(sample_elements(x) for x in t.train + t.val)))
    head.config["material"] = "crystal" if m["crystal"] else "molecule"
    head.config["lower_bound"] = physical_lower_bound(m["property"], m["unit"])


def regression_metrics(y, pred, std=None) -> dict:
    from mpa_ase.validation import metrics as vm

    out = vm.regression_metrics(y, pred)
    if std is not None and len(y) > 2:
        out["spearman_abs_err_std"] = vm.spearman_error_vs_std(y, pred, std)
        out["miscalibration_area"] = vm.miscalibration_area(y, pred, std)
    return out


def plot_learning_curve(history: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no process-wide backend switch

    if not history:
        return
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    ax.plot(epochs, [h["train_loss"] for h in history], label="train loss (Huber, standardised)")
    ax.plot(epochs, [h["val_metric"] for h in history], label="val MAE (standardised)")
    ax.set_xlabel("epoch")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_parity(metrics: dict, path: Path, max_panels: int = 6) -> None:
    from matplotlib.figure import Figure

    tasks = [t for t, m in metrics.items() if "test_predictions" in m][:max_panels]
    if not tasks:
        return
    fig = Figure(figsize=(3.6 * len(tasks), 3.6))
    axes = fig.subplots(1, len(tasks), squeeze=False)
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
