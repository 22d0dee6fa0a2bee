"""Readouts: per-atom features -> one vector or value per system, pooled
over :class:`~mpa_ase.graph.Segments` (which atom belongs to which system).

``mean`` and ``attention`` give intensive quantities (independent of system
size), ``sum`` gives extensive ones; ``hybrid`` is the MPA readout, which
mixes an attention-pooled branch and a summed per-atom residual-MLP branch
with a learned weight alpha = sigmoid(a), so one architecture serves both.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mpa_ase.graph import Segments, as_segments

READOUTS = ("mean", "sum", "attention", "hybrid")


def mlp(n_in: int, hidden: int, n_out: int, depth: int = 2, dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.SiLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class ResidualMLP(nn.Module):
    """Per-atom residual MLP: x + f(x), then a linear map to ``n_out``."""

    def __init__(self, dim: int, hidden: int, n_out: int, dropout: float = 0.0):
        super().__init__()
        self.body = mlp(dim, hidden, dim, depth=1, dropout=dropout)
        self.out = nn.Linear(dim, n_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(x + self.body(x))


class Readout(nn.Module):
    """Maps per-atom features (N, F) to per-system outputs (S, n_out)."""

    def __init__(self, kind: str, dim: int, n_out: int = 1, hidden: int = 64, dropout: float = 0.0):
        super().__init__()
        if kind not in READOUTS:
            raise ValueError(f"unknown readout {kind!r}; choose from {READOUTS}")
        self.kind = kind
        if kind in ("mean", "attention", "hybrid"):
            self.pooled_mlp = mlp(dim, hidden, n_out, dropout=dropout)
        if kind in ("attention", "hybrid"):
            self.score = nn.Linear(dim, 1)
        if kind in ("sum", "hybrid"):
            self.atomwise = ResidualMLP(dim, hidden, n_out, dropout=dropout)
        if kind == "hybrid":
            self.alpha_logit = nn.Parameter(torch.zeros(()))

    @property
    def alpha(self) -> Tensor | None:
        """Weight of the intensive (attention) branch; None unless hybrid."""
        return torch.sigmoid(self.alpha_logit) if self.kind == "hybrid" else None

    def forward(self, features: Tensor, segments: Segments) -> Tensor:
        seg = as_segments(segments)
        if self.kind == "mean":
            return self.pooled_mlp(seg.mean(features))
        if self.kind == "sum":
            return seg.sum(self.atomwise(features))
        weights = seg.softmax(self.score(features))
        pooled = self.pooled_mlp(seg.sum(weights * features))
        if self.kind == "attention":
            return pooled
        alpha = self.alpha
        return alpha * pooled + (1 - alpha) * seg.sum(self.atomwise(features))
