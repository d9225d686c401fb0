"""nclab.metrics.compute_metrics (the one-call API) against the independent float64 two-pass
reference (tests/reference_nc.py), closed forms and invariances."""

from __future__ import annotations

import pytest
import torch

from nclab.geometry import simplex_etf
from nclab.metrics import METRIC_NAMES, NCStats, compute_metrics

from metrics_helpers import assert_close_metrics, planted
from reference_nc import reference_metrics


# -- closed forms ------------------------------------------------------------------------------


def test_planted_etf_matches_two_pass_reference_and_closed_form():
    K, n, d, sigma, r = 6, 4000, 12, 0.05, 1.0
    X, y, M = planted(K, n, d, sigma, r)
    W = M + 0.01 * torch.randn(K, d, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    b = 0.1 * torch.randn(K, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    res = compute_metrics(X, y, W, b, batch_size=1000).as_dict()
    ref = reference_metrics(X.numpy(), y.numpy(), K, W.numpy(), b.numpy())
    assert_close_metrics(res, ref, rel=1e-10, abs_=1e-14)
    # nc1 -> sigma^2 (K-1)^2 / (K r^2) as n grows (the realised data deviates by O(1/sqrt(n d)))
    closed = sigma**2 * (K - 1) ** 2 / (K * r**2)
    assert abs(res["nc1"] - closed) / closed < 0.03


def test_nc1_closed_form_improves_with_n():
    K, d, sigma = 4, 8, 0.1
    closed = sigma**2 * (K - 1) ** 2 / K
    errs = [abs(compute_metrics(*planted(K, n, d, sigma, seed=3)[:2]).nc1 - closed) / closed for n in (50, 5000)]
    assert errs[1] < errs[0] and errs[1] < 0.05


@pytest.mark.parametrize("K,d", [(5, 5), (5, 4), (3, 7), (2, 3)])
def test_exact_etf_with_self_dual_classifier_gives_zero(K, d):
    M = 3.0 * simplex_etf(K, d, seed=2)
    y = torch.arange(K).repeat(7)
    X = M[y] + 5.0  # a common offset changes nothing once the global mean is removed
    res = compute_metrics(X, y, classifier=M, bias=-(M @ torch.full((d,), 5.0, dtype=torch.float64))).as_dict()
    for k in METRIC_NAMES:
        assert res[k] is not None and abs(res[k]) < 1e-12, (k, res[k])


# -- numerics ----------------------------------------------------------------------------------


def test_null_space_noise_leaves_nc1_unchanged():
    K, n, d = 4, 200, 16
    X, y, _ = planted(K, n, d, 0.1, seed=7)
    base = compute_metrics(X, y)
    means = torch.stack([X[y == k].mean(0) for k in range(K)])
    Mc = means - means.mean(0)
    Q, _ = torch.linalg.qr(Mc.T)  # basis of span of the centred means (d x K)
    Z = torch.randn(X.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    Z = Z - (Z @ Q) @ Q.T  # orthogonal to the span
    Z = Z - torch.stack([Z[y == k].mean(0) for k in range(K)])[y]  # class means unchanged
    moved = compute_metrics(X + 3.0 * Z, y)
    assert moved.nc1 == pytest.approx(base.nc1, rel=1e-10)
    assert moved.nc1_trace_ratio > 2 * base.nc1_trace_ratio  # the noise is real, only invisible to nc1


@pytest.mark.parametrize("K,d", [(12, 5), (6, 5), (2, 4), (2, 1), (30, 3)])
def test_more_classes_than_dimensions_and_k2(K, d):
    X, y, _ = planted(K, 40, max(d, K - 1), 0.2, seed=K)
    X = X[:, :d] + 0.5 * torch.randn(K, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))[y]
    W = torch.randn(K, d, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    res = compute_metrics(X, y, W).as_dict()
    ref = reference_metrics(X.numpy(), y.numpy(), K, W.numpy())
    assert_close_metrics(res, ref, rel=1e-9, abs_=1e-13)
    stats = NCStats(K)
    stats.update(X, y)
    assert stats.compute().sigma_b_rank == min(K - 1, d)


def test_class_with_one_sample():
    K, d = 4, 6
    X, y, _ = planted(K, 30, d, 0.3, seed=11, sizes=[30, 1, 30, 2])
    res = compute_metrics(X, y).as_dict()
    ref = reference_metrics(X.numpy(), y.numpy(), K)
    assert_close_metrics(res, ref, rel=1e-10)


def test_weighted_global_mean_option():
    K, d = 4, 7
    X, y, _ = planted(K, 10, d, 0.3, seed=13, sizes=[10, 50, 5, 20])
    W = torch.randn(K, d, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    res = compute_metrics(X, y, W, weighted_mean=True).as_dict()
    ref = reference_metrics(X.numpy(), y.numpy(), K, W.numpy(), weighted=True)
    assert_close_metrics(res, ref, rel=1e-10)
    assert res["nc1"] != pytest.approx(compute_metrics(X, y).nc1, rel=1e-3)


# -- GPU ---------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_statistics_equal_cpu():
    X, y, M = planted(5, 200, 16, 0.1, seed=21)
    X32 = (X + 1e3).float()
    cpu = compute_metrics(X32, y, M.float()).as_dict()
    gpu = compute_metrics(X32.cuda(), y.cuda(), M.float().cuda()).as_dict()
    for k in cpu:
        if cpu[k] is not None:
            assert gpu[k] == pytest.approx(cpu[k], rel=1e-5, abs=1e-9), k
