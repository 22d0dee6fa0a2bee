"""Phase 2: align many sources (experimental and computational) through
per-source heads on a shared trunk, with the benchmark target protected.

``target`` (``{"data": loader spec, "task": "property@source"}``, or a list
of them) names the post-training targets: the compounds of its validation and test splits are
removed from every mid-training source (leakage guard), and the target tasks
themselves are left out unless ``exclude_target_task: false``.
"""

from __future__ import annotations

from mpa_ase.data import group_tasks, leakage_guard, load_source
from mpa_ase.training.common import backbone_and_trunk, load_samples, read_config, split_task, train_and_write


def targets(cfg: dict) -> list[dict]:
    target = cfg.get("target")
    return [] if not target else (list(target) if isinstance(target, list) else [target])


def protected_identities(cfg: dict) -> set[str]:
    """Identities of the validation and test compounds of every target."""
    protected: set[str] = set()
    for target in targets(cfg):
        samples = [s for s in load_source(target["data"]) if s.task == target["task"]]
        if not samples:
            raise ValueError(f"target task {target['task']!r} has no samples in {target['data']}")
        _, val, test = split_task(samples, cfg)
        protected |= {s.identity for s in val + test}
    return protected


def midtrain_samples(cfg: dict) -> tuple[list, dict]:
    samples = load_samples(cfg)
    protected = protected_identities(cfg)
    kept, removed = leakage_guard(samples, protected)
    dropped_task = 0
    if cfg.get("exclude_target_task", True):
        tasks = {t["task"] for t in targets(cfg)}
        dropped_task = sum(1 for s in kept if s.task in tasks)
        kept = [s for s in kept if s.task not in tasks]
    return kept, {"protected_identities": len(protected), "removed_by_leakage_guard": removed,
                  "removed_target_task": dropped_task}


def midtrain(config, *, progress: bool = True, stop_after: int | None = None, finish: bool = False) -> dict:
    cfg = read_config(config)
    spec, backbone, trunk, _ = backbone_and_trunk(cfg)
    samples, guard = midtrain_samples(cfg)
    if not samples:
        raise ValueError("mid-training has no data left after the leakage guard")
    summary = train_and_write(cfg, "midtrain", spec, backbone, trunk, group_tasks(samples), progress=progress,
                              extra_meta={"leakage_guard": guard}, stop_after=stop_after,
                              finish=finish)
    summary["leakage_guard"] = guard
    return summary
