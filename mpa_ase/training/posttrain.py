"""Phase 3: train one target property from a checkpoint.

From the mid-trained checkpoint this is MPA's post-training; from the
phase-1 checkpoint it is direct fine-tuning of the pretrained model, the
baseline MPA must beat. The head is a deep ensemble (``head.members``,
5 by default) whose spread is the uncertainty. Its members start from the
checkpoint's heads that already predict the target best: with
``head_init: correlated`` (the default) the ``head_init_top`` (3) heads whose
outputs correlate most with the target's training labels (any property and
source: mid-training aligned them, so a liquid-entropy head is a head start
for solid entropy); ``related``: the same property from another source;
``fresh``: a new head; ``cv``: whichever of several such starts
(``head_init_cv.candidates``) has the lowest MAE in a k-fold cross-validation
inside the training split. Direct fine-tuning gets the same budget with
``head_init_cv: {candidates: direct}`` (fresh heads at other learning rates).

The target's split is the one stored when it was protected: ``splits`` (a
splits file or run folder) or, by default, the ``splits.json`` beside the
``init`` model when it holds the target; only a target never protected is
split here, after filtering. The split used is written to this run's
``splits.json``.
"""

from __future__ import annotations

from pathlib import Path

from mpa_ase.data import load_source
from mpa_ase.training.common import (RunOptions, backbone_and_trunk, draw_split, read_config, split_cfg,
                                     train_and_write, usable)
from mpa_ase.training.embeddings import EmbeddingCache
from mpa_ase.validation import stored


def stored_target_split(cfg: dict, task: str) -> dict | None:
    """The held-out split of ``task`` stored by an earlier phase, or None."""
    if cfg.get("splits"):
        record = stored.target_record(cfg["splits"], task)
        if record is None:
            raise stored.StoredSplitError(f"{cfg['splits']} holds no stored split of target {task!r}")
    else:
        beside = Path(cfg["init"]).parent / stored.FILE_NAME
        record = stored.target_record(beside, task) if beside.exists() else None
    if record is not None and cfg.get("split"):
        asked = split_cfg(cfg)
        have = stored.settings_of(record)
        if any(asked.get(k) != v for k, v in have.items()):
            raise stored.StoredSplitError(
                f"config asks for the split {asked} of {task!r} but the stored (protected) split is {have}; "
                "drop 'split' from the config or protect the target with those settings"
            )
    return record


def posttrain(config, *, progress: bool = True, stop_after: int | None = None, finish: bool = False) -> dict:
    cfg = read_config(config)
    target = cfg.get("target")
    if not target or "task" not in target or "data" not in target:
        raise ValueError("posttrain needs target: {data: <loader spec>, task: 'property@source'}")
    if not cfg.get("init"):
        raise ValueError("posttrain needs 'init': the model.pt of phase 1 (direct) or phase 2 (MPA)")
    model = backbone_and_trunk(cfg)
    samples = [s for s in load_source(target["data"]) if s.task == target["task"]]
    if not samples:
        raise ValueError(f"target task {target['task']!r} has no samples in {target['data']}")
    cfg.setdefault("head_name", samples[0].property)
    task = target["task"]
    cache = EmbeddingCache(model.backbone, cfg.get("cache_dir"), progress=progress)
    record = stored_target_split(cfg, task)
    if record is None:
        record = stored.check_held_out(draw_split(usable(samples, cache), cfg), task)
    stored.write(cfg["output"], targets={task: record})
    return train_and_write(cfg, "posttrain", model, {task: samples},
                           RunOptions(members=5, progress=progress, stop_after=stop_after, finish=finish,
                                      cache=cache, stored_splits={task: record}))
