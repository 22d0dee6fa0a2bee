"""Screening: stream many structures through the calculator in batches, to CSV (or Parquet)."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm


def iter_structures(sources: Sequence[str]) -> Iterator[tuple[str, object]]:
    """(id, Atoms) from structure files of any ASE format and ASE databases (.db), lazily."""
    from ase.io import iread

    for src in sources:
        path = Path(src)
        if not path.exists():
            raise FileNotFoundError(f"structure source {src} not found")
        if path.suffix == ".db":
            from ase.db import connect

            for row in connect(str(path)).select():
                yield f"{src}@id={row.id}", row.toatoms()
        else:
            for k, atoms in enumerate(iread(str(path), index=":")):
                yield f"{src}@{k}", atoms


def _done_ids(out: Path) -> set[str]:
    if not out.exists():
        return set()
    with open(out, newline="") as f:
        return {row["id"] for row in csv.DictReader(f)}


def screen(sources: Sequence[str], calc, out: str | Path, *, relax: bool = False, fmax: float = 0.05,
           relax_steps: int = 300, batch_size: int = 16, resume: bool = True, progress: bool = True) -> Path:
    """Energies (and relaxed energies, predicted properties) of every structure in ``sources``.

    Structures are read lazily and evaluated ``batch_size`` at a time, so memory
    stays bounded; each batch is appended to the CSV and flushed, so an
    interrupted screen resumes where it stopped (ids already in ``out`` are
    skipped). ``out`` ending in ``.parquet`` writes a CSV beside it while
    running and converts at the end (needs pandas + pyarrow).
    """
    out = Path(out)
    parquet = out.suffix == ".parquet"
    csv_path = out.with_suffix(".csv") if parquet else out
    done = _done_ids(csv_path) if resume else set()
    if not resume and csv_path.exists():
        csv_path.unlink()
    heads = getattr(calc, "heads", {})
    columns = ["id", "formula", "n_atoms", "energy_eV", "energy_per_atom_eV"]
    if relax:
        columns += ["relaxed_energy_eV", "relaxed_energy_per_atom_eV", "relax_converged", "relax_steps"]
    for name, info in heads.items():
        columns += [f"{name}_{info['unit']}", f"{name}_std_{info['unit']}"]
    new_file = not csv_path.exists()
    bar = tqdm(desc="screening", unit="structure", disable=not progress)
    with open(csv_path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        if new_file:
            writer.writeheader()
        batch: list[tuple[str, object]] = []

        def flush():
            rows = _evaluate(batch, calc, relax, fmax, relax_steps, heads)
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(batch))
            batch.clear()

        for sid, atoms in iter_structures(sources):
            if sid in done:
                continue
            batch.append((sid, atoms))
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
    bar.close()
    if parquet:
        import pandas as pd

        pd.read_csv(csv_path).to_parquet(out)
    return out


def _evaluate(batch, calc, relax, fmax, relax_steps, heads) -> list[dict]:
    from mpa_ase.workflows.phonons import evaluate_many

    structures = [a for _, a in batch]
    results = evaluate_many(structures, calc)
    rows = []
    for (sid, atoms), r in zip(batch, results):
        n = len(atoms)
        row = {"id": sid, "formula": atoms.get_chemical_formula(), "n_atoms": n,
               "energy_eV": r["energy"], "energy_per_atom_eV": r["energy"] / n}
        for name, info in heads.items():
            row[f"{name}_{info['unit']}"] = r.get(name, np.nan)
            row[f"{name}_std_{info['unit']}"] = r.get(f"{name}_std", np.nan)
        rows.append(row)
    if relax:
        from mpa_ase.workflows.relax_md_eos import relax as relax_one

        for row, atoms in zip(rows, structures):
            res = relax_one(atoms, calc, fmax=fmax, steps=relax_steps, cell=bool(atoms.pbc.all()))
            row.update({"relaxed_energy_eV": res.energy, "relaxed_energy_per_atom_eV": res.energy / len(atoms),
                        "relax_converged": res.converged, "relax_steps": res.steps})
    return rows
