"""The mean-squared-error UFM (Zhou et al. 2022): closed forms in every bias regime, structure checks.

``f(W,H,b) = 1/(2N) |Z - Y|_F^2 + lw/2 |W|_F^2 + lh/2 |H|_F^2 + lb/2 |b|^2``, ``Z = H W^T + 1 b^T``
(REFERENCE.md section 2, batch-first).  Cost and derivatives come from
:mod:`nclab.ufm.problems.logit`; this module owns the MSE-specific facts.

Closed forms (derived by singular value thresholding: the penalties of a factorisation Z = H W^T
are at least sqrt(lw lh) |Z|_* with equality for balanced factors, and a centring projection does
not increase |Z|_*); with beta = sqrt(n lw lh) and phi = beta (1 - K beta/2) if K beta < 1 else
1/(2K):

* no bias: ``f* = r phi + (K - r)/(2K)``, r = min(d, K) (REFERENCE: K beta (1 - K beta/2) for
  d >= K);
* free bias (lb = 0): ``f* = r phi + (K-1-r)/(2K)``, r = min(d, K-1), b* = 1/K 1 (REFERENCE:
  (K-1) beta (1 - K beta/2); for K beta >= 1 the minimiser W = H = 0 gives (K-1)/(2K));
* penalised bias (lb > 0, not in REFERENCE.md; derived here by averaging a minimiser of the convex
  problem in Z over the class-permutation symmetry, which forces Z = Y (p (I - J/K) + s J/K)):
  ``f* = (K-1) phi + psi`` with mu = lb/(1+lb), psi = beta (1 - K beta/(2 mu)) if K beta < mu else
  mu/(2K); p = max(0, 1 - K beta), s = max(0, 1 - K beta/mu), b* = (1-s)/(K(1+lb)) 1; it needs
  d >= rank = (K-1)[p>0] + [s>0], else None.

The closed form is computed once per problem (:attr:`MSEProblem.closed_form`) and used by
``optimum``, ``optimal_point`` and ``structure``.
"""

from __future__ import annotations

import math
from functools import cached_property

import torch

from nclab.geometry import etf_gram_error, orthogonal_frame, random_orthogonal, simplex_etf
from nclab.ufm.problems.logit import _MSELoss, _PenalizedUFM

__all__ = ["MSEProblem"]

_DTYPE = torch.float64


class MSEProblem(_MSELoss, _PenalizedUFM):
    """Mean-squared-error UFM (Zhou et al. 2022; REFERENCE.md section 2):

    ``f(W,H,b) = 1/(2N) |W H + b 1^T - Y|_F^2 + lw/2 |W|^2 + lh/2 |H|^2 + lb/2 |b|^2``
    (paper's orientation; here ``|H W^T + 1 b^T - Y|``).

    Parameters as :class:`~nclab.ufm.problems.CEProblem` (balanced classes only).  Closed forms:
    see the module docstring (REFERENCE.md's two cases, their d < rank extensions, and lb > 0
    derived here).
    """

    loss = "mse"

    def __init__(self, K, n, d, lw, lh, lb=0.0, bias=True, *, device=None, dtype=None):
        super().__init__(K, n, d, lw, lh, lb=lb, bias=bias, device=device, dtype=dtype)

    @cached_property
    def closed_form(self) -> tuple | None:
        """``(f*, p, s, rank, b*)`` or None: Z* = Y (p (I - J/K) + s J/K), see the module doc."""
        K, beta = self.K, self.beta
        p = max(0.0, 1.0 - K * beta)
        phi = beta * (1 - K * beta / 2) if K * beta < 1 else 1.0 / (2 * K)
        if not self.has_bias:
            r = min(self.d, K)
            return r * phi + (K - r) / (2 * K), p, p, r, None
        if self.lb == 0:
            r = min(self.d, K - 1)
            return r * phi + (K - 1 - r) / (2 * K), p, 0.0, r, 1.0 / K
        mu = self.lb / (1 + self.lb)
        s = max(0.0, 1.0 - K * beta / mu)
        psi = beta * (1 - K * beta / (2 * mu)) if K * beta < mu else mu / (2 * K)
        rank = (K - 1) * (p > 0) + (s > 0)
        if self.d < rank:
            return None
        return (K - 1) * phi + psi, p, s, rank, (1 - s) / (K * (1 + self.lb))

    @property
    def optimum(self) -> float | None:
        cf = self.closed_form
        return None if cf is None else cf[0]

    def optimal_point(self, seed: int | None = None):
        """A global minimiser ``W = (sqrt(n)/g)^{1/2} M^{1/2} E``, ``H = (g/sqrt(n))^{1/2} Y M^{1/2} E``
        (g = sqrt(lw/lh), M = p (I - J/K) + s J/K, E a K x d frame with E E^T the identity on the
        kept eigenspace of M), so that H W^T = Y M and the penalties are balanced
        (lw |W|^2 = lh |H|^2).  No bias: W is a scaled orthogonal frame; lb = 0: a scaled
        simplex ETF and b = 1/K 1; K beta >= 1: W = H = 0.  With d below the rank, the first d
        directions of the eigenspace are kept (all singular values are equal)."""
        cf = self.closed_form
        if cf is None:
            return None
        _, p, s, rank, b0 = cf
        K, d = self.K, self.d
        Q = random_orthogonal(d, seed) if seed is not None else torch.eye(d, dtype=_DTYPE)
        if not self.has_bias or s > 0:  # eigenspaces 1-perp (p) and 1 (s): an orthonormal frame
            if not self.has_bias:
                E = torch.zeros(K, d, dtype=_DTYPE)
                k = min(d, K)
                E[:k, :k] = torch.eye(k, dtype=_DTYPE)
                E = E @ Q
            else:
                E = orthogonal_frame(K, d, seed=seed)
            Mh = math.sqrt(p) * (torch.eye(K, dtype=_DTYPE) - 1.0 / K) + math.sqrt(s) / K
            B = Mh @ E
        elif rank == 0:
            B = torch.zeros(K, d, dtype=_DTYPE)
        else:  # s = 0: W lives on 1-perp; d >= K-1 gives the simplex ETF (E E^T = I - J/K)
            if d >= K - 1:
                B = math.sqrt(p) * math.sqrt((K - 1) / K) * simplex_etf(K, d, seed=seed)
            else:
                U = torch.linalg.qr(torch.eye(K, dtype=_DTYPE) - 1.0 / K)[0][:, : K - 1]
                B = math.sqrt(p) * (U[:, :d] @ Q)
        g = math.sqrt(self.lw / self.lh)
        W = math.sqrt(math.sqrt(self.n) / g) * B
        H = math.sqrt(g / math.sqrt(self.n)) * B[self.labels]
        return self._pack(W, H, torch.full((K,), b0, dtype=_DTYPE) if self.has_bias else None)

    def structure(self, x) -> dict[str, float | None]:
        """Distance of x to the MSE minimiser's structure (all 0 at a global minimiser):

        * K beta >= 1: ``zero_norm`` = |(W, H)|_F (the minimiser is W = H = 0);
        * otherwise ``feature_ratio_error`` = |H - sqrt(lw/(n lh)) W[labels]|/|H| (balanced
          factors), and with a free bias (lb = 0) ``bias_error`` = |b - 1/K|_inf and ``etf_W``
          (:func:`nclab.geometry.etf_gram_error`), without a bias and d >= K ``orthogonality_W`` =
          |W W^T/|W W^T|_F - I/sqrt(K)|_F;
        * no closed form (lb > 0 with d below the rank): {}."""
        if self.closed_form is None:
            return {}
        W, H = x[0].detach(), x[1].detach()
        K = self.K
        if K * self.beta >= 1.0:
            return {"zero_norm": self._zero_norm(W, H)}
        out: dict[str, float | None] = {"feature_ratio_error": self._feature_ratio_error(W, H)}
        if self.has_bias and self.lb == 0:
            b = x[2].detach()
            out["bias_error"] = float((b - 1.0 / K).abs().max())
            out["etf_W"] = etf_gram_error(W)
        elif not self.has_bias and self.d >= K:
            G = W @ W.T
            out["orthogonality_W"] = float((G / G.norm() - torch.eye(K, dtype=G.dtype, device=G.device) / math.sqrt(K)).norm())
        return out

    # --- the critical point W = H = 0 --------------------------------------------------------
    def _zero_bias(self) -> torch.Tensor:
        """b minimising 1/(2N)|1 b^T - Y|^2 + lb/2 |b|^2: the class frequencies / (1 + lb)."""
        return self.class_sizes.to(_DTYPE) / (self.N * (1 + self.lb))

    def _zero_row(self) -> torch.Tensor:
        return self._zero_bias() if self.has_bias else torch.zeros(self.K, dtype=_DTYPE)

    def _zero_bias_block_eigs(self, deflate: bool) -> torch.Tensor:
        """``(1 + lb) I``: no flat direction to deflate."""
        return torch.full((self.K,), 1.0 + self.lb, dtype=_DTYPE)
