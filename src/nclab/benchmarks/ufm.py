"""Benchmark of the UFM solvers: time to a relative objective gap of 1e-8, against the papers' baselines.

Four cases, one run, one table each (rich), saved as text and JSON next to this file:

  A. CE UFM, K=10, n=100, d=64, lw=lh=5e-4 (beta = sqrt(n lw lh) = 0.005 < 1/K, so the optimum is
     the simplex-ETF solution of REFERENCE.md section 2).  Every solver against gradient descent
     with heavy-ball momentum at the papers' settings (lr 0.1, momentum 0.9).
  B. Normalized UFM, K=10, n=100, d=64, tau=5, from ``--starts`` random starts (seeds 0..4).
     Every solver against Riemannian gradient descent with a fixed step; the baseline step is the
     fastest of the grid ``--steps`` that reaches the target from EVERY start (a step that is
     fastest from one start may never converge from another: lr = 40 is at the edge of stability).
     Times are medians over the starts; the speed-up column is the median over starts of the
     per-start ratio (baseline time / solver time from the same start), with its range.
  C. CE UFM at K=1000, n=5, d=1000, lw=lh=1e-4 (6,001,000 variables; beta = 2.2e-4 < 1/K): the
     solver's time and evaluation counts in each precision of ``--dtype`` (default float64 and
     mixed: float32 L-BFGS, then float64 L-BFGS from its point to the same float64 1e-8 gap), with
     the time of each phase and the speed-up over the first precision, from the same start.
  D. Large temperatures: the normalized UFM of B at tau = 20 and 40 (f* = 2e-9 and 4e-19) and the
     sphere problem (n = 10 points, d = 9, tau = 30): time and iterations of every solver to the
     same 1e-8 relative gap, a row per tau.
  P. Public baseline: the normalized UFM of B (K=10, n=100, d=64, tau=5) and a larger one where
     arithmetic dominates (K=100, n=50, d=128), nclab's solvers against pymanopt's
     ConjugateGradient, TrustRegions and SteepestDescent (numpy backend, hand-derived gradient
     and Hessian, a one-point cache: :mod:`nclab.benchmarks.ufm_baselines`) and our plain
     autograd RGD with Armijo, from the same starts, in interleaved rounds (every contender once
     per round; the median over rounds); the ratio is pymanopt's best over nclab's best, per start,
     then the median over the starts.  numpy's BLAS runs one thread (OPENBLAS_NUM_THREADS=1, set
     by ``benchmarks/ufm.py``), as torch does in this case.  Two bound rows give the best ratio
     attainable at nclab lbfgs's own counts: its GEMMs times the per-GEMM time measured in the
     same process, and those plus its passes over the L-BFGS memory (three per iteration, times
     the measured time of one product with the (2m, D) buffer).

``--cases`` picks the cases (default all: about 18 minutes on 2 cores); ``--device cuda`` and
``--dtype`` move case C to a GPU or pick its precisions and ``--large-size K n d`` sets its size (e.g. 1000 50 1000).

Honesty rules: the same start (``problem.random_start(0)``) for every solver, float64 throughout,
the closed-form optimum f* only used to stop (``f_target = f* (1 + 1e-8)``: the solver stops at the
first iterate with (f - f*)/f* <= 1e-8), no metrics during the timed runs.  The fast solvers are
timed as the best of ``--repeats`` runs; a baseline that does not reach the target within its cap
is reported as a lower bound (">").  Cases A and B use one intra-op thread (tiny matrices: threads
only add synchronisation), case C all of torch's threads (2 on the reference machine).  The load
average before and after each case is printed: the machine may be shared.

    python benchmarks/ufm.py                    # everything (about 15 minutes on 2 cores)
    python benchmarks/ufm.py --cases P          # nclab against pymanopt (about 3 minutes)
    python benchmarks/ufm.py --cases C          # the large CE UFM (about 3 minutes)
    python benchmarks/ufm.py --cases C --device cuda --large-size 1000 50 1000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import statistics

import torch
from rich.console import Console
from rich.table import Table

from nclab.ufm.problems import make_problem
from nclab.ufm.optim import SOLVERS, STOP_TARGET, mixed_precision

HERE = Path("benchmarks")  # results land in ./benchmarks (the checkout keeps them there)
TARGET = 1e-8
FAST = ("lbfgs", "rcg", "rtr", "rgd")


def _load() -> str:
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def run_to_target(problem, name: str, x0, cap: float, target: float = TARGET, mixed: bool = False,
                  **opts) -> dict:
    """One timed run until (f - f*)/f* <= target (or the cap); ``relative_grad`` is the final
    point's |grad f| max(|x|, 1)/|f| (the solvers' relative gradient test holds when <= gtol).
    ``mixed``: float32 first, then the float64 problem to the same target
    (:func:`nclab.ufm.optim.mixed_precision`; the target is confirmed in float64)."""
    fstar = problem.optimum
    problem.reset_counts()
    cpu0 = time.process_time()
    common = dict(f_target=fstar * (1 + target), gtol=0.0, ftol=0.0, max_time=cap, metrics_every=-1,
                  log_every=1000, max_iter=10**9, **opts)
    if mixed:
        x, log = mixed_precision(SOLVERS[name], problem, x0, **common)
    else:
        x, log = SOLVERS[name](problem, x0, **common)
    cpu = time.process_time() - cpu0
    f = log.final["objective"]
    xnorm = math.sqrt(sum(float((t.double() ** 2).sum()) for t in x))
    return {
        "solver": name,
        "options": opts,
        "reached": log.stop_reason == STOP_TARGET,
        "stop_reason": log.stop_reason,
        "seconds": log.seconds,
        "cpu_seconds": cpu,
        "iterations": log.n_iter,
        "relative_gap": (f - fstar) / fstar,
        "relative_grad": log.final["grad_norm"] * max(xnorm, 1.0) / abs(f),
        "cost_evals": log.n_cost if mixed else problem.counts["cost"],
        "grad_evals": log.n_grad if mixed else problem.counts["grad"],
        "hess_evals": log.n_hess if mixed else problem.counts["hess"],
        "precision": "mixed" if mixed else str(problem.dtype).replace("torch.", ""),
        "phases": log.options.get("phases"),
    }


def best_of(problem, name, x0, cap, repeats, **opts) -> dict:
    runs = [run_to_target(problem, name, x0, cap, **opts) for _ in range(repeats)]
    best = min(runs, key=lambda r: r["seconds"])
    best["all_seconds"] = [r["seconds"] for r in runs]
    best["cpu_seconds"] = min(r["cpu_seconds"] for r in runs)
    return best


def multi_start(problem, name, starts, cap, repeats=1, **opts) -> dict:
    """The solver from every start (best of ``repeats`` each): medians over the starts, with the
    per-start runs kept; ``reached`` only if the target was reached from every start."""
    runs = []
    for seed in starts:
        x0 = problem.random_start(seed)
        r = best_of(problem, name, x0, cap, repeats, **opts) if repeats > 1 else run_to_target(problem, name, x0, cap, **opts)
        r["seed"] = seed
        runs.append(r)
    med = {k: statistics.median(r[k] for r in runs)
           for k in ("seconds", "cpu_seconds", "iterations", "cost_evals", "grad_evals", "hess_evals")}
    return {
        "solver": name, "options": opts, "reached": all(r["reached"] for r in runs),
        "reached_from": sum(r["reached"] for r in runs), "starts": list(starts),
        **med, "iterations": int(med["iterations"]), "cost_evals": int(med["cost_evals"]),
        "grad_evals": int(med["grad_evals"]), "hess_evals": int(med["hess_evals"]),
        "relative_gap": max(r["relative_gap"] for r in runs), "per_start": runs,
        "stop_reason": "; ".join(sorted({r["stop_reason"] for r in runs})),
    }


def per_start_ratios(base: dict, r: dict) -> list[float]:
    return [b["seconds"] / s["seconds"] for b, s in zip(base["per_start"], r["per_start"])]


def _label(r: dict) -> str:
    opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
    return r["solver"] + (f" ({opts})" if opts else "")


def _time(r: dict) -> str:
    return f"{r['seconds']:.3f}" if r["reached"] else f"> {r['seconds']:.1f}"


def _ratio(base: dict, r: dict) -> str:
    x = base["seconds"] / r["seconds"]
    if not r["reached"]:
        return "did not reach"
    return f"{x:,.0f}x" if base["reached"] else f">= {x:,.0f}x"


def case_table(title: str, base: dict, rows: list[dict]) -> Table:
    t = Table(title=title)
    for col, j in (("solver", "left"), ("seconds to 1e-8", "right"), ("cpu s", "right"),
                   ("speed-up vs baseline", "right"), ("iterations", "right"), ("cost/grad/hess evals", "right"),
                   ("final rel. gap", "right")):
        t.add_column(col, justify=j)
    for r in [base, *rows]:
        t.add_row(
            _label(r) + ("  [baseline]" if r is base else ""), _time(r), f"{r['cpu_seconds']:.3f}",
            "1x" if r is base else _ratio(base, r),
            f"{r['iterations']:,}", f"{r['cost_evals']:,}/{r['grad_evals']:,}/{r['hess_evals']:,}",
            f"{r['relative_gap']:.2e}",
        )
    return t


def _timed(fn) -> tuple[dict, float]:
    cpu0 = time.process_time()
    r = fn()
    return r, time.process_time() - cpu0


def case_public(sizes, starts, rounds: int, cap: float, solvers=("lbfgs", "rcg", "rtr")) -> list[dict]:
    """Case P: nclab's solvers, pymanopt's and the autograd RGD on the normalized UFM of every
    size (K, n, d), tau = 5, from every start, in ``rounds`` interleaved rounds (module doc)."""
    from nclab.benchmarks.ufm_baselines import PYMANOPT_SOLVERS, autograd_rgd, pymanopt_available, pymanopt_run

    have_pm = pymanopt_available()
    out = []
    for K, n, d in sizes:
        problem = make_problem("normalized", K=K, n=n, d=d, tau=5.0)
        fstar = problem.optimum
        target = fstar * (1 + TARGET)
        load0 = _load()
        contenders = [(f"nclab {s}", lambda x0, s=s: run_to_target(problem, s, x0, cap)) for s in solvers]
        if have_pm:
            contenders += [(f"pymanopt {s}", lambda x0, s=s: pymanopt_run(problem, x0, s, target, cap))
                           for s in PYMANOPT_SOLVERS]
            # pymanopt as its documentation sets a problem up: autodiff (not in "pymanopt's best")
            contenders.append(("(autodiff) pymanopt ConjugateGradient",
                               lambda x0: pymanopt_run(problem, x0, "ConjugateGradient", target, cap, autodiff=True)))
        contenders.append(("autograd RGD + Armijo", lambda x0: autograd_rgd(problem, x0, target, cap)))
        runs: dict = {name: {seed: [] for seed in starts} for name, _ in contenders}
        for _ in range(rounds):
            for seed in starts:
                x0 = problem.random_start(seed)
                for name, fn in contenders:
                    r, cpu = _timed(lambda: fn(x0))
                    runs[name][seed].append({"seconds": r["seconds"], "cpu_seconds": cpu, "reached": r["reached"],
                                             "gemms": _gemms(r), "iterations": r.get("iterations")})
        rows = []
        for name, _ in contenders:
            per_start = {seed: {"seconds": statistics.median(x["seconds"] for x in rs),
                                "cpu_seconds": statistics.median(x["cpu_seconds"] for x in rs),
                                "reached": all(x["reached"] for x in rs), "gemms": rs[0]["gemms"],
                                "iterations": rs[0]["iterations"]}
                         for seed, rs in runs[name].items()}
            rows.append({"solver": name, "per_start": per_start,
                         "seconds": statistics.median(v["seconds"] for v in per_start.values()),
                         "cpu_seconds": statistics.median(v["cpu_seconds"] for v in per_start.values()),
                         "reached": all(v["reached"] for v in per_start.values()),
                         "gemms": _median_or_none([v["gemms"] for v in per_start.values()])})
        out.append({"problem": problem.describe(), "optimum": fstar, "starts": list(starts), "rounds": rounds,
                    "rows": rows, "load": [load0, _load()], "pymanopt": have_pm, **_floor_costs(problem)})
    return out


def _median_seconds(fn, reps: int = 200) -> float:
    """Median wall time of ``fn()`` over ``reps`` calls (after a few warm-up calls)."""
    for _ in range(5):
        fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _floor_costs(problem, memory: int = 5) -> dict:
    """The unit costs of case P's bound rows, measured here (1 thread, the run's process):

    * ``gemm_seconds`` -- one N x K x d product as nclab's evaluation does it: the median time of
      the problem's own three products of an evaluation (the logits ``tau W H^T`` and the gradient's
      ``G^T H`` and ``G W``, with nclab's layouts) divided by three;
    * ``pass_seconds`` -- one pass of L-BFGS over its memory: a product of the full (2m, D) buffer
      (m = ``memory``, lbfgs's default) with a vector, which a direction needs three of on a
      manifold (``Z g``, ``Z y`` of the new pair, ``Z^T c``)."""
    x = problem.random_start(0)
    state = problem._compute(x)
    out = tuple(torch.empty_like(t) for t in x)
    W, H = x[0], x[1]
    t_logits = _median_seconds(lambda: problem._logits(W, H, None))
    t_grad = _median_seconds(lambda: problem._egrad(x, state, out))
    D = sum(t.numel() for t in x)
    Z = torch.randn(2 * memory, D, dtype=problem.dtype, device=problem.device)
    g = torch.randn(D, dtype=problem.dtype, device=problem.device)
    return {"gemm_seconds": (t_logits + t_grad) / 3, "pass_seconds": _median_seconds(lambda: torch.mv(Z, g)),
            "memory": memory}


def _memory_passes(iterations: int, memory: int) -> float:
    """Passes over the full L-BFGS memory in a run of ``iterations`` iterations, counted in full
    (2m-row) passes: three per direction, the direction of iteration k reading the 2 min(k - 1, m)
    rows of the pairs stored so far (none at k = 1; no pair refused)."""
    return 3 * sum(min(k - 1, memory) for k in range(2, iterations + 1)) / memory


def _bound_rows(case: dict, solver: str = "nclab lbfgs") -> list[dict]:
    """Lower bounds on ``solver``'s time from each start at its own counts: its GEMMs alone
    (count x ``gemm_seconds``), and those plus its passes over the L-BFGS memory
    (:func:`_memory_passes` x ``pass_seconds``).  Shaped like the table's rows ("reached" where the
    solver reached the target)."""
    row = next((r for r in case["rows"] if r["solver"] == solver), None)
    if row is None or any(v["gemms"] is None for v in row["per_start"].values()):
        return []
    out = []
    for label, with_passes in ((f"bound: {solver}'s GEMMs only", False),
                               ("bound: ... + its passes over the L-BFGS memory", True)):
        per_start = {}
        for seed, v in row["per_start"].items():
            sec = v["gemms"] * case["gemm_seconds"]
            if with_passes:
                sec += _memory_passes(v["iterations"] or 0, case["memory"]) * case["pass_seconds"]
            per_start[seed] = {"seconds": sec, "cpu_seconds": sec, "reached": v["reached"], "gemms": v["gemms"]}
        out.append({"solver": label, "per_start": per_start, "bound": True, "gemms": row["gemms"],
                    "seconds": statistics.median(p["seconds"] for p in per_start.values()),
                    "cpu_seconds": statistics.median(p["seconds"] for p in per_start.values()),
                    "reached": row["reached"]})
    return out


def _gemms(r: dict) -> int | None:
    """N x K x d matrix products of a run of case P: one per cost, two more per gradient (the
    logits are shared through the cache), six per Hessian-vector product, for nclab and the
    pymanopt runs alike (None where the run does not count them)."""
    if r.get("grad_evals") is None:
        return None
    return r["cost_evals"] + 2 * r["grad_evals"] + 6 * r.get("hess_evals", 0)


def _median_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _best_per_start(rows, prefix: str, seed, key: str = "seconds") -> tuple[float, bool]:
    """(best time of the contenders named ``prefix...`` from ``seed``, exact): the fastest that
    reached the target, or where none did the longest run (a lower bound: exact False)."""
    mine = [r["per_start"][seed] for r in rows if r["solver"].startswith(prefix)]
    reached = [c[key] for c in mine if c["reached"]]
    if reached:
        return min(reached), True
    return max(c[key] for c in mine), False


def public_table(case: dict) -> tuple[Table, float | None, float | None]:
    """The table of one size of case P, and the median over starts of pymanopt's best over
    nclab's best (wall and CPU seconds; None without pymanopt)."""
    p, rows, starts = case["problem"], case["rows"], case["starts"]
    t = Table(title=f"P. normalized UFM K={p['K']} n={p['n']} d={p['d']} tau=5: median s to 1e-8 over "
                    f"{case['rounds']} interleaved rounds, starts {starts}; 1 thread; load "
                    f"{case['load'][0]} -> {case['load'][1]}")
    for col in ("solver", "median s", "median cpu s", "reached", "GEMMs", "vs pymanopt's best"):
        t.add_column(col, justify="left" if col == "solver" else "right")
    ratio = cpu_ratio = None
    exact = True
    bounds = _bound_rows(case) if "gemm_seconds" in case else []
    if case["pymanopt"]:
        pm = {s: _best_per_start(rows, "pymanopt", s) for s in starts}
        pm_cpu = {s: _best_per_start(rows, "pymanopt", s, "cpu_seconds") for s in starts}
        nc = {s: _best_per_start(rows, "nclab", s) for s in starts}
        nc_cpu = {s: _best_per_start(rows, "nclab", s, "cpu_seconds") for s in starts}
        exact = all(pm[s][1] for s in starts)
        ratio = statistics.median(pm[s][0] / nc[s][0] for s in starts)
        cpu_ratio = statistics.median(pm_cpu[s][0] / nc_cpu[s][0] for s in starts)
    case["ratio_is_lower_bound"] = not exact
    case["bounds"] = bounds
    for r in [*rows, *bounds]:
        if case["pymanopt"]:
            vs = statistics.median(pm[s][0] / r["per_start"][s]["seconds"] for s in starts) if r["reached"] else None
            vs_s = f"{'' if exact else '>= '}{vs:.1f}x" if vs is not None else "did not reach"
            if r.get("bound"):
                r["vs_pymanopt"] = vs
        else:
            vs_s = "n/a"
        t.add_row(r["solver"], _time(r) if r["reached"] else f"> {r['seconds']:.2f}", f"{r['cpu_seconds']:.3f}",
                  "yes" if r["reached"] else "no", "—" if r["gemms"] is None else f"{r['gemms']:,.0f}", vs_s)
    if bounds:
        t.caption = (f"bound rows: nclab lbfgs's counts x unit costs measured here: "
                     f"{case['gemm_seconds'] * 1e6:,.0f} us per GEMM, {case['pass_seconds'] * 1e6:,.0f} us per pass "
                     f"over the (2m, D) = ({2 * case['memory']}, {sum(_sizes(p))}) memory")
    return t, ratio, cpu_ratio


def _sizes(p: dict) -> tuple[int, int]:
    """Sizes of the normalized UFM's two factors, W (K x d) and H (K n x d)."""
    return p["K"] * p["d"], p["K"] * p["n"] * p["d"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7, help="runs per fast solver (best time is kept)")
    ap.add_argument("--baseline-cap", type=float, default=120.0, help="seconds before a baseline is cut off")
    ap.add_argument("--solver-cap", type=float, default=60.0, help="seconds before a fast solver is cut off")
    ap.add_argument("--large-cap", type=float, default=600.0, help="seconds for the large case")
    ap.add_argument("--large-solver", default="lbfgs", choices=list(SOLVERS))
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--sweep-cap", type=float, default=30.0,
                    help="seconds before a run of case B's step sweep is cut off (lr=10 needs ~4 s)")
    ap.add_argument("--starts", type=int, default=5, help="random starts of case B (seeds 0..starts-1)")
    ap.add_argument("--steps", type=float, nargs="+", default=[10.0, 20.0, 30.0, 40.0],
                    help="fixed RGD steps of case B's baseline sweep")
    ap.add_argument("--out", type=Path, default=HERE / "ufm_results.txt")
    ap.add_argument("--cases", default="ABDPC", help="which cases to run (letters of A, B, C, D, P)")
    ap.add_argument("--large-size", type=int, nargs=3, default=[1000, 5, 1000], metavar=("K", "n", "d"),
                    help="K n d of case C")
    ap.add_argument("--large-start", type=int, default=0, help="case C's start: random_start(seed)")
    ap.add_argument("--device", default="cpu", help="case C's device: cpu | cuda | cuda:N")
    ap.add_argument("--dtype", nargs="+", default=["float64", "mixed"], choices=["float64", "float32", "mixed"],
                    help="case C's precisions, one run each (mixed: float32, then float64 to the target)")
    ap.add_argument("--public-starts", type=int, default=3, help="starts of case P (seeds 0..k-1)")
    ap.add_argument("--public-rounds", type=int, default=3, help="interleaved rounds of case P")
    ap.add_argument("--public-cap", type=float, default=20.0, help="seconds before a run of case P is cut off")
    ap.add_argument("--public-cap-large", type=float, default=20.0,
                    help="the same for case P's K=100 n=50 d=128 (one start, two rounds)")
    args = ap.parse_args()
    args.cases = args.cases.upper()
    if set(args.cases) - set("ABCDP"):
        ap.error(f"--cases takes letters of ABCDP, got {args.cases!r}")

    console = Console(record=True, width=110)
    threads = torch.get_num_threads()
    env = {
        "torch": torch.__version__, "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "torch_threads_default": threads, "dtype": "float64",
    }
    console.print(f"nclab UFM solver benchmark | torch {env['torch']} | {env['cores']} cores | float64 | "
                  f"target (f - f*)/f* <= {TARGET:g} | start: random_start(0) for every solver")
    results: dict = {"environment": env, "target_relative_gap": TARGET}

    # ---------------- A: CE UFM against heavy-ball GD ----------------
    if "A" in args.cases:
        torch.set_num_threads(1)
        pa = make_problem("ce", K=10, n=100, d=64, lw=5e-4, lh=5e-4)
        assert pa.beta < 1 / pa.K, "beta must be < 1/K for the ETF optimum"
        x0 = pa.random_start(0)
        load0 = _load()
        rows = [best_of(pa, name, x0, args.solver_cap, args.repeats) for name in FAST]
        base = run_to_target(pa, "gd", x0, args.baseline_cap, lr=0.1, momentum=0.9)
        title = (f"A. CE UFM K=10 n=100 d=64 lw=lh=5e-4 (beta={pa.beta:.4f} < 1/K), f*={pa.optimum:.12f}; "
                 f"1 thread; load {load0} -> {_load()}")
        console.print(case_table(title, base, rows))
        results["ce"] = {"problem": pa.describe(), "beta": pa.beta, "optimum": pa.optimum, "baseline": base, "solvers": rows,
                         "load": [load0, _load()]}

    # ---------------- B: normalized UFM against fixed-step RGD, several starts ----------------
    if "B" in args.cases:
        pb = make_problem("normalized", K=10, n=100, d=64, tau=5.0)
        starts = list(range(args.starts))
        load0 = _load()
        rows = [multi_start(pb, name, starts, args.solver_cap, args.repeats) for name in FAST]
        sweep = [multi_start(pb, "rgd", starts, args.sweep_cap, step="fixed", lr=lr) for lr in args.steps]
        reached = [r for r in sweep if r["reached"]]
        base = min(reached, key=lambda r: r["seconds"]) if reached else max(sweep, key=lambda r: r["seconds"])
        title = (f"B. normalized UFM K=10 n=100 d=64 tau=5, f*={pb.optimum:.12f}; starts {starts}, medians; "
                 f"baseline = the fastest fixed step of {args.steps} that converges from every start; 1 thread; "
                 f"load {load0} -> {_load()}")
        tb = Table(title=title)
        for col in ("solver", "median s to 1e-8", "reached", "speed-up vs baseline (median, range)", "median iterations",
                    "worst rel. gap"):
            tb.add_column(col, justify="left" if col == "solver" else "right")
        for r in [base, *rows]:
            ratios = per_start_ratios(base, r)
            tb.add_row(_label(r) + ("  [baseline]" if r is base else ""), _time(r), f"{r['reached_from']}/{len(starts)}",
                       "1x" if r is base else f"{statistics.median(ratios):,.0f}x ({min(ratios):,.0f}-{max(ratios):,.0f})",
                       f"{r['iterations']:,}", f"{r['relative_gap']:.2e}")
        console.print(tb)
        st = Table(title="B'. fixed-step RGD step sweep: seconds to 1e-8 from each start ('>' = not reached within the cap)")
        st.add_column("lr", justify="right")
        for seed in starts:
            st.add_column(f"start {seed}", justify="right")
        st.add_column("converges from all", justify="right")
        for r in sweep:
            st.add_row(f"{r['options']['lr']:g}", *[_time(x) for x in r["per_start"]], "yes" if r["reached"] else "no")
        console.print(st)
        results["normalized"] = {"problem": pb.describe(), "optimum": pb.optimum, "starts": starts, "baseline": base,
                                 "solvers": rows, "fixed_step_sweep": sweep, "load": [load0, _load()]}

    # ---------------- D: large temperatures ----------------
    if "D" in args.cases:
        td = Table(title=f"D. large tau: seconds (iterations) to (f - f*)/f* <= {TARGET:g} from random_start(0), "
                         f"best of {args.repeats}; 1 thread")
        td.add_column("problem, tau, f*")
        for name in FAST:
            td.add_column(name, justify="right")
        results["large_tau"] = []
        for loss, opts in (("normalized", dict(K=10, n=100, d=64, tau=20.0)), ("normalized", dict(K=10, n=100, d=64, tau=40.0)),
                           ("sphere", dict(n_points=10, d=9, tau=30.0))):
            pd = make_problem(loss, **opts)
            x0 = pd.random_start(0)
            rs = [best_of(pd, name, x0, args.solver_cap, args.repeats) for name in FAST]
            td.add_row(f"{loss} tau={opts['tau']:g} f*={pd.optimum:.2e}",
                       *[(f"{r['seconds']:.3f} ({r['iterations']})" if r["reached"] else f"> {r['seconds']:.1f} (not reached)")
                         for r in rs])
            results["large_tau"].append({"problem": pd.describe(), "optimum": pd.optimum, "solvers": rs})
        console.print(td)

    # ---------------- P: nclab against pymanopt and autograd RGD ----------------
    if "P" in args.cases:
        torch.set_num_threads(1)
        results["public"] = (case_public([(10, 100, 64)], list(range(args.public_starts)), args.public_rounds,
                                         args.public_cap)
                             + case_public([(100, 50, 128)], [0], 2, args.public_cap_large))
        for case in results["public"]:
            table, ratio, cpu_ratio = public_table(case)
            case["ratio_vs_pymanopt"], case["cpu_ratio_vs_pymanopt"] = ratio, cpu_ratio
            console.print(table)
            if ratio is None:
                console.print("pymanopt is not installed: pip install pymanopt (the comparison did not run)")

    # ---------------- C: the large CE UFM ----------------
    if "C" in args.cases and not args.skip_large:
        torch.set_num_threads(threads)
        K, n, d = args.large_size
        runs = []
        for prec in args.dtype:
            pc = make_problem("ce", K=K, n=n, d=d, lw=1e-4, lh=1e-4, device=args.device,
                              dtype="float64" if prec == "mixed" else prec,
                              memory_limit=math.inf if args.device != "cpu" else None)
            assert pc.beta < 1 / pc.K
            x0 = pc.random_start(args.large_start)
            target = TARGET if pc.dtype == torch.float64 else 1e-5  # float32 cannot resolve a 1e-8 gap
            load0 = _load()
            console.print(f"C: {args.large_solver} in {prec} from random_start({args.large_start}) (load {load0}) ...")
            r = run_to_target(pc, args.large_solver, x0, args.large_cap, target=target, mixed=prec == "mixed")
            r.update(target=target, load=[load0, _load()])
            runs.append(r)
        nvar = sum(t.numel() for t in x0)
        where = f"{threads} threads" if pc.device.type == "cpu" else str(pc.device)
        t = Table(title=f"C. CE UFM K={K} n={n} d={d} lw=lh=1e-4 ({nvar:,} variables, beta={pc.beta:.2e} < 1/K), "
                        f"f*={pc.optimum:.12f}; {args.large_solver} from random_start({args.large_start}) to the gap "
                        f"{runs[0]['target']:g}, {where}; load {runs[0]['load'][0]} -> {runs[-1]['load'][1]}")
        for col in ("dtype", "seconds", "iters", "evals c/g/h", "s/eval", "rel. gap", "speed-up"):
            t.add_column(col, justify="right")
        for r in runs:
            t.add_row(r["precision"], _time(r), f"{r['iterations']:,}",
                      f"{r['cost_evals']:,}/{r['grad_evals']:,}/{r['hess_evals']:,}",
                      f"{r['seconds'] / max(r['cost_evals'] + 2 * r['hess_evals'], 1):.3f}",
                      f"{r['relative_gap']:.2e}", f"{runs[0]['seconds'] / r['seconds']:.2f}x")
        console.print(t)
        for r in runs:
            for ph in r["phases"] or ():
                console.print(f"  {r['precision']}: {ph['dtype']} phase {ph['iterations']} iterations, "
                              f"{ph['seconds']:.1f} s, {ph['cost_evals']} evaluations, stopped on '{ph['stop_reason']}'")
        results["large"] = {"problem": pc.describe(), "variables": nvar, "beta": pc.beta, "optimum": pc.optimum,
                            "threads": threads, "device": str(pc.device), "runs": runs}

    # ---------------- goals ----------------
    g = Table(title="Goals")
    for col in ("goal", "result", "met"):
        g.add_column(col, justify="left" if col == "goal" else "right")

    def best_ratio(case):
        base = case["baseline"]
        best = min((r for r in case["solvers"] if r["reached"]), key=lambda r: r["seconds"])
        return best, base["seconds"] / best["seconds"], base["reached"]

    if "ce" in results:
        best, x, exact = best_ratio(results["ce"])
        g.add_row("A. best solver >= 30x faster than GD lr=0.1 momentum=0.9 (CE)",
                  f"{best['solver']}: {'' if exact else '>= '}{x:,.0f}x", "yes" if x >= 30 else "no")
    if "normalized" in results:
        best, x, exact = best_ratio(results["normalized"])
        base = results["normalized"]["baseline"]
        ratios = per_start_ratios(base, best)
        g.add_row(f"B. best solver >= 30x faster than fixed-step RGD at the fastest step converging from all "
                  f"{len(results['normalized']['starts'])} starts (lr={base['options']['lr']:g}); median over starts",
                  f"{best['solver']}: {statistics.median(ratios):,.0f}x", "yes" if statistics.median(ratios) >= 30 else "no")
        for r in results["normalized"]["fixed_step_sweep"]:
            if r is not base and r["reached"]:
                y = statistics.median(per_start_ratios(r, best))
                g.add_row(f"   ... against fixed-step RGD lr={r['options']['lr']:g}", f"{best['solver']}: {y:,.0f}x",
                          "yes" if y >= 30 else "no")
    for case in results.get("public", []):
        if case["ratio_vs_pymanopt"] is not None:
            p = case["problem"]
            g.add_row(f"P. nclab's best >= 10x faster than pymanopt's best, normalized K={p['K']} n={p['n']} "
                      f"d={p['d']} (median over starts; cpu-time ratio in brackets)",
                      f"{'>= ' if case['ratio_is_lower_bound'] else ''}{case['ratio_vs_pymanopt']:.1f}x "
                      f"({case['cpu_ratio_vs_pymanopt']:.1f}x)",
                      "yes" if case["ratio_vs_pymanopt"] >= 10 else "no")
            for b in case.get("bounds", []):
                if b.get("vs_pymanopt") is not None:
                    g.add_row(f"   attainable at nclab lbfgs's counts, {b['solver'].removeprefix('bound: ')}",
                              f"{b['vs_pymanopt']:.1f}x", "")
    for case in results.get("large_tau", []):
        ok = all(r["reached"] for r in case["solvers"])
        g.add_row(f"D. every fast solver reaches 1e-8 at {case['problem']['loss']} tau={case['problem']['tau']:g}",
                  "all reached" if ok else "not all", "yes" if ok else "no")
    if "large" in results:
        pr = results["large"]["problem"]
        for r in results["large"]["runs"]:
            g.add_row(f"C. K={pr['K']} n={pr['n']} d={pr['d']} to {r['target']:g} in under 60 s "
                      f"({results['large']['device']}, {r['precision']})",
                      f"{r['solver']}: {r['seconds']:.0f} s" + ("" if r["reached"] else " (not reached)"),
                      "yes" if r["reached"] and r["seconds"] < 60 else "no")
    console.print(g)

    args.out.write_text(console.export_text())
    json_path = args.out.with_suffix(".json")
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=lambda o: None if isinstance(o, float) and not math.isfinite(o) else str(o)))
    os.replace(tmp, json_path)
    console.print(f"wrote {args.out} and {json_path}")


if __name__ == "__main__":
    main()
