"""MatGL potentials as mpa-ase backbones.

The potential's own model (TensorNet or M3GNet) runs on mpa-ase's
``AtomsGraph``: matgl's edge convention (bond vector = pos[dst] +
offset - pos[src]) is ours with src = centre, dst = neighbour and
offset = shift @ cell, so no matgl graph converter is involved. The energy
is matgl's ``data_std * model + data_mean + element references``, split per
atom; the features are the last per-atom invariant features before the
energy readout.
"""

from __future__ import annotations

import os
import warnings
from types import SimpleNamespace

import torch
from torch import Tensor

from mpa_ase.backbones import Backbone
from mpa_ase.errors import CheckpointError
from mpa_ase.graph import AtomsGraph

__all__ = ["MatGLBackbone", "load_backbone"]

SUPPORTED = ("TensorNet", "M3GNet")


class MatGLBackbone(Backbone):
    """Runs a ``matgl.apps.pes.Potential`` (TensorNet or M3GNet) on an :class:`AtomsGraph`."""

    name = "matgl"
    default_dtype = torch.float32

    def __init__(self, potential, label: str = "matgl"):
        super().__init__()
        from ase.data import atomic_numbers

        model = potential.model
        self.architecture = type(model).__name__
        if self.architecture not in SUPPORTED:
            raise ValueError(f"matgl model {self.architecture} is not supported; supported: {SUPPORTED}")
        if getattr(model, "include_state", False):
            raise ValueError("matgl models with global state inputs are not supported")
        if getattr(potential, "calc_repuls", False):
            raise ValueError("matgl potentials with a ZBL repulsion term are not supported")
        self.potential = potential
        self.label = label
        self.cutoff = float(model.cutoff)
        numbers = [atomic_numbers[s] for s in model.element_types]
        self.supported_numbers = frozenset(numbers)
        table = torch.full((max(numbers) + 1,), -1, dtype=torch.long)
        table[torch.tensor(numbers)] = torch.arange(len(numbers))
        self.register_buffer("type_of_number", table, persistent=False)
        self.embedding_dim = int(model.units)

    def describe(self) -> dict:
        return {**super().describe(), "model": self.label, "architecture": self.architecture}

    def forward(self, graph: AtomsGraph) -> dict[str, Tensor]:
        pot = self.potential
        model = pot.model
        node_type = self.type_of_number[graph.numbers]
        edge_index, shifts = graph.edge_index, graph.shifts
        if self.architecture == "M3GNet":
            # matgl's line graph counts triples per bond assuming bonds grouped by centre atom
            order = torch.argsort(edge_index[0] * graph.num_atoms + edge_index[1], stable=True)
            edge_index, shifts = edge_index[:, order], shifts[order]
        centre = edge_index[0]
        offshift = torch.einsum("ei,eij->ej", shifts, graph.cell[graph.batch[centre]])
        g = SimpleNamespace(
            node_type=node_type, pos=graph.positions, edge_index=edge_index, pbc_offshift=offshift,
            batch=graph.batch, num_graphs=graph.num_systems, num_nodes=graph.num_atoms,
        )
        if self.architecture == "TensorNet":
            features = model.forward_features(g)["readout"]
            atomic = model.final_layer(features).view(-1)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model(g=g)
            fd = model.feature_dict
            atomic = fd["readout"].view(-1)
            features = fd[f"gc_{model.n_blocks}"]["node_feat"]
        n_per_atom = graph.n_atoms[graph.batch].to(atomic.dtype)
        energies = pot.data_std.to(atomic.dtype) * atomic + pot.data_mean.to(atomic.dtype) / n_per_atom
        if pot.element_refs is not None:
            energies = energies + pot.element_refs.property_offset.to(atomic.dtype)[node_type]
        return {"energies": energies, "features": features}


def load_backbone(model: str | None = None, **_options) -> MatGLBackbone:
    """Load a matgl potential from a local model folder, or by name through matgl
    (which downloads unless already cached; never at import)."""
    import matgl

    if model in (None, "default", "matgl"):
        raise CheckpointError(
            "the matgl backbone needs model=<local matgl model folder> (e.g. TensorNet-MatPES-PBE-v2025.1-PES) "
            "or a matgl model name when online"
        )
    name = str(model)
    if not os.path.isdir(name) and os.environ.get("MPA_ALLOW_DOWNLOAD") != "1":
        from matgl.config import MATGL_CACHE

        cached = os.path.join(str(MATGL_CACHE), name)
        if not os.path.isdir(cached):
            # matgl would try to download it (and retry for about a minute offline)
            raise CheckpointError(
                f"matgl model {name!r} is neither a local folder nor in matgl's cache ({MATGL_CACHE}); pass "
                "model=<path to the model folder>, or set MPA_ALLOW_DOWNLOAD=1 to let matgl download it"
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            potential = matgl.load_model(name)
    except Exception as err:  # matgl raises many kinds for a missing/bad model
        where = "folder" if os.path.isdir(name) else "name"
        raise CheckpointError(f"cannot load matgl model {where} {name!r}: {err}") from err
    if not hasattr(potential, "model") or not hasattr(potential, "element_refs"):
        raise CheckpointError(f"{name!r} is a matgl {type(potential).__name__}, not a potential (PES) model")
    potential.eval()
    label = os.path.basename(os.path.normpath(name))
    return MatGLBackbone(potential, label=label)
