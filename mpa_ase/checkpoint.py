"""Model files: atomic writes, clear errors on damage, and (re)building models.

A model file holds the backbone's spec (plugin name + model name), the
trunk and every head with its unit and provenance, never the backbone's
weights: those come from the backbone's own package (e.g. the chgnet wheel).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from mpa_ase import __version__
from mpa_ase.errors import CheckpointError
from mpa_ase.heads import PropertyHead, TargetTransform, Trunk

FORMAT = "mpa-ase-model/1"
DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "default.pt"
DEFAULT_BACKBONE = "chgnet"


def atomic_save(obj, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash mid-write leaves the previous file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def safe_load(path: str | Path, expect_format: str | None = None) -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is corrupted or truncated ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict) or (expect_format and obj.get("format") != expect_format):
        got = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path} is not an mpa-ase file of format {expect_format!r} (found {got!r})")
    return obj


def head_state(head: PropertyHead) -> dict:
    t = head.transform
    return {
        "config": dict(head.config),
        "transform": {"kind": t.kind, "shift": float(t.shift), "scale": float(t.scale)},
        "state": {k: v.detach().cpu() for k, v in head.state_dict().items()},
    }


def build_head(entry: dict) -> PropertyHead:
    cfg = dict(entry["config"])
    if "task" in cfg:  # files from before "task" meant only property@source
        cfg["problem"] = cfg.pop("task")
    head = PropertyHead(transform=TargetTransform(**entry["transform"]), **cfg)
    state = dict(entry["state"])
    state.setdefault("std_scale", torch.tensor(1.0, dtype=torch.float64))  # files from before calibration
    state.setdefault("interval_q", torch.tensor(float("nan"), dtype=torch.float64))  # ... and before intervals
    state.setdefault("interval_level", torch.tensor(0.9, dtype=torch.float64))
    state.setdefault("interval_floor", torch.tensor(0.0, dtype=torch.float64))  # ... and before the floor
    head.load_state_dict(state)
    return head


def model_file(backbone: dict, trunk: Trunk | None, heads: dict[str, PropertyHead], *,
               backbone_state: dict | None = None, energy_shift=None, **meta) -> dict:
    """The content of a model file. ``backbone_state`` (a fine-tuned backbone's
    weights) and ``energy_shift`` (its refitted per-element energies, eV) are
    stored only when the backbone was trained; otherwise the backbone's weights
    come from its own package."""
    extra = {}
    if backbone_state is not None:
        extra["backbone_state"] = {k: v.detach().cpu() for k, v in backbone_state.items()}
    if energy_shift is not None:
        extra["energy_shift"] = torch.as_tensor(energy_shift, dtype=torch.float64).detach().cpu()
    return {
        **extra,
        "format": FORMAT,
        "code_version": __version__,
        "backbone": dict(backbone),
        "trunk": None if trunk is None else {
            "config": dict(trunk.config), "state": {k: v.detach().cpu() for k, v in trunk.state_dict().items()}
        },
        "heads": {name: head_state(h) for name, h in heads.items()},
        "meta": meta,
    }


def _parts(obj: dict, path) -> tuple[dict, Trunk | None, dict[str, PropertyHead], dict]:
    with torch.random.fork_rng(devices=[]):  # reading a file draws no numbers from the caller's RNG
        return _build_parts(obj, path)


def _build_parts(obj: dict, path) -> tuple[dict, Trunk | None, dict[str, PropertyHead], dict]:
    try:
        trunk = None
        if obj["trunk"] is not None:
            trunk = Trunk(**obj["trunk"]["config"])
            trunk.load_state_dict(obj["trunk"]["state"])
        heads = {name: build_head(entry) for name, entry in obj["heads"].items()}
        spec = dict(obj["backbone"])
        spec["name"]
    except (KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path}: damaged model file ({type(exc).__name__}: {exc})") from exc
    return spec, trunk, heads, obj.get("meta", {})


def read_parts(path: str | Path) -> tuple[dict, Trunk | None, dict[str, PropertyHead], dict]:
    """(backbone spec, trunk, heads, meta) of a model file."""
    return _parts(safe_load(path, FORMAT), path)


def model_from_file(obj: dict, path, backbone_name: str | None = None):
    """An :class:`~mpa_ase.model.MPAModel` from a loaded model file: the backbone
    from its plugin, with the file's own backbone weights when it carries them
    (a fine-tuned backbone)."""
    from mpa_ase.backbones import load_backbone
    from mpa_ase.model import MPAModel

    spec, trunk, heads, _ = _parts(obj, path)
    if backbone_name is not None and backbone_name != spec["name"]:
        raise CheckpointError(
            f"{path} is an mpa-ase model file built on the {spec['name']!r} backbone, not {backbone_name!r}; "
            f"pass backbone=None (or backbone={spec['name']!r}) to load it"
        )
    backbone = load_backbone(spec["name"], model=spec.get("model"))
    state = obj.get("backbone_state")
    shift = obj.get("energy_shift")
    if state is not None:
        try:
            backbone.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"{path}: its fine-tuned {spec['name']} weights do not fit the installed {spec['name']} model "
                f"{spec.get('model')!r} ({str(exc).splitlines()[0]})"
            ) from exc
    for name, head in heads.items():
        dim = head.config["dim"]
        if dim != backbone.embedding_dim:
            raise CheckpointError(
                f"{path}: head {name!r} expects {dim}-wide embeddings, backbone {spec['name']} gives "
                f"{backbone.embedding_dim}"
            )
    if shift is not None and (not isinstance(shift, torch.Tensor) or shift.numel() != 119):
        raise CheckpointError(f"{path}: damaged model file (energy_shift is not a 119-long tensor)")
    return MPAModel(backbone, heads, trunk=trunk, energy_shift=shift)


def _try_read(path: Path):
    """The loaded object of an existing file, or the exception that loading raised."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not readable as ours"
        return exc


def load_model(model="default", backbone: str | None = None):
    """Decide, in one place, what ``model=`` means, and return an :class:`~mpa_ase.model.MPAModel`.

    - an ``MPAModel``: itself;
    - ``"default"``/None without ``backbone``: the shipped default model (an
      error if its file is missing: never a silent fallback to a bare backbone);
    - ``"default"``/None with ``backbone``: that plugin's own default weights, no heads;
    - the path of an mpa-ase model file (read once; a file built on another
      backbone than ``backbone`` is refused);
    - anything else: a model name or file for the backbone plugin
      (``backbone``, or the default backbone).
    """
    from mpa_ase.backbones import load_backbone
    from mpa_ase.model import MPAModel

    if isinstance(model, MPAModel):
        return model
    if model in (None, "default"):
        if backbone is None:
            if not DEFAULT_MODEL.exists():
                raise CheckpointError(
                    f"the shipped default model {DEFAULT_MODEL} is missing (a broken install?); reinstall "
                    f"mpa-ase, or pass backbone='{DEFAULT_BACKBONE}' for the bare backbone without heads"
                )
            return model_from_file(safe_load(DEFAULT_MODEL, FORMAT), DEFAULT_MODEL)
        return MPAModel(load_backbone(backbone, model=None))
    if not isinstance(model, (str, Path)):
        raise TypeError(f"model must be a name, a path or an MPAModel, got {type(model).__name__}")
    path = Path(model)
    if path.is_file():
        obj = _try_read(path)
        if isinstance(obj, dict) and str(obj.get("format", "")).startswith("mpa-ase"):
            if obj["format"] != FORMAT:
                raise CheckpointError(f"{path} is an mpa-ase file of format {obj['format']!r}, not a model "
                                      f"file ({FORMAT!r})")
            return model_from_file(obj, path, backbone)
        if backbone is None and path.suffix == ".pt":
            why = (f"{type(obj).__name__}: {str(obj).splitlines()[0][:200]}" if isinstance(obj, Exception)
                   else "no mpa-ase format tag")
            raise CheckpointError(f"{path} is corrupted or truncated, or not a readable mpa-ase model file ({why}); "
                                  "if it is a backbone's own weights file, name the backbone (backbone=...)")
    elif backbone is None and path.suffix == ".pt":
        raise CheckpointError(f"model file {path} does not exist")
    return MPAModel(load_backbone(backbone or DEFAULT_BACKBONE, model=str(model)))


def is_model_file(path) -> bool:
    """True for an existing file that is an mpa-ase model file (not a backbone's own file)."""
    p = Path(path)
    if not p.is_file():
        return False
    obj = _try_read(p)
    return isinstance(obj, dict) and obj.get("format") == FORMAT
