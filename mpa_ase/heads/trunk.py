"""The shared trunk: a per-atom residual MLP between backbone embeddings and heads.

With a frozen backbone it is the part that mid-training aligns across
sources and post-training carries over to the target; it keeps the
embedding width, so heads do not care whether a trunk is present.
"""

from __future__ import annotations

from torch import Tensor, nn


class Trunk(nn.Module):
    def __init__(self, dim: int, hidden: int = 128, depth: int = 2, dropout: float = 0.0):
        super().__init__()
        self.config = {"dim": dim, "hidden": hidden, "depth": depth, "dropout": dropout}
        blocks = []
        for _ in range(depth):
            layers: list[nn.Module] = [nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.SiLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            layers.append(nn.Linear(hidden, dim))
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = x + block(x)
        return x
