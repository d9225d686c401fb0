"""UFM experiments shared by the yaras2022 and gushen2024 targets: solver runs classified, critical
points constructed and found, and their figures.

Everything here reuses the landscape tools (:mod:`nclab.ufm.landscape`): a solver's end point and
every constructed or found critical point go through :func:`nclab.ufm.landscape.classify`, whose
rules and thresholds decide "global minimiser" / "strict saddle" (REFERENCE.md sections 2 and 5);
the constructed points are :func:`nclab.ufm.landscape.spec.make_point`'s specs (``origin``,
``lowdim:D``) and the found ones :func:`nclab.ufm.landscape.find_critical_point` from random points,
and the kind the theory predicts is :func:`nclab.ufm.landscape.survey.expected_kind`.  The rows are
those of :mod:`nclab.ufm.landscape.survey` (``config``, ``d``, ``solver``, ``kind``, ``expected``,
``lambda_min``, ...), so :func:`nclab.ufm.landscape.survey.gu_shen_check` reads them directly.

Independent oracles: the closed-form optima are recomputed here from REFERENCE.md section 2
(:func:`closed_form_optimum`), not read from the problem classes, and the ETF structure of W is
measured against the Gram matrix of the closed form (:func:`gram_error`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

__all__ = [
    "closed_form_optimum",
    "gram_error",
    "solve_row",
    "critical_point_rows",
    "savefig",
    "worst",
    "finite",
    "lambda_bars",
    "identity_bounds",
    "pyplot",
]


def closed_form_optimum(config: str, K: int, n: int, **p) -> float:
    """f* of REFERENCE.md section 2, written out again (an oracle independent of the problem classes).

    * ``normalized`` (Yaras et al. 2022): log(1 + (K-1) exp(-tau K/(K-1)));
    * ``ce`` (Zhu et al. 2021), beta = sqrt(n lw lh) < 1/K: log(1 + (K-1) e^{-m}) + (K-1) beta m with
      m = log(1/beta - (K-1)); log K when beta >= 1/K;
    * ``mse`` with a free bias (lb = 0): (K-1) beta (1 - K beta/2); ``mse-nobias``:
      K beta (1 - K beta/2) (K beta < 1)."""
    if config == "normalized":
        return math.log1p((K - 1) * math.exp(-p["tau"] * K / (K - 1)))
    beta = math.sqrt(n * p["lw"] * p["lh"])
    if config == "ce":
        if beta >= 1.0 / K:
            return math.log(K)
        m = math.log(1.0 / beta - (K - 1))
        return math.log1p((K - 1) * math.exp(-m)) + (K - 1) * beta * m
    if not K * beta < 1:
        raise ValueError("the MSE closed forms here need K beta < 1")
    if config == "mse":
        return (K - 1) * beta * (1 - K * beta / 2)
    if config == "mse-nobias":
        return K * beta * (1 - K * beta / 2)
    raise ValueError(f"no closed form for {config!r}")


def gram_error(W: torch.Tensor, frame: str = "simplex") -> float:
    """max_{k,l} |G_kl/s - T_kl| for the Gram matrix G = W W^T of the K rows of W, with the target
    T = (K I - J)/(K-1) (a simplex ETF: unit rows, inner products -1/(K-1)) or T = I (an orthogonal
    frame), and s = trace(G)/K the common squared norm (scale and rotation do not matter)."""
    W = W.detach().to(torch.float64)
    K = W.shape[0]
    G = W @ W.T
    s = float(torch.trace(G)) / K
    if s <= 0:
        return math.inf
    eye = torch.eye(K, dtype=torch.float64)
    T = (K * eye - torch.ones(K, K, dtype=torch.float64)) / (K - 1) if frame == "simplex" else eye
    return float((G / s - T).abs().max())


def _classification(problem, x, seed: int) -> dict:
    """The classification's numbers; an error of the eigensolver (e.g. ARPACK not converging) is
    recorded as kind ``"classify_error"`` with the message, so one point never hides the others."""
    from nclab.ufm.landscape import classify

    try:
        c = classify(problem, x, seed=seed).as_dict()
    except Exception as exc:  # noqa: BLE001 - reported in the row, and the claim then fails
        return {"kind": "classify_error", "reason": f"{type(exc).__name__}: {exc}", "objective": problem.cost(x),
                "relative_gap_classify": None, "grad_norm": None, "lambda_min": None, "eig_threshold": None,
                "certificate_ratio": None, "certificate_holds": None, "identities": {}}
    cert = c.get("certificate") or {}
    return {
        "kind": c["kind"],
        "reason": c.get("reason"),
        "objective": c.get("objective"),
        "relative_gap_classify": c.get("relative_gap"),
        "grad_norm": c.get("grad_norm"),
        "lambda_min": c.get("lambda_min"),
        "eig_threshold": c.get("eig_threshold"),
        "certificate_ratio": cert.get("ratio"),
        "certificate_holds": cert.get("holds"),
        "identities": c.get("identities") or {},
    }


def solve_row(problem, config: str, solver: str, seed: int, *, max_iter: int | None = None,
              gtol: float | None = None, classify: bool = True) -> tuple[tuple, dict]:
    """Run ``solver`` from ``problem.random_start(seed)`` (:func:`nclab.ufm.run.run_solver`,
    ``max_iter`` None: the solver's default cap) and classify the end point.

    Returns ``(x, row)``; the row has config, d, solver, seed, converged, status, stop_reason,
    iterations, seconds, objective, relative_gap (to the solver-independent closed form of
    :func:`closed_form_optimum` where one is known), the problem's ``structure`` and, with
    ``classify``, the classification (kind, lambda_min, certificate_ratio, identities, ...)."""
    from nclab.ufm.run import run_solver

    desc = problem.describe()
    x, r = run_solver(problem, solver, seed, max_iter=max_iter, gtol=gtol, metrics_every=-1)
    params = {k: desc[k] for k in ("tau", "lw", "lh", "lb") if k in desc}
    try:
        fstar = closed_form_optimum(config, problem.K, problem.n, **params)
    except (KeyError, ValueError):
        fstar = None
    f = float(problem.cost(x))
    row = {
        "config": config, "K": problem.K, "n": problem.n, "d": problem.d, "params": params, "solver": solver,
        "seed": seed, "converged": bool(r["converged"]), "status": r["status"], "stop_reason": r["stop_reason"],
        "iterations": r["iterations"], "seconds": r["seconds"], "objective": f, "optimum": fstar,
        "relative_gap": None if fstar is None else (f - fstar) / max(abs(fstar), 1e-300),
        "structure": {k: v for k, v in r["structure"].items() if v is not None},
    }
    if classify:
        row.update(_classification(problem, x, seed))
    return x, row


def critical_point_rows(problem, config: str, *, found_starts: int, finder_max_iter: int | None = None,
                        include_origin: bool = True, progress: Callable[[str], None] | None = None) -> list[dict]:
    """The constructed critical points of ``problem`` (``origin`` for CE/MSE, every ``lowdim:D``,
    D < d: the D-dimensional minimiser embedded) and ``found_starts`` points found by
    :func:`nclab.ufm.landscape.find_critical_point` from random points, each classified.

    A row: config, d, point ("origin", "lowdim", "found"), label, d_low or seed, expected (the
    theory's kind for constructed points, :func:`nclab.ufm.landscape.survey.expected_kind`; None
    for found points, which may be any kind but a local non-global minimiser), the classification
    (kind, lambda_min, certificate_ratio, identities, ...) and, for found points, whether the finder
    converged."""
    from nclab.ufm.landscape import find_critical_point, random_point
    from nclab.ufm.landscape.spec import make_point
    from nclab.ufm.landscape.survey import expected_kind

    specs: list[tuple[str, object]] = []
    if include_origin and problem.loss in ("ce", "mse"):
        specs.append(("origin", None))
    specs += [("lowdim", D) for D in range(1, problem.d)]
    specs += [("found", s) for s in range(found_starts)]
    rows = []
    for kind, arg in specs:
        t0 = time.perf_counter()
        row: dict = {"config": config, "K": problem.K, "n": problem.n, "d": problem.d, "point": kind}
        if kind == "found":
            opts = {} if finder_max_iter is None else {"max_iter": finder_max_iter}
            x, info = find_critical_point(problem, random_point(problem, 1000 + int(arg)), **opts)
            row.update(seed=1000 + int(arg), label=f"found (start {1000 + int(arg)})",
                       finder_converged=bool(info["converged"]), finder_iterations=info["iterations"])
        else:
            spec = "origin" if kind == "origin" else f"lowdim:{arg}"
            x, _ = make_point(problem, spec, seed=0)
            row["label"] = spec
            if kind == "lowdim":
                row["d_low"] = int(arg)
        row.update(_classification(problem, x, 0))
        row["identity_bounds"] = identity_bounds(problem, x)
        row["expected"] = expected_kind(config, kind, problem.K, problem.d, arg if kind == "lowdim" else None)
        row["matches"] = None if row["expected"] is None else row["kind"] == row["expected"]
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        if progress is not None:
            progress(f"  {config} d={problem.d} {row['label']}: {row['kind']}")
    return rows


#: Singular values of W below NULL_RTOL max(|x|, 1) count as zero in ``null_dim_abs``.
NULL_RTOL = 1e-6


def identity_bounds(problem, x) -> dict:
    """How far Lemma 3.1's identities may be from exact at an inexact critical point, from its
    Euclidean gradient (gW, gH): exactly, ``lw W^T W - lh H^T H = W^T gW - gH^T H`` (both sides
    minus W^T G^T H), so ``balance_error <= (|W| |gW| + |H| |gH|) / (lw |W|^2 + lh |H|^2)``; for CE
    (G 1 = 0) ``1^T W = 1^T gW / lw``, so ``ones_error <= sqrt(K) |gW| / (lw |W|)``.  Empty for the
    problems on spheres (no penalties)."""
    if not hasattr(problem, "lw"):
        return {}
    g = problem.egrad(x)
    W, H = x[0].detach(), x[1].detach()
    gW, gH = g[0].detach(), g[1].detach()
    den = problem.lw * float((W * W).sum()) + problem.lh * float((H * H).sum())
    out = {"balance": (float(W.norm()) * float(gW.norm()) + float(H.norm()) * float(gH.norm())) / den
           if den > 0 else 0.0}
    if problem.loss == "ce":
        wn = float(W.norm())
        out["ones"] = math.sqrt(problem.K) * float(gW.norm()) / (problem.lw * wn) if wn > 0 else 0.0
    # rank of W with an absolute cut-off on the problem's scale (a point near the origin, critical
    # to the relative test, has a tiny W of numerically full rank: its directions are all null)
    sv = torch.linalg.svdvals(W)
    cut = NULL_RTOL * max(math.sqrt(float((W * W).sum() + (H * H).sum())), 1.0)
    out["null_dim_abs"] = problem.d - int((sv > cut).sum())
    return out


def worst(values) -> float | None:
    """The largest of the finite values (inf if any is not finite; None for none)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return max(v if math.isfinite(v) else math.inf for v in vals)


def pyplot():
    """matplotlib.pyplot with the file-only Agg backend (figures are written, never shown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def savefig(fig, out: Path, name: str) -> str:
    """Save a matplotlib figure as ``out/name`` (PNG) and close it; returns the path relative to out."""
    plt = pyplot()
    path = Path(out) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return name


def finite(v) -> float | None:
    """A JSON-safe float (None for None, nan and inf kept as None)."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def lambda_bars(ax, rows: list[dict]) -> None:
    """A bar per point: lambda_min (symlog), coloured by kind."""
    colours = {"strict_saddle": "tab:red", "global_minimiser": "tab:green"}
    lam = [r["lambda_min"] if r["lambda_min"] is not None else np.nan for r in rows]
    ax.bar(range(len(rows)), lam, color=[colours.get(r["kind"], "tab:gray") for r in rows])
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"{r['config']} d={r['d']}\n{r['label']}" for r in rows], rotation=70, fontsize=6)
    small = min((abs(v) for v in lam if v == v and v != 0), default=1e-12)
    ax.set_yscale("symlog", linthresh=max(small, 1e-12))
    ax.axhline(0.0, color="k", lw=0.6)
    ax.set_ylabel("smallest Riemannian Hessian eigenvalue\n(symmetry orbit deflated)")
