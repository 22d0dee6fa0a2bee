"""Splits computed once, after every filter, and stored with the run.

A run folder's ``splits.json`` holds, per task, the identities of each side
and the settings that drew them. ``targets`` are the held-out splits of the
post-training targets: the leakage guard protects their validation and test
identities, and post-training, ``mpa validate``, the default-model script
and the benchmark read them back instead of splitting again (a second split
of a filtered sample list is a different split). ``tasks`` are the splits a
phase used for its own tasks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mpa_ase.validation.splits import DEFAULT_THRESHOLD, split

FORMAT = "mpa-ase-splits/1"
FILE_NAME = "splits.json"
SIDES = ("train", "val", "test")


class StoredSplitError(ValueError):
    """A stored split does not fit the samples it is applied to."""


def draw(samples, kind: str = "random", val: float = 0.1, test: float = 0.2, seed: int = 0,
         threshold: float | None = None) -> dict:
    """Split ``samples`` by identity and return the record to store."""
    extra = {} if threshold is None else {"threshold": float(threshold)}
    sets = split(samples, kind, val, test, seed, **({"threshold": threshold} if threshold is not None else {}))
    record = {"kind": kind, "val_fraction": float(val), "test_fraction": float(test), "seed": int(seed), **extra}
    for side, ids in zip(SIDES, sets):
        record[side] = sorted(ids)
    return record


def check_held_out(record: dict, task: str) -> dict:
    """A target's split must hold something out to test on."""
    if not record["test"]:
        raise StoredSplitError(
            f"{task}: the {record['kind']} split (seed {record['seed']}) has an empty test side; use more data or "
            "a larger test fraction"
        )
    return record


def settings_of(record: dict) -> dict:
    """The split settings of a record, in the config's ``split`` form."""
    out = {"kind": record["kind"], "val": record["val_fraction"], "test": record["test_fraction"],
           "seed": record["seed"]}
    if "threshold" in record:
        out["threshold"] = record["threshold"]
    return out


def held_out(record: dict) -> set[str]:
    return set(record["val"]) | set(record["test"])


def apply(samples, record: dict, task: str = "") -> tuple[list, list, list]:
    """(train, val, test) samples by the stored identities; every sample's
    identity must be in the record (a sample the split never saw could have
    been trained on elsewhere)."""
    side_of = {}
    for side in SIDES:
        for identity in record[side]:
            side_of[identity] = side
    missing = sorted({s.identity for s in samples} - set(side_of))
    if missing:
        raise StoredSplitError(
            f"{task or 'task'}: {len(missing)} sample identities are not in the stored split (e.g. {missing[:3]}); "
            "the data changed since the split was drawn: rerun the phase that drew it"
        )
    out = {side: [] for side in SIDES}
    for s in samples:
        out[side_of[s.identity]].append(s)
    return out["train"], out["val"], out["test"]


def _file(path) -> Path:
    """A run folder's splits file, or the named .json file."""
    path = Path(path)
    return path if path.suffix == ".json" else path / FILE_NAME


def read(path: str | Path) -> dict:
    """``{"targets": {task: record}, "tasks": {task: record}}`` of a splits file."""
    path = _file(path)
    if not path.exists():
        raise FileNotFoundError(f"split file {path} not found")
    try:
        obj = json.loads(path.read_text())
    except ValueError as exc:
        raise StoredSplitError(f"{path} is not a readable split file ({exc})") from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise StoredSplitError(f"{path} is not an mpa-ase split file (format {FORMAT!r})")
    return {"targets": dict(obj.get("targets", {})), "tasks": dict(obj.get("tasks", {}))}


def write(path: str | Path, targets: dict | None = None, tasks: dict | None = None) -> Path:
    """Write (atomically) a splits file; sections not given are kept from the file there.
    Under torch.distributed only rank 0 writes."""
    from mpa_ase.parallel import is_main

    path = _file(path)
    if not is_main():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    old = read(path) if path.exists() else {"targets": {}, "tasks": {}}
    obj = {"format": FORMAT,
           "targets": old["targets"] if targets is None else targets,
           "tasks": old["tasks"] if tasks is None else tasks}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=0, sort_keys=True))
    os.replace(tmp, path)
    return path


def target_record(path: str | Path, task: str) -> dict | None:
    """The stored held-out split of ``task`` in a splits file (None when absent)."""
    return read(path)["targets"].get(task)


__all__ = ["DEFAULT_THRESHOLD", "FILE_NAME", "FORMAT", "StoredSplitError", "apply", "check_held_out", "draw", "held_out", "read",
           "settings_of", "target_record", "write"]
