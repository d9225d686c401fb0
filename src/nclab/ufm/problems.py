"""Unconstrained feature model (UFM) problems: cost, hand-derived derivatives, closed-form optima.

Every problem is the objective of REFERENCE.md section 2, with exactly its normalisation, written in
nclab's batch-first convention (W is K x d with rows w_k, H is N x d with rows h_{k,i} -- the
paper's H^T --, b in R^K).  Samples are ordered class-major: ``labels = arange(K).repeat_interleave
(class_sizes)``.  With logits ``Z = H W^T + 1 b^T`` (N x K) and Y the one-hot labels (N x K):

* CE UFM (Zhu et al. 2021)
  ``f(W,H,b) = (1/N) sum_i CE(z_i, y_i) + lw/2 |W|_F^2 + lh/2 |H|_F^2 + lb/2 |b|^2``
* MSE UFM (Zhou et al. 2022)
  ``f(W,H,b) = 1/(2N) |Z - Y|_F^2 + lw/2 |W|_F^2 + lh/2 |H|_F^2 + lb/2 |b|^2``
* Normalized UFM (Yaras et al. 2022), on the oblique manifold (unit rows of W and H)
  ``f(W,H) = (1/N) sum_i CE(tau W h_i, y_i)``
* Cross-entropy of n points on the sphere (Lu & Steinerberger 2022), X n x d with unit rows
  ``E(X) = (1/n) sum_i -log(exp(tau <x_i,x_i>) / sum_j exp(tau <x_i,x_j>))``

Derivatives are derived by hand (matrix products only, no autograd).  With ``G = dL/dZ``
(``(P - Y)/N`` for CE, P the row softmax; ``(Z - Y)/N`` for MSE):
``grad_W = G^T H + lw W``, ``grad_H = G W + lh H``, ``grad_b = G^T 1 + lb b``.  Along (U, V, c),
``dZ = V W^T + H U^T + 1 c^T`` and ``dG = (P*dZ - P*rowsum(P*dZ))/N`` (CE) or ``dZ/N`` (MSE):
``Hess_W = dG^T H + G^T V + lw U``, ``Hess_H = dG W + G U + lh V``, ``Hess_b = dG^T 1 + lb c``.
What depends only on the point (logits, softmax, G, the gradient) is cached per point, keyed on the
identity and ``_version`` of the point's tensors, so the many Hessian-vector products of one
trust-region step do not recompute them.

Closed forms (``optimum``, ``optimal_point``), derived again here for this normalisation
(beta = sqrt(n lw lh)):

* CE, balanced: ``f* = log(1 + (K-1) e^{-m*}) + (K-1) beta m*``, ``m* = log(1/beta - (K-1))`` if
  beta < 1/K (needs d >= K-1), else m* = 0 and W = H = 0 (f* = log K, any d).  Derivation: with
  h_{k,i} = c w_k (c = sqrt(lw/(n lh))) and the rows of W a simplex ETF of squared norm rho, the
  margin is m = c rho K/(K-1), the CE term log(1 + (K-1) e^{-m}) and the penalties
  lw K rho / 2 + lh N c^2 rho / 2 = lw K rho = (K-1) beta m; minimising over m >= 0 gives m*.
  This agrees with REFERENCE.md.
* MSE (derived by singular value thresholding: the penalties of a factorisation Z = H W^T are at
  least sqrt(lw lh) |Z|_* with equality for balanced factors, and a centring projection does not
  increase |Z|_*): with phi = beta (1 - K beta/2) if K beta < 1 else 1/(2K),
  no bias: ``f* = r phi + (K - r)/(2K)``, r = min(d, K) (REFERENCE: K beta (1 - K beta/2) for d >= K);
  free bias (lb = 0): ``f* = r phi + (K-1-r)/(2K)``, r = min(d, K-1), b* = 1/K 1 (REFERENCE:
  (K-1) beta (1 - K beta/2); for K beta >= 1 the minimiser W = H = 0 gives (K-1)/(2K));
  penalised bias (lb > 0, not in REFERENCE.md; derived here by averaging a minimiser of the convex
  problem in Z over the class-permutation symmetry, which forces Z = Y (p (I - J/K) + s J/K)):
  ``f* = (K-1) phi + psi`` with mu = lb/(1+lb), psi = beta (1 - K beta/(2 mu)) if K beta < mu else
  mu/(2K); p = max(0, 1 - K beta), s = max(0, 1 - K beta/mu), b* = (1-s)/(K(1+lb)) 1; it needs
  d >= rank = (K-1)[p>0] + [s>0], else None.
* Normalized: ``f* = log(1 + (K-1) exp(-tau K/(K-1)))``, W a simplex ETF, h_{k,i} = w_k (d >= K-1).
* Sphere: ``E* = log(1 + (n-1) exp(-tau n/(n-1)))`` for d >= n-1 (the simplex ETF), else None.

Known critical point W = H = 0 (with its optimal bias): ``zero_critical_point()``; the smallest
eigenvalue of the Hessian's (W, H) block there is ``(lw+lh)/2 - sqrt(((lw-lh)/2)^2 + sigma^2)``
with sigma the largest singular value of G (= 1/(K sqrt(n)) for balanced classes; REFERENCE.md).
The full Hessian also has the bias block (CE: eigenvalues 1/K + lb on 1-perp and lb along 1; MSE:
1 + lb), so its smallest eigenvalue is the minimum of the two (``zero_point_min_eig``); it is
negative exactly when beta < 1/K either way.

Example
-------
>>> from nclab.ufm.problems import make_problem
>>> p = make_problem("ce", K=4, n=5, d=4, lw=5e-3, lh=5e-3)
>>> x = p.optimal_point(seed=0)
>>> abs(p.cost(x) - p.optimum) < 1e-12
True
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from nclab.geometry import etf_gram_error, frame_potential, frame_potential_bound, frame_potential_excess
from nclab.geometry import orthogonal_frame
from nclab.geometry import random_orthogonal, simplex_etf, welch_bound
from nclab.ufm.manifolds import Euclidean, Oblique, Product

__all__ = [
    "UFMProblem",
    "CEProblem",
    "MSEProblem",
    "NormalizedProblem",
    "SphereProblem",
    "make_problem",
    "zero_point_min_eig",
    "LOSSES",
    "DEFAULTS",
]

_DTYPE = torch.float64

#: The factory's (and the CLI's) defaults.  beta = sqrt(n lw lh) ~ 0.011 < 1/K, so the CE and MSE
#: optima are non-trivial collapsed configurations; d = K (the default when d is not given).
DEFAULTS: dict[str, dict[str, Any]] = {
    "ce": dict(K=4, n=5, d=None, lw=5e-3, lh=5e-3, lb=0.0, bias=True, class_sizes=None),
    "mse": dict(K=4, n=5, d=None, lw=5e-3, lh=5e-3, lb=0.0, bias=True),
    "normalized": dict(K=4, n=5, d=None, tau=5.0),
    "sphere": dict(n_points=4, d=3, tau=5.0),
}
LOSSES = tuple(DEFAULTS)


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def _int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _float(name: str, value, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a real number, got {value!r}") from None
    value = float(value)
    if not math.isfinite(value) or (value <= 0 if positive else value < 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value!r}")
    return value


def _bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def zero_point_min_eig(K: int, n: int, lw: float, lh: float) -> float:
    """REFERENCE.md's smallest Hessian eigenvalue of the (W, H) block at W = H = 0 (balanced CE
    or MSE UFM): ``(lw+lh)/2 - sqrt(((lw-lh)/2)^2 + sigma^2)``, ``sigma = 1/(K sqrt(n))``.

    Derivation: at W = H = 0 the (W, H) block of the Hessian is ``[[lw I, G^T.], [G., lh I]]``
    (the only second-order term of the loss is 2 <G, V U^T>), whose eigenvalues are
    ``(lw+lh)/2 -+ sqrt(((lw-lh)/2)^2 + s^2)`` over the singular values s of G; for balanced classes
    the largest is ``|Y - J/K|_2 / N = sqrt(n)/(nK)``.  Negative exactly when
    beta = sqrt(n lw lh) < 1/K."""
    K = _int("K", K, 2)
    n = _int("n", n, 1)
    lw = _float("lw", lw, positive=False)
    lh = _float("lh", lh, positive=False)
    sigma = 1.0 / (K * math.sqrt(n))
    return (lw + lh) / 2 - math.hypot((lw - lh) / 2, sigma)


# --------------------------------------------------------------------------------------------
# base class
# --------------------------------------------------------------------------------------------


class UFMProblem:
    """Base class: a manifold, a cost with hand-derived gradient and Hessian-vector product, a
    per-point cache and evaluation counters.  Points and tangent vectors are tuples of float64
    tensors (``manifold`` is always a :class:`Product`).

    Subclasses implement ``_compute(x)`` (cost and the cached quantities), ``_egrad(x, state)``
    and ``_ehess(x, state, u)``."""

    loss: str = ""
    manifold: Product
    K: int
    n: int
    d: int
    N: int
    labels: torch.Tensor
    class_sizes: torch.Tensor

    def __init__(self) -> None:
        self.counts = {"cost": 0, "grad": 0, "hess": 0}
        self._cache: list[tuple[tuple, tuple, dict]] = []  # small LRU of (tensors, versions, state)

    # --- per-point cache ------------------------------------------------------------------------
    _CACHE_SIZE = 2

    def _state(self, x) -> dict:
        """The cached per-point state; recomputed when the tensors or their versions changed.

        The cache holds references to the tensors themselves, so an id cannot be reused by a new
        tensor while its entry exists."""
        if not isinstance(x, (tuple, list)) or len(x) != len(self.manifold.factors):
            raise ValueError(f"a point of this problem is a tuple of {len(self.manifold.factors)} tensors")
        versions = tuple(t._version for t in x)
        for i, (tensors, vers, state) in enumerate(self._cache):
            if vers == versions and all(a is b for a, b in zip(tensors, x)):
                if i:
                    self._cache.insert(0, self._cache.pop(i))
                return state
        state = self._compute(tuple(x))
        self._cache.insert(0, (tuple(x), versions, state))
        del self._cache[self._CACHE_SIZE :]
        return state

    def _grad_from_state(self, x, state):
        if "egrad" not in state:
            state["egrad"] = self._egrad(x, state)
        return state["egrad"]

    # --- public evaluation API ----------------------------------------------------------------
    def cost(self, x) -> float:
        self.counts["cost"] += 1
        return float(self._state(x)["cost"])

    def egrad(self, x) -> tuple:
        """Euclidean gradient (tuple shaped like x)."""
        self.counts["grad"] += 1
        return self._grad_from_state(x, self._state(x))

    def cost_and_egrad(self, x) -> tuple[float, tuple]:
        """Cost and Euclidean gradient in one call (counts one cost and one gradient)."""
        self.counts["cost"] += 1
        self.counts["grad"] += 1
        state = self._state(x)
        return float(state["cost"]), self._grad_from_state(x, state)

    def ehess(self, x, u) -> tuple:
        """Euclidean Hessian-vector product D^2 f(x)[u]."""
        self.counts["hess"] += 1
        return self._ehess(x, self._state(x), u)

    def rgrad(self, x) -> tuple:
        """Riemannian gradient ``manifold.egrad2rgrad(x, egrad(x))``."""
        return self.manifold.egrad2rgrad(x, self.egrad(x))

    def rhess(self, x, u) -> tuple:
        """Riemannian Hessian-vector product ``manifold.ehess2rhess(x, egrad, ehess[u], u)``
        (u is assumed tangent; counts one Hessian, the gradient comes from the cache)."""
        self.counts["hess"] += 1
        state = self._state(x)
        g = self._grad_from_state(x, state)
        return self.manifold.ehess2rhess(x, g, self._ehess(x, state, u), u)

    def reset_counts(self) -> None:
        for k in self.counts:
            self.counts[k] = 0

    # --- structure ----------------------------------------------------------------------------
    @property
    def optimum(self) -> float | None:  # pragma: no cover - overridden
        return None

    def optimal_point(self, seed: int | None = None):  # pragma: no cover - overridden
        return None

    def random_start(self, seed: int) -> tuple:  # pragma: no cover - overridden
        raise NotImplementedError

    def classifier(self, x) -> torch.Tensor:
        return x[0]

    def features(self, x) -> torch.Tensor:
        return x[1]

    def bias(self, x) -> torch.Tensor | None:
        return x[2] if len(x) > 2 else None

    def symmetry_directions(self, x) -> list[tuple]:
        """Tangent directions of the symmetry orbit through x (zero-curvature directions of every
        critical point): ``(W A, H A, 0)`` for the skew basis matrices A = E_ab - E_ba (a < b),
        the derivative of f(W Q^T, H Q^T) = f(W, H) at Q = I."""
        W, H = x[0], x[1]
        out = []
        for a in range(self.d):  # d(d-1)/2 directions, each two column operations
            for c in range(a + 1, self.d):
                dirs = []
                for M in (W, H):
                    D = torch.zeros_like(M)
                    D[:, a] = -M[:, c]
                    D[:, c] = M[:, a]
                    dirs.append(D)
                out.append(tuple(dirs) + tuple(torch.zeros_like(t) for t in x[2:]))
        return out

    def metrics(self, x) -> dict[str, float | None]:
        """Neural-collapse metrics (REFERENCE.md section 3) of (features, labels, classifier, bias),
        nc4 included: ``nclab.metrics.compute_metrics(...).as_dict()``."""
        from nclab.metrics import compute_metrics  # lazy: the metrics module is independent

        b = self.bias(x)
        return compute_metrics(
            self.features(x).detach(), self.labels, self.classifier(x).detach(), None if b is None else b.detach()
        ).as_dict()

    def describe(self) -> dict[str, Any]:  # pragma: no cover - overridden
        return {"loss": self.loss}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "loss")
        return f"{type(self).__name__}({opts})"


# --------------------------------------------------------------------------------------------
# the logit family: Z = s H W^T (+ 1 b^T), loss L(Z) + penalties
# --------------------------------------------------------------------------------------------


def _sq_norm(A: torch.Tensor) -> float:
    """|A|_F^2 without a temporary."""
    return float(torch.linalg.vector_norm(A)) ** 2


def stable_cross_entropy(Z: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor | None = None):
    """Per-sample cross-entropy, softmax and the pivot of every row, with relative accuracy at
    every scale.  ``Z`` (N x K) is overwritten (it becomes the softmax P).

    With ``D_ij = z_ij - z_{i,y_i}`` and the pivot ``j*_i = argmax_j z_ij`` (``m_i = D_{i j*} >= 0``):

        CE(z_i, y_i) = m_i + log1p( sum_{j != j*} exp(D_ij - m_i) ),

    which is ``log1p(sum_{j != y} exp(z_j - z_y))`` when the label is the largest logit (the
    collapsed regime) and has no cancellation otherwise (m_i > 0 and the log1p argument >= 0).
    The textbook ``logsumexp(z) - z_y`` subtracts two numbers that agree to ~1/CE digits: at
    tau = 20 on the normalized UFM (CE ~ 1e-11) it keeps ~5 digits, at tau = 40 none.

    ``P_ij = exp(D_ij - m_i) / (1 + T_i)`` (T_i the log1p argument) has relative accuracy in every
    entry.  Returns ``(ce, P, pivot)``: ce (N,), P (N x K, in Z's storage), pivot (N,) long."""
    if rows is None:
        rows = torch.arange(Z.shape[0], device=Z.device)
    zy = Z[rows, labels]
    m, pivot = Z.max(dim=1)
    P = Z.sub_(m[:, None]).exp_()  # exp(z_j - z_max): entries in (0, 1], 1 at the pivot
    P[rows, pivot] = 0.0
    T = P.sum(dim=1)  # sum over j != j* (the pivot excluded exactly)
    P[rows, pivot] = 1.0
    ce = torch.log1p(T).add_(m - zy)  # m - z_y = m_i above (>= 0; exactly 0 when y is the pivot)
    P.div_((1.0 + T)[:, None])
    return ce, P, pivot


def ce_label_gradient(P: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor, scale: float) -> torch.Tensor:
    """``G = scale (P - Y)`` with the label entry formed as ``-scale sum_{j != y} P_j`` (not
    ``P_y - 1``, which cancels when the loss is small); P is overwritten."""
    P[rows, labels] = 0.0
    rest = P.sum(dim=1)  # sum_{j != y} P_ij, a sum of positive terms
    P[rows, labels] = -rest
    return P.mul_(scale)


def _softmax_hvp(P: torch.Tensor, dZ: torch.Tensor, pivot: torch.Tensor | None = None) -> torch.Tensor:
    """Row-wise softmax Jacobian applied to dZ: ``(diag(P) - P P^T) dZ`` per row.

    The Jacobian annihilates constant rows, so dZ is first shifted by its pivot entry,
    ``Delta = dZ - dZ_{j*} 1``, and the product is ``P * (Delta - <P, Delta>)``: ``<P, Delta>``
    then only sums the small off-pivot terms, and the pivot's entry ``-P_{j*} <P, Delta>`` is formed
    without the cancellation of ``P_{j*} (dZ_{j*} - <P, dZ>)`` (whose two terms agree to ~1/CE
    digits in the collapsed regime).  Without ``pivot`` the textbook form is used."""
    if pivot is None:
        PdZ = P * dZ
        return PdZ - P * PdZ.sum(dim=1, keepdim=True)
    rows = torch.arange(dZ.shape[0], device=dZ.device)
    Delta = dZ - dZ[rows, pivot][:, None]
    c = (P * Delta).sum(dim=1, keepdim=True)
    return Delta.sub_(c).mul_(P)


class _LogitProblem(UFMProblem):
    """Shared machinery of the CE, MSE and normalized UFMs: logits ``Z = s H W^T + 1 b^T``."""

    _scale: float = 1.0  # s (tau for the normalized UFM)
    lw = lh = lb = 0.0
    has_bias = False

    def _setup_labels(self, class_sizes: torch.Tensor) -> None:
        self.class_sizes = class_sizes
        self.N = int(class_sizes.sum())
        self.labels = torch.repeat_interleave(torch.arange(self.K), class_sizes)
        self._rows = torch.arange(self.N)
        self.balanced = bool((class_sizes == class_sizes[0]).all())

    # loss-specific: value and G = dL/dZ from the logits; and dG = D^2 L[dZ]
    def _loss(self, Z: torch.Tensor, state: dict) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def _loss_hvp(self, state: dict, dZ: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _compute(self, x) -> dict:
        W, H = x[0], x[1]
        # Z = s H W^T (+ 1 b^T) in one fused product; Z is private, so the loss may overwrite it.
        if self.has_bias:
            Z = torch.addmm(x[2], H, W.T, alpha=self._scale)
        else:
            Z = torch.mm(H, W.T)
            if self._scale != 1.0:
                Z.mul_(self._scale)
        state: dict = {}
        value = self._loss(Z, state)
        reg = 0.0
        if self.lw:
            reg += 0.5 * self.lw * _sq_norm(W)
        if self.lh:
            reg += 0.5 * self.lh * _sq_norm(H)
        if self.has_bias and self.lb:
            reg += 0.5 * self.lb * _sq_norm(x[2])
        state["cost"] = value + reg
        return state

    def _egrad(self, x, state):
        W, H = x[0], x[1]
        G = state["G"]
        s = self._scale
        # s G^T H + lw W and s G W + lh H, each one fused product
        gW = torch.addmm(W, G.T, H, beta=self.lw, alpha=s) if self.lw else torch.mm(G.T, H).mul_(s)
        gH = torch.addmm(H, G, W, beta=self.lh, alpha=s) if self.lh else torch.mm(G, W).mul_(s)
        if not self.has_bias:
            return (gW, gH)
        gb = G.sum(dim=0)
        if self.lb:
            gb = gb + self.lb * x[2]
        return (gW, gH, gb)

    def _ehess(self, x, state, u):
        W, H = x[0], x[1]
        U, V = u[0], u[1]
        G = state["G"]
        s = self._scale
        dZ = V @ W.T + H @ U.T
        if s != 1.0:
            dZ = s * dZ
        if self.has_bias:
            dZ = dZ + u[2]
        dG = self._loss_hvp(state, dZ)
        hW = s * (dG.T @ H + G.T @ V)
        hH = s * (dG @ W + G @ U)
        if self.lw:
            hW = hW + self.lw * U
        if self.lh:
            hH = hH + self.lh * V
        if not self.has_bias:
            return (hW, hH)
        hb = dG.sum(dim=0)
        if self.lb:
            hb = hb + self.lb * u[2]
        return (hW, hH, hb)


class _CELoss:
    """Mixin: mean cross-entropy of the logits; caches P (row softmax) and G = (P - Y)/N."""

    def _loss(self, Z, state):
        labels = self.labels.to(Z.device)
        ce, P, pivot = stable_cross_entropy(Z, labels, self._rows)  # Z becomes P
        state["P"] = P.clone()
        state["pivot"] = pivot
        state["G"] = ce_label_gradient(P, labels, self._rows, 1.0 / self.N)
        return float(ce.sum()) / self.N

    def _loss_hvp(self, state, dZ):
        return _softmax_hvp(state["P"], dZ, state["pivot"]).div_(self.N)


class _MSELoss:
    """Mixin: 1/(2N) |Z - Y|_F^2; caches G = (Z - Y)/N."""

    def _loss(self, Z, state):
        R = Z  # private to this evaluation: the residual overwrites it
        R[self._rows, self.labels.to(Z.device)] -= 1.0
        value = _sq_norm(R) / (2 * self.N)
        state["G"] = R.div_(self.N)
        return value

    def _loss_hvp(self, state, dZ):
        return dZ / self.N


class _PenalizedUFM(_LogitProblem):
    """CE/MSE UFM on free (W, H[, b]) with weight decay; common options and the zero point."""

    def __init__(self, K, n, d, lw, lh, lb=0.0, bias=True, class_sizes=None):
        super().__init__()
        self.K = _int("K", K, 2)
        if class_sizes is None:
            self.n = _int("n", n, 1)
            sizes = torch.full((self.K,), self.n, dtype=torch.long)
        else:
            sizes = _class_sizes(class_sizes, self.K)
            self.n = int(sizes[0]) if bool((sizes == sizes[0]).all()) else int(round(float(sizes.double().mean())))
        self.d = _int("d", d, 1)
        self.lw = _float("lw", lw, positive=True)
        self.lh = _float("lh", lh, positive=True)
        self.lb = _float("lb", lb, positive=False)
        self.has_bias = _bool("bias", bias)
        if self.lb > 0 and not self.has_bias:
            raise ValueError(f"lb={self.lb} penalises the bias, but bias=False: set lb=0 or bias=True")
        self._setup_labels(sizes)
        self._given_sizes = class_sizes is not None
        factors = [Euclidean((self.K, self.d)), Euclidean((self.N, self.d))]
        if self.has_bias:
            factors.append(Euclidean((self.K,)))
        self.manifold = Product(*factors)

    @property
    def beta(self) -> float | None:
        """beta = sqrt(n lw lh) (balanced classes only; None otherwise)."""
        return math.sqrt(self.n * self.lw * self.lh) if self.balanced else None

    def describe(self) -> dict[str, Any]:
        out = {"loss": self.loss, "K": self.K, "n": self.n, "d": self.d, "lw": self.lw, "lh": self.lh,
               "lb": self.lb, "bias": self.has_bias}
        if self.loss == "ce":
            out["class_sizes"] = self.class_sizes.tolist() if self._given_sizes else None
        return out

    def random_start(self, seed: int) -> tuple:
        """Gaussian start, reproducible from ``seed``: W, H entries N(0, 1/d) (rows of norm ~1),
        b entries N(0, 0.01)."""
        g = torch.Generator().manual_seed(int(seed))
        W = torch.randn(self.K, self.d, generator=g, dtype=_DTYPE) / math.sqrt(self.d)
        H = torch.randn(self.N, self.d, generator=g, dtype=_DTYPE) / math.sqrt(self.d)
        if not self.has_bias:
            return (W, H)
        return (W, H, 0.1 * torch.randn(self.K, generator=g, dtype=_DTYPE))

    def symmetry_directions(self, x) -> list[tuple]:
        out = super().symmetry_directions(x)
        if self.loss == "ce" and self.has_bias and self.lb == 0:
            # softmax is invariant to a common shift of the logits: b -> b + t 1
            out.append((torch.zeros_like(x[0]), torch.zeros_like(x[1]), torch.ones_like(x[2])))
        return out

    def _pack(self, W, H, b):
        return (W, H, b) if self.has_bias else (W, H)

    # --- the critical point W = H = 0 --------------------------------------------------------
    def _zero_bias(self) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def zero_critical_point(self) -> tuple:
        """The critical point W = 0, H = 0 with the bias that is optimal there (REFERENCE.md 2)."""
        W = torch.zeros(self.K, self.d, dtype=_DTYPE)
        H = torch.zeros(self.N, self.d, dtype=_DTYPE)
        b = self._zero_bias() if self.has_bias else None
        return self._pack(W, H, b)

    def _zero_row(self) -> torch.Tensor:
        """q, the prediction shared by every sample at the zero point (softmax(b) for CE, b for
        MSE), so that G = dL/dZ = (1 q^T - Y)/N there."""
        raise NotImplementedError  # pragma: no cover

    def _zero_bias_block_eigs(self) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def zero_point_min_eig(self, deflate: bool = False) -> float:
        """Smallest eigenvalue of the Hessian at :meth:`zero_critical_point`, in closed form.

        The Hessian there is block diagonal: the (W, H) block has smallest eigenvalue
        ``(lw+lh)/2 - sqrt(((lw-lh)/2)^2 + sigma^2)`` with sigma = |G|_2, G = (q 1^T - Y)^T/N and q
        the common row (softmax(b) for CE, b for MSE); sigma = 1/(K sqrt(n)) for balanced classes
        (:func:`zero_point_min_eig`); the bias block is ``diag(q) - q q^T + lb I`` (CE) or
        ``(1 + lb) I`` (MSE).  ``deflate=True`` leaves out the flat direction b -> b + t 1 of the
        CE UFM with lb = 0 (a symmetry, as :func:`nclab.ufm.tools.hessian_extreme_eigs` does)."""
        q = self._zero_row()
        c = self.class_sizes.to(_DTYPE)
        # (q 1^T - Y^T)(1 q^T - Y) = N q q^T - q c^T - c q^T + diag(c): a K x K Gram, no N x K matrix
        gram = self.N * torch.outer(q, q) - torch.outer(q, c) - torch.outer(c, q) + torch.diag(c)
        sigma2 = float(torch.linalg.eigvalsh(gram)[-1]) / self.N**2
        wh = (self.lw + self.lh) / 2 - math.sqrt(((self.lw - self.lh) / 2) ** 2 + max(sigma2, 0.0))
        if not self.has_bias:
            return wh
        eigs = self._zero_bias_block_eigs()
        if deflate and self.loss == "ce" and self.lb == 0:
            eigs = eigs[1:]  # the zero eigenvalue along 1 (eigvalsh sorts ascending)
        return min(wh, float(eigs[0])) if eigs.numel() else wh


def _class_sizes(class_sizes, K: int) -> torch.Tensor:
    try:
        sizes = torch.as_tensor(class_sizes)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"class_sizes must be a sequence of K={K} positive integers, got {class_sizes!r}") from None
    if sizes.ndim != 1 or sizes.numel() != K:
        raise ValueError(f"class_sizes must have one entry per class (K={K}), got {class_sizes!r}")
    if sizes.dtype.is_floating_point and not bool((sizes == sizes.round()).all()):
        raise ValueError(f"class_sizes must be integers, got {class_sizes!r}")
    sizes = sizes.to(torch.long)
    if bool((sizes < 1).any()):
        raise ValueError(f"class_sizes must all be >= 1 (an empty class has no samples), got {sizes.tolist()}")
    return sizes


# --------------------------------------------------------------------------------------------
# CE UFM
# --------------------------------------------------------------------------------------------


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

    @property
    def optimum(self) -> float | None:
        if not self.balanced:
            return None
        K, beta = self.K, self.beta
        if beta >= 1.0 / K:
            return math.log(K)
        if self.d < K - 1:
            return None
        m = math.log(1.0 / beta - (K - 1))
        return math.log1p((K - 1) * math.exp(-m)) + (K - 1) * beta * m

    def optimal_point(self, seed: int | None = None):
        """A global minimiser: W = sqrt(rho) M (M the unit simplex ETF, rotated by ``seed``),
        rho = |w_k|^2 = m* (K-1)/K sqrt(n lh/lw), h_{k,i} = sqrt(lw/(n lh)) w_k, b = 0
        (W = H = 0 when beta >= 1/K).  None where ``optimum`` is None."""
        if self.optimum is None:
            return None
        K, beta = self.K, self.beta
        if beta >= 1.0 / K:
            return self.zero_critical_point()
        m = math.log(1.0 / beta - (K - 1))
        rho = m * (K - 1) / K * math.sqrt(self.n * self.lh / self.lw)
        W = math.sqrt(rho) * simplex_etf(K, self.d, seed=seed)
        H = math.sqrt(self.lw / (self.n * self.lh)) * W[self.labels]
        return self._pack(W, H, torch.zeros(K, dtype=_DTYPE) if self.has_bias else None)

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

    def _zero_bias_block_eigs(self) -> torch.Tensor:
        q = self._zero_row()
        return torch.linalg.eigvalsh(torch.diag(q) - torch.outer(q, q) + self.lb * torch.eye(self.K, dtype=_DTYPE))


# --------------------------------------------------------------------------------------------
# MSE UFM
# --------------------------------------------------------------------------------------------


class MSEProblem(_MSELoss, _PenalizedUFM):
    """Mean-squared-error UFM (Zhou et al. 2022; REFERENCE.md section 2):

    ``f(W,H,b) = 1/(2N) |W H + b 1^T - Y|_F^2 + lw/2 |W|^2 + lh/2 |H|^2 + lb/2 |b|^2``
    (paper's orientation; here ``|H W^T + 1 b^T - Y|``).

    Parameters as :class:`CEProblem` (balanced classes only).  Closed forms: see the module
    docstring (REFERENCE.md's two cases, their d < rank extensions, and lb > 0 derived here).
    """

    loss = "mse"

    def __init__(self, K, n, d, lw, lh, lb=0.0, bias=True):
        super().__init__(K, n, d, lw, lh, lb=lb, bias=bias)

    def _closed_form(self):
        """(f*, p, s, rank-needed, b*) or None: Z* = Y (p (I - J/K) + s J/K), see module doc."""
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
        cf = self._closed_form()
        return None if cf is None else cf[0]

    def optimal_point(self, seed: int | None = None):
        """A global minimiser ``W = (sqrt(n)/g)^{1/2} M^{1/2} E``, ``H = (g/sqrt(n))^{1/2} Y M^{1/2} E``
        (g = sqrt(lw/lh), M = p (I - J/K) + s J/K, E a K x d frame with E E^T the identity on the
        kept eigenspace of M), so that H W^T = Y M and the penalties are balanced
        (lw |W|^2 = lh |H|^2).  No bias: W is a scaled orthogonal frame; lb = 0: a scaled
        simplex ETF and b = 1/K 1; K beta >= 1: W = H = 0.  With d below the rank, the first d
        directions of the eigenspace are kept (all singular values are equal)."""
        cf = self._closed_form()
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

    def _zero_bias(self) -> torch.Tensor:
        """b minimising 1/(2N)|1 b^T - Y|^2 + lb/2 |b|^2: the class frequencies / (1 + lb)."""
        return self.class_sizes.to(_DTYPE) / (self.N * (1 + self.lb))

    def _zero_row(self) -> torch.Tensor:
        return self._zero_bias() if self.has_bias else torch.zeros(self.K, dtype=_DTYPE)

    def _zero_bias_block_eigs(self) -> torch.Tensor:
        return torch.full((self.K,), 1.0 + self.lb, dtype=_DTYPE)


# --------------------------------------------------------------------------------------------
# normalized UFM
# --------------------------------------------------------------------------------------------


class NormalizedProblem(_CELoss, _LogitProblem):
    """Normalized UFM (Yaras et al. 2022; REFERENCE.md section 2) on the oblique manifold:

    ``f(W,H) = (1/N) sum_{k,i} CE(tau W h_{k,i}, k)``, |w_k| = |h_{k,i}| = 1, tau > 0.

    ``optimum = log(1 + (K-1) exp(-tau K/(K-1)))`` for d >= K-1 (W a simplex ETF, h_{k,i} = w_k),
    else None."""

    loss = "normalized"

    def __init__(self, K, n, d, tau):
        super().__init__()
        self.K = _int("K", K, 2)
        self.n = _int("n", n, 1)
        self.d = _int("d", d, 1)
        self.tau = _float("tau", tau, positive=True)
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
        return (W, W[self.labels].clone())

    def random_start(self, seed: int) -> tuple:
        """Uniform (normalised Gaussian) rows, reproducible from ``seed``."""
        return self.manifold.random_point(torch.Generator().manual_seed(int(seed)))

    def describe(self) -> dict[str, Any]:
        return {"loss": self.loss, "K": self.K, "n": self.n, "d": self.d, "tau": self.tau}


# --------------------------------------------------------------------------------------------
# n points on the sphere
# --------------------------------------------------------------------------------------------


class SphereProblem(UFMProblem):
    """Cross-entropy of n points on the sphere (Lu & Steinerberger 2022; REFERENCE.md section 2):

    ``E(X) = (1/n) sum_i -log( exp(tau <x_i,x_i>) / sum_j exp(tau <x_i,x_j>) )``, X n x d, unit rows.

    With Z = tau X X^T, P its row softmax and G = (P - I)/n: ``grad = tau (G + G^T) X``; along V,
    ``dZ = tau (V X^T + X V^T)``, ``dG = (P*dZ - P*rowsum(P*dZ))/n`` and
    ``Hess[V] = tau ((dG + dG^T) X + (G + G^T) V)``.  ``optimum = log(1 + (n-1) exp(-tau n/(n-1)))``
    for d >= n-1 (the simplex ETF; by Jensen this bound holds for every tau), else None.

    Each point is its own class: K = N = n_points, n = 1, labels = arange(n_points);
    ``classifier(x) = features(x) = X``."""

    loss = "sphere"

    def __init__(self, n_points, d, tau):
        super().__init__()
        self.n_points = _int("n_points", n_points, 2)
        self.d = _int("d", d, 1)
        self.tau = _float("tau", tau, positive=True)
        self.K = self.N = self.n_points
        self.n = 1
        self.class_sizes = torch.ones(self.K, dtype=torch.long)
        self.labels = torch.arange(self.K)
        self.manifold = Product(Oblique(self.n_points, self.d))

    def _compute(self, x) -> dict:
        X = x[0]
        Z = torch.mm(X, X.T).mul_(self.tau)
        rows = self.labels
        ce, P, pivot = stable_cross_entropy(Z, rows, rows)  # row i's label is i
        cost = float(ce.sum()) / self.n_points
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
        return (simplex_etf(self.n_points, self.d, seed=seed),)

    def random_start(self, seed: int) -> tuple:
        return self.manifold.random_point(torch.Generator().manual_seed(int(seed)))

    def classifier(self, x) -> torch.Tensor:
        return x[0]

    def features(self, x) -> torch.Tensor:
        return x[0]

    def bias(self, x):
        return None

    def symmetry_directions(self, x) -> list[tuple]:
        """``X A`` for the skew basis matrices A (the O(d) orbit of X -> X Q^T)."""
        X = x[0]
        out = []
        for a in range(self.d):
            for c in range(a + 1, self.d):
                D = torch.zeros_like(X)
                D[:, a] = -X[:, c]
                D[:, c] = X[:, a]
                out.append((D,))
        return out

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
        return {"loss": self.loss, "n_points": self.n_points, "d": self.d, "tau": self.tau}


# --------------------------------------------------------------------------------------------
# factory
# --------------------------------------------------------------------------------------------

_CLASSES = {"ce": CEProblem, "mse": MSEProblem, "normalized": NormalizedProblem, "sphere": SphereProblem}


def make_problem(loss: str = "ce", **options) -> UFMProblem:
    """Build a UFM problem by name with the defaults of :data:`DEFAULTS` (the CLI's options).

    ``loss`` is one of ``"ce"``, ``"mse"``, ``"normalized"``, ``"sphere"``.  ``d`` defaults to K
    (ce, mse, normalized).  For ``"sphere"``, ``n`` is accepted as an alias of ``n_points``.
    Options set to None take their default.  Unknown options raise ValueError naming them.

    >>> make_problem("mse", K=3, n=2).describe()["d"]
    3
    """
    if not isinstance(loss, str) or loss.lower() not in _CLASSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    loss = loss.lower()
    opts = dict(DEFAULTS[loss])
    if loss == "sphere" and "n" in options:
        if options.get("n_points") is not None:
            raise ValueError("give either n_points or its alias n for the sphere problem, not both")
        options = dict(options)
        options["n_points"] = options.pop("n")
    unknown = sorted(set(options) - set(opts))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for loss {loss!r}; allowed: {', '.join(opts)}"
        )
    for k, v in options.items():
        if v is not None:
            opts[k] = v
    if "d" in opts and opts["d"] is None:
        opts["d"] = opts["K"]
    if loss == "ce" and opts.get("class_sizes") is not None and options.get("n") is None:
        opts["n"] = None
    return _CLASSES[loss](**opts)
