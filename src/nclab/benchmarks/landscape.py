"""Benchmark of the landscape classifier: a strict saddle of the CE UFM with about 10^6 variables.

The problem: CE UFM, K = 100 classes, n = 100 samples per class, d = 100, lw = lh = 1e-4 (beta =
sqrt(n lw lh) = 1e-3 < 1/K): W is 100 x 100, H 10,000 x 100, b 100 -- 1,010,100 variables.  The
point: ``lowdim:50``, the minimiser of the same problem at d' = 50 embedded in R^100
(:func:`nclab.ufm.landscape.lowdim_point`).  d' = 50 < K - 1, so by Zhu et al. 2021 it is a strict
saddle.  Solving the d' = 50 problem is set-up and is timed separately.

Measured (:func:`nclab.ufm.landscape.classify`, default options: the symmetry orbit of
d(d-1)/2 = 4,950 directions deflated without forming it):

* the number of Hessian-vector products and the wall-clock seconds of the classification;
* the ratio of those seconds to one gradient evaluation (``cost_and_egrad`` at a new point, the
  median of ``--repeats``) and to one HVP;
* the peak resident memory during the classification (Linux: ``VmHWM`` of /proc/self/status after
  resetting it through /proc/self/clear_refs; elsewhere only the process's ``ru_maxrss``, which
  includes the set-up) and the process peak.

Goals: under 20 s and under 2 GiB on 2 cores.  The table says what was measured and whether each
goal is met; nothing is estimated.

    python benchmarks/landscape.py                   # the full case (a few minutes with set-up)
    python benchmarks/landscape.py --K 20 --n 20 --d 20 --d-low 10    # a small smoke run
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

HERE = Path("benchmarks")
GOAL_SECONDS = 20.0
GOAL_BYTES = 2 * 1024**3


def _load() -> str:
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _maxrss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024  # bytes on macOS, KiB on Linux


def _gib(b) -> str:
    return "—" if b is None else f"{b / 1024**3:.2f} GiB"


def gradient_seconds(problem, x, repeats: int) -> float:
    """Median seconds of one cost-and-gradient evaluation at a new point (a clone of x, so the
    problem's per-point cache does not answer)."""
    times = []
    for _ in range(repeats):
        y = tuple(t.clone() for t in x)
        t0 = time.perf_counter()
        problem.cost_and_egrad(y)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def hvp_seconds(problem, x, repeats: int) -> float:
    """Median seconds of one Riemannian Hessian-vector product at x (the point's state cached)."""
    M = problem.manifold
    g = torch.Generator().manual_seed(0)
    u = M.proj(x, tuple(torch.randn(t.shape, generator=g, dtype=t.dtype) for t in x))
    problem.rhess(x, u)  # fill the cache
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        problem.rhess(x, u)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--K", type=int, default=100)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--d", type=int, default=100)
    ap.add_argument("--d-low", type=int, default=50)
    ap.add_argument("--lw", type=float, default=1e-4)
    ap.add_argument("--lh", type=float, default=1e-4)
    ap.add_argument("--repeats", type=int, default=5, help="gradient / HVP timings (median)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, 2 on the reference machine)")
    ap.add_argument("--out", type=Path, default=HERE / "landscape_results.txt")
    args = ap.parse_args()

    from nclab.ufm.diagnostics import OrbitProjector
    from nclab.ufm.landscape import classify, lowdim_point
    from nclab.ufm.problems import make_problem

    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console(record=True, width=100)
    env = {"torch": torch.__version__, "python": platform.python_version(), "cores": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "dtype": "float64"}
    problem = make_problem("ce", K=args.K, n=args.n, d=args.d, lw=args.lw, lh=args.lh)
    n_vars = problem.manifold.ambient_dim
    console.print(f"nclab landscape benchmark | torch {env['torch']} | {env['cores']} cores, "
                  f"{env['torch_threads']} torch threads | float64 | CE UFM K={args.K} n={args.n} d={args.d} "
                  f"lw={args.lw:g} lh={args.lh:g} (beta={problem.beta:.2e}, 1/K={1 / args.K:.2e}) | "
                  f"{n_vars:,} variables | point lowdim:{args.d_low}")

    load0 = _load()
    t0 = time.perf_counter()
    x = lowdim_point(problem, args.d_low, seed=0)
    setup_seconds = time.perf_counter() - t0
    rss_setup = _status_kib("VmRSS")

    grad_s = gradient_seconds(problem, x, args.repeats)
    hvp_s = hvp_seconds(problem, x, args.repeats)
    orbit_dim = OrbitProjector(problem, x).rank
    full_orbit = args.d * (args.d - 1) // 2

    problem.reset_counts()
    reset = _reset_peak()
    t0 = time.perf_counter()
    c = classify(problem, x)
    seconds = time.perf_counter() - t0
    peak_classify = _status_kib("VmHWM") * 1024 if reset and _status_kib("VmHWM") is not None else None
    peak_process = _maxrss_bytes()
    load1 = _load()
    cd = c.as_dict()

    t = Table(title=f"classification of lowdim:{args.d_low} (load {load0} -> {load1})", title_justify="left")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    rows = [
        ("set-up: solve the d'=%d problem, embed" % args.d_low, f"{setup_seconds:.1f} s"),
        ("kind", cd["kind"]),
        ("reason", str(cd.get("reason"))),
        ("lambda_min (orbit deflated)", f"{cd['lambda_min']:.4e}" if cd.get("lambda_min") is not None else "—"),
        ("eigenvalue threshold", f"{cd['eig_threshold']:.2e}" if cd.get("eig_threshold") is not None else "—"),
        ("|grad f| / threshold", f"{cd['grad_norm']:.2e} / {cd['grad_threshold']:.2e}"
         if cd.get("grad_threshold") is not None else f"{cd['grad_norm']:.2e}"),
        ("null direction: measured (predicted) curvature",
         "{measured_curvature:.4e} ({predicted_curvature:.4e})".format(**cd["direction_curvature"])
         if cd.get("direction_curvature") else "—"),
        ("orbit deflated (dimension at the point / d(d-1)/2)", f"{'yes' if cd.get('deflated') else 'no'} "
                                                                f"({orbit_dim:,} / {full_orbit:,})"),
        ("Hessian-vector products", f"{cd['hvps']:,}"),
        ("problem counters (cost/grad/hess)", "/".join(str(problem.counts[k]) for k in ("cost", "grad", "hess"))),
        ("seconds", f"{seconds:.2f} s"),
        ("one gradient evaluation", f"{grad_s * 1e3:.1f} ms"),
        ("one HVP", f"{hvp_s * 1e3:.1f} ms"),
        ("classification / gradient", f"{seconds / grad_s:,.0f}x"),
        ("classification / HVP", f"{seconds / hvp_s:,.0f}x"),
        ("RSS after set-up", _gib(None if rss_setup is None else rss_setup * 1024)),
        ("peak RSS during classification", _gib(peak_classify) if reset else "not measurable here"),
        ("  of which above the RSS after set-up", _gib(peak_classify - rss_setup * 1024)
         if reset and peak_classify is not None and rss_setup is not None else "—"),
        ("peak RSS of the process (set-up included)", _gib(peak_process)),
    ]
    for r in rows:
        t.add_row(*r)
    console.print(t)

    mem = peak_classify if peak_classify is not None else peak_process
    g = Table(title="goals", title_justify="left")
    for col in ("goal", "measured", "met"):
        g.add_column(col, justify="left" if col == "goal" else "right")
    g.add_row("a strict saddle, found", cd["kind"], "yes" if cd["kind"] == "strict_saddle" else "no")
    g.add_row("classification under 20 s", f"{seconds:.2f} s", "yes" if seconds < GOAL_SECONDS else "no")
    g.add_row("peak memory under 2 GiB" + ("" if peak_classify is not None else " (process peak)"), _gib(mem),
              "yes" if mem < GOAL_BYTES else "no")
    formed = orbit_dim * n_vars * 8  # bytes the orbit's directions would take as float64 vectors
    g.add_row("orbit deflated without forming it", f"{orbit_dim:,} directions ({_gib(formed)} if formed)",
              "yes" if cd.get("deflated") and mem < formed else "no")
    console.print(g)

    results = {"environment": env, "problem": problem.describe(), "variables": n_vars, "point": f"lowdim:{args.d_low}",
               "setup_seconds": setup_seconds, "classification": cd, "seconds": seconds,
               "gradient_seconds": grad_s, "hvp_seconds": hvp_s, "ratio_to_gradient": seconds / grad_s,
               "orbit_dimension": orbit_dim, "peak_rss_classification_bytes": peak_classify,
               "peak_rss_process_bytes": peak_process, "load": [load0, load1],
               "goals": {"seconds": GOAL_SECONDS, "bytes": GOAL_BYTES}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from nclab.io import atomic_write, write_json_atomic

    atomic_write(args.out, console.export_text().encode())
    write_json_atomic(args.out.with_suffix(".json"), results)
    console.print(f"wrote {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
