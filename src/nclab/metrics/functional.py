"""Pure formulas of the neural-collapse metrics (REFERENCE.md section 3), one function per metric.

Every function takes float64 tensors of the class-level quantities and returns a float; none keeps
state, validates batches or moves data between devices.  :meth:`nclab.metrics.NCStats.compute`
feeds them from its exact statistics; they can also be called directly on class means and
classifiers from elsewhere.  Notation: K classes, d dimensions, ``Mc`` the K x d centred class
means (row k = mu_k - mu_G, see :func:`centred_means`), W the K x d classifier (row k = w_k),
b the (K,) bias, ``Sigma_W`` the d x d within-class covariance.

Three metrics compare classes pairwise (cdnv, the max-angle and the ETF Gram distances); their
formulas are evaluated by the tiled kernel :func:`nclab.metrics.pairwise.pairwise_summaries`,
which ``NCStats.compute`` calls once per Gram for all of them together.

>>> import torch
>>> from nclab.geometry import simplex_etf
>>> M = 2.0 * simplex_etf(4, 6)
>>> Mc, mu_g = centred_means(M)
>>> nc2_etf(Mc) < 1e-14 and nc3(M, Mc) < 1e-14 and nc2_equinorm(Mc) < 1e-14
True
>>> nc1(Mc, 0.01 * torch.eye(6, dtype=torch.float64))  # sigma^2 (K-1)^2/(K r^2) = 0.01*9/(4*4)
0.005625...
"""

from __future__ import annotations

import torch

from nclab.geometry import DEFAULT_TILE, equinorm_error
from nclab.metrics.pairwise import pairwise_summaries

__all__ = [
    "centred_means",
    "default_rtol",
    "nc1",
    "nc1_and_rank",
    "nc1_trace_ratio",
    "cdnv",
    "nc2_equinorm",
    "nc2_maxangle",
    "nc2_etf",
    "nc3",
    "nc3_duality_gram",
    "bias_collapse",
    "nc4",
]

_EPS64 = float(torch.finfo(torch.float64).eps)


def _f64(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)  # no copy for a float64 tensor


def centred_means(means, counts=None, *, weighted: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Mc, mu_G)``: the class means centred on the global mean, and the global mean.

    ``mu_G`` is the unweighted mean of the K class means (Papyan et al. 2020, the default) or,
    with ``weighted=True``, the mean of all features ``sum_k n_k mu_k / N`` (needs ``counts``).

    Parameters: means (K, d); counts (K,) samples per class.  Returns Mc (K, d) and mu_G (d,).
    """
    means = _f64(means)
    if weighted:
        if counts is None:
            raise ValueError("weighted=True needs the class counts: pass counts=")
        counts = _f64(counts)
        N = float(counts.sum())
        mu_g = (counts[:, None] * means).sum(0) / N
    else:
        mu_g = means.mean(0)
    return means - mu_g, mu_g


def default_rtol(K: int, d: int) -> float:
    """The default relative eigenvalue cut-off of Sigma_B's pseudo-inverse, ``max(K, d) * eps``
    (float64 eps; numpy's matrix-rank tolerance)."""
    return max(K, d) * _EPS64


def nc1_and_rank(centred_means, sigma_w, rtol: float | None = None, *, gram=None) -> tuple[float, int]:
    """``(nc1, rank)``: nc1 = ``Tr(Sigma_W Sigma_B^+)/K`` (Papyan, Han & Donoho 2020) and the
    number of eigenvalues of Sigma_B kept by the cut-off.

    ``Sigma_B = Mc^T Mc / K`` has rank <= K-1; its pseudo-inverse keeps the eigenvalues
    ``> rtol * lambda_max`` (default :func:`default_rtol`): no +eps*I regularisation (it inflates
    nc1 by orders of magnitude) and no hard rank-(K-1) truncation (wrong when d < K-1).

    Computed in the span of the centred means, without a d x d or K x K inverse: with
    ``Mc Mc^T = U diag(lam) U^T`` (the K x K Gram, or the d x d ``Mc^T Mc`` when K > d) and
    ``v_j = Mc^T u_j / sqrt(lam_j)``, ``nc1 = sum_j v_j^T Sigma_W v_j / lam_j`` over the kept
    eigenvalues (the 1/K of Sigma_B and the /K of nc1 cancel).  ``gram`` = ``Mc Mc^T`` when the
    caller has it already.  nan (rank 0) when all means coincide.

    Parameters: centred_means (K, d); sigma_w (d, d) within-class covariance
    ``(1/N) sum_{k,i} (h_{k,i} - mu_k)(h_{k,i} - mu_k)^T``.
    """
    Mc, sigma_w = _f64(centred_means), _f64(sigma_w)
    K, d = Mc.shape
    if rtol is None:
        rtol = default_rtol(K, d)
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


def nc1(centred_means, sigma_w, rtol: float | None = None, *, gram=None) -> float:
    """nc1 = ``Tr(Sigma_W Sigma_B^+)/K`` (Papyan et al. 2020) with a relative eigenvalue cut-off;
    see :func:`nc1_and_rank` for the method and the parameters."""
    return nc1_and_rank(centred_means, sigma_w, rtol, gram=gram)[0]


def nc1_trace_ratio(centred_means, m2, counts) -> float:
    """``Tr(Sigma_W) / Tr(Sigma_B)`` with ``Tr(Sigma_W) = sum_k m2_k / N`` and
    ``Tr(Sigma_B) = |Mc|_F^2 / K``; nan when all means coincide.

    Parameters: centred_means (K, d); m2 (K,) per-class sums of squared deviations
    ``sum_i |h_{k,i} - mu_k|^2``; counts (K,) samples per class.
    """
    Mc, m2, counts = _f64(centred_means), _f64(m2), _f64(counts)
    N = float(counts.sum())
    tr_w = float(m2.sum()) / N
    tr_b = float((Mc * Mc).sum()) / Mc.shape[0]
    return tr_w / tr_b if tr_b > 0 else float("nan")


def cdnv(centred_means, variances, *, tile: int = DEFAULT_TILE) -> float:
    """Class-distance normalised variance (Galanti et al. 2022): the mean over pairs k < l of
    ``(v_k + v_l) / (2 |mu_k - mu_l|^2)``, ``v_k = m2_k / n_k`` the mean squared distance of
    class k to its mean.  Distances come from the Gram of the centred means (no offset cancels);
    tiled, memory O(tile^2).

    Parameters: centred_means (K, d); variances (K,).
    """
    return pairwise_summaries(_f64(centred_means), variances=variances, tile=tile)["cdnv"]


def nc2_equinorm(A) -> float:
    """Equinorm (Papyan et al. 2020): std/mean of the row norms ``|a_k|``, std with Bessel's
    correction.  ``A = Mc`` gives nc2_equinorm_means, ``A = W`` nc2_equinorm_W; nan for A = 0."""
    return equinorm_error(_f64(A))


def nc2_maxangle(A, *, tile: int = DEFAULT_TILE) -> float:
    """Max-angle measure (Papyan et al. 2020): the mean over k != l of
    ``|cos(a_k, a_l) + 1/(K-1)|``.  ``A = Mc`` gives nc2_maxangle_means, ``A = W``
    nc2_maxangle_W; nan if a row is zero.  Tiled, memory O(tile^2)."""
    return pairwise_summaries(_f64(A), angle=True, tile=tile)["angle_error"]


def nc2_etf(A, *, tile: int = DEFAULT_TILE) -> float:
    """Distance of the Gram to the simplex ETF's (Zhu et al. 2021):
    ``| G/|G|_F - (I - J/K)/sqrt(K-1) |_F`` with ``G = A A^T``.  ``A = Mc`` gives nc2_etf_means,
    ``A = W`` nc2_etf_W; nan for A = 0.  Tiled, memory O(tile^2), accurate near 0."""
    return pairwise_summaries(_f64(A), tile=tile)["etf_gram_error"]


def nc3(W, centred_means) -> float:
    """Self-duality (Papyan et al. 2020): ``| W/|W|_F - Mc/|Mc|_F |_F^2``; nan if W or Mc is 0.

    Parameters: W (K, d) classifier; centred_means (K, d)."""
    W, Mc = _f64(W), _f64(centred_means)
    wn, mn = float(W.norm()), float(Mc.norm())
    return float(((W / wn - Mc / mn) ** 2).sum()) if wn > 0 and mn > 0 else float("nan")


def nc3_duality_gram(W, centred_means, *, tile: int = DEFAULT_TILE) -> float:
    """Self-duality in Zhu et al. 2021's form: ``| W Mc^T/|W Mc^T|_F - (I - J/K)/sqrt(K-1) |_F``;
    nan if ``W Mc^T = 0``.  Tiled, memory O(tile^2)."""
    return pairwise_summaries(_f64(W), _f64(centred_means), tile=tile)["etf_gram_error"]


def bias_collapse(W, b, global_mean) -> float:
    """``| (I - J/K)(W mu_G + b) |`` (REFERENCE.md section 3): the non-constant part of the logit
    offset at the global mean.  The theorems' bias collapse is b = b* 1 (Zhu et al. 2021); a
    constant offset is invisible to softmax cross-entropy and equals 1/K for the MSE UFM at its
    optimum, so only the centred part must vanish.  (Zhu et al.'s code reports the uncentred
    ``| W mu_G + b |`` as "NC4".)  The centring subtracts the mean entry of the K-vector, exactly.

    Parameters: W (K, d); b (K,); global_mean (d,).
    """
    W, b, mu_g = _f64(W), _f64(b), _f64(global_mean)
    v = W @ mu_g + b
    return float((v - v.mean()).norm())


def nc4(mismatches, total) -> float:
    """nc4 (Papyan et al. 2020) from the counts of :class:`nclab.metrics.NC4Counter`: the
    fraction ``mismatches / total`` of samples whose classifier decision
    ``argmax_k (w_k . h + b_k)`` differs from the nearest class mean ``argmin_k |h - mu_k|``."""
    mismatches, total = int(mismatches), int(total)
    if total == 0:
        raise ValueError("no samples yet: call update(features) first")
    return mismatches / total
