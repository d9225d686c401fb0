"""Riemannian trust regions, :func:`trust_regions`, with the truncated-CG inner solver :func:`_tcg`
(Steihaug-Toint; Absil, Baker & Gallivan 2007).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from nclab._validation import check_int, check_real
from nclab.ufm.optim.space import _Point, _Space, _dot
from nclab.ufm.optim.stopping import _nonneg, _options, _pos, _start

__all__ = ["trust_regions"]

_EPS = float(np.finfo(np.float64).eps)


def _tcg(sp: _Space, p: _Point, Delta: float, kappa: float, theta: float, max_inner: int):
    """Truncated conjugate gradient (Steihaug 1983, Toint 1981) on the trust-region subproblem

        min_eta  <g, eta> + 1/2 <eta, Hess f(x)[eta]>   s.t. |eta| <= Delta,

    as in Absil, Baker & Gallivan (2007), Algorithm 2 (no preconditioner).  Returns
    (eta, Heta, stop reason, inner iterations)."""
    g = p.g
    eta = torch.zeros_like(g)
    Heta = torch.zeros_like(g)
    r = g.clone()
    r_r = p.gn * p.gn
    norm_r0 = p.gn
    delta = torch.neg(r)
    e_Pe, e_Pd, d_Pd = 0.0, 0.0, r_r
    z_r = r_r
    stop = "max_inner"
    j = 0
    for j in range(1, max_inner + 1):
        Hd = sp.hess(p, delta)
        d_Hd = _dot(delta, Hd)
        alpha = z_r / d_Hd if d_Hd != 0 else math.inf
        e_Pe_new = e_Pe + 2.0 * alpha * e_Pd + alpha * alpha * d_Pd
        if d_Hd <= 0 or e_Pe_new >= Delta * Delta:
            # go to the boundary along delta
            tau = (-e_Pd + math.sqrt(max(e_Pd * e_Pd + d_Pd * (Delta * Delta - e_Pe), 0.0))) / d_Pd
            eta.add_(delta, alpha=tau)
            Heta.add_(Hd, alpha=tau)
            stop = "negative curvature" if d_Hd <= 0 else "exceeded trust region"
            break
        e_Pe = e_Pe_new
        eta.add_(delta, alpha=alpha)
        Heta.add_(Hd, alpha=alpha)
        r.add_(Hd, alpha=alpha)
        if not sp.flat and j % 10 == 0:
            r = sp.proj(p, r)
        r_r = _dot(r, r)
        norm_r = math.sqrt(max(r_r, 0.0))
        if norm_r <= norm_r0 * min(norm_r0**theta, kappa):
            stop = "converged" if kappa < norm_r0**theta else "superlinear"
            break
        z_r_old = z_r
        z_r = r_r
        beta = z_r / z_r_old
        delta.mul_(beta).sub_(r)
        e_Pd = beta * (e_Pd + alpha * d_Pd)
        d_Pd = z_r + beta * beta * d_Pd
    return eta, Heta, stop, j


def trust_regions(problem, x0, **options):
    """Riemannian trust-region method with truncated CG (Absil, Baker & Gallivan 2007).

    At x the model ``m(eta) = f + <g, eta> + 1/2 <eta, Hess f(x)[eta]>`` is minimised approximately
    in ``|eta| <= Delta`` by :func:`_tcg` (``problem.rhess``, cached per point by the problem); the
    candidate R_x(eta) is accepted when ``rho = (f(x) - f(x+)) / (m(0) - m(eta)) > rho_prime``.
    Radius: ``Delta /= 4`` if rho < 1/4, ``Delta = min(2 Delta, Delta_bar)`` if rho > 3/4 and the
    step reached the boundary.  Both numerator and denominator of rho get a regularisation of
    ``1e3 eps |f|`` (Manopt uses ``1e3 eps max(1, |f|)``, which at |f| << 1 swamps the real
    decrease: relative to f, the ratio means the same at every scale).
    Negative curvature sends tCG to the boundary, so the method escapes strict saddles.

    Options: Delta_bar (default ``manifold.typical_dist`` or sqrt(dim)), Delta0 = Delta_bar/8,
    rho_prime=0.1, kappa=0.1, theta=1.0, max_inner (default min(dim, 1000)), max_iter=1000
    (+ the common ones)."""
    o = _options(
        "rtr",
        dict(Delta_bar=None, Delta0=None, rho_prime=0.1, kappa=0.1, theta=1.0, max_inner=None, max_iter=1000),
        options,
    )
    sp = _Space(problem, x0)
    dim = int(getattr(sp.M, "dim", sp.D))
    Delta_bar = o["Delta_bar"]
    if Delta_bar is None:
        Delta_bar = float(getattr(sp.M, "typical_dist", math.sqrt(dim)))
    Delta_bar = _pos("Delta_bar", Delta_bar)
    Delta = _pos("Delta0", o["Delta0"] if o["Delta0"] is not None else Delta_bar / 8.0)
    rho_prime = check_real("rho_prime", o["rho_prime"])
    if not 0 <= rho_prime < 0.25:
        raise ValueError(f"rho_prime must be in [0, 1/4), got {rho_prime}")
    kappa, theta = _pos("kappa", o["kappa"]), _nonneg("theta", o["theta"])
    max_inner = check_int("max_inner", o["max_inner"] if o["max_inner"] is not None else min(dim, 1000), minimum=1)
    mon, p, reason = _start("rtr", sp, o)
    it = 0
    rejections = 0
    while not reason:
        it += 1
        eta, Heta, tcg_stop, _ = _tcg(sp, p, Delta, kappa, theta, max_inner)
        if not sp.flat:
            eta = sp.proj(p, eta)
        q = sp.retr(p, eta, 1.0)
        fq = sp.cost(q)
        model_dec = -(_dot(p.g, eta) + 0.5 * _dot(eta, Heta))
        reg = 1e3 * max(_EPS, sp.eps) * max(abs(p.f), 1e-300)
        rho = (p.f - fq + reg) / (model_dec + reg) if math.isfinite(fq) else -math.inf
        if model_dec < 0:  # the model did not decrease (numerical trouble): treat as a failure
            rho = -math.inf
        at_boundary = tcg_stop in ("negative curvature", "exceeded trust region")
        eta_norm = math.sqrt(max(_dot(eta, eta), 0.0))
        if rho < 0.25:
            Delta = 0.25 * min(Delta, max(eta_norm, 1e-300)) if eta_norm < Delta else 0.25 * Delta
        elif rho > 0.75 and at_boundary:
            Delta = min(2.0 * Delta, Delta_bar)
        if rho > rho_prime:
            sp.grad(q)
            f_prev, p = p.f, q
            rejections = 0
        else:
            f_prev = p.f
            rejections += 1
            if Delta < 1e-14 * max(1.0, math.sqrt(max(_dot(p.x, p.x), 0.0))) or rejections > 50:
                mon.record(it, p, force=True)
                return mon.finish(it, p, "trust region collapsed")
        mon.record(it, p)
        reason = mon.check(it, p, f_prev if rejections == 0 else None)
    return mon.finish(it, p, reason)
