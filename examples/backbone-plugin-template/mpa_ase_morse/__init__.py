"""A Morse pair potential as an mpa-ase backbone (template for plugin authors)."""

from __future__ import annotations

import torch

from mpa_ase.backbones import Backbone
from mpa_ase.graph import AtomsGraph

# Girifalco & Weizer (1959) Morse parameters: D (eV), alpha (1/Å), r0 (Å)
PARAMETERS = {29: (0.3429, 1.3588, 2.866), 13: (0.2703, 1.1646, 3.253), 47: (0.3323, 1.3690, 3.115)}


class MorseBackbone(Backbone):
    name = "morse"
    default_dtype = torch.float64

    def __init__(self, element: int = 29, cutoff: float = 6.0):
        super().__init__()
        depth, alpha, r0 = PARAMETERS[element]
        self.register_buffer("params", torch.tensor([depth, alpha, r0], dtype=torch.float64))
        self.cutoff = cutoff
        self.supported_numbers = frozenset({element})
        self.embedding_dim = 1

    def forward(self, graph: AtomsGraph) -> dict[str, torch.Tensor]:
        depth, alpha, r0 = self.params
        r = torch.linalg.norm(graph.edge_vectors(), dim=1)
        x = (r / self.cutoff).clamp(max=1.0)
        smooth = (1 - x**2) ** 2  # goes to zero with zero slope at the cutoff
        pair = depth * ((1 - torch.exp(-alpha * (r - r0))) ** 2 - 1) * smooth
        # each pair is listed in both directions: half of it belongs to each atom
        energies = pair.new_zeros(graph.num_atoms).index_add_(0, graph.edge_index[0], 0.5 * pair)
        return {"energies": energies, "features": energies[:, None]}


def load_backbone(model: str | None = None, **options) -> MorseBackbone:
    """``model`` may name the element ("Cu", "Al", "Ag"); Cu by default."""
    from ase.data import atomic_numbers

    element = atomic_numbers[model] if model not in (None, "default") else 29
    if element not in PARAMETERS:
        raise ValueError(f"no Morse parameters for {model!r}; available: Cu, Al, Ag")
    return MorseBackbone(element=element, **options)
