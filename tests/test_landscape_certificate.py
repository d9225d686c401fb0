"""Zhu et al.'s certificate, the critical-point identities and the explicit null direction
(nclab.ufm.landscape.certificate), against oracles computed another way: the closed forms of
REFERENCE.md (sigma_1(G) = sqrt(lw lh) at the optimum, 1/(K sqrt n) at the origin), finite
differences of the objective for the null direction's curvature, and the identities at the
closed-form optimum and at embedded lower-dimensional minimisers."""

from __future__ import annotations

import json
import math

import pytest
import torch

from nclab.ufm.landscape import certificate, criticality_identities, lowdim_point, negative_direction, origin
from nclab.ufm.problems import CEProblem, MSEProblem, NormalizedProblem, SphereProblem, make_problem

pytestmark = pytest.mark.usefixtures("one_thread")

PENALISED = [
    CEProblem(K=4, n=3, d=4, lw=5e-3, lh=1e-2),
    CEProblem(K=4, n=3, d=8, lw=5e-3, lh=5e-3, bias=False),
    CEProblem(K=5, n=2, d=5, lw=2e-3, lh=4e-3, lb=0.1),
    MSEProblem(K=4, n=3, d=4, lw=5e-3, lh=1e-2),
    MSEProblem(K=4, n=3, d=8, lw=5e-3, lh=5e-3, bias=False),
]


@pytest.mark.parametrize("problem", PENALISED, ids=repr)
def test_certificate_is_tight_at_the_closed_form_optimum(problem):
    x = problem.optimal_point(seed=1)
    assert x is not None
    c = certificate(problem, x)
    assert c.applicable and c.holds
    assert c.threshold == pytest.approx(math.sqrt(problem.lw * problem.lh), rel=1e-15)
    assert c.sigma_1 == pytest.approx(c.threshold, rel=1e-8)
    assert len(c.u) == problem.K and len(c.v) == problem.N
    json.dumps(c.as_dict())
    # the top singular pair: G^T v = sigma_1 u (REFERENCE.md's orientation G^T = sigma_1 u v^T + ...)
    G = problem._state(x)["G"]
    u, v = torch.tensor(c.u, dtype=torch.float64), torch.tensor(c.v, dtype=torch.float64)
    assert float((G.T @ v - c.sigma_1 * u).norm()) < 1e-12
    ident = criticality_identities(problem, x)
    assert ident["balance_error"] < 1e-12
    assert ident["rank_W"] == (problem.K - 1 if problem.has_bias or problem.loss == "ce" else problem.K)
    assert ident["null_dim"] == problem.d - ident["rank_W"]
    if problem.loss == "ce":
        assert ident["ones_error"] < 1e-12
    assert negative_direction(problem, x, c) is None


@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("beta_K", [0.5, 0.9, 1.1, 2.0])
def test_certificate_at_the_origin_fails_exactly_when_beta_below_one_over_K(loss, bias, beta_K):
    K, n = 4, 3
    lam = beta_K / K / math.sqrt(n)  # lw = lh = lam: beta = sqrt(n) lam
    p = make_problem(loss, K=K, n=n, d=K, lw=lam, lh=lam, bias=bias)
    c = certificate(p, origin(p))
    assert c.sigma_1 == pytest.approx(1 / (K * math.sqrt(n)), rel=1e-12)  # |G|_2 = |J/K - Y|_2 / N
    assert c.ratio == pytest.approx(1 / beta_K, rel=1e-12)
    assert c.holds == (beta_K > 1)


def test_certificate_does_not_apply_where_it_decides_nothing():
    for p in (NormalizedProblem(4, 2, 4, 5.0), SphereProblem(5, 3, 2.0)):
        c = certificate(p, p.random_start(0))
        assert not c.applicable and "relaxation" in c.reason and c.holds is None
        assert negative_direction(p, p.random_start(0)) is None
    p = CEProblem(K=5, n=2, d=3, lw=5e-3, lh=5e-3)  # d < K-1
    c = certificate(p, p.random_start(0))
    assert not c.applicable and "d = 3 < 4" in c.reason
    p = MSEProblem(K=4, n=2, d=3, lw=5e-3, lh=5e-3, bias=False)  # the MSE minimiser without bias has rank K
    assert not certificate(p, p.random_start(0)).applicable
    p = MSEProblem(K=4, n=2, d=3, lw=0.3, lh=0.3, bias=False)  # K beta >= 1: the minimiser is 0, any d
    assert certificate(p, p.random_start(0)).applicable


@pytest.mark.parametrize("problem", PENALISED[:4], ids=repr)
@pytest.mark.parametrize("d_low", [1, 2])
def test_null_direction_curvature_at_lowdim_saddles(problem, d_low):
    x = lowdim_point(problem, d_low)
    ident = criticality_identities(problem, x)
    assert ident["balance_error"] < 1e-9 and ident["null_dim"] >= problem.d - d_low
    if problem.loss == "ce":
        assert ident["ones_error"] < 1e-9
    c = certificate(problem, x)
    assert c.applicable and not c.holds and c.ratio > 1.01
    nd = negative_direction(problem, x, c)
    lw, lh = problem.lw, problem.lh
    thr = math.sqrt(lw * lh)
    assert nd.s_w == pytest.approx((lh / lw) ** 0.25) and nd.s_w * nd.s_h == pytest.approx(1.0)
    assert nd.predicted_curvature == pytest.approx(2 * thr * (thr - c.sigma_1) / (lw + lh), rel=1e-14)
    assert nd.predicted_curvature < 0
    assert nd.measured_curvature == pytest.approx(nd.predicted_curvature, rel=1e-8)
    # oracle without the Hessian code: f(x + t dx) - f(x) = t^2 <dx, Hess dx>/2 + O(t^4), Z moving
    # only at second order; a symmetric difference of the objective
    M = problem.manifold
    assert M.norm(x, nd.direction) == pytest.approx(1.0, rel=1e-14)
    assert float((problem.classifier(x) @ nd.q).norm()) < 1e-12
    t = 1e-3
    f0 = problem.cost(x)
    fp = problem.cost(M.retr(x, nd.direction, t))
    fm = problem.cost(M.retr(x, nd.direction, -t))
    assert (fp + fm - 2 * f0) / t**2 == pytest.approx(nd.predicted_curvature, rel=1e-5)
    json.dumps(nd.as_dict())


def test_null_direction_at_the_origin_is_the_zero_point_eigenvalue_when_lw_equals_lh():
    p = CEProblem(K=4, n=5, d=4, lw=5e-3, lh=5e-3)
    nd = negative_direction(p, origin(p))
    ref = p.zero_point_min_eig()  # REFERENCE.md: (lw+lh)/2 - sqrt(((lw-lh)/2)^2 + sigma^2)
    assert nd.predicted_curvature == pytest.approx(ref, rel=1e-12)
    assert nd.measured_curvature == pytest.approx(ref, rel=1e-12)


def test_a_far_from_critical_point_does_not_widen_the_tolerance():
    p = CEProblem(K=4, n=3, d=4, lw=5e-3, lh=1e-2)
    c = certificate(p, p.random_start(0))
    assert c.applicable and c.tol <= 1e-6 + 1e-12
    assert max(c.u, key=abs) > 0  # the documented sign
