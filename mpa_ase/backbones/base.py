"""The backbone protocol every plugin implements."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from mpa_ase.errors import UnsupportedElementError
from mpa_ase.graph import AtomsGraph


def element_symbols(numbers) -> list[str]:
    from ase.data import chemical_symbols

    return [chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}" for z in numbers]


class Backbone(nn.Module):
    """A pretrained interatomic model seen through an :class:`AtomsGraph`.

    Subclasses set ``name``, ``cutoff`` (Å), ``supported_numbers``,
    ``embedding_dim`` and ``default_dtype``, and implement :meth:`forward`,
    which returns at least

    - ``"energies"``: per-atom energies, shape (N,), in eV (their sum is the
      total energy, isolated-atom references included);
    - ``"features"``: per-atom invariant features, shape (N, embedding_dim),
      the embeddings property heads read.

    and optionally per-atom extras listed in ``extra_properties`` (e.g.
    ``"magmoms"``). Geometry must be read through ``graph.edge_vectors()``
    (or ``graph.positions``/``graph.cell``) so that autograd gives forces and
    stress.
    """

    name: ClassVar[str] = "backbone"
    extra_properties: ClassVar[tuple[str, ...]] = ()
    cutoff: float
    supported_numbers: frozenset[int]
    embedding_dim: int
    default_dtype: torch.dtype = torch.float32

    def forward(self, graph: AtomsGraph) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_elements(self, numbers) -> None:
        unknown = sorted(set(int(z) for z in numbers) - set(self.supported_numbers))
        if unknown:
            raise UnsupportedElementError(
                f"backbone {self.name!r} does not support element(s) "
                f"{', '.join(element_symbols(unknown))}"
            )

    def blocks(self) -> list[nn.Module]:
        """The backbone's parts from input to output, for ``trainable: last N``
        fine-tuning; plugins override this (the default is one block, the whole)."""
        return [self]

    def describe(self) -> dict:
        """Short metadata shown by ``mpa list-backbones`` and stored in checkpoints."""
        return {
            "name": self.name,
            "cutoff": self.cutoff,
            "embedding_dim": self.embedding_dim,
            "n_elements": len(self.supported_numbers),
            "extra_properties": list(self.extra_properties),
        }
