"""zhu2021 claim (c): the benign landscape of the CE UFM.

Zhu et al. 2021, Theorem 3.2 (REFERENCE.md sections 2 and 5): for d > K every critical point of the
CE UFM is a global minimiser or a strict saddle (d = K: Gu & Shen 2024); their Lemma C.4 certifies
a critical point as global iff sigma_1(grad_Z L) <= sqrt(lw lh), and where it fails the null
direction built from the top singular pair has negative curvature
``2 sqrt(lw lh)(sqrt(lw lh) - sigma_1)/(lw + lh)``.  Three pieces of evidence, all from
:mod:`nclab.ufm.landscape`:

* constructed critical points (the origin W = H = 0 and every ``lowdim:D``, D < d) and critical
  points found from random starts by Levenberg-Marquardt on grad f = 0
  (:func:`~nclab.ufm.landscape.find_critical_point`), each classified
  (:func:`~nclab.ufm.landscape.classify`: certificate, deflated Hessian, confirmed decrease) and
  compared with :func:`nclab.ufm.landscape.survey.expected_kind`;
* the certificate against the classification at every critical point, and the null direction's
  predicted curvature against the Hessian's;
* every solver of :data:`nclab.ufm.optim.SOLVERS` (plain heavy-ball GD included, uncapped unless
  the context caps it) from random starts, each end point classified.
"""

from __future__ import annotations

import math

import numpy as np

from nclab.reproduce._zhu_common import PAPER, finite, max_iter, new_figure, save_figure, save_json, seeds
from nclab.reproduce.claims import Claim, Context, Evidence, Table, check
from nclab.ufm.diagnostics import hessian_spectrum
from nclab.ufm.landscape import classify, find_critical_point, lowdim_point, origin, random_point
from nclab.ufm.landscape.survey import expected_kind
from nclab.ufm.optim import SOLVERS
from nclab.ufm.problems import make_problem
from nclab.ufm.run import run_solver

#: Predicted and measured null-direction curvatures must agree to this relative error.
CURVATURE_RTOL = 1e-6
#: An end point with positive curvature that the classifier does not call global is polished by
#: L-BFGS to this relative gradient and classified again (see :func:`_random_starts`).
POLISH_GTOL = 1e-13
#: ... and the polished point's objective must equal the end point's to this relative change.
POLISH_RTOL = 1e-12


def _setting(ctx: Context) -> dict:
    return ctx.pick(
        {"K": 3, "n": 2, "lambdas": [[5e-2, 5e-2]], "dims": ["K+1"], "seeds": 1, "found": 1},
        {"K": 4, "n": 3, "lambdas": [[4e-2, 4e-2]], "dims": ["K", "K+1", "2K"], "seeds": 2, "found": 2},
        {"K": 4, "n": 5, "lambdas": [[5e-3, 5e-3], [4e-2, 4e-2]], "dims": ["K", "K+1", "2K"], "seeds": 5,
         "found": 3},
    )


def _dim(spec: str, K: int) -> int:
    return {"K-1": K - 1, "K": K, "K+1": K + 1, "2K": 2 * K}[spec]


def _row(c) -> dict:
    cert = c.certificate or {}
    return {"kind": c.kind, "objective": c.objective, "relative_gap": finite(c.relative_gap),
            "grad_norm": c.grad_norm, "lambda_min": finite(c.lambda_min), "eig_threshold": finite(c.eig_threshold),
            "certificate_ratio": finite(cert.get("ratio")), "certificate_holds": cert.get("holds"),
            "direction_curvature": c.direction_curvature, "reason": c.reason}


def _critical_points(ctx, s, problem, d, params, cap) -> list[dict]:
    K = s["K"]
    jobs = [("origin", None)] + [("lowdim", D) for D in range(1, d)] + [("found", sd) for sd in seeds(ctx, s["found"])]
    out = []
    for kind, arg in jobs:
        if kind == "origin":
            x, label = origin(problem), "origin"
        elif kind == "lowdim":
            x, label = lowdim_point(problem, arg, seed=ctx.seed), f"lowdim:{arg}"
        else:
            opts = {} if cap is None else {"max_iter": cap}
            x, _ = find_critical_point(problem, random_point(problem, arg), **opts)
            label = f"found (seed {arg})"
        row = {"d": d, "params": params, "point": kind, "label": label, **_row(classify(problem, x, seed=0))}
        row["expected"] = expected_kind("ce", kind, K, d, arg if kind == "lowdim" else None)
        out.append(row)
        ctx.say(f"  d={d} {label}: {row['kind']}")
    return out


def _random_starts(ctx, s, problem, d, params, cap) -> list[dict]:
    out = []
    for solver in SOLVERS:
        for seed in seeds(ctx, s["seeds"]):
            x, r = run_solver(problem, solver, seed, max_iter=cap, metrics_every=-1)
            row = {"d": d, "params": params, "solver": solver, "seed": seed, "status": r["status"],
                   "stop_reason": r["stop_reason"], "iterations": r["iterations"],
                   "solver_relative_gap": finite(r["relative_gap"]), **_row(classify(problem, x, seed=seed))}
            row["global"] = row["kind"] == "global_minimiser"
            lam, thr = row["lambda_min"], row["eig_threshold"]
            if not row["global"] and lam is not None and thr is not None and lam > thr:
                # A minimum the certificate did not certify: at the solvers' gtol = 1e-8 the certificate's
                # tolerance (about the relative gradient) can be missed by a hair at a point already at f*.
                # A non-degenerate minimum is a basin of L-BFGS: polishing stays in it, so a spurious
                # minimum stays non-global, while an inexact global one becomes certifiable.
                y, r2 = run_solver(problem, "lbfgs", seed, x0=x, gtol=POLISH_GTOL, max_iter=cap, metrics_every=-1)
                c2 = classify(problem, y, seed=seed)
                change = abs(r2["objective"] - r["objective"]) / max(abs(r["objective"]), 1e-300)
                row["polished"] = {"kind": c2.kind, "objective_change": change,
                                   "certificate_ratio": (c2.certificate or {}).get("ratio")}
                row["global"] = c2.kind == "global_minimiser" and change <= POLISH_RTOL
            out.append(row)
            ctx.say(f"  d={d} {solver} seed {seed}: {r['iterations']} its, {row['kind']}")
    return out


def _curvature_ok(row) -> bool | None:
    dc = row["direction_curvature"]
    if not dc:
        return None
    p, m = dc["predicted_curvature"], dc["measured_curvature"]
    return p < 0 and abs(p - m) <= CURVATURE_RTOL * abs(p)


def landscape(ctx: Context) -> Evidence:
    s = _setting(ctx)
    K, n = s["K"], s["n"]
    cap = max_iter(ctx)
    points, starts = [], []
    for lw, lh in s["lambdas"]:
        for spec in s["dims"]:
            d = _dim(spec, K)
            p = make_problem("ce", K=K, n=n, d=d, lw=lw, lh=lh)
            params = {"lw": lw, "lh": lh}
            points += _critical_points(ctx, s, p, d, params, cap)
            starts += _random_starts(ctx, s, p, d, params, cap)
    constructed = [q for q in points if q["point"] != "found"]
    found = [q for q in points if q["point"] == "found"]
    critical = [q for q in points + starts if q["kind"] in ("global_minimiser", "strict_saddle")]
    mismatched = [q["label"] + f" (d={q['d']}): {q['kind']}, expected {q['expected']}" for q in constructed
                  if q["kind"] != q["expected"]]
    bad_found = [q for q in found if q["kind"] not in ("global_minimiser", "strict_saddle", "not_critical")]
    unfound = [q for q in found if q["kind"] == "not_critical"]
    cert_disagree = [q for q in critical if q["certificate_holds"] != (q["kind"] == "global_minimiser")]
    curv = [(q, _curvature_ok(q)) for q in points if q["kind"] == "strict_saddle"]
    curv_checked = [ok for _, ok in curv if ok is not None]
    curv_bad = sum(not ok for ok in curv_checked)
    not_global = [f"{q['solver']} d={q['d']} seed {q['seed']}: {q['kind']}" for q in starts if not q["global"]]
    polished = [f"{q['solver']} d={q['d']} seed {q['seed']}: {q['kind']} -> {q['polished']['kind']}"
                for q in starts if "polished" in q]
    spurious = sum(q["kind"] == "local_non_global_minimiser" for q in points + starts)
    passed = (not mismatched and not bad_found and not cert_disagree and curv_bad == 0 and not not_global
              and len(found) > len(unfound))
    figure = _figure(ctx, s, points)
    save_json(ctx, "landscape.json", {"setting": s, "critical_points": points, "random_starts": starts})
    by_solver = {sv: f"{sum(q['global'] for q in starts if q['solver'] == sv)}/"
                     f"{sum(q['solver'] == sv for q in starts)}" for sv in SOLVERS}
    gd_its = [q["iterations"] for q in starts if q["solver"] == "gd"]
    saddles = [q for q in points if q["kind"] == "strict_saddle"]
    summary = (f"CE UFM, K={K}, n={n}, d in {[_dim(d, K) for d in s['dims']]}: {len(constructed)} constructed "
               f"critical points, {len(constructed) - len(mismatched)} classified as predicted; {len(found)} found "
               f"from random starts ({len(unfound)} not converged) are {sorted({q['kind'] for q in found})}; the "
               f"certificate agrees with the classification at {len(critical) - len(cert_disagree)}/{len(critical)} "
               f"critical points and the null direction's curvature matches the Hessian at "
               f"{len(curv_checked) - curv_bad}/{len(curv_checked)} saddles; random starts reaching the global "
               f"minimum per solver: {by_solver} (GD: up to {max(gd_its, default=0)} iterations); "
               f"{spurious} classified local non-global minima"
               + (f" (polished to a relative gradient {POLISH_GTOL:g} and classified again: {'; '.join(polished)})"
                  if polished else "") + ".")
    numbers = {"starts_global": f"{len(starts) - len(not_global)}/{len(starts)}", "K": K, "n": n,
               "dims": [_dim(d, K) for d in s["dims"]], "lambdas": s["lambdas"], "max_iter": cap,
               "constructed": len(constructed), "constructed_mismatches": mismatched, "found": len(found),
               "found_not_converged": len(unfound), "found_kinds": sorted({q["kind"] for q in found}),
               "critical_points": len(critical), "certificate_disagreements": len(cert_disagree),
               "saddles": len(saddles),
               "largest_saddle_lambda_min": max((q["lambda_min"] for q in saddles), default=None),
               "curvature_checked": len(curv_checked), "curvature_mismatches": curv_bad,
               "curvature_rtol": CURVATURE_RTOL, "random_starts": len(starts),
               "random_starts_global": len(starts) - len(not_global), "random_starts_failed": not_global,
               "polished": polished,
               "global_by_solver": by_solver, "gd_max_iterations": max(gd_its, default=None),
               "spurious_local_minima": spurious, "results_file": "landscape.json"}
    rows = [[q["d"], q["label"], q["kind"], q["expected"] or "-", f"{q['certificate_ratio']:.6f}"
             if q["certificate_ratio"] is not None else "-",
             f"{q['lambda_min']:.2e}" if q["lambda_min"] is not None else "-"] for q in points]
    srows = [[q["d"], q["solver"], q["seed"], q["iterations"], q["stop_reason"][:30], q["kind"],
              f"{q['certificate_ratio']:.6f}" if q["certificate_ratio"] is not None else "-"] for q in starts]
    tables = [Table("Critical points (constructed and found)", ["d", "point", "kind", "expected",
                                                                "sigma_1/sqrt(lw lh)", "lambda_min"], rows),
              Table("Random starts of every solver", ["d", "solver", "seed", "iters", "stop", "end point",
                                                      "sigma_1/sqrt(lw lh)"], srows)]
    return Evidence(passed=passed, summary=summary, numbers=numbers, tables=tables, figures=[figure])


def _figure(ctx: Context, s: dict, points: list[dict]):
    K, n = s["K"], s["n"]
    lw, lh = s["lambdas"][0]
    d = _dim(s["dims"][-1], K)
    p = make_problem("ce", K=K, n=n, d=min(d, K + 1), lw=lw, lh=lh)
    saddle = hessian_spectrum(p, lowdim_point(p, 1, seed=ctx.seed), deflate=True)
    minimum = hessian_spectrum(p, p.optimal_point(seed=ctx.seed), deflate=True)
    fig, (ax1, ax2) = new_figure(2)
    ax1.plot(np.arange(saddle.size), saddle, ".", color="C3", label="saddle lowdim:1")
    ax1.plot(np.arange(minimum.size), minimum, ".", color="C0", label="global minimiser")
    ax1.axhline(0, color="gray", lw=0.8)
    ax1.set_yscale("symlog", linthresh=1e-4)
    ax1.set_xlabel("eigenvalue index (ascending)")
    ax1.set_ylabel("Hessian eigenvalue (orbit deflated)")
    ax1.set_title(f"Spectra, K={K}, n={n}, d={p.d}")
    ax1.legend(fontsize=8)
    colors = {"global_minimiser": "C0", "strict_saddle": "C3"}
    crit = [q for q in points if q["certificate_ratio"] is not None]
    for kind in sorted({q["kind"] for q in crit}):
        qs = [i for i, q in enumerate(crit) if q["kind"] == kind]
        ax2.plot(qs, [crit[i]["certificate_ratio"] for i in qs], "o", color=colors.get(kind, "C7"),
                 label=kind.replace("_", " "))
    ax2.axhline(1.0, ls="--", color="gray", label="sigma_1 = sqrt(lw lh)")
    ax2.set_yscale("log")
    ax2.set_xlabel("critical point (constructed, then found; per d)")
    ax2.set_ylabel("certificate sigma_1(grad_Z L) / sqrt(lw lh)")
    ax2.set_title("Lemma C.4: global iff ratio <= 1")
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    return save_figure(ctx, fig, "landscape.png",
                       "Left: deflated Hessian spectra at a strict saddle (the 1-dimensional minimiser embedded) "
                       "and at a global minimiser. Right: Zhu et al.'s certificate at every constructed and found "
                       "critical point, coloured by the classification.")


def claim_landscape(ctx: Context) -> Claim:
    return check(
        ctx, "zhu2021.benign_landscape",
        title="Benign landscape: strict saddles only, and every solver finds the global minimum",
        source=f"{PAPER}, Theorem 3.2 and Lemma C.4 (d = K: Gu & Shen 2024)",
        statement=("For d > K (and d = K) every critical point of the CE UFM is a global minimiser or a strict "
                   "saddle with a direction of negative curvature; a critical point is global iff "
                   "sigma_1(grad_Z L) <= sqrt(lw lh), and otherwise the direction built from the top singular "
                   "pair and a null vector of W curves down. Hence first-order methods from random starts reach "
                   "the global minimum."),
        criterion=("Every constructed critical point (origin, lowdim:D) is classified as the theory predicts "
                   "(strict saddle for D < K-1, global for D >= K-1); every critical point found by "
                   "Levenberg-Marquardt from random starts is a strict saddle or a global minimiser (none "
                   "local non-global or inconclusive; non-converged finds are reported); the certificate holds "
                   "exactly at the points classified global; at every strict saddle with a null direction the "
                   f"predicted curvature is negative and equals the Hessian's to {CURVATURE_RTOL:g} relative; and "
                   "every random start of every solver (lbfgs, gd, rgd, rcg, rtr) ends at a point classified "
                   "global minimiser; an end point with positive curvature (a minimum) that is not certified is "
                   f"polished by L-BFGS to a relative gradient {POLISH_GTOL:g} and counts as global only if it is "
                   f"then classified global with its objective unchanged to {POLISH_RTOL:g} (a non-degenerate "
                   "minimum keeps its basin, so a spurious one would stay non-global)."),
        experiment=lambda: landscape(ctx),
    )
