"""Cross-entropy of n points on the sphere (Lu & Steinerberger 2022): cost, derivatives, closed form,
frame statistics.

``E(X) = (1/n) sum_i -log( exp(tau <x_i,x_i>) / sum_j exp(tau <x_i,x_j>) )``, X n x d with unit rows
(REFERENCE.md section 2).  With Z = tau X X^T, P its row softmax and G = (P - I)/n:
``grad = tau (G + G^T) X``; along V, ``dZ = tau (V X^T + X V^T)``, ``dG = (P*dZ - P*rowsum(P*dZ))/n``
and ``Hess[V] = tau ((dG + dG^T) X + (G + G^T) V)``, all with the stable kernels of
:mod:`nclab.ufm.problems.logit`.  Closed form ``E* = log(1 + (n-1) exp(-tau n/(n-1)))`` for
d >= n-1 (the simplex ETF), else None.  The point's structure is measured by its frame potential
(Benedetto & Fickus 2003) and, with a closed form, the distance of its Gram to the simplex ETF's.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from nclab._validation import check_int, check_real
from nclab.geometry import etf_gram_error, frame_potential, frame_potential_bound, frame_potential_excess
from nclab.geometry import simplex_etf, welch_bound
from nclab.manifolds import Oblique, Product
from nclab.ufm.problems.base import UFMProblem
from nclab.ufm.problems.logit import _softmax_hvp, ce_label_gradient, stable_cross_entropy

__all__ = ["SphereProblem"]


class SphereProblem(UFMProblem):
    """Cross-entropy of n points on the sphere (Lu & Steinerberger 2022; REFERENCE.md section 2):

    ``E(X) = (1/n) sum_i -log( exp(tau <x_i,x_i>) / sum_j exp(tau <x_i,x_j>) )``, X n x d, unit rows.

    With Z = tau X X^T, P its row softmax and G = (P - I)/n: ``grad = tau (G + G^T) X``; along V,
    ``dZ = tau (V X^T + X V^T)``, ``dG = (P*dZ - P*rowsum(P*dZ))/n`` and
    ``Hess[V] = tau ((dG + dG^T) X + (G + G^T) V)``.  ``optimum = log(1 + (n-1) exp(-tau n/(n-1)))``
    for d >= n-1 (the simplex ETF; by Jensen this bound holds for every tau), else None.

    Each point is its own class: K = N = n_points, n = 1, labels = arange(n_points);
    ``classifier(x) = features(x) = X``; the O(d) orbit is ``X -> X Q^T``."""

    loss = "sphere"
    rotating_factors = (0,)

    def __init__(self, n_points, d, tau, *, device=None, dtype=None):
        super().__init__(device=device, dtype=dtype)
        self.n_points = check_int("n_points", n_points, minimum=2)
        self.d = check_int("d", d, minimum=1)
        self.tau = check_real("tau", tau, positive=True)
        self.K = self.N = self.n_points
        self.n = 1
        self.class_sizes = torch.ones(self.K, dtype=torch.long)
        self.labels = torch.arange(self.K)
        self._rows = self.labels.to(self.device)
        self.manifold = Product(Oblique(self.n_points, self.d))

    def _compute(self, x) -> dict:
        X = x[0]
        Z = torch.mm(X, X.T).mul_(self.tau)
        rows = self._rows
        ce, P, pivot = stable_cross_entropy(Z, rows, rows)  # row i's label is i
        cost = float(ce.sum(dtype=torch.float64)) / self.n_points  # float64 sum, as the logit problems
        G = ce_label_gradient(P.clone(), rows, rows, 1.0 / self.n_points)
        return {"cost": cost, "P": P, "pivot": pivot, "G": G, "Gs": G + G.T}

    def _egrad(self, x, state):
        return (self.tau * (state["Gs"] @ x[0]),)

    def _ehess(self, x, state, u):
        X, V = x[0], u[0]
        A = V @ X.T
        dG = _softmax_hvp(state["P"], self.tau * (A + A.T), state["pivot"]) / self.n_points
        return (self.tau * ((dG + dG.T) @ X + state["Gs"] @ V),)

    @property
    def optimum(self) -> float | None:
        n = self.n_points
        if self.d < n - 1:
            return None
        return math.log1p((n - 1) * math.exp(-self.tau * n / (n - 1)))

    def optimal_point(self, seed: int | None = None):
        if self.optimum is None:
            return None
        return self.place((simplex_etf(self.n_points, self.d, seed=seed),))

    def structure(self, x) -> dict[str, float | None]:
        """``frame_potential_excess`` = FP / max(n, n^2/d) - 1 (computed without cancellation,
        :func:`nclab.geometry.frame_potential_excess`; 0 for a tight frame) and, for d >= n-1,
        ``etf_X`` = :func:`nclab.geometry.etf_gram_error` (X)."""
        X = x[0].detach()
        out: dict[str, float | None] = {"frame_potential_excess": frame_potential_excess(X)}
        if self.optimum is not None:
            out["etf_X"] = etf_gram_error(X)
        return out

    def random_start(self, seed: int) -> tuple:
        return self.place(self.manifold.random_point(torch.Generator().manual_seed(int(seed))))

    def classifier(self, x) -> torch.Tensor:
        return x[0]

    def features(self, x) -> torch.Tensor:
        return x[0]

    def bias(self, x):
        return None

    def metrics(self, x) -> dict[str, float | None]:
        """Frame statistics of the points: frame potential, its bound max(n, n^2/d) and the relative
        excess FP/bound - 1 (``nclab.geometry.frame_potential_excess``, without cancellation), the
        Welch bound and the maximal coherence max_{i != j} |<x_i, x_j>|, and the distance of the
        Gram to the simplex ETF's (``nclab.geometry.etf_gram_error``)."""
        X = x[0].detach()
        n, d = X.shape
        C = (X @ X.T).abs()
        C.fill_diagonal_(0.0)
        return {
            "frame_potential": frame_potential(X),
            "frame_potential_bound": frame_potential_bound(n, d),
            "frame_potential_excess": frame_potential_excess(X),
            "welch_bound": welch_bound(n, d),
            "max_coherence": float(C.max()),
            "etf_gram_error": etf_gram_error(X),
        }

    def describe(self) -> dict[str, Any]:
        return {"loss": self.loss, "n_points": self.n_points, "d": self.d, "tau": self.tau, **self._where()}
