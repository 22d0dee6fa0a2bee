"""CHGNet's message layers with their first linear layer split by input.

Each CHGNet convolution concatenates gathered features (centre atom, bond,
neighbour, angle) per edge or angle and feeds them to a gated MLP whose first
layer is linear. A linear map of a concatenation is the sum of the maps of its
parts, so each part is multiplied once per atom or bond it belongs to and only
the products are gathered per edge. Same weights, same function (up to float
rounding); a per-edge matrix product over 2·atom + bond input columns (per
angle: 2·bond + angle + atom) becomes per-atom and per-bond products, a
gather and a sum. What it saves: benchmarks/results/calculator_overhead_chgnet*.md.

Layers whose shape this does not know (a normalisation before the first
linear layer, dropout while training) run CHGNet's own forward instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _split_mlp(mlp: nn.Module) -> tuple[nn.Linear, list[nn.Module], list[nn.Dropout]] | None:
    """(first linear layer, the layers after it, the dropouts before it) of a
    CHGNet MLP; None if anything else comes before its first linear layer."""
    layers = list(mlp.layers)
    for k, layer in enumerate(layers):
        if isinstance(layer, nn.Linear):
            before = layers[:k]
            return (layer, layers[k + 1:], before) if all(isinstance(x, nn.Dropout) for x in before) else None
    return None


class _Gated:
    """The first layers of a CHGNet GatedMLP's core and gate, stacked, and
    what follows them."""

    def __init__(self, gated: nn.Module):
        self.gated = gated
        core, gate = _split_mlp(gated.mlp_core), _split_mlp(gated.mlp_gate)
        self.ok = (core is not None and gate is not None and core[0].bias is not None and gate[0].bias is not None
                   and core[0].out_features == gate[0].out_features)
        if self.ok:
            (self.core_first, self.core_rest, before_core), (self.gate_first, self.gate_rest, before_gate) = core, gate
            self.width = self.core_first.out_features
            # dropout on the concatenated input cannot be split by input
            self.input_dropouts = [x for x in before_core + before_gate if x.p > 0]
            self._key, self._blocks = None, ()

    def split(self, *columns: tuple[int, int]) -> tuple[Tensor, ...]:
        """Core-then-gate rows of the first layers' weights, one block per
        input column range, and their stacked bias (last). Frozen weights (a
        calculator's) are split once and kept until they change."""
        sources = (self.core_first.weight, self.gate_first.weight, self.core_first.bias, self.gate_first.bias)
        frozen = not any(t.requires_grad for t in sources) or not torch.is_grad_enabled()
        key = (columns, tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in sources)) if frozen else None
        if key is not None and key == self._key:
            return self._blocks
        core, gate = sources[:2]
        blocks = tuple(torch.cat([core[:, a:b], gate[:, a:b]], 0) for a, b in columns)
        blocks += (torch.cat(sources[2:]),)
        if key is not None:
            self._key, self._blocks = key, blocks
        return blocks

    def finish(self, pre: Tensor) -> Tensor:
        """The gated MLP's output from the stacked first-layer outputs."""
        g = self.gated
        core, gate = pre[:, :self.width], pre[:, self.width:]
        for layer in self.core_rest:
            core = layer(core)
        for layer in self.gate_rest:
            gate = layer(gate)
        if g.norm is not None:
            core, gate = g.bn1(core), g.bn2(gate)
        return g.activation(core) * g.sigmoid(gate)


class Factored:
    """The split first layers of every message layer of one CHGNet model,
    worked out once."""

    def __init__(self, model: nn.Module):
        self.atom = [_Gated(layer.twoBody_atom) for layer in model.atom_conv_layers]
        self.bond = [None if layer is None else _Gated(layer.twoBody_bond) for layer in model.bond_conv_layers]
        self.angle = [None if layer is None else _Gated(layer.twoBody_bond) for layer in model.angle_layers]
        every = self.atom + [g for g in self.bond + self.angle if g is not None]
        self.known = all(g.ok for g in every)
        self._every = every

    def usable(self) -> bool:
        """Whether the split layers compute what CHGNet's own do right now."""
        return self.known and not any(d.training for g in self._every for d in g.input_dropouts)


def _sum_into(rows: int, index: Tensor, values: Tensor) -> Tensor:
    return values.new_zeros((rows, values.shape[1])).index_add_(0, index, values)


def _conv_output(layer: nn.Module, summed: Tensor, previous: Tensor, norm: nn.Module | None) -> Tensor:
    """What AtomConv and BondConv do after summing their messages."""
    if layer.use_mlp_out:
        summed = layer.mlp_out(summed)
    if layer.resnet:
        summed = summed + previous
    return summed if norm is None else norm(summed)


def atom_conv(layer: nn.Module, g: _Gated, atom_feas: Tensor, bond_feas: Tensor, bond_weights: Tensor, atom_graph: Tensor,
              directed2undirected: Tensor) -> Tensor:
    """``chgnet.model.layers.AtomConv.forward``; the message input is [centre, bond, neighbour]."""
    a, b = atom_feas.shape[1], bond_feas.shape[1]
    w_centre, w_neighbour, w_bond, bias = g.split((0, a), (a + b, 2 * a + b), (a, a + b))
    centre = F.linear(atom_feas, w_centre)
    neighbour = F.linear(atom_feas, w_neighbour)
    bond = F.linear(bond_feas, w_bond, bias)
    pre = (centre.index_select(0, atom_graph[:, 0]) + neighbour.index_select(0, atom_graph[:, 1])
           + bond.index_select(0, directed2undirected))
    messages = g.finish(pre) * bond_weights.index_select(0, directed2undirected)
    return _conv_output(layer, _sum_into(atom_feas.shape[0], atom_graph[:, 0], messages), atom_feas,
                        layer.atom_norm)


class AngleIndex:
    """The bonds that take part in angles (those shorter than the bond-graph
    cutoff), numbered compactly, so per-bond products are formed for those only."""

    def __init__(self, bond_graph: Tensor, num_bonds: int):
        used = torch.unique(bond_graph[:, 1:3])
        local = torch.full((num_bonds,), -1, dtype=torch.long, device=bond_graph.device)
        local[used] = torch.arange(used.shape[0], device=bond_graph.device)
        self.used = used
        self.first = local[bond_graph[:, 1]]
        self.second = local[bond_graph[:, 2]]
        self.centre = bond_graph[:, 0]


def _angle_pre(g: _Gated, atom_feas: Tensor, bond_feas: Tensor, angle_feas: Tensor, index: AngleIndex) -> Tensor:
    # input layout of BondConv and AngleUpdate: [bond_i, bond_j, angle, centre]
    b, n = bond_feas.shape[1], angle_feas.shape[1]
    w_first, w_second, w_angle, w_centre, bias = g.split((0, b), (b, 2 * b), (2 * b, 2 * b + n),
                                                         (2 * b + n, 2 * b + n + atom_feas.shape[1]))
    used = bond_feas.index_select(0, index.used)
    first = F.linear(used, w_first)
    second = F.linear(used, w_second)
    angle = F.linear(angle_feas, w_angle, bias)
    centre = F.linear(atom_feas, w_centre)
    return (first.index_select(0, index.first) + second.index_select(0, index.second) + angle
            + centre.index_select(0, index.centre))


def bond_conv(layer: nn.Module, g: _Gated, atom_feas: Tensor, bond_feas: Tensor, bond_weights: Tensor, angle_feas: Tensor,
              bond_graph: Tensor, index: AngleIndex) -> Tensor:
    """``chgnet.model.layers.BondConv.forward``."""
    update = g.finish(_angle_pre(g, atom_feas, bond_feas, angle_feas, index))
    update = update * bond_weights.index_select(0, bond_graph[:, 1]) * bond_weights.index_select(0, bond_graph[:, 2])
    return _conv_output(layer, _sum_into(bond_feas.shape[0], bond_graph[:, 1], update), bond_feas,
                        layer.bond_norm)


def angle_update(layer: nn.Module, g: _Gated, atom_feas: Tensor, bond_feas: Tensor, angle_feas: Tensor,
                 index: AngleIndex) -> Tensor:
    """``chgnet.model.layers.AngleUpdate.forward``."""
    new = g.finish(_angle_pre(g, atom_feas, bond_feas, angle_feas, index))
    if layer.resnet:
        new = new + angle_feas
    return new if layer.angle_norm is None else layer.angle_norm(new)
