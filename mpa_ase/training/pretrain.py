"""Phase 1: start from a backbone pre-trained on first-principles data.

The pretrained backbone (e.g. CHGNet on MPtrj) is the broad pre-training.
With ``data`` (computational sources, e.g. QM9 or Alexandria-derived
properties) the shared trunk is also trained on them; without, the phase
records the backbone and a freshly initialised trunk: the starting point
of direct fine-tuning.
"""

from __future__ import annotations

from pathlib import Path

from mpa_ase.checkpoint import atomic_save, model_file
from mpa_ase.data import group_tasks
from mpa_ase.parallel import barrier, is_main
from mpa_ase.training.common import RunOptions, backbone_and_trunk, load_samples, read_config, train_and_write


def pretrain(config, *, progress: bool = True, stop_after: int | None = None, finish: bool = False) -> dict:
    cfg = read_config(config)
    if cfg.get("init"):
        raise ValueError("pretrain starts from a backbone; 'init' belongs to midtrain/posttrain")
    model = backbone_and_trunk(cfg)
    samples = load_samples(cfg)
    if not samples:
        out = Path(cfg["output"])
        if is_main():
            atomic_save(model_file(model.spec, model.trunk, {}, phase="pretrain", config=cfg), out / "model.pt")
        barrier()
        return {"finished": True, "output": str(out), "model": str(out / "model.pt"), "metrics": {}}
    return train_and_write(cfg, "pretrain", model, group_tasks(samples),
                           RunOptions(progress=progress, stop_after=stop_after, finish=finish))
