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
    head = PropertyHead(transform=TargetTransform(**entry["transform"]), **cfg)
    state = dict(entry["state"])
    state.setdefault("std_scale", torch.tensor(1.0, dtype=torch.float64))  # files from before calibration
    head.load_state_dict(state)
    return head


def model_file(backbone: dict, trunk: Trunk | None, heads: dict[str, PropertyHead], **meta) -> dict:
    return {
        "format": FORMAT,
        "code_version": __version__,
        "backbone": dict(backbone),
        "trunk": None if trunk is None else {
            "config": dict(trunk.config), "state": {k: v.detach().cpu() for k, v in trunk.state_dict().items()}
        },
        "heads": {name: head_state(h) for name, h in heads.items()},
        "meta": meta,
    }


def read_parts(path: str | Path) -> tuple[dict, Trunk | None, dict[str, PropertyHead], dict]:
    """(backbone spec, trunk, heads, meta) of a model file."""
    obj = safe_load(path, FORMAT)
    try:
        trunk = None
        if obj["trunk"] is not None:
            trunk = Trunk(**obj["trunk"]["config"])
            trunk.load_state_dict(obj["trunk"]["state"])
        heads = {name: build_head(entry) for name, entry in obj["heads"].items()}
    except (KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path}: damaged model file ({exc})") from exc
    return obj["backbone"], trunk, heads, obj.get("meta", {})


def load_model(path: str | Path):
    """An :class:`~mpa_ase.model.MPAModel` from a model file (backbone from its plugin)."""
    from mpa_ase.backbones import load_backbone
    from mpa_ase.model import MPAModel

    spec, trunk, heads, _ = read_parts(path)
    backbone = load_backbone(spec["name"], model=spec.get("model"))
    for name, head in heads.items():
        dim = head.config["dim"]
        if dim != backbone.embedding_dim:
            raise CheckpointError(
                f"{path}: head {name!r} expects {dim}-wide embeddings, backbone {spec['name']} gives "
                f"{backbone.embedding_dim}"
            )
    return MPAModel(backbone, heads, trunk=trunk)


def is_model_file(path) -> bool:
    """True for an existing file that is an mpa-ase model file (not a backbone's own file)."""
    p = Path(path)
    if not p.is_file():
        return False
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return isinstance(obj, dict) and obj.get("format") == FORMAT
