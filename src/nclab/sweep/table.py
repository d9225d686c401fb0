"""A sweep's results: a folder of Parquet part files, one row per job, read back as one table.

Layout of a sweep folder ``OUT``::

    OUT/sweep.json                  the config (validated, JSON), written atomically
    OUT/results/part-*.parquet      the rows, one part per finished chunk of jobs

Each part is written atomically (:func:`nclab.io.atomic_write`: a temporary file, fsync,
``os.replace``) the moment its jobs finish, so a crash, even ``kill -9``, loses only the jobs that
were running; a half-written temporary file is never read.  The parts form a Parquet dataset that
pandas, polars and pyarrow read directly (``pandas.read_parquet(OUT / "results")``), or as one
table with :func:`read_table`: the parts concatenated (columns unified: a failed job has no
metrics), one row per job key -- a job rerun by ``--retry-failed`` appears in two parts; the later
part wins --, sorted by job key.  :func:`compact` rewrites the parts as one file (atomically: the
new part exists before the old ones go, and duplicates resolve the same way in between).

pyarrow is imported lazily (``pip install 'nclab[sweep]'``).
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

from nclab.io import atomic_write

__all__ = ["RESULTS", "pyarrow", "write_part", "part_files", "read_table", "compact", "finished_keys"]

#: The sub-folder of a sweep folder that holds the part files.
RESULTS = "results"

_counter = iter(range(1 << 62))


def pyarrow():
    """The pyarrow module, or ModuleNotFoundError with the install hint."""
    try:
        import pyarrow as pa
        import pyarrow.parquet  # noqa: F401
    except ModuleNotFoundError:  # pragma: no cover - pyarrow is part of nclab[sweep]
        raise ModuleNotFoundError("nclab sweep writes Parquet tables with pyarrow: pip install 'nclab[sweep]'") from None
    return pa


def part_files(out) -> list[Path]:
    """The part files of the sweep folder ``out``, oldest first (names carry the time in ns)."""
    folder = Path(out) / RESULTS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith("part-") and p.suffix == ".parquet")


def _table_of_rows(rows: list[dict]):
    pa = pyarrow()
    names: list[str] = []
    for r in rows:
        names.extend(k for k in r if k not in names)
    columns = {}
    for name in names:
        values = [r.get(name) for r in rows]
        if any(isinstance(v, float) for v in values) and all(v is None or isinstance(v, (int, float)) and not isinstance(v, bool)
                                                            for v in values):
            values = [None if v is None else float(v) for v in values]  # ints and floats in one column: float64
        columns[name] = pa.array(values)
    return pa.table(columns)


def write_part(out, rows: list[dict]) -> Path | None:
    """Write ``rows`` (dicts, :func:`nclab.sweep.jobs.run_job`) as a new part file, atomically;
    returns its path (None for no rows)."""
    if not rows:
        return None
    pa = pyarrow()
    table = _table_of_rows(rows)
    buf = io.BytesIO()
    pa.parquet.write_table(table, buf)
    name = f"part-{time.time_ns():020d}-{os.getpid()}-{next(_counter):06d}.parquet"
    return atomic_write(Path(out) / RESULTS / name, buf.getvalue())


def _read_parts(parts: list[Path]):
    pa = pyarrow()
    tables = [pa.parquet.read_table(p) for p in parts]
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive")


def _last_per_key(table):
    """Rows of ``table`` (parts in order) keeping the last row of each job key, sorted by key."""
    pa = pyarrow()
    keys = table.column("job_key").to_pylist()
    last = {k: i for i, k in enumerate(keys)}
    order = sorted(last)
    return table.take(pa.array([last[k] for k in order], type=pa.int64()))


def read_table(out, keys=None):
    """All results of the sweep folder ``out`` as one ``pyarrow.Table``, one row per job key (the
    latest), sorted by job key; ``keys`` (an iterable of job keys) keeps only those jobs.  None
    when the folder has no results yet.  ``read_table(out).to_pandas()`` gives a DataFrame."""
    table = _read_parts(part_files(out))
    if table is None:
        return None
    table = _last_per_key(table)
    if keys is not None:
        wanted = set(keys)
        pa = pyarrow()
        mask = pa.array([k in wanted for k in table.column("job_key").to_pylist()])
        table = table.filter(mask)
    return table


def finished_keys(out) -> tuple[set[str], dict[str, str]]:
    """``(done, failed)`` of the sweep folder: the keys of jobs that finished without an error,
    and ``{key: error}`` of those whose latest row is a failure.  Reads only two columns."""
    pa = pyarrow()
    done: set[str] = set()
    failed: dict[str, str] = {}
    for p in part_files(out):
        t = pa.parquet.read_table(p, columns=["job_key", "error"])
        for key, err in zip(t.column("job_key").to_pylist(), t.column("error").to_pylist()):
            if err is None:
                done.add(key)
                failed.pop(key, None)
            else:
                failed[key] = err
                done.discard(key)
    return done, failed


def compact(out) -> Path | None:
    """Rewrite the parts of ``out`` as one part (one row per job key, sorted), atomically: the
    new file is complete before the old parts are removed.  Returns the new part (None if no
    results)."""
    parts = part_files(out)
    if len(parts) <= 1:
        return parts[0] if parts else None
    pa = pyarrow()
    table = _last_per_key(_read_parts(parts))
    buf = io.BytesIO()
    pa.parquet.write_table(table, buf)
    name = f"part-{time.time_ns():020d}-{os.getpid()}-{next(_counter):06d}.parquet"
    new = atomic_write(Path(out) / RESULTS / name, buf.getvalue())
    for p in parts:
        p.unlink(missing_ok=True)
    return new
