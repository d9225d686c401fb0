"""zhu2021 claims (a) and (b): the CE UFM's global minimisers and the phase transition at beta = 1/K.

(a) Zhu et al. 2021, Theorem 3.1 (REFERENCE.md section 2): for d >= K-1 every global minimiser of
``f(W,H,b) = (1/N) sum CE(W h + b, k) + lw/2 |W|^2 + lh/2 |H|^2 + lb/2 |b|^2`` has b = b* 1,
h_{k,i} = sqrt(lw/(n lh)) w_k and W a simplex ETF with |w_k|^2 = rho* = m* (K-1)/K sqrt(n lh/lw),
f* = log(1 + (K-1) e^{-m*}) + (K-1) beta m*, m* = log(1/beta - (K-1)), beta = sqrt(n lw lh).
Checked by solving with nclab's L-BFGS from random starts for d in {K-1, K, 2K} and comparing
with the closed form (:class:`nclab.ufm.problems.CEProblem`: ``optimum`` and ``structure``).

(b) The same theorem with beta >= 1/K: m* = 0 and the only minimiser is W = H = 0 (f* = log K).
A sweep over lw = lh = lambda at fixed K, n moves beta = sqrt(n) lambda across 1/K.
"""

from __future__ import annotations

import math

import numpy as np

from nclab.reproduce._zhu_common import PAPER, finite, max_iter, new_figure, save_figure, save_json, seeds, worst
from nclab.reproduce.claims import Claim, Context, Evidence, Table, check
from nclab.ufm.problems import make_problem
from nclab.ufm.run import GAP_TOLERANCE, run_solver

#: Relative gap to the closed-form optimum a run must reach (the solvers' "optimal" verdict).
GAP_TOL = GAP_TOLERANCE
#: Largest structure error (problem.structure: etf_W, feature_ratio_error, norm_error, bias_spread)
#: and NC metric (nc1, nc2_etf_W, nc2_etf_means, nc3_duality_gram, bias_collapse) of a minimiser.
STRUCTURE_TOL = 1e-4
#: The NC metrics read by claim (a).
NC_KEYS = ("nc1", "nc2_etf_W", "nc2_etf_means", "nc3_duality_gram", "bias_collapse")
#: Phase transition: points with |beta K - 1| below this margin are drawn but not judged
#: (near the boundary m* -> 0 and the solutions approach zero continuously).
MARGIN = 0.1
#: Above the boundary |(W, H)|_F must be below this (the solvers stop at a relative gradient 1e-8,
#: so the residual is about 1e-8 log K / lambda_min(Hess) at the origin).
ZERO_TOL = 1e-4


def _setting_a(ctx: Context) -> dict:
    K, n = ctx.pick((3, 2), (4, 5), (10, 20))
    return {"K": K, "n": n, "lw": 5e-3, "lh": 5e-3, "dims": [K - 1, K, 2 * K],
            "seeds": seeds(ctx, ctx.pick(1, 3, 5)), "solver": "lbfgs"}


def global_minimisers(ctx: Context) -> Evidence:
    s = _setting_a(ctx)
    cap = max_iter(ctx)
    rows, runs = [], []
    for d in s["dims"]:
        for seed in s["seeds"]:
            p = make_problem("ce", K=s["K"], n=s["n"], d=d, lw=s["lw"], lh=s["lh"])
            x, r = run_solver(p, s["solver"], seed, max_iter=cap, metrics_every=-1)
            m = p.metrics(x)
            st = r["structure"]
            run = {"d": d, "seed": seed, "status": r["status"], "converged": r["converged"],
                   "iterations": r["iterations"], "objective": r["objective"], "optimum": r["optimum"],
                   "relative_gap": finite(r["relative_gap"]), "structure": {k: finite(v) for k, v in st.items()},
                   "metrics": {k: finite(m.get(k)) for k in NC_KEYS}}
            run["max_structure_error"] = worst(st.values())
            run["max_nc_metric"] = worst(m.get(k) for k in NC_KEYS)
            runs.append(run)
            rows.append([d, seed, r["iterations"], r["status"], f"{r['relative_gap']:.1e}",
                         f"{run['max_structure_error']:.1e}", f"{m.get('nc1', math.nan):.1e}",
                         f"{run['max_nc_metric']:.1e}"])
            ctx.say(f"  d={d} seed={seed}: {r['status']}, gap {r['relative_gap']:.1e}")
    max_gap = worst(abs(r["relative_gap"]) if r["relative_gap"] is not None else None for r in runs)
    max_struct = worst(r["max_structure_error"] for r in runs)
    max_nc = worst(r["max_nc_metric"] for r in runs)
    n_conv = sum(r["converged"] for r in runs)
    passed = n_conv == len(runs) and max_gap <= GAP_TOL and max_struct <= STRUCTURE_TOL and max_nc <= STRUCTURE_TOL
    save_json(ctx, "global_minimisers.json", {"setting": s, "runs": runs})
    p0 = make_problem("ce", K=s["K"], n=s["n"], d=s["K"], lw=s["lw"], lh=s["lh"])
    m_star, rho_star = p0.collapse
    summary = (f"{len(runs)} L-BFGS runs (K={s['K']}, n={s['n']}, d in {s['dims']}, seeds {s['seeds']}): "
               f"{n_conv} converged; largest relative gap to f* = {p0.optimum:.6g} is {max_gap:.1e}, "
               f"largest structure error {max_struct:.1e}, largest NC metric {max_nc:.1e}.")
    numbers = {"max_relative_gap": finite(max_gap), "K": s["K"], "n": s["n"], "lw": s["lw"], "lh": s["lh"],
               "beta": p0.beta, "dims": s["dims"],
               "seeds": s["seeds"], "solver": s["solver"], "max_iter": cap, "optimum": p0.optimum,
               "m_star": m_star, "rho_star": rho_star, "runs": len(runs), "converged": n_conv,
               "max_structure_error": finite(max_struct),
               "max_nc_metric": finite(max_nc), "gap_tol": GAP_TOL, "structure_tol": STRUCTURE_TOL,
               "results_file": "global_minimisers.json"}
    table = Table("Solver vs closed form, per run", ["d", "seed", "iters", "status", "rel. gap", "max struct.",
                                                     "nc1", "max NC"], rows)
    return Evidence(passed=passed, summary=summary, numbers=numbers, tables=[table])


def claim_global_minimisers(ctx: Context) -> Claim:
    return check(
        ctx, "zhu2021.global_minimisers",
        title="Global minimisers of the CE UFM are simplex ETFs",
        source=f"{PAPER}, Theorem 3.1",
        statement=("For d >= K-1 and beta = sqrt(n lw lh) < 1/K every global minimiser of the regularised "
                   "cross-entropy UFM has a classifier W whose rows form a simplex ETF of common norm "
                   "|w_k|^2 = m* (K-1)/K sqrt(n lh/lw), self-dual features h_{k,i} = sqrt(lw/(n lh)) w_k "
                   "(within-class variability collapsed) and a collapsed bias b = b* 1; the optimal value is "
                   "f* = log(1 + (K-1) e^{-m*}) + (K-1) beta m*, m* = log(1/beta - (K-1))."),
        criterion=(f"L-BFGS from random starts, d in {{K-1, K, 2K}}, several seeds: every run converges, its "
                   f"relative gap to the closed-form f* is <= {GAP_TOL:g}, every structure error "
                   f"(etf_W, feature_ratio_error, norm_error, bias_spread) and NC metric ({', '.join(NC_KEYS)}) "
                   f"is <= {STRUCTURE_TOL:g}."),
        experiment=lambda: global_minimisers(ctx),
    )


# ---------------------------------------------------------------------------------------------
# (b) phase transition
# ---------------------------------------------------------------------------------------------
def _setting_b(ctx: Context) -> dict:
    K, n = ctx.pick((3, 2), (4, 5), (10, 20))
    ratios = np.geomspace(0.1, 4.0, ctx.pick(6, 13, 31))
    ratios = sorted(set(np.round(np.concatenate([ratios, [0.95, 1.05]]), 4).tolist()))
    return {"K": K, "n": n, "d": K, "ratios": ratios, "solver": "lbfgs", "seed": ctx.seed}


def phase_transition(ctx: Context) -> Evidence:
    s = _setting_b(ctx)
    K, n = s["K"], s["n"]
    cap = max_iter(ctx)
    points, rows = [], []
    for t in s["ratios"]:
        beta = t / K
        lam = beta / math.sqrt(n)
        p = make_problem("ce", K=K, n=n, d=s["d"], lw=lam, lh=lam)
        x, r = run_solver(p, s["solver"], s["seed"], max_iter=cap, metrics_every=-1)
        W, H = x[0].detach(), x[1].detach()
        m_star, rho_star = p.collapse
        rho = float((W * W).sum(1).mean())
        st = r["structure"]
        below = t <= 1 - MARGIN
        above = t >= 1 + MARGIN
        pt = {"beta": beta, "beta_K": t, "lambda": lam, "status": r["status"], "converged": r["converged"],
              "iterations": r["iterations"], "objective": r["objective"], "optimum": r["optimum"],
              "relative_gap": finite(r["relative_gap"]), "rho": rho, "rho_star": rho_star,
              "norm": math.sqrt(float((W * W).sum() + (H * H).sum())),
              "structure": {k: finite(v) for k, v in st.items()},
              "judged": "below" if below else ("above" if above else "margin")}
        if below:
            ok = (r["converged"] and abs(r["relative_gap"]) <= GAP_TOL and rho > 0
                  and worst(st.values()) <= STRUCTURE_TOL)
        elif above:
            ok = r["converged"] and abs(r["relative_gap"]) <= GAP_TOL and st.get("zero_norm", math.inf) <= ZERO_TOL
        else:
            ok = None
        pt["ok"] = ok
        points.append(pt)
        rows.append([f"{t:.3g}", f"{beta:.3g}", pt["judged"], r["status"], f"{rho:.3e}", f"{rho_star:.3e}",
                     f"{r['relative_gap']:.1e}", "-" if ok is None else ("yes" if ok else "NO")])
        ctx.say(f"  beta K = {t:.3g}: {r['status']}, |w_k|^2 {rho:.3e} (closed form {rho_star:.3e})")
    judged = [q for q in points if q["ok"] is not None]
    n_below = sum(q["judged"] == "below" for q in points)
    n_above = sum(q["judged"] == "above" for q in points)
    failures = [q["beta_K"] for q in judged if not q["ok"]]
    passed = not failures and n_below > 0 and n_above > 0
    fig = _plot_phase(points, K, n)
    figure = save_figure(ctx, fig, "phase_transition.png",
                         f"CE UFM, K={K}, n={n}, d={s['d']}, lw = lh: squared classifier norm and objective "
                         "(markers: L-BFGS; lines: closed form) against beta = sqrt(n lw lh); dashed: beta = 1/K.")
    save_json(ctx, "phase_transition.json", {"setting": s, "points": points})
    summary = (f"{len(points)} values of beta K in [{s['ratios'][0]:g}, {s['ratios'][-1]:g}] (K={K}, n={n}): "
               f"{n_below - sum(q['judged'] == 'below' and not q['ok'] for q in points)}/{n_below} below "
               f"(1-{MARGIN:g})/K collapse to the closed-form ETF, "
               f"{n_above - sum(q['judged'] == 'above' and not q['ok'] for q in points)}/{n_above} above "
               f"(1+{MARGIN:g})/K end at W = H = 0" + (f"; failures at beta K = {failures}" if failures else "") + ".")
    numbers = {"points_as_predicted": f"{sum(bool(q['ok']) for q in judged)}/{len(judged)}",
               "K": K, "n": n, "d": s["d"], "boundary_beta": 1.0 / K, "margin": MARGIN, "points": len(points),
               "below": n_below, "above": n_above, "failures": failures, "max_iter": cap,
               "gap_tol": GAP_TOL, "structure_tol": STRUCTURE_TOL, "zero_tol": ZERO_TOL,
               "max_relative_gap": finite(worst(abs(q["relative_gap"]) if q["relative_gap"] is not None else None
                                                for q in judged)),
               "max_zero_norm_above": finite(worst(q["structure"].get("zero_norm") for q in points
                                                   if q["judged"] == "above")),
               "min_rho_below": min((q["rho"] for q in points if q["judged"] == "below"), default=None),
               "results_file": "phase_transition.json"}
    table = Table("Sweep over beta (lw = lh)", ["beta K", "beta", "side", "status", "|w_k|^2", "closed form",
                                                "rel. gap", "ok"], rows)
    return Evidence(passed=passed, summary=summary, numbers=numbers, tables=[table], figures=[figure])


def _plot_phase(points: list[dict], K: int, n: int):
    fig, (ax1, ax2) = new_figure(2)
    beta = np.array([q["beta"] for q in points])
    grid = np.geomspace(beta.min(), beta.max(), 80)
    rho_cf, f_cf = [], []
    for b in grid:
        lam = b / math.sqrt(n)
        p = make_problem("ce", K=K, n=n, d=K, lw=lam, lh=lam)
        rho_cf.append(p.collapse[1])
        f_cf.append(p.optimum)
    ax1.plot(grid, rho_cf, "-", color="C0", label="closed form rho*")
    ax1.plot(beta, [q["rho"] for q in points], "o", color="C1", mfc="none", label="L-BFGS (mean |w_k|^2)")
    ax1.set_xscale("log")
    ax1.set_xlabel("beta = sqrt(n lw lh)")
    ax1.set_ylabel("squared classifier norm |w_k|^2")
    ax2.plot(grid, f_cf, "-", color="C0", label="closed form f*")
    ax2.plot(beta, [q["objective"] for q in points], "o", color="C1", mfc="none", label="L-BFGS objective")
    ax2.set_xscale("log")
    ax2.set_xlabel("beta = sqrt(n lw lh)")
    ax2.set_ylabel("objective f")
    for ax in (ax1, ax2):
        ax.axvline(1.0 / K, ls="--", color="gray", label="beta = 1/K")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Phase transition of the CE UFM (K={K}, n={n})")
    return fig


def claim_phase_transition(ctx: Context) -> Claim:
    return check(
        ctx, "zhu2021.phase_transition",
        title="Phase transition at beta = 1/K",
        source=f"{PAPER}, Theorem 3.1",
        statement=("With beta = sqrt(n lw lh): below 1/K the global minimiser is the collapsed simplex ETF with "
                   "|w_k|^2 = m* (K-1)/K sqrt(n lh/lw) > 0; at and above 1/K it is W = H = 0 (f* = log K)."),
        criterion=(f"A sweep of lw = lh over beta K in [0.1, 4] at fixed K, n, d = K (L-BFGS): every point with "
                   f"beta K <= 1 - {MARGIN:g} converges to the closed form (relative gap <= {GAP_TOL:g}, "
                   f"structure errors <= {STRUCTURE_TOL:g}, |w_k|^2 > 0) and every point with beta K >= "
                   f"1 + {MARGIN:g} ends at |(W, H)|_F <= {ZERO_TOL:g} with f = log K to {GAP_TOL:g}; points "
                   "inside the margin are drawn, not judged."),
        experiment=lambda: phase_transition(ctx),
    )
