"""``MPACalculator``: an ASE calculator for mpa-ase models."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from mpa_ase.checkpoint import DEFAULT_BACKBONE, load_model
from mpa_ase.graph import AtomsGraph, to_ase
from mpa_ase.model import MPAModel
from mpa_ase.neighbors.verlet import VerletNeighbors

__all__ = ["DEFAULT_BACKBONE", "ExactStateCheck", "MPACalculator", "unchanged_exactly"]

_BASE_PROPERTIES = ("energy", "free_energy", "forces", "stress", "energies")


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype, default: torch.dtype) -> torch.dtype:
    if dtype is None:
        return default
    table = {"float32": torch.float32, "float64": torch.float64, "float": torch.float32, "double": torch.float64}
    if isinstance(dtype, torch.dtype):
        dtype = str(dtype).replace("torch.", "")
    if str(dtype) not in table:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r} (lower precisions are not supported: "
                         "forces and stress need derivatives that float16/bfloat16 get wrong)")
    return table[str(dtype)]


def _head_suffixes(head) -> list[str]:
    info = head.describe()
    suffixes = ["", "_std"]
    if info.get("interval_level") is not None:
        suffixes += ["_lo", "_hi"]
    if info.get("elements") is not None or info.get("material") is not None:
        suffixes.append("_in_domain")
    return suffixes


def unchanged_exactly(a, b, watched: set) -> bool:
    """Whether the ``watched`` properties (names from ASE's ``all_changes``) of
    two Atoms are exactly equal."""
    if "cell" in watched and not np.array_equal(a.cell.array, b.cell.array):
        return False
    if "pbc" in watched and not np.array_equal(a.pbc, b.pbc):
        return False
    arrays = watched & (set(a.arrays) | set(b.arrays))
    return all(k in a.arrays and k in b.arrays and np.array_equal(a.arrays[k], b.arrays[k]) for k in arrays)


class ExactStateCheck:
    """Calculator mixin: ``check_state`` answers "no change" at once when
    everything ASE watches is exactly equal, and asks ASE otherwise. A step
    asks energy, forces and stress of the same atoms in turn; ASE's own check
    is a dozen tolerance comparisons each time."""

    def check_state(self, atoms, tol=1e-15):
        if self.atoms is not None and unchanged_exactly(self.atoms, atoms, set(all_changes) - set(self.ignored_changes)):
            return []
        return super().check_state(atoms, tol)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


class MPACalculator(ExactStateCheck, Calculator):
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

    Each ``calculate`` computes what ASE asks for: energy and forces always
    (one backward pass gives both), stress only once it has been asked for
    (from then on with every calculation, so that a cell relaxation or NPT
    run costs one model call per step), property heads only when a head (or
    its ``_std``) is asked; ASE's cache asks again for what is missing. The constructor's settings are ``calc.parameters``
    (``calc.todict()``); ``calc.set(...)`` changes them.

    Results are in ASE units: energy eV, forces eV/Å, stress eV/Å³ (Voigt,
    xx yy zz yz xz xy; only for systems with a 3D cell), per-atom ``energies``
    eV, and the backbone's extras (CHGNet: ``magmoms``, μB). Each property
    head adds ``results[name]`` and ``results[name + "_std"]`` in the unit
    listed by ``calc.heads[name]["unit"]``.
    """

    default_parameters: dict = {
        "model": "default", "backbone": None, "device": "auto", "dtype": None,
        "neighbor_backend": "auto", "skin": 1.0,
    }
    _SETTINGS = tuple(default_parameters)

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
        self.model = None
        self._stress_asked = False
        self._configure(model=model, backbone=backbone, device=device, dtype=dtype,
                        neighbor_backend=neighbor_backend, skin=skin)

    def _configure(self, **settings) -> None:
        """Apply constructor settings: (re)load the model only when model/backbone
        change, move it for device/dtype, rebuild the neighbour object."""
        reload = self.model is None or "model" in settings or "backbone" in settings
        current = {k: self.parameters.get(k, v) for k, v in self.default_parameters.items()}
        new = {**current, **settings}
        if reload:
            model = new["model"]
            if isinstance(model, MPAModel):
                self.model = model
                new["model"] = f"<MPAModel {model.backbone.name}, heads: {', '.join(model.heads) or 'none'}>"
            else:
                self.model = load_model(model, new["backbone"])
                new["model"] = str(model) if model is not None else "default"
        self.device = resolve_device(new["device"])
        self.dtype = resolve_dtype(new["dtype"], self.model.backbone.default_dtype)
        self.model = self.model.to(device=self.device, dtype=self.dtype).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.neighbors = VerletNeighbors(self.model.cutoff, float(new["skin"]), backend=new["neighbor_backend"],
                                         device=self.device)
        new["device"] = str(new["device"])
        new["dtype"] = None if new["dtype"] is None else _dtype_name(self.dtype)
        new["skin"] = float(new["skin"])
        self.parameters.update(new)
        self.implemented_properties = list(_BASE_PROPERTIES) + list(self.model.backbone.extra_properties)
        # result keys of each head, fixed per model (read on every calculation)
        self._head_keys = {name: [name + suffix for suffix in _head_suffixes(head)]
                           for name, head in self.model.heads.items()}
        for keys in self._head_keys.values():
            self.implemented_properties += keys

    def set(self, **kwargs) -> dict:
        """Change settings (``model``, ``backbone``, ``device``, ``dtype``,
        ``neighbor_backend``, ``skin``); results are cleared when any changes."""
        unknown = sorted(set(kwargs) - set(self._SETTINGS))
        if unknown:
            raise ValueError(f"unknown MPACalculator setting(s) {unknown}; settings: {list(self._SETTINGS)}")
        if getattr(self, "model", None) is None:  # Calculator.__init__ passes its own kwargs here
            return super().set(**kwargs)
        changed = {k: v for k, v in kwargs.items() if self.parameters.get(k) != v}
        if changed:
            self._configure(**changed)
            self.reset()
        return changed

    @property
    def verlet(self) -> VerletNeighbors:
        """The neighbour-list object (alias kept for scripts that read its counters)."""
        return self.neighbors

    @property
    def neighbor_backend(self) -> str:
        return self.neighbors.backend

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

    def _work_for(self, properties) -> dict:
        want = set(properties)
        return {"compute_stress": "stress" in want,
                "compute_heads": any(k in want for keys in self._head_keys.values() for k in keys)}

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        self._check_properties(properties)
        previous = self.results if not system_changes else {}
        super().calculate(atoms, properties, system_changes)
        graph = AtomsGraph.from_atoms(
            self.atoms, self.model.cutoff, dtype=self.dtype, device=self.device,
            neighbors=self.neighbors, reuse_neighbors=True,
        )
        work = self._work_for(properties)
        # Once a caller has asked for the stress (a cell relaxation, NPT, a script asking
        # energy, forces, stress in turn), it comes with every later calculation: asking for
        # it separately each step would cost a second model call per step.
        self._stress_asked = self._stress_asked or work["compute_stress"]
        work["compute_stress"] = self._stress_asked and bool(self.atoms.pbc.all())
        # Same configuration, more asked (e.g. stress after forces): keep what is known.
        self.results = {**previous, **self._run(graph, **work)[0]}

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
        options = self._work_for(self.implemented_properties if properties is None else properties)
        atoms_list = [to_ase(s) for s in structures]
        step = batch_size or max(1, len(atoms_list))
        out = []
        for k in range(0, len(atoms_list), step):
            out.extend(self._run(self.build_graph(atoms_list[k:k + step]), **options))
        return out

    def build_graph(self, atoms_list: Sequence) -> AtomsGraph:
        return AtomsGraph.from_atoms(
            list(atoms_list), self.model.cutoff, dtype=self.dtype, device=self.device, neighbors=self.neighbors,
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
        outside = []
        for name, keys in self._head_keys.items():
            for key in keys:
                if key in out:
                    per_system[key] = out[key].detach().to("cpu", torch.float64).numpy()
            flags = per_system.get(f"{name}_in_domain")
            if flags is not None and (flags < 0.5).any():
                outside.append(f"{name} (structures {[s for s in range(graph.num_systems) if flags[s] < 0.5][:5]})")
        if outside:
            warnings.warn(
                f"outside the training domain (elements or material kind) of: {', '.join(outside)}; those values "
                "are extrapolations (results[name + '_in_domain'] is 0; calc.heads[name] lists the domain)",
                stacklevel=4)
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
