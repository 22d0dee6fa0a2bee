"""Property heads: a deep ensemble of readouts over backbone embeddings."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mpa_ase.graph import Segments, as_segments
from mpa_ase.heads.readouts import Readout

TRANSFORMS = ("identity", "log10")
PROBLEMS = ("regression", "classification")


class TargetTransform(nn.Module):
    """Physical value y <-> model space z = (f(y) - shift) / scale, f = identity or log10.

    log10 suits positive quantities spanning decades (ionic conductivity);
    shift/scale standardise the target so heads train at unit scale.
    """

    def __init__(self, kind: str = "identity", shift: float = 0.0, scale: float = 1.0):
        super().__init__()
        if kind not in TRANSFORMS:
            raise ValueError(f"unknown transform {kind!r}; choose from {TRANSFORMS}")
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.kind = kind
        self.register_buffer("shift", torch.tensor(float(shift), dtype=torch.float64))
        self.register_buffer("scale", torch.tensor(float(scale), dtype=torch.float64))

    def forward(self, y: Tensor) -> Tensor:
        if self.kind == "log10":
            if bool((y <= 0).any()):
                raise ValueError("log10 transform needs positive target values")
            y = torch.log10(y)
        return (y - self.shift.to(y.dtype)) / self.scale.to(y.dtype)

    def inverse(self, z: Tensor) -> Tensor:
        f = z * self.scale.to(z.dtype) + self.shift.to(z.dtype)
        return torch.pow(10.0, f) if self.kind == "log10" else f

    def inverse_std(self, z_mean: Tensor, z_std: Tensor) -> Tensor:
        """Spread in physical units from the spread in model space (first order)."""
        std = z_std * self.scale.to(z_std.dtype)
        if self.kind == "log10":
            std = std * math.log(10.0) * self.inverse(z_mean)
        return std


class PropertyHead(nn.Module):
    """One property predicted from per-atom embeddings.

    Args:
        name: result key, e.g. "band_gap"; ``name + "_std"`` holds the spread.
        unit: unit of the physical value (e.g. "eV", "K", "GPa", "log10(S/cm)").
        dim: embedding width of the backbone.
        extensive: True for quantities that scale with system size.
        readout: "mean", "attention", "sum" or "hybrid"; by default attention
            for intensive and sum for extensive properties.
        members: deep-ensemble size; the spread of members is the uncertainty.
        problem: "regression" or "classification" (binary; value = probability).
            (Not ``task``: a task is a property from one source, "property@source".)
        trained_on: free text naming the data the head was trained on.
        elements: atomic numbers present in the training data; a structure
            with any other element is outside the head's domain.
        material: "molecule" or "crystal": the kind of structure trained on
            (a periodic structure is a crystal).
        lower_bound: physical lower bound of the value (0 for absolute
            temperatures, pressures, band gaps, moduli); predictions and
            interval ends never go below it.

    Results: ``name``, ``name + "_std"``; with a calibrated interval (see
    :meth:`set_interval`) ``name + "_lo"``/``"_hi"`` at ``interval_level``
    (mean ± q·(std + floor));
    with a known domain ``name + "_in_domain"`` (1.0 inside, 0.0 outside).
    """

    def __init__(
        self,
        name: str,
        unit: str,
        dim: int,
        *,
        extensive: bool = False,
        readout: str | None = None,
        transform: TargetTransform | None = None,
        members: int = 5,
        hidden: int = 64,
        dropout: float = 0.0,
        problem: str = "regression",
        trained_on: str = "",
        elements: list[int] | None = None,
        material: str | None = None,
        lower_bound: float | None = None,
    ):
        super().__init__()
        if problem not in PROBLEMS:
            raise ValueError(f"unknown problem {problem!r}; choose from {PROBLEMS}")
        if members < 1:
            raise ValueError("a head needs at least one ensemble member")
        if material not in (None, "molecule", "crystal"):
            raise ValueError(f"material must be 'molecule' or 'crystal', got {material!r}")
        self.config = {
            "name": name, "unit": unit, "dim": dim, "extensive": extensive, "readout": readout,
            "members": members, "hidden": hidden, "dropout": dropout, "problem": problem, "trained_on": trained_on,
            "elements": None if elements is None else sorted(int(z) for z in elements), "material": material,
            "lower_bound": None if lower_bound is None else float(lower_bound),
        }
        self.name = name
        self.unit = unit
        self.extensive = extensive
        self.problem = problem
        self.trained_on = trained_on
        self.readout_kind = readout or ("sum" if extensive else "attention")
        self.transform = transform or TargetTransform()
        self.members = nn.ModuleList(
            Readout(self.readout_kind, dim, 1, hidden=hidden, dropout=dropout) for _ in range(members)
        )
        # post-hoc calibration of the ensemble spread, fitted on validation data
        self.register_buffer("std_scale", torch.tensor(1.0, dtype=torch.float64))
        # split-conformal interval: mean ± interval_q * (std + interval_floor) covers interval_level
        # (NaN: not calibrated); the floor keeps compounds with a tiny spread from inflating q
        self.register_buffer("interval_q", torch.tensor(float("nan"), dtype=torch.float64))
        self.register_buffer("interval_level", torch.tensor(0.9, dtype=torch.float64))
        self.register_buffer("interval_floor", torch.tensor(0.0, dtype=torch.float64))

    def set_interval(self, q: float, level: float, floor: float = 0.0) -> None:
        if not floor >= 0:
            raise ValueError(f"interval floor must be >= 0, got {floor}")
        self.interval_q.fill_(float(q))
        self.interval_level.fill_(float(level))
        self.interval_floor.fill_(float(floor))

    def interval_scale(self, std):
        """Per-system s with the interval mean ± interval_q · s (a tensor or an array, as ``std``)."""
        return std + float(self.interval_floor)

    def in_domain(self, segments: Segments) -> Tensor | None:
        """1.0 for systems made of training elements and of the trained material kind, else 0.0."""
        elements, material = self.config.get("elements"), self.config.get("material")
        if elements is None and material is None:
            return None
        seg = as_segments(segments)
        device = seg.index.device
        ok = torch.ones(seg.count, dtype=torch.bool, device=device)
        if elements is not None:
            numbers = seg.numbers if seg.numbers is not None else torch.zeros_like(seg.index)
            known = torch.zeros(128, dtype=torch.bool, device=device)
            known[torch.as_tensor(elements, dtype=torch.long, device=device)] = True
            bad_atom = (~known[numbers.clamp(max=127)]).to(torch.long)
            bad = torch.zeros(seg.count, dtype=torch.long, device=device)
            ok &= bad.index_add_(0, seg.index, bad_atom) == 0
        if material is not None:
            periodic = seg.periodic if seg.periodic is not None else torch.zeros_like(ok)
            ok &= periodic if material == "crystal" else ~periodic
        return ok.to(torch.float64)

    def member_outputs(self, features: Tensor, segments: Segments) -> Tensor:
        """(members, systems) outputs in model space (logits for classification)."""
        seg = as_segments(segments)
        return torch.stack([m(features, seg).squeeze(-1) for m in self.members])

    def forward(self, features: Tensor, segments: Segments) -> dict[str, Tensor]:
        """Per-system predictions from per-atom ``features`` pooled over
        ``segments`` (an :class:`~mpa_ase.graph.AtomsGraph` gives its own)."""
        seg = as_segments(segments)
        z = self.member_outputs(features, seg)
        if self.problem == "classification":
            p = torch.sigmoid(z)
            mean, std = p.mean(0), p.std(0, unbiased=False)
        else:
            z_mean, z_std = z.mean(0), z.std(0, unbiased=False)
            mean = self.transform.inverse(z_mean)
            std = self.transform.inverse_std(z_mean, z_std) * self.std_scale.to(z_std.dtype)
        bound = self.config.get("lower_bound")
        out = {self.name: mean if bound is None else mean.clamp(min=bound), f"{self.name}_std": std}
        q = float(self.interval_q)
        if self.problem == "regression" and math.isfinite(q):
            half = q * self.interval_scale(std)
            lo, hi = mean - half, mean + half
            out[f"{self.name}_lo"] = lo if bound is None else lo.clamp(min=bound)
            out[f"{self.name}_hi"] = hi if bound is None else hi.clamp(min=bound)
        flag = self.in_domain(seg)
        if flag is not None:
            out[f"{self.name}_in_domain"] = flag.to(mean.dtype)
        return out

    def describe(self) -> dict:
        return {
            "unit": self.unit,
            "extensive": self.extensive,
            "problem": self.problem,
            "readout": self.readout_kind,
            "members": len(self.members),
            "transform": self.transform.kind,
            "trained_on": self.trained_on,
            "std_scale": float(self.std_scale),
            "interval_level": float(self.interval_level) if math.isfinite(float(self.interval_q)) else None,
            "interval_floor": float(self.interval_floor),
            "elements": self.config.get("elements"),
            "material": self.config.get("material"),
            "lower_bound": self.config.get("lower_bound"),
        }
