"""zhu2021 claim (d): the CE UFM with non-negative features (H >= 0, as after a ReLU).

Zhu et al. 2021 (REFERENCE.md section 5) state that with non-negative features the ETF structure
persists, up to a shift absorbed by the bias.  Here the CE UFM
``f(W,H,b) = (1/N) sum CE(W h + b, k) + lw/2 |W|^2 + lh/2 |H|^2`` (free bias, lb = 0) is minimised over
``H >= 0`` entrywise with a bound-constrained method: SciPy's L-BFGS-B on the problem's own cost
and gradient (:class:`nclab.ufm.problems.CEProblem`, float64), bounds [0, inf) on H's entries only.
What the minimisers are is then measured, not assumed.

What the structure would imply (derived here, and tested by the experiment).  If the features
collapse and their centred class means x_k = mu_k - mu_G form a simplex ETF of norm r, non-negative
vectors have non-negative inner products, so for k != l
``0 <= <x_k + mu_G, x_l + mu_G> = -r^2/(K-1) + <x_k + x_l, mu_G> + |mu_G|^2``; summing over the
K(K-1) ordered pairs (sum_k x_k = 0) gives ``|mu_G|^2 >= r^2/(K-1)``, with equality iff the
uncentred means are pairwise orthogonal (an orthogonal frame, d >= K).  The feature penalty is
``lh/2 n sum_k |mu_k|^2 = lh/2 n K/(K-1) sum_k |x_k|^2`` at that shift, so the problem becomes the
unconstrained CE UFM with lh replaced by lh K/(K-1): value f*(beta'), beta' = sqrt(n lw lh K/(K-1)),
W a simplex ETF aligned with the centred means, and W mu_G = 0 (the shift is invisible to the logits,
so the bias stays b* 1).  The experiment compares the solver's value with f*(beta') and measures
the orthogonality of the uncentred means and the shift ratio |mu_G|^2 / r^2 (1/(K-1) predicted).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from nclab.geometry import etf_gram_error
from nclab.reproduce._zhu_common import PAPER, finite, max_iter, new_figure, save_figure, save_json, seeds, worst
from nclab.reproduce.claims import Claim, Context, Evidence, Table, check
from nclab.ufm.problems import make_problem

__all__ = ["solve_nonnegative", "projected_gradient", "nonnegative_structure", "claim_nonnegative"]

#: Tolerance of every structure measure (etf_W, nc1, nc2_etf_means, nc3, bias_collapse, ...).
STRUCTURE_TOL = 1e-4
#: Relative gap to f*(beta') a run must reach.
GAP_TOL = 1e-6
#: Relative projected gradient (|PG| max(|x|, 1) / |f|) a run must reach (first-order KKT point).
KKT_TOL = 1e-6
#: The structure measures the verdict reads.
JUDGED = ("etf_W", "nc1", "nc2_etf_means", "nc3", "bias_collapse", "means_orthogonality_error", "shift_ratio_error")


def _split(problem, z: np.ndarray) -> tuple:
    """The point (W, H, b) of ``problem`` viewing the flat float64 vector ``z``."""
    K, N, d = problem.K, problem.N, problem.d
    t = torch.from_numpy(z)
    W = t[: K * d].view(K, d)
    H = t[K * d: K * d + N * d].view(N, d)
    return (W, H, t[K * d + N * d:]) if problem.has_bias else (W, H)


def projected_gradient(problem, x) -> tuple:
    """The projected gradient of f on {H >= 0}: ``x - P(x - grad f(x))`` with P the projection
    (H entries clipped at 0; W and b free).  Zero exactly at a first-order KKT point: there the
    gradient vanishes on W, b and the free entries of H, and is >= 0 on the entries with H = 0."""
    g = problem.egrad(x)
    H = x[1]
    out = [g[0].clone(), H - torch.clamp(H - g[1], min=0.0)]
    if len(x) > 2:
        out.append(g[2].clone())
    return tuple(out)


def _norm(x) -> float:
    return math.sqrt(sum(float((t * t).sum()) for t in x))


def solve_nonnegative(problem, x0, *, max_iter: int | None = None, ftol: float = 1e-15, pgtol: float = 1e-12,
                      memory: int = 20) -> tuple[tuple, dict]:
    """Minimise ``problem`` (a CE or MSE UFM with W, H[, b]) over H >= 0 with SciPy's L-BFGS-B.

    ``x0``'s H is projected onto H >= 0 (absolute values) first.  ``max_iter`` caps the
    iterations (None: 20000); ``ftol``, ``pgtol`` and ``memory`` are L-BFGS-B's ``ftol``, ``gtol`` and
    ``maxcor``.  Returns ``(x, info)``: x a tuple of float64 tensors with H >= 0 exactly, info with
    ``objective``, ``iterations``, ``evaluations``, ``message``, ``success`` (SciPy's) and
    ``relative_projected_gradient`` = |PG| max(|x|, 1) / |f| (:func:`projected_gradient`)."""
    from scipy.optimize import minimize

    x0 = tuple(t.detach().clone() for t in x0)
    x0 = (x0[0], x0[1].abs(), *x0[2:])
    z0 = torch.cat([t.reshape(-1) for t in x0]).numpy().astype(np.float64)
    nW, nH = x0[0].numel(), x0[1].numel()
    bounds = [(None, None)] * nW + [(0.0, None)] * nH + [(None, None)] * (z0.size - nW - nH)

    def fun(z):
        f, g = problem.cost_and_egrad(_split(problem, z))
        return f, torch.cat([t.reshape(-1) for t in g]).numpy().copy()

    cap = 20000 if max_iter is None else int(max_iter)
    res = minimize(fun, z0, jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": cap, "maxfun": 2 * cap + 10, "ftol": ftol, "gtol": pgtol, "maxcor": memory})
    z = np.array(res.x, dtype=np.float64)
    z[nW: nW + nH] = np.maximum(z[nW: nW + nH], 0.0)
    x = tuple(t.clone() for t in _split(problem, z))
    f = problem.cost(x)
    pg = _norm(projected_gradient(problem, x))
    info = {"objective": f, "iterations": int(res.nit), "evaluations": int(res.nfev), "message": str(res.message),
            "success": bool(res.success), "projected_gradient": pg,
            "relative_projected_gradient": pg * max(_norm(x), 1.0) / max(abs(f), 1e-300)}
    return x, info


def nonnegative_structure(problem, x) -> dict:
    """What a minimiser over H >= 0 looks like (module docstring), all JSON-ready floats:

    ``etf_W`` (:func:`nclab.geometry.etf_gram_error` of W); the NC metrics nc1, nc2_etf_means
    (centred means vs a simplex ETF), nc3 (W vs centred means), nc3_duality_gram, bias_collapse
    (REFERENCE.md section 3); ``means_orthogonality_error`` = |G/|G|_F - I/sqrt(K)|_F with G the Gram
    of the uncentred class means; ``shift_ratio`` = |mu_G|^2 / mean_k |mu_k - mu_G|^2 and its error
    against 1/(K-1); ``logit_shift`` = |(I - J/K) W mu_G| / (|W|_F |mu_G|) (the part of the shift
    the bias would have to absorb); ``bias_spread`` = std(b) / (1 + mean |b|); ``min_H`` and
    ``active_fraction`` (entries of H at 0); ``zero_feature_classes``: classes whose features are all
    0 (|mu_k| <= 1e-8 max_l |mu_l|), told apart by the bias alone."""
    W, H = x[0].detach(), x[1].detach()
    K = problem.K
    m = problem.metrics(x)
    labels = problem.labels
    mu = torch.stack([H[labels == k].mean(0) for k in range(K)])
    mu_G = mu.mean(0)
    G = mu @ mu.T
    ortho = float((G / G.norm() - torch.eye(K, dtype=G.dtype) / math.sqrt(K)).norm())
    r2 = float(((mu - mu_G) ** 2).sum(1).mean())
    shift = float(mu_G @ mu_G) / r2 if r2 > 0 else math.inf
    off = W @ mu_G
    off = off - off.mean()
    den = float(W.norm()) * float(mu_G.norm())
    out = {"etf_W": etf_gram_error(W), "means_orthogonality_error": ortho, "shift_ratio": shift,
           "shift_ratio_error": abs(shift * (K - 1) - 1.0), "logit_shift": float(off.norm()) / den if den > 0 else 0.0,
           "min_H": float(H.min()), "active_fraction": float((H == 0).double().mean()),
           "zero_feature_classes": int((mu.norm(dim=1) <= 1e-8 * float(mu.norm(dim=1).max())).sum())}
    for k in ("nc1", "nc2_etf_means", "nc3", "nc3_duality_gram", "bias_collapse"):
        out[k] = finite(m.get(k))
    if len(x) > 2:
        b = x[2].detach()
        out["bias_spread"] = float(b.std(unbiased=False)) / (1.0 + float(b.abs().mean()))
    return out


def _setting(ctx: Context) -> dict:
    K, n = ctx.pick((3, 2), (4, 5), (10, 10))
    return {"K": K, "n": n, "lw": 5e-3, "lh": 5e-3, "dims": [K, 2 * K], "seeds": seeds(ctx, ctx.pick(2, 3, 5))}


def nonnegative(ctx: Context) -> Evidence:
    s = _setting(ctx)
    K, n, lw, lh = s["K"], s["n"], s["lw"], s["lh"]
    cap = max_iter(ctx)
    runs, rows, points = [], [], []
    shifted = make_problem("ce", K=K, n=n, d=K, lw=lw, lh=lh * K / (K - 1))  # the derived reduced problem
    f_pred = shifted.optimum
    f_free = make_problem("ce", K=K, n=n, d=K, lw=lw, lh=lh).optimum
    for d in s["dims"]:
        for seed in s["seeds"]:
            p = make_problem("ce", K=K, n=n, d=d, lw=lw, lh=lh, bias=True, lb=0.0)
            x, info = solve_nonnegative(p, p.random_start(seed), max_iter=cap)
            st = nonnegative_structure(p, x)
            gap = (info["objective"] - f_pred) / abs(f_pred)
            run = {"d": d, "seed": seed, **info, "relative_gap_to_derived": gap, "structure": st,
                   "max_structure_error": worst(st[k] for k in JUDGED)}
            runs.append(run)
            points.append((p, x))
            rows.append([d, seed, info["iterations"], f"{gap:.1e}", f"{info['relative_projected_gradient']:.1e}",
                         f"{st['etf_W']:.1e}", f"{st['nc2_etf_means']:.1e}", f"{st['nc1']:.1e}", f"{st['nc3']:.1e}",
                         f"{st['means_orthogonality_error']:.1e}", f"{st['shift_ratio']:.3f}",
                         f"{st['bias_spread']:.1e}"])
            ctx.say(f"  d={d} seed={seed}: {info['iterations']} its, gap to f*(beta') {gap:.1e}, "
                    f"etf_W {st['etf_W']:.1e}")
    for r in runs:
        r["at_optimum"] = abs(r["relative_gap_to_derived"]) <= GAP_TOL
    shown = [pt for r, pt in zip(runs, points) if r["at_optimum"]] or points
    figure = _figure(ctx, *shown[-1])
    best = [r for r in runs if r["at_optimum"]]
    other = [r for r in runs if not r["at_optimum"]]
    min_gap = min(r["relative_gap_to_derived"] for r in runs)
    max_kkt = worst(r["relative_projected_gradient"] for r in runs)
    max_struct = worst(r["max_structure_error"] for r in best) if best else math.inf
    min_H = min(r["structure"]["min_H"] for r in runs)
    dims_reached = sorted({r["d"] for r in best})
    per = {k: finite(worst(r["structure"][k] for r in best)) if best else None
           for k in (*JUDGED, "bias_spread", "logit_shift", "nc3_duality_gram")}
    passed = (max_kkt <= KKT_TOL and min_gap >= -GAP_TOL and dims_reached == sorted(s["dims"])
              and max_struct <= STRUCTURE_TOL and min_H >= 0)
    save_json(ctx, "nonnegative_features.json", {"setting": s, "derived_optimum": f_pred, "runs": runs})

    def fmt(v):
        return "n/a" if v is None else f"{v:.1e}"

    summary = (f"L-BFGS-B with H >= 0, {len(runs)} runs (K={K}, n={n}, d in {s['dims']}, seeds {s['seeds']}), "
               f"all first-order KKT points to {max_kkt:.1e} (relative projected gradient); {len(best)} end at "
               f"f*(beta') = {f_pred:.6g} (unconstrained f* = {f_free:.6g}; no run lower: smallest relative gap "
               f"{min_gap:.1e}), and there W is a simplex ETF to {fmt(per['etf_W'])}, the centred class means an "
               f"ETF to {fmt(per['nc2_etf_means'])}, nc1 {fmt(per['nc1'])}, nc3 {fmt(per['nc3'])}; the uncentred "
               f"means are orthogonal to {fmt(per['means_orthogonality_error'])} and |mu_G|^2/r^2 = 1/(K-1) to "
               f"{fmt(per['shift_ratio_error'])}: the ETF persists, shifted by the smallest mean that keeps H >= 0, "
               f"with W mu_G = 0 (to {fmt(per['logit_shift'])}), so the bias stays collapsed (spread "
               f"{fmt(per['bias_spread'])}) and has nothing to absorb.")
    if other:
        summary += (f" {len(other)} run(s) (d, seed = {[(r['d'], r['seed']) for r in other]}) stopped at "
                    f"non-global KKT points, {min(r['relative_gap_to_derived'] for r in other):.1e} or more above "
                    f"f*(beta'), with {[r['structure']['zero_feature_classes'] for r in other]} class(es) whose "
                    "features are all zero (told apart by the bias alone): unlike the unconstrained UFM, the "
                    "constraint H >= 0 leaves spurious first-order points.")
    numbers = {"max_structure_error": finite(max_struct), "K": K, "n": n, "lw": lw, "lh": lh, "dims": s["dims"],
               "seeds": s["seeds"], "max_iter": cap,
               "solver": "scipy L-BFGS-B (bounds H >= 0)", "derived_optimum": f_pred, "unconstrained_optimum": f_free,
               "beta": math.sqrt(n * lw * lh), "beta_prime": shifted.beta, "runs": len(runs),
               "runs_at_optimum": len(best), "dims_reaching_optimum": dims_reached,
               "non_global_kkt_points": [{"d": r["d"], "seed": r["seed"], "relative_gap": r["relative_gap_to_derived"],
                                          "zero_feature_classes": r["structure"]["zero_feature_classes"]}
                                         for r in other],
               "min_relative_gap": finite(min_gap), "max_relative_projected_gradient": finite(max_kkt), "min_H": min_H,
               "worst_at_optimum": per, "structure_tol": STRUCTURE_TOL,
               "gap_tol": GAP_TOL, "kkt_tol": KKT_TOL, "results_file": "nonnegative_features.json"}
    table = Table("Non-negative features: L-BFGS-B end points",
                  ["d", "seed", "iters", "gap f*(b')", "rel. PG", "etf_W", "ETF means", "nc1", "nc3", "orth. means",
                   "shift", "bias spr."], rows)
    return Evidence(passed=passed, summary=summary, numbers=numbers, tables=[table], figures=[figure])


def _figure(ctx: Context, problem, x):
    """Gram matrices at a minimiser over H >= 0: W W^T, the uncentred and the centred class means."""
    W, H = x[0].detach(), x[1].detach()
    K = problem.K
    mu = torch.stack([H[problem.labels == k].mean(0) for k in range(K)])
    mc = mu - mu.mean(0)
    fig, axes = new_figure(3, width=3.6, height=3.4)
    for ax, (M, name) in zip(axes, ((W @ W.T, "W W^T (classifier)"), (mu @ mu.T, "class means mu_k (uncentred)"),
                                    (mc @ mc.T, "centred means mu_k - mu_G"))):
        G = (M / M.abs().max()).numpy()
        im = ax.imshow(G, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("class l")
        ax.set_ylabel("class k")
        ax.set_xticks(range(K))
        ax.set_yticks(range(K))
    fig.colorbar(im, ax=axes, shrink=0.8, label="Gram entry / max |entry|")
    return save_figure(ctx, fig, "nonnegative_features.png",
                       f"A minimiser over H >= 0 (K={K}, d={problem.d}): W is a simplex ETF (off-diagonal "
                       "-1/(K-1)), the uncentred class means are orthogonal (diagonal Gram) and the centred means "
                       "are a simplex ETF.")


def claim_nonnegative(ctx: Context) -> Claim:
    return check(
        ctx, "zhu2021.nonnegative_features",
        title="Non-negative features: the ETF persists up to a shift",
        source=f"{PAPER}, discussion of Theorem 3.1 (features after a ReLU)",
        statement=("When the features are constrained to be non-negative (H >= 0, as after a ReLU) the "
                   "global minimisers keep the simplex-ETF structure, up to a shift of the features absorbed "
                   "by the bias."),
        criterion=(f"Minimise the CE UFM over H >= 0 with L-BFGS-B (d in {{K, 2K}}, several seeds) to a relative "
                   f"projected gradient <= {KKT_TOL:g} (every run a first-order KKT point, H >= 0); no run may end "
                   f"below f*(beta') (defined below) by more than {GAP_TOL:g} relative, for every d some run must "
                   f"reach it, and every run that reaches it must have W a simplex ETF, "
                   f"collapsed features (nc1), centred class means a simplex ETF aligned with W (nc2_etf_means, "
                   f"nc3), a collapsed bias (bias_collapse), uncentred means an orthogonal frame with "
                   f"|mu_G|^2/r^2 = 1/(K-1) (the smallest shift that keeps H >= 0), each to {STRUCTURE_TOL:g}; "
                   f"f*(beta') is the value this structure implies, the CE optimum with "
                   f"beta' = sqrt(n lw lh K/(K-1)).  Runs ending higher are reported (non-global KKT points)."),
        experiment=lambda: nonnegative(ctx),
    )
