"""``MPACalculator``: an ASE calculator for mpa-ase models."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from mpa_ase.backbones import load_backbone
from mpa_ase.checkpoint import DEFAULT_MODEL, is_model_file, load_model
from mpa_ase.graph import AtomsGraph, to_ase
from mpa_ase.model import MPAModel
from mpa_ase.neighbors.verlet import VerletNeighbors

DEFAULT_BACKBONE = "chgnet"

_BASE_PROPERTIES = ("energy", "free_energy", "forces", "stress", "energies")


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype, default: torch.dtype) -> torch.dtype:
    if dtype is None:
        return default
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "float64": torch.float64, "float": torch.float32, "double": torch.float64}
    if str(dtype) not in table:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    return table[str(dtype)]


class MPACalculator(Calculator):
    """ASE calculator running an mpa-ase model (backbone + property heads).

    Args:
        model: "default" for the shipped default model (CHGNet + experimental
            property heads), the path of an mpa-ase model file (written by
            ``mpa train``), a backbone model name
            or file understood by the backbone plugin (e.g. "0.3.0" for CHGNet,
            a ``.model`` file for MACE), or an :class:`MPAModel` instance.
        backbone: backbone plugin name ("chgnet", "mace", "matgl", ...); the
            default backbone when None.
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
        dtype: torch.float32/float64 or their names; the backbone's own when None.
            Never changes torch's global default dtype.
        neighbor_backend: "auto", "numba", "triton" or "torch" (see ``mpa_ase.neighbors``).
        skin: Verlet skin in Å. Successive calls on one structure reuse its
            neighbour list, built at cutoff + skin, while no atom has moved more
            than skin/2 and the cell is unchanged; results equal a fresh
            build. 0 rebuilds on every call.

    Results are in ASE units: energy eV, forces eV/Å, stress eV/Å³ (Voigt,
    xx yy zz yz xz xy; only for systems with a 3D cell), per-atom ``energies``
    eV, and the backbone's extras (CHGNet: ``magmoms``, μB). Each property
    head adds ``results[name]`` and ``results[name + "_std"]`` in the unit
    listed by ``calc.heads[name]["unit"]``.
    """

    default_parameters: dict = {}

    def __init__(
        self,
        model: str | MPAModel = "default",
        backbone: str | None = None,
        device: str | torch.device = "auto",
        dtype=None,
        neighbor_backend: str = "auto",
        skin: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.device = resolve_device(device)
        if isinstance(model, MPAModel):
            self.model = model
        elif backbone is None and model in (None, "default") and DEFAULT_MODEL.exists():
            self.model = load_model(DEFAULT_MODEL)
        elif backbone is None and isinstance(model, (str, Path)) and is_model_file(model):
            self.model = load_model(model)
        else:
            name = backbone or DEFAULT_BACKBONE
            spec = None if model in (None, "default") else model
            self.model = MPAModel(load_backbone(name, model=spec))
        self.dtype = resolve_dtype(dtype, self.model.backbone.default_dtype)
        self.model = self.model.to(device=self.device, dtype=self.dtype).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.neighbor_backend = neighbor_backend
        self.verlet = VerletNeighbors(self.model.cutoff, skin, backend=neighbor_backend)
        self.implemented_properties = list(_BASE_PROPERTIES) + list(self.model.backbone.extra_properties)
        for name in self.model.heads:
            self.implemented_properties += [name, f"{name}_std"]

    @property
    def heads(self) -> dict[str, dict]:
        """Property heads of the model: name -> unit, nature, training data, ..."""
        return {name: head.describe() for name, head in self.model.heads.items()}

    # ------------------------------------------------------------------ ASE
    def _check_properties(self, properties) -> None:
        unknown = [p for p in properties if p not in self.implemented_properties]
        if unknown:
            raise PropertyNotImplementedError(
                f"unknown property {unknown[0]!r}; this model provides {self.implemented_properties}"
            )

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        self._check_properties(properties)
        super().calculate(atoms, properties, system_changes)
        graph = AtomsGraph.from_atoms(
            self.atoms, self.model.cutoff, dtype=self.dtype, device=self.device,
            neighbor_backend=self.neighbor_backend, verlet=self.verlet,
        )
        self.results = self._run(graph)[0]

    # -------------------------------------------------------------- batched
    def calculate_batch(self, structures: Sequence, batch_size: int | None = None,
                        properties: Sequence[str] | None = None) -> list[dict]:
        """Evaluate many structures in batched model calls.

        Returns one results dict per structure (the same keys and units as
        ``calc.results``). ``batch_size`` bounds how many structures share one
        call (all at once when None). ``properties`` (default: everything)
        lets a caller skip work: without "stress" no strain derivative is
        taken, and heads run only when one of them is asked for.
        """
        if properties is not None:
            self._check_properties(properties)
        want = set(self.implemented_properties if properties is None else properties)
        options = {"compute_stress": "stress" in want,
                   "compute_heads": any(n in want or f"{n}_std" in want for n in self.model.heads)}
        atoms_list = [to_ase(s) for s in structures]
        step = batch_size or max(1, len(atoms_list))
        out = []
        for k in range(0, len(atoms_list), step):
            out.extend(self._run(self.build_graph(atoms_list[k:k + step]), **options))
        return out

    def build_graph(self, atoms_list: Sequence) -> AtomsGraph:
        return AtomsGraph.from_atoms(
            list(atoms_list), self.model.cutoff, dtype=self.dtype, device=self.device,
            neighbor_backend=self.neighbor_backend,
        )

    def _run(self, graph: AtomsGraph, compute_stress: bool = True, compute_heads: bool = True) -> list[dict]:
        out = self.model(graph, compute_forces=True, compute_stress=compute_stress, compute_heads=compute_heads)
        return self._to_results(graph, out)

    def _to_results(self, graph: AtomsGraph, out: dict) -> list[dict]:
        def per_atom(key):
            return [t.detach().to("cpu", torch.float64).numpy() for t in graph.split(out[key])]

        energy = out["energy"].detach().to("cpu", torch.float64).numpy()
        forces = per_atom("forces")
        energies = per_atom("energies")
        stress = out["stress"].detach().to("cpu", torch.float64).numpy() if "stress" in out else None
        extras = {k: per_atom(k) for k in self.model.backbone.extra_properties if k in out}
        per_system = {}
        for name in self.model.heads:
            for key in (name, f"{name}_std"):
                if key in out:
                    per_system[key] = out[key].detach().to("cpu", torch.float64).numpy()
        results = []
        for s in range(graph.num_systems):
            r = {
                "energy": float(energy[s]),
                "free_energy": float(energy[s]),
                "forces": forces[s],
                "energies": energies[s],
            }
            if stress is not None and np.all(np.isfinite(stress[s])):
                r["stress"] = full_3x3_to_voigt_6_stress(stress[s])
            for k, v in extras.items():
                r[k] = v[s]
            for k, v in per_system.items():
                r[k] = float(v[s])
            results.append(r)
        return results
