"""First-order landscape facts of the penalised UFMs: Zhu et al.'s global-optimality certificate,
the identities every critical point obeys, and the explicit negative-curvature direction.

This module owns the convex-relaxation view of the CE and MSE UFMs (REFERENCE.md sections 2 and 5).
Batch-first (nclab's convention; REFERENCE.md writes Z = W H, its transpose):

    f(W, H, b) = L(Z) + lw/2 |W|_F^2 + lh/2 |H|_F^2 (+ lb/2 |b|^2),   Z = H W^T + 1 b^T  (N x K),

and ``G = grad_Z L`` (N x K) is what the problem already caches (``problem.logit_gradient(x)``: ``(P - Y)/N`` for
CE, ``(Z - Y)/N`` for MSE).  Then ``grad_W = G^T H + lw W`` and ``grad_H = G W + lh H``, so at a
critical point

    G^T H = -lw W,    G W = -lh H,                                          (1)

hence ``lw W^T W = -W^T G^T H = lh H^T H`` (balance; Gu & Shen 2024, Lemma 3.1), the null spaces
of W (K x d) and H (N x d) coincide, and ``G^T G W = lw lh W``: the columns of W lie in the
eigenspace lw lh of G^T G.  For CE every row of G sums to zero (softmax minus one-hot), so
``G 1 = 0`` and, by (1), ``1^T W = -(G 1)^T H / lw = 0``.

Certificate (Zhu et al. 2021, Lemma C.4).  ``lw/2 |W|^2 + lh/2 |H|^2 >= sqrt(lw lh) |H W^T|_*``
with equality for balanced factors, so the factorised problem is bounded below by the convex

    min_{Z, b} L(Z + 1 b^T) + sqrt(lw lh) |Z|_* (+ lb/2 |b|^2),

and attains it when d is at least the rank of the convex minimiser (K-1 for CE; for MSE the rank
of its closed form, K-1 with a free bias, K without; 0 when K beta >= 1 and W = H = 0 is optimal).  A critical point (balanced by (1)) is
optimal for the convex problem iff ``-G`` is a subgradient of ``sqrt(lw lh) |.|_*`` at Z, which
given (1) reduces to ``sigma_1(G) <= sqrt(lw lh)``.  So a critical point is a global minimiser iff
the certificate holds (sigma_1(G) = sqrt(lw lh) exactly at a collapsed optimum, whose W spans the
top singular space; at W = H = 0, G = (J/K - Y)/N and sigma_1 = 1/(K sqrt n): the certificate holds
iff beta = sqrt(n lw lh) >= 1/K).

Negative direction.  Where the certificate fails and W has a null vector q (|q| = 1, W q = 0,
hence H q = 0), let ``G = sigma_1 v u^T + ...`` (u in R^K, v in R^N: u is the left and v the
right singular vector of REFERENCE.md's K x N gradient G^T).  Along

    dW = -s_w u q^T  (K x d),    dH = s_h v q^T  (N x d),    db = 0,

the first-order change of Z vanishes (H dW^T = -s_w (H q) u^T = 0, dH W^T = s_h v (W q)^T = 0),
so ``Z(t) = Z + t^2 dH dW^T = Z - t^2 s_w s_h v u^T`` and, since <W, dW> = <H, dH> = 0,

    f(x + t dx) - f(x) = t^2 (lw s_w^2/2 + lh s_h^2/2 - s_w s_h sigma_1) + O(t^4).

With s_w s_h = 1 the bracket is smallest at s_w = (lh/lw)^{1/4} (then lw s_w^2 = lh s_h^2 =
sqrt(lw lh)): ``t^2 (sqrt(lw lh) - sigma_1) < 0``.  The Hessian's quadratic form along dx is twice
the bracket and |dx|^2 = s_w^2 + s_h^2 = (lw + lh)/sqrt(lw lh), so the Rayleigh quotient is

    <dx, Hess dx> / |dx|^2 = 2 sqrt(lw lh) (sqrt(lw lh) - sigma_1) / (lw + lh)

(= sqrt(lw lh) - sigma_1 when lw = lh; at W = H = 0 with lw = lh it is REFERENCE.md's smallest
eigenvalue).  At a critical point it bounds the smallest Hessian eigenvalue from above.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from nclab.ufm.problems.logit import _CELoss, _PenalizedUFM

__all__ = ["Certificate", "NullDirection", "certificate", "criticality_identities", "negative_direction"]

_EPS = float(torch.finfo(torch.float64).eps)

#: Relative cut-off of the numerical rank of W: singular values below RANK_RTOL * sigma_max(W)
#: (and below RANK_RTOL * max(|x|, 1), so that W = 0 has rank 0) count as zero.
RANK_RTOL = 1e-8


#: The largest relative gradient that widens the certificate's tolerance (= the classifier's
#: default criticality tolerance: a point beyond it is not critical and the test means nothing).
REL_GRAD_CAP = 1e-6


@dataclass(frozen=True)
class Certificate:
    """Zhu et al.'s Lemma C.4 test at a point (see the module docstring).

    ``applicable`` says whether the test decides global optimality for this problem (``reason``
    says why not); ``sigma_1`` = sigma_1(grad_Z L), ``threshold`` = sqrt(lw lh), ``ratio`` =
    sigma_1 / threshold, ``tol`` the allowance for rounding and for an inexact critical point,
    ``holds`` = ratio <= 1 + tol; ``u`` (K) and ``v`` (N) the top singular pair (sign: u's
    largest entry positive),
    ``G ~ sigma_1 v u^T`` in nclab's N x K orientation (``G^T ~ sigma_1 u v^T`` in REFERENCE.md's)."""

    applicable: bool
    reason: str
    sigma_1: float | None = None
    threshold: float | None = None
    ratio: float | None = None
    tol: float | None = None
    holds: bool | None = None
    u: tuple[float, ...] | None = None
    v: tuple[float, ...] | None = None

    def as_dict(self) -> dict:
        """JSON-ready dict (the singular vectors as lists)."""
        out = dataclasses.asdict(self)
        for k in ("u", "v"):
            out[k] = None if out[k] is None else list(out[k])
        return out


@dataclass(frozen=True)
class NullDirection:
    """The explicit descent direction of a failed certificate (module docstring).

    ``direction`` is a tangent vector shaped like the point (unit norm); ``q`` the null vector of W
    (length d); ``s_w``, ``s_h`` the factor scales; ``predicted_curvature`` the derived Rayleigh
    quotient ``2 sqrt(lw lh)(sqrt(lw lh) - sigma_1)/(lw + lh)``; ``measured_curvature``
    ``<dx, Hess[dx]>/|dx|^2`` from the problem's Hessian-vector product."""

    direction: tuple
    q: torch.Tensor
    s_w: float
    s_h: float
    predicted_curvature: float
    measured_curvature: float

    def as_dict(self) -> dict:
        return {"predicted_curvature": self.predicted_curvature, "measured_curvature": self.measured_curvature,
                "s_w": self.s_w, "s_h": self.s_h}


def _norm(x) -> float:
    return math.sqrt(sum(float((t * t).sum()) for t in x))


def _required_rank(problem) -> int:
    """The rank of the convex relaxation's minimiser: d must reach it for the certificate to be an
    equivalence.  0 when W = H = 0 is the minimiser (balanced, K beta >= 1: CE by Zhu et al., MSE by
    its closed form); otherwise K-1 for CE (Zhu et al.); for MSE K-1 with a free bias, K without one,
    and with lb > 0 (K-1) + [K beta < lb/(1+lb)] (:class:`~nclab.ufm.problems.MSEProblem`'s closed
    form, independent of d)."""
    K, beta = problem.K, problem.beta
    if beta is not None and K * beta >= 1:
        return 0
    if isinstance(problem, _CELoss) or beta is None:
        return K - 1
    if not problem.has_bias:
        return K
    if problem.lb == 0:
        return K - 1
    return K - 1 + int(K * beta < problem.lb / (1 + problem.lb))


def certificate(problem, x) -> Certificate:
    """Zhu et al.'s (2021, Lemma C.4) global-optimality certificate at x:
    ``sigma_1(grad_Z L) <= sqrt(lw lh)`` (module docstring).

    Applicable to the penalised CE and MSE UFMs (any bias option) with d at least the rank of the
    convex minimiser (K-1 for CE); not applicable (``reason`` says why) to the normalized and
    sphere problems, whose constraints have no nuclear-norm relaxation, or for smaller d, where a
    failing certificate does not mean a non-global point.  The test is meaningful at critical
    points only; ``tol`` = 1e2 eps sqrt(K) + min(10 |grad f| max(|x|, 1)/|f|, 1e-6) allows for the
    rounding of G and its SVD and for the first-order error of an inexact critical point (ten times
    the relative gradient, the solvers' measure: the ratio's error was measured at 1.06 times the
    relative gradient at a gradient-descent end point, which the bare gradient missed by 6%; capped at :data:`REL_GRAD_CAP`, the classifier's
    criticality tolerance, so that a far-from-critical point does not pass on a loose tolerance).

    >>> from nclab.ufm.problems import make_problem
    >>> p = make_problem("ce", K=4, n=5, d=4, lw=5e-3, lh=5e-3)
    >>> c = certificate(p, p.optimal_point(seed=0))
    >>> c.holds, abs(c.ratio - 1) < 1e-8
    (True, True)
    """
    if not isinstance(problem, _PenalizedUFM):
        return Certificate(False, f"the {getattr(problem, 'loss', '?')} problem has no nuclear-norm relaxation "
                                  "(normalized/sphere constraints): the certificate of Zhu et al. does not apply")
    need = _required_rank(problem)
    if problem.d < need:
        return Certificate(False, f"d = {problem.d} < {need} (the rank of the convex minimiser): a failing "
                                  "certificate would not mean a non-global point")
    G = problem.logit_gradient(x)
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)  # G = U diag(S) Vh: v = U[:, 0] (N), u = Vh[0] (K)
    sigma = float(S[0])
    v, u = U[:, 0], Vh[0]
    if float(u[int(u.abs().argmax())]) < 0:  # the sign: u's largest entry is positive
        u, v = -u, -v
    thr = math.sqrt(problem.lw * problem.lh)
    g = problem.rgrad(x)
    f = abs(problem.cost(x))
    rel_grad = _norm(g) * max(_norm(x), 1.0) / max(f, 1e-300)
    tol = 1e2 * _EPS * math.sqrt(problem.K) + min(10.0 * rel_grad, REL_GRAD_CAP)
    ratio = sigma / thr
    return Certificate(True, "Zhu et al. 2021, Lemma C.4: a critical point is global iff sigma_1(grad_Z L) <= sqrt(lw lh)",
                       sigma, thr, ratio, tol, bool(ratio <= 1 + tol), tuple(u.tolist()), tuple(v.tolist()))


def _rank(A: torch.Tensor, scale: float) -> tuple[int, torch.Tensor]:
    """Numerical rank of A (cut-off RANK_RTOL max(sigma_max, scale)) and the right singular vectors."""
    _, S, Vh = torch.linalg.svd(A, full_matrices=True)
    cut = RANK_RTOL * max(float(S[0]) if S.numel() else 0.0, scale)
    return int((S > cut).sum()), Vh


def criticality_identities(problem, x) -> dict:
    """Identities every critical point of the penalised UFMs obeys (module docstring, (1);
    Gu & Shen 2024, Lemma 3.1), as residuals that vanish there:

    * ``balance_error`` = |lw W^T W - lh H^T H|_F / (lw |W|_F^2 + lh |H|_F^2) (0 when W = H = 0);
    * ``ones_error`` (CE only) = |1^T W| / |W|: the logit gradients sum to zero over classes;
    * ``rank_W``: numerical rank of W (relative cut-off :data:`RANK_RTOL`), ``null_dim`` = d - rank_W
      (Gu & Shen: at d = K a critical point's W always has a null direction).

    For the normalized and sphere problems only ``rank_W`` and ``null_dim`` are given."""
    W, H = problem.classifier(x).detach(), problem.features(x).detach()
    rank, _ = _rank(W, 0.0)
    out: dict = {"rank_W": rank, "null_dim": problem.d - rank}
    if isinstance(problem, _PenalizedUFM):
        lw, lh = problem.lw, problem.lh
        den = lw * float((W * W).sum()) + lh * float((H * H).sum())
        B = lw * W.T @ W - lh * H.T @ H
        out["balance_error"] = float(B.norm()) / den if den > 0 else 0.0
        if isinstance(problem, _CELoss):
            wn = float(W.norm())
            out["ones_error"] = float(W.sum(dim=0).norm()) / wn if wn > 0 else 0.0
    return out


def negative_direction(problem, x, cert: Certificate | None = None) -> NullDirection | None:
    """The explicit direction of negative curvature where the certificate fails (module docstring):
    ``(dW, dH, db) = (-s_w u q^T, s_h v q^T, 0) / |.|`` with q a unit null vector of W,
    s_w = (lh/lw)^{1/4}, s_h = 1/s_w.  None when the certificate is not applicable or holds, or W
    has full column rank (no null vector).

    ``predicted_curvature`` = 2 sqrt(lw lh)(sqrt(lw lh) - sigma_1)/(lw + lh) and
    ``measured_curvature`` = <dx, Hess[dx]>/|dx|^2 (``problem.rhess``) agree at a critical point."""
    if cert is None:
        cert = certificate(problem, x)
    if not cert.applicable or cert.holds:
        return None
    W = problem.classifier(x).detach()
    rank, Vh = _rank(W, RANK_RTOL * max(_norm(x), 1.0))
    if rank >= problem.d:
        return None
    q = Vh[rank]  # a right singular vector of a zero singular value: W q = 0
    u = torch.tensor(cert.u, dtype=W.dtype)
    v = torch.tensor(cert.v, dtype=W.dtype)
    lw, lh = problem.lw, problem.lh
    s_w = (lh / lw) ** 0.25
    s_h = 1.0 / s_w
    n = math.sqrt(s_w**2 + s_h**2)
    dW = torch.outer(u, q) * (-s_w / n)
    dH = torch.outer(v, q) * (s_h / n)
    dx = (dW, dH) + ((torch.zeros_like(x[2]),) if len(x) > 2 else ())
    thr = math.sqrt(lw * lh)
    predicted = 2 * thr * (thr - cert.sigma_1) / (lw + lh)
    measured = problem.manifold.inner(x, dx, problem.rhess(x, dx))
    return NullDirection(dx, q, s_w, s_h, predicted, measured)
