"""Exact, one-pass, mergeable neural-collapse statistics (REFERENCE.md section 3).

The state of :class:`NCStats` is, in float64 whatever the input dtype:

* ``counts``  (K,)    samples per class n_k,
* ``means``   (K, d)  class means mu_k,
* ``m2``      (K,)    per-class sums of squared deviations  sum_i |h_{k,i} - mu_k|^2,
* ``scatter`` (d, d)  pooled within-class scatter  sum_{k,i} (h_{k,i} - mu_k)(h_{k,i} - mu_k)^T.

Every batch is first reduced to its own centred statistics (batch class means, deviations from
them) and then merged into the running state by the exact pairwise update of Chan, Golub & LeVeque
(1979): with delta_k = mean_b,k - mean_a,k and w_k = n_a,k n_b,k / (n_a,k + n_b,k),

    scatter = scatter_a + scatter_b + sum_k w_k delta_k delta_k^T,
    m2_k    = m2_a,k + m2_b,k + w_k |delta_k|^2.

Raw moments (sum x x^T - n mu mu^T) are never formed, so a common offset of the features costs no
precision: this is what keeps NC1 exact in the terminal phase of training, where the within-class
spread is 1e-4..1e-6 of the feature norm.  The batch's deviations from a first estimate of its
class means and the merge correction are stacked into one matrix and enter the scatter through a
single symmetric rank-k product per batch (BLAS syrk on the CPU), plus a K_b-row correction for
the estimate's residual; products run in the input's precision (float32 inputs: float32 products
of already-centred values, accumulated into the float64 state; float64 inputs: float64 throughout).  No Python loop runs over samples or
classes, and no B x K one-hot is formed (class sums use ``index_add_``).

Across processes only sums are all-reduced (:meth:`NCStats.sync`): counts and count-weighted means
first, then each rank's scatter corrected by its offset to the global class means.  This is exact
also when a class is spread over ranks or absent on some.

Example
-------
>>> import torch
>>> from nclab.metrics import NCStats
>>> h = torch.randn(600, 16); y = torch.arange(600) % 3
>>> stats = NCStats(num_classes=3)
>>> for hb, yb in zip(h.split(128), y.split(128)):
...     stats.update(hb, yb)
>>> res = stats.compute()
>>> res.nc1 > 0
True
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from nclab.geometry import DEFAULT_TILE, equinorm_error, pairwise_summaries

__all__ = [
    "METRIC_NAMES",
    "METRIC_DESCRIPTIONS",
    "NCMetrics",
    "NCStats",
    "NC4Counter",
    "compute_metrics",
    "check_features",
    "check_labels",
    "check_head",
]

#: The metric names of REFERENCE.md section 3, in its order.  JSON output uses exactly these keys.
METRIC_NAMES = (
    "nc1",
    "nc1_trace_ratio",
    "cdnv",
    "nc2_equinorm_means",
    "nc2_equinorm_W",
    "nc2_maxangle_means",
    "nc2_maxangle_W",
    "nc2_etf_means",
    "nc2_etf_W",
    "nc3",
    "nc3_duality_gram",
    "nc4",
    "bias_collapse",
)

METRIC_DESCRIPTIONS = {
    "nc1": "Tr(Sigma_W Sigma_B^+)/K (Papyan et al. 2020)",
    "nc1_trace_ratio": "Tr(Sigma_W)/Tr(Sigma_B)",
    "cdnv": "mean_{k<l} (v_k+v_l)/(2|mu_k-mu_l|^2) (Galanti et al. 2022)",
    "nc2_equinorm_means": "std/mean of |mu_k - mu_G|",
    "nc2_equinorm_W": "std/mean of |w_k|",
    "nc2_maxangle_means": "mean_{k!=l} |cos(mu_k,mu_l) + 1/(K-1)|",
    "nc2_maxangle_W": "mean_{k!=l} |cos(w_k,w_l) + 1/(K-1)|",
    "nc2_etf_means": "|G/|G|_F - (I-J/K)/sqrt(K-1)|_F, G = Mc Mc^T (Zhu et al.)",
    "nc2_etf_W": "|G/|G|_F - (I-J/K)/sqrt(K-1)|_F, G = W W^T (Zhu et al.)",
    "nc3": "|W/|W|_F - Mc/|Mc|_F|_F^2 (Papyan et al.)",
    "nc3_duality_gram": "|W Mc^T/|W Mc^T|_F - (I-J/K)/sqrt(K-1)|_F (Zhu et al.)",
    "nc4": "fraction where argmax(W h + b) != nearest class mean",
    "bias_collapse": "|W mu_G + b| (Zhu et al.'s code calls it NC4)",
}

_EPS64 = float(torch.finfo(torch.float64).eps)


# --------------------------------------------------------------------------------------------
# validation at the boundary
# --------------------------------------------------------------------------------------------


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray) or np.isscalar(x) or isinstance(x, (list, tuple)):
        arr = np.asarray(x)
        if arr.dtype == object:
            raise ValueError(f"{name} must be a numeric array, got an object array")
        if not arr.flags.writeable:  # read-only (e.g. memory-mapped): torch wants its own copy
            arr = np.array(arr, copy=True)
        return torch.from_numpy(np.ascontiguousarray(arr))
    raise ValueError(f"{name} must be a torch.Tensor or a numpy array, got {type(x).__name__}")


def check_features(features, name: str = "features", dim: int | None = None) -> torch.Tensor:
    """Validate an N x d float matrix of features: 2-D, floating point, finite, matching ``dim``."""
    X = _as_tensor(features, name)
    if X.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (N, d) with one sample per row, got shape {tuple(X.shape)}"
        )
    if not torch.is_floating_point(X):
        raise ValueError(f"{name} must have a floating-point dtype, got {X.dtype}; cast it with .float()")
    if dim is not None and X.shape[1] != dim:
        raise ValueError(f"{name} has dimension d = {X.shape[1]}, but earlier data had d = {dim}")
    # A finite sum proves every entry finite (one fast reduction); only then is the full check skipped.
    if X.numel() and not bool(torch.isfinite(X.sum())) and not bool(torch.isfinite(X).all()):
        bad = int((~torch.isfinite(X)).any(dim=1).sum())
        raise ValueError(f"{name} contains NaN or inf values in {bad} row(s); remove or fix them first")
    return X


def check_labels(labels, num_samples: int, num_classes: int | None, name: str = "labels") -> torch.Tensor:
    """Validate integer class labels of length ``num_samples`` in ``[0, num_classes)``."""
    y = _as_tensor(labels, name)
    if y.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class indices, got shape {tuple(y.shape)}")
    if y.shape[0] != num_samples:
        raise ValueError(f"{name} has {y.shape[0]} entries but features have {num_samples} rows")
    if torch.is_floating_point(y) or torch.is_complex(y) or y.dtype == torch.bool:
        raise ValueError(
            f"{name} must be integers (class indices 0..K-1), got dtype {y.dtype}; "
            "cast whole-number labels with .long() / .astype(int)"
        )
    if y.numel():
        lo, hi = int(y.min()), int(y.max())
        if lo < 0:
            raise ValueError(f"{name} must be >= 0, got a label {lo}")
        if num_classes is not None and hi >= num_classes:
            raise ValueError(
                f"{name} must be < num_classes = {num_classes}, got a label {hi}; "
                "pass the right num_classes (K) or fix the labels"
            )
    return y.long()


def check_head(classifier, bias, K: int, d: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a (K, d) classifier and an optional (K,) bias; return both in float64 on
    ``device`` (b = 0 for a bias-free head)."""
    W = check_features(classifier, "classifier").to(device, torch.float64)
    if tuple(W.shape) != (K, d):
        raise ValueError(f"classifier must have shape (K, d) = ({K}, {d}), got {tuple(W.shape)}")
    if bias is None:
        return W, torch.zeros(K, dtype=torch.float64, device=device)
    b = _as_tensor(bias, "bias").to(device, torch.float64)
    if tuple(b.shape) != (K,):
        raise ValueError(f"bias must have shape (K,) = ({K},), got {tuple(b.shape)}")
    if not bool(torch.isfinite(b).all()):
        raise ValueError("bias contains NaN or inf values")
    return W, b


def _check_num_classes(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return int(num_classes)


def _gemm_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half-precision inputs are upcast: centred deviations need float32's mantissa at least.
    return torch.float64 if dtype == torch.float64 else torch.float32


def _blas_syrk(dtype: torch.dtype):
    from scipy.linalg import blas

    return blas.dsyrk if dtype == torch.float64 else blas.ssyrk


def _class_summer(y: torch.Tensor, counts: torch.Tensor, dtype: torch.dtype):
    """A function X -> per-class row sums (K x d) for these labels, without a dense one-hot.

    On the CPU a sparse K x B CSR indicator times X (MKL sparse-dense product): several times
    faster than ``index_add_``, whose CPU kernel serialises over rows; on GPUs ``index_add_``
    (atomics) is the fast path.
    """
    K = counts.shape[0]
    if y.device.type != "cpu":
        return lambda X: torch.zeros(K, X.shape[1], dtype=X.dtype, device=X.device).index_add_(0, y, X)
    order = torch.argsort(y, stable=True)
    crow = torch.zeros(K + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=crow[1:])
    with warnings.catch_warnings():  # CSR support is labelled beta; this use is the stable core
        warnings.simplefilter("ignore", UserWarning)
        indicator = torch.sparse_csr_tensor(
            crow, order, torch.ones(y.shape[0], dtype=dtype), size=(K, y.shape[0]), check_invariants=False
        )
    return lambda X: indicator @ X


def _batch_moments(X: torch.Tensor, y: torch.Tensor, K: int, spare_rows: int = 0):
    """Centred statistics of one batch, computed in X's dtype without losing digits to an offset.

    Two-level centring: a_k = class sums / n_k in X's dtype (off by a rounding error when the
    features share a large offset), R = X - a_y (exact or nearly: Sterbenz), c_k = mean of R
    over class k (small, hence accurate), batch mean = a_k + c_k in float64.  Returns
    (n_b, mean_b, m2_b, R, c) with m2_b,k = sum_i |R_i|^2 - n_k |c_k|^2 (float64 state).
    R has ``spare_rows`` extra (uninitialised) rows at the end, for the caller's merge terms, so
    that they can join the same product without copying R.
    """
    counts = torch.bincount(y, minlength=K)
    nb = counts.to(torch.float64)
    inv = (1.0 / nb.clamp_min(1.0)).to(X.dtype)[:, None]
    class_sum = _class_summer(y, counts, X.dtype)
    a = class_sum(X).mul_(inv)
    B = X.shape[0]
    R_all = torch.empty(B + spare_rows, X.shape[1], dtype=X.dtype, device=X.device)
    R = R_all[:B]
    torch.index_select(a, 0, y, out=R)
    torch.sub(X, R, out=R)
    c = class_sum(R).mul_(inv)
    mb = a.to(torch.float64) + c.to(torch.float64)
    row_sq = torch.linalg.vector_norm(R, dim=1).to(torch.float64).square_()
    c64 = c.to(torch.float64)
    m2b = torch.zeros(K, dtype=torch.float64, device=X.device).index_add_(0, y, row_sq) - nb * (c64 * c64).sum(1)
    m2b.clamp_min_(0.0)  # a sum of squares: only rounding could make it negative
    return nb, mb, m2b, R_all, c


# --------------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NCMetrics:
    """All metrics of REFERENCE.md section 3 (None where not computable, e.g. W-metrics without a
    classifier, nc4 before its second pass).  ``as_dict()`` has exactly :data:`METRIC_NAMES`."""

    nc1: float | None = None
    nc1_trace_ratio: float | None = None
    cdnv: float | None = None
    nc2_equinorm_means: float | None = None
    nc2_equinorm_W: float | None = None
    nc2_maxangle_means: float | None = None
    nc2_maxangle_W: float | None = None
    nc2_etf_means: float | None = None
    nc2_etf_W: float | None = None
    nc3: float | None = None
    nc3_duality_gram: float | None = None
    nc4: float | None = None
    bias_collapse: float | None = None
    # context, not metrics
    num_classes: int = 0
    num_samples: int = 0
    dim: int = 0
    sigma_b_rank: int = 0
    rtol: float = 0.0
    weighted_mean: bool = False
    empty_classes: tuple[int, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, float | None]:
        """The metrics only, keyed by their REFERENCE.md names; non-finite values become None."""
        out = {}
        for name in METRIC_NAMES:
            v = getattr(self, name)
            out[name] = None if v is None or not math.isfinite(v) else float(v)
        return out

    def with_nc4(self, value: float | None) -> "NCMetrics":
        return dataclasses.replace(self, nc4=None if value is None else float(value))


# --------------------------------------------------------------------------------------------
# the accumulator
# --------------------------------------------------------------------------------------------


class NCStats:
    """Mergeable float64 sufficient statistics of labelled features for the NC metrics.

    Parameters
    ----------
    num_classes : K >= 2.  Class counts come from the data; K only fixes the label range.
    dim : feature dimension d (inferred from the first batch if None).
    device : where the state lives (default: the device of the first batch).
    gemm_dtype : precision of the per-batch scatter product (default: float64 for float64 input,
        float32 otherwise; the operands are already centred, so float32 loses no digits to a
        common offset).

    Methods: :meth:`update`, :meth:`merge`, :meth:`sync`, :meth:`compute`.
    """

    def __init__(self, num_classes: int, dim: int | None = None, *, device=None, gemm_dtype=None):
        self.num_classes = _check_num_classes(num_classes)
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise ValueError(f"dim must be a positive integer or None, got {dim!r}")
        if gemm_dtype not in (None, torch.float32, torch.float64):
            raise ValueError(f"gemm_dtype must be None, torch.float32 or torch.float64, got {gemm_dtype!r}")
        self.gemm_dtype = gemm_dtype
        self.device = None if device is None else torch.device(device)
        self.dim = None
        self.counts = None
        self.means = None
        self.m2 = None
        self._scatter = None
        self._upper = None
        self._synced = False
        if dim is not None:
            self._init_state(dim, self.device or torch.device("cpu"))

    # -- state -------------------------------------------------------------------------------

    def _init_state(self, dim: int, device) -> None:
        K = self.num_classes
        self.dim = int(dim)
        self.device = torch.device(device)
        f64 = dict(dtype=torch.float64, device=self.device)
        self.counts = torch.zeros(K, **f64)
        self.means = torch.zeros(K, dim, **f64)
        self.m2 = torch.zeros(K, **f64)
        self.scatter = torch.zeros(dim, dim, **f64)
        self._upper = None

    @property
    def num_samples(self) -> int:
        return 0 if self.counts is None else int(self.counts.sum())

    @property
    def class_means(self) -> torch.Tensor:
        """(K, d) float64 class means (rows of classes with no sample are 0)."""
        self._require_data()
        return self.means

    def _require_data(self) -> None:
        if self.counts is None or self.num_samples == 0:
            raise ValueError("no samples yet: call update(features, labels) first")

    def _merge_state(self, nb, mb, m2b, scatter_b=None):
        """Chan et al.'s exact pairwise merge of (nb, mb, m2b, scatter_b) into self, float64.

        Returns the merge weights w_k = n_a n_b / n and offsets delta_k = mean_b - mean_a.  With
        ``scatter_b=None`` the scatter is left to the caller (``update`` folds
        ``scatter_b + sum_k w_k delta_k delta_k^T`` into its own product)."""
        na = self.counts
        n = na + nb
        w = torch.where(n > 0, na * nb / n.clamp_min(1.0), torch.zeros_like(n))
        delta = mb - self.means
        frac = torch.where(n > 0, nb / n.clamp_min(1.0), torch.zeros_like(n))
        self.means = self.means + delta * frac[:, None]
        self.m2 = self.m2 + m2b + w * (delta * delta).sum(1)
        if scatter_b is not None:
            self.scatter = self.scatter + scatter_b + delta.T @ (w[:, None] * delta)
        self.counts = n
        return w, delta

    # -- update ------------------------------------------------------------------------------

    @torch.no_grad()
    def update(self, features, labels) -> "NCStats":
        """Add a batch: ``features`` (B, d) in any float dtype on any device, ``labels`` (B,) ints.

        Cost: O(B d) elementwise work plus one symmetric rank-(B + K_b) update of the d x d scatter
        (BLAS syrk on the CPU: half the flops of the GEMM X^T X), K_b = classes of the batch that
        were already seen.
        """
        if self._synced:
            raise ValueError("these statistics were already synced across processes; start a new NCStats")
        X = check_features(features, dim=self.dim)
        y = check_labels(labels, X.shape[0], self.num_classes)
        if self.dim is None:
            self._init_state(X.shape[1], self.device or X.device)
        if X.shape[0] == 0:
            return self
        X = X.to(self.device)
        y = y.to(self.device)
        wdt = self.gemm_dtype or _gemm_dtype(X.dtype)
        if X.dtype != wdt:
            X = X.to(wdt)
        K = self.num_classes
        # Classes already seen are the only ones with a merge term; reserve rows for them.
        seen_before = self.counts > 0
        nb, mb, m2b, R_all, c = _batch_moments(X, y, K, spare_rows=int(seen_before.sum()))
        B = X.shape[0]

        # Chan et al.'s merge.  The batch's scatter about its class means is R^T R - sum_k n_k c_k c_k^T
        # (R is centred on a first estimate a_k of the class mean, c_k = mean_b,k - a_k is tiny);
        # the merge adds sum_k w_k delta_k delta_k^T.  Both positive parts share one product.
        w, delta = self._merge_state(nb, mb, m2b)
        seen = torch.nonzero(w > 0).squeeze(1)
        present = torch.nonzero(nb > 0).squeeze(1)
        R_all[B : B + seen.shape[0]] = delta.index_select(0, seen) * w.index_select(0, seen).sqrt()[:, None]
        pos = R_all[: B + seen.shape[0]]
        neg = (c.index_select(0, present).to(torch.float64) * nb.index_select(0, present).sqrt()[:, None]).to(wdt)
        self._add_gram(pos, 1.0)
        self._add_gram(neg, -1.0)
        return self

    def _add_gram(self, A: torch.Tensor, alpha: float) -> None:
        """scatter += alpha A^T A, accumulated in float64.  On the CPU through BLAS syrk, which fills
        only the upper triangle (folded into the symmetric matrix lazily, see ``scatter``)."""
        if A.shape[0] == 0:
            return
        if A.device.type == "cpu":
            syrk = _blas_syrk(A.dtype)
            a = A.contiguous().numpy().T  # Fortran-ordered d x M view, no copy
            upper = torch.from_numpy(syrk(alpha, a, trans=0, lower=0))
            if self._upper is None:
                self._upper = upper.to(torch.float64)
            else:
                self._upper += upper
        else:
            self._scatter += alpha * (A.T @ A).to(torch.float64)

    @property
    def scatter(self) -> torch.Tensor:
        """(d, d) float64 pooled within-class scatter sum_{k,i} (h_{k,i} - mu_k)(h_{k,i} - mu_k)^T."""
        if self._upper is not None:
            U = self._upper.triu()
            self._scatter += U + U.triu(1).T
            self._upper = None
        return self._scatter

    @scatter.setter
    def scatter(self, value: torch.Tensor) -> None:
        self._scatter = value
        self._upper = None

    # -- merge and sync ----------------------------------------------------------------------

    @torch.no_grad()
    def merge(self, other: "NCStats") -> "NCStats":
        """Merge another accumulator into this one, exactly (Chan et al. 1979). Returns self."""
        if not isinstance(other, NCStats):
            raise ValueError(f"can only merge another NCStats, got {type(other).__name__}")
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge statistics of {other.num_classes} classes into {self.num_classes}")
        if other.dim is None:
            return self
        if self.dim is None:
            self._init_state(other.dim, self.device or other.device)
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dimension {other.dim} into dimension {self.dim}")
        dev = self.device
        self._merge_state(other.counts.to(dev), other.means.to(dev), other.m2.to(dev), other.scatter.to(dev))
        return self

    @torch.no_grad()
    def sync(self, group=None) -> "NCStats":
        """All-reduce the statistics over the processes of ``group`` (in place; call on every rank).

        Only sums travel: (1) counts and count-weighted means give the global class means;
        (2) each rank adds ``sum_k n_k,r (mu_k,r - mu_k)(mu_k,r - mu_k)^T`` to its scatter (and the
        matching term to m2), then scatter and m2 are summed.  Exact for classes split over ranks
        or absent on some.  A no-op when torch.distributed is not initialised.  Afterwards every
        rank holds the global statistics; a second sync or a further update raises.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        if self._synced:
            raise ValueError("these statistics were already synced; syncing twice would double-count")
        # Agree on the dimension (a rank may have seen no data).
        dim = torch.tensor([self.dim or 0], dtype=torch.int64, device=self._comm_device(dist, group))
        dist.all_reduce(dim, op=dist.ReduceOp.MAX, group=group)
        if int(dim) == 0:
            raise ValueError("no process has any sample: nothing to sync")
        if self.dim is None:
            self._init_state(int(dim), self._comm_device(dist, group))
        elif self.dim != int(dim):
            raise ValueError(f"feature dimension differs across processes: {self.dim} here, {int(dim)} elsewhere")
        orig = self.device
        dev = self._comm_device(dist, group)
        counts, means, m2, scatter = (t.to(dev) for t in (self.counts, self.means, self.m2, self.scatter))

        total = counts.clone()
        weighted = means * counts[:, None]
        dist.all_reduce(total, group=group)
        dist.all_reduce(weighted, group=group)
        gmeans = weighted / total.clamp_min(1.0)[:, None]

        offset = means - gmeans
        offset = offset * (counts > 0)[:, None]  # absent classes carry no weight (and no garbage)
        scatter = scatter + offset.T @ (counts[:, None] * offset)
        m2 = m2 + counts * (offset * offset).sum(1)
        dist.all_reduce(scatter, group=group)
        dist.all_reduce(m2, group=group)

        self.counts, self.means, self.m2, self.scatter = (t.to(orig) for t in (total, gmeans, m2, scatter))
        self._synced = True
        return self

    def _comm_device(self, dist, group):
        backend = dist.get_backend(group)
        if backend == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    # -- metrics -----------------------------------------------------------------------------

    @torch.no_grad()
    def compute(
        self,
        classifier=None,
        bias=None,
        *,
        weighted_mean: bool = False,
        rtol: float | None = None,
        empty: str = "raise",
        tile: int = DEFAULT_TILE,
    ) -> NCMetrics:
        """All metrics of REFERENCE.md section 3 but nc4 (see :class:`NC4Counter`).

        Parameters
        ----------
        classifier : (K, d) last-layer weights W (row k = class k), optional.
        bias : (K,) last-layer bias b, optional; with a classifier and no bias, b = 0 is used
            (a bias-free head), so ``bias_collapse = |W mu_G|``.
        weighted_mean : global mean mu_G = mean of all features instead of the (default,
            Papyan et al.) unweighted mean of the class means.
        rtol : relative eigenvalue cut-off of Sigma_B's pseudo-inverse: eigenvalues
            <= rtol * lambda_max count as zero.  Default ``max(K, d) * eps_float64`` (numpy's
            matrix-rank tolerance); no +eps*I regularisation and no hard rank-(K-1) truncation.
        empty : "raise" (default) if a class has no sample, or "drop" to compute the metrics over
            the classes present (listed in ``empty_classes`` of the result).
        tile : block size of the pairwise (K x K) quantities; memory O(tile^2).

        nc1 (Papyan et al. 2020) is ``Tr(Sigma_W Sigma_B^+)/K`` computed in the span of the centred
        means: with ``Mc Mc^T = U diag(lam) U^T`` (K x K, or the d x d ``Mc^T Mc`` when K > d) and
        ``v_j = Mc^T u_j / sqrt(lam_j)``, ``nc1 = sum_j v_j^T Sigma_W v_j / lam_j`` over the kept
        eigenvalues.  No d x d or K x K inverse is formed.
        """
        self._require_data()
        if empty not in ("raise", "drop"):
            raise ValueError(f"empty must be 'raise' or 'drop', got {empty!r}")
        K, d = self.num_classes, self.dim
        W = b = None
        if classifier is not None:
            W, b = check_head(classifier, bias, K, d, self.device)
        elif bias is not None:
            raise ValueError("bias was given without a classifier; pass classifier=W as well")

        counts, means, m2 = self.counts, self.means, self.m2
        missing = torch.nonzero(counts == 0).squeeze(1).tolist()
        if missing:
            if empty == "raise":
                shown = missing[:20]
                raise ValueError(
                    f"{len(missing)} class(es) have no sample: {shown}{' ...' if len(missing) > 20 else ''}; "
                    "pass empty='drop' to compute the metrics over the classes present"
                )
            keep = torch.nonzero(counts > 0).squeeze(1)
            counts, means, m2 = counts[keep], means[keep], m2[keep]
            if W is not None:
                W, b = W[keep], b[keep]
        Kp = counts.shape[0]
        if Kp < 2:
            raise ValueError(f"need samples of at least 2 classes, got {Kp}")
        N = float(counts.sum())

        mu_g = (counts[:, None] * means).sum(0) / N if weighted_mean else means.mean(0)
        Mc = means - mu_g
        sigma_w = self.scatter / N
        tr_w = float(m2.sum()) / N
        tr_b = float((Mc * Mc).sum()) / Kp
        if rtol is None:
            rtol = max(Kp, d) * _EPS64
        # One tiled pass over each Gram serves all its pairwise metrics (and nc1's eigenproblem).
        pm = pairwise_summaries(Mc, angle=True, variances=m2 / counts, tile=tile, keep_gram=Kp <= d)
        nc1, rank = _nc1(Mc, sigma_w, rtol, gram=pm["gram"])

        W_metrics = dict(nc2_equinorm_W=None, nc2_maxangle_W=None, nc2_etf_W=None, nc3=None,
                         nc3_duality_gram=None, bias_collapse=None)
        if W is not None:
            pw = pairwise_summaries(W, angle=True, tile=tile)
            wn, mn = float(W.norm()), float(Mc.norm())
            W_metrics = dict(
                nc2_equinorm_W=equinorm_error(W),
                nc2_maxangle_W=pw["angle_error"],
                nc2_etf_W=pw["etf_gram_error"],
                nc3=float(((W / wn - Mc / mn) ** 2).sum()) if wn > 0 and mn > 0 else float("nan"),
                nc3_duality_gram=pairwise_summaries(W, Mc, tile=tile)["etf_gram_error"],
                bias_collapse=float((W @ mu_g + b).norm()),
            )
        return NCMetrics(
            nc1=nc1,
            nc1_trace_ratio=tr_w / tr_b if tr_b > 0 else float("nan"),
            cdnv=pm["cdnv"],
            nc2_equinorm_means=equinorm_error(Mc),
            nc2_maxangle_means=pm["angle_error"],
            nc2_etf_means=pm["etf_gram_error"],
            **W_metrics,
            num_classes=Kp,
            num_samples=int(N),
            dim=d,
            sigma_b_rank=rank,
            rtol=float(rtol),
            weighted_mean=bool(weighted_mean),
            empty_classes=tuple(missing),
        )


def _nc1(Mc: torch.Tensor, sigma_w: torch.Tensor, rtol: float, gram=None) -> tuple[float, int]:
    """Tr(Sigma_W Sigma_B^+)/K from the eigendecomposition of the smaller Gram of Mc
    (``gram`` = Mc Mc^T when the caller has it already)."""
    K, d = Mc.shape
    if K <= d:
        lam, U = torch.linalg.eigh(Mc @ Mc.T if gram is None else gram)
        if float(lam[-1]) <= 0:
            return float("nan"), 0
        keep = lam > rtol * lam[-1]
        V = (Mc.T @ U[:, keep]) / lam[keep].sqrt()  # orthonormal basis of span(Mc^T), d x r
    else:
        lam, V = torch.linalg.eigh(Mc.T @ Mc)
        if float(lam[-1]) <= 0:
            return float("nan"), 0
        keep = lam > rtol * lam[-1]
        V = V[:, keep]
    q = ((sigma_w @ V) * V).sum(0).clamp_min(0.0)  # v_j^T Sigma_W v_j >= 0 (PSD; clamp rounding)
    return float((q / lam[keep]).sum()), int(keep.sum())


# --------------------------------------------------------------------------------------------
# nc4: a second pass with the final class means
# --------------------------------------------------------------------------------------------


class NC4Counter:
    """Second-pass accumulator of nc4: the fraction of samples whose classifier decision
    ``argmax_k (w_k . h + b_k)`` differs from the nearest class mean ``argmin_k |h - mu_k|``
    (Papyan et al. 2020's NC4, REFERENCE.md section 3).

    Features and means are centred on the mean of the class means c before any product, so a large
    common offset does not cancel in ``|h|^2 + |mu|^2 - 2 h.mu``; each rule is one fused
    multiply-add per block: ``(W c + b) + (h - c) W^T`` and ``|mu_k - c|^2 - 2 (h - c) (mu_k - c)^T``.
    Classes without a sample (zero rows of ``class_means`` when ``counts`` is given) are excluded
    from the nearest-mean rule.  Labels, when given, also yield both accuracies.
    """

    #: rows x classes of one product block (float32 elements), to bound memory at large K.
    BLOCK_ELEMENTS = 1 << 24

    def __init__(self, class_means, classifier, bias=None, *, counts=None, gemm_dtype=None):
        mu = check_features(class_means, "class_means").to(torch.float64)
        K, d = mu.shape
        W, b = check_head(classifier, bias, K, d, mu.device)
        present = torch.ones(K, dtype=torch.bool, device=mu.device)
        if counts is not None:
            present = _as_tensor(counts, "counts").to(mu.device) > 0
        self.num_classes, self.dim = K, d
        self.gemm_dtype = gemm_dtype
        self.center = mu[present].mean(0)
        Mc = mu - self.center
        sq = (Mc * Mc).sum(1)
        # float64 masters; per (dtype, device) copies are made on first use
        self._master = (W.T.contiguous(), -2.0 * Mc.T, W @ self.center + b,
                        torch.where(present, sq, torch.full_like(sq, float("inf"))))
        self._operands: dict = {}
        self.mismatches = torch.zeros((), dtype=torch.float64)
        self.total = torch.zeros((), dtype=torch.float64)
        self.correct_classifier = torch.zeros((), dtype=torch.float64)
        self.correct_ncc = torch.zeros((), dtype=torch.float64)
        self.labelled = torch.zeros((), dtype=torch.float64)
        self._synced = False

    @torch.no_grad()
    def update(self, features, labels=None) -> "NC4Counter":
        if self._synced:
            raise ValueError("this counter was already synced; start a new NC4Counter")
        X = check_features(features, dim=self.dim)
        y = None if labels is None else check_labels(labels, X.shape[0], self.num_classes)
        if X.shape[0] == 0:
            return self
        gdt = self.gemm_dtype or _gemm_dtype(X.dtype)
        key = (gdt, X.device)
        if key not in self._operands:
            self._operands[key] = tuple(t.to(X.device, gdt) for t in self._master)
        Wt, Mt2, cls_off, ncc_off = self._operands[key]
        center = self.center.to(X.device)
        rows = max(1, self.BLOCK_ELEMENTS // self.num_classes)
        for s in range(0, X.shape[0], rows):  # blocks only bound memory at large K
            Hc = (X[s : s + rows].to(torch.float64) - center).to(gdt)  # centre before rounding
            pred_cls = torch.addmm(cls_off, Hc, Wt).argmax(1)  # w_k.h + b_k
            pred_ncc = torch.addmm(ncc_off, Hc, Mt2).argmin(1)  # |h - mu_k|^2 - |h - c|^2
            self.mismatches += float((pred_cls != pred_ncc).sum())
            self.total += pred_cls.shape[0]
            if y is not None:
                yb = y[s : s + rows].to(X.device)
                self.correct_classifier += float((pred_cls == yb).sum())
                self.correct_ncc += float((pred_ncc == yb).sum())
                self.labelled += yb.shape[0]
        return self

    def merge(self, other: "NC4Counter") -> "NC4Counter":
        for name in ("mismatches", "total", "correct_classifier", "correct_ncc", "labelled"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    @torch.no_grad()
    def sync(self, group=None) -> "NC4Counter":
        """All-reduce the counts over ``group`` (in place; no-op without torch.distributed)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        if self._synced:
            raise ValueError("this counter was already synced; syncing twice would double-count")
        dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else "cpu"
        t = torch.stack([self.mismatches, self.total, self.correct_classifier, self.correct_ncc, self.labelled]).to(dev)
        dist.all_reduce(t, group=group)
        t = t.cpu()
        self.mismatches, self.total, self.correct_classifier, self.correct_ncc, self.labelled = t.unbind()
        self._synced = True
        return self

    def compute(self) -> float:
        if float(self.total) == 0:
            raise ValueError("no samples yet: call update(features) first")
        return float(self.mismatches / self.total)

    @property
    def classifier_accuracy(self) -> float | None:
        return None if float(self.labelled) == 0 else float(self.correct_classifier / self.labelled)

    @property
    def ncc_accuracy(self) -> float | None:
        return None if float(self.labelled) == 0 else float(self.correct_ncc / self.labelled)


# --------------------------------------------------------------------------------------------
# one call
# --------------------------------------------------------------------------------------------


def _batches(features, labels, batch_size):
    N = features.shape[0]
    step = N if not batch_size else int(batch_size)
    for s in range(0, N, max(step, 1)):
        yield features[s : s + step], labels[s : s + step]


def compute_metrics(
    features,
    labels,
    classifier=None,
    bias=None,
    *,
    num_classes: int | None = None,
    weighted_mean: bool = False,
    batch_size: int | None = None,
    rtol: float | None = None,
    empty: str = "raise",
    progress=None,
) -> NCMetrics:
    """All NC metrics of labelled features in one call (two passes when a classifier is given:
    statistics, then nc4 with the final means).

    ``features`` (N, d) and ``labels`` (N,) may be tensors or numpy arrays (memory-mapped ones are
    read ``batch_size`` rows at a time).  K is ``classifier.shape[0]`` if given, else
    ``num_classes``, else ``max(labels) + 1``.  ``progress(n_rows)`` is called after each batch.

    >>> import torch
    >>> from nclab.geometry import simplex_etf
    >>> M = simplex_etf(3, 4)
    >>> y = torch.arange(30) % 3
    >>> h = M[y] + 0.01 * torch.randn(30, 4, dtype=torch.float64)
    >>> compute_metrics(h, y, classifier=M).nc4
    0.0
    """
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if getattr(features, "ndim", None) != 2:
        raise ValueError(f"features must be a 2-D array of shape (N, d), got shape {tuple(getattr(features, 'shape', ()))}")
    if getattr(labels, "ndim", None) != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"labels must be a 1-D array with one entry per feature row ({features.shape[0]}), "
            f"got shape {tuple(getattr(labels, 'shape', ()))}"
        )
    if classifier is not None:
        K = int(classifier.shape[0])
        if num_classes is not None and num_classes != K:
            raise ValueError(f"num_classes={num_classes} disagrees with the classifier's {K} rows")
    elif num_classes is not None:
        K = _check_num_classes(num_classes)
    else:
        if labels.shape[0] == 0:
            raise ValueError("no samples: features and labels are empty")
        ymax = int(labels.max())
        K = ymax + 1
        if K < 2:
            raise ValueError(f"labels contain a single class (max label {ymax}); need at least 2 classes")
    stats = NCStats(K)
    for Xb, yb in _batches(features, labels, batch_size):
        stats.update(_load(Xb), _load(yb))
        if progress is not None:
            progress(Xb.shape[0])
    res = stats.compute(classifier, bias, weighted_mean=weighted_mean, rtol=rtol, empty=empty)
    if classifier is None:
        return res
    counter = NC4Counter(stats.class_means, _load(classifier), None if bias is None else _load(bias), counts=stats.counts)
    for Xb, yb in _batches(features, labels, batch_size):
        counter.update(_load(Xb), _load(yb))
        if progress is not None:
            progress(Xb.shape[0])
    return res.with_nc4(counter.compute())


def _load(x):
    if isinstance(x, np.ndarray):  # covers np.memmap: reading the slice (a private copy) happens here
        return torch.from_numpy(np.array(x, copy=True, order="C"))
    return x
