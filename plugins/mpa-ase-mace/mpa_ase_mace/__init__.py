"""MACE (mace-torch) as an mpa-ase backbone.

The MACE model's own forward runs on mpa-ase's ``AtomsGraph``: MACE's edge
vectors are positions[receiver] - positions[sender] + shifts with
sender = edge_index[0], which is our centre atom, and shifts are Cartesian
(shift @ cell). MACE's own force/stress autograd is switched off; mpa-ase
differentiates the energy itself. Features are the scalar (0e) channels of
every interaction layer's node features, the rotation-invariant part.
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor

from mpa_ase.backbones import Backbone
from mpa_ase.errors import CheckpointError
from mpa_ase.graph import AtomsGraph

__all__ = ["MACEBackbone", "load_backbone"]

FOUNDATION_NAMES = ("mace-mp-0-small", "mace-mp-0-medium", "mace-mp-0-large", "mace-off-small",
                    "mace-off-medium", "mace-off-large", "mace-mpa-0-medium", "mace-omat-0-medium")


def _scalar_slices(irreps) -> list[tuple[int, int]]:
    """(start, stop) of the 0e blocks in a flattened e3nn irreps vector."""
    out, start = [], 0
    for mul, ir in irreps:
        width = mul * ir.dim
        if ir.l == 0 and ir.p == 1:
            out.append((start, start + width))
        start += width
    return out


class MACEBackbone(Backbone):
    """Runs a mace-torch ``MACE``/``ScaleShiftMACE`` module on an :class:`AtomsGraph`."""

    name = "mace"

    def __init__(self, model, label: str = "mace"):
        super().__init__()
        self.model = model
        self.label = label
        self.cutoff = float(model.r_max)
        numbers = [int(z) for z in model.atomic_numbers]
        self.supported_numbers = frozenset(numbers)
        table = torch.full((max(numbers) + 1,), -1, dtype=torch.long)
        table[torch.tensor(numbers)] = torch.arange(len(numbers))
        self.register_buffer("index_of_number", table, persistent=False)
        self.n_elements = len(numbers)
        # per layer: (start, stop) of its block in MACE's concatenated node_feats, and its 0e slices
        slices, offset = [], 0
        for product in model.products:
            irreps = product.linear.irreps_out
            slices += [(offset + a, offset + b) for a, b in _scalar_slices(irreps)]
            offset += irreps.dim
        self._feature_slices = slices
        self.embedding_dim = sum(b - a for a, b in slices)
        self.default_dtype = next(model.parameters()).dtype
        self.heads = list(getattr(model, "heads", ["Default"]))

    def describe(self) -> dict:
        return {**super().describe(), "model": self.label, "heads": self.heads}

    def forward(self, graph: AtomsGraph) -> dict[str, Tensor]:
        numbers = graph.numbers
        one_hot = torch.nn.functional.one_hot(self.index_of_number[numbers], self.n_elements).to(graph.dtype)
        centre = graph.edge_index[0]
        shifts = torch.einsum("ei,eij->ej", graph.shifts, graph.cell[graph.batch[centre]])
        ptr = torch.zeros(graph.num_systems + 1, dtype=torch.long, device=numbers.device)
        ptr[1:] = torch.cumsum(graph.n_atoms, 0)
        positions = graph.positions
        if not positions.requires_grad:
            # MACE marks positions as requiring grad; keep that off the caller's tensor
            positions = positions.detach().clone()
        data = {
            "positions": positions,
            "node_attrs": one_hot,
            "edge_index": graph.edge_index,
            "shifts": shifts,
            "unit_shifts": graph.shifts,
            "cell": graph.cell.reshape(-1, 3),
            "batch": graph.batch,
            "ptr": ptr,
            "head": torch.zeros(graph.num_systems, dtype=torch.long, device=numbers.device),
        }
        out = self.model(data, training=self.training, compute_force=False, compute_virials=False,
                         compute_stress=False)
        energies = out["node_energy"].to(graph.dtype)
        feats = out["node_feats"]
        features = torch.cat([feats[:, a:b] for a, b in self._feature_slices], dim=1)
        return {"energies": energies, "features": features}


def load_backbone(model: str | None = None, cueq: bool | None = None, **_options) -> MACEBackbone:
    """Load a MACE model from a local ``.model`` file (a pickled mace-torch module),
    or a foundation model by name through mace-torch when online.

    ``cueq``: convert to cuEquivariance kernels; by default when
    ``cuequivariance_torch`` is installed and CUDA is available.
    """
    if model in (None, "default", "mace"):
        raise CheckpointError("the mace backbone needs model=<path to a .model file> (or a foundation model name)")
    name = str(model)
    if os.path.isfile(name):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import mace.modules  # noqa: F401  (classes the pickle refers to)

                net = torch.load(name, map_location="cpu", weights_only=False)
        except Exception as err:  # torch/pickle raise many kinds on a bad file
            raise CheckpointError(f"cannot read MACE model file {name!r}: {err}") from err
        label = os.path.basename(name)
    elif name in FOUNDATION_NAMES:
        net = _foundation(name)
        label = name
    else:
        raise CheckpointError(f"MACE model {name!r}: no such file, and not one of {FOUNDATION_NAMES}")
    if not isinstance(net, torch.nn.Module) or not hasattr(net, "r_max") or not hasattr(net, "products"):
        raise CheckpointError(f"{name!r} does not hold a MACE model (found {type(net).__name__})")
    if cueq is None:
        cueq = torch.cuda.is_available() and _has_cueq()
    if cueq:
        net = _to_cueq(net)
        label += " (cuEquivariance)"
    net.eval()
    return MACEBackbone(net, label=label)


def _has_cueq() -> bool:
    import importlib.util

    return importlib.util.find_spec("cuequivariance_torch") is not None


def _to_cueq(net):
    """mace-torch's own e3nn -> cuEquivariance conversion, without its global dtype side effect."""
    if not _has_cueq():
        raise ImportError("cueq=True needs cuequivariance_torch (pip install cuequivariance-torch)")
    from mace.cli.convert_e3nn_cueq import run

    previous = torch.get_default_dtype()
    try:
        return run(net, device="cuda" if torch.cuda.is_available() else "cpu", return_model=True)
    finally:
        torch.set_default_dtype(previous)


def _foundation(name: str):
    """A MACE foundation model through mace-torch's own downloader (needs the network)."""
    from mace.calculators import foundations_models

    kind, size = ("off", name.split("-")[-1]) if name.startswith("mace-off") else ("mp", name.split("-")[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "off":
            calc = foundations_models.mace_off(model=size, device="cpu", return_raw_model=True)
        else:
            model = {"mace-mp-0-small": "small", "mace-mp-0-medium": "medium", "mace-mp-0-large": "large",
                     "mace-mpa-0-medium": "medium-mpa-0", "mace-omat-0-medium": "medium-omat-0"}[name]
            calc = foundations_models.mace_mp(model=model, device="cpu", return_raw_model=True)
    return calc
