"""Points to analyse: the origin, embedded lower-dimensional minimisers, critical points of any
index, random points.

This module owns where the landscape tools' points come from.

* :func:`origin`: the critical point W = H = 0 of the CE and MSE UFMs with its optimal bias
  (REFERENCE.md section 2); a strict saddle exactly when beta < 1/K.
* :func:`lowdim_point`: a minimiser of the same problem with feature dimension d' < d, embedded by
  zero padding, ``W = [W' 0]``, ``H = [H' 0]`` (on the oblique manifold: zero-padded unit rows, a
  great sub-sphere).  It is a critical point of the full problem: the logits Z = H W^T are
  unchanged, and every gradient block ``G^T H + lw W`` / ``G W + lh H`` (projected onto the tangent
  space of the spheres) has zero padded columns and the d' first columns of the small problem's
  gradient.  For d' < K-1 it is not a global minimiser (the optimum needs rank K-1; Zhu et al.
  2021, Gu & Shen 2024, Yaras et al. 2022), so the theorems make it a strict saddle: the families of
  saddles the landscape tests run through.
* :func:`find_critical_point`: a Levenberg-Marquardt iteration on the equation grad f(x) = 0 (the
  Gauss-Newton model of ``|grad f|^2/2``, whose Jacobian is the Riemannian Hessian): it converges
  to critical points of any index, not only to minimisers as descent methods do.
* :func:`random_point`: ``problem.random_start(seed)``.
"""

from __future__ import annotations

import math
import time

import torch

from nclab._validation import check_int, check_real, check_seed
from nclab.ufm.optim import lbfgs

__all__ = ["origin", "lowdim_point", "find_critical_point", "random_point", "relative_grad_norm"]


def _norm(x) -> float:
    return math.sqrt(sum(float((t * t).sum()) for t in x))


def relative_grad_norm(problem, x) -> float:
    """``|grad f(x)| max(|x|, 1) / |f(x)|``: the solvers' relative gradient measure
    (:mod:`nclab.ufm.optim`), so a point solved to ``gtol`` has ``relative_grad_norm <= gtol``."""
    f = problem.cost(x)
    return problem.manifold.norm(x, problem.rgrad(x)) * max(_norm(x), 1.0) / max(abs(f), 1e-300)


def random_point(problem, seed: int = 0) -> tuple:
    """A random point of the problem's manifold, ``problem.random_start(seed)`` (reproducible)."""
    return problem.random_start(check_seed(seed))


def origin(problem) -> tuple:
    """The critical point W = H = 0 (with the bias optimal there) of the CE and MSE UFMs,
    ``problem.zero_critical_point()``.  ValueError for the normalized and sphere problems, whose
    points have unit rows."""
    if not hasattr(problem, "zero_critical_point"):
        raise ValueError(f"the {getattr(problem, 'loss', '?')} problem has no origin: its rows are unit vectors")
    return problem.zero_critical_point()


def _same_problem(problem, d: int):
    from nclab.ufm.problems import make_problem

    opts = dict(problem.describe())
    loss = opts.pop("loss")
    opts["d"] = d
    return make_problem(loss, **opts)


def _greedy_signs(problem, x) -> tuple:
    """d = 1 on the oblique manifold: the point set is {+-1}^rows, a discrete set with no tangent
    space.  Flip single signs while the cost decreases (a discrete local minimiser)."""
    x = tuple(t.clone() for t in x)
    f = problem.cost(x)
    improved = True
    while improved:
        improved = False
        for t in x:
            for i in range(t.shape[0]):
                t[i].neg_()
                g = problem.cost(tuple(s.clone() for s in x))
                if g < f - 1e-15 * abs(f):
                    f, improved = g, True
                else:
                    t[i].neg_()
    return x


def lowdim_point(problem, d_low: int, *, seed: int = 0, gtol: float = 1e-12) -> tuple:
    """A minimiser of ``problem`` with feature dimension ``d_low`` (1 <= d_low <= d), embedded into
    R^d by zero padding: a critical point of the full problem (module docstring).

    The small problem's closed form is used when it has one (``optimal_point(seed)``); otherwise
    nclab's L-BFGS runs from ``random_start(seed)`` to the relative gradient ``gtol`` and, if it
    stops short, :func:`find_critical_point` polishes the point (its relative gradient is
    then below ``gtol`` or the call raises RuntimeError).  At d_low = 1 on the oblique manifold
    (no tangent space) the signs are chosen greedily.

    >>> from nclab.ufm.problems import make_problem
    >>> p = make_problem("mse", K=4, n=2, d=4)
    >>> x = lowdim_point(p, 2)
    >>> relative_grad_norm(p, x) < 1e-12 and float(x[0][:, 2:].abs().max()) == 0.0
    True
    """
    d_low = check_int("d_low", d_low, minimum=1, maximum=problem.d)
    seed = check_seed(seed)
    gtol = check_real("gtol", gtol, positive=True)
    small = _same_problem(problem, d_low)
    xs = small.optimal_point(seed=seed)
    if xs is None:
        x0 = small.random_start(seed)
        if d_low == 1 and not small.manifold.flat:
            xs = _greedy_signs(small, x0)
        else:
            xs, log = lbfgs(small, x0, gtol=gtol, max_iter=20000, metrics_every=-1)
            if not log.converged:
                xs, info = find_critical_point(small, xs, gtol=gtol)
                if not info["converged"]:
                    raise RuntimeError(f"lowdim_point: no critical point at d_low={d_low} to gtol={gtol:g} "
                                       f"({info['stop_reason']})")
    rot = set(problem.rotating_factors)
    out = []
    for i, t in enumerate(xs):
        if i in rot:
            pad = torch.zeros(t.shape[0], problem.d - d_low, dtype=t.dtype)
            out.append(torch.cat([t.detach(), pad], dim=1).contiguous())
        else:
            out.append(t.detach().clone())
    return tuple(out)


def find_critical_point(
    problem,
    x0,
    *,
    max_iter: int = 200,
    gtol: float = 1e-10,
    max_inner: int | None = None,
    max_restarts: int = 5,
    restart_iters: int = 20,
):
    """Solve grad f(x) = 0 by Levenberg-Marquardt: a critical point of any index.

    At x with Riemannian gradient g and Hessian H (tangent space, matrix-free HVPs), the step is the
    damped least-squares Newton step on the gradient,

        s = argmin_s |g + H s|^2 + mu |s|^2,   i.e.   (H^2 + mu I) s = -H g,

    solved by conjugate gradients (two HVPs per iteration), then ``x+ = R_x(s)``.  A step that
    lowers |grad f| is accepted and mu shrinks (x 1/4): near a non-degenerate critical point mu -> 0
    and the iteration is Newton's (quadratic); otherwise the step is rejected and mu grows (x 8),
    moving toward steepest descent on |grad f|^2/2.  Zero eigenvalues (the symmetry orbit) do not
    hurt: H g has no component along them, so neither has s.  Stops when
    ``|grad f| <= gtol |f| / max(|x|, 1)`` (the solvers' relative test), after ``max_iter`` outer
    iterations, or after ``max_restarts`` stalls.

    A stall -- mu beyond 1e20 times the scale of H^2, or |grad f| not halved over 10 iterations --
    is the known failure of least squares on the gradient: a non-critical local minimum of
    |grad f|^2 (where H g = 0, g != 0).  The iteration then leaves its basin by ``restart_iters``
    L-BFGS steps on f and starts again (so the point found is still whatever critical point the
    Newton iteration meets next, saddles included).  ``max_inner`` caps the CG iterations
    (default min(ambient dimension, 500)).

    Returns ``(x, info)``: info has ``converged``, ``stop_reason``, ``iterations``, ``restarts``,
    ``objective``, ``grad_norm``, ``grad_threshold``, ``relative_grad_norm``, ``hvps``,
    ``seconds``."""
    max_iter = check_int("max_iter", max_iter, minimum=0)
    gtol = check_real("gtol", gtol, positive=True)
    max_restarts = check_int("max_restarts", max_restarts, minimum=0)
    restart_iters = check_int("restart_iters", restart_iters, minimum=1)
    t0 = time.perf_counter()
    M = problem.manifold
    x = tuple(t.detach().clone() for t in x0)
    hvps = 0

    def hess(v):
        nonlocal hvps
        hvps += 1
        return M.flatten(problem.rhess(x, M.unflatten(v)))

    def state(x):
        f = problem.cost(x)
        g = M.flatten(problem.rgrad(x))
        return f, g, float(g.norm()), gtol * abs(f) / max(_norm(x), 1.0)

    f, g, gn, thr = state(x)
    mu = None
    reason, it, restarts = "max_iter", 0, 0
    window = [gn]  # |grad f| after each iteration: the stall test looks 10 back
    n_inner = max_inner or min(M.ambient_dim, 500)
    for it in range(max_iter + 1):
        if gn <= thr:
            reason = "relative gradient norm <= gtol"
            break
        if it == max_iter:
            break
        Hg = hess(g)
        if mu is None:
            mu = 1e-4 * (float(Hg.norm()) / gn) ** 2
        scale = (float(Hg.norm()) / gn) ** 2
        stalled = mu > 1e20 * max(scale, 1e-300) or (len(window) > 10 and gn > 0.5 * window[-11])
        if stalled:
            if restarts >= max_restarts:
                reason = "stalled: |grad f| stopped decreasing (a non-critical minimum of |grad f|)"
                break
            # leave the basin of the spurious minimum of |grad f|: a few descent steps on f
            restarts += 1
            x, _ = lbfgs(problem, x, max_iter=restart_iters, gtol=gtol, metrics_every=-1)
            f, g, gn, thr = state(x)
            mu, window = None, [gn]
            continue
        # CG on (H^2 + mu I) s = -H g (symmetric positive definite on the tangent space)
        b = -Hg
        s = torch.zeros_like(b)
        r = b.clone()
        p = r.clone()
        rr = float(r @ r)
        bn = math.sqrt(rr)
        for _ in range(n_inner):
            Ap = hess(hess(p)) + mu * p
            a = rr / float(p @ Ap)
            s += a * p
            r -= a * Ap
            rr_new = float(r @ r)
            if math.sqrt(rr_new) <= 1e-12 * bn:
                break
            p = r + (rr_new / rr) * p
            rr = rr_new
        xn = M.retr(x, M.proj(x, M.unflatten(s)))
        fn, gn_vec, gnn, thrn = state(xn)
        if math.isfinite(gnn) and gnn < gn:
            x, f, g, gn, thr = xn, fn, gn_vec, gnn, thrn
            mu *= 0.25
        else:
            mu *= 8.0
        window.append(gn)
    info = {
        "converged": gn <= thr,
        "stop_reason": reason,
        "iterations": it,
        "restarts": restarts,
        "objective": f,
        "grad_norm": gn,
        "grad_threshold": thr,
        "relative_grad_norm": gn * max(_norm(x), 1.0) / max(abs(f), 1e-300),
        "hvps": hvps,
        "seconds": time.perf_counter() - t0,
    }
    return x, info
