"""nclab.metrics.pairwise: the tiled K x K kernel against direct formulas, tiled against untiled,
and through the distances to an ETF that nclab.geometry builds on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nclab.geometry import equinorm_error, etf_angle_error, etf_gram_error, simplex_etf
from nclab.metrics import NCStats

from metrics_helpers import planted


def test_pairwise_tiles_give_the_untiled_value():
    K, d = 37, 8
    X, y, _ = planted(K, 5, 40, 0.3, seed=14)
    X = X[:, :d]
    W = torch.randn(K, d, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    stats = NCStats(K).update(X, y)
    a = stats.compute(W, tile=5).as_dict()
    b = stats.compute(W, tile=4096).as_dict()
    for k in a:
        if a[k] is not None:
            assert a[k] == pytest.approx(b[k], rel=1e-12), k


def _np_gram_error(A, B):
    K = A.shape[0]
    G = A @ B.T
    T = (np.eye(K) - np.ones((K, K)) / K) / np.sqrt(K - 1)
    return np.linalg.norm(G / np.linalg.norm(G) - T)


@pytest.mark.parametrize("K,d", [(5, 3), (6, 20), (30, 4)])
def test_error_measures_against_direct_formulas(K, d):
    gen = torch.Generator().manual_seed(K)
    A = torch.randn(K, d, dtype=torch.float64, generator=gen)
    B = torch.randn(K, d, dtype=torch.float64, generator=gen)
    assert etf_gram_error(A, tile=4) == pytest.approx(_np_gram_error(A.numpy(), A.numpy()), rel=1e-12)
    assert etf_gram_error(A, B, tile=7) == pytest.approx(_np_gram_error(A.numpy(), B.numpy()), rel=1e-12)
    U = A / A.norm(dim=1, keepdim=True)
    C = (U @ U.T + 1 / (K - 1)).abs()
    assert etf_angle_error(A, tile=3) == pytest.approx(float((C.sum() - C.diagonal().sum()) / (K * (K - 1))), rel=1e-12)
    n = A.norm(dim=1).numpy()
    assert equinorm_error(A) == pytest.approx(np.std(n, ddof=1) / np.mean(n), rel=1e-12)


def test_error_measures_vanish_on_an_etf():
    M = 2.5 * simplex_etf(8, 8, seed=5)
    assert etf_gram_error(M) < 1e-14
    assert etf_angle_error(M) < 1e-14
    assert equinorm_error(M) < 1e-14


def test_kernel_summaries_against_direct_formulas_and_gram_kept_only_when_one_tile():
    from nclab.metrics.pairwise import pairwise_summaries

    K, d = 9, 11
    gen = torch.Generator().manual_seed(2)
    A = torch.randn(K, d, dtype=torch.float64, generator=gen)
    v = torch.rand(K, dtype=torch.float64, generator=gen)
    direct = sum(float((v[k] + v[l]) / (2 * ((A[k] - A[l]) ** 2).sum())) for k in range(K) for l in range(k + 1, K))
    whole = pairwise_summaries(A, angle=True, variances=v, keep_gram=True)
    assert whole["cdnv"] == pytest.approx(direct / (K * (K - 1) / 2), rel=1e-12)
    assert torch.allclose(whole["gram"], A @ A.T, rtol=0, atol=1e-13)
    tiled = pairwise_summaries(A, angle=True, variances=v, tile=4, keep_gram=True)
    assert tiled["gram"] is None
    for key in ("etf_gram_error", "angle_error", "cdnv"):
        assert tiled[key] == pytest.approx(whole[key], rel=1e-12), key
    with pytest.raises(ValueError, match="pass B=None"):
        pairwise_summaries(A, A, angle=True)
    with pytest.raises(ValueError, match="same shape"):
        pairwise_summaries(A, A[:, :3])
    with pytest.raises(ValueError, match="at least K = 2"):
        pairwise_summaries(A[:1])


def test_geometry_wrappers_use_the_kernel_and_no_longer_export_it():
    import nclab.geometry as geometry
    from nclab.metrics.pairwise import DEFAULT_TILE, pairwise_summaries

    assert not hasattr(geometry, "pairwise_summaries") and DEFAULT_TILE == geometry.DEFAULT_TILE
    A = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    assert etf_gram_error(A, tile=2) == pairwise_summaries(A, tile=2)["etf_gram_error"]
    assert etf_angle_error(A) == pairwise_summaries(A, angle=True)["angle_error"]
