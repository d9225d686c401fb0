"""The MSE UFM (nclab.ufm.problems.mse): REFERENCE.md's two closed forms typed in here, the closed
forms derived in nclab beyond them checked by L-BFGS from random starts, and the structure checks
against formulas written again here."""

from __future__ import annotations

import math

import pytest
import torch

from nclab.geometry import simplex_gram
from nclab.ufm.problems import MSEProblem
from nclab.ufm.run import closed_form_checks
from ufm_oracles import lbfgs_min, oracle_objective, rgrad_norm

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see conftest


def ref_mse_optimum(K, n, lw, lh, bias):
    """REFERENCE.md: (K-1) beta (1 - K beta/2) with a free bias, K beta (1 - K beta/2) without,
    for K beta < 1; W = H = 0 otherwise, whose cost is |C Y|^2/(2N) = (K-1)/(2K) (bias) or 1/2."""
    beta = math.sqrt(n * lw * lh)
    if K * beta < 1:
        return (K - 1 if bias else K) * beta * (1 - K * beta / 2)
    return (K - 1) / (2 * K) if bias else 0.5


MSE_REF_CASES = [
    dict(K=3, n=4, d=2, lw=1e-2, lh=5e-3),  # free bias, d = K-1
    dict(K=4, n=5, d=6, lw=5e-3, lh=5e-3),  # free bias, d > K
    dict(K=4, n=3, d=4, lw=1e-2, lh=2e-3, bias=False),  # no bias, d = K
    dict(K=3, n=2, d=5, lw=3e-2, lh=3e-2, bias=False),
    dict(K=4, n=5, d=4, lw=0.1, lh=0.2),  # K beta >= 1: W = H = 0, b = 1/K
    dict(K=4, n=5, d=4, lw=0.1, lh=0.2, bias=False),  # K beta >= 1: W = H = 0
]


@pytest.mark.parametrize("opts", MSE_REF_CASES)
def test_mse_closed_form_attains_reference_optimum(opts):
    p = MSEProblem(**opts)
    K, n, lw, lh = p.K, p.n, p.lw, p.lh
    beta = math.sqrt(n * lw * lh)
    fstar = ref_mse_optimum(K, n, lw, lh, p.has_bias)
    assert abs(p.optimum - fstar) < 1e-14
    for seed in (None, 5):
        x = p.optimal_point(seed=seed)
        assert abs(p.cost(x) - fstar) < 1e-12
        assert abs(float(oracle_objective(p)(*x)) - fstar) < 1e-12
        assert rgrad_norm(p, x) < 1e-12
        W = x[0]
        if p.has_bias:
            torch.testing.assert_close(x[2], torch.full((K,), 1 / K, dtype=torch.float64))  # b* = 1/K 1
        if K * beta >= 1:
            assert float(W.abs().max()) == 0 and float(x[1].abs().max()) == 0
            continue
        G = W @ W.T
        target = simplex_gram(K) if p.has_bias else torch.eye(K, dtype=torch.float64)
        torch.testing.assert_close(G / G[0, 0], target, rtol=0, atol=1e-12)  # scaled ETF / orthogonal


MSE_DERIVED_CASES = [
    dict(K=4, n=3, d=4, lw=5e-3, lh=5e-3, lb=0.5),  # lb > 0, both eigenvalues kept (rank K)
    dict(K=4, n=3, d=3, lw=1e-2, lh=2e-2, lb=0.05),  # lb > 0, K beta >= mu: s = 0, rank K-1
    dict(K=4, n=3, d=2, lw=5e-3, lh=5e-3),  # free bias, d < K-1
    dict(K=4, n=3, d=2, lw=5e-3, lh=5e-3, bias=False),  # no bias, d < K
]


@pytest.mark.parametrize("opts", MSE_DERIVED_CASES)
def test_mse_derived_closed_forms_are_the_lbfgs_minimum(opts):
    """Closed forms beyond REFERENCE.md (module docstring): the constructed point attains them and
    is critical, and L-BFGS from random starts reaches the same value, never below it."""
    p = MSEProblem(**opts)
    x = p.optimal_point(seed=1)
    assert abs(p.cost(x) - p.optimum) < 1e-12 and rgrad_norm(p, x) < 1e-12
    runs = [lbfgs_min(p, s) for s in range(3)]
    assert min(runs) == pytest.approx(p.optimum, abs=1e-9)
    assert min(runs) > p.optimum - 1e-12


def test_mse_penalised_bias_reduces_to_reference_limits():
    """lb -> 0 gives the free-bias value, lb -> infinity the bias-free value (REFERENCE.md)."""
    o = dict(K=4, n=3, d=4, lw=5e-3, lh=5e-3)
    assert MSEProblem(**o, lb=1e-12).optimum == pytest.approx(MSEProblem(**o).optimum, abs=1e-9)
    assert MSEProblem(**o, lb=1e12).optimum == pytest.approx(MSEProblem(**o, bias=False).optimum, abs=1e-9)
    assert MSEProblem(K=4, n=3, d=3, lw=5e-3, lh=5e-3, lb=0.5).optimum is None  # needs rank K > d


# --------------------------------------------------------------------------------------------
# structure checks
# --------------------------------------------------------------------------------------------


def _perturbed(p, seed=2, eps=1e-3):
    x = p.optimal_point(seed=seed)
    gen = torch.Generator().manual_seed(0)
    return x, tuple(t + eps * torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in x)


def test_mse_structure_free_bias():
    p = MSEProblem(K=4, n=3, d=5, lw=5e-3, lh=1e-2)
    x, y = _perturbed(p)
    s = p.structure(y)
    assert s == closed_form_checks(p, y)
    W, H, b = y
    K = p.K
    c = math.sqrt(p.lw / (p.n * p.lh))
    G = W @ W.T
    C = (torch.eye(K, dtype=W.dtype) - 1.0 / K) / math.sqrt(K - 1)
    expect = {
        "feature_ratio_error": float((H - c * W[p.labels]).norm() / H.norm()),
        "bias_error": float((b - 1 / K).abs().max()),
        "etf_W": float((G / G.norm() - C).norm()),
    }
    assert set(s) == set(expect)
    for k, v in expect.items():
        assert s[k] == pytest.approx(v, rel=1e-10), k
    assert all(abs(v) < 1e-12 for v in p.structure(x).values())


def test_mse_structure_without_bias_measures_orthogonality():
    p = MSEProblem(K=3, n=2, d=4, lw=5e-3, lh=1e-2, bias=False)
    x, y = _perturbed(p)
    s = p.structure(y)
    W, H = y
    G = W @ W.T
    assert set(s) == {"feature_ratio_error", "orthogonality_W"}
    assert s["orthogonality_W"] == pytest.approx(float((G / G.norm() - torch.eye(3, dtype=G.dtype) / math.sqrt(3)).norm()), rel=1e-10)
    assert s["orthogonality_W"] > 1e-6 and p.structure(x)["orthogonality_W"] < 1e-12
    # d < K: no orthogonal frame of K rows exists, only the feature ratio is checked
    q = MSEProblem(K=4, n=3, d=2, lw=5e-3, lh=5e-3, bias=False)
    s = q.structure(q.optimal_point(seed=1))
    assert set(s) == {"feature_ratio_error"} and s["feature_ratio_error"] < 1e-12


def test_mse_structure_penalised_bias_and_zero_minimiser():
    p = MSEProblem(K=4, n=3, d=4, lw=5e-3, lh=5e-3, lb=0.5)
    x, y = _perturbed(p)
    assert set(p.structure(y)) == {"feature_ratio_error"} and p.structure(x)["feature_ratio_error"] < 1e-12
    z = MSEProblem(K=4, n=5, d=4, lw=0.1, lh=0.2)  # K beta >= 1
    assert z.structure(z.optimal_point()) == {"zero_norm": 0.0}
    q = MSEProblem(K=4, n=3, d=3, lw=5e-3, lh=5e-3, lb=0.5)  # needs rank K > d: no closed form
    assert q.optimum is None and q.structure(q.random_start(0)) == {}


def test_mse_closed_form_is_computed_once():
    p = MSEProblem(K=4, n=3, d=4, lw=5e-3, lh=5e-3)
    assert p.closed_form is p.closed_form and p.optimum == p.closed_form[0]
