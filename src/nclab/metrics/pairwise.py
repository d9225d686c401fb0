"""The tiled pairwise kernel: every K x K quantity of a set of vectors from one pass over its Gram.

The NC metrics that compare classes pairwise -- cdnv (Galanti et al. 2022), the max-angle measure
(Papyan et al. 2020) and the distance of a Gram to the simplex ETF's (Zhu et al. 2021) -- all read
the same K x K matrix ``G = A B^T`` (A = centred class means or the classifier W; REFERENCE.md
section 3).  :func:`pairwise_summaries` forms it ``tile`` rows at a time, so memory stays
O(tile^2) whatever K is, and computes all of them in that one pass.  When K <= tile the single
tile is also handed back (``keep_gram``) for nc1's eigenproblem.  When K > d + 1 the ETF distance
needs no K x K work at all: it follows from the d x d Grams (see :func:`pairwise_summaries`).

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
from nclab.metrics.resources import auto_tile

__all__ = ["pairwise_summaries", "DEFAULT_TILE"]


def pairwise_summaries(
    A, B=None, *, angle: bool = False, variances=None, tile: int | None = DEFAULT_TILE, keep_gram: bool = False
) -> dict:
    """Every pairwise (K x K) quantity of the rows of A (and B) from ONE tiled pass over ``A B^T``.

    Always ``etf_gram_error`` = ``| G/|G|_F - (I - J/K)/sqrt(K-1) |_F`` with ``G = A B^T``
    (``B = A`` if None).  With ``angle`` (B None): ``angle_error`` = mean over k != l of
    ``|cos(a_k, a_l) + 1/(K-1)|``.  With ``variances`` v (K,) (B None): ``cdnv`` = mean over
    k < l of ``(v_k + v_l) / (2 |a_k - a_l|^2)`` (Galanti et al. 2022), distances from the Gram
    (A holds centred means, so no offset cancels).  With ``keep_gram`` and K <= tile, ``gram`` is
    the K x K matrix ``A B^T`` (else None), for callers that need it whole.

    Memory O(K d + tile^2); ``tile=None`` picks it (:func:`nclab.metrics.resources.auto_tile`:
    512 rows on the CPU, so that a tile and the one reused buffer of its elementwise work stay in
    the cache; the whole Gram when K <= d + 1, as its K^2 entries are then no more than the d x d
    ones the caller holds, formed from its blocks on and above the diagonal by
    :func:`upper_blocks`).  Symmetric Grams visit only tiles j >= i.  Per tile the elementwise
    work is a few in-place passes: ``D = s_k + s_l - 2 G`` (clamped at 0) and ``1/D`` against
    ``[1, v]`` for cdnv, ``|G_kl + n_k n_l/(K-1)|`` weighted by ``1/(n_k n_l)`` (n the row norms)
    for the angles -- the same float64 quantities as the direct formulas, rounded in another
    order.

    The ETF distance is not always a K x K quantity.  When K > d + 1 the Gram has rank <= d <
    K - 1, so it stays at least ``sqrt((K-1-d)/(K-1))`` away from the ETF's and the expansion
    ``|G/g - T|^2 = 2 - 2 <G, T>/g`` (T the target, ``|T|_F = 1``) loses no significant digit;
    its terms come from d x d Grams: ``g^2 = |G|_F^2 = <A^T A, B^T B>`` and ``<G, T> =
    (sum_k a_k.b_k - (A^T 1).(B^T 1)/K) / sqrt(K-1)``.  (For W Mc^T, when ``g^2`` is below 1e-6
    of ``|A^T A|_F |B^T B|_F`` the trace cancels and the tiles are used instead.)  Otherwise the
    distance is summed tile by tile after a first pass has found ``|G|_F``, which keeps full
    relative accuracy near 0; a Gram held in one tile is kept between the two passes.
    """
    A = _rows(A, "A")
    sym = B is None
    B = A if sym else _rows(B, "B")
    if A.shape != B.shape:
        raise ValueError(f"A and B must have the same shape, got {tuple(A.shape)} and {tuple(B.shape)}")
    if (angle or variances is not None) and not sym:
        raise ValueError("angle and cdnv are defined for one set of vectors: pass B=None")
    K, d = A.shape
    if K < 2:
        raise ValueError("need at least K = 2 rows")
    if tile is None:
        tile = K if K <= d + 1 else auto_tile(K, A.device, itemsize=A.element_size())
    out = {"etf_gram_error": float("nan"), "gram": None}
    etf = _etf_from_small_grams(A, None if sym else B) if K > d + 1 else None
    if etf is not None:
        out["etf_gram_error"] = etf
    if etf is not None and not angle and variances is None and not keep_gram:
        return out

    tiles = [(i, j) for i in range(0, K, tile) for j in range(i if sym else 0, K, tile)]
    whole = _whole_gram(A, None if sym else B) if K <= tile else None  # held between the passes
    buf = torch.empty(min(K, tile) ** 2, dtype=A.dtype, device=A.device)  # the one tile temporary
    sq = (A * A).sum(1)
    norms = inv_norm = None
    if angle:
        norms = sq.sqrt()
        inv_norm = None if bool((norms == 0).any()) else 1.0 / norms
    v = None if variances is None else torch.as_tensor(variances, dtype=torch.float64, device=A.device)
    gbuf = None if whole is not None else torch.empty_like(buf)

    def block(i, j):
        if whole is not None:
            return whole
        rows, cols = A[i : i + tile], B[j : j + tile]
        return torch.mm(rows, cols.T, out=_view(gbuf, rows.shape[0], cols.shape[0]))

    g2 = angle_sum = cdnv_sum = 0.0
    c = 1.0 / (K - 1)
    for i, j in tiles:  # G stays unchanged; the elementwise work reuses one tile buffer, in place
        G = block(i, j)
        T = _view(buf, *G.shape)
        weight = 2.0 if sym and i != j else 1.0  # a symmetric off-diagonal tile stands for two
        if etf is None:
            g2 += weight * float(torch.linalg.vector_norm(G)) ** 2
        if v is not None:
            vi, vj = v[i : i + tile], v[j : j + tile]
            D = torch.add(sq[i : i + tile, None], sq[None, j : j + tile], out=T).add_(G, alpha=-2.0).clamp_min_(0.0)
            if i == j:  # pairs k < l only
                ratio = torch.add(vi[:, None], vj[None, :]).div_(D)
                cdnv_sum += 0.5 * float(torch.triu(ratio, diagonal=1).sum())
            else:  # sum_kl (v_k + v_l)/D_kl = v_i . (R 1) + 1 . (R v_j), R = 1/D: one pass over R
                both = D.reciprocal_() @ torch.stack((torch.ones_like(vj), vj), 1)
                cdnv_sum += 0.5 * float(vi @ both[:, 0] + both[:, 1].sum())
        if angle and inv_norm is not None:
            # |cos_kl + c| = |G_kl + c n_k n_l| / (n_k n_l): one rank-1 update, |.|, two matvecs
            E = torch.addr(G, norms[i : i + tile], norms[j : j + tile], alpha=c, out=T)
            if i == j:
                E.diagonal().zero_()
            angle_sum += weight * float(inv_norm[i : i + tile] @ (E.abs_() @ inv_norm[j : j + tile]))

    if etf is None:
        g = math.sqrt(g2)
        if g > 0:
            off = -1.0 / (K * math.sqrt(K - 1))
            diag = (1.0 - 1.0 / K) / math.sqrt(K - 1)
            total = 0.0
            for i, j in tiles:
                G = block(i, j)
                E = torch.div(G, g, out=_view(buf, *G.shape)).sub_(off)
                if i == j:  # the target's diagonal is (1 - 1/K)/sqrt(K-1)
                    E.diagonal().sub_(diag - off)
                total += (2.0 if sym and i != j else 1.0) * float(torch.linalg.vector_norm(E)) ** 2
            out["etf_gram_error"] = math.sqrt(total)
    if angle:
        out["angle_error"] = float("nan") if inv_norm is None else angle_sum / (K * (K - 1))
    if v is not None:
        out["cdnv"] = cdnv_sum / (K * (K - 1) / 2)
    if keep_gram and whole is not None:
        out["gram"] = whole
    return out


def _view(flat, rows, cols):
    """A contiguous rows x cols matrix over the start of the flat buffer ``flat``."""
    return flat[: rows * cols].view(rows, cols)


#: Rows per block of the symmetric products formed by blocks on the CPU (:func:`upper_blocks`).
#: Measured side by side on 2 cores: the 1000 x 1000 Gram of d = 2048 rows 24 ms in blocks of
#: 256 vs 36 ms as one GEMM; T^T T of a 999 x 2048 T against Sigma_W 44 ms vs 86 ms for T Sigma_W.
#: (SciPy's BLAS syrk halves the flops too, but its own thread pool fights torch's: no faster
#: than the GEMM once another process runs.)
SYM_BLOCK = 256


def upper_blocks(X, size: int | None = None):
    """The blocks on and above the diagonal of the symmetric ``X X^T``: yields ``(I, J, P)`` with
    I, J slices of rows and ``P = X[I] X[J]^T``, I <= J (``size`` rows per block, default
    :data:`SYM_BLOCK`).  About half the multiplications of the whole product (``(b + 1) / (2 b)``
    for b blocks), each entry the same sum of products."""
    size = size or SYM_BLOCK
    n = X.shape[0]
    edges = list(range(0, n, size)) + [n]
    cuts = [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]
    for a, I in enumerate(cuts):
        for J in cuts[a:]:
            yield I, J, X[I] @ X[J].T


def _whole_gram(A, B=None):
    """``A B^T`` whole; for B None on the CPU from the blocks on and above its diagonal."""
    if B is not None or A.device.type != "cpu" or A.shape[0] <= SYM_BLOCK:
        return A @ (A if B is None else B).T
    G = torch.empty(A.shape[0], A.shape[0], dtype=A.dtype)
    for I, J, P in upper_blocks(A):
        G[I, J] = P
        if I != J:
            G[J, I] = P.T
    return G


def _etf_from_small_grams(A, B=None):
    """``| G/|G|_F - (I - J/K)/sqrt(K-1) |_F`` for ``G = A B^T`` from d x d Grams (K > d + 1, see
    :func:`pairwise_summaries`); nan for G = 0, None where the cross term cancels."""
    K = A.shape[0]
    SA = A.T @ A
    if B is None:
        g2 = float(torch.linalg.vector_norm(SA)) ** 2
        trace = float((A * A).sum())
        col = A.sum(0)
        cross = float(col @ col)
    else:
        SB = B.T @ B
        g2 = float((SA * SB).sum())  # |A B^T|_F^2 = Tr(A^T A B^T B)
        if not g2 > 1e-6 * float(torch.linalg.vector_norm(SA)) * float(torch.linalg.vector_norm(SB)):
            return None if g2 == g2 else float("nan")
        trace = float((A * B).sum())
        cross = float(A.sum(0) @ B.sum(0))
    if not g2 > 0:
        return float("nan")
    inner = (trace - cross / K) / math.sqrt(K - 1) / math.sqrt(g2)  # <G/|G|_F, T>
    return math.sqrt(max(2.0 - 2.0 * inner, 0.0))
