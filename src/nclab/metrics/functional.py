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
from nclab.metrics.pairwise import pairwise_summaries, upper_blocks
from nclab.metrics.resources import single_thread

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


def nc1_and_rank(centred_means, sigma_w, rtol: float | None = None, *, gram=None, weights=None) -> tuple[float, int]:
    """``(nc1, rank)``: nc1 = ``Tr(Sigma_W Sigma_B^+)/K`` (Papyan, Han & Donoho 2020) and the
    number of eigenvalues of Sigma_B kept by the cut-off.

    ``Sigma_B = Mc^T Mc / K`` has rank <= K-1; its pseudo-inverse keeps the eigenvalues
    ``> rtol * lambda_max`` (default :func:`default_rtol`): no +eps*I regularisation (it inflates
    nc1 by orders of magnitude) and no hard rank-(K-1) truncation (wrong when d < K-1).

    Computed in the span of the centred means, on the smaller of the K x K Gram ``Mc Mc^T`` and
    the d x d ``Mc^T Mc``, without forming Sigma_B^+.  With ``Sigma_B^+ = K Mc^T (Mc Mc^T)^{+2} Mc``
    the 1/K of Sigma_B and the /K of nc1 cancel: ``nc1 = Tr(Sigma_W Mc^T (Mc Mc^T)^{+2} Mc)``.

    * Fast path (CPU, well-conditioned means, the usual case): when K <= d the centring direction
      ``z`` (``weights``: the counts for a count-weighted global mean; ones by default) is removed
      exactly by a Householder reflection, leaving the (K-1)-row B with ``Mc Mc^T = Q^T [0, 0;
      0, B B^T] Q``; a Cholesky factor of ``H = B B^T`` gives ``T = H^{-1} B`` and
      ``nc1 = sum_k t_k^T Sigma_W t_k = <Sigma_W, T^T T>`` (rank K-1), summed over the blocks of
      T^T T on and above its diagonal (:func:`nclab.metrics.pairwise.upper_blocks`; about K d^2
      multiplications instead of the 2 K d^2 of ``T Sigma_W``, the same products).  When K > d the d x d ``S = Mc^T Mc`` is
      factored instead: ``nc1 = Tr(L^{-1} Sigma_W L^{-T})`` (rank d).  It is taken only when
      LAPACK's condition estimate puts every eigenvalue at least 1e4 times above the cut-off, so
      the cut-off keeps all of them and the result is the pseudo-inverse formula's.
    * Otherwise (rank-deficient or nearly so, uncentred input, GPU tensors): the eigenvectors of
      the smaller Gram, ``Mc Mc^T = U diag(lam) U^T`` and ``v_j = Mc^T u_j / sqrt(lam_j)``,
      ``nc1 = sum_j v_j^T Sigma_W v_j / lam_j`` over the kept eigenvalues; the dense ``eigh``
      runs on one thread (several threads fight other processes badly in LAPACK's reduction).

    ``gram`` = ``Mc Mc^T`` when the caller has it already.  nan (rank 0) when all means coincide.

    Parameters: centred_means (K, d); sigma_w (d, d) within-class covariance
    ``(1/N) sum_{k,i} (h_{k,i} - mu_k)(h_{k,i} - mu_k)^T``; rtol; gram (K, K) optional;
    weights (K,) optional, the vector with ``weights^T Mc = 0`` (the counts when the global mean
    is count-weighted).
    """
    Mc, sigma_w = _f64(centred_means), _f64(sigma_w)
    K, d = Mc.shape
    if rtol is None:
        rtol = default_rtol(K, d)
    fast = _nc1_cholesky(Mc, sigma_w, float(rtol), gram, weights)
    return fast if fast is not None else _nc1_eigh(Mc, sigma_w, rtol, gram)


#: The fast path of nc1 needs LAPACK's condition estimate above this multiple of the cut-off.
_COND_MARGIN = 1e4


def _nc1_cholesky(Mc, sigma_w, rtol, gram, weights):
    """nc1 by a Cholesky factor of the smaller Gram, or None when its conditions do not hold."""
    if Mc.device.type != "cpu" or rtol * _COND_MARGIN >= 1.0:
        return None
    K, d = Mc.shape
    fro2 = float((Mc * Mc).sum())
    if fro2 == 0.0:
        return None
    if K <= d:
        z = torch.ones(K, dtype=torch.float64) if weights is None else _f64(weights).to(Mc.device)
        z = z / z.norm()
        if float((z @ Mc).square().sum()) > 0.01 * rtol * fro2 / K:
            return None  # not centred along z: no known null direction to remove
        v = z.clone()
        v[0] += 1.0 if float(z[0]) >= 0 else -1.0  # Householder vector: Q z = -+e_1
        c = 2.0 / float(v @ v)
        B = torch.addr(Mc, v, v @ Mc, alpha=-c)[1:]  # Q Mc without its first (null) row
        if gram is None:
            H = B @ B.T
        else:  # Q G Q from the Gram the caller has: O(K^2)
            G = _f64(gram)
            u = G @ v
            # (Q G Q)[1:, 1:] = G' - c v' u'^T - c u' v'^T + c^2 (v.u) v' v'^T  (' drops row 0)
            #                 = G' - c v' w^T - c w v'^T,  w = u' - (c/2)(v.u) v': two rank-1 updates
            w = u[1:] - (0.5 * c * float(v @ u)) * v[1:]
            H = G[1:, 1:].clone().addr_(v[1:], w, alpha=-c).addr_(w, v[1:], alpha=-c)
        rank = K - 1
    else:
        B = None
        H = Mc.T @ Mc
        rank = d
    L, info = torch.linalg.cholesky_ex(H)
    if int(info) != 0:
        return None
    from scipy.linalg.lapack import dpocon

    anorm = float(H.abs().sum(0).max())
    rcond, info = dpocon(L.numpy(), anorm, uplo="L")
    if info != 0 or not rcond > _COND_MARGIN * rtol:
        return None
    if B is not None:
        T = torch.cholesky_solve(B, L)  # H^{-1} B, (K-1) x d
        # sum_k t_k^T Sigma_W t_k = <Sigma_W, T^T T> (Sigma_W symmetric): the same products summed
        # in another order, from the blocks of T^T T on and above its diagonal (about K d^2
        # multiplications, half of T Sigma_W's)
        q = 0.0
        for I, J, P in upper_blocks(T.T):
            q += (1.0 if I == J else 2.0) * float(torch.vdot(P.reshape(-1), sigma_w[I, J].reshape(-1)))
        return max(q, 0.0), rank  # >= 0 (Sigma_W PSD; clamp rounding)
    T = torch.linalg.solve_triangular(L, torch.eye(d, dtype=torch.float64), upper=False)  # L^{-1}
    q = ((T @ sigma_w) * T).sum(1).clamp_min(0.0)  # t^T Sigma_W t >= 0 (PSD; clamp rounding)
    return float(q.sum()), rank


def _nc1_eigh(Mc, sigma_w, rtol, gram):
    """nc1 from the eigenvectors of the smaller Gram (the general path: any rank, any device)."""
    K, d = Mc.shape
    with single_thread(Mc.device):
        if K <= d:
            lam, U = torch.linalg.eigh(Mc @ Mc.T if gram is None else _f64(gram))
        else:
            lam, V = torch.linalg.eigh(Mc.T @ Mc)
    if float(lam[-1]) <= 0:
        return float("nan"), 0
    keep = lam > rtol * lam[-1]
    if K <= d:
        V = (Mc.T @ U[:, keep]) / lam[keep].sqrt()  # orthonormal basis of span(Mc^T), d x r
    else:
        V = V[:, keep]
    q = ((sigma_w @ V) * V).sum(0).clamp_min(0.0)  # v_j^T Sigma_W v_j >= 0 (PSD; clamp rounding)
    return float((q / lam[keep]).sum()), int(keep.sum())


def nc1(centred_means, sigma_w, rtol: float | None = None, *, gram=None, weights=None) -> float:
    """nc1 = ``Tr(Sigma_W Sigma_B^+)/K`` (Papyan et al. 2020) with a relative eigenvalue cut-off;
    see :func:`nc1_and_rank` for the method and the parameters."""
    return nc1_and_rank(centred_means, sigma_w, rtol, gram=gram, weights=weights)[0]


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


def cdnv(centred_means, variances, *, tile: int | None = DEFAULT_TILE) -> float:
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


def nc2_maxangle(A, *, tile: int | None = DEFAULT_TILE) -> float:
    """Max-angle measure (Papyan et al. 2020): the mean over k != l of
    ``|cos(a_k, a_l) + 1/(K-1)|``.  ``A = Mc`` gives nc2_maxangle_means, ``A = W``
    nc2_maxangle_W; nan if a row is zero.  Tiled, memory O(tile^2)."""
    return pairwise_summaries(_f64(A), angle=True, tile=tile)["angle_error"]


def nc2_etf(A, *, tile: int | None = DEFAULT_TILE) -> float:
    """Distance of the Gram to the simplex ETF's (Zhu et al. 2021):
    ``| G/|G|_F - (I - J/K)/sqrt(K-1) |_F`` with ``G = A A^T``.  ``A = Mc`` gives nc2_etf_means,
    ``A = W`` nc2_etf_W; nan for A = 0.  Tiled, memory O(tile^2), accurate near 0."""
    return pairwise_summaries(_f64(A), tile=tile)["etf_gram_error"]


def nc3(W, centred_means) -> float:
    """Self-duality (Papyan et al. 2020): ``| W/|W|_F - Mc/|Mc|_F |_F^2``; nan if W or Mc is 0.

    Parameters: W (K, d) classifier; centred_means (K, d)."""
    W, Mc = _f64(W), _f64(centred_means)
    wn, mn = float(W.norm()), float(Mc.norm())
    if not (wn > 0 and mn > 0):
        return float("nan")
    # W/|W| - Mc/|Mc| = (W - (|W|/|Mc|) Mc) / |W|: one fused pass and one temporary
    return (float(torch.linalg.vector_norm(torch.sub(W, Mc, alpha=wn / mn))) / wn) ** 2


def nc3_duality_gram(W, centred_means, *, tile: int | None = DEFAULT_TILE) -> float:
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
