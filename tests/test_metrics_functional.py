"""nclab.metrics.functional: every pure formula against the independent float64 oracle
(tests/reference_nc.py), and NCStats.compute as exactly these formulas of its statistics."""

from __future__ import annotations

import pytest
import torch

from nclab.geometry import simplex_etf
from nclab.metrics import METRIC_NAMES, NCStats
from nclab.metrics import functional as F

from metrics_helpers import planted
from reference_nc import reference_metrics


def _two_pass(X, y, K):
    """Class statistics straight from the definitions (two passes, float64)."""
    means = torch.stack([X[y == k].mean(0) for k in range(K)])
    counts = torch.stack([(y == k).sum() for k in range(K)]).double()
    D = X - means[y]
    m2 = torch.stack([(D[y == k] ** 2).sum() for k in range(K)])
    sigma_w = D.T @ D / len(y)
    return means, counts, m2, sigma_w


@pytest.mark.parametrize("K,d,weighted", [(6, 9, False), (12, 5, False), (4, 7, True)])
def test_each_formula_matches_the_reference(K, d, weighted):
    X, y, _ = planted(K, 30, max(d, K - 1), 0.3, seed=K, sizes=[30 + 3 * k for k in range(K)])
    X = X[:, :d]
    W = torch.randn(K, d, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    b = torch.randn(K, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ref = reference_metrics(X.numpy(), y.numpy(), K, W.numpy(), b.numpy(), weighted=weighted)
    means, counts, m2, sigma_w = _two_pass(X, y, K)
    Mc, mu_g = F.centred_means(means, counts, weighted=weighted)
    got = {
        "nc1": F.nc1(Mc, sigma_w),
        "nc1_trace_ratio": F.nc1_trace_ratio(Mc, m2, counts),
        "cdnv": F.cdnv(Mc, m2 / counts, tile=4),
        "nc2_equinorm_means": F.nc2_equinorm(Mc),
        "nc2_equinorm_W": F.nc2_equinorm(W),
        "nc2_maxangle_means": F.nc2_maxangle(Mc, tile=5),
        "nc2_maxangle_W": F.nc2_maxangle(W),
        "nc2_etf_means": F.nc2_etf(Mc),
        "nc2_etf_W": F.nc2_etf(W, tile=3),
        "nc3": F.nc3(W, Mc),
        "nc3_duality_gram": F.nc3_duality_gram(W, Mc),
        "bias_collapse": F.bias_collapse(W, b, mu_g),
    }
    for k, v in got.items():
        assert v == pytest.approx(ref[k], rel=1e-10), k
    value, rank = F.nc1_and_rank(Mc, sigma_w)
    assert value == got["nc1"] and rank == min(K - 1, d)


def test_compute_is_exactly_the_functional_formulas_of_its_statistics():
    K, d = 7, 9
    X, y, M = planted(K, 25, d, 0.4, seed=31)
    W = M + 0.2 * torch.randn(K, d, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    b = torch.randn(K, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    s = NCStats(K)
    for xb, yb in zip(X.split(40), y.split(40)):
        s.update(xb, yb)
    res = s.compute(W, b, tile=3)
    Mc, mu_g = F.centred_means(s.means, s.counts)
    sigma_w = s.scatter / float(s.counts.sum())
    want = {
        "nc1": F.nc1(Mc, sigma_w),
        "nc1_trace_ratio": F.nc1_trace_ratio(Mc, s.m2, s.counts),
        "cdnv": F.cdnv(Mc, s.m2 / s.counts, tile=3),
        "nc2_equinorm_means": F.nc2_equinorm(Mc),
        "nc2_equinorm_W": F.nc2_equinorm(W),
        "nc2_maxangle_means": F.nc2_maxangle(Mc, tile=3),
        "nc2_maxangle_W": F.nc2_maxangle(W, tile=3),
        "nc2_etf_means": F.nc2_etf(Mc, tile=3),
        "nc2_etf_W": F.nc2_etf(W, tile=3),
        "nc3": F.nc3(W, Mc),
        "nc3_duality_gram": F.nc3_duality_gram(W, Mc, tile=3),
        "bias_collapse": F.bias_collapse(W, b, mu_g),
    }
    got = res.as_dict()
    assert set(want) == set(METRIC_NAMES) - {"nc4"}
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-14, abs=1e-300), k
    assert res.rtol == F.default_rtol(K, d) and res.sigma_b_rank == K - 1


def test_nc1_cut_off_and_degenerate_inputs():
    M = 2.0 * simplex_etf(4, 6)
    Mc, _ = F.centred_means(M)
    sigma_w = 0.01 * torch.eye(6, dtype=torch.float64)
    assert F.nc1(Mc, sigma_w) == pytest.approx(0.01 * 9 / (4 * 4), rel=1e-12)  # sigma^2 (K-1)^2/(K r^2)
    # a cut-off above every eigenvalue but the largest keeps one direction
    assert F.nc1_and_rank(Mc, sigma_w, rtol=0.5)[1] == 3  # the simplex's eigenvalues are equal
    flat = torch.zeros(4, 6, dtype=torch.float64)
    value, rank = F.nc1_and_rank(flat, sigma_w)
    assert rank == 0 and value != value  # nan: all means coincide
    assert F.nc1_trace_ratio(flat, torch.ones(4), torch.ones(4)) != F.nc1_trace_ratio(flat, torch.ones(4), torch.ones(4))
    assert F.nc3(flat, Mc) != F.nc3(flat, Mc)


def test_nc4_from_counts_and_centring_needs_counts_when_weighted():
    assert F.nc4(3, 12) == 0.25
    assert F.nc4(torch.tensor(0), torch.tensor(5)) == 0.0
    with pytest.raises(ValueError, match="no samples yet"):
        F.nc4(0, 0)
    with pytest.raises(ValueError, match="needs the class counts"):
        F.centred_means(torch.zeros(3, 2, dtype=torch.float64), weighted=True)


def test_bias_collapse_ignores_a_constant_offset():
    """REFERENCE.md section 3: a constant logit offset (b = b* 1, or the MSE optimum's 1/K) is not
    a failure of bias collapse; only the centred part counts."""
    import torch

    from nclab.metrics import functional as Fn

    W = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    mu_g = torch.tensor([0.5, -0.25], dtype=torch.float64)
    b = -(W @ mu_g) + 3.0  # cancels W mu_G up to the constant 3
    assert Fn.bias_collapse(W, b, mu_g) < 1e-15
    v = W @ mu_g + torch.tensor([0.1, 0.0, 0.0], dtype=torch.float64)
    assert Fn.bias_collapse(W, torch.tensor([0.1, 0.0, 0.0], dtype=torch.float64), mu_g) == \
        pytest.approx(float((v - v.mean()).norm()), rel=1e-15)
