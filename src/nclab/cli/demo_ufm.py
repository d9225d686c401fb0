"""The UFM demo: the four problems at their defaults, solved and compared with their closed forms.

For each loss of :data:`nclab.ufm.problems.LOSSES` (``make_problem`` defaults: K=4, n=5, d=K,
lw=lh=5e-3 for ce/mse; tau=5 for normalized; 4 points in R^3, tau=5 for the sphere) the problem is
solved from ``random_start(seed)`` by L-BFGS to a relative gradient norm of 1e-10, and the result is compared
with the closed-form optimum and minimiser structure of REFERENCE.md section 2.  Every solver is
also run on the same start, for the combined figure's convergence comparison; and the sphere
problem with more points than dimensions (d = 3, n up to 100) shows the frame potential approaching
its bound n^2/d (Lu & Steinerberger 2022; Benedetto & Fickus 2003).

Outputs in ``out_dir``: ``ufm_demo.json`` (the four results and the comparisons),
``ufm_<loss>.png`` (one figure per problem: gap and nc1 / frame-potential excess against
iterations) and ``ufm_demo.png`` (combined: every solver's gap on every problem, and the sphere
sweep).  Runs in about 15 s on 2 cores.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from nclab.ufm.problems import LOSSES, make_problem
from nclab.cli.plots import plot_result
from nclab.ufm.run import gap_history, run_solver, write_json
from nclab.ufm.optim import SOLVERS

__all__ = ["run_ufm_demo", "ufm_demo_figure", "problem_title", "DEMO_GTOL", "SPHERE_SWEEP"]

#: Relative gradient tolerance of the demo solves (``gtol`` of :mod:`nclab.ufm.optim`).
DEMO_GTOL = 1e-10
#: Numbers of points of the sphere sweep (d = 3, tau = 5).
SPHERE_SWEEP = (5, 10, 20, 50, 100)
#: Temperature of the sphere sweep's problems.
SPHERE_SWEEP_TAU = 5.0
#: Caps for the slow first-order baselines in the solver comparison.
_CAPS = {"gd": dict(max_iter=20000, max_time=5.0), "rgd": dict(max_iter=20000, max_time=5.0)}


def _key_metric(result: dict) -> tuple[str, float | None]:
    if result["loss"] == "sphere":
        return "FP/bound - 1", result["metrics"].get("frame_potential_excess")
    return "nc1", result["metrics"].get("nc1")


def problem_title(problem: dict) -> str:
    """``"ce: K=4, n=5, d=4"`` from a result's ``problem`` (:meth:`describe`); tau for the
    normalized and sphere problems; the sphere has n points on the sphere of R^d and no classes."""
    loss = problem["loss"]
    n = problem.get("n_points", problem.get("n"))
    parts = [] if problem.get("K") is None else [f"K={problem['K']}"]
    parts += [f"n={n}" + (" points" if loss == "sphere" else "/class"), f"d={problem['d']}"]
    if problem.get("tau") is not None:
        parts.append(f"τ={problem['tau']:g}")
    return f"{loss}: " + ", ".join(parts)


def ufm_demo_figure(comparison: dict[str, list[dict]], sweep: list[dict]):
    """The combined figure (a :class:`matplotlib.figure.Figure`, 2 x 3 panels): every solver's
    objective gap against iterations on each problem (its K, n, d and tau in the title), the
    sphere sweep's frame-potential excess against n, and the solvers' legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    losses = list(comparison)
    ncols = 3
    nrows = math.ceil((len(losses) + 2) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.6 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    handles = {}
    for ax, loss in zip(axes, losses):
        label = "f - f*"
        for j, r in enumerate(comparison[loss]):
            its, gaps, label = gap_history(r)
            (line,) = ax.loglog([max(i, 1) for i in its], [max(g, 1e-17) for g in gaps], lw=1.3,
                                color=f"C{j}", label=r["solver"])
            handles.setdefault(r["solver"], line)
        ax.set_title(problem_title(comparison[loss][0]["problem"]) if comparison[loss] else loss, fontsize=10)
        ax.set_xlabel("iteration")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    ax = axes[len(losses)]
    ns = [s["n_points"] for s in sweep]
    ax.semilogy(ns, [max(s["frame_potential_excess"], 1e-17) for s in sweep], "o-")
    ax.set_xlabel("number of points n")
    ax.set_ylabel(r"FP$/\max(n, n^2/d) - 1$")
    d = ",".join(str(v) for v in sorted({s["d"] for s in sweep}))
    tau = ",".join(f"{v:g}" for v in sorted({s.get("tau", SPHERE_SWEEP_TAU) for s in sweep}))
    ax.set_title(f"sphere: n={min(ns)}..{max(ns)} points, d={d}, τ={tau}: FP → n²/d", fontsize=10)
    ax.grid(True, alpha=0.3)
    legend_ax = axes[len(losses) + 1]
    legend_ax.axis("off")
    legend_ax.legend(list(handles.values()), list(handles), title="solver (same start)", loc="center")
    for ax in axes[len(losses) + 2:]:
        ax.set_visible(False)
    return fig


def run_ufm_demo(out_dir, *, console=None, seed: int = 0, solvers: tuple[str, ...] | None = None) -> list[dict]:
    """Solve the four UFM problems at their defaults, compare with the closed forms, print a rich
    table and write ``ufm_demo.json``, ``ufm_<loss>.png`` and ``ufm_demo.png`` to ``out_dir``.

    ``solvers`` restricts the solver comparison (default: all of :data:`SOLVERS`).  Returns the
    four L-BFGS results (dicts of :func:`nclab.ufm.run.solve`'s form)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    solvers = tuple(SOLVERS) if solvers is None else tuple(solvers)
    t_start = time.perf_counter()

    results: list[dict] = []
    comparison: dict[str, list[dict]] = {}
    for loss in LOSSES:
        problem = make_problem(loss)
        _, res = run_solver(problem, "lbfgs", seed, gtol=DEMO_GTOL, metrics_every=1)
        results.append(res)
        plot_result(res, out_dir / f"ufm_{loss}.png")
        comparison[loss] = []
        for name in solvers:
            _, r = run_solver(make_problem(loss), name, seed, gtol=DEMO_GTOL, metrics_every=0, **_CAPS.get(name, {}))
            comparison[loss].append(r)

    sweep = []
    for n in SPHERE_SWEEP:
        _, r = run_solver(make_problem("sphere", n_points=n, d=3, tau=SPHERE_SWEEP_TAU), "lbfgs", seed, gtol=DEMO_GTOL, metrics_every=0)
        sweep.append({"n_points": n, "d": 3, "tau": SPHERE_SWEEP_TAU, "objective": r["objective"],
                      "frame_potential_excess": r["metrics"].get("frame_potential_excess")})

    # --- table -----------------------------------------------------------------------------------
    table = Table(title=f"UFM problems at their defaults: L-BFGS from random_start({seed}) vs closed form f*",
                  caption="rel gap: (f - f*)/f*, green when the run converged and <= 1e-9, red "
                          "otherwise (with !: did not converge); key: nc1 (FP/max(n, n^2/d) - 1 for "
                          "the sphere); struct: the largest closed_form_checks error")
    table.add_column("problem", no_wrap=True)
    for col, width in (("f*", 11), ("rel gap", 7), ("iters", 5), ("key", 6), ("struct", 6)):
        table.add_column(col, justify="right", no_wrap=True, min_width=width)
    for res in results:
        _, val = _key_metric(res)
        struct = [v for v in res["structure"].values() if v is not None]
        smax = max(struct) if struct else None
        ok = res["converged"] and res["relative_gap"] is not None and abs(res["relative_gap"]) <= 1e-9
        p = res["problem"]
        short = {k: v for k, v in p.items() if k in ("K", "n", "d", "n_points", "tau")}
        desc = res["loss"] + " " + " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in short.items())
        color = "green" if ok else "red"
        table.add_row(
            desc.replace("n_points", "n").replace("normalized", "norm."), f"{res['optimum']:.9f}",
            f"[{color}]{res['relative_gap']:.0e}{'' if res['converged'] else '!'}[/]", str(res["iterations"]),
            f"{val:.0e}" if val is not None else "—", f"{smax:.0e}" if smax is not None else "—",
        )
    console.print(table)

    ctable = Table(title=f"the same starts, every solver: iterations/seconds to gtol = {DEMO_GTOL:g}")
    ctable.add_column("problem")
    for name in solvers:
        ctable.add_column(name, justify="right")
    for loss in LOSSES:
        cells = []
        for r in comparison[loss]:
            mark = "" if r["converged"] else "*"
            cells.append(f"{r['iterations']}/{r['seconds']:.2f}s{mark}")
        ctable.add_row(loss, *cells)
    console.print(ctable)
    console.print("* did not converge (a cap, a stall or a failed line search: see stop_reason in the JSON); "
                  "the others met the relative gradient test |grad f| <= gtol |f|/max(|x|, 1)", style="dim")

    # --- combined figure ----------------------------------------------------------------------------
    ufm_demo_figure(comparison, sweep).savefig(out_dir / "ufm_demo.png", dpi=110)

    summary = {
        "results": results,
        "solver_comparison": {
            loss: [
                {k: r[k] for k in ("solver", "objective", "optimum", "relative_gap", "grad_norm", "iterations",
                                   "seconds", "stop_reason", "converged", "status", "evaluations")}
                for r in rs
            ]
            for loss, rs in comparison.items()
        },
        "sphere_sweep": sweep,
        "seconds": time.perf_counter() - t_start,
    }
    write_json(out_dir / "ufm_demo.json", summary)
    console.print(f"wrote {out_dir / 'ufm_demo.json'}, ufm_<loss>.png (x{len(LOSSES)}) and ufm_demo.png "
                  f"in {summary['seconds']:.1f} s")
    if not all(math.isfinite(r["objective"]) for r in results):  # pragma: no cover - defensive
        console.print("[red]a solve did not finish with a finite objective[/]")
    return results
