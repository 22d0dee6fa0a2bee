"""Screening on a Dask cluster: the structure files are cut into shards, each
shard is one task, the calculator is built once per worker, and every shard's
results are written as a Parquet part as soon as they arrive.

Nothing is lost when a worker dies: Dask's scheduler runs the shards it held
again elsewhere, and a part is written (atomically) only for a finished
shard, once, by the client. A killed screen resumes from the parts already
written. At the end the parts are joined in shard order, so the table has the
rows of a single-process :func:`~mpa_ase.workflows.screen` in the same order.
The workers read the structure files themselves, so on a cluster the files
must sit on a file system that every worker sees (as on any HPC cluster).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from mpa_ase.workflows.screen import columns_of, errors_path, screen_items

_WORKER_CALCS: dict[str, object] = {}  # one calculator per worker process, per spec


def parts_dir(out: str | Path) -> Path:
    """Where a cluster screen keeps its parts: ``<out stem>.parts/`` beside ``out``."""
    out = Path(out)
    return out.with_name(out.stem + ".parts")


def calculator_spec(calc) -> tuple[str, object]:
    """What a worker needs to build its own copy of ``calc``: an
    :class:`MPACalculator`'s settings, or a picklable zero-argument factory."""
    from mpa_ase.calculator import MPACalculator

    if isinstance(calc, MPACalculator):
        params = dict(calc.parameters)
        if str(params.get("model", "")).startswith("<MPAModel"):
            raise ValueError("screening on a cluster rebuilds the calculator on every worker: give MPACalculator "
                             "a model file or name, not an MPAModel object (or pass calc=a function that builds it)")
        return "mpa", params
    if callable(calc):
        try:
            pickle.dumps(calc)
        except Exception as exc:  # noqa: BLE001 - a lambda or a closure cannot travel to the workers
            raise ValueError(f"the calculator factory cannot be sent to the workers ({exc}); "
                             "use a module-level function") from exc
        return "factory", calc
    raise TypeError("screen(..., client=...) needs an MPACalculator or a zero-argument function that returns "
                    f"an ASE calculator (built once on each worker), not {type(calc).__name__}")


def _worker_calc(spec: tuple[str, object]):
    key = hashlib.sha1(pickle.dumps(spec)).hexdigest()
    if key not in _WORKER_CALCS:
        kind, value = spec
        if kind == "mpa":
            from mpa_ase.calculator import MPACalculator

            _WORKER_CALCS[key] = MPACalculator(**value)
        else:
            _WORKER_CALCS[key] = value()
    return _WORKER_CALCS[key]


def screen_shard(sources: Sequence[str], spec, options: dict) -> tuple[list[dict], list[dict]]:
    """Rows and errors of one shard of files (runs on a worker)."""
    from mpa_ase.workflows.screen import iter_structures

    calc = _worker_calc(spec)
    rows, failed = screen_items(iter_structures(sources, errors=True), calc, **options)
    return rows, [{"id": sid, "reason": reason} for sid, reason in failed]


def _write_part(frame_rows: list[dict], columns: list[str], path: Path) -> None:
    import pandas as pd

    tmp = path.with_suffix(".tmp")
    pd.DataFrame(frame_rows, columns=columns).to_parquet(tmp, index=False)
    os.replace(tmp, path)


def screen_on_cluster(sources: Sequence[str], calc, out: str | Path, client, *, relax: bool = False,
                      fmax: float = 0.05, relax_steps: int = 300, batch_size: int = 16, shard_size: int = 16,
                      resume: bool = True, progress: bool = True, in_flight: int | None = None) -> Path:
    """See :func:`mpa_ase.workflows.screen` (``client=``). ``shard_size`` files
    make one task; at most ``in_flight`` tasks (default 4 per worker thread)
    are queued at a time, so a million files do not become a million futures."""
    import pandas as pd
    from distributed import as_completed

    if shard_size < 1 or (in_flight is not None and in_flight < 1):
        raise ValueError(f"shard_size and in_flight must be >= 1, got {shard_size} and {in_flight}")
    spec = calculator_spec(calc)
    probe = calc() if spec[0] == "factory" else calc  # the heads decide the table's columns
    heads = getattr(probe, "heads", {})
    columns = columns_of(heads, relax)
    sources = [str(s) for s in sources]
    shards = [sources[k:k + shard_size] for k in range(0, len(sources), shard_size)]
    out = Path(out)
    folder = parts_dir(out)
    layout = {"shards": shards, "columns": columns, "relax": relax, "fmax": fmax, "relax_steps": relax_steps}
    layout_key = hashlib.sha1(json.dumps(layout, sort_keys=True).encode()).hexdigest()
    manifest = folder / "manifest.json"
    if folder.exists() and not resume:
        for f in folder.iterdir():
            f.unlink()
    if folder.exists() and manifest.exists() and json.loads(manifest.read_text()).get("key") != layout_key:
        raise ValueError(f"{folder} holds the parts of a screen with other inputs or settings; "
                         "resume=False (--restart) starts over")
    folder.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"key": layout_key, "n_shards": len(shards)}))

    def part(i: int) -> Path:
        return folder / f"part-{i:06d}.parquet"

    def error_part(i: int) -> Path:
        return folder / f"part-{i:06d}.errors.parquet"

    todo = [i for i in range(len(shards)) if not part(i).exists()]
    options = {"relax": relax, "fmax": fmax, "relax_steps": relax_steps, "batch_size": batch_size, "heads": heads}
    threads = sum(client.nthreads().values()) or 1
    limit = in_flight or 4 * threads
    bar = tqdm(total=len(shards), initial=len(shards) - len(todo), desc="screening (shards)", unit="shard",
               disable=not progress)
    structures = 0
    pending = iter(todo)
    index = {}

    def submit(i):
        fut = client.submit(screen_shard, shards[i], spec, options, key=f"mpa-screen-{layout_key[:12]}-{i}",
                            retries=2)
        index[fut.key] = i
        return fut

    queue = as_completed([submit(i) for _, i in zip(range(limit), pending)], with_results=False)
    for fut in queue:
        i = index.pop(fut.key)
        try:
            rows, failed = fut.result()
        except Exception as exc:  # noqa: BLE001 - a shard that failed on every try is reported, not fatal
            rows = []
            failed = [{"id": src, "reason": f"shard failed on the cluster ({type(exc).__name__}: {exc})"}
                      for src in shards[i]]
        fut.release()
        _write_part(failed, ["id", "reason"], error_part(i))
        _write_part(rows, columns, part(i))  # last: its presence marks the shard done
        structures += len(rows) + len(failed)
        bar.update(1)
        bar.set_postfix(structures=structures)
        nxt = next(pending, None)
        if nxt is not None:
            queue.add(submit(nxt))
    bar.close()

    frames = [pd.read_parquet(part(i)) for i in range(len(shards))]
    errors = [pd.read_parquet(error_part(i)) for i in range(len(shards))]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    err = pd.concat(errors, ignore_index=True) if errors else pd.DataFrame(columns=["id", "reason"])
    if table["id"].duplicated().any():  # pragma: no cover - one part per shard makes this impossible
        raise AssertionError("duplicate ids in the screen's parts")
    if out.suffix == ".parquet":
        table.to_parquet(out, index=False)
    else:
        table.to_csv(out, index=False)
    err.to_csv(errors_path(out), index=False)
    return out


def local_client(workers: int, threads_per_worker: int = 1):
    """A ``distributed.Client`` on a local cluster of worker processes."""
    from distributed import Client, LocalCluster

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    cluster = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                           dashboard_address=None)
    return Client(cluster)
