"""nclab.geometry against the definitions of REFERENCE.md section 1."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special

from nclab.geometry import (
    frame_potential,
    frame_potential_bound,
    frame_potential_excess,
    orthogonal_frame,
    random_orthogonal,
    simplex_etf,
    simplex_gram,
    spherical_moment_sums,
    welch_bound,
)


@pytest.mark.parametrize("K,d", [(2, 1), (2, 2), (3, 2), (4, 4), (10, 9), (10, 10), (10, 64), (50, 49)])
@pytest.mark.parametrize("seed", [None, 3])
def test_simplex_etf_gram(K, d, seed):
    M = simplex_etf(K, d, seed=seed)
    assert M.shape == (K, d)
    G = M @ M.T
    want = (K / (K - 1)) * (torch.eye(K, dtype=torch.float64) - torch.ones(K, K, dtype=torch.float64) / K)
    assert torch.allclose(G, want, atol=1e-13)
    # unit vectors, pairwise inner product -1/(K-1), summing to zero
    assert torch.allclose(M.norm(dim=1), torch.ones(K, dtype=torch.float64), atol=1e-13)
    assert float(M.sum(0).norm()) < 1e-12
    assert torch.allclose(simplex_gram(K), want)


def test_rotation_is_reproducible_and_changes_the_frame():
    a, b, c = simplex_etf(5, 8, seed=1), simplex_etf(5, 8, seed=1), simplex_etf(5, 8, seed=2)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    Q = random_orthogonal(8, seed=4)
    assert torch.allclose(Q @ Q.T, torch.eye(8, dtype=torch.float64), atol=1e-13)


def test_impossible_etf_requests_say_what_is_possible():
    with pytest.raises(ValueError, match=r"needs dimension d >= K-1 = 9, got d=5"):
        simplex_etf(10, 5)
    with pytest.raises(ValueError, match="K must be an integer >= 2"):
        simplex_etf(1, 3)
    with pytest.raises(ValueError, match="d >= K"):
        orthogonal_frame(5, 4)


def test_orthogonal_frame():
    P = orthogonal_frame(4, 7, seed=0)
    assert torch.allclose(P @ P.T, torch.eye(4, dtype=torch.float64), atol=1e-13)


def test_frame_potential_and_bounds():
    # a tight frame attains n^2/d; an ETF of n = d+1 vectors is tight
    M = simplex_etf(6, 5, seed=0)
    assert frame_potential(M) == pytest.approx(36 / 5, rel=1e-12)
    assert frame_potential_bound(6, 5) == pytest.approx(36 / 5)
    # independent oracle: the double sum
    X = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    X = X / X.norm(dim=1, keepdim=True)
    direct = sum(float(X[i] @ X[j]) ** 2 for i in range(7) for j in range(7))
    assert frame_potential(X) == pytest.approx(direct, rel=1e-12)
    assert frame_potential(X) >= 49 / 3
    assert frame_potential(2 * X, normalize=True) == pytest.approx(direct, rel=1e-12)
    # orthonormal vectors: n < d, bound n
    assert frame_potential(orthogonal_frame(3, 5)) == pytest.approx(3.0)
    assert frame_potential_bound(3, 5) == 3.0


def test_welch_bound_attained_by_simplex():
    n, d = 6, 5
    M = simplex_etf(n, d, seed=1)
    coh = float((M @ M.T - torch.eye(n, dtype=torch.float64)).abs().max())
    assert welch_bound(n, d) == pytest.approx(coh, rel=1e-12)
    assert welch_bound(n, d) == pytest.approx(math.sqrt((n - d) / (d * (n - 1))))
    assert welch_bound(3, 5) == 0.0


def test_ones_preserving_rotation():
    from nclab.geometry import ones_preserving_rotation

    Q = ones_preserving_rotation(7, seed=3)
    assert torch.allclose(Q @ Q.T, torch.eye(7, dtype=torch.float64), atol=1e-13)
    assert torch.allclose(Q @ torch.ones(7, dtype=torch.float64), torch.ones(7, dtype=torch.float64), atol=1e-13)
    assert not torch.allclose(Q, torch.eye(7, dtype=torch.float64))


# --- spherical moment sums (Legendre/Gegenbauer), against scipy.special and known designs ---------
def _uniform(n, d, seed):
    X = torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return X / X.norm(dim=1, keepdim=True)


def _scipy_sums(X, degrees):
    """The double sum with scipy's polynomials: T_l (d = 2), P_l (d = 3), C_l^((d-2)/2) / C_l(1)."""
    d = X.shape[1]
    t = np.clip((X @ X.T).numpy(), -1.0, 1.0)
    out = []
    for l in degrees:
        if d == 2:
            v = special.eval_chebyt(l, t)
        elif d == 3:
            v = special.eval_legendre(l, t)
        else:
            lam = (d - 2) / 2
            v = special.eval_gegenbauer(l, lam, t) / special.eval_gegenbauer(l, lam, 1.0)
        out.append(v.sum() / t.size)
    return out


@pytest.mark.parametrize("d", [2, 3, 4, 7])
def test_moment_sums_match_scipy_polynomials(d):
    X = _uniform(23, d, seed=d)
    got = spherical_moment_sums(X, range(1, 9), tile=5)  # several tiles, the last one partial
    assert got == pytest.approx(_scipy_sums(X, range(1, 9)), rel=1e-10, abs=1e-14)
    assert spherical_moment_sums(X, 3) == pytest.approx([got[2]])


@pytest.mark.parametrize("d", [2, 3, 5])
def test_moment_sums_of_random_points_average_one_over_n(d):
    # E S_l = 1/n exactly for independent uniform points; 400 draws of n = 10 points: the mean of
    # n S_l is 1 within a few standard errors (the spread of n S_l is O(1)).
    n, draws = 10, 400
    X = _uniform(n * draws, d, seed=11).reshape(draws, n, d)
    vals = np.array([[n * s for s in spherical_moment_sums(x, [1, 2, 3, 4])] for x in X])
    mean, sem = vals.mean(0), vals.std(0, ddof=1) / math.sqrt(draws)
    assert np.all(np.abs(mean - 1.0) < 5 * sem + 1e-12), (mean, sem)
    assert np.all(vals >= -1e-12)  # a sum of squares


def test_regular_polygon_sums_vanish_below_n():
    n = 7
    a = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n + 0.3
    X = torch.stack([a.cos(), a.sin()], 1)
    S = spherical_moment_sums(X, range(1, 2 * n + 1))
    for l, s in zip(range(1, 2 * n + 1), S):
        # |sum_i exp(i l theta_i)|^2 / n^2: 0 unless n divides l, then 1
        assert s == pytest.approx(1.0 if l % n == 0 else 0.0, abs=1e-13), l


def test_icosahedron_is_a_5_design_and_not_a_6_design():
    phi = (1 + math.sqrt(5)) / 2
    V = []
    for s1 in (1, -1):
        for s2 in (1, -1):
            V += [(0, s1, s2 * phi), (s1, s2 * phi, 0), (s2 * phi, 0, s1)]
    X = torch.tensor(V, dtype=torch.float64)
    X = X @ random_orthogonal(3, seed=5)  # designs are rotation invariant
    S = spherical_moment_sums(X, range(1, 7))
    assert max(abs(s) for s in S[:5]) < 1e-13
    assert S[5] == pytest.approx(_scipy_sums(X / X.norm(dim=1, keepdim=True), [6])[0], rel=1e-10)
    assert S[5] > 0.1


def test_simplex_etf_is_a_2_design_and_frame_potential_is_the_degree_2_sum():
    M = simplex_etf(5, 4, seed=2)  # n = d + 1: a 2-design
    S1, S2, S3 = spherical_moment_sums(M, [1, 2, 3])
    assert abs(S1) < 1e-14 and abs(S2) < 1e-14 and S3 > 1e-3
    for d in (2, 3, 6):
        X = _uniform(17, d, seed=3)
        assert frame_potential_excess(X) == pytest.approx((d - 1) * spherical_moment_sums(X, 2)[0], rel=1e-10)


def test_moment_sums_reject_bad_input():
    X = _uniform(5, 3, seed=0)
    with pytest.raises(ValueError, match="d >= 2"):
        spherical_moment_sums(X[:, :1], [1])
    with pytest.raises(ValueError, match="integers >= 1"):
        spherical_moment_sums(X, [0, 1])
    with pytest.raises(ValueError, match="at least one degree"):
        spherical_moment_sums(X, [])
    with pytest.raises(ValueError, match="zero row"):
        spherical_moment_sums(torch.zeros(3, 3, dtype=torch.float64), [1])
