"""The research-scale paths of nclab.metrics against independent oracles: nc1 by a Cholesky factor
of the smaller Gram vs the eigenvector formula and the float64 two-pass reference, ETF distances
from d x d Grams vs the direct K x K formula, the deferred-reference accumulation, scale
invariance, the tile chosen from memory, and the benchmark's streamed path at a tiny size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nclab.metrics import METRIC_NAMES, NCStats, compute_metrics
from nclab.metrics import functional as F
from nclab.metrics import resources
from nclab.metrics.pairwise import pairwise_summaries

from metrics_helpers import assert_close_metrics, planted
from reference_nc import reference_metrics

# shapes around the switches: K < d, K = d, d = K - 1 (K = d + 1), K = d + 2, K >> d
SHAPES = [(6, 11), (7, 7), (8, 7), (9, 7), (24, 5)]


def _data(K, d, seed):
    X, y, _ = planted(K, 12, max(d, K - 1), 0.3, seed=seed)
    X = X[:, :d] + 0.4 * torch.randn(K, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))[y]
    W = torch.randn(K, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    return X + 50.0, y, W  # a common offset


@pytest.mark.parametrize("K,d", SHAPES)
def test_all_metrics_match_the_reference_and_ignore_the_feature_scale(K, d):
    X, y, W = _data(K, d, seed=K + d)
    b = 0.1 * torch.randn(K, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ref = reference_metrics(X.numpy(), y.numpy(), K, W.numpy(), b.numpy())
    res = compute_metrics(X, y, W, b, batch_size=29).as_dict()
    assert_close_metrics(res, ref, rel=1e-9, abs_=1e-13)
    # with a bias-free head no ratio metric sees the scale of the features (bias_collapse is
    # |(I-J/K) W mu_G|, which scales with them; a bias would move the decisions of nc4)
    base = compute_metrics(X, y, W, batch_size=29).as_dict()
    for scale in (1e-4, 1e4):
        scaled = compute_metrics(X * scale, y, W, batch_size=29).as_dict()
        for k in METRIC_NAMES:
            if k != "bias_collapse":
                assert scaled[k] == pytest.approx(base[k], rel=1e-9), (scale, k)
        assert scaled["bias_collapse"] == pytest.approx(scale * base["bias_collapse"], rel=1e-9)


def _centred(K, d, seed, rank=None, weights=None):
    gen = torch.Generator().manual_seed(seed)
    if rank is None:
        M = torch.randn(K, d, dtype=torch.float64, generator=gen)
    else:
        M = torch.randn(K, rank, dtype=torch.float64, generator=gen) @ torch.randn(rank, d, dtype=torch.float64, generator=gen)
    if weights is None:
        Mc = M - M.mean(0)
    else:
        Mc = M - (weights[:, None] * M).sum(0) / weights.sum()
    Z = torch.randn(3 * d, d, dtype=torch.float64, generator=gen)
    return Mc, Z.T @ Z / (3 * d)


@pytest.mark.parametrize("K,d", SHAPES + [(2, 3), (3, 2)])
def test_nc1_cholesky_path_equals_the_eigenvector_formula(K, d):
    Mc, sigma_w = _centred(K, d, seed=K * d)
    rtol = F.default_rtol(K, d)
    fast = F._nc1_cholesky(Mc, sigma_w, rtol, None, None)
    assert fast is not None  # well-conditioned means take the fast path
    slow = F._nc1_eigh(Mc, sigma_w, rtol, None)
    # both are backward stable: they agree to the conditioning of the means' Gram times eps
    assert fast[0] == pytest.approx(slow[0], rel=1e-9) and fast[1] == slow[1] == min(K - 1, d)
    assert F.nc1_and_rank(Mc, sigma_w, gram=Mc @ Mc.T) == pytest.approx(fast, rel=1e-12)
    # Sigma_B^+ written out, in numpy
    sb = Mc.numpy().T @ Mc.numpy() / K
    assert fast[0] == pytest.approx(np.trace(sigma_w.numpy() @ np.linalg.pinv(sb, rcond=1e-10, hermitian=True)) / K, rel=1e-8)


def test_nc1_weighted_centring_and_rank_deficient_means_take_the_right_paths():
    K, d = 6, 10
    w = torch.arange(1.0, K + 1, dtype=torch.float64)
    Mc, sigma_w = _centred(K, d, seed=5, weights=w)
    rtol = F.default_rtol(K, d)
    assert F._nc1_cholesky(Mc, sigma_w, rtol, None, None) is None  # not centred along ones
    fast = F._nc1_cholesky(Mc, sigma_w, rtol, None, w)
    assert fast is not None and fast[0] == pytest.approx(F._nc1_eigh(Mc, sigma_w, rtol, None)[0], rel=1e-10)
    assert F.nc1_and_rank(Mc, sigma_w) == pytest.approx(F.nc1_and_rank(Mc, sigma_w, weights=w), rel=1e-10)
    for K, d in ((6, 10), (9, 4)):  # means of rank 2: the cut-off decides, by eigenvalues
        Mc, sigma_w = _centred(K, d, seed=7, rank=2)
        assert F._nc1_cholesky(Mc, sigma_w, F.default_rtol(K, d), None, None) is None
        value, rank = F.nc1_and_rank(Mc, sigma_w)
        assert rank == 2 and value == pytest.approx(F._nc1_eigh(Mc, sigma_w, F.default_rtol(K, d), None)[0], rel=1e-12)


def _direct_etf(A, B):
    K = A.shape[0]
    G = A.numpy() @ B.numpy().T
    T = (np.eye(K) - np.ones((K, K)) / K) / np.sqrt(K - 1)
    return np.linalg.norm(G / np.linalg.norm(G) - T)


def test_etf_distances_from_small_grams_equal_the_direct_formula():
    gen = torch.Generator().manual_seed(11)
    K, d = 30, 4
    A = torch.randn(K, d, dtype=torch.float64, generator=gen)
    B = torch.randn(K, d, dtype=torch.float64, generator=gen)
    Ac = A - A.mean(0)
    for X, Y in ((A, None), (Ac, None), (A, Ac), (A, B)):
        got = pairwise_summaries(X, Y)["etf_gram_error"]
        assert got == pytest.approx(_direct_etf(X, X if Y is None else Y), rel=1e-12)
        assert got == pytest.approx(pairwise_summaries(X, Y, tile=7, keep_gram=True)["etf_gram_error"], rel=1e-12)
    # W nearly orthogonal to the means: the d x d trace cancels, the tiles take over
    Q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=gen))
    Mc = torch.randn(K, 2, dtype=torch.float64, generator=gen) @ Q[:, :2].T
    W = torch.randn(K, 2, dtype=torch.float64, generator=gen) @ Q[:, 2:].T + 1e-5 * Mc
    assert pairwise_summaries(W, Mc)["etf_gram_error"] == pytest.approx(_direct_etf(W, Mc), rel=1e-9)


def test_reference_block_with_late_classes_outliers_and_a_large_offset_is_exact():
    K, d = 5, 6
    X, y, _ = planted(K, 30, d, 0.2, seed=19, sizes=[30, 1, 40, 25, 30])
    X = X + 1e4  # a common offset 1e4 x the spread
    order = torch.argsort((y == 3).to(torch.int64) * 1000 + torch.arange(len(y)) % 7, stable=True)
    X, y = X[order], y[order]  # class 3 appears only in the last batches
    X[(y == 0).nonzero()[0]] += 5.0  # class 0's first sample (its reference) is an outlier
    s = NCStats(K)
    for xb, yb in zip(X.split(17), y.split(17)):
        s.update(xb, yb)
    means = torch.stack([X[y == k].mean(0) for k in range(K)])
    D = X - means[y]
    assert torch.allclose(s.means, means, rtol=1e-14, atol=0)
    assert torch.allclose(s.scatter, D.T @ D, rtol=0, atol=1e-9 * float((D.T @ D).abs().max()))
    m2 = torch.stack([(D[y == k] ** 2).sum() for k in range(K)])
    assert torch.allclose(s.m2, m2, rtol=1e-9, atol=0)
    s.update(X[:3].float(), y[:3])  # another precision folds the open block first
    assert s.num_samples == len(y) + 3 and int(s.counts.sum()) == len(y) + 3


def test_tile_follows_available_memory_and_results_do_not_depend_on_it(monkeypatch):
    assert resources.available_memory("cpu") is None or resources.available_memory("cpu") > 0
    assert resources.auto_tile(10, "cpu") <= 10
    monkeypatch.setattr(resources, "available_memory", lambda device="cpu": 32 * 300**2 * 8)
    assert resources.auto_tile(10**6, "cpu") == 300  # sqrt(fraction * avail / (4 temporaries * 8 bytes))
    monkeypatch.setattr(resources, "available_memory", lambda device="cpu": None)
    assert resources.auto_tile(10**6, "cpu") == resources.MAX_TILE["cpu"]
    X, y, W = _data(40, 5, seed=2)
    stats = NCStats(40).update(X, y)
    a, b = stats.compute(W).as_dict(), stats.compute(W, tile=6).as_dict()
    for k in a:
        if a[k] is not None:
            assert a[k] == pytest.approx(b[k], rel=1e-12), k


@pytest.mark.parametrize("mode", ["pass", "all"])
def test_benchmark_runs_streamed_at_a_tiny_size(mode, tmp_path):
    import json

    from nclab.benchmarks.metrics import main

    out = tmp_path / "bench.json"
    main(["--mode", mode, "--N", "700", "--d", "8", "--K", "30", "--batch", "200", "--repeats", "1",
          "--stream", "--json", str(out)])
    res = json.loads(out.read_text())
    if mode == "all":
        assert res["ratio_to_floors"] > 0 and res["peak_memory_bytes"] >= 0 and 0 <= res["nc4"] <= 1
    else:
        assert 0 < res["compute_share"] < 1


@pytest.mark.gpu
def test_cuda_equals_cpu_at_k_above_d_and_the_benchmark_runs_on_cuda(tmp_path):
    from nclab.benchmarks.metrics import main

    X, y, W = _data(24, 5, seed=8)
    cpu = compute_metrics(X, y, W).as_dict()
    gpu = compute_metrics(X.cuda(), y.cuda(), W.cuda()).as_dict()
    for k in cpu:
        if cpu[k] is not None:
            assert gpu[k] == pytest.approx(cpu[k], rel=1e-9, abs=1e-12), k
    main(["--mode", "all", "--device", "cuda", "--N", "700", "--d", "8", "--K", "30", "--batch", "200",
          "--repeats", "1", "--stream"])
