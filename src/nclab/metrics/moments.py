"""Per-batch centred moments: the kernels that :class:`nclab.metrics.NCStats` runs on every batch.

* :func:`batch_moments` reduces one batch to its class counts, class means, per-class sums of
  squared deviations and the matrix of deviations, by two-level centring in the input's precision
  (a first estimate a_k of each class mean, deviations R = X - a_y, then the small correction
  c_k = mean of R over class k), so that a large common offset of the features costs no digits;
* :func:`class_summer` forms per-class row sums without a dense B x K one-hot (a sparse CSR
  indicator on the CPU, ``index_add_`` on GPUs);
* :func:`gemm_dtype` and :func:`blas_syrk` fix the precision and the BLAS routine of the scatter
  product (syrk: half the flops of the GEMM A^T A).

No Python loop runs over samples or classes.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["gemm_dtype", "blas_syrk", "class_summer", "batch_moments"]


def gemm_dtype(dtype: torch.dtype) -> torch.dtype:
    """The product precision for inputs of ``dtype``: float64 stays, anything else is float32.

    Half-precision inputs are upcast: centred deviations need float32's mantissa at least."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def blas_syrk(dtype: torch.dtype):
    """SciPy's BLAS symmetric rank-k update (``dsyrk`` / ``ssyrk``) for ``dtype``."""
    from scipy.linalg import blas

    return blas.dsyrk if dtype == torch.float64 else blas.ssyrk


def class_summer(y: torch.Tensor, counts: torch.Tensor, dtype: torch.dtype):
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


def batch_moments(X: torch.Tensor, y: torch.Tensor, K: int, spare_rows: int = 0):
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
    class_sum = class_summer(y, counts, X.dtype)
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
