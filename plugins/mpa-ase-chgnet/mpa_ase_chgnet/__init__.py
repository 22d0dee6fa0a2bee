"""CHGNet as an mpa-ase backbone.

CHGNet's own layers and weights run on mpa-ase's ``AtomsGraph``: the atom
graph is our neighbour list, undirected bonds pair each edge with its reverse,
and the bond graph (angles) is every ordered pair of bonds shorter than the
bond-graph cutoff that share a centre atom, as in CHGNet's converter.
"""

from __future__ import annotations

import contextlib
import io
import os

import torch
from torch import Tensor

from mpa_ase.backbones import Backbone
from mpa_ase.errors import CheckpointError
from mpa_ase.graph import AtomsGraph, edge_pairs_by_centre, undirected_edges
from mpa_ase_chgnet import factored

__all__ = ["CHGNetBackbone", "load_backbone"]

PRETRAINED = ("0.3.0", "0.2.0", "r2scan")


class CHGNetBackbone(Backbone):
    """Runs a ``chgnet.model.CHGNet`` on an :class:`AtomsGraph`."""

    name = "chgnet"
    extra_properties = ("magmoms",)
    default_dtype = torch.float32

    def __init__(self, model, label: str = "chgnet"):
        super().__init__()
        if not model.mlp_first:
            raise ValueError("only CHGNet models with per-atom energy readout (mlp_first=True) are supported")
        self.model = model
        self.label = label
        args = model.model_args
        self.cutoff = float(args.get("atom_graph_cutoff", 6.0))
        self.bond_cutoff = float(args.get("bond_graph_cutoff", 3.0))
        n_elem = model.atom_embedding.embedding.num_embeddings
        self.supported_numbers = frozenset(range(1, n_elem + 1))
        self.embedding_dim = int(model.atom_fea_dim)
        self.factored = factored.Factored(model)

    def describe(self) -> dict:
        return {**super().describe(), "model": self.label, "version": self.model.version}

    def blocks(self) -> list[torch.nn.Module]:
        """Embeddings, then one block per message-passing layer (atom, bond and
        angle updates of that layer), then the last atom layer with the readout."""
        m = self.model
        first = [m.atom_embedding, m.bond_embedding, m.bond_weights_ag, m.bond_weights_bg, m.angle_embedding,
                 m.bond_basis_expansion, m.angle_basis_expansion]
        out = [torch.nn.ModuleList([x for x in first if x is not None])]
        layers = zip(m.atom_conv_layers[:-1], m.bond_conv_layers, m.angle_layers)
        for idx, parts in enumerate(layers):
            extra = [m.site_wise] if idx == m.n_conv - 2 else []
            out.append(torch.nn.ModuleList([x for x in parts if x is not None] + extra))
        out.append(torch.nn.ModuleList([x for x in (m.atom_conv_layers[-1], m.readout_norm, m.mlp) if x is not None]))
        return out

    def forward(self, graph: AtomsGraph) -> dict[str, Tensor]:
        m = self.model
        n_atoms = graph.num_atoms
        centres = graph.edge_index[0]
        vec = graph.edge_vectors()
        length = torch.linalg.norm(vec, dim=1)
        edge_to_und, und_to_edge = undirected_edges(graph.edge_index, graph.shifts)
        und_length = length[und_to_edge]
        basis_ag = m.bond_basis_expansion.rbf_expansion_ag(und_length)
        basis_bg = m.bond_basis_expansion.rbf_expansion_bg(und_length)

        # CHGNet's bond vectors point from neighbour to centre; angles only
        # need both in the same convention.
        unit = vec / length[:, None]
        short = torch.nonzero(length < self.bond_cutoff).flatten()
        e1, e2 = edge_pairs_by_centre(centres, short, n_atoms)
        bond_graph = torch.stack([centres[e1], edge_to_und[e1], edge_to_und[e2]], dim=1)
        has_angles = e1.numel() > 0

        atom_feas = m.atom_embedding(graph.numbers - 1)
        bond_feas = m.bond_embedding(basis_ag)
        weights_ag = m.bond_weights_ag(basis_ag)
        weights_bg = m.bond_weights_bg(basis_bg)
        if has_angles:
            angle_feas = m.angle_embedding(m.angle_basis_expansion(unit[e1], unit[e2]))
        atom_graph = graph.edge_index.T

        magmoms = None
        # the split layers (mpa_ase_chgnet.factored) when they apply, else CHGNet's own
        split = self.factored if self.factored.usable() else None
        if split is not None and has_angles:
            angle_index = factored.AngleIndex(bond_graph, und_length.shape[0])

        def atom_update(idx, feas):
            if split is not None:
                return factored.atom_conv(m.atom_conv_layers[idx], split.atom[idx], feas, bond_feas, weights_ag,
                                          atom_graph, edge_to_und)
            return m.atom_conv_layers[idx](atom_feas=feas, bond_feas=bond_feas, bond_weights=weights_ag,
                                           atom_graph=atom_graph, directed2undirected=edge_to_und)

        layers = list(zip(m.bond_conv_layers, m.angle_layers))
        for idx, (bond_layer, angle_layer) in enumerate(layers):
            atom_feas = atom_update(idx, atom_feas)
            if has_angles and bond_layer is not None:
                if split is not None:
                    bond_feas = factored.bond_conv(bond_layer, split.bond[idx], atom_feas, bond_feas, weights_bg,
                                                   angle_feas, bond_graph, angle_index)
                else:
                    bond_feas = bond_layer(atom_feas=atom_feas, bond_feas=bond_feas, bond_weights=weights_bg,
                                           angle_feas=angle_feas, bond_graph=bond_graph)
                # the last angle update feeds nothing (only bond features reach the final atom
                # layer): CHGNet computes it, we skip it, with identical outputs
                if angle_layer is not None and idx < len(layers) - 1:
                    if split is not None:
                        angle_feas = factored.angle_update(angle_layer, split.angle[idx], atom_feas, bond_feas,
                                                           angle_feas, angle_index)
                    else:
                        angle_feas = angle_layer(atom_feas=atom_feas, bond_feas=bond_feas,
                                                 angle_feas=angle_feas, bond_graph=bond_graph)
            if idx == m.n_conv - 2:
                magmoms = torch.abs(m.site_wise(atom_feas)).view(-1)
        atom_feas = atom_update(len(m.atom_conv_layers) - 1, atom_feas)
        if m.readout_norm is not None:
            atom_feas = m.readout_norm(atom_feas)
        energies = m.mlp(atom_feas).view(-1)
        if m.composition_model is not None:
            # CHGNet's AtomRef is linear in composition: its share per atom is
            # the weight of that atom's element.
            energies = energies + m.composition_model.fc.weight[0, graph.numbers - 1]
        out = {"energies": energies, "features": atom_feas}
        if magmoms is not None:
            out["magmoms"] = magmoms
        return out


def load_backbone(model: str | None = None, **_options) -> CHGNetBackbone:
    """Load a pretrained CHGNet by version name ("0.3.0", "0.2.0", "r2scan")
    or a CHGNet checkpoint file; ``None`` or "default" means 0.3.0."""
    from chgnet.model import CHGNet

    name = "0.3.0" if model in (None, "default", "chgnet") else str(model)
    quiet = contextlib.redirect_stdout(io.StringIO())  # CHGNet prints on load
    if name in PRETRAINED:
        with quiet:
            net = CHGNet.load(model_name=name, use_device="cpu", verbose=False)
        label = f"chgnet-{name}"
    elif os.path.isfile(name):
        try:
            with quiet:
                net = CHGNet.from_file(name)
        except Exception as err:  # torch raises many kinds on a bad file
            raise CheckpointError(f"cannot read CHGNet checkpoint {name!r}: {err}") from err
        label = os.path.basename(name)
    else:
        raise CheckpointError(
            f"unknown CHGNet model {name!r}: give one of {PRETRAINED} or a checkpoint file path"
        )
    net.eval()
    return CHGNetBackbone(net, label=label)
