"""The MPA training recipe: pretrain -> midtrain (per-source heads) -> posttrain (one target);
and ``finetune``: training the backbone (the potential) on DFT data."""

from __future__ import annotations


def run_phase(phase: str, config, *, progress: bool = True, stop_after: int | None = None,
              restart: bool = False, finish: bool = False) -> dict:
    """Run one phase from a YAML path or a dict; resumes from the output folder's checkpoint.

    ``finish`` ends an interrupted run early: its best weights so far become the model.
    Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the run joins the
    process group and trains data-parallel (:mod:`mpa_ase.parallel`).
    """
    from pathlib import Path

    from mpa_ase import parallel as distributed
    from mpa_ase.training.common import PHASES, read_config
    from mpa_ase.training.finetune import finetune, read_finetune_config
    from mpa_ase.training.midtrain import midtrain
    from mpa_ase.training.posttrain import posttrain
    from mpa_ase.training.pretrain import pretrain

    if phase not in PHASES + ("finetune",):
        raise ValueError(f"unknown phase {phase!r}; choose from {PHASES + ('finetune',)}")
    cfg = read_finetune_config(config) if phase == "finetune" else read_config(config)
    if cfg.get("phase", phase) != phase:
        raise ValueError(f"config is for phase {cfg['phase']!r}, not {phase!r}")
    fn = {"pretrain": pretrain, "midtrain": midtrain, "posttrain": posttrain, "finetune": finetune}[phase]
    with distributed.session(cfg.get("device")):
        if restart and distributed.is_main():
            ckpt = Path(cfg["output"]) / "checkpoint.pt"
            if ckpt.exists():
                ckpt.unlink()
        distributed.barrier()
        return fn(cfg, progress=progress, stop_after=stop_after, finish=finish)
