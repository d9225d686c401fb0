"""Run a sweep: config -> the jobs not yet finished -> a backend -> Parquet parts as they finish.

:func:`run_sweep` is the one entry point of ``nclab sweep`` and of Python code (notebooks,
``nclab reproduce``).  Resume is by job key (:func:`nclab.sweep.jobs.job_key`): a job whose key
has a row without an error in ``OUT/results`` is never run again; a failed job is run again only
with ``retry_failed``.  Rerunning the same command after a crash (even ``kill -9``) therefore runs
exactly the jobs that are missing, and the final table equals that of an uninterrupted run (up to
the ``seconds`` column, a wall time).  Widening a sweep (more seeds, a larger grid) into the same
folder runs only the new jobs; rows of jobs no longer in the config stay in the folder.

>>> import tempfile
>>> cfg = {"kind": "ufm solve", "options": {"K": 3, "n": 2}, "grid": {"lambda": [0.01, 0.5]}}
>>> out = tempfile.mkdtemp()
>>> s = run_sweep(cfg, out, workers=1)
>>> s.total, s.ran, s.done, s.failed, run_sweep(cfg, out, workers=1).ran
(2, 2, 2, 0, 0)
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from nclab._validation import check_bool, check_choice, check_int
from nclab.io import write_json_atomic
from nclab.sweep.backends import BACKENDS, default_workers, local_backend, ray_backend, ray_module
from nclab.sweep.config import SweepConfig, load_config
from nclab.sweep.table import compact, finished_keys, pyarrow, write_part

__all__ = ["SweepSummary", "run_sweep", "plan", "MAX_CHUNK", "CONFIG_FILE"]

#: The config is kept beside the results under this name.
CONFIG_FILE = "sweep.json"
#: The most jobs in one task (the automatic chunk size aims at 4 chunks per worker, at most this).
MAX_CHUNK = 32


@dataclass
class SweepSummary:
    """What a sweep did.  ``total``: jobs in the config; ``reused``: finished before this run and
    not run again; ``ran``: run now; ``done``/``failed``: the config's jobs now finished without
    and with an error; ``errors``: ``{job key: error}`` of the failed ones; ``seconds``: wall
    time of this run; ``chunk``: jobs per task."""

    out: str
    backend: str
    workers: int
    chunk: int
    total: int
    reused: int
    ran: int
    done: int
    failed: int
    seconds: float
    errors: dict = field(default_factory=dict)

    @property
    def remaining(self) -> int:
        """Jobs of the config with no row (0 after a complete run)."""
        return self.total - self.done - self.failed

    def as_dict(self) -> dict:
        return {**asdict(self), "remaining": self.remaining}


def plan(config: SweepConfig, out, retry_failed: bool = False) -> tuple[list[dict], set[str], dict[str, str]]:
    """``(todo, done, failed)``: the jobs of ``config`` to run now, and the config's job keys
    already finished (``done``) and failed (``{key: error}``) in ``out``."""
    done_all, failed_all = finished_keys(out)
    keys = config.keys
    done = {k for k in keys if k in done_all}
    failed = {k: failed_all[k] for k in keys if k in failed_all}
    todo = [j for j, k in zip(config.jobs, keys) if k not in done and (retry_failed or k not in failed)]
    return todo, done, failed


def run_sweep(
    config: Any,
    out,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    retry_failed: bool = False,
    progress: Callable[[dict], None] | None = None,
    chunk: int | None = None,
) -> SweepSummary:
    """Run the jobs of ``config`` that ``out`` does not hold yet and append their rows there.

    Parameters
    ----------
    config : a YAML file path, YAML text, a dict or a :class:`~nclab.sweep.config.SweepConfig`
        (validated before any job starts: ValueError naming the key and the allowed values).
    out : the sweep folder (created; ``sweep.json`` and ``results/part-*.parquet``, see
        :mod:`nclab.sweep.table`).
    backend : "local" (a process pool) or "ray" (:mod:`nclab.sweep.backends`).
    workers : processes of the pool, or CPUs of a local Ray instance (default: the CPUs this
        process may use).  Ignored when joining a cluster with ``address``.
    address : Ray only: the cluster to join (None starts a local instance).
    retry_failed : run the jobs that failed before again.
    progress : called after every finished chunk (and once before the first) with
        ``{"total", "done", "failed", "remaining"}`` (counts over the config's jobs).
    chunk : jobs per task (default: about 4 tasks per worker, at most :data:`MAX_CHUNK`).

    Returns a :class:`SweepSummary`; failed jobs are in it and in the table (``error``), they do
    not raise.  Read the results with :func:`nclab.sweep.read_table`.
    """
    cfg = load_config(config)
    check_choice("backend", backend, BACKENDS)
    workers = default_workers() if workers is None else check_int("workers", workers, minimum=1)
    chunk = None if chunk is None else check_int("chunk", chunk, minimum=1)
    retry_failed = check_bool("retry_failed", retry_failed)
    if address is not None and backend != "ray":
        raise ValueError(f"address is for the ray backend; got backend={backend!r} with address={address!r}")
    pyarrow()
    if backend == "ray":
        ray_module()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out must be a folder, got the file {out}")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / CONFIG_FILE, {**cfg.raw, "jobs": len(cfg.jobs)})

    t0 = time.perf_counter()
    todo, done, failed = plan(cfg, out, retry_failed)
    reused = len(done) + len(failed) - (len(failed) if retry_failed else 0)
    total = len(cfg.jobs)
    errors = dict(failed)
    if retry_failed:
        errors.clear()
    counts = {"total": total, "done": len(done), "failed": len(errors)}

    def report():
        if progress is not None:
            progress({**counts, "remaining": total - counts["done"] - counts["failed"]})

    report()
    size = chunk or max(1, min(MAX_CHUNK, math.ceil(len(todo) / (4 * workers))))
    chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
    ran = 0
    if chunks:
        runner = (ray_backend(chunks, workers, address) if backend == "ray"
                  else local_backend(chunks, min(workers, len(chunks))))
        for _, rows in runner:
            write_part(out, rows)
            for r in rows:
                ran += 1
                if r["error"] is None:
                    counts["done"] += 1
                else:
                    counts["failed"] += 1
                    errors[r["job_key"]] = r["error"]
            report()
        compact(out)
    return SweepSummary(out=str(out), backend=backend, workers=workers, chunk=size, total=total, reused=reused,
                        ran=ran, done=counts["done"], failed=counts["failed"],
                        seconds=time.perf_counter() - t0, errors=errors)
