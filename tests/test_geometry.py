"""nclab.geometry against the definitions of REFERENCE.md section 1."""

from __future__ import annotations

import math

import pytest
import torch

from nclab.geometry import (
    frame_potential,
    frame_potential_bound,
    orthogonal_frame,
    random_orthogonal,
    simplex_etf,
    simplex_gram,
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
