"""Key checks shared by every training config: an unknown key (a typo) is an
error naming the nearest valid key, never silently ignored."""

from __future__ import annotations

import difflib


def load_yaml_or_dict(path_or_dict) -> dict:
    """A config given as a dict (copied) or as a YAML file path."""
    if isinstance(path_or_dict, dict):
        return dict(path_or_dict)
    from pathlib import Path

    import yaml

    path = Path(path_or_dict)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} not found")
    cfg = yaml.safe_load(path.read_text()) or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: a config is a mapping of keys, got {type(cfg).__name__}")
    return cfg


def check_keys(section: str, d, known) -> None:
    """Raise ValueError for keys of mapping ``d`` not in ``known``, with the nearest valid one."""
    if not isinstance(d, dict):
        raise ValueError(f"{section} must be a mapping of {sorted(known)}, got {type(d).__name__}")
    unknown = sorted(set(d) - set(known))
    if unknown:
        hints = []
        for u in unknown:
            near = difflib.get_close_matches(str(u), [str(k) for k in known], 1)
            hints.append(f"{u!r} (did you mean {near[0]!r}?)" if near else repr(u))
        raise ValueError(f"unknown {section} key(s) {', '.join(hints)}; known: {sorted(known)}")


HEAD_PHASE_SECTIONS = {
    "backbone": {"name", "model"},
    "trunk": {"hidden", "depth", "dropout"},
    "head": {"readout", "hidden", "members", "dropout"},
    "split": {"kind", "val", "test", "seed", "threshold"},
}


def check_head_phase_config(cfg: dict) -> None:
    """Nested checks of a pretrain/midtrain/posttrain config."""
    from mpa_ase.training.trainer import OptimConfig

    for section, known in HEAD_PHASE_SECTIONS.items():
        if cfg.get(section) is not None:
            check_keys(section, cfg[section], known)
    if cfg.get("optim") is not None:
        check_keys("optim", cfg["optim"], OptimConfig.__dataclass_fields__)
    data = cfg.get("data", [])
    if not isinstance(data, list):
        raise ValueError(f"data must be a list of loader specs ({{loader: NAME, ...}}), got {type(data).__name__}; "
                         "write each source as a list item: data: [{loader: chemicals, property: boiling_point}]")
    for k, spec in enumerate(data):
        if not isinstance(spec, dict) or "loader" not in spec:
            raise ValueError(f"data[{k}] must be a mapping with a 'loader' key, got {spec!r}")
    targets = cfg.get("target")
    for t in ([] if targets is None else targets if isinstance(targets, list) else [targets]):
        check_keys("target", t, {"data", "task", "split"})
        if t.get("split") is not None:
            check_keys("target split", t["split"], HEAD_PHASE_SECTIONS["split"])
