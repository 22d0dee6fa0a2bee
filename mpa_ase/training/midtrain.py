"""Phase 2: align many sources (experimental and computational) through
per-source heads on a shared trunk, with the benchmark target protected.

``target`` (``{"data": loader spec, "task": "property@source"}``, or a list
of them) names the post-training targets: the compounds of its validation and test splits are
removed from every mid-training source (leakage guard), and the target tasks
themselves are left out unless ``exclude_target_task: false``.
"""

from __future__ import annotations

from mpa_ase.data import group_tasks, leakage_guard, load_source
from mpa_ase.training.common import (RunOptions, backbone_and_trunk, draw_split, load_samples, read_config,
                                     train_and_write, usable)
from mpa_ase.training.embeddings import EmbeddingCache
from mpa_ase.validation import stored


def targets(cfg: dict) -> list[dict]:
    target = cfg.get("target")
    return [] if not target else (list(target) if isinstance(target, list) else [target])


def target_splits(cfg: dict, cache: EmbeddingCache) -> dict[str, dict]:
    """The held-out split of every target, drawn once after every filter
    (task -> record of :mod:`mpa_ase.validation.stored`)."""
    records = {}
    for target in targets(cfg):
        samples = [s for s in load_source(target["data"]) if s.task == target["task"]]
        if not samples:
            raise ValueError(f"target task {target['task']!r} has no samples in {target['data']}")
        kept = usable(samples, cache)
        if not kept:
            raise ValueError(f"target task {target['task']!r}: none of its {len(samples)} samples can be embedded")
        # a target may set its own split (e.g. scaffold for molecules, cluster for crystals)
        own = {**cfg, "split": {**(cfg.get("split") or {}), **(target.get("split") or {})}}
        records[target["task"]] = stored.check_held_out(draw_split(kept, own), target["task"])
    return records


def protected_identities(records: dict[str, dict]) -> set[str]:
    """Identities of the validation and test compounds of every target."""
    protected: set[str] = set()
    for record in records.values():
        protected |= stored.held_out(record)
    return protected


def midtrain_samples(cfg: dict, records: dict[str, dict]) -> tuple[list, dict]:
    samples = load_samples(cfg)
    protected = protected_identities(records)
    kept, removed = leakage_guard(samples, protected)
    dropped_task = 0
    if cfg.get("exclude_target_task", True):
        tasks = set(records)
        dropped_task = sum(1 for s in kept if s.task in tasks)
        kept = [s for s in kept if s.task not in tasks]
    return kept, {"protected_identities": len(protected), "removed_by_leakage_guard": removed,
                  "removed_target_task": dropped_task}


def midtrain(config, *, progress: bool = True, stop_after: int | None = None, finish: bool = False) -> dict:
    cfg = read_config(config)
    model = backbone_and_trunk(cfg)
    cache = EmbeddingCache(model.backbone, cfg.get("cache_dir"), progress=progress)
    records = target_splits(cfg, cache)
    # stored before training: post-training and evaluation read these, never a second split
    stored.write(cfg["output"], targets=records)
    samples, guard = midtrain_samples(cfg, records)
    if not samples:
        raise ValueError("mid-training has no data left after the leakage guard")
    summary = train_and_write(cfg, "midtrain", model._replace(heads={}), group_tasks(samples),
                              RunOptions(progress=progress, extra_meta={"leakage_guard": guard},
                                         stop_after=stop_after, finish=finish, cache=cache))
    summary["leakage_guard"] = guard
    summary["splits"] = str(stored.write(cfg["output"]))
    return summary
