"""Where a sweep's jobs run: a local process pool, or Ray (this machine or a cluster).

A backend takes chunks of jobs (lists of job dicts) and yields ``(chunk, rows)`` as each chunk
finishes, in completion order; every chunk runs :func:`nclab.sweep.jobs.run_chunk` (one torch
thread per job), so the rows are the same, bit for bit, whichever backend ran them.  No home-made
scheduler: both are thin adapters over an existing engine.

* ``local`` -- :class:`concurrent.futures.ProcessPoolExecutor` with ``workers`` processes started
  by ``forkserver`` (``spawn`` where there is none), never ``fork`` (a forked torch can deadlock);
  the fork server imports nclab's solvers once, so each worker starts warm.  As with any process
  pool, a script must call the sweep under ``if __name__ == "__main__":`` (the workers import the
  main module).  ``workers=1`` runs the chunks in this process.
* ``ray`` -- one Ray task per chunk (``num_cpus=1``, no automatic retries: a failure is recorded
  and ``--retry-failed`` decides).  With no ``address``, ``ray.init(num_cpus=workers)`` starts a
  local instance on this machine (shut down afterwards); with ``address`` (``"auto"``,
  ``"ray://host:10001"``, ``"host:6379"``) ``ray.init(address=...)`` joins a running cluster,
  whose nodes need nclab installed.  A Ray already initialised by the caller is used as it is.

A chunk whose worker dies (a process killed by the kernel, a lost Ray node) comes back as failed
rows naming the cause; the sweep goes on.
"""

from __future__ import annotations

import os
from typing import Iterable, Iterator

from nclab.sweep.jobs import job_key, run_chunk

__all__ = ["BACKENDS", "default_workers", "local_backend", "ray_backend", "failed_rows"]

BACKENDS = ("local", "ray")


def default_workers() -> int:
    """The CPUs this process may use (``os.sched_getaffinity`` where there is one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def failed_rows(chunk: list[dict], error: str) -> list[dict]:
    """Rows recording that the jobs of ``chunk`` could not run (their worker died)."""
    return [{"job_key": job_key(j), "job": j["kind"], "seed": int(j["seed"]), **j["options"],
             "status": "failed", "seconds": 0.0, "error": error} for j in chunk]


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def local_backend(chunks: Iterable[list[dict]], workers: int) -> Iterator[tuple[list[dict], list[dict]]]:
    """Run the chunks on a process pool of ``workers`` processes; yield (chunk, rows) as they finish.
    One worker runs the chunks in this process (no pool to start; the same rows)."""
    if workers == 1:
        for chunk in chunks:
            yield chunk, run_chunk(chunk)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["nclab.sweep.jobs", "nclab.ufm.run", "nclab.ufm.landscape"])
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker)
    try:
        futures = {pool.submit(run_chunk, chunk): chunk for chunk in chunks}
        for future in as_completed(futures):
            chunk = futures[future]
            try:
                rows = future.result()
            except BrokenProcessPool as err:
                rows = failed_rows(chunk, f"BrokenProcessPool: a worker process died ({err}); from a script, "
                                          "call run_sweep under `if __name__ == '__main__':` (the workers "
                                          "import the main module)")
            yield chunk, rows
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def ray_module():
    """The ray module, or ModuleNotFoundError with the install hint."""
    try:
        import ray
    except ModuleNotFoundError:  # pragma: no cover - ray is part of nclab[sweep]
        raise ModuleNotFoundError("nclab sweep --backend ray needs ray: pip install 'nclab[sweep]'") from None
    return ray


def ray_backend(chunks: Iterable[list[dict]], workers: int, address: str | None = None
                ) -> Iterator[tuple[list[dict], list[dict]]]:
    """Run the chunks as Ray tasks; yield (chunk, rows) as they finish (module docstring)."""
    ray = ray_module()
    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(run_chunk)
        pending = {task.remote(chunk): chunk for chunk in chunks}
        refs = list(pending)
        while refs:
            ready, refs = ray.wait(refs, num_returns=1)
            for ref in ready:
                chunk = pending.pop(ref)
                try:
                    rows = ray.get(ref)
                except Exception as err:  # a worker or node lost: record, go on
                    rows = failed_rows(chunk, f"{type(err).__name__}: {' '.join(str(err).split())[:300]}")
                yield chunk, rows
    finally:
        if started:
            ray.shutdown()
