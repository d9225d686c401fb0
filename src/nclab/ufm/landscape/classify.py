"""Classification of a point of a UFM landscape: not critical, global minimiser, strict saddle,
local non-global minimiser, or inconclusive -- with the numbers that decided it.

This module owns the decision rules and their thresholds (REFERENCE.md sections 2 and 5).

First order.  x is critical when its Riemannian gradient passes the solvers' relative test with a
looser tolerance (:mod:`nclab.ufm.optim`):

    |grad f(x)| <= grad_tol |f(x)| / max(|x|, 1),      grad_tol = GRAD_TOL = 1e-6 by default,

so a point solved to the solvers' gtol = 1e-8 counts as critical, and the test means the same
whether f is 1 or 1e-20 (|grad f| |x| / |f| is the relative condition number of f at x).

Second order.  lambda_min is the smallest eigenvalue of the Riemannian Hessian on the tangent
space, with the symmetry orbit {(W A, H A)} and the problem's flat directions deflated
(:func:`nclab.ufm.diagnostics.hessian_extreme_eigs` with ``deflate=True``; REFERENCE.md section 2,
"Symmetry": without deflation every critical point off the origin has zero eigenvalues and no
minimiser can be told from a degenerate saddle).  It counts as negative, zero or positive against

    eig_threshold = eig_tol |Hess| + |grad f| / max(|x|, 1),     eig_tol = EIG_TOL = 1e-8,

|Hess| a power-iteration estimate of the Hessian's norm: eig_tol covers the Lanczos tolerance
(1e-10 |Hess|) and the rounding of the HVPs (~ eps sqrt(dim) |Hess|) with room; the gradient term
is the first-order change of the Hessian's eigenvalues at an inexact critical point (a residual r
moves them by about |r|/|x|: f ~ |x|^2 Hess).  A negative lambda_min is confirmed along its unit
eigenvector e (sign with <grad f, e> <= 0) by the objective: ``observed = f(R_x(t e)) - f(x)``
against ``predicted = t <grad f, e> + lambda_min t^2/2``, at
``t = sqrt(2e6 eps |f| / |lambda_min|)`` (the predicted change is 1e6 rounding units of f, so
rounding is 1e-6 of it, while t is small enough that the cubic term is too; 10x and 100x that t
are tried when the first does not agree within 10%).

Global optimality.  For the CE and MSE UFMs with d at least the rank of the convex minimiser,
Zhu et al.'s certificate decides it (:mod:`nclab.ufm.landscape.certificate`); otherwise, where a
closed form exists, the objective must equal it to GAP_TOL = 1e-8 relative and every entry of
``problem.structure(x)`` be below STRUCTURE_TOL = 1e-4 (the normalized and sphere problems,
Yaras et al. 2022, Lu & Steinerberger 2022).  Rules, in order:

* ``not_critical``: the gradient test fails;
* ``strict_saddle``: lambda_min < -eig_threshold, confirmed by the decrease (a certified-global
  point with confirmed negative curvature is ``inconclusive``: the two tests contradict);
* ``global_minimiser``: global by the certificate/closed form and lambda_min >= -eig_threshold;
  when lambda_min is within the threshold of zero this needs ``deflate=True`` (with the orbit
  kept, its zero eigenvalues make the second-order test say nothing: ``inconclusive``);
* ``local_non_global_minimiser``: lambda_min > eig_threshold but the certificate fails or the
  objective is above the closed form: this contradicts the landscape theorems (Zhu et al. 2021 for
  d > K, Gu & Shen 2024 for d = K, Yaras et al. 2022), and ``reason`` says so;
* ``inconclusive``: everything else (degenerate Hessian, unconfirmed negative curvature, a
  second-order point whose globality no certificate or closed form decides), with the reason.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from nclab._validation import check_bool, check_choice, check_int, check_real, check_seed
from nclab.ufm.diagnostics import hessian_extreme_eigs
from nclab.ufm.landscape.certificate import certificate, criticality_identities, negative_direction

__all__ = ["Classification", "classify", "KINDS", "GRAD_TOL", "EIG_TOL", "GAP_TOL", "STRUCTURE_TOL"]

KINDS = ("not_critical", "global_minimiser", "strict_saddle", "local_non_global_minimiser", "inconclusive")
GRAD_TOL = 1e-6
EIG_TOL = 1e-8
GAP_TOL = 1e-8
STRUCTURE_TOL = 1e-4

_EPS = float(np.finfo(np.float64).eps)


@dataclass
class Classification:
    """What :func:`classify` found at a point (module docstring for the rules).

    ``kind`` (one of :data:`KINDS`) and ``reason`` (a sentence); ``objective``, ``optimum`` (closed
    form or None), ``relative_gap``; ``grad_norm`` (Riemannian) and ``grad_threshold``;
    ``lambda_min`` (smallest tangent-space Hessian eigenvalue, None when not critical) and
    ``eig_threshold``; ``decrease`` ({t, predicted, observed, confirmed} along the eigenvector, or
    None); ``certificate`` (:meth:`Certificate.as_dict`, None when not applicable);
    ``direction_curvature`` (the null direction's predicted/measured Rayleigh quotients, or None);
    ``identities`` (:func:`criticality_identities`); ``hvps`` (Hessian-vector products used);
    ``seconds``; ``deflated`` (whether the symmetry orbit was deflated).

    The eigenvector of ``lambda_min`` (a tangent vector shaped like x) is the attribute
    ``eigenvector`` (not a field: it is not JSON)."""

    kind: str
    reason: str
    objective: float
    optimum: float | None
    relative_gap: float | None
    grad_norm: float
    grad_threshold: float
    lambda_min: float | None
    eig_threshold: float | None
    decrease: dict | None
    certificate: dict | None
    direction_curvature: dict | None
    identities: dict
    hvps: int
    seconds: float
    deflated: bool

    def as_dict(self) -> dict:
        """JSON-ready dict of the fields."""
        return dataclasses.asdict(self)

    @property
    def eigenvector(self):
        """The unit eigenvector of ``lambda_min`` (tuple shaped like x), None if not computed."""
        return getattr(self, "_eigenvector", None)

    @property
    def null_direction(self):
        """The :class:`NullDirection` of a failed certificate, None otherwise."""
        return getattr(self, "_null_direction", None)


def _norm(x) -> float:
    return math.sqrt(sum(float((t * t).sum()) for t in x))


def _hess_norm(problem, x, iters: int = 20, seed: int = 0) -> float:
    """Power-iteration estimate of |Hess f(x)| on the tangent space (a lower bound, to ~10%)."""
    M = problem.manifold
    u = M.random_tangent(x, torch.Generator().manual_seed(int(seed) + 104729))
    lam = 0.0
    for _ in range(iters):
        Hu = problem.rhess(x, u)
        lam = M.norm(x, Hu)
        if lam == 0.0:
            return 0.0
        u = M.lincomb(x, 1.0 / lam, Hu)
    return lam


def classify(problem, x, *, deflate: bool = True, grad_tol: float | None = None, eig_tol: float | None = None,
             k: int = 1, method: str = "auto", seed: int = 0) -> Classification:
    """Classify the point x of ``problem`` (module docstring: rules and thresholds).

    Parameters
    ----------
    deflate : remove the symmetry orbit's zero eigenvalues (default; False shows why it matters);
    grad_tol : relative gradient tolerance of the critical-point test (default :data:`GRAD_TOL`);
    eig_tol : relative eigenvalue tolerance (default :data:`EIG_TOL`);
    k, method, seed : passed to :func:`nclab.ufm.diagnostics.hessian_extreme_eigs` (k smallest
        eigenvalues are computed, the smallest is reported).

    >>> from nclab.ufm.problems import make_problem
    >>> p = make_problem("ce", K=4, n=5, d=4)
    >>> classify(p, p.optimal_point(seed=0)).kind, classify(p, p.zero_critical_point()).kind
    ('global_minimiser', 'strict_saddle')
    """
    deflate = check_bool("deflate", deflate)
    grad_tol = GRAD_TOL if grad_tol is None else check_real("grad_tol", grad_tol, positive=True)
    eig_tol = EIG_TOL if eig_tol is None else check_real("eig_tol", eig_tol, nonnegative=True)
    k = check_int("k", k, minimum=1)
    check_choice("method", method, ("auto", "dense", "lanczos"))
    seed = check_seed(seed)
    t0 = time.perf_counter()
    h0 = problem.counts["hess"]
    M = problem.manifold
    f = problem.cost(x)
    g = problem.rgrad(x)
    gn = M.norm(x, g)
    xn = _norm(x)
    grad_thr = grad_tol * abs(f) / max(xn, 1.0)
    opt = problem.optimum
    gap = None if opt is None else (f - opt) / max(abs(opt), 1e-300)
    cert = certificate(problem, x)
    out = dict(objective=f, optimum=opt, relative_gap=gap, grad_norm=gn, grad_threshold=grad_thr, lambda_min=None,
               eig_threshold=None, decrease=None, certificate=cert.as_dict() if cert.applicable else None,
               direction_curvature=None, identities=criticality_identities(problem, x), deflated=deflate)

    def done(kind, reason, eigvec=None, nd=None):
        c = Classification(kind=kind, reason=reason, hvps=problem.counts["hess"] - h0,
                           seconds=time.perf_counter() - t0, **out)
        c._eigenvector, c._null_direction = eigvec, nd
        return c

    if not gn <= grad_thr:
        return done("not_critical", f"|grad f| = {gn:.3e} > {grad_tol:g} |f|/max(|x|, 1) = {grad_thr:.3e}")

    nd = negative_direction(problem, x, cert)
    if nd is not None:
        out["direction_curvature"] = nd.as_dict()
    eigs, vecs = hessian_extreme_eigs(problem, x, k=k, deflate=deflate, method=method, seed=seed,
                                      return_eigenvectors=True)
    lam = float(eigs[0])
    e = vecs[0]
    eig_thr = eig_tol * max(_hess_norm(problem, x, seed=seed), abs(lam)) + gn / max(xn, 1.0)
    out["lambda_min"], out["eig_threshold"] = lam, eig_thr
    orbit = "the symmetry orbit deflated" if deflate else "the symmetry orbit NOT deflated"

    # global evidence: the certificate, else the closed form and the structure
    if cert.applicable:
        is_global = cert.holds
        why = (f"the certificate {'holds' if cert.holds else 'fails'}: sigma_1(grad_Z L)/sqrt(lw lh) = "
               f"{cert.ratio:.12g} (tolerance 1 + {cert.tol:.1e}; Zhu et al. 2021, Lemma C.4)")
    elif opt is not None:
        struct = [v for v in problem.structure(x).values() if v is not None]
        worst = max(struct) if struct else 0.0
        is_global = gap <= GAP_TOL and worst <= STRUCTURE_TOL
        why = (f"relative gap to the closed form {gap:.3e} (tolerance {GAP_TOL:g}), largest structure error "
               f"{worst:.3e} (tolerance {STRUCTURE_TOL:g})")
    else:
        is_global, why = None, f"no certificate applies ({cert.reason}) and no closed form is known"

    if lam < -eig_thr:
        if float(M.inner(x, g, e)) > 0:
            e = M.lincomb(x, -1.0, e)
        slope = float(M.inner(x, g, e))
        t_base = math.sqrt(2e6 * _EPS * max(abs(f), 1e-300) / abs(lam))
        dec = None
        for factor in (1.0, 10.0, 100.0):
            t = t_base * factor
            predicted = t * slope + 0.5 * lam * t * t
            observed = problem.cost(M.retr(x, e, t)) - f
            dec = {"t": t, "predicted": predicted, "observed": observed,
                   "confirmed": bool(observed < 0 and abs(observed - predicted) <= 0.1 * abs(predicted))}
            if dec["confirmed"]:
                break
        out["decrease"] = dec
        if not dec["confirmed"]:
            return done("inconclusive", f"lambda_min = {lam:.6e} < -{eig_thr:.1e} ({orbit}), but the objective "
                                        f"along its eigenvector does not follow lambda t^2/2 (observed {dec['observed']:.3e}, "
                                        f"predicted {dec['predicted']:.3e})", e, nd)
        if is_global:
            return done("inconclusive", f"CONTRADICTION: {why}, yet lambda_min = {lam:.6e} < -{eig_thr:.1e} is "
                                        "confirmed by a decrease of the objective: check the derivatives", e, nd)
        return done("strict_saddle", f"lambda_min = {lam:.6e} < -{eig_thr:.1e} ({orbit}), confirmed: f decreases by "
                                     f"{-dec['observed']:.3e} (predicted {-dec['predicted']:.3e}) at t = {dec['t']:.2e}; "
                                     + why, e, nd)
    degenerate = lam <= eig_thr
    if is_global:
        if degenerate and not deflate:
            return done("inconclusive", f"{why}, but lambda_min = {lam:.3e} is zero to the threshold {eig_thr:.1e} "
                                        "with the symmetry orbit NOT deflated: its zero eigenvalues hide the "
                                        "curvature, so the eigenvalue test cannot tell a minimiser from a "
                                        "degenerate saddle (classify with deflate=True)", e, nd)
        extra = (f"; lambda_min = {lam:.3e} is zero to the threshold {eig_thr:.1e} beyond the symmetry orbit"
                 if degenerate else f"; lambda_min = {lam:.6e} > 0 ({orbit})")
        return done("global_minimiser", why + extra, e, nd)
    if degenerate:
        return done("inconclusive", f"degenerate: lambda_min = {lam:.3e} is zero to the threshold {eig_thr:.1e} "
                                    f"({orbit}); the second-order test cannot decide; {why}", e, nd)
    if is_global is None:
        return done("inconclusive", f"a second-order critical point (lambda_min = {lam:.6e} > {eig_thr:.1e}, "
                                    f"{orbit}), but {why}: whether it is global is not decided", e, nd)
    return done("local_non_global_minimiser",
                f"A LOCAL, NON-GLOBAL MINIMISER: lambda_min = {lam:.6e} > {eig_thr:.1e} ({orbit}) while {why}. "
                "This contradicts the landscape theorems (Zhu et al. 2021 for d > K, Gu & Shen 2024 for d = K, "
                "Yaras et al. 2022 on the oblique manifold) where they apply: check the derivatives "
                "(nclab.ufm.diagnostics.check_hessian) and the tolerances", e, nd)
