"""The blocked kernels behind compute() and the nc4 pass, forced to many small blocks and checked
against float64 oracles written independently (numpy, explicit loops): symmetric products from
the blocks on and above the diagonal, the in-place mirror of the scatter's upper triangle, and
the nc4 counter's reused logit buffer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nclab.metrics.functional as F
import nclab.metrics.pairwise as pairwise
from nclab.metrics import NC4Counter, NCStats
from nclab.metrics.moments import _mirror_upper_

from metrics_helpers import planted


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_whole_gram_from_upper_blocks_and_its_summaries_match_direct_formulas(monkeypatch):
    monkeypatch.setattr(pairwise, "SYM_BLOCK", 4)  # 11 rows: blocks 4, 4, 3 and the mirror
    K, d = 11, 13
    A = torch.randn(K, d, dtype=torch.float64, generator=_gen(1))
    v = torch.rand(K, dtype=torch.float64, generator=_gen(2))
    out = pairwise.pairwise_summaries(A, angle=True, variances=v, tile=None, keep_gram=True)
    a, vn = A.numpy(), v.numpy()
    assert np.abs(out["gram"].numpy() - a @ a.T).max() <= 1e-13 * np.abs(a @ a.T).max()
    U = a / np.linalg.norm(a, axis=1, keepdims=True)
    C = np.abs(U @ U.T + 1 / (K - 1))
    assert out["angle_error"] == pytest.approx((C.sum() - np.trace(C)) / (K * (K - 1)), rel=1e-12)
    pairs = [(k, l) for k in range(K) for l in range(k + 1, K)]
    cd = np.mean([(vn[k] + vn[l]) / (2 * np.sum((a[k] - a[l]) ** 2)) for k, l in pairs])
    assert out["cdnv"] == pytest.approx(cd, rel=1e-12)
    T = (np.eye(K) - 1 / K) / np.sqrt(K - 1)
    G = a @ a.T
    assert out["etf_gram_error"] == pytest.approx(np.linalg.norm(G / np.linalg.norm(G) - T), rel=1e-12)


@pytest.mark.parametrize("aniso", [1.0, 1e8])
def test_nc1_from_blocks_of_t_transpose_t_matches_the_pseudo_inverse(monkeypatch, aniso):
    """nc1 = <Sigma_W, T^T T> summed over blocks of T^T T (d = 13 in blocks of 4), for an isotropic
    and a 1e8-anisotropic Sigma_W, against numpy's pinv of Sigma_B; and two nearly equal class
    means (1e-3 apart, Gram condition ~1e6) against the eigenvector path."""
    monkeypatch.setattr(pairwise, "SYM_BLOCK", 4)
    K, d = 6, 13
    M = torch.randn(K, d, dtype=torch.float64, generator=_gen(3))
    Mc = M - M.mean(0)
    Q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=_gen(4)))
    sigma_w = (Q * torch.logspace(0, -np.log10(aniso) if aniso > 1 else 0, d, dtype=torch.float64)) @ Q.T
    nc1, rank = F.nc1_and_rank(Mc, sigma_w)
    sb = Mc.numpy().T @ Mc.numpy() / K
    want = np.trace(sigma_w.numpy() @ np.linalg.pinv(sb, rcond=1e-10, hermitian=True)) / K
    assert rank == K - 1 and nc1 == pytest.approx(want, rel=1e-8)
    assert nc1 == pytest.approx(F._nc1_eigh(Mc, sigma_w, F.default_rtol(K, d), None)[0], rel=1e-9)
    near = M.clone()
    near[1] = near[0] + 1e-3 * torch.randn(d, dtype=torch.float64, generator=_gen(5))
    Mn = near - near.mean(0)
    fast = F._nc1_cholesky(Mn, sigma_w, F.default_rtol(K, d), None, None)
    assert fast is not None
    assert fast[0] == pytest.approx(F._nc1_eigh(Mn, sigma_w, F.default_rtol(K, d), None)[0], rel=1e-6)


def test_compute_with_small_blocks_and_tiles_equals_the_default(monkeypatch):
    X, y, _ = planted(9, 20, 12, 0.3, seed=6)
    W = torch.randn(9, 12, dtype=torch.float64, generator=_gen(7))
    stats = NCStats(9).update(X, y)
    base = stats.compute(W).as_dict()
    monkeypatch.setattr(pairwise, "SYM_BLOCK", 2)
    small = stats.compute(W, tile=4).as_dict()
    for k, v in base.items():
        if isinstance(v, float):
            assert small[k] == pytest.approx(v, rel=1e-12), k


def test_mirror_of_the_upper_triangle_in_place():
    n = 11
    U = torch.randn(n, n, dtype=torch.float64, generator=_gen(8))
    want = torch.triu(U) + torch.triu(U, 1).T
    got = _mirror_upper_(U.clone(), block=3)  # the lower triangle's contents are ignored
    assert torch.equal(got, want)


def test_nc4_buffer_and_centring_chunks_across_batches_of_growing_size(monkeypatch):
    monkeypatch.setattr(NC4Counter, "MIN_BLOCK_ROWS", 1)
    K, d = 4, 5
    X, y, M = planted(K, 30, d, 0.8, seed=9)
    W = M + 0.5 * torch.randn(K, d, dtype=torch.float64, generator=_gen(10))
    b = 0.3 * torch.randn(K, dtype=torch.float64, generator=_gen(11))
    means = NCStats(K).update(X, y).class_means
    pred = np.argmax(X.numpy() @ W.numpy().T + b.numpy(), axis=1)
    dist = np.stack([((X.numpy() - m) ** 2).sum(1) for m in means.numpy()], 1)
    want = int((pred != dist.argmin(1)).sum())
    monkeypatch.setattr(NC4Counter, "BLOCK_ELEMENTS", 16 * K)  # 16-row blocks
    monkeypatch.setattr(NC4Counter, "CENTRE_ELEMENTS", 32 * d)  # centred 32 rows (2 blocks) at a time
    c = NC4Counter(means, W, b)
    for lo, hi in ((0, 3), (3, 43), (43, 54), (54, 120)):  # buffer of 3 rows grows to 16
        c.update(X[lo:hi], y[lo:hi])
    assert c.total == 120 and c.mismatches == want
