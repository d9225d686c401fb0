"""Benchmark of the sweep backends: 2,000 small UFM solves, one process against a pool and Ray.

The jobs: ``ufm solve`` of the CE UFM at K = 4, n = 5, d = 4 (the defaults lw = lh = 5e-3), L-BFGS
from seeds 0..1999 -- tens of milliseconds each, so the per-job overhead of a backend shows.

* ``loop``: the jobs one after the other in this process (:func:`nclab.sweep.jobs.run_chunk`, one
  torch thread), no table: the floor a backend has to beat.
* ``local``: :func:`nclab.sweep.run_sweep` with the process pool (``--workers`` processes), from
  the call to its return: the workers' start, the Parquet parts and the final compaction
  included.  The fork server the workers come from (it imports torch and the solvers, once per
  process) is started before by a 2-job sweep, timed and reported apart.
* ``ray``: the same with ``backend="ray"`` on a local Ray instance of ``--workers`` CPUs; Ray's
  start (``ray.init``) is timed apart and reported, not counted in the jobs per second (a cluster
  is started once for many sweeps).

For each: seconds, jobs per second, the speed-up over the loop, and the overhead per job in ms,
``(workers * T - T_loop) / jobs``: the CPU time a backend spends per job beyond the job itself (a
perfect backend on idle cores has 0).  Chunks of jobs per task amortise the per-task cost
(``--chunk``, default the sweep's automatic choice).  The rows of the three are checked to be the
same numbers (all columns but the wall time).  The load average is printed before and after: on
a shared machine the speed-ups measure the share of the cores the benchmark got.

    python benchmarks/sweep.py                       # 2,000 jobs, 2 workers, about 2 minutes
    python benchmarks/sweep.py --jobs 200 --skip-ray
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from nclab.sweep import parse_config, read_table, run_sweep
from nclab.sweep.jobs import run_chunk

HERE = Path("benchmarks")  # results land in ./benchmarks (the checkout keeps them there)


def _load() -> str:
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def config(jobs: int) -> dict:
    return {"kind": "ufm solve", "options": {"loss": "ce", "K": 4, "n": 5, "d": 4, "solver": "lbfgs"}, "seeds": jobs}


def _numbers(rows) -> list[dict]:
    return [{k: v for k, v in sorted(r.items()) if k != "seconds" and v is not None}
            for r in sorted(rows, key=lambda r: r["job_key"])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=None, help="jobs per task (default: the sweep's choice)")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--json", type=Path, default=HERE / "sweep_results.json")
    args = ap.parse_args()

    console = Console(record=True)
    cfg = parse_config(config(args.jobs))
    console.print(f"{args.jobs} ufm solves (CE, K=4, n=5, d=4, L-BFGS), {args.workers} workers, "
                  f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; load {_load()}")
    results: dict = {"jobs": args.jobs, "workers": args.workers, "cpus": os.cpu_count(), "load_before": _load()}

    t = time.perf_counter()
    loop_rows = run_chunk(cfg.jobs)
    t_loop = time.perf_counter() - t
    results["loop"] = {"seconds": t_loop, "load_after": _load()}
    reference = _numbers(loop_rows)

    def backend(name: str, **kw) -> None:
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            summary = run_sweep(cfg, out, workers=args.workers, chunk=args.chunk, **kw)
            seconds = time.perf_counter() - t0
            same = _numbers(read_table(out).to_pylist()) == reference
        results[name] = {"seconds": seconds, "chunk": summary.chunk, "failed": summary.failed,
                         "identical_to_loop": same, "load_after": _load()}

    # the pool's fork server (it imports torch and the solvers once per process) starts on the
    # first sweep: started here by a 2-job sweep, timed apart like Ray's start
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        run_sweep({**config(2), "seeds": [10**6, 10**6 + 1]}, out, workers=args.workers)
        results["local_start_seconds"] = time.perf_counter() - t0
    backend("local", backend="local")
    if not args.skip_ray:
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        results["ray_start_seconds"] = time.perf_counter() - t0
        try:
            backend("ray", backend="ray")
        finally:
            ray.shutdown()
    results["load_after"] = _load()

    table = Table(title=f"{args.jobs} jobs: jobs per second against one process (load before "
                        f"{results['load_before']}, after {results['load_after']})", title_justify="left")
    for col in ("backend", "seconds", "jobs/s", "speed-up", "overhead/job", "same numbers"):
        table.add_column(col, justify="left" if col == "backend" else "right")
    for name in ("loop", "local", "ray"):
        if name not in results:
            continue
        r = results[name]
        r["jobs_per_second"] = args.jobs / r["seconds"]
        r["speedup"] = t_loop / r["seconds"]
        workers = 1 if name == "loop" else args.workers
        r["overhead_ms_per_job"] = 1e3 * (workers * r["seconds"] - t_loop) / args.jobs
        label = name if name == "loop" else f"{name} ({r['chunk']}/task)"
        table.add_row(label, f"{r['seconds']:.1f}", f"{r['jobs_per_second']:.1f}", f"{r['speedup']:.2f}x",
                      "—" if name == "loop" else f"{r['overhead_ms_per_job']:.2f} ms",
                      "—" if name == "loop" else ("yes" if r["identical_to_loop"] else "[red]NO[/]"))
    table.caption = (f"{args.workers} workers; goal: both backends >= 1.7x the loop on 2 idle cores; "
                     "overhead/job = (workers x T - T_loop)/jobs; not counted: the pool's start "
                     f"{results['local_start_seconds']:.1f} s" + (f", Ray's start {results['ray_start_seconds']:.1f} s"
                                                                  if "ray_start_seconds" in results else ""))
    console.print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    from nclab.io import atomic_write, write_json_atomic

    write_json_atomic(args.json, results)
    atomic_write(args.json.with_suffix(".txt"), console.export_text().encode())
    console.print(f"wrote {args.json} and {args.json.with_suffix('.txt')}")
    if not all(results[n]["identical_to_loop"] for n in ("local", "ray") if n in results):
        raise SystemExit("the backends' numbers differ from the loop's")


if __name__ == "__main__":
    main()
