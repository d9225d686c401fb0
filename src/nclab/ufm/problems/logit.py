"""The logit family: cross-entropy kernels, logits Z = s H W^T + 1 b^T, and the penalised UFMs.

This module owns

* the numerically stable cross-entropy kernels, shared by every CE-type problem (the CE,
  normalized and sphere problems): :func:`stable_cross_entropy` (per-sample CE and softmax with
  relative accuracy at every scale), :func:`ce_label_gradient` (G = scale (P - Y) without
  cancellation) and :func:`_softmax_hvp` (the softmax Jacobian applied pivot-first);
* :class:`_LogitProblem`: cost, gradient and Hessian-vector product of ``L(Z) + penalties`` with
  ``Z = s H W^T (+ 1 b^T)`` (N x K), batch-first (H is N x d with rows h_{k,i}), samples ordered
  class-major.  With ``G = dL/dZ`` (``(P - Y)/N`` for CE, P the row softmax; ``(Z - Y)/N`` for
  MSE): ``grad_W = s G^T H + lw W``, ``grad_H = s G W + lh H``, ``grad_b = G^T 1 + lb b``.  Along
  (U, V, c), ``dZ = s (V W^T + H U^T) + 1 c^T`` and ``dG = (P*dZ - P*rowsum(P*dZ))/N`` (CE) or
  ``dZ/N`` (MSE): ``Hess_W = s (dG^T H + G^T V) + lw U``, ``Hess_H = s (dG W + G U) + lh V``,
  ``Hess_b = dG^T 1 + lb c``.  The loss comes from a mixin, :class:`_CELoss` or :class:`_MSELoss`;
* :class:`_PenalizedUFM`: the CE and MSE UFMs' common options (K, n or class sizes, d, lw, lh, lb,
  bias), Gaussian starts, and the known critical point W = H = 0 with its optimal bias
  (``zero_critical_point``) and the smallest Hessian eigenvalue there in closed form
  (``zero_point_min_eig``; REFERENCE.md section 2).  At W = H = 0 the smallest eigenvalue of the
  Hessian's (W, H) block is ``(lw+lh)/2 - sqrt(((lw-lh)/2)^2 + sigma^2)`` with sigma the largest
  singular value of G (= 1/(K sqrt(n)) for balanced classes); the full Hessian also has the bias
  block (CE: eigenvalues 1/K + lb on 1-perp and lb along 1; MSE: 1 + lb), so its smallest
  eigenvalue is the minimum of the two; it is negative exactly when beta < 1/K either way.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from nclab._validation import check_bool, check_int, check_real
from nclab.manifolds import Euclidean, Product
from nclab.ufm.problems.base import UFMProblem

__all__ = ["stable_cross_entropy", "ce_label_gradient", "zero_point_min_eig"]

_DTYPE = torch.float64


def zero_point_min_eig(K: int, n: int, lw: float, lh: float) -> float:
    """REFERENCE.md's smallest Hessian eigenvalue of the (W, H) block at W = H = 0 (balanced CE
    or MSE UFM): ``(lw+lh)/2 - sqrt(((lw-lh)/2)^2 + sigma^2)``, ``sigma = 1/(K sqrt(n))``.

    Derivation: at W = H = 0 the (W, H) block of the Hessian is ``[[lw I, G^T.], [G., lh I]]``
    (the only second-order term of the loss is 2 <G, V U^T>), whose eigenvalues are
    ``(lw+lh)/2 -+ sqrt(((lw-lh)/2)^2 + s^2)`` over the singular values s of G; for balanced classes
    the largest is ``|Y - J/K|_2 / N = sqrt(n)/(nK)``.  Negative exactly when
    beta = sqrt(n lw lh) < 1/K."""
    K = check_int("K", K, minimum=2)
    n = check_int("n", n, minimum=1)
    lw = check_real("lw", lw, nonnegative=True)
    lh = check_real("lh", lh, nonnegative=True)
    sigma = 1.0 / (K * math.sqrt(n))
    return (lw + lh) / 2 - math.hypot((lw - lh) / 2, sigma)


# --------------------------------------------------------------------------------------------
# cross-entropy kernels
# --------------------------------------------------------------------------------------------


#: Entries per partial sum of :func:`_sq_norm` (the partial sums are then added in float64).
_SQ_NORM_CHUNK = 1 << 10


def _sq_norm(A: torch.Tensor) -> float:
    """|A|_F^2 without a large temporary, accurate in float32 too.

    ``torch.linalg.vector_norm`` of a float32 tensor accumulates in float32: at 5e6 entries its
    square is off by ~2e-4 relative, which on the K = 1000 CE UFM biases the objective by more
    than the gap a solver must resolve.  Here each chunk of :data:`_SQ_NORM_CHUNK` entries is
    reduced in the tensor's dtype and the chunks' squares are summed in float64 (relative error
    ~1e-9 in float32: chunks of 1024 err by ~1e-8 at most; a tiny second pass)."""
    flat = A.reshape(-1)
    n = flat.numel()
    if A.dtype == torch.float64 or n <= _SQ_NORM_CHUNK:
        return float(torch.linalg.vector_norm(flat, dtype=torch.float64)) ** 2
    m = n - n % _SQ_NORM_CHUNK
    parts = torch.linalg.vector_norm(flat[:m].view(-1, _SQ_NORM_CHUNK), dim=1).double()
    rest = flat[m:].double()
    return float(parts.square().sum() + rest.square().sum())


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


def _softmax_hvp(P: torch.Tensor, dZ: torch.Tensor, pivot: torch.Tensor) -> torch.Tensor:
    """Row-wise softmax Jacobian applied to dZ: ``(diag(P) - P P^T) dZ`` per row.

    The Jacobian annihilates constant rows, so dZ is first shifted by its pivot entry,
    ``Delta = dZ - dZ_{j*} 1``, and the product is ``P * (Delta - <P, Delta>)``: ``<P, Delta>``
    then only sums the small off-pivot terms, and the pivot's entry ``-P_{j*} <P, Delta>`` is formed
    without the cancellation of ``P_{j*} (dZ_{j*} - <P, dZ>)`` (whose two terms agree to ~1/CE
    digits in the collapsed regime).  ``pivot`` is the row maxima's index of
    :func:`stable_cross_entropy`."""
    rows = torch.arange(dZ.shape[0], device=dZ.device)
    Delta = dZ - dZ[rows, pivot][:, None]
    c = (P * Delta).sum(dim=1, keepdim=True)
    return Delta.sub_(c).mul_(P)


# --------------------------------------------------------------------------------------------
# logits Z = s H W^T (+ 1 b^T), loss L(Z) + penalties
# --------------------------------------------------------------------------------------------


class _LogitProblem(UFMProblem):
    """Shared machinery of the CE, MSE and normalized UFMs: logits ``Z = s H W^T + 1 b^T``."""

    _scale: float = 1.0  # s (tau for the normalized UFM)
    lw = lh = lb = 0.0
    has_bias = False

    def logit_gradient(self, x) -> torch.Tensor:
        """``G = dL/dZ`` at x (N x K), the gradient of the data term in the logits, cached per point
        (the landscape certificate's ``grad_Z L``).  Not a copy: do not modify it."""
        return self._state(x)["G"]

    def _setup_labels(self, class_sizes: torch.Tensor) -> None:
        self.class_sizes = class_sizes
        self.N = int(class_sizes.sum())
        self.labels = torch.repeat_interleave(torch.arange(self.K), class_sizes)  # public: on the CPU
        self._labels = self.labels.to(self.device)  # the kernels' copy, where the problem computes
        self._rows = torch.arange(self.N, device=self.device)
        self.balanced = bool((class_sizes == class_sizes[0]).all())

    # loss-specific: value and G = dL/dZ from the logits; and dG = D^2 L[dZ]
    def _loss(self, Z: torch.Tensor, state: dict) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def _loss_hvp(self, state: dict, dZ: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _logits(self, W, H, b) -> torch.Tensor:
        """``Z = s H W^T (+ 1 b^T)`` (N x K) in one product, stored class-major (K x N row-major
        memory, Z a transposed view): for K much smaller than N and d the product with the wide
        output ``W H^T`` runs at about twice the speed of the tall one, and the loss gradient G
        inherits the layout, which suits the gradient's products ``G^T H`` and ``G W`` as well.
        Z is private to the evaluation, so the loss may overwrite it."""
        Z = torch.empty(self.K, self.N, dtype=H.dtype, device=H.device).T
        if b is not None:
            return torch.addmm(b, H, W.T, alpha=self._scale, out=Z)
        return _scaled_mm(H, W.T, self._scale, None, 0.0, out=Z)

    def _compute(self, x) -> dict:
        W, H = x[0], x[1]
        Z = self._logits(W, H, x[2] if self.has_bias else None)
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

    _egrad_writes_into = True

    def _egrad(self, x, state, out=None):
        W, H = x[0], x[1]
        G = state["G"]
        s = self._scale
        oW, oH, ob = (None, None, None) if out is None else (out[0], out[1], out[2] if self.has_bias else None)
        # s G^T H + lw W and s G W + lh H, each one fused product (written into out when given)
        gW = _scaled_mm(G.T, H, s, W, self.lw, oW)
        gH = _scaled_mm(G, W, s, H, self.lh, oH)
        if not self.has_bias:
            return (gW, gH)
        gb = G.sum(dim=0) if ob is None else torch.sum(G, dim=0, out=ob)
        if self.lb:
            gb = gb.add_(x[2], alpha=self.lb)
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


def _scaled_mm(A, B, s: float, C, c: float, out=None):
    """``s A B + c C`` in one product (``out`` if given; s is BLAS's alpha, no second pass)."""
    if c:
        return torch.addmm(C, A, B, beta=c, alpha=s, out=out)
    if s == 1.0:
        return torch.mm(A, B) if out is None else torch.mm(A, B, out=out)
    if out is None:
        out = torch.empty(A.shape[0], B.shape[1], dtype=A.dtype, device=A.device)
    return torch.addmm(out, A, B, beta=0.0, alpha=s, out=out)  # beta = 0: out's content is not read


class _CELoss:
    """Mixin: mean cross-entropy of the logits; caches P (row softmax) and G = (P - Y)/N."""

    def _loss(self, Z, state):
        labels = self._labels
        ce, P, pivot = stable_cross_entropy(Z, labels, self._rows)  # Z becomes P
        state["P"] = P.clone()
        state["pivot"] = pivot
        state["G"] = ce_label_gradient(P, labels, self._rows, 1.0 / self.N)
        return float(ce.sum(dtype=torch.float64)) / self.N  # N terms: float64 sum

    def _loss_hvp(self, state, dZ):
        return _softmax_hvp(state["P"], dZ, state["pivot"]).div_(self.N)


class _MSELoss:
    """Mixin: 1/(2N) |Z - Y|_F^2; caches G = (Z - Y)/N."""

    def _loss(self, Z, state):
        R = Z  # private to this evaluation: the residual overwrites it
        R[self._rows, self._labels] -= 1.0
        value = _sq_norm(R) / (2 * self.N)
        state["G"] = R.div_(self.N)
        return value

    def _loss_hvp(self, state, dZ):
        return dZ / self.N


# --------------------------------------------------------------------------------------------
# the penalised UFMs (CE, MSE) and their critical point W = H = 0
# --------------------------------------------------------------------------------------------


class _PenalizedUFM(_LogitProblem):
    """CE/MSE UFM on free (W, H[, b]) with weight decay; common options and the zero point."""

    def __init__(self, K, n, d, lw, lh, lb=0.0, bias=True, class_sizes=None, *, device=None, dtype=None):
        super().__init__(device=device, dtype=dtype)
        self.K = check_int("K", K, minimum=2)
        if class_sizes is None:
            self.n = check_int("n", n, minimum=1)
            sizes = torch.full((self.K,), self.n, dtype=torch.long)
        else:
            sizes = _class_sizes(class_sizes, self.K)
            self.n = int(sizes[0]) if bool((sizes == sizes[0]).all()) else int(round(float(sizes.double().mean())))
        self.d = check_int("d", d, minimum=1)
        self.lw = check_real("lw", lw, positive=True)
        self.lh = check_real("lh", lh, positive=True)
        self.lb = check_real("lb", lb, nonnegative=True)
        self.has_bias = check_bool("bias", bias)
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
        return {"loss": self.loss, "K": self.K, "n": self.n, "d": self.d, "lw": self.lw, "lh": self.lh,
                "lb": self.lb, "bias": self.has_bias, **self._where()}

    def random_start(self, seed: int) -> tuple:
        """Gaussian start, reproducible from ``seed``: W, H entries N(0, 1/d) (rows of norm ~1),
        b entries N(0, 0.01)."""
        g = torch.Generator().manual_seed(int(seed))
        W = torch.randn(self.K, self.d, generator=g, dtype=_DTYPE) / math.sqrt(self.d)
        H = torch.randn(self.N, self.d, generator=g, dtype=_DTYPE) / math.sqrt(self.d)
        if not self.has_bias:
            return self.place((W, H))
        return self.place((W, H, 0.1 * torch.randn(self.K, generator=g, dtype=_DTYPE)))

    def _pack(self, W, H, b):
        """The point (W, H[, b]) on the problem's device and dtype."""
        return self.place((W, H, b) if self.has_bias else (W, H))

    def _feature_ratio_error(self, W, H) -> float:
        """|H - sqrt(lw/(n lh)) W[labels]| / |H|: the balance of a minimiser's factors."""
        c = math.sqrt(self.lw / (self.n * self.lh))
        hn = float(H.norm())
        return float((H - c * W[self.labels.to(W.device)]).norm()) / hn if hn > 0 else math.inf

    @staticmethod
    def _zero_norm(W, H) -> float:
        """|(W, H)|_F: the distance to the minimiser W = H = 0."""
        return math.sqrt(float((W * W).sum() + (H * H).sum()))

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

    def _zero_bias_block_eigs(self, deflate: bool) -> torch.Tensor:  # pragma: no cover - overridden
        """Eigenvalues (ascending) of the bias block of the Hessian at the zero point, without
        those along :meth:`flat_directions` when ``deflate``."""
        raise NotImplementedError

    def zero_point_min_eig(self, deflate: bool = False) -> float:
        """Smallest eigenvalue of the Hessian at :meth:`zero_critical_point`, in closed form.

        The Hessian there is block diagonal: the (W, H) block has smallest eigenvalue
        ``(lw+lh)/2 - sqrt(((lw-lh)/2)^2 + sigma^2)`` with sigma = |G|_2, G = (q 1^T - Y)^T/N and q
        the common row (softmax(b) for CE, b for MSE); sigma = 1/(K sqrt(n)) for balanced classes
        (:func:`zero_point_min_eig`); the bias block is ``diag(q) - q q^T + lb I`` (CE) or
        ``(1 + lb) I`` (MSE).  ``deflate=True`` leaves out the flat direction b -> b + t 1 of the
        CE UFM with lb = 0 (a symmetry, as :func:`nclab.ufm.diagnostics.hessian_extreme_eigs`
        does)."""
        q = self._zero_row()
        c = self.class_sizes.to(_DTYPE)
        # (q 1^T - Y^T)(1 q^T - Y) = N q q^T - q c^T - c q^T + diag(c): a K x K Gram, no N x K matrix
        gram = self.N * torch.outer(q, q) - torch.outer(q, c) - torch.outer(c, q) + torch.diag(c)
        sigma2 = float(torch.linalg.eigvalsh(gram)[-1]) / self.N**2
        wh = (self.lw + self.lh) / 2 - math.sqrt(((self.lw - self.lh) / 2) ** 2 + max(sigma2, 0.0))
        if not self.has_bias:
            return wh
        eigs = self._zero_bias_block_eigs(deflate)
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
