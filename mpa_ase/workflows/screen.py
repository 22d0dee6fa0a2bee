"""Screening: stream many structures through the calculator in batches, to CSV (or Parquet)."""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm


class UnreadableStructure(ValueError):
    """A source (or one structure in it) that cannot be screened, with the reason."""


def disorder_reason(atoms) -> str | None:
    """Why ``atoms`` is not one ordered structure (partial occupancies read from a CIF), or None."""
    occupancy = atoms.info.get("occupancy") or {}
    partial = sorted({"".join(f"{el}{x:g}" for el, x in sorted(site.items()))
                      for site in occupancy.values() if any(x < 1 - 1e-6 for x in site.values())})
    if partial:
        return (f"partially occupied sites ({', '.join(partial[:3])}): a disordered structure has no single "
                "energy; order it first (e.g. pymatgen's OrderDisorderedStructureTransformation)")
    return None


def iter_structures(sources: Sequence[str], errors: bool = False) -> Iterator[tuple[str, object]]:
    """(id, Atoms) from structure files of any ASE format and ASE databases (.db), lazily.

    With ``errors``, a source that cannot be read, or a disordered structure,
    yields (id, :class:`UnreadableStructure`) instead of stopping the iteration.
    """
    from ase.io import iread

    for src in sources:
        path = Path(src)
        if not path.exists():
            if errors:
                yield f"{src}", UnreadableStructure("file not found")
                continue
            raise FileNotFoundError(f"structure source {src} not found")
        k = -1
        try:
            if path.suffix == ".db":
                from ase.db import connect

                for k, row in enumerate(connect(str(path)).select()):
                    yield f"{src}@id={row.id}", row.toatoms()
            else:
                for k, atoms in enumerate(iread(str(path), index=":")):
                    why = disorder_reason(atoms)
                    if why and errors:
                        yield f"{src}@{k}", UnreadableStructure(why)
                    elif why:
                        raise UnreadableStructure(f"{src}@{k}: {why}")
                    else:
                        yield f"{src}@{k}", atoms
                if k < 0:
                    raise ValueError("no structure found in the file")
        except UnreadableStructure:
            raise
        except Exception as exc:  # noqa: BLE001 - any reader failure is this file's problem, reported
            if not errors:
                raise UnreadableStructure(f"{src}: cannot be read ({type(exc).__name__}: {exc})") from exc
            yield f"{src}@{k + 1}", UnreadableStructure(
                f"cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})")


def _repair_tail(path: Path) -> None:
    """Drop a last line cut short by a kill (no trailing newline), so a resume appends cleanly."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def _done_ids(out: Path) -> set[str]:
    if not out.exists():
        return set()
    _repair_tail(out)
    with open(out, newline="") as f:
        return {row["id"] for row in csv.DictReader(f)}


def errors_path(out: str | Path) -> Path:
    """The errors table written beside a screen's results: ``<out stem>.errors.csv``."""
    out = Path(out)
    return out.with_name(out.stem + ".errors.csv")


def columns_of(heads: dict, relax: bool) -> list[str]:
    """The results table's columns for a calculator's ``heads``."""
    columns = ["id", "formula", "n_atoms", "energy_eV", "energy_per_atom_eV"]
    if relax:
        columns += ["relaxed_energy_eV", "relaxed_energy_per_atom_eV", "relax_converged", "relax_steps"]
    for name, info in heads.items():
        columns += [f"{name}_{info['unit']}", f"{name}_std_{info['unit']}"]
        if _has_domain(info):
            columns.append(f"{name}_in_domain")
    return columns


def _has_domain(info: dict) -> bool:
    return info.get("elements") is not None or info.get("material") is not None


def iter_batches(items, calc, *, relax: bool, fmax: float, relax_steps: int, batch_size: int, heads: dict):
    """(rows, failed) per batch of ``(id, Atoms or UnreadableStructure)`` items;
    ``failed`` lists (id, reason)."""
    batch: list[tuple[str, object]] = []
    for sid, atoms in items:
        if isinstance(atoms, Exception):
            yield [], [(sid, str(atoms))]
            continue
        batch.append((sid, atoms))
        if len(batch) >= batch_size:
            yield _evaluate_robust(batch, calc, relax, fmax, relax_steps, heads)
            batch = []
    if batch:
        yield _evaluate_robust(batch, calc, relax, fmax, relax_steps, heads)


def screen_items(items, calc, **options) -> tuple[list[dict], list[tuple[str, str]]]:
    """All rows and failures of ``items`` (see :func:`iter_batches`)."""
    rows, failed = [], []
    for r, f in iter_batches(items, calc, **options):
        rows += r
        failed += f
    return rows, failed


def screen(sources: Sequence[str], calc, out: str | Path, *, relax: bool = False, fmax: float = 0.05,
           relax_steps: int = 300, batch_size: int = 16, resume: bool = True, progress: bool = True,
           client=None, shard_size: int = 16) -> Path:
    """Energies (and relaxed energies, predicted properties) of every structure in ``sources``.

    Structures are read lazily and evaluated ``batch_size`` at a time, so memory
    stays bounded; each batch is appended to the CSV and flushed, so an
    interrupted screen resumes where it stopped (ids already in ``out`` or in
    the errors table are skipped). A structure that cannot be evaluated (an
    unreadable file, a disordered structure, atoms too close, an element the
    model lacks, ...) goes to the errors table :func:`errors_path` with its
    reason, and the screen goes on. ``out`` ending in ``.parquet`` writes a
    CSV beside it while running and converts at the end (needs pandas +
    pyarrow).

    ``client``: a ``distributed.Client``; the screen then runs on its cluster
    (shards of ``shard_size`` files, one calculator per worker, Parquet parts,
    resumable; see :mod:`mpa_ase.workflows.screen_dask`) and ``calc`` is an
    :class:`MPACalculator` (rebuilt on each worker from its settings) or a
    zero-argument function that builds the calculator.
    """
    missing = [str(src) for src in sources if not Path(src).exists()]
    if missing:  # a mistyped path is the caller's error, not a bad structure to report and skip
        raise FileNotFoundError(f"structure source(s) not found: {', '.join(missing[:5])}")
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}")
    if client is not None:
        from mpa_ase.workflows.screen_dask import screen_on_cluster

        return screen_on_cluster(sources, calc, out, client, relax=relax, fmax=fmax, relax_steps=relax_steps,
                                 batch_size=batch_size, shard_size=shard_size, resume=resume, progress=progress)
    out = Path(out)
    parquet = out.suffix == ".parquet"
    csv_path = out.with_suffix(".csv") if parquet else out
    err_path = errors_path(out)
    done = (_done_ids(csv_path) | _done_ids(err_path)) if resume else set()
    if not resume:
        for path in (csv_path, err_path):
            if path.exists():
                path.unlink()
    heads = getattr(calc, "heads", {})
    columns = columns_of(heads, relax)
    new_file = not csv_path.exists()
    new_errors = not err_path.exists()
    bar = tqdm(desc="screening", unit="structure", disable=not progress)
    with open(csv_path, "a", newline="") as f, open(err_path, "a", newline="") as ferr:
        writer = csv.DictWriter(f, fieldnames=columns)
        err_writer = csv.DictWriter(ferr, fieldnames=["id", "reason"])
        if new_file:
            writer.writeheader()
        if new_errors:
            err_writer.writeheader()
        todo = ((sid, atoms) for sid, atoms in iter_structures(sources, errors=True) if sid not in done)
        for rows, failed in iter_batches(todo, calc, relax=relax, fmax=fmax, relax_steps=relax_steps,
                                         batch_size=batch_size, heads=heads):
            if rows:
                writer.writerows(rows)
                f.flush()
                os.fsync(f.fileno())
            if failed:
                err_writer.writerows({"id": sid, "reason": reason} for sid, reason in failed)
                ferr.flush()
                os.fsync(ferr.fileno())
            bar.update(len(rows) + len(failed))
    bar.close()
    if parquet:
        import pandas as pd

        pd.read_csv(csv_path).to_parquet(out)
    return out


def _evaluate_robust(batch, calc, relax, fmax, relax_steps, heads) -> tuple[list[dict], list[tuple[str, str]]]:
    """Rows of the batch; if the batch fails, each structure alone, failures named."""
    from mpa_ase.errors import MPAInputError

    try:
        return _evaluate(batch, calc, relax, fmax, relax_steps, heads), []
    except (MPAInputError, ValueError, RuntimeError):
        pass
    rows, failed = [], []
    for item in batch:
        try:
            rows.extend(_evaluate([item], calc, relax, fmax, relax_steps, heads))
        except (MPAInputError, ValueError, RuntimeError) as exc:
            failed.append((item[0], f"{type(exc).__name__}: {exc}"))
    return rows, failed


def _evaluate(batch, calc, relax, fmax, relax_steps, heads) -> list[dict]:
    from mpa_ase.workflows.batch import evaluate_many

    structures = [a for _, a in batch]
    with warnings.catch_warnings():  # the table's <head>_in_domain column says it, per structure
        warnings.filterwarnings("ignore", message="outside the training domain")
        results = evaluate_many(structures, calc)
    rows = []
    for (sid, atoms), r in zip(batch, results):
        n = len(atoms)
        row = {"id": sid, "formula": atoms.get_chemical_formula(), "n_atoms": n,
               "energy_eV": r["energy"], "energy_per_atom_eV": r["energy"] / n}
        for name, info in heads.items():
            row[f"{name}_{info['unit']}"] = r.get(name, np.nan)
            row[f"{name}_std_{info['unit']}"] = r.get(f"{name}_std", np.nan)
            if _has_domain(info):
                row[f"{name}_in_domain"] = int(r[f"{name}_in_domain"]) if f"{name}_in_domain" in r else np.nan
        rows.append(row)
    if relax:
        from mpa_ase.workflows.relax import relax_many

        relaxed = relax_many(structures, calc, fmax=fmax, steps=relax_steps)
        for row, res in zip(rows, relaxed):
            row.update({"relaxed_energy_eV": res.energy, "relaxed_energy_per_atom_eV": res.energy / len(res.atoms),
                        "relax_converged": res.converged, "relax_steps": res.steps})
    return rows
