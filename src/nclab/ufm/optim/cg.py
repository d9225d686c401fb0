"""Riemannian nonlinear conjugate gradient, :func:`conjugate_gradient` (HS+, PR+, FR, HZ rules),
with restarts and a line-search object of :mod:`nclab.ufm.optim.line_search` (strong Wolfe with
c2 = 0.1 by default).
"""

from __future__ import annotations

import math

import torch

from nclab._validation import check_choice, check_int
from nclab.ufm.optim.line_search import _first_step, line_search_from_options
from nclab.ufm.optim.space import _Space, _dot
from nclab.ufm.optim.stopping import _options, _start

__all__ = ["conjugate_gradient", "BETA_RULES"]

#: The ``beta_rule=`` option's values (case-insensitive).
BETA_RULES = ("hs+", "pr+", "fr", "hz")


def _beta(rule: str, g, y, d_old, g_old, gg: float, gn_old: float) -> float:
    """The CG coefficient of ``rule`` from the new gradient g (|g|^2 = gg), y = g - T(g_old), the
    transported previous direction d_old and the previous gradient norm."""
    if rule == "fr":
        return gg / max(gn_old * gn_old, 1e-300)
    if rule == "pr+":
        return max(0.0, _dot(g, y) / max(gn_old * gn_old, 1e-300))
    dy = _dot(d_old, y)
    if dy == 0.0:
        return 0.0
    if rule == "hs+":
        return max(0.0, _dot(g, y) / dy)
    # Hager-Zhang, with eta_k = -1/(|d| min(eta, |g|)) lower bound
    yy = _dot(y, y)
    beta = (_dot(g, y) - 2.0 * yy * _dot(d_old, g) / dy) / dy
    dn = math.sqrt(max(_dot(d_old, d_old), 0.0))
    eta = -1.0 / max(dn * min(0.01, math.sqrt(max(_dot(g_old, g_old), 0.0))), 1e-300)
    return max(beta, eta)


def conjugate_gradient(problem, x0, **options):
    """Riemannian nonlinear conjugate gradient (Absil, Mahony & Sepulchre 2008, section 8.3;
    Sato 2021) with vector transport by projection.

    ``d_{k+1} = -g_{k+1} + beta_k T(d_k)``, with y = g_{k+1} - T(g_k) and ``beta_rule``:
    ``"hs+"`` max(0, <g+, y>/<T d, y>) (Hestenes-Stiefel+, default), ``"pr+"`` max(0, <g+, y>/|g|^2)
    (Polak-Ribiere+), ``"fr"`` |g+|^2/|g|^2, ``"hz"`` Hager-Zhang (2005) with its lower bound.
    Restarts (d = -g) every ``restart_every`` iterations (default: never), when Powell's test
    ``|<g+, T g>| >= 0.1 |g+|^2`` fires, and whenever the direction is not a descent direction.
    Line search: strong Wolfe (c2=0.1) or Armijo; first trial step from the previous one as
    ``t_prev <g, d>/<g+, d+>`` (Nocedal & Wright 2006, eq. 3.60).

    Options: beta_rule="hs+", line_search="wolfe", c1=1e-4, c2=0.1, restart_every=0,
    powell=True, max_iter=10000 (+ the common ones)."""
    o = _options(
        "rcg",
        dict(beta_rule="hs+", line_search="wolfe", c1=1e-4, c2=0.1, restart_every=0, powell=True, max_iter=10000),
        options,
    )
    rule = str(o["beta_rule"]).lower()
    if rule not in BETA_RULES:
        check_choice("beta_rule", o["beta_rule"], BETA_RULES)
    line_search = line_search_from_options(o)
    restart_every = check_int("restart_every", o["restart_every"], minimum=0)
    sp = _Space(problem, x0)
    mon, p, reason = _start("rcg", sp, o)
    it = 0
    d = torch.neg(p.g)
    slope = -p.gn * p.gn
    t0 = _first_step(p)
    since_restart = 0
    while not reason:
        it += 1
        q, t, ok = line_search.search(sp, p, d, slope, t0)
        if not ok and since_restart > 0:
            d = torch.neg(p.g)
            slope = -p.gn * p.gn
            t0 = 1.0 / max(p.gn, 1e-300)
            since_restart = 0
            q, t, ok = line_search.search(sp, p, d, slope, t0)
        if not ok:
            return mon.finish(it - 1, p, "line search failed (no decrease)")
        g_old = sp.transport(p, q, p.g)
        d_old = sp.transport(p, q, d)
        g = q.g
        gg = q.gn * q.gn
        y = g - g_old
        restart = restart_every > 0 and since_restart + 1 >= restart_every
        if o["powell"] and abs(_dot(g, g_old)) >= 0.1 * gg:
            restart = True
        beta = 0.0 if restart else _beta(rule, g, y, d_old, g_old, gg, p.gn)
        new_d = torch.add(torch.neg(g), d_old, alpha=beta) if beta != 0.0 else torch.neg(g)
        new_slope = _dot(g, new_d)
        if not new_slope < 0:
            new_d = torch.neg(g)
            new_slope = -gg
            beta = 0.0
        since_restart = since_restart + 1 if beta != 0.0 else 0
        t0 = t * slope / new_slope if new_slope != 0 else 1.0
        if not (math.isfinite(t0) and t0 > 0):
            t0 = 1.0
        d, slope = new_d, new_slope
        f_prev, p = p.f, q
        mon.record(it, p)
        reason = mon.check(it, p, f_prev)
    return mon.finish(it, p, reason)
