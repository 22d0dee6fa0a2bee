"""Per-atom embeddings of a frozen backbone, computed once and cached on disk.

With the backbone frozen, every epoch of head training would recompute the
same features; caching them makes CPU training practical. The cache file is
named after the backbone's description, so another model never reads it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mpa_ase.backbones.base import Backbone
from mpa_ase.checkpoint import atomic_save
from mpa_ase.errors import MPAInputError
from mpa_ase.graph import AtomsGraph
from mpa_ase import parallel as dist

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return Path(os.environ.get("MPA_CACHE", Path.home() / ".cache" / "mpa-ase")) / "embeddings"


class EmbeddingCache:
    """Maps structure keys (see :class:`~mpa_ase.data.Sample`) to (numbers, features)."""

    def __init__(self, backbone: Backbone, folder: str | Path | None = None, batch_size: int = 32,
                 progress: bool = True, save_every: int = 5000):
        self.backbone = backbone.eval()
        tag = hashlib.sha1(json.dumps(backbone.describe(), sort_keys=True, default=str).encode()).hexdigest()[:12]
        self.path = Path(folder or default_cache_dir()) / f"{backbone.name}-{tag}.pt"
        self.batch_size = batch_size
        self.save_every = save_every
        self.progress = progress
        self.store: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.failed: dict[str, str] = {}
        if self.path.exists():
            try:
                obj = torch.load(self.path, map_location="cpu", weights_only=True)
                self.store = {k: (v[0], v[1]) for k, v in obj["store"].items()}
                self.failed = dict(obj.get("failed", {}))
            except Exception as exc:  # a damaged cache is only a cache: rebuild it
                log.warning("embedding cache %s unreadable (%s); rebuilding", self.path, exc)

    def save(self) -> None:
        atomic_save({"store": {k: list(v) for k, v in self.store.items()}, "failed": self.failed}, self.path)

    def fill(self, samples) -> None:
        """Compute the embeddings of every structure of ``samples`` not cached yet.

        Under torch.distributed each rank computes its share of the missing
        structures, all ranks then hold every result, and rank 0 saves.
        """
        rank, world = dist.rank_world()
        dist.barrier()  # every rank has read the same file before rank 0 may write it
        todo = [s for s in samples if any(k not in self.store and k not in self.failed for k in s.keys)]
        if not todo:
            return
        if world == 1:
            self._fill(todo, save=True)
            return
        before = set(self.store) | set(self.failed)
        self._fill(dist.share(todo, rank, world), save=rank == 0)
        mine = ({k: v for k, v in self.store.items() if k not in before},
                {k: v for k, v in self.failed.items() if k not in before})
        for store, failed in dist.all_gather_objects(mine):
            self.store.update(store)
            self.failed.update(failed)
        if rank == 0:
            self.save()
        dist.barrier()

    def _fill(self, todo, save: bool) -> None:
        dtype = self.backbone.default_dtype
        device = next(self.backbone.parameters(), torch.zeros(())).device
        pending: list[tuple[str, object]] = []
        saved = len(self.store)
        bar = tqdm(total=len(todo), desc=f"embeddings ({self.backbone.name})", leave=False,
                   disable=not self.progress or not dist.is_main())
        for sample in todo:
            try:
                structures = sample.structures()
            except ValueError as exc:  # RDKit could not embed this molecule
                for k in sample.keys:
                    self.failed[k] = str(exc)
                bar.update(1)
                continue
            pending.extend((k, a) for k, a in zip(sample.keys, structures) if k not in self.store)
            bar.update(1)
            if len(pending) >= self.batch_size:
                self._run(pending, dtype, device)
                pending = []
                if save and len(self.store) - saved >= self.save_every:  # an interrupted fill keeps its work
                    self.save()
                    saved = len(self.store)
        if pending:
            self._run(pending, dtype, device)
        bar.close()
        if save:
            self.save()

    def _run(self, items, dtype, device) -> None:
        try:
            with torch.no_grad():
                graph = AtomsGraph.from_atoms([a for _, a in items], self.backbone.cutoff, dtype=dtype, device=device)
                self.backbone.check_elements(graph.unique_elements())
                feats = self.backbone(graph)["features"].float().cpu()
        except MPAInputError:
            if len(items) == 1:
                self.failed[items[0][0]] = "rejected by the backbone or the input checks"
                return
            for item in items:  # find the offending structure, keep the rest
                self._run([item], dtype, device)
            return
        for (key, _), f, z in zip(items, graph.split(feats), graph.split(graph.numbers.cpu())):
            self.store[key] = (z.clone(), f.clone())

    def has(self, sample) -> bool:
        return all(k in self.store for k in sample.keys)
