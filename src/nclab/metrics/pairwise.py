"""The tiled pairwise kernel: every K x K quantity of a set of vectors from one pass over its Gram.

The NC metrics that compare classes pairwise -- cdnv (Galanti et al. 2022), the max-angle measure
(Papyan et al. 2020) and the distance of a Gram to the simplex ETF's (Zhu et al. 2021) -- all read
the same K x K matrix ``G = A B^T`` (A = centred class means or the classifier W; REFERENCE.md
section 3).  :func:`pairwise_summaries` forms it ``tile`` rows at a time, so memory stays
O(tile^2) whatever K is, and computes all of them in that one pass.  When K <= tile the single
tile is also handed back (``keep_gram``) for nc1's eigenproblem.

The distances to an ETF of :mod:`nclab.geometry` (``etf_gram_error``, ``etf_angle_error``) are
thin wrappers over this kernel.

>>> from nclab.geometry import simplex_etf
>>> out = pairwise_summaries(simplex_etf(4, 5), angle=True)
>>> out["etf_gram_error"] < 1e-14 and out["angle_error"] < 1e-14
True
"""

from __future__ import annotations

import math

import torch

from nclab.geometry import DEFAULT_TILE, _rows

__all__ = ["pairwise_summaries", "DEFAULT_TILE"]


def pairwise_summaries(
    A, B=None, *, angle: bool = False, variances=None, tile: int = DEFAULT_TILE, keep_gram: bool = False
) -> dict:
    """Every pairwise (K x K) quantity of the rows of A (and B) from ONE tiled pass over ``A B^T``.

    Always ``etf_gram_error`` = ``| G/|G|_F - (I - J/K)/sqrt(K-1) |_F`` with ``G = A B^T``
    (``B = A`` if None).  With ``angle`` (B None): ``angle_error`` = mean over k != l of
    ``|cos(a_k, a_l) + 1/(K-1)|``.  With ``variances`` v (K,) (B None): ``cdnv`` = mean over
    k < l of ``(v_k + v_l) / (2 |a_k - a_l|^2)`` (Galanti et al. 2022), distances from the Gram
    (A holds centred means, so no offset cancels).  With ``keep_gram`` and K <= tile, ``gram`` is
    the K x K matrix ``A B^T`` (else None), for callers that need it whole.

    Memory O(tile^2).  The Gram distance is summed tile by tile after a first pass has found
    ``|G|_F``, which keeps full relative accuracy near 0 (the expansion ``2 - 2<., .>`` loses half
    the digits); when K <= tile the single tile is kept between the passes, so every quantity
    costs one K x K x d product together.  Symmetric Grams visit only tiles j >= i.
    """
    A = _rows(A, "A")
    sym = B is None
    B = A if sym else _rows(B, "B")
    if A.shape != B.shape:
        raise ValueError(f"A and B must have the same shape, got {tuple(A.shape)} and {tuple(B.shape)}")
    if (angle or variances is not None) and not sym:
        raise ValueError("angle and cdnv are defined for one set of vectors: pass B=None")
    K = A.shape[0]
    if K < 2:
        raise ValueError("need at least K = 2 rows")
    tiles = [(i, j) for i in range(0, K, tile) for j in range(i if sym else 0, K, tile)]
    cache = {} if K <= tile else None
    sq = (A * A).sum(1)
    inv_norm = None
    if angle:
        norms = sq.sqrt()
        inv_norm = None if bool((norms == 0).any()) else 1.0 / norms
    v = None if variances is None else torch.as_tensor(variances, dtype=torch.float64, device=A.device)

    def block(i, j):
        if cache is not None and (i, j) in cache:
            return cache[(i, j)]
        G = A[i : i + tile] @ B[j : j + tile].T
        if cache is not None:
            cache[(i, j)] = G
        return G

    g2 = angle_sum = cdnv_sum = 0.0
    for i, j in tiles:  # in-place elementwise work: a tile is the only large temporary
        G = block(i, j)
        weight = 2.0 if sym and i != j else 1.0  # a symmetric off-diagonal tile stands for two
        g2 += weight * float(torch.linalg.vector_norm(G)) ** 2
        if angle and inv_norm is not None:
            C = G * inv_norm[i : i + tile, None]
            C.mul_(inv_norm[None, j : j + tile]).add_(1.0 / (K - 1)).abs_()
            if i == j:
                C.diagonal().zero_()
            angle_sum += weight * float(C.sum())
        if v is not None:
            d2 = torch.add(sq[i : i + tile, None], sq[None, j : j + tile]).add_(G, alpha=-2.0).clamp_min_(0.0)
            ratio = torch.add(v[i : i + tile, None], v[None, j : j + tile]).div_(d2)  # (v_k + v_l)/|.|^2
            if i == j:
                ratio = torch.triu(ratio, diagonal=1)
            cdnv_sum += 0.5 * float(ratio.sum())

    out = {"etf_gram_error": float("nan"), "gram": None}
    g = math.sqrt(g2)
    if g > 0:
        off = -1.0 / (K * math.sqrt(K - 1))
        diag = (1.0 - 1.0 / K) / math.sqrt(K - 1)
        total = 0.0
        for i, j in tiles:
            E = (block(i, j) / g).sub_(off)
            if i == j:  # the target's diagonal is (1 - 1/K)/sqrt(K-1)
                E.diagonal().sub_(diag - off)
            total += (2.0 if sym and i != j else 1.0) * float(torch.linalg.vector_norm(E)) ** 2
        out["etf_gram_error"] = math.sqrt(total)
    if angle:
        out["angle_error"] = float("nan") if inv_norm is None else angle_sum / (K * (K - 1))
    if v is not None:
        out["cdnv"] = cdnv_sum / (K * (K - 1) / 2)
    if keep_gram and cache is not None:
        out["gram"] = cache[(0, 0)]
    return out
