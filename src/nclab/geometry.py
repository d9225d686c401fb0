"""Simplex equiangular tight frames, orthogonal frames and measures of distance to them.

Conventions (REFERENCE.md section 1).  The reference writes the simplex ETF as a d x K matrix
``M = sqrt(K/(K-1)) P (I_K - J/K)`` whose *columns* are the K unit vectors.  In nclab's Python API
frames are stored like a classifier, *one vector per row*: every function here returns or takes a
K x d matrix, i.e. ``M^T``.  Its Gram is ``M^T M = K/(K-1) (I - J/K)``: unit rows with pairwise
inner product ``-1/(K-1)``.

Example
-------
>>> import torch
>>> from nclab.geometry import simplex_etf
>>> M = simplex_etf(4, 5, seed=0)
>>> torch.allclose(M @ M.T, 4 / 3 * (torch.eye(4, dtype=M.dtype) - 1 / 4), atol=1e-12)
True
"""

from __future__ import annotations

import math

import torch

from nclab._validation import check_int

__all__ = [
    "simplex_etf",
    "orthogonal_frame",
    "random_orthogonal",
    "ones_preserving_rotation",
    "simplex_gram",
    "frame_potential",
    "frame_potential_bound",
    "frame_potential_excess",
    "welch_bound",
    "etf_gram_error",
    "etf_angle_error",
    "equinorm_error",
    "spherical_moment_sums",
    "DEFAULT_TILE",
]

#: Rows per tile for pairwise (K x K) quantities (the kernel is :mod:`nclab.metrics.pairwise`):
#: memory stays O(tile^2) whatever K is.
DEFAULT_TILE = 2048


def random_orthogonal(d: int, seed: int | None = 0, dtype=torch.float64, device=None) -> torch.Tensor:
    """A Haar-distributed random d x d orthogonal matrix, reproducible from ``seed``.

    QR of a standard Gaussian matrix with the signs of R's diagonal moved into Q (Mezzadri 2007),
    which makes the distribution exactly Haar.
    """
    d = check_int("d", d, 1)
    gen = torch.Generator(device="cpu")
    gen.manual_seed(0 if seed is None else int(seed))
    a = torch.randn(d, d, generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()))[None, :]
    return q.to(dtype=dtype, device=device)


def ones_preserving_rotation(d: int, seed: int | None = 0, dtype=torch.float64, device=None) -> torch.Tensor:
    """A random d x d orthogonal Q with ``Q 1 = 1``: Haar-random on the complement of the
    all-ones vector, the identity along it (``Q = u u^T + B R B^T``, u = 1/sqrt(d), B a basis of
    1^perp, R Haar on O(d-1)).

    Why: a frame W with rows summing to zero (``W 1 = 0``, true of :func:`simplex_etf` for d >= K)
    keeps that property under Q, and then every class is the argmax of ``W h`` for some
    non-negative h (``h = 1 + eps w_k``), so a fixed classifier on ReLU features can reach every
    class.  A rotation by a general orthogonal matrix can leave a class unreachable from the
    non-negative orthant.
    """
    d = check_int("d", d, 1)
    if d == 1:
        return torch.ones(1, 1, dtype=dtype, device=device)
    B = _centred_basis(d)
    u = torch.full((d, 1), 1.0 / math.sqrt(d), dtype=torch.float64)
    Q = u @ u.T + B @ random_orthogonal(d - 1, seed) @ B.T
    return Q.to(dtype=dtype, device=device)


def _centred_basis(K: int) -> torch.Tensor:
    """K x (K-1) orthonormal basis of the complement of the all-ones vector (Helmert basis)."""
    U = torch.zeros(K, K - 1, dtype=torch.float64)
    for j in range(1, K):  # K is a class count: this loop builds a K x K constant once.
        U[:j, j - 1] = 1.0
        U[j, j - 1] = -float(j)
        U[:, j - 1] /= math.sqrt(j * (j + 1))
    return U


def simplex_gram(K: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """The Gram ``K/(K-1) (I - J/K)`` of a unit simplex ETF with K vectors."""
    K = check_int("K", K, 2)
    eye = torch.eye(K, dtype=dtype, device=device)
    return (K / (K - 1)) * (eye - 1.0 / K)


def simplex_etf(
    K: int,
    d: int | None = None,
    *,
    seed: int | None = None,
    dtype=torch.float64,
    device=None,
) -> torch.Tensor:
    """Simplex ETF of K unit vectors in R^d, one vector per row (K x d).

    ``M^T = sqrt(K/(K-1)) (I_K - J/K) P^T`` (REFERENCE.md section 1, Zhu et al. 2021 / Papyan et
    al. 2020).  For d >= K, P holds the first K coordinate axes; for d = K-1, the
    (K-1)-dimensional construction ``sqrt(K/(K-1)) U`` with U an orthonormal basis of the
    complement of the all-ones vector.  With ``seed`` the frame is rotated by a Haar-random
    orthogonal d x d matrix drawn from that seed.

    Parameters
    ----------
    K : number of vectors (classes), K >= 2.
    d : ambient dimension, d >= K-1 (default K).
    seed : optional seed of a random rotation.

    Raises
    ------
    ValueError
        if K < 2 or d < K-1: a simplex ETF of K vectors needs at least K-1 dimensions.
    """
    if isinstance(K, bool) or not isinstance(K, int) or K < 2:
        raise ValueError(f"K must be an integer >= 2 for a simplex ETF, got {K!r}")
    if d is None:
        d = K
    if isinstance(d, bool) or not isinstance(d, int) or d < K - 1:
        raise ValueError(
            f"a simplex ETF of K={K} vectors needs dimension d >= K-1 = {K - 1}, got d={d!r}; "
            f"use d >= {K - 1} (d = K-1 is the smallest possible, d = K the usual choice)"
        )
    scale = math.sqrt(K / (K - 1))
    if d >= K:
        M = torch.zeros(K, d, dtype=torch.float64)
        M[:, :K] = scale * (torch.eye(K, dtype=torch.float64) - 1.0 / K)
    else:  # d == K-1
        M = scale * _centred_basis(K)
    if seed is not None:
        M = M @ random_orthogonal(d, seed)
    return M.to(dtype=dtype, device=device)


def orthogonal_frame(
    K: int, d: int | None = None, *, seed: int | None = None, dtype=torch.float64, device=None
) -> torch.Tensor:
    """K orthonormal vectors in R^d, one per row (K x d), rotated by a random orthogonal matrix
    from ``seed`` if given.  This is P^T of REFERENCE.md section 1 (``P^T P = I``); the optimal
    classifier of the bias-free MSE UFM is a scaled orthogonal frame (Zhou et al. 2022)."""
    K = check_int("K", K, 1)
    if d is None:
        d = K
    if isinstance(d, bool) or not isinstance(d, int) or d < K:
        raise ValueError(f"an orthogonal frame of K={K} vectors needs d >= K = {K}, got d={d!r}")
    M = torch.zeros(K, d, dtype=torch.float64)
    M[:, :K] = torch.eye(K, dtype=torch.float64)
    if seed is not None:
        M = M @ random_orthogonal(d, seed)
    return M.to(dtype=dtype, device=device)


def _rows(X, name: str = "X") -> torch.Tensor:
    X = torch.as_tensor(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix with one vector per row, got shape {tuple(X.shape)}")
    if not torch.is_floating_point(X):
        X = X.to(torch.float64)
    # A finite sum proves every entry finite with one fast reduction; only then is the full check skipped.
    if not bool(torch.isfinite(X.sum())) and not bool(torch.isfinite(X).all()):
        raise ValueError(f"{name} contains NaN or inf entries")
    return X.to(torch.float64)


def frame_potential(X, *, normalize: bool = False) -> float:
    """Frame potential ``FP(X) = sum_{i,j} <x_i, x_j>^2 = |X X^T|_F^2`` of the rows of X (n x d).

    Computed as ``|X^T X|_F^2`` when d < n so the cost is O(n d min(n, d)) and memory O(min(n,d)^2).
    For unit vectors FP >= n^2/d with equality iff the rows form a tight frame
    (Benedetto & Fickus 2003); ``normalize=True`` first scales every row to unit length.
    """
    X = _rows(X)
    if normalize:
        norms = X.norm(dim=1, keepdim=True)
        if bool((norms == 0).any()):
            raise ValueError("X has a zero row: it cannot be normalized to a unit vector")
        X = X / norms
    n, d = X.shape
    G = X.T @ X if d < n else X @ X.T
    return float((G * G).sum())


def frame_potential_bound(n: int, d: int) -> float:
    """Lower bound of the frame potential of n unit vectors in R^d: ``max(n, n^2/d)``.

    ``n^2/d`` is the Benedetto–Fickus bound (attained by tight frames, n >= d); for n < d the bound
    ``n`` is attained by orthonormal vectors."""
    n = check_int("n", n, 1)
    d = check_int("d", d, 1)
    return max(float(n), n * n / d)


def frame_potential_excess(X) -> float:
    """Relative excess of the frame potential over its bound, ``FP(X)/max(n, n^2/d) - 1`` for unit
    rows, computed without cancellation (it is ~1e-16 relative at a tight frame, where the
    subtraction ``FP/bound - 1`` would keep no digit of a 1e-12 excess).

    For n >= d, with S = X^T X and t = tr S = sum_i |x_i|^2 (= n for unit rows):
    ``FP - t^2/d = |S - (t/d) I|_F^2`` exactly, so the excess is ``|S - (t/d) I|_F^2 / (t^2/d)``, a
    sum of squares that is 0 iff the rows form a tight frame (Benedetto & Fickus 2003).  For n < d
    the bound n is attained by orthonormal rows and the excess is
    ``sum_{i != j} <x_i, x_j>^2 / n`` (equal to FP/n - 1 for unit rows)."""
    X = _rows(X)
    n, d = X.shape
    if n >= d:
        S = X.T @ X
        t = float(torch.diagonal(S).sum())
        if t == 0:
            return math.nan
        S.diagonal().sub_(t / d)
        return float(torch.linalg.vector_norm(S)) ** 2 / (t * t / d)
    G = X @ X.T
    G.diagonal().zero_()
    return float(torch.linalg.vector_norm(G)) ** 2 / n


def welch_bound(n: int, d: int) -> float:
    """Welch bound: ``max_{i != j} |<x_i, x_j>| >= sqrt((n-d)/(d(n-1)))`` for n unit vectors in R^d
    (0 when n <= d, where orthonormal vectors exist).  Equality holds for equiangular tight frames;
    the simplex ETF (n = d+1) attains it with 1/d = 1/(n-1)."""
    n = check_int("n", n, 2)
    d = check_int("d", d, 1)
    if n <= d:
        return 0.0
    return math.sqrt((n - d) / (d * (n - 1)))


def etf_gram_error(A, B=None, *, tile: int = DEFAULT_TILE) -> float:
    """``| G/|G|_F - (I - J/K)/sqrt(K-1) |_F`` with ``G = A B^T`` (``G = A A^T`` if B is None).

    With A = centred class means this is nc2_etf_means, with A = W it is nc2_etf_W, and with
    A = W, B = centred means it is nc3_duality_gram (Zhu et al. 2021's forms; REFERENCE.md section 3).
    Tiled (memory O(tile^2)), accurate near zero; nan if G = 0.  The tiled kernel is
    :func:`nclab.metrics.pairwise.pairwise_summaries`.
    """
    from nclab.metrics.pairwise import pairwise_summaries  # lazy: nclab.metrics imports this module

    return pairwise_summaries(A, B, tile=tile)["etf_gram_error"]


def etf_angle_error(A, *, tile: int = DEFAULT_TILE) -> float:
    """Mean over k != l of ``|cos(a_k, a_l) + 1/(K-1)|`` (Papyan et al. 2020's max-angle measure;
    nc2_maxangle in REFERENCE.md).  Tiled: memory O(tile^2).  Zero rows give nan."""
    from nclab.metrics.pairwise import pairwise_summaries  # lazy: nclab.metrics imports this module

    return pairwise_summaries(A, angle=True, tile=tile)["angle_error"]


def equinorm_error(A) -> float:
    """std/mean of the row norms, std with Bessel's correction (Papyan et al. 2020's equinorm)."""
    A = _rows(A, "A")
    if A.shape[0] < 2:
        raise ValueError("need at least K = 2 rows")
    norms = A.norm(dim=1)
    mean = norms.mean()
    if float(mean) == 0.0:
        return float("nan")
    return float(norms.std(unbiased=True) / mean)


def spherical_moment_sums(X, degrees, *, tile: int = DEFAULT_TILE) -> list[float]:
    """Moment sums ``S_l = (1/n^2) sum_{i,j} P_l^{(d)}(<x_i, x_j>)`` of n unit vectors (rows of X,
    n x d, d >= 2) for each degree l in ``degrees``: how far the points are from a spherical design.

    ``P_l^{(d)}(t) = C_l^{(d-2)/2}(t) / C_l^{(d-2)/2}(1)`` is the Gegenbauer polynomial normalised
    to 1 at t = 1 (d = 2: the Chebyshev polynomial T_l; d = 3: the Legendre polynomial P_l).  By the
    addition theorem, ``sum_m Y_lm(x) Y_lm(y) = N(d,l)/|S^{d-1}| P_l^{(d)}(<x,y>)`` for an orthonormal
    basis Y_lm of the N(d,l) spherical harmonics of degree l, so

        S_l = |S^{d-1}| / (N(d,l) n^2) * sum_m ( sum_i Y_lm(x_i) )^2  >= 0,

    which vanishes exactly when the points integrate every harmonic of degree l: X is a spherical
    t-design iff S_l = 0 for l = 1..t (Delsarte, Goethals & Seidel 1977).  For n independent uniform
    points ``E S_l = 1/n`` for every l >= 1 (the diagonal i = j gives n/n^2, the other terms have mean
    0), so ``n S_l`` compares a configuration with random points: about 1 for random points, 0 for a
    design.  Lu & Steinerberger 2022 prove that the minimisers of the cross-entropy energy of n points
    become uniformly distributed on the sphere as n grows (d fixed): every S_l then tends to 0.
    The frame potential is the degree-2 sum: ``FP/(n^2/d) - 1 = (d-1) S_2`` for unit rows.

    Computed in float64 with the normalised three-term recurrence (P_0 = 1, P_1 = t,
    ``P_{l+1} = (2(l+lam) t P_l - l P_{l-1}) / (l + 2 lam)``, lam = (d-2)/2) on tiles of the Gram
    matrix: memory O(tile n), time O(n^2 (d + max degree)).  Rounding leaves |S_l| ~ 1e-16 at a design
    (tiny negative values can occur).

    Parameters
    ----------
    X : n x d matrix of unit vectors (rows), d >= 2; rows are normalised (a zero row is an error).
    degrees : an int l >= 1 or a sequence of them.
    tile : rows of the Gram matrix computed at a time.

    Returns
    -------
    list of float, one S_l per entry of ``degrees``.

    Example
    -------
    >>> import math, torch
    >>> angles = torch.arange(6, dtype=torch.float64) * 2 * math.pi / 6   # a regular hexagon
    >>> X = torch.stack([angles.cos(), angles.sin()], dim=1)
    >>> [round(abs(s), 12) for s in spherical_moment_sums(X, [1, 2, 3, 4, 5, 6])]
    [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    """
    X = _rows(X)
    n, d = X.shape
    if d < 2:
        raise ValueError(f"X must have d >= 2 columns (points on the sphere S^(d-1)), got d={d}")
    norms = X.norm(dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError("X has a zero row: its rows must be points on the unit sphere")
    X = X / norms
    degs = [degrees] if isinstance(degrees, int) and not isinstance(degrees, bool) else list(degrees)
    if not degs:
        raise ValueError("degrees must name at least one degree l >= 1, got an empty sequence")
    for l in degs:
        if isinstance(l, bool) or not isinstance(l, int) or l < 1:
            raise ValueError(f"degrees must be integers >= 1, got {l!r}; e.g. degrees=range(1, 7)")
    tile = check_int("tile", tile, 1)
    lam = (d - 2) / 2
    top = max(degs)
    sums = [0.0] * (top + 1)
    for start in range(0, n, tile):
        t = (X[start:start + tile] @ X.T).clamp_(-1.0, 1.0)
        prev, cur = torch.ones_like(t), t
        sums[1] += float(cur.sum())
        for l in range(1, top):
            prev, cur = cur, (2 * (l + lam) * t * cur - l * prev) / (l + 2 * lam)
            sums[l + 1] += float(cur.sum())
    return [sums[l] / (n * n) for l in degs]
