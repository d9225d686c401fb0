"""The normalized UFM (Yaras et al. 2022) on the oblique manifold: closed form and structure.

``f(W,H) = (1/N) sum_{k,i} CE(tau W h_{k,i}, k)``, |w_k| = |h_{k,i}| = 1 (product of spheres),
temperature tau > 0 (REFERENCE.md section 2).  Cost and derivatives are the logit family's
(:mod:`nclab.ufm.problems.logit`) with scale s = tau and no penalties; the Riemannian derivatives
come from the manifold (:class:`nclab.manifolds.Oblique`).  Closed form for d >= K-1:
``f* = log(1 + (K-1) exp(-tau K/(K-1)))``, W a simplex ETF and h_{k,i} = w_k.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from nclab._validation import check_int, check_real
from nclab.geometry import etf_gram_error, simplex_etf
from nclab.manifolds import Oblique, Product
from nclab.ufm.problems.logit import _CELoss, _LogitProblem

__all__ = ["NormalizedProblem"]


class NormalizedProblem(_CELoss, _LogitProblem):
    """Normalized UFM (Yaras et al. 2022; REFERENCE.md section 2) on the oblique manifold:

    ``f(W,H) = (1/N) sum_{k,i} CE(tau W h_{k,i}, k)``, |w_k| = |h_{k,i}| = 1, tau > 0.

    ``optimum = log(1 + (K-1) exp(-tau K/(K-1)))`` for d >= K-1 (W a simplex ETF, h_{k,i} = w_k),
    else None."""

    loss = "normalized"

    def __init__(self, K, n, d, tau, *, device=None, dtype=None):
        super().__init__(device=device, dtype=dtype)
        self.K = check_int("K", K, minimum=2)
        self.n = check_int("n", n, minimum=1)
        self.d = check_int("d", d, minimum=1)
        self.tau = check_real("tau", tau, positive=True)
        self._scale = self.tau
        self._setup_labels(torch.full((self.K,), self.n, dtype=torch.long))
        self.manifold = Product(Oblique(self.K, self.d), Oblique(self.N, self.d))

    @property
    def optimum(self) -> float | None:
        if self.d < self.K - 1:
            return None
        K = self.K
        return math.log1p((K - 1) * math.exp(-self.tau * K / (K - 1)))

    def optimal_point(self, seed: int | None = None):
        if self.optimum is None:
            return None
        W = simplex_etf(self.K, self.d, seed=seed)
        return self.place((W, W[self.labels].clone()))

    def structure(self, x) -> dict[str, float | None]:
        """``feature_error`` = max |h_{k,i} - w_k| and ``etf_W`` =
        :func:`nclab.geometry.etf_gram_error` (W) (both 0 at a global minimiser); {} for d < K-1."""
        if self.optimum is None:
            return {}
        W, H = x[0].detach(), x[1].detach()
        return {"feature_error": float((H - W[self.labels.to(W.device)]).abs().max()), "etf_W": etf_gram_error(W)}

    def random_start(self, seed: int) -> tuple:
        """Uniform (normalised Gaussian) rows, reproducible from ``seed``."""
        return self.place(self.manifold.random_point(torch.Generator().manual_seed(int(seed))))

    def describe(self) -> dict[str, Any]:
        return {"loss": self.loss, "K": self.K, "n": self.n, "d": self.d, "tau": self.tau, **self._where()}
