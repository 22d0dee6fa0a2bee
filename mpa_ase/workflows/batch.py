"""The one batching protocol of the workflows: many structures, one model call
where the calculator offers ``calculate_batch`` (MPACalculator), one call
each otherwise (any ASE calculator)."""

from __future__ import annotations

from collections.abc import Sequence

from ase import Atoms


def evaluate_many(structures: Sequence[Atoms], calc, batch_size: int | None = None,
                  properties: Sequence[str] | None = None) -> list[dict]:
    """Results of many structures: batched model calls where the calculator
    offers ``calculate_batch`` (MPACalculator), else one call each.
    ``properties`` (default: all the calculator gives) lets a batch skip work."""
    if hasattr(calc, "calculate_batch"):
        return calc.calculate_batch(list(structures), batch_size=batch_size, properties=properties)
    wanted = properties or ("energy", "forces", "stress")
    results = []
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = calc
        r = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if "stress" in wanted and atoms.cell.volume > 0:
            r["stress"] = atoms.get_stress()
        results.append(r)
    return results
