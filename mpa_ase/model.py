"""Backbone + property heads, with conservative forces and stress by autograd."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mpa_ase.backbones.base import Backbone
from mpa_ase.graph import AtomsGraph

_MIN_VOLUME = 1e-8  # Å^3; below this a system has no 3D cell and no stress


class MPAModel(nn.Module):
    """A backbone and the property heads that read its per-atom features.

    ``forward`` returns per-system ``energy`` (S,), per-atom ``energies`` (N,)
    and ``features`` (N, F), ``forces`` (N, 3) and ``stress`` (S, 3, 3, eV/Å³,
    ASE sign: positive is tensile; NaN for systems without a 3D cell), the
    backbone's extra per-atom properties, and one entry per head.

    ``energy_shift`` (eV per atom, indexed by atomic number) is added to the
    backbone's per-atom energies: the per-element reference refitted when a
    backbone is fine-tuned on data from other DFT settings.
    """

    def __init__(
        self, backbone: Backbone, heads: dict[str, nn.Module] | None = None, trunk: nn.Module | None = None,
        energy_shift: Tensor | None = None,
    ):
        super().__init__()
        reserved = {"energy", "energies", "features", "forces", "stress", "free_energy", *backbone.extra_properties}
        for name in heads or {}:
            if name in reserved or name.endswith("_std") and name[:-4] in reserved:
                raise ValueError(f"head name {name!r} would overwrite a backbone result; rename the head")
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads or {})
        # heads read trunk(features); the trunk is shared by all heads
        self.trunk = trunk
        if energy_shift is not None:
            energy_shift = torch.as_tensor(energy_shift, dtype=torch.float64).reshape(-1)
            if energy_shift.numel() < 119:
                energy_shift = torch.cat([energy_shift, energy_shift.new_zeros(119 - energy_shift.numel())])
        self.register_buffer("energy_shift", energy_shift)

    @property
    def cutoff(self) -> float:
        return self.backbone.cutoff

    def forward(
        self, graph: AtomsGraph, compute_forces: bool = True, compute_stress: bool = True,
        compute_heads: bool = True,
    ) -> dict[str, Tensor]:
        self.backbone.check_elements(graph.unique_elements())
        positions = graph.positions.detach()
        cell = graph.cell.detach()
        inputs = []
        if compute_forces:
            positions = positions.requires_grad_(True)
            inputs.append(positions)
        if compute_stress:
            # Symmetric strain applied to positions and cell: dE/d(strain) / V
            # is the stress, and rotations cannot leak into it.
            strain = torch.zeros_like(cell).requires_grad_(True)
            sym = 0.5 * (strain + strain.transpose(1, 2))
            positions = positions + torch.einsum("ni,nij->nj", positions, sym[graph.batch])
            cell = cell + torch.bmm(cell, sym)
            inputs.append(strain)
        g = graph.replace(positions=positions, cell=cell)
        with torch.set_grad_enabled(bool(inputs) or torch.is_grad_enabled()):
            out = dict(self.backbone(g))
            if self.energy_shift is not None:
                out["energies"] = out["energies"] + self.energy_shift[g.numbers].to(out["energies"].dtype)
            energies = out["energies"]
            energy = g.sum_per_system(energies)
            results = {"energy": energy, **out}
            if inputs:
                grads = torch.autograd.grad(
                    energy.sum(), inputs, create_graph=self.training, allow_unused=True
                )
                grads = [torch.zeros_like(x) if gr is None else gr for x, gr in zip(inputs, grads)]
                if compute_forces:
                    results["forces"] = -grads[0]
                if compute_stress:
                    volume = torch.linalg.det(graph.cell).abs()
                    has_cell = volume > _MIN_VOLUME
                    safe = torch.where(has_cell, volume, torch.ones_like(volume))
                    stress = grads[-1] / safe[:, None, None]
                    results["stress"] = torch.where(
                        has_cell[:, None, None], stress, torch.full_like(stress, float("nan"))
                    )
        if len(self.heads) and compute_heads:
            with torch.set_grad_enabled(self.training):
                features = out["features"] if self.trunk is None else self.trunk(out["features"])
                segments = graph.segments
                for head in self.heads.values():
                    results.update(head(features, segments))
        return results
