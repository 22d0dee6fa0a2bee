"""Key checks shared by every training config: an unknown key (a typo) is an
error naming the nearest valid key, never silently ignored."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field

import numpy as np


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


# ------------------------------------------------------------ typed sections
# Each section of a head-phase config as a dataclass: keys, types and ranges
# are checked when the config is read, before any data is loaded, and every
# error names the key (``trunk.hidden``) and what it must be.


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and np.isfinite(v)


def _int_at_least(key: str, value, low: int | None, optional: bool = False) -> None:
    ok = (optional and value is None) or (_is_int(value) and (low is None or value >= low))
    _need(ok, key, "an integer" + (f" >= {low}" if low is not None else ""), value)


def _dropout(key: str, value) -> None:
    _need(_is_number(value) and 0 <= value < 1, key, "a number in [0, 1)", value)


def _need(ok: bool, key: str, what: str, value) -> None:
    if not ok:
        hint = ""
        if isinstance(value, str):
            try:
                float(value)
                hint = " (YAML reads 1e-3 as text: write 1.0e-3)"
            except ValueError:
                pass
        raise ValueError(f"{key} must be {what}, got {value!r}{hint}")


@dataclass(frozen=True)
class BackboneSection:
    name: str = "chgnet"
    model: str | None = None

    def __post_init__(self):
        _need(isinstance(self.name, str) and bool(self.name), "backbone.name", "a backbone name", self.name)
        _need(self.model is None or isinstance(self.model, str), "backbone.model", "a model name or path",
              self.model)


@dataclass(frozen=True)
class TrunkSection:
    hidden: int = 128
    depth: int = 2
    dropout: float = 0.0

    def __post_init__(self):
        _int_at_least("trunk.hidden", self.hidden, 1)
        _int_at_least("trunk.depth", self.depth, 0)
        _dropout("trunk.dropout", self.dropout)


@dataclass(frozen=True)
class HeadSection:
    readout: str = "hybrid"
    hidden: int = 64
    members: int | None = None  # None: the phase's default (1; 5 for post-training)
    dropout: float = 0.0

    def __post_init__(self):
        from mpa_ase.heads import READOUTS

        _need(self.readout in READOUTS, "head.readout", f"one of {READOUTS}", self.readout)
        _int_at_least("head.hidden", self.hidden, 1)
        _int_at_least("head.members", self.members, 1, optional=True)
        _dropout("head.dropout", self.dropout)


@dataclass(frozen=True)
class SplitSection:
    kind: str = "random"
    val: float = 0.1
    test: float = 0.2
    seed: int | None = None  # None: the config's seed
    threshold: float | None = None  # redundancy split only

    def __post_init__(self):
        from mpa_ase.validation.splits import SPLITS

        section = "split"

        _need(self.kind in SPLITS, f"{section}.kind", f"one of {SPLITS}", self.kind)
        _need(_is_number(self.val) and 0 <= self.val < 1, f"{section}.val", "a fraction in [0, 1)", self.val)
        _need(_is_number(self.test) and 0 < self.test < 1, f"{section}.test", "a fraction in (0, 1)", self.test)
        _need(not (_is_number(self.val) and _is_number(self.test)) or self.val + self.test < 1,
              f"{section}.val + {section}.test", "below 1", (self.val, self.test))
        _int_at_least(f"{section}.seed", self.seed, None, optional=True)
        _need(self.threshold is None or _is_number(self.threshold) and 0 < self.threshold <= 1,
              f"{section}.threshold", "a similarity in (0, 1]", self.threshold)


@dataclass(frozen=True)
class CalibrationSection:
    """Where the heads' spread and intervals are calibrated, so that the data
    early stopping chose the epoch on does not make them too narrow.

    ``fraction``: that share of the validation side set apart (whole groups of
    the split's kind), never read by early stopping. ``cross_fit``: the
    validation side in ``cross_fit_folds`` folds (whole groups); for each, a
    copy of the head trained with early stopping on the other folds predicts
    it, and those errors of the whole side, over the final head's spread,
    calibrate the final head (one more fit per fold; post-training of one
    target). ``selection``: calibrate on the validation side early stopping
    used, at a quantile level raised for that choice of epoch
    (:mod:`mpa_ase.training.selection`; no extra fit). None of these: calibrate
    on the validation side early stopping used, as it is."""

    fraction: float = 0.0
    cross_fit: bool = False
    cross_fit_folds: int = 2
    selection: bool = False

    def __post_init__(self):
        _need(_is_number(self.fraction) and 0 <= self.fraction < 1, "calibration.fraction",
              "a fraction in [0, 1)", self.fraction)
        _need(isinstance(self.cross_fit, bool), "calibration.cross_fit", "true or false", self.cross_fit)
        _int_at_least("calibration.cross_fit_folds", self.cross_fit_folds, 2)
        _need(isinstance(self.selection, bool), "calibration.selection", "true or false", self.selection)
        if self.cross_fit and self.fraction:
            raise ValueError("calibration: cross_fit calibrates on the whole validation side and fraction sets "
                             "part of it apart; choose one")
        if self.selection and (self.cross_fit or self.fraction):
            raise ValueError("calibration: selection corrects an interval calibrated on the side early stopping "
                             "read; cross_fit and fraction calibrate on predictions it did not choose; choose one")


@dataclass(frozen=True)
class HeadPhaseConfig:
    """A pretrain/midtrain/posttrain config, typed and checked once when read.
    Sections keep their YAML names; ``raw`` is the mapping as given (what the
    run folder, the metrics and the resume fingerprint record)."""

    output: str
    backbone: BackboneSection
    trunk: TrunkSection
    head: HeadSection
    split: SplitSection
    calibration: CalibrationSection
    optim: object  # trainer.OptimConfig
    seed: int
    data: tuple
    init: str | None  # the model file a midtrain/posttrain run starts from
    head_init: str  # how a new head starts (training.head_start; its default when not given)
    head_init_top: int
    head_name: str | None
    cache_dir: str | None
    raw: dict = field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, cfg: dict) -> HeadPhaseConfig:
        from mpa_ase.training.trainer import OptimConfig

        sections = {}
        for name, section_cls in (("backbone", BackboneSection), ("trunk", TrunkSection), ("head", HeadSection),
                                  ("split", SplitSection), ("calibration", CalibrationSection)):
            given = cfg.get(name)
            if given is None:
                given = {}
            check_keys(name, given, section_cls.__dataclass_fields__)
            sections[name] = section_cls(**given)
        optim = cfg.get("optim") or {}
        check_keys("optim", optim, OptimConfig.__dataclass_fields__)
        _check_optim(optim)
        seed = cfg.get("seed", 0)
        _int_at_least("seed", seed, None)
        output = cfg.get("output")
        if output is None:
            raise ValueError("config needs an 'output' folder")
        _need(isinstance(output, (str, os.PathLike)) and str(output) != "", "output", "a folder path", output)
        data = cfg.get("data", [])
        if not isinstance(data, list):
            raise ValueError(f"data must be a list of loader specs ({{loader: NAME, ...}}), got "
                             f"{type(data).__name__}; write each source as a list item: "
                             "data: [{loader: chemicals, property: boiling_point}]")
        for k, spec in enumerate(data):
            if not isinstance(spec, dict) or "loader" not in spec:
                raise ValueError(f"data[{k}] must be a mapping with a 'loader' key, got {spec!r}")
        targets = cfg.get("target")
        for t in ([] if targets is None else targets if isinstance(targets, list) else [targets]):
            check_keys("target", t, {"data", "task", "split"})
            if t.get("split") is not None:
                check_keys("target split", t["split"], SplitSection.__dataclass_fields__)
                SplitSection(**t["split"])
        from mpa_ase.training.head_start import DEFAULT_HEAD_INIT, DEFAULT_HEAD_INIT_TOP, check_head_init, cv_options

        head_init, top = cfg.get("head_init", DEFAULT_HEAD_INIT), cfg.get("head_init_top", DEFAULT_HEAD_INIT_TOP)
        check_head_init(head_init, top)
        if head_init == "cv":
            cv_options(cfg)
        for key in ("init", "head_name", "cache_dir"):
            value = cfg.get(key)
            _need(value is None or isinstance(value, (str, os.PathLike)) and str(value) != "", key,
                  "a path or name", value)
        return cls(output=str(output), optim=OptimConfig(**{"seed": int(seed), **optim}), seed=int(seed),
                   data=tuple(data), raw=cfg, init=None if cfg.get("init") is None else str(cfg["init"]),
                   head_init=head_init, head_init_top=top, head_name=cfg.get("head_name"),
                   cache_dir=None if cfg.get("cache_dir") is None else str(cfg["cache_dir"]), **sections)


def _check_optim(optim: dict) -> None:
    ints = {"epochs": 1, "batch_size": 1, "patience": 1, "seed": None}
    for key, value in optim.items():
        if key in ints:
            _int_at_least(f"optim.{key}", value, ints[key])
        elif key == "trunk_lr":
            # 0 freezes the trunk (heads post-trained apart on one shared trunk)
            _need(value is None or _is_number(value) and value >= 0, "optim.trunk_lr", "a number >= 0 or null",
                  value)
        elif key in ("lr", "huber_delta", "sampling_temperature"):
            _need(_is_number(value) and value > 0, f"optim.{key}", "a positive number", value)
        elif key == "weight_decay":
            _need(_is_number(value) and value >= 0, "optim.weight_decay", "a number >= 0", value)
        elif key == "ema_decay":
            check_ema_decay(value)
        elif key == "keep":
            from mpa_ase.training.trainer import KEEP

            _need(value in KEEP, "optim.keep", f"one of {KEEP}", value)


def check_ema_decay(value) -> None:
    """``optim.ema_decay`` of any training phase: 0 (off) or a decay in (0, 1)."""
    _need(_is_number(value) and 0 <= value < 1, "optim.ema_decay", "a number in [0, 1) (0: off)", value)


def check_head_phase_config(cfg: dict) -> HeadPhaseConfig:
    """Nested checks of a pretrain/midtrain/posttrain config; the typed config."""
    return HeadPhaseConfig.from_dict(cfg)
