"""UFM problems against oracles computed another way.

* Derivatives: an independent float64 autodiff implementation of each objective, written here from
  REFERENCE.md section 2 with torch.nn.functional (cross_entropy, mse_loss), differentiated by
  torch.func (grad; jvp of grad for Hessian-vector products).
* Closed forms: REFERENCE.md's formulas typed in here, the theorem's structure (h = c w, ETF Gram),
  and, for the closed forms derived in nclab beyond REFERENCE.md, L-BFGS from random starts.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize
import torch
import torch.nn.functional as F
from torch.func import grad, jvp

from nclab.geometry import simplex_gram
from nclab.ufm.problems import (
    CEProblem,
    MSEProblem,
    NormalizedProblem,
    SphereProblem,
    make_problem,
    zero_point_min_eig,
)
from nclab.ufm.tools import hessian_spectrum


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see conftest

# --------------------------------------------------------------------------------------------
# the independent oracle
# --------------------------------------------------------------------------------------------


def oracle_objective(problem):
    """REFERENCE.md section 2, batch-first (H is N x d), with torch.nn.functional."""
    loss = problem.loss
    labels = problem.labels
    if loss == "sphere":
        tau = problem.tau

        def f(X):
            return F.cross_entropy(tau * X @ X.T, torch.arange(X.shape[0]))

        return f
    if loss == "normalized":
        tau = problem.tau

        def f(W, H):
            return F.cross_entropy(tau * H @ W.T, labels)

        return f
    K, lw, lh, lb = problem.K, problem.lw, problem.lh, problem.lb

    def f(W, H, b=None):
        Z = H @ W.T if b is None else H @ W.T + b
        if loss == "ce":
            data = F.cross_entropy(Z, labels)  # mean over the N samples
        else:
            Y = F.one_hot(labels, K).to(Z.dtype)
            data = F.mse_loss(Z, Y, reduction="sum") / (2 * Z.shape[0])
        reg = lw / 2 * (W**2).sum() + lh / 2 * (H**2).sum()
        if b is not None:
            reg = reg + lb / 2 * (b**2).sum()
        return data + reg

    return f


def oracle_grad_hvp(problem, x, u):
    f = oracle_objective(problem)
    argnums = tuple(range(len(x)))
    g = grad(f, argnums=argnums)

    def gfun(*xs):
        return g(*xs)

    _, hvp = jvp(gfun, tuple(x), tuple(u))
    return f(*x), g(*x), hvp


def rel_err(a, b) -> float:
    num = math.sqrt(sum(float(((ai - bi) ** 2).sum()) for ai, bi in zip(a, b)))
    den = math.sqrt(sum(float((bi**2).sum()) for bi in b))
    return num / den


CONFIGS = [
    ("ce", dict(K=2, n=3, d=1, lw=1e-2, lh=2e-2)),  # d = K-1
    ("ce", dict(K=3, n=2, d=3, lw=5e-3, lh=1e-2)),  # d = K
    ("ce", dict(K=4, n=3, d=3, lw=1e-2, lh=1e-3, bias=False)),  # d = K-1, no bias
    ("ce", dict(K=5, n=2, d=2, lw=3e-2, lh=1e-2, lb=0.1)),  # d < K-1, penalised bias
    ("ce", dict(K=4, n=1, d=6, lw=1e-3, lh=1e-3, lb=0.05, class_sizes=[1, 3, 2, 5])),  # imbalanced
    ("ce", dict(K=3, n=1, d=2, lw=1e-2, lh=1e-2, bias=False, class_sizes=[2, 1, 4])),
    ("mse", dict(K=3, n=2, d=3, lw=5e-3, lh=1e-2)),
    ("mse", dict(K=4, n=3, d=3, lw=1e-2, lh=1e-3, bias=False)),
    ("mse", dict(K=5, n=2, d=2, lw=3e-2, lh=1e-2, lb=0.2)),
    ("mse", dict(K=2, n=4, d=5, lw=1e-1, lh=1e-1)),
    ("normalized", dict(K=3, n=2, d=3, tau=1.0)),
    ("normalized", dict(K=4, n=2, d=2, tau=5.0)),
    ("normalized", dict(K=5, n=3, d=4, tau=0.3)),
    ("sphere", dict(n_points=5, d=3, tau=2.0)),
    ("sphere", dict(n_points=4, d=4, tau=10.0)),
    ("sphere", dict(n_points=3, d=2, tau=0.5)),
]
IDS = [f"{loss}-" + "-".join(f"{k}{v}" for k, v in o.items()) for loss, o in CONFIGS]


def _random_point(problem, seed, scale):
    """A random start, spread out by ``scale`` (Euclidean factors) so softmaxes are not uniform."""
    x = problem.random_start(seed)
    if problem.loss in ("ce", "mse"):
        return tuple(scale * t for t in x)
    return x


@pytest.mark.parametrize("loss,opts", CONFIGS, ids=IDS)
def test_cost_gradient_hvp_match_torch_func_oracle(loss, opts):
    p = make_problem(loss, **opts)
    M = p.manifold
    for seed, scale in ((0, 1.0), (1, 3.0)):
        x = _random_point(p, seed, scale)
        # arbitrary ambient direction for the Euclidean HVP (tangency is irrelevant there)
        g = torch.Generator().manual_seed(100 + seed)
        u = tuple(torch.randn(t.shape, generator=g, dtype=torch.float64) for t in x)
        f_ref, g_ref, h_ref = oracle_grad_hvp(p, x, u)
        assert abs(p.cost(x) - float(f_ref)) <= 1e-12 * max(1.0, abs(float(f_ref)))
        assert rel_err(p.egrad(x), g_ref) < 1e-10
        assert rel_err(p.ehess(x, u), h_ref) < 1e-10
        c, eg = p.cost_and_egrad(x)
        assert c == p.cost(x) and rel_err(eg, g_ref) < 1e-10
        # Riemannian gradient is tangent; Riemannian Hessian symmetric and tangent
        rg = p.rgrad(x)
        for a, b in zip(M.proj(x, rg), rg):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-14)
        ut, vt = M.random_tangent(x, g), M.random_tangent(x, g)
        Hu, Hv = p.rhess(x, ut), p.rhess(x, vt)
        scale_h = M.norm(x, Hu) + M.norm(x, Hv)
        assert abs(M.inner(x, ut, Hv) - M.inner(x, Hu, vt)) < 1e-13 * max(scale_h, 1.0)
        for a, b in zip(M.proj(x, Hu), Hu):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-13 * max(scale_h, 1.0))


# --------------------------------------------------------------------------------------------
# closed forms
# --------------------------------------------------------------------------------------------


def ref_ce_optimum(K, n, lw, lh):
    """REFERENCE.md: f* = log(1 + (K-1) e^{-m*}) + (K-1) beta m*."""
    beta = math.sqrt(n * lw * lh)
    m = math.log(1 / beta - (K - 1)) if beta < 1 / K else 0.0
    return math.log(1 + (K - 1) * math.exp(-m)) + (K - 1) * beta * m


def ref_mse_optimum(K, n, lw, lh, bias):
    """REFERENCE.md: (K-1) beta (1 - K beta/2) with a free bias, K beta (1 - K beta/2) without,
    for K beta < 1; W = H = 0 otherwise, whose cost is |C Y|^2/(2N) = (K-1)/(2K) (bias) or 1/2."""
    beta = math.sqrt(n * lw * lh)
    if K * beta < 1:
        return (K - 1 if bias else K) * beta * (1 - K * beta / 2)
    return (K - 1) / (2 * K) if bias else 0.5


def rgrad_norm(p, x):
    return p.manifold.norm(x, p.rgrad(x))


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
        torch.testing.assert_close(W @ W.T, rho * simplex_gram(K), rtol=0, atol=1e-12)  # ETF, |w_k|^2
        torch.testing.assert_close(H, math.sqrt(lw / (n * lh)) * W[p.labels], rtol=0, atol=1e-14)
        if p.has_bias:
            assert float(x[2].abs().max()) == 0


def test_ce_no_closed_form_cases():
    assert CEProblem(K=5, n=2, d=2, lw=1e-3, lh=1e-3).optimum is None  # d < K-1
    assert CEProblem(K=5, n=2, d=2, lw=1e-3, lh=1e-3).optimal_point() is None
    imb = CEProblem(K=3, n=None, d=3, lw=1e-3, lh=1e-3, class_sizes=[1, 2, 3])
    assert imb.optimum is None and imb.optimal_point(0) is None and imb.beta is None


def test_ce_closed_form_is_the_lbfgs_minimum():
    """Sanity solve: L-BFGS from random starts on a tiny CE UFM reaches the closed form."""
    p = CEProblem(K=3, n=2, d=3, lw=5e-3, lh=1e-2, lb=1e-2)
    assert min(_lbfgs(p, s) for s in range(2)) == pytest.approx(p.optimum, abs=1e-9)


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


def _lbfgs(p, seed):
    M = p.manifold

    def fg(v):
        f, g = p.cost_and_egrad(M.unflatten(torch.from_numpy(v.copy())))
        return f, M.flatten(g).numpy()

    x0 = M.flatten(p.random_start(seed)).numpy()
    res = scipy.optimize.minimize(fg, x0, jac=True, method="L-BFGS-B",
                                  options=dict(maxiter=5000, gtol=1e-12, ftol=1e-15))
    return float(res.fun)


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
    runs = [_lbfgs(p, s) for s in range(3)]
    assert min(runs) == pytest.approx(p.optimum, abs=1e-9)
    assert min(runs) > p.optimum - 1e-12


def test_mse_penalised_bias_reduces_to_reference_limits():
    """lb -> 0 gives the free-bias value, lb -> infinity the bias-free value (REFERENCE.md)."""
    o = dict(K=4, n=3, d=4, lw=5e-3, lh=5e-3)
    assert MSEProblem(**o, lb=1e-12).optimum == pytest.approx(MSEProblem(**o).optimum, abs=1e-9)
    assert MSEProblem(**o, lb=1e12).optimum == pytest.approx(MSEProblem(**o, bias=False).optimum, abs=1e-9)
    assert MSEProblem(K=4, n=3, d=3, lw=5e-3, lh=5e-3, lb=0.5).optimum is None  # needs rank K > d


@pytest.mark.parametrize("K,n,d,tau", [(3, 2, 2, 1.0), (4, 3, 4, 5.0), (5, 2, 7, 0.5)])
def test_normalized_closed_form(K, n, d, tau):
    p = NormalizedProblem(K, n, d, tau)
    fstar = math.log(1 + (K - 1) * math.exp(-tau * K / (K - 1)))
    assert abs(p.optimum - fstar) < 1e-14
    x = p.optimal_point(seed=2)
    assert abs(p.cost(x) - fstar) < 1e-12 and rgrad_norm(p, x) < 1e-12
    torch.testing.assert_close(x[0] @ x[0].T, simplex_gram(K), rtol=0, atol=1e-12)
    torch.testing.assert_close(x[1], x[0][p.labels])
    assert NormalizedProblem(5, 2, 3, 1.0).optimum is None


@pytest.mark.parametrize("n_points,d,tau", [(4, 3, 1.0), (5, 6, 3.0), (3, 2, 0.2)])
def test_sphere_closed_form_and_lower_bound(n_points, d, tau):
    p = SphereProblem(n_points, d, tau)
    fstar = math.log(1 + (n_points - 1) * math.exp(-tau * n_points / (n_points - 1)))
    assert abs(p.optimum - fstar) < 1e-14
    x = p.optimal_point(seed=4)
    assert abs(p.cost(x) - fstar) < 1e-12 and rgrad_norm(p, x) < 1e-12
    for s in range(5):  # E* is a lower bound (Jensen) at every configuration
        assert p.cost(p.random_start(s)) > fstar
    m = p.metrics(x)
    # the simplex ETF is a tight frame of its (n-1)-dimensional span: FP = n^2/(n-1), and it
    # meets the Welch bound of that dimension, 1/(n-1); in R^{n-1} these are the reported bounds
    assert m["frame_potential"] == pytest.approx(n_points**2 / (n_points - 1), abs=1e-12)
    assert m["max_coherence"] == pytest.approx(1 / (n_points - 1), abs=1e-12)
    if d == n_points - 1:
        assert m["frame_potential"] == pytest.approx(m["frame_potential_bound"], abs=1e-12)
        assert m["max_coherence"] == pytest.approx(m["welch_bound"], abs=1e-12)
    assert m["etf_gram_error"] < 1e-12
    assert SphereProblem(6, 3, 1.0).optimum is None and SphereProblem(6, 3, 1.0).optimal_point() is None


@pytest.mark.parametrize(
    "problem",
    [
        CEProblem(K=4, n=3, d=4, lw=5e-3, lh=5e-3),
        CEProblem(K=3, n=2, d=2, lw=5e-3, lh=5e-3, bias=False),
        MSEProblem(K=4, n=3, d=3, lw=5e-3, lh=5e-3),
        NormalizedProblem(4, 3, 5, 2.0),
    ],
    ids=repr,
)
def test_nc_metrics_vanish_at_closed_form(problem):
    m = problem.metrics(problem.optimal_point(seed=0))
    for name in ("nc1", "nc1_trace_ratio", "cdnv", "nc2_equinorm_means", "nc2_equinorm_W",
                 "nc2_maxangle_means", "nc2_maxangle_W", "nc2_etf_means", "nc2_etf_W", "nc3",
                 "nc3_duality_gram", "nc4"):
        assert m[name] is not None and abs(m[name]) < 1e-10, name
    if problem.loss == "mse":  # optimal bias is 1/K 1, so |W mu_G + b| = |b| = 1/sqrt(K)
        assert m["bias_collapse"] == pytest.approx(1 / math.sqrt(problem.K), abs=1e-12)
    else:
        assert abs(m["bias_collapse"]) < 1e-10


def test_metrics_at_collapsed_zero_point_are_undefined_not_errors():
    """beta >= 1/K: W = H = 0; the ETF-shaped metrics are 0/0 and reported as None."""
    p = CEProblem(K=4, n=5, d=4, lw=0.1, lh=0.2)
    m = p.metrics(p.optimal_point())
    assert m["nc2_etf_W"] is None and m["nc1"] is None


# --------------------------------------------------------------------------------------------
# the critical point W = H = 0
# --------------------------------------------------------------------------------------------


def ref_zero_min_eig(K, n, lw, lh):
    """REFERENCE.md: (lw+lh)/2 - sqrt(((lw-lh)/2)^2 + sigma^2), sigma = 1/(K sqrt(n))."""
    sigma = 1 / (K * math.sqrt(n))
    return (lw + lh) / 2 - math.sqrt(((lw - lh) / 2) ** 2 + sigma**2)


ZERO_CASES = [
    (CEProblem, dict(K=3, n=2, d=3, lw=5e-3, lh=2e-2)),
    (CEProblem, dict(K=4, n=3, d=2, lw=1e-2, lh=1e-2, bias=False)),
    (CEProblem, dict(K=3, n=2, d=3, lw=1e-2, lh=3e-2, lb=0.2)),
    (MSEProblem, dict(K=3, n=2, d=3, lw=5e-3, lh=2e-2)),
    (MSEProblem, dict(K=4, n=2, d=3, lw=5e-3, lh=2e-2, bias=False)),
    (MSEProblem, dict(K=3, n=3, d=2, lw=5e-3, lh=2e-2, lb=0.4)),
]


@pytest.mark.parametrize("cls,opts", ZERO_CASES, ids=lambda v: getattr(v, "__name__", str(v)))
@pytest.mark.parametrize("big", [False, True], ids=["beta<1/K", "beta>1/K"])
def test_zero_point_is_critical_and_min_eig_matches_reference(cls, opts, big):
    opts = dict(opts)
    if big:  # scale the penalties so that beta > 1/K
        opts["lw"], opts["lh"] = 30 * opts["lw"], 30 * opts["lh"]
    p = cls(**opts)
    beta = math.sqrt(p.n * p.lw * p.lh)
    assert (beta < 1 / p.K) == (not big)
    x = p.zero_critical_point()
    assert rgrad_norm(p, x) < 1e-15
    spec = hessian_spectrum(p, x)  # the whole Hessian, formed densely
    ref = ref_zero_min_eig(p.K, p.n, p.lw, p.lh)
    assert zero_point_min_eig(p.K, p.n, p.lw, p.lh) == pytest.approx(ref, abs=1e-15)
    assert p.zero_point_min_eig() == pytest.approx(spec[0], abs=1e-12)
    # REFERENCE's value is the (W, H) block's smallest eigenvalue: an eigenvalue of the Hessian
    assert np.min(np.abs(spec - ref)) < 1e-12
    if beta < 1 / p.K:
        assert spec[0] == pytest.approx(ref, abs=1e-12) and spec[0] < 0  # strict saddle
    else:
        assert spec[0] >= -1e-14 and ref > 0
    if not p.has_bias:  # then the Hessian is the (W, H) block alone
        assert spec[0] == pytest.approx(ref, abs=1e-12)


def test_zero_point_bias_block_can_hide_reference_value():
    """With a free CE bias the Hessian has the flat direction b -> b + t 1 (eigenvalue 0), so for
    beta > 1/K its smallest eigenvalue is 0, not REFERENCE's positive value; deflating the shift
    symmetry recovers min(REFERENCE value, 1/K)."""
    p = CEProblem(K=3, n=2, d=3, lw=0.3, lh=0.4)
    spec = hessian_spectrum(p, p.zero_critical_point())
    ref = ref_zero_min_eig(p.K, p.n, p.lw, p.lh)
    assert ref > 0 and abs(spec[0]) < 1e-14
    deflated = hessian_spectrum(p, p.zero_critical_point(), deflate=True)
    assert deflated[0] == pytest.approx(min(ref, 1 / p.K), abs=1e-12)
    assert p.zero_point_min_eig(deflate=True) == pytest.approx(deflated[0], abs=1e-12)


def test_zero_point_imbalanced_ce_has_optimal_bias():
    for lb in (0.0, 0.3):
        p = CEProblem(K=3, n=None, d=2, lw=1e-2, lh=1e-2, lb=lb, class_sizes=[1, 2, 4])
        x = p.zero_critical_point()
        assert rgrad_norm(p, x) < 1e-14
        if lb == 0:  # softmax(b) = class frequencies
            torch.testing.assert_close(torch.softmax(x[2], 0), torch.tensor([1, 2, 4], dtype=torch.float64) / 7)
        assert p.zero_point_min_eig() == pytest.approx(hessian_spectrum(p, x)[0], abs=1e-12)


# --------------------------------------------------------------------------------------------
# caching, counters, starts, factory, validation
# --------------------------------------------------------------------------------------------


def test_cache_reuses_point_state_and_sees_in_place_changes(monkeypatch):
    p = make_problem("ce", K=3, n=2, d=3)
    calls = []
    orig = p._compute
    monkeypatch.setattr(p, "_compute", lambda x: calls.append(1) or orig(x))
    x = p.random_start(0)
    u = p.manifold.random_tangent(x, torch.Generator().manual_seed(0))
    f0 = p.cost(x)
    for _ in range(5):
        p.ehess(x, u)
        p.rhess(x, u)
    p.egrad(x)
    assert len(calls) == 1
    assert p.counts == {"cost": 1, "grad": 1, "hess": 10}
    x[0].mul_(2.0)  # in place: the version changes, so the state is recomputed
    assert p.cost(x) != f0 and len(calls) == 2
    y = tuple(t.clone() for t in x)  # equal values, new tensors
    assert p.cost(y) == p.cost(x) and len(calls) == 3


def test_random_start_is_reproducible_and_on_manifold():
    for loss in ("ce", "mse", "normalized", "sphere"):
        p = make_problem(loss)
        a, b, c = p.random_start(7), p.random_start(7), p.random_start(8)
        assert all(torch.equal(s, t) for s, t in zip(a, b))
        assert not torch.equal(a[0], c[0])
        assert len(a) == len(p.manifold.factors)
        for t, shape in zip(a, p.manifold.shapes):
            assert tuple(t.shape) == shape and t.dtype == torch.float64
        if loss in ("normalized", "sphere"):
            for t in a:
                torch.testing.assert_close(t.norm(dim=1), torch.ones(t.shape[0], dtype=torch.float64))


def test_factory_defaults_describe_roundtrip_and_accessors():
    p = make_problem("ce")
    assert (p.K, p.n, p.d, p.N) == (4, 5, 4, 20) and p.has_bias
    assert torch.equal(p.labels, torch.arange(4).repeat_interleave(5))
    q = make_problem(**p.describe())
    assert q.describe() == p.describe()
    for loss in ("mse", "normalized", "sphere"):
        r = make_problem(loss)
        assert make_problem(**r.describe()).describe() == r.describe()
    x = p.random_start(0)
    assert p.classifier(x) is x[0] and p.features(x) is x[1] and p.bias(x) is x[2]
    s = make_problem("sphere", n=5, d=4)
    assert s.n_points == 5 and s.bias(s.random_start(0)) is None
    imb = make_problem("ce", class_sizes=[1, 2, 3, 4])
    assert imb.N == 10 and torch.equal(imb.labels, torch.tensor([0, 1, 1, 2, 2, 2, 3, 3, 3, 3]))
    assert imb.describe()["class_sizes"] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "loss,opts,name",
    [
        ("ce", dict(K=1), "K"),
        ("mse", dict(K=1), "K"),
        ("normalized", dict(K=1), "K"),
        ("ce", dict(n=0), "n"),
        ("normalized", dict(n=0), "n"),
        ("ce", dict(lw=-1e-3), "lw"),
        ("ce", dict(lh=-1e-3), "lh"),
        ("ce", dict(lb=-1e-3), "lb"),
        ("mse", dict(lw=-1.0), "lw"),
        ("ce", dict(lb=0.1, bias=False), "lb"),
        ("normalized", dict(tau=0.0), "tau"),
        ("sphere", dict(tau=-1.0), "tau"),
        ("ce", dict(d=0), "d"),
        ("mse", dict(d=0), "d"),
        ("normalized", dict(d=0), "d"),
        ("sphere", dict(d=0), "d"),
        ("sphere", dict(n_points=1), "n_points"),
        ("ce", dict(class_sizes=[2, 3]), "class_sizes"),
        ("ce", dict(class_sizes=[2, 0, 3, 1]), "class_sizes"),
        ("ce", dict(bias="yes"), "bias"),
        ("mse", dict(class_sizes=[1, 2, 3, 4]), "class_sizes"),
        ("ce", dict(tau=1.0), "tau"),
        ("hinge", dict(), "loss"),
    ],
)
def test_bad_options_raise_value_error_naming_the_option(loss, opts, name):
    with pytest.raises(ValueError, match=name):
        make_problem(loss, **opts)
