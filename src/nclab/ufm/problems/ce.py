"""The cross-entropy UFM (Zhu et al. 2021): its closed form, its minimiser's structure, its zero point.

``f(W,H,b) = (1/N) sum_i CE(z_i, y_i) + lw/2 |W|_F^2 + lh/2 |H|_F^2 + lb/2 |b|^2``, ``Z = H W^T + 1 b^T``
(REFERENCE.md section 2, batch-first).  Cost and derivatives come from
:mod:`nclab.ufm.problems.logit`; this module owns the CE-specific facts:

* the closed form, balanced classes (beta = sqrt(n lw lh)):
  ``f* = log(1 + (K-1) e^{-m*}) + (K-1) beta m*``, ``m* = log(1/beta - (K-1))`` if beta < 1/K
  (needs d >= K-1), else m* = 0 and W = H = 0 (f* = log K, any d).  Derivation: with
  h_{k,i} = c w_k (c = sqrt(lw/(n lh))) and the rows of W a simplex ETF of squared norm rho, the
  margin is m = c rho K/(K-1), the CE term log(1 + (K-1) e^{-m}) and the penalties
  lw K rho / 2 + lh N c^2 rho / 2 = lw K rho = (K-1) beta m; minimising over m >= 0 gives m*, and
  rho* = m* (K-1)/K sqrt(n lh/lw).  This agrees with REFERENCE.md.  ``(m*, rho*)`` is computed once
  per problem (:attr:`CEProblem.collapse`) and used by ``optimum``, ``optimal_point`` and
  ``structure``;
* the flat direction b -> b + t 1 of a free, unpenalised bias (softmax ignores a common shift);
* the optimal bias at W = H = 0 (softmax(b) = class frequencies, or a Newton solve with lb > 0)
  and the bias block of the Hessian there.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any

import torch

from nclab.geometry import etf_gram_error, simplex_etf
from nclab.ufm.problems.logit import _CELoss, _PenalizedUFM

__all__ = ["CEProblem"]

_DTYPE = torch.float64


class CEProblem(_CELoss, _PenalizedUFM):
    """Cross-entropy UFM (Zhu et al. 2021; REFERENCE.md section 2):

    ``f(W,H,b) = (1/N) sum_{k,i} CE(W h_{k,i} + b, k) + lw/2 |W|^2 + lh/2 |H|^2 + lb/2 |b|^2``.

    Parameters
    ----------
    K : classes (>= 2); n : samples per class (>= 1; ignored when ``class_sizes`` is given, then
        ``n`` is the rounded mean class size); d : feature dimension (>= 1);
    lw, lh : weight decay of W and H (> 0); lb : weight decay of b (>= 0);
    bias : whether b is a variable (else b = 0);
    class_sizes : optional K class sizes (imbalanced; no closed form is known).

    ``optimum``: log(1 + (K-1) e^{-m*}) + (K-1) beta m* (balanced, d >= K-1 or beta >= 1/K).
    """

    loss = "ce"

    @cached_property
    def collapse(self) -> tuple[float, float] | None:
        """``(m*, rho*)``: the optimal margin and squared classifier norm |w_k|^2 (balanced classes,
        beta < 1/K); ``(0.0, 0.0)`` when beta >= 1/K (the minimiser W = H = 0); None where no
        closed form is known (imbalanced, or d < K-1 with beta < 1/K)."""
        if not self.balanced:
            return None
        K, beta = self.K, self.beta
        if beta >= 1.0 / K:
            return 0.0, 0.0
        if self.d < K - 1:
            return None
        m = math.log(1.0 / beta - (K - 1))
        rho = m * (K - 1) / K * math.sqrt(self.n * self.lh / self.lw)
        return m, rho

    @property
    def _zero_is_optimal(self) -> bool:
        return self.beta >= 1.0 / self.K

    @property
    def optimum(self) -> float | None:
        cf = self.collapse
        if cf is None:
            return None
        if self._zero_is_optimal:
            return math.log(self.K)
        m = cf[0]
        return math.log1p((self.K - 1) * math.exp(-m)) + (self.K - 1) * self.beta * m

    def optimal_point(self, seed: int | None = None):
        """A global minimiser: W = sqrt(rho) M (M the unit simplex ETF, rotated by ``seed``),
        rho = |w_k|^2 = m* (K-1)/K sqrt(n lh/lw), h_{k,i} = sqrt(lw/(n lh)) w_k, b = 0
        (W = H = 0 when beta >= 1/K).  None where ``optimum`` is None."""
        cf = self.collapse
        if cf is None:
            return None
        if self._zero_is_optimal:
            return self.zero_critical_point()
        rho = cf[1]
        W = math.sqrt(rho) * simplex_etf(self.K, self.d, seed=seed)
        H = math.sqrt(self.lw / (self.n * self.lh)) * W[self.labels]
        return self._pack(W, H, torch.zeros(self.K, dtype=_DTYPE) if self.has_bias else None)

    def structure(self, x) -> dict[str, float | None]:
        """Distance of x to the CE minimiser's structure (all 0 at a global minimiser):

        * beta < 1/K: ``feature_ratio_error`` = |H - sqrt(lw/(n lh)) W[labels]|/|H|,
          ``norm_error`` = max_k ||w_k|^2 - rho*| / rho*, ``etf_W`` =
          :func:`nclab.geometry.etf_gram_error` (W), and with a bias ``bias_spread`` = std of b /
          (1 + mean |b|) (b = b* 1);
        * beta >= 1/K: ``zero_norm`` = |(W, H)|_F (the minimiser is W = H = 0);
        * no closed form (imbalanced, d < K-1): {}."""
        cf = self.collapse
        if cf is None:
            return {}
        W, H = x[0].detach(), x[1].detach()
        if self._zero_is_optimal:
            return {"zero_norm": self._zero_norm(W, H)}
        rho = cf[1]
        out: dict[str, float | None] = {"feature_ratio_error": self._feature_ratio_error(W, H)}
        out["norm_error"] = float(((W * W).sum(1) - rho).abs().max()) / rho
        out["etf_W"] = etf_gram_error(W)
        if self.has_bias:
            b = x[2].detach()
            out["bias_spread"] = float(b.std(unbiased=False)) / (1.0 + float(b.abs().mean()))
        return out

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["class_sizes"] = self.class_sizes.tolist() if self._given_sizes else None
        return out

    @property
    def has_shift_symmetry(self) -> bool:
        """A free, unpenalised bias: softmax ignores b -> b + t 1."""
        return self.has_bias and self.lb == 0

    def flat_directions(self, x) -> list[tuple]:
        """The common shift (0, 0, 1) of a free, unpenalised bias (none otherwise)."""
        if not self.has_shift_symmetry:
            return []
        return [(torch.zeros_like(x[0]), torch.zeros_like(x[1]), torch.ones_like(x[2]))]

    # --- the critical point W = H = 0 --------------------------------------------------------
    def _zero_bias(self) -> torch.Tensor:
        """softmax(b) must be the class frequencies pi (lb = 0: b = log pi, centred); with lb > 0,
        ``softmax(b) - pi + lb b = 0`` is solved by a damped Newton iteration (b = 0 if balanced)."""
        pi = self.class_sizes.to(_DTYPE) / self.N
        if self.balanced:
            return torch.zeros(self.K, dtype=_DTYPE)
        if self.lb == 0:
            b = torch.log(pi)
            return b - b.mean()
        b = torch.zeros(self.K, dtype=_DTYPE)

        def obj(v):
            return float(torch.logsumexp(v, 0) - pi @ v + 0.5 * self.lb * v @ v)

        for _ in range(100):  # strictly convex in K variables: Newton converges in a few steps
            p = torch.softmax(b, 0)
            g = p - pi + self.lb * b
            if float(g.abs().max()) < 1e-15:
                break
            Hm = torch.diag(p) - torch.outer(p, p) + self.lb * torch.eye(self.K, dtype=_DTYPE)
            step = torch.linalg.solve(Hm, g)
            t, f0 = 1.0, obj(b)
            while obj(b - t * step) > f0 - 0.25 * t * float(g @ step) and t > 1e-10:
                t *= 0.5
            b = b - t * step
        return b

    def _zero_row(self) -> torch.Tensor:
        if not self.has_bias:
            return torch.full((self.K,), 1.0 / self.K, dtype=_DTYPE)
        return torch.softmax(self._zero_bias(), 0)

    def _zero_bias_block_eigs(self, deflate: bool) -> torch.Tensor:
        """Eigenvalues of ``diag(q) - q q^T + lb I``; with ``deflate`` and the shift symmetry, the
        zero eigenvalue along 1 is left out (eigvalsh sorts ascending, so it is the first)."""
        q = self._zero_row()
        eigs = torch.linalg.eigvalsh(torch.diag(q) - torch.outer(q, q) + self.lb * torch.eye(self.K, dtype=_DTYPE))
        return eigs[1:] if deflate and self.has_shift_symmetry else eigs
