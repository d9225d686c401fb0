"""Lu & Steinerberger 2022, "Neural collapse under cross-entropy loss": n points on the sphere.

The energy (REFERENCE.md section 2, :class:`nclab.ufm.problems.SphereProblem`) of n unit vectors
x_1..x_n in R^d at temperature tau is

    E(X) = (1/n) sum_i -log( exp(tau <x_i,x_i>) / sum_j exp(tau <x_i,x_j>) ).

Three claims are checked, all with Riemannian L-BFGS (:func:`nclab.ufm.run.solve` /
:func:`nclab.ufm.run.run_solver`) from random starts on the product of spheres:

* ``lu2022.simplex_etf`` -- for n <= d + 1 every start reaches E* = log(1 + (n-1) e^{-tau n/(n-1)})
  and the points form a simplex ETF (Gram error :func:`nclab.geometry.etf_gram_error`);
* ``lu2022.uniform_limit`` -- for fixed d (2 and 3) and growing n the minimisers approach the
  uniform distribution, measured by the moment sums S_l (:func:`nclab.geometry.spherical_moment_sums`,
  0 on a spherical design, 1/n on average for independent uniform points), degrees 1..6;
* ``lu2022.frame_potential`` -- the frame potential of the minimisers tends to n^2/d (the
  Benedetto-Fickus bound of a tight frame; :func:`nclab.geometry.frame_potential`).

Scales: tiny (seconds; the test suite: 12 s on 2 cores shared at load 17), quick (``make demo``:
n up to 128; 62 s on 2 cores at load 17, well under a minute on an idle machine), full (n up to 512,
d = 4 as well, 4 starts, gtol 1e-8, at most 5000 iterations: 1048 s on 2 cores at load 18, of which
d = 3 and 4 at n = 512 take about 11 minutes; some of those runs stop at the iteration cap, which
the table reports).  Overrides: ``max_iter`` caps every solve
(``{"max_iter": 2}`` shows a broken run turning the claims to failed), ``tau`` the temperature.
"""

from __future__ import annotations

import io
import math
from typing import Any

import torch

from nclab.geometry import frame_potential, frame_potential_excess, spherical_moment_sums
from nclab.io import atomic_write, write_json_atomic
from nclab.reproduce.claims import Claim, Context, Evidence, Figure, Table, Target, check
from nclab.ufm.problems import SphereProblem
from nclab.ufm.run import GAP_TOLERANCE, run_solver, solve

__all__ = ["TARGET", "run", "DEGREES", "ETF_TOLERANCE", "DESIGN_FACTOR", "TIGHT_TOLERANCE"]

SOURCE = "Lu & Steinerberger 2022"
#: Degrees l of the moment sums S_l reported and judged.
DEGREES = tuple(range(1, 7))
#: Largest ETF Gram error (:func:`nclab.geometry.etf_gram_error`) accepted as "a simplex ETF".
ETF_TOLERANCE = 1e-5
#: The uniformity criterion: at the largest n, n S_l <= DESIGN_FACTOR for every degree (random
#: points have E[n S_l] = 1).
DESIGN_FACTOR = 0.05
#: The frame-potential criterion: FP / (n^2/d) - 1 <= TIGHT_TOLERANCE at the largest n.
TIGHT_TOLERANCE = 1e-3
#: Values below this are rounding (a design, a tight frame): drawn at this floor on log axes.
FLOOR = 1e-16


def _simplex_cases(ctx: Context) -> list[tuple[int, int, float]]:
    tiny = [(3, 2, 5.0), (4, 3, 5.0), (4, 6, 1.0)]
    quick = tiny + [(5, 4, 2.0), (8, 7, 5.0), (10, 12, 10.0)]
    full = quick + [(16, 15, 5.0), (24, 30, 2.0), (32, 31, 5.0)]
    return ctx.pick(tiny, quick, full)


def _simplex_etf(ctx: Context) -> Evidence:
    starts = ctx.pick(2, 4, 8)
    max_iter = ctx.option("max_iter")
    rows, worst_gap, worst_etf, bad = [], 0.0, 0.0, []
    for n, d, tau in _simplex_cases(ctx):
        gaps, etfs, statuses, iters = [], [], [], []
        for s in range(starts):
            r = solve("sphere", "lbfgs", seed=ctx.seed + s, max_iter=max_iter, metrics_every=-1,
                      n_points=n, d=d, tau=tau)
            gaps.append(r["relative_gap"])
            etfs.append(r["structure"]["etf_X"])
            statuses.append(r["status"])
            iters.append(r["iterations"])
            if r["status"] != "optimal" or not r["structure"]["etf_X"] <= ETF_TOLERANCE:
                bad.append(f"n={n} d={d} tau={tau:g} seed={ctx.seed + s}: {r['status']}, "
                           f"gap {r['relative_gap']:.2e}, ETF error {r['structure']['etf_X']:.2e}")
        worst_gap, worst_etf = max([worst_gap, *gaps]), max([worst_etf, *etfs])
        rows.append([n, d, tau, starts, r["optimum"], max(gaps), max(etfs), max(iters),
                     ", ".join(sorted(set(statuses)))])
    runs = len(rows) * starts
    summary = (f"{runs} runs ({len(rows)} (n, d, tau) cases x {starts} random starts, seeds "
               f"{ctx.seed}..{ctx.seed + starts - 1}): largest relative gap to E* {worst_gap:.2e}, "
               f"largest ETF Gram error {worst_etf:.2e}.")
    return Evidence(
        passed=not bad,
        summary=summary,
        numbers={"max_relative_gap": worst_gap, "max_etf_error": worst_etf, "runs": runs,
                 "seeds": list(range(ctx.seed, ctx.seed + starts)), "off_runs": bad[:20],
                 "gap_tolerance": GAP_TOLERANCE, "etf_tolerance": ETF_TOLERANCE},
        tables=[Table("every case: the worst of its random starts",
                      ["n", "d", "tau", "starts", "E*", "max (E-E*)/E*", "max ETF error", "max iters", "status"],
                      rows)],
        reason="" if not bad else f"{len(bad)} of {runs} runs missed E* or the ETF: {bad[0]}",
        headline=f"gap {worst_gap:.1e}, ETF err {worst_etf:.1e}",
    )


# ------------------------------------------------------------------------------------------------
# the sweep in n for fixed d, shared by the uniformity and frame-potential claims
# ------------------------------------------------------------------------------------------------
def _uniform_points(n: int, d: int, gen: torch.Generator) -> torch.Tensor:
    X = torch.randn(n, d, dtype=torch.float64, generator=gen)
    return X / X.norm(dim=1, keepdim=True)


def _gap_spread(X: torch.Tensor) -> float:
    """d = 2: (largest - smallest angular gap between neighbours) / (2 pi / n); 0 for a regular polygon."""
    angles = torch.sort(torch.atan2(X[:, 1], X[:, 0])).values
    gaps = torch.diff(torch.cat([angles, angles[:1] + 2 * math.pi]))
    return float((gaps.max() - gaps.min()) / (2 * math.pi / X.shape[0]))


def _sweep(ctx: Context) -> dict:
    tau = float(ctx.option("tau", 5.0))
    dims = ctx.pick((2, 3), (2, 3), (2, 3, 4))
    ns = ctx.pick((8, 16, 32), (8, 16, 32, 64, 128), (8, 16, 32, 64, 128, 256, 512))
    starts = ctx.pick(2, 2, 4)
    draws = ctx.pick(20, 40, 100)
    max_iter = ctx.option("max_iter", ctx.pick(500, 1000, 5000))
    gtol = ctx.pick(1e-6, 1e-6, 1e-8)
    gen = torch.Generator().manual_seed(ctx.seed + 12345)
    sweep: dict[str, Any] = {"tau": tau, "dims": list(dims), "ns": list(ns), "starts": starts,
                             "degrees": list(DEGREES), "random_draws": draws, "max_iter": max_iter,
                             "gtol": gtol, "seeds": list(range(ctx.seed, ctx.seed + starts)), "runs": []}
    points = {}
    for d in dims:
        for n in ns:
            ctx.say(f"d={d} n={n}: {starts} starts")
            best = None
            for s in range(starts):
                x, r = run_solver(SphereProblem(n, d, tau), "lbfgs", ctx.seed + s, max_iter=max_iter, gtol=gtol,
                                  metrics_every=-1)
                if best is None or r["objective"] < best[1]["objective"]:
                    best = (x[0], r)
            X, r = best
            S = spherical_moment_sums(X, DEGREES)
            rand = [[n * v for v in spherical_moment_sums(_uniform_points(n, d, gen), DEGREES)] for _ in range(draws)]
            rand_mean = [sum(col) / draws for col in zip(*rand)]
            rand_excess = (d - 1) / n  # E[FP] = n + n(n-1)/d for independent uniform points
            run = {"d": d, "n": n, "energy": r["objective"], "status": r["status"], "stop_reason": r["stop_reason"],
                   "iterations": r["iterations"], "seed": r["seed"], "S": S, "nS": [n * v for v in S],
                   "random_nS_mean": rand_mean,
                   "fp_ratio": frame_potential(X) / (n * n / d), "fp_excess": frame_potential_excess(X),
                   "random_fp_excess": rand_excess}
            if d == 2:  # is it the regular polygon? its gaps, and its energy against the polygon's
                run["gap_spread"] = _gap_spread(X)
                angles = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
                polygon = torch.stack([angles.cos(), angles.sin()], dim=1)
                run["energy_above_polygon"] = r["objective"] - SphereProblem(n, d, tau).cost((polygon,))
            sweep["runs"].append(run)
            points[(d, n)] = X
    write_json_atomic(ctx.out / "sweep.json", {**sweep, "points": {f"d{d}_n{n}": X.tolist() for (d, n), X in points.items()}})
    sweep["points"] = points
    return sweep


def _runs(sweep: dict, d: int) -> list[dict]:
    return [r for r in sweep["runs"] if r["d"] == d]


def _save(fig, path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write(path, buf.getvalue())


def _plot_points(ctx: Context, sweep: dict) -> list[Figure]:
    from matplotlib.figure import Figure as MplFigure

    figures = []
    ns = sweep["ns"]
    shown = sorted({ns[0], ns[len(ns) // 2], ns[-1]})
    fig = MplFigure(figsize=(3.3 * len(shown), 3.4))
    t = torch.linspace(0, 2 * math.pi, 400)
    for i, n in enumerate(shown, 1):
        ax = fig.add_subplot(1, len(shown), i)
        X = sweep["points"][(2, n)]
        ax.plot(t.cos(), t.sin(), color="0.8", lw=1)
        ax.scatter(X[:, 0], X[:, 1], s=max(4, 40 - n / 4), color="C0", zorder=3)
        spread = next(r["gap_spread"] for r in _runs(sweep, 2) if r["n"] == n)
        ax.set_title(f"d = 2, n = {n}\ngap spread {spread:.1e}", fontsize=9)
        ax.set_aspect("equal")
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
    fig.tight_layout()
    _save(fig, ctx.out / "points_d2.png")
    figures.append(Figure("points_d2.png", "Minimisers for d = 2 (best of the random starts): the gap spread "
                          "(largest - smallest angle between neighbours, over 2 pi/n) is 0 for a regular polygon."))
    shown3 = sorted({ns[len(ns) // 2], ns[-1]})
    fig = MplFigure(figsize=(4.2 * len(shown3), 4.2))
    for i, n in enumerate(shown3, 1):
        ax = fig.add_subplot(1, len(shown3), i, projection="3d")
        X = sweep["points"][(3, n)]
        ax.scatter(X[:, 0], X[:, 1], X[:, 2], s=max(4, 30 - n / 8), color="C1", depthshade=True)
        ax.set_title(f"d = 3, n = {n}", fontsize=9)
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
        ax.set_zlabel("x3")
        ax.set_box_aspect((1, 1, 1))
    fig.tight_layout()
    _save(fig, ctx.out / "points_d3.png")
    figures.append(Figure("points_d3.png", "Minimisers for d = 3 (best of the random starts)."))
    return figures


def _plot_moments(ctx: Context, sweep: dict) -> Figure:
    from matplotlib.figure import Figure as MplFigure

    dims = sweep["dims"]
    fig = MplFigure(figsize=(4.6 * len(dims), 4.0))
    for i, d in enumerate(dims, 1):
        ax = fig.add_subplot(1, len(dims), i)
        runs = _runs(sweep, d)
        ns = [r["n"] for r in runs]
        for j, l in enumerate(sweep["degrees"]):
            ax.loglog(ns, [max(r["S"][j], FLOOR) for r in runs], marker="o", ms=3, label=f"l = {l}")
        ax.loglog(ns, [1 / n for n in ns], "k--", lw=1.2, label="1/n: mean of random points")
        ax.loglog(ns, [max(r["random_nS_mean"]) / r["n"] for r in runs], "kx", ms=5,
                  label="random points, measured (max over l)")
        ax.set_xlabel("n (points)")
        ax.set_ylabel("moment sum S_l")
        ax.set_title(f"d = {d}, tau = {sweep['tau']:g}", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        if i == 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, ctx.out / "moment_sums.png")
    return Figure("moment_sums.png", "Moment sums S_l of the minimisers against n (log-log), with the 1/n of "
                  f"independent uniform points; values below {FLOOR:g} (rounding: a design) are drawn at {FLOOR:g}.")


def _plot_frame_potential(ctx: Context, sweep: dict) -> Figure:
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(5.2, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    for d in sweep["dims"]:
        runs = _runs(sweep, d)
        ns = [r["n"] for r in runs]
        line, = ax.loglog(ns, [max(r["fp_excess"], FLOOR) for r in runs], marker="o", ms=3, label=f"minimisers, d = {d}")
        ax.loglog(ns, [r["random_fp_excess"] for r in runs], "--", color=line.get_color(), lw=1,
                  label=f"random points, d = {d}: (d-1)/n")
    ax.set_xlabel("n (points)")
    ax.set_ylabel("FP / (n^2/d) - 1")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, ctx.out / "frame_potential.png")
    return Figure("frame_potential.png", "Relative excess of the frame potential over n^2/d against n; "
                  f"values below {FLOOR:g} (a tight frame up to rounding) are drawn at {FLOOR:g}.")


def _uniform_limit(ctx: Context, get_sweep) -> Evidence:
    sweep = get_sweep()
    rows, bad, largest = [], [], {}
    for d in sweep["dims"]:
        runs = _runs(sweep, d)
        for r in runs:
            rows.append([d, r["n"], r["status"], *r["nS"], max(r["random_nS_mean"]),
                         r.get("gap_spread"), r.get("energy_above_polygon")])
        last = runs[-1]
        largest[f"d{d}_max_nS_at_n{last['n']}"] = max(last["nS"])
        if not max(last["nS"]) <= DESIGN_FACTOR:
            bad.append(f"d={d}, n={last['n']}: max_l n S_l = {max(last['nS']):.2e} > {DESIGN_FACTOR}")
    figs = [_plot_moments(ctx, sweep), *_plot_points(ctx, sweep)]
    polygon = [r.get("gap_spread") for r in _runs(sweep, 2)] if 2 in sweep["dims"] else []
    summary = ("At the largest n, max over l = 1..6 of n S_l is "
               + ", ".join(f"{v:.1e} ({k.split('_')[0]})" for k, v in largest.items())
               + " (random points: 1 on average, measured "
               + f"{max(max(r['random_nS_mean']) for r in sweep['runs']):.2f} at most over l)."
               + (" d = 2, gap spread (0 for a regular polygon): "
                  + ", ".join(f"{r['gap_spread']:.1e} (n={r['n']})" for r in _runs(sweep, 2))
                  + "; energy above the regular polygon's: "
                  + ", ".join(f"{r['energy_above_polygon']:.1e}" for r in _runs(sweep, 2))
                  + (". No start beat the regular polygon (to 1e-12)" if min(r["energy_above_polygon"] for r in _runs(sweep, 2)) >= -1e-12
                     else ". A start found a LOWER energy than the regular polygon")
                  + "; uneven gaps at a tiny energy excess: the energy barely feels the high-frequency modes "
                    "of the gaps (l ~ n/2), while the low moments vanish." if polygon else ""))
    return Evidence(
        passed=not bad,
        summary=summary,
        numbers={**largest, "design_factor": DESIGN_FACTOR, "tau": sweep["tau"], "starts": sweep["starts"],
                 "seeds": sweep["seeds"], "max_iter": sweep["max_iter"], "gtol": sweep["gtol"],
                 "random_draws": sweep["random_draws"], "d2_max_gap_spread": max(polygon) if polygon else None,
                 "d2_max_energy_above_polygon": max(r["energy_above_polygon"] for r in _runs(sweep, 2)) if polygon else None,
                 "statuses": sorted({r["status"] for r in sweep["runs"]})},
        tables=[Table("n S_l of the minimisers (0 on a design; 1 on average for random points)",
                      ["d", "n", "status", *[f"nS_{l}" for l in sweep["degrees"]], "random max_l nS_l",
                       "gap spread", "E - E(polygon)"], rows)],
        figures=figs,
        reason="; ".join(bad),
        headline="max n*S_l " + ", ".join(f"{v:.0e}" for v in largest.values()),
    )


def _frame_potential(ctx: Context, get_sweep) -> Evidence:
    sweep = get_sweep()
    rows, bad, last_excess = [], [], {}
    for d in sweep["dims"]:
        runs = _runs(sweep, d)
        rows += [[d, r["n"], r["fp_ratio"], r["fp_excess"], r["random_fp_excess"]] for r in runs]
        last = runs[-1]
        last_excess[f"d{d}_excess_at_n{last['n']}"] = last["fp_excess"]
        if not last["fp_excess"] <= TIGHT_TOLERANCE:
            bad.append(f"d={d}, n={last['n']}: FP/(n^2/d) - 1 = {last['fp_excess']:.2e} > {TIGHT_TOLERANCE:g}")
    return Evidence(
        passed=not bad,
        summary="FP/(n^2/d) - 1 at the largest n: " + ", ".join(f"{v:.1e} ({k.split('_')[0]})" for k, v in last_excess.items())
                + "; independent uniform points have (d-1)/n on average.",
        numbers={**last_excess, "tolerance": TIGHT_TOLERANCE, "tau": sweep["tau"], "seeds": sweep["seeds"]},
        tables=[Table("frame potential of the minimisers", ["d", "n", "FP/(n^2/d)", "FP/(n^2/d) - 1",
                                                             "random: (d-1)/n"], rows)],
        figures=[_plot_frame_potential(ctx, sweep)],
        reason="; ".join(bad),
        headline="FP/(n^2/d)-1 " + ", ".join(f"{v:.0e}" for v in last_excess.values()),
    )


def run(ctx: Context) -> list[Claim]:
    """The three claims of Lu & Steinerberger 2022 (module docstring), checked at ``ctx.scale``.

    Runs on one torch thread (restored afterwards): the problems are n x n with n <= 512, where a
    second thread only adds synchronisation (on a loaded 2-core machine, 20x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _claims(ctx)
    finally:
        torch.set_num_threads(threads)


def _claims(ctx: Context) -> list[Claim]:
    state: dict[str, Any] = {}

    def get_sweep() -> dict:  # computed once for both claims; its error is raised again, not retried
        if "error" in state:
            raise state["error"]
        if "sweep" not in state:
            try:
                state["sweep"] = _sweep(ctx)
            except Exception as err:
                state["error"] = err
                raise
        return state["sweep"]

    return [
        check(ctx, "lu2022.simplex_etf", title="n <= d+1: the minimiser is the simplex ETF",
              source=f"{SOURCE}, the case d >= n - 1 (first main result)",
              statement="For n unit vectors in R^d with d >= n - 1, the global minimum of the cross-entropy "
                        "energy is attained by the simplex equiangular tight frame, with energy "
                        "E* = log(1 + (n-1) exp(-tau n/(n-1))).",
              criterion=f"Riemannian L-BFGS from several random starts for each (n, d, tau) with d >= n-1: "
                        f"every run converges with relative gap to E* <= {GAP_TOLERANCE:g} and ETF Gram "
                        f"error <= {ETF_TOLERANCE:g}.",
              experiment=lambda: _simplex_etf(ctx)),
        check(ctx, "lu2022.uniform_limit", title="fixed d, growing n: the minimisers become uniform",
              source=f"{SOURCE}, the limit n -> infinity for fixed d (second main result)",
              statement="For fixed d and n -> infinity, the minimising configurations become uniformly "
                        "distributed on the sphere S^{d-1}.",
              criterion="For d = 2 and 3 and growing n (best of the random starts), the moment sums "
                        "S_l = (1/n^2) sum_ij P_l(<x_i,x_j>) (Gegenbauer, normalised P_l(1) = 1; 0 on a "
                        "spherical design, 1/n on average for random points), l = 1..6: at the largest n, "
                        f"n S_l <= {DESIGN_FACTOR:g} for every l (at least {1 / DESIGN_FACTOR:.0f} times closer "
                        "to a design than random points); the table and the figure show the whole sequence in n.",
              experiment=lambda: _uniform_limit(ctx, get_sweep)),
        check(ctx, "lu2022.frame_potential", title="the frame potential tends to n^2/d",
              source=f"{SOURCE}, the link with the frame potential (Benedetto & Fickus 2003)",
              statement="As n grows, the minimisers' frame potential sum_ij <x_i,x_j>^2 approaches its "
                        "lower bound n^2/d, attained exactly by tight frames.",
              criterion=f"FP/(n^2/d) - 1 <= {TIGHT_TOLERANCE:g} at the largest n for every d of the sweep "
                        "(independent uniform points have (d-1)/n on average).",
              experiment=lambda: _frame_potential(ctx, get_sweep)),
    ]


TARGET = Target(
    name="lu2022",
    title="Neural collapse under cross-entropy loss",
    citation="J. Lu and S. Steinerberger, Neural collapse under cross-entropy loss, "
             "Applied and Computational Harmonic Analysis 59 (2022).",
    run=run,
)
