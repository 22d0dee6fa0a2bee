"""Evaluate a trained head of a model file on its stored test split: ``mpa validate``.

It lives with training (it reads run folders, embeddings and heads); ``mpa_ase.validation``
itself (splits, metrics, stored split files) depends on nothing in ``mpa_ase.training``."""

from __future__ import annotations

import numpy as np

from pathlib import Path

from mpa_ase.validation import stored
from mpa_ase.validation.metrics import all_metrics
from mpa_ase.validation.splits import DEFAULT_THRESHOLD


def validate(model_path: str, data: dict, task: str, head: str | None = None, split_kind: str = "random",
             val: float = 0.1, test: float = 0.2, seed: int = 0, threshold: float = DEFAULT_THRESHOLD,
             cache_dir: str | None = None, splits: str | None = None,
             progress: bool = False) -> dict:
    """Metrics of one head of a model file on the test split of ``task`` (split by identity).

    The split is the one stored with the training run: ``splits`` (a splits
    file or run folder), else the ``splits.json`` beside the model when it
    holds ``task``. Only without a stored split is one drawn here, after
    filtering, from the split settings given (``split_source`` in the result
    says which). Returns all metrics of :func:`all_metrics` plus the
    predictions. ``threshold`` is the similarity bound of the redundancy split.
    """
    from mpa_ase.backbones import load_backbone
    from mpa_ase.checkpoint import read_parts
    from mpa_ase.data import load_source
    from mpa_ase.training.embeddings import EmbeddingCache
    from mpa_ase.training.trainer import Batcher, HeadSet, predict

    spec, trunk, heads, _ = read_parts(model_path)
    name = head or (next(iter(heads)) if len(heads) == 1 else None)
    if name not in heads:
        raise ValueError(f"choose a head with --head; the model has {sorted(heads)}")
    samples = [s for s in load_source(data) if s.task == task]
    if not samples:
        raise ValueError(f"no samples of task {task!r} in {data}")
    backbone = load_backbone(spec["name"], model=spec.get("model"))
    cache = EmbeddingCache(backbone, cache_dir, progress=progress)
    cache.fill(samples)
    samples = [s for s in samples if cache.has(s)]
    source = splits or Path(model_path).parent / stored.FILE_NAME
    record = stored.target_record(source, task) if (splits or Path(source).exists()) else None
    if splits and record is None:
        raise stored.StoredSplitError(f"{splits} holds no stored split of {task!r}")
    if record is None:
        record = stored.draw(samples, split_kind, val, test, seed, threshold if split_kind == "redundancy" else None)
        split_source = "drawn here from the given settings (no stored split found)"
    else:
        split_source = str(stored._file(source))
        split_kind, seed = record["kind"], record["seed"]
    train, _, test_set = stored.apply(samples, stored.check_held_out(record, task), task)
    headset = HeadSet(trunk, {name: heads[name]})
    mean, std = predict(headset, name, Batcher(cache), test_set)
    y = np.array([s.value for s in test_set])
    metrics = all_metrics([s.value for s in train], y, mean, std)
    return {"head": name, "unit": heads[name].unit, "task": task, "split": split_kind, "seed": seed,
            "split_source": split_source,
            "n_train": len(train), "n_test": len(test_set), **metrics,
            "predictions": {"identity": [s.identity for s in test_set], "y": y.tolist(), "pred": mean.tolist(),
                            "std": std.tolist()}}
