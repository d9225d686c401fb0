"""First-order descent without curvature memory: heavy-ball gradient descent (:func:`gradient_descent`,
the papers' baseline) and Riemannian steepest descent (:func:`riemannian_gradient_descent`) with
an :class:`~nclab.ufm.optim.line_search.Armijo` backtracking or a fixed step.
"""

from __future__ import annotations

import torch

from nclab._validation import check_choice
from nclab.ufm.optim.line_search import Armijo
from nclab.ufm.optim.space import _Space
from nclab.ufm.optim.stopping import _nonneg, _options, _pos, _start

__all__ = ["gradient_descent", "riemannian_gradient_descent"]


def gradient_descent(problem, x0, **options):
    """Gradient descent with heavy-ball momentum, PyTorch-SGD form (the papers' baseline):

        v <- momentum * v + grad f(x);   x <- R_x(-lr v)

    with lr = 0.1, momentum = 0.9 by default (Zhu et al. 2021; Yaras et al. 2022).  On Euclidean
    problems R_x(u) = x + u; on manifolds the Riemannian gradient is used, the step is retracted
    and the velocity is transported (projection) to the new point.  One gradient per iteration,
    no line search, so it can diverge for a too large lr (stop reason "non-finite ...").

    Options: lr=0.1, momentum=0.9, max_iter=100000 (+ the common ones)."""
    o = _options("gd", dict(lr=0.1, momentum=0.9, max_iter=100000), options)
    lr = _pos("lr", o["lr"])
    mom = _nonneg("momentum", o["momentum"])
    if mom >= 1:
        raise ValueError(f"momentum must be in [0, 1), got {mom}")
    sp = _Space(problem, x0)
    mon, p, reason = _start("gd", sp, o)
    it = 0
    v = torch.zeros_like(p.g)
    while not reason:
        it += 1
        v.mul_(mom).add_(p.g)
        q = sp.evaluate(sp.retr(p, v, -lr))
        if not sp.flat and mom > 0:
            v = sp.transport(p, q, v)
        f_prev, p = p.f, q
        mon.record(it, p)
        reason = mon.check(it, p, f_prev)
    return mon.finish(it, p, reason)


def riemannian_gradient_descent(problem, x0, **options):
    """Riemannian steepest descent ``x <- R_x(-t grad f(x))``.

    ``step="armijo"`` (default): backtracking (factor 1/2) until
    ``f(x+) <= f(x) - c1 t |grad f(x)|^2``, the first trial being twice the last accepted step
    (adaptive, as Manopt's ``linesearch_adaptive``); the first iteration tries ``t = 1/|grad f|``.
    ``step="fixed"``: ``t = lr`` at every iteration (the normalized-UFM baseline).

    Options: step="armijo", lr=1.0 (fixed step), c1=1e-4, max_iter=20000 (+ the common ones)."""
    o = _options("rgd", dict(step="armijo", lr=1.0, c1=1e-4, max_iter=20000), options)
    check_choice("step", o["step"], ("armijo", "fixed"))
    lr = _pos("lr", o["lr"])
    armijo = Armijo(c1=_pos("c1", o["c1"]))
    sp = _Space(problem, x0)
    mon, p, reason = _start("rgd", sp, o)
    it = 0
    t_next = 1.0 / max(p.gn, 1e-300)
    while not reason:
        it += 1
        d = torch.neg(p.g)
        if o["step"] == "fixed":
            q = sp.evaluate(sp.retr(p, d, lr))
        else:
            q, t, ok = armijo.search(sp, p, d, -p.gn * p.gn, t_next)
            if not ok:
                return mon.finish(it - 1, p, "line search failed (no decrease)")
            t_next = 2.0 * t if t == t_next else t
        f_prev, p = p.f, q
        mon.record(it, p)
        reason = mon.check(it, p, f_prev)
    return mon.finish(it, p, reason)
