"""The CE UFM (nclab.ufm.problems.ce): REFERENCE.md's closed form typed in here, the theorem's
structure (h = c w, ETF Gram, equal norms, b = b* 1), L-BFGS as a sanity solve, and the structure
checks against formulas written again here."""

from __future__ import annotations

import math

import pytest
import torch

from nclab.geometry import simplex_gram
from nclab.ufm.problems import CEProblem
from nclab.ufm.run import closed_form_checks
from ufm_oracles import lbfgs_min, oracle_objective, rgrad_norm

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see conftest


def ref_ce_optimum(K, n, lw, lh):
    """REFERENCE.md: f* = log(1 + (K-1) e^{-m*}) + (K-1) beta m*."""
    beta = math.sqrt(n * lw * lh)
    m = math.log(1 / beta - (K - 1)) if beta < 1 / K else 0.0
    return math.log(1 + (K - 1) * math.exp(-m)) + (K - 1) * beta * m


CE_CASES = [
    dict(K=3, n=4, d=2, lw=1e-2, lh=5e-3),  # d = K-1
    dict(K=4, n=5, d=4, lw=5e-3, lh=5e-3, bias=False),  # d = K
    dict(K=5, n=2, d=7, lw=1e-3, lh=4e-2, lb=0.3),  # d > K
    dict(K=4, n=5, d=4, lw=0.1, lh=0.2),  # beta = 0.32 >= 1/K: W = H = 0
    dict(K=3, n=3, d=1, lw=0.5, lh=0.5, bias=False),  # beta >= 1/K, any d
]


@pytest.mark.parametrize("opts", CE_CASES)
def test_ce_closed_form_attains_reference_optimum(opts):
    p = CEProblem(**opts)
    K, n, lw, lh = p.K, p.n, p.lw, p.lh
    fstar = ref_ce_optimum(K, n, lw, lh)
    assert abs(p.optimum - fstar) < 1e-14
    for seed in (None, 3):
        x = p.optimal_point(seed=seed)
        assert abs(p.cost(x) - fstar) < 1e-12
        assert abs(float(oracle_objective(p)(*x)) - fstar) < 1e-12
        assert rgrad_norm(p, x) < 1e-12
        W, H = x[0], x[1]
        beta = math.sqrt(n * lw * lh)
        if beta >= 1 / K:
            assert float(W.abs().max()) == 0 and float(H.abs().max()) == 0
            continue
        m = math.log(1 / beta - (K - 1))
        rho = m * (K - 1) / K * math.sqrt(n * lh / lw)
        assert p.collapse == (m, rho)  # computed once, with REFERENCE.md's formulas
        torch.testing.assert_close(W @ W.T, rho * simplex_gram(K), rtol=0, atol=1e-12)  # ETF, |w_k|^2
        torch.testing.assert_close(H, math.sqrt(lw / (n * lh)) * W[p.labels], rtol=0, atol=1e-14)
        if p.has_bias:
            assert float(x[2].abs().max()) == 0


def test_ce_no_closed_form_cases():
    assert CEProblem(K=5, n=2, d=2, lw=1e-3, lh=1e-3).optimum is None  # d < K-1
    assert CEProblem(K=5, n=2, d=2, lw=1e-3, lh=1e-3).optimal_point() is None
    imb = CEProblem(K=3, n=None, d=3, lw=1e-3, lh=1e-3, class_sizes=[1, 2, 3])
    assert imb.optimum is None and imb.optimal_point(0) is None and imb.beta is None
    assert imb.structure(imb.random_start(0)) == {} and imb.collapse is None


def test_ce_closed_form_is_the_lbfgs_minimum():
    """Sanity solve: L-BFGS from random starts on a tiny CE UFM reaches the closed form."""
    p = CEProblem(K=3, n=2, d=3, lw=5e-3, lh=1e-2, lb=1e-2)
    assert min(lbfgs_min(p, s) for s in range(2)) == pytest.approx(p.optimum, abs=1e-9)


# --------------------------------------------------------------------------------------------
# structure checks
# --------------------------------------------------------------------------------------------


def _etf_error(W):
    """| G/|G|_F - (I - J/K)/sqrt(K-1) |_F, G = W W^T (REFERENCE.md section 3, nc2_etf_W)."""
    K = W.shape[0]
    G = W @ W.T
    C = (torch.eye(K, dtype=W.dtype) - 1.0 / K) / math.sqrt(K - 1)
    return float((G / G.norm() - C).norm())


@pytest.mark.parametrize("bias", [True, False])
def test_ce_structure_at_a_perturbed_minimiser_matches_the_formulas(bias):
    p = CEProblem(K=4, n=3, d=5, lw=5e-3, lh=1e-2, bias=bias)
    x = p.optimal_point(seed=2)
    gen = torch.Generator().manual_seed(0)
    y = tuple(t + 1e-3 * torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in x)
    s = p.structure(y)
    assert s == closed_form_checks(p, y)  # run's public function delegates
    W, H = y[0], y[1]
    beta = math.sqrt(p.n * p.lw * p.lh)
    rho = math.log(1 / beta - (p.K - 1)) * (p.K - 1) / p.K * math.sqrt(p.n * p.lh / p.lw)
    c = math.sqrt(p.lw / (p.n * p.lh))
    expect = {
        "feature_ratio_error": float((H - c * W[p.labels]).norm() / H.norm()),
        "norm_error": max(abs(float(w @ w) - rho) for w in W) / rho,
        "etf_W": _etf_error(W),
    }
    if bias:
        b = y[2]
        expect["bias_spread"] = float(((b - b.mean()) ** 2).mean().sqrt()) / (1 + float(b.abs().mean()))
    assert set(s) == set(expect)
    for k, v in expect.items():
        assert s[k] == pytest.approx(v, rel=1e-10), k
    assert all(v > 1e-6 for v in s.values())  # the perturbation is seen
    assert all(abs(v) < 1e-12 for v in p.structure(x).values())


def test_ce_structure_at_the_zero_minimiser_is_the_distance_to_zero():
    p = CEProblem(K=4, n=5, d=4, lw=0.1, lh=0.2)  # beta >= 1/K
    assert p.structure(p.optimal_point()) == {"zero_norm": 0.0}
    x = p.random_start(0)
    assert p.structure(x)["zero_norm"] == pytest.approx(math.sqrt(float(x[0].norm() ** 2 + x[1].norm() ** 2)), rel=1e-14)


# --------------------------------------------------------------------------------------------
# the flat shift of a free bias and the zero point
# --------------------------------------------------------------------------------------------


def test_ce_flat_direction_is_the_shift_of_a_free_unpenalised_bias():
    free = CEProblem(K=3, n=2, d=3, lw=1e-2, lh=1e-2)
    x = free.random_start(0)
    (s,) = free.flat_directions(x)
    assert float(s[0].abs().max()) == 0 and float(s[1].abs().max()) == 0 and torch.equal(s[2], torch.ones(3, dtype=torch.float64))
    assert abs(free.cost((x[0], x[1], x[2] + 0.7)) - free.cost(x)) < 1e-14  # softmax ignores the shift
    assert CEProblem(K=3, n=2, d=3, lw=1e-2, lh=1e-2, lb=0.1).flat_directions(x) == []
    nob = CEProblem(K=3, n=2, d=3, lw=1e-2, lh=1e-2, bias=False)
    assert nob.flat_directions(nob.random_start(0)) == []


def test_zero_point_bias_block_can_hide_reference_value():
    """With a free CE bias the Hessian has the flat direction b -> b + t 1 (eigenvalue 0), so for
    beta > 1/K its smallest eigenvalue is 0, not REFERENCE's positive value; deflating the shift
    symmetry recovers min(REFERENCE value, 1/K)."""
    from nclab.ufm.diagnostics import hessian_spectrum

    p = CEProblem(K=3, n=2, d=3, lw=0.3, lh=0.4)
    spec = hessian_spectrum(p, p.zero_critical_point())
    sigma = 1 / (p.K * math.sqrt(p.n))
    ref = (p.lw + p.lh) / 2 - math.sqrt(((p.lw - p.lh) / 2) ** 2 + sigma**2)
    assert ref > 0 and abs(spec[0]) < 1e-14
    deflated = hessian_spectrum(p, p.zero_critical_point(), deflate=True)
    assert deflated[0] == pytest.approx(min(ref, 1 / p.K), abs=1e-12)
    assert p.zero_point_min_eig(deflate=True) == pytest.approx(deflated[0], abs=1e-12)


def test_zero_point_imbalanced_ce_has_optimal_bias():
    from nclab.ufm.diagnostics import hessian_spectrum

    for lb in (0.0, 0.3):
        p = CEProblem(K=3, n=None, d=2, lw=1e-2, lh=1e-2, lb=lb, class_sizes=[1, 2, 4])
        x = p.zero_critical_point()
        assert rgrad_norm(p, x) < 1e-14
        if lb == 0:  # softmax(b) = class frequencies
            torch.testing.assert_close(torch.softmax(x[2], 0), torch.tensor([1, 2, 4], dtype=torch.float64) / 7)
        assert p.zero_point_min_eig() == pytest.approx(hessian_spectrum(p, x)[0], abs=1e-12)
