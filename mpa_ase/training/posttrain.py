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
inside the training split.
"""

from __future__ import annotations

from mpa_ase.data import load_source
from mpa_ase.training.common import backbone_and_trunk, read_config, train_and_write


def posttrain(config, *, progress: bool = True, stop_after: int | None = None, finish: bool = False) -> dict:
    cfg = read_config(config)
    target = cfg.get("target")
    if not target or "task" not in target or "data" not in target:
        raise ValueError("posttrain needs target: {data: <loader spec>, task: 'property@source'}")
    if not cfg.get("init"):
        raise ValueError("posttrain needs 'init': the model.pt of phase 1 (direct) or phase 2 (MPA)")
    spec, backbone, trunk, trained_heads = backbone_and_trunk(cfg)
    samples = [s for s in load_source(target["data"]) if s.task == target["task"]]
    if not samples:
        raise ValueError(f"target task {target['task']!r} has no samples in {target['data']}")
    cfg.setdefault("head_name", samples[0].property)
    return train_and_write(cfg, "posttrain", spec, backbone, trunk, {target["task"]: samples}, members=5,
                           progress=progress, stop_after=stop_after, finish=finish, source_heads=trained_heads)
