"""Gu & Shen 2024, "Geometric analysis of unconstrained feature models with d = K": its claims, checked.

At d = K (feature dimension = number of classes) the penalised CE UFM (Theorem 1.1) and MSE UFM
(Theorem 1.2) of REFERENCE.md section 2 are strict-saddle functions with no spurious local
minimum, and their global solutions have the form (1.5)-(1.7).  Claims (REFERENCE.md section 5):

``gushen2024.ce_global_form`` / ``gushen2024.mse_global_form`` ((1.5)-(1.7))
    The global solution: b* = 0 (lb > 0) or any constant b* 1 (lb = 0, CE; for MSE with a free
    bias b* = 1/K 1), W a K-simplex ETF up to scale and rotation, features aligned with their
    classifier h_{k,i} = sqrt(lw/(n lh)) w_k, and the optimal value of REFERENCE.md section 2.
    For MSE without a bias (b = 0) the reference solution is a scaled orthogonal frame.  Checked: an
    L-BFGS solve from random starts, its objective against f* (written out again in
    :func:`nclab.reproduce._yaras_ufm.closed_form_optimum`), the Gram matrix of W against the
    ETF's (or the identity), the problem's structure errors and the bias.
``gushen2024.strict_saddles`` (Theorems 1.1/1.2 with Lemma 3.1 and Proposition 4.1)
    Every non-global critical point is a strict saddle.  Checked at the constructed points (the
    origin W = H = 0 and the embedded lower-dimensional minimisers) and at points found by
    Levenberg-Marquardt from random starts, each classified by :func:`nclab.ufm.landscape.classify`;
    at every critical point the identities of Lemma 3.1 (balance lw W^T W = lh H^T H, 1^T W = 0 for
    CE, and at a non-global point a null direction of W: rank W <= K-1) and, for MSE, the
    singular-value test of Proposition 4.1 (sigma_1(grad_Z L) <= sqrt(lw lh) exactly at the global
    solutions; Zhu et al.'s Lemma C.4 form, :func:`nclab.ufm.landscape.certificate`).
``gushen2024.random_starts``
    Every solver of :data:`nclab.ufm.optim.SOLVERS` (plain gradient descent included, under its
    cap) from random starts reaches the global minimum; read by
    :func:`nclab.ufm.landscape.survey.gu_shen_check` together with the saddles.

Solver and finder caps honour ``ctx.option("max_iter")``.  Run through ``nclab reproduce gushen2024``.
"""

from __future__ import annotations

import math
import statistics

import numpy as np

from nclab.reproduce._yaras_ufm import (
    critical_point_rows,
    gram_error,
    lambda_bars,
    pyplot,
    savefig,
    solve_row,
    worst,
)
from nclab.reproduce.claims import Claim, Context, Evidence, Figure, Table, Target, check, headline

__all__ = ["TARGET", "SETTINGS", "CONFIGS", "GAP_TOL", "STRUCTURE_TOL", "IDENTITY_TOL", "run"]

SOURCE = "Gu & Shen 2024"
#: name -> (loss, options): the problems of the two theorems at d = K.
CONFIGS = {
    "ce": ("ce", {"bias": True, "lb": 0.0}),
    "ce-lb": ("ce", {"bias": True, "lb": 5e-3}),
    "mse": ("mse", {"bias": True, "lb": 0.0}),
    "mse-nobias": ("mse", {"bias": False, "lb": 0.0}),
}
#: Solvers run under an iteration cap whose end points are reported but not counted (plain gradient
#: descent needs thousands of iterations to meet the solvers' gradient test; as in
#: :func:`nclab.ufm.landscape.survey.gu_shen_check`).
CAPPED = ("gd",)
#: Relative gap to f* and structure errors that count as "the global solution".
GAP_TOL = 1e-6
STRUCTURE_TOL = 1e-4
#: Lemma 3.1 residuals (relative) that count as zero; a larger residual still passes when it is within
#: the bound the point's own gradient puts on it (:func:`nclab.reproduce._yaras_ufm.identity_bounds`:
#: the identities are exact in terms of the gradient, so a point near the origin, critical to the
#: relative gradient test, may be far from balanced relative to its tiny norm).
IDENTITY_TOL = 1e-5

SETTINGS = {
    "tiny": dict(K=3, n=2, lambdas=(5e-3, 5e-3), form_seeds=1, start_seeds=1, found=1,
                 solvers=("lbfgs", "gd", "rgd", "rcg", "rtr"), gd_max_iter=200),
    "quick": dict(K=4, n=3, lambdas=(5e-3, 5e-3), form_seeds=2, start_seeds=2, found=2,
                  solvers=("lbfgs", "gd", "rgd", "rcg", "rtr"), gd_max_iter=1000),
    "full": dict(K=10, n=10, lambdas=(5e-3, 5e-3), form_seeds=5, start_seeds=5, found=5,
                 solvers=("lbfgs", "gd", "rgd", "rcg", "rtr"), gd_max_iter=20000),
}


def _problem(config: str, s: dict):
    from nclab.ufm.problems import make_problem

    loss, fixed = CONFIGS[config]
    lw, lh = s["lambdas"]
    return make_problem(loss, K=s["K"], n=s["n"], d=s["K"], lw=lw, lh=lh, **fixed)


def _survey_config(config: str) -> str:
    """The name :mod:`nclab.ufm.landscape.survey` uses for the same family (its predictions)."""
    return "ce" if config.startswith("ce") else config


# ---------------------------------------------------------------------------------------------------
def _global_form(ctx: Context, configs: tuple[str, ...]) -> Evidence:
    plt = pyplot()

    s = SETTINGS[ctx.scale]
    K, n = s["K"], s["n"]
    cap = ctx.option("max_iter")
    rows = []
    for config in configs:
        frame = "orthogonal" if config == "mse-nobias" else "simplex"
        for seed in range(ctx.seed, ctx.seed + s["form_seeds"]):
            p = _problem(config, s)
            x, row = solve_row(p, _survey_config(config), "lbfgs", seed, max_iter=cap, gtol=1e-10, classify=False)
            W, H = x[0].detach(), x[1].detach()
            labels = np.repeat(np.arange(K), n)
            c = math.sqrt(p.lw / (n * p.lh))
            row["config"] = config
            row["frame"] = frame
            row["gram_error"] = gram_error(W, frame)
            row["alignment_error"] = float((H - c * W[labels]).norm() / max(float(H.norm()), 1e-300))
            b = p.bias(x)
            if b is not None:
                b = b.detach()
                if p.loss == "ce" and p.lb == 0:  # b* 1 with any b*: the spread
                    row["bias_error"] = float((b - b.mean()).abs().max())
                elif p.loss == "ce":  # lb > 0: b* = 0
                    row["bias_error"] = float(b.abs().max())
                else:  # MSE with a free bias: b* = 1/K 1
                    row["bias_error"] = float((b - 1.0 / K).abs().max())
            else:
                row["bias_error"] = 0.0
            row["ok"] = bool(row["converged"] and abs(row["relative_gap"]) <= GAP_TOL
                             and row["gram_error"] <= STRUCTURE_TOL and row["alignment_error"] <= STRUCTURE_TOL
                             and row["bias_error"] <= STRUCTURE_TOL)
            rows.append(row)
            ctx.say(f"  {config} seed {seed}: {row['status']}, gap {row['relative_gap']:.1e}")
    fig, ax = plt.subplots(figsize=(6, 4))
    keys = ("relative_gap", "gram_error", "alignment_error", "bias_error")
    for i, key in enumerate(keys):
        vals = [max(abs(r[key]), 1e-17) for r in rows]
        ax.plot([i + 0.08 * (k - len(rows) / 2) for k in range(len(rows))], vals, "o", mfc="none")
    ax.axhline(STRUCTURE_TOL, color="k", ls="--", lw=0.8, label=f"structure tolerance {STRUCTURE_TOL:g}")
    ax.axhline(GAP_TOL, color="gray", ls=":", lw=0.8, label=f"gap tolerance {GAP_TOL:g}")
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels(["|f-f*|/f*", "Gram vs frame", "h vs c w", "bias error"])
    ax.set_yscale("log")
    ax.set_xlabel("quantity of (1.5)-(1.7)")
    ax.set_ylabel("error at the solver's end point")
    ax.set_title(f"{', '.join(configs)}: d = K = {K}, n = {n}")
    ax.legend(fontsize=7)
    name = "gushen2024_form_" + ("ce" if configs[0].startswith("ce") else "mse") + ".png"
    fig_path = savefig(fig, ctx.out, name)
    bad = [r for r in rows if not r["ok"]]
    numbers = {
        "K": K, "n": n, "d": K, "lambdas": list(s["lambdas"]), "configs": list(configs), "runs": len(rows),
        "passed_runs": len(rows) - len(bad), "all_converged": all(r["converged"] for r in rows),
        "max_abs_relative_gap": worst(abs(r["relative_gap"]) for r in rows),
        "max_gram_error": worst(r["gram_error"] for r in rows),
        "max_alignment_error": worst(r["alignment_error"] for r in rows),
        "max_bias_error": worst(r["bias_error"] for r in rows), "gap_tolerance": GAP_TOL,
        "structure_tolerance": STRUCTURE_TOL, "max_iter": cap,
        "rows": [{k: r.get(k) for k in ("config", "frame", "seed", "converged", "stop_reason", "iterations", "objective",
                                        "optimum", "relative_gap", "gram_error", "alignment_error", "bias_error",
                                        "structure", "ok")} for r in rows],
    }
    table = Table("L-BFGS end points vs (1.5)-(1.7)", ["problem", "seed", "f", "f*", "rel. gap", "Gram err",
                                                       "align err", "bias err", "ok"],
                  [[r["config"], r["seed"], f"{r['objective']:.6g}", f"{r['optimum']:.6g}", f"{r['relative_gap']:.1e}",
                    f"{r['gram_error']:.1e}", f"{r['alignment_error']:.1e}", f"{r['bias_error']:.1e}",
                    "yes" if r["ok"] else "NO"] for r in rows])
    summary = (f"{len(rows) - len(bad)} of {len(rows)} solves at d = K = {K} ({', '.join(configs)}) end at the "
               f"global solution's form; largest errors: relative gap to f* {numbers['max_abs_relative_gap']:.1e}, "
               f"Gram matrix of W vs the predicted frame {numbers['max_gram_error']:.1e}, feature alignment "
               f"{numbers['max_alignment_error']:.1e}, bias {numbers['max_bias_error']:.1e}.")
    return Evidence(headline=headline('{passed_runs}/{runs} runs, gap {max_abs_relative_gap:.0e}', numbers), passed=not bad, summary=summary, numbers=numbers, tables=[table],
                    figures=[Figure(fig_path, "Errors of the solvers' end points against the global solution's form "
                                              "(1.5)-(1.7): objective gap, Gram matrix of W, feature alignment, bias.")],
                    reason="" if not bad else f"{len(bad)} solve(s) off the global form (first: {bad[0]['config']} "
                                              f"seed {bad[0]['seed']}, {bad[0]['stop_reason']})")


# ---------------------------------------------------------------------------------------------------
class _Landscape:
    """The critical points and the random starts, computed once for the two landscape claims."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.s = SETTINGS[ctx.scale]
        self._points = None
        self._starts = None

    def points(self) -> list[dict]:
        if self._points is None:
            cap = self.ctx.option("max_iter")
            rows = []
            for config in ("ce", "mse", "mse-nobias"):
                rows += critical_point_rows(_problem(config, self.s), config, found_starts=self.s["found"],
                                            finder_max_iter=cap, progress=self.ctx.say)
            self._points = rows
        return self._points

    def starts(self) -> list[dict]:
        if self._starts is None:
            cap = self.ctx.option("max_iter")
            rows = []
            for config in ("ce", "mse", "mse-nobias"):
                for solver in self.s["solvers"]:
                    for seed in range(self.ctx.seed, self.ctx.seed + self.s["start_seeds"]):
                        c = cap if cap is not None else (self.s["gd_max_iter"] if solver == "gd" else None)
                        _, row = solve_row(_problem(config, self.s), config, solver, seed, max_iter=c)
                        rows.append(row)
                ctx_rows = [r for r in rows if r["config"] == config]
                self.ctx.say(f"  {config}: {sum(r['kind'] == 'global_minimiser' for r in ctx_rows)}/{len(ctx_rows)} "
                             "starts global")
            self._starts = rows
        return self._starts


def _identity_checks(r: dict) -> dict:
    """Lemma 3.1 at one critical point: the residuals and whether they hold."""
    ids = r.get("identities") or {}
    out = {"balance_error": ids.get("balance_error"), "ones_error": ids.get("ones_error"),
           "rank_W": ids.get("rank_W"), "null_dim": ids.get("null_dim")}
    bounds = r.get("identity_bounds") or {}

    def small(value, bound):  # exact to IDENTITY_TOL, or within what the point's gradient allows
        return value is not None and (value <= IDENTITY_TOL or (bound is not None and value <= 1.01 * bound + 1e-12))

    out["balance_bound"], out["ones_bound"] = bounds.get("balance"), bounds.get("ones")
    ok = small(ids.get("balance_error"), bounds.get("balance"))
    if r["config"] == "ce":
        ok = ok and small(ids.get("ones_error"), bounds.get("ones"))
    out["null_dim_abs"] = bounds.get("null_dim_abs")
    if r["kind"] != "global_minimiser":  # a non-global critical point: W has a null direction
        ok = ok and max(ids.get("null_dim") or 0, bounds.get("null_dim_abs") or 0) >= 1
    out["holds"] = bool(ok)
    return out


def _strict_saddles(ctx: Context, land: _Landscape) -> Evidence:
    plt = pyplot()

    rows = land.points()
    s = land.s
    for r in rows:
        r["lemma_3_1"] = _identity_checks(r)
        if r["config"].startswith("mse"):
            # Proposition 4.1: global iff sigma_1(grad_Z L) <= sqrt(lw lh) (ratio <= 1 + tol)
            r["prop_4_1_global"] = r.get("certificate_holds")
            r["prop_4_1_agrees"] = (r.get("certificate_holds") == (r["kind"] == "global_minimiser")
                                    if r["kind"] in ("global_minimiser", "strict_saddle") else False)
    critical = [r for r in rows if r["kind"] != "not_critical"]
    non_global = [r for r in rows if r["kind"] != "global_minimiser"]
    constructed = [r for r in rows if r["expected"] is not None]
    found = [r for r in rows if r["point"] == "found"]
    mse_rows = [r for r in rows if r["config"].startswith("mse")]
    ok = (all(r["kind"] == "strict_saddle" for r in non_global) and len(non_global) > 0
          and all(r["matches"] for r in constructed)
          and all(r["lemma_3_1"]["holds"] for r in critical) and len(critical) == len(rows)
          and all(r["prop_4_1_agrees"] for r in mse_rows))
    fig, ax = plt.subplots(figsize=(9, 4))
    lambda_bars(ax, rows)
    ax.set_title(f"Critical points at d = K = {s['K']} (red: strict saddle, green: global minimiser)")
    fig_path = savefig(fig, ctx.out, "gushen2024_saddles.png")
    numbers = {
        "K": s["K"], "n": s["n"], "d": s["K"], "lambdas": list(s["lambdas"]), "points": len(rows),
        "critical": len(critical), "constructed": len(constructed),
        "constructed_as_predicted": sum(bool(r["matches"]) for r in constructed), "found": len(found),
        "found_kinds": {k: sum(r["kind"] == k for r in found) for k in sorted({r["kind"] for r in found})},
        "non_global_points": len(non_global),
        "non_global_strict_saddles": sum(r["kind"] == "strict_saddle" for r in non_global),
        "largest_saddle_lambda_min": worst(r["lambda_min"] for r in non_global),
        "lemma_3_1_holds": sum(r["lemma_3_1"]["holds"] for r in critical),
        "max_balance_error": worst(r["lemma_3_1"]["balance_error"] for r in critical),
        "balance_bounds": [r["lemma_3_1"]["balance_bound"] for r in critical],
        "max_ones_error_ce": worst(r["lemma_3_1"]["ones_error"] for r in critical if r["config"] == "ce"),
        "non_global_min_null_dim": min((max(r["lemma_3_1"]["null_dim"] or 0, r["lemma_3_1"]["null_dim_abs"] or 0)
                                         for r in non_global), default=None),
        "prop_4_1_agrees": sum(bool(r["prop_4_1_agrees"]) for r in mse_rows), "prop_4_1_points": len(mse_rows),
        "identity_tolerance": IDENTITY_TOL,
        "rows": [{k: r.get(k) for k in ("config", "label", "expected", "kind", "lambda_min", "eig_threshold",
                                        "certificate_ratio", "lemma_3_1", "prop_4_1_agrees", "matches")} for r in rows],
    }
    table = Table("Critical points at d = K", ["problem", "point", "kind", "lambda_min", "sigma_1/sqrt(lw lh)",
                                               "balance", "rank W"],
                  [[r["config"], r["label"], r["kind"], None if r["lambda_min"] is None else f"{r['lambda_min']:.2e}",
                    None if r.get("certificate_ratio") is None else f"{r['certificate_ratio']:.4f}",
                    None if r["lemma_3_1"]["balance_error"] is None else f"{r['lemma_3_1']['balance_error']:.1e}",
                    r["lemma_3_1"]["rank_W"]] for r in rows])
    summary = (f"{numbers['non_global_strict_saddles']} of {len(non_global)} non-global critical points (CE, MSE, "
               f"MSE without bias) are strict saddles (largest lambda_min {numbers['largest_saddle_lambda_min']:.2e}); "
               f"Lemma 3.1 holds at {numbers['lemma_3_1_holds']} of {len(critical)} critical points (largest balance "
               f"residual {numbers['max_balance_error']:.1e}; a residual counts when below {IDENTITY_TOL:g} or within "
               "the bound the point's gradient allows); the MSE singular-value test agrees with the classification at "
               f"{numbers['prop_4_1_agrees']} of {len(mse_rows)} points.")
    reason = "" if ok else "; ".join(
        f"{r['config']} {r['label']}: {r['kind']}" + ("" if r["lemma_3_1"]["holds"] else ", Lemma 3.1 fails")
        for r in rows if r["kind"] not in ("global_minimiser", "strict_saddle") or not r["lemma_3_1"]["holds"]
        or (r["expected"] and not r["matches"]) or r.get("prop_4_1_agrees") is False)[:600]
    return Evidence(headline=headline('{constructed_as_predicted}/{constructed} as predicted', numbers), passed=ok, summary=summary, numbers=numbers, tables=[table], reason=reason,
                    figures=[Figure(fig_path, "Smallest deflated Hessian eigenvalue at each constructed (origin, "
                                              "lowdim:D) and found critical point of the CE and MSE UFMs at d = K.")])


def _random_starts(ctx: Context, land: _Landscape) -> Evidence:
    plt = pyplot()

    from nclab.ufm.landscape.survey import gu_shen_check

    starts = land.starts()
    points = land.points()
    s = land.s
    K = s["K"]
    verdict = gu_shen_check({"runs": starts}, {"points": points}, K, capped_solvers=CAPPED)
    gd = [r for r in starts if r["solver"] in CAPPED]
    uncapped = [r for r in starts if r["solver"] not in CAPPED]
    per = {}
    for config in ("ce", "mse", "mse-nobias"):
        for solver in s["solvers"]:
            rs = [r for r in starts if r["config"] == config and r["solver"] == solver]
            per[f"{config}/{solver}"] = {"runs": len(rs), "global": sum(r["kind"] == "global_minimiser" for r in rs),
                                         "converged": sum(r["converged"] for r in rs),
                                         "median_iterations": statistics.median(r["iterations"] for r in rs)}
    n_global = sum(r["kind"] == "global_minimiser" for r in uncapped)
    gd_gaps = [abs(r["relative_gap"]) for r in gd]
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = list(per)
    ax.bar(range(len(labels)), [per[k]["global"] / per[k]["runs"] for k in labels],
           color=["tab:green" if per[k]["global"] == per[k]["runs"] else "tab:red" for k in labels])
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=70, fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("problem / solver")
    ax.set_ylabel("fraction of random starts at the global minimum")
    ax.set_title(f"Random starts at d = K = {K}")
    fig_path = savefig(fig, ctx.out, "gushen2024_random_starts.png")
    numbers = {"K": K, "n": s["n"], "d": K, "solvers": list(s["solvers"]), "seeds": s["start_seeds"],
               "gd_max_iter": s["gd_max_iter"], "max_iter": ctx.option("max_iter"), "runs": len(uncapped),
               "global": n_global, "capped_solvers": list(CAPPED), "capped_runs": len(gd),
               "capped_max_relative_gap": worst(gd_gaps), "capped_global": sum(r["kind"] == "global_minimiser" for r in gd),
               "per_problem_solver": per, "gu_shen_check": verdict,
               "rows": [{k: r.get(k) for k in ("config", "solver", "seed", "converged", "stop_reason", "iterations",
                                               "relative_gap", "kind", "lambda_min")} for r in starts]}
    table = Table("Random starts at d = K", ["problem/solver", "runs", "global min", "converged", "median iters"],
                  [[k, v["runs"], v["global"], v["converged"], v["median_iterations"]] for k, v in per.items()])
    passed = n_global == len(uncapped) and verdict["holds"] is True
    gd_text = (f" Plain gradient descent, capped at {s['gd_max_iter']} iterations: {numbers['capped_global']} of {len(gd)} "
               f"end points classified global, largest relative gap {numbers['capped_max_relative_gap']:.1e} "
               "(reported, not counted: it converges too slowly for the cap)." if gd else "")
    summary = (f"{n_global} of {len(uncapped)} random starts ({', '.join(x for x in s['solvers'] if x not in CAPPED)}; "
               f"CE, MSE, MSE without bias; {s['start_seeds']} seed(s) each) end at a point classified global "
               f"minimiser; gu_shen_check holds: {verdict['holds']}." + gd_text)
    bad = [r for r in uncapped if r["kind"] != "global_minimiser"]
    return Evidence(headline=headline('{global}/{runs} global', numbers), passed=passed, summary=summary, numbers=numbers, tables=[table],
                    figures=[Figure(fig_path, "Fraction of random starts that reach the global minimum, per problem "
                                              "and solver (plain gradient descent under its iteration cap).")],
                    reason="" if passed else (f"{len(bad)} start(s) not at the global minimum (first: {bad[0]['config']} "
                                              f"{bad[0]['solver']} seed {bad[0]['seed']}: {bad[0]['kind']}, "
                                              f"{bad[0]['stop_reason']})" if bad else "a constructed saddle failed"))


# ---------------------------------------------------------------------------------------------------
def run(ctx: Context) -> list[Claim]:
    """Check every claim of Gu & Shen 2024 at ``ctx.scale`` (module docstring)."""
    ctx.out.mkdir(parents=True, exist_ok=True)
    s = SETTINGS[ctx.scale]
    land = _Landscape(ctx)
    form_criterion = (f"L-BFGS from {s['form_seeds']} random start(s) per problem at d = K = {s['K']} (n = {s['n']}, "
                      f"lw = lh = {s['lambdas'][0]:g}) converges to a point within {GAP_TOL:g} (relative) of f* "
                      f"(REFERENCE.md section 2, recomputed), whose Gram matrix W W^T / (trace/K) matches the frame "
                      f"entrywise to {STRUCTURE_TOL:g}, with |H - sqrt(lw/(n lh)) W[labels]| / |H| and the bias error "
                      f"below {STRUCTURE_TOL:g}. Numbers: max_abs_relative_gap, max_gram_error, max_alignment_error, "
                      "max_bias_error, all_converged.")
    return [
        check(ctx, "gushen2024.ce_global_form", title="CE at d = K: the global solution's form (1.5)-(1.7)",
              source=f"{SOURCE}, Theorem 1.1, (1.5)-(1.7)",
              statement="For the cross-entropy UFM with d = K, every global solution has W a K-simplex ETF up to "
                        "scale and rotation, features aligned with their classifiers (h_{k,i} = sqrt(lw/(n lh)) w_k) "
                        "and the bias b* = 0 when lb > 0 (any constant vector b* 1 when lb = 0).",
              criterion=form_criterion + " Problems: CE with lb = 0 (bias spread) and lb = 5e-3 (|b|).",
              experiment=lambda: _global_form(ctx, ("ce", "ce-lb"))),
        check(ctx, "gushen2024.mse_global_form", title="MSE at d = K: the global solution's form (1.5)-(1.7)",
              source=f"{SOURCE}, Theorem 1.2, (1.5)-(1.7)",
              statement="For the MSE UFM with d = K and a free bias (lb = 0), every global solution has W a "
                        "K-simplex ETF up to scale and rotation, aligned features and b* = 1/K 1; without a bias "
                        "(b = 0) the classifier is a scaled orthogonal frame (REFERENCE.md section 2).",
              criterion=form_criterion + " Problems: MSE with a free bias (simplex ETF, b = 1/K) and without "
                                         "(orthogonal frame).",
              experiment=lambda: _global_form(ctx, ("mse", "mse-nobias"))),
        check(ctx, "gushen2024.strict_saddles", title="Every non-global critical point at d = K is a strict saddle",
              source=f"{SOURCE}, Theorems 1.1 and 1.2, Lemma 3.1, Proposition 4.1",
              statement="At d = K the CE and MSE UFMs are strict-saddle functions: every critical point is a global "
                        "minimiser or has a direction of negative curvature. Every critical point obeys Lemma 3.1 "
                        "(lw W^T W = lh H^T H; 1^T W = 0 for CE; a non-global one has rank W <= K-1, so W has a null "
                        "direction), and for MSE a critical point is global iff sigma_1(grad_Z L) <= sqrt(lw lh) "
                        "(Proposition 4.1).",
              criterion=f"The origin, every embedded lower-dimensional minimiser lowdim:D and {s['found']} point(s) found "
                        "by Levenberg-Marquardt per problem (CE, MSE, MSE without bias) are critical; every non-global "
                        "one is a strict saddle (negative deflated Hessian eigenvalue, confirmed by a decrease of f); "
                        f"the constructed ones are the kind predicted; Lemma 3.1's residuals are below {IDENTITY_TOL:g} "
                        "and non-global points have null_dim >= 1; for MSE the singular-value test agrees with the "
                        "classification. Numbers: non_global_points, non_global_strict_saddles, "
                        "largest_saddle_lambda_min, lemma_3_1_holds, max_balance_error, prop_4_1_agrees.",
              experiment=lambda: _strict_saddles(ctx, land)),
        check(ctx, "gushen2024.random_starts", title="Random starts of every solver reach the global minimum at d = K",
              source=f"{SOURCE}, consequence of Theorems 1.1 and 1.2",
              statement="With no spurious local minimum and only strict saddles, gradient methods from random "
                        "initialisation reach a global minimiser at d = K.",
              criterion=f"Every start of every uncapped solver ({', '.join(x for x in s['solvers'] if x not in CAPPED)}) "
                        f"on CE, MSE and MSE without bias at d = K, {s['start_seeds']} seed(s) each, ends at a point "
                        "classified global minimiser, and gu_shen_check (nclab.ufm.landscape.survey, gd as its capped "
                        f"solver) holds. Plain gradient descent runs too, capped at {s['gd_max_iter']} iterations; its "
                        "end points' gaps are reported (capped_max_relative_gap) but do not decide. Numbers: runs, "
                        "global, gu_shen_check, capped_max_relative_gap.",
              experiment=lambda: _random_starts(ctx, land)),
    ]


TARGET = Target(
    name="gushen2024",
    title="Geometric analysis of unconstrained feature models with d = K",
    citation="S. Gu, Y. Shen. 2024 (arXiv:2407.10702).",
    run=run,
)
