"""Classification of critical points (nclab.ufm.landscape.classify), against oracles computed
another way: REFERENCE.md's smallest eigenvalue at W = H = 0 (closed form, with the bias block of
``zero_point_min_eig``), the closed-form optima, dense spectra for the Lanczos eigenvalues, and a
deliberately wrong Riemannian Hessian that the Taylor check must catch."""

from __future__ import annotations

import dataclasses
import doctest
import json
import math

import numpy as np
import pytest
import torch

import importlib
from nclab.ufm.diagnostics import check_hessian, hessian_extreme_eigs, hessian_spectrum
from nclab.ufm.landscape import KINDS, Classification, classify, lowdim_point, origin
from nclab.ufm.optim import lbfgs
from nclab.ufm.problems import CEProblem, MSEProblem, NormalizedProblem, SphereProblem, make_problem

pytestmark = pytest.mark.usefixtures("one_thread")

FIELDS = ("kind", "reason", "objective", "optimum", "relative_gap", "grad_norm", "grad_threshold", "lambda_min",
          "eig_threshold", "decrease", "certificate", "direction_curvature", "identities", "hvps", "seconds",
          "deflated")


def test_classification_has_exactly_the_documented_fields():
    assert tuple(f.name for f in dataclasses.fields(Classification)) == FIELDS
    assert KINDS == ("not_critical", "global_minimiser", "strict_saddle", "local_non_global_minimiser", "inconclusive")


@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("beta_K", [0.5, 0.9, 1.1, 2.0])
def test_origin_lambda_min_and_kind(loss, bias, beta_K):
    K, n = 4, 3
    lam = beta_K / K / math.sqrt(n)
    p = make_problem(loss, K=K, n=n, d=K, lw=lam, lh=1.3 * lam, bias=bias)  # lw != lh
    beta = math.sqrt(n * p.lw * p.lh)
    c = classify(p, origin(p))
    sigma = 1 / (K * math.sqrt(n))
    ref = (p.lw + p.lh) / 2 - math.sqrt(((p.lw - p.lh) / 2) ** 2 + sigma**2)  # REFERENCE.md, (W, H) block
    if bias:  # the bias block: CE diag(q) - q q^T with its flat direction deflated (1/K), MSE 1 + lb
        ref = min(ref, 1 / K if loss == "ce" else 1.0)
    assert ref == pytest.approx(p.zero_point_min_eig(deflate=True), abs=1e-15)
    assert c.lambda_min == pytest.approx(ref, abs=1e-8)
    assert c.grad_norm < 1e-15 and c.deflated
    json.dumps(c.as_dict())
    if beta < 1 / K:
        assert c.kind == "strict_saddle", c.reason
        assert c.decrease["confirmed"] and c.decrease["observed"] < 0
        assert c.decrease["observed"] == pytest.approx(c.decrease["predicted"], rel=1e-3)
        assert c.direction_curvature["measured_curvature"] >= c.lambda_min - 1e-12
    else:
        assert c.kind == "global_minimiser", c.reason
        assert c.certificate["holds"] and c.decrease is None


def test_origin_of_an_imbalanced_ce_problem_uses_the_bias_block():
    p = CEProblem(K=3, n=None, d=3, lw=1e-2, lh=1e-2, lb=0.1, class_sizes=[1, 4, 2])
    c = classify(p, origin(p))
    assert c.lambda_min == pytest.approx(p.zero_point_min_eig(deflate=True), abs=1e-10)
    assert c.kind == "strict_saddle"


@pytest.mark.parametrize(
    "problem",
    [
        CEProblem(K=4, n=3, d=4, lw=5e-3, lh=1e-2),
        CEProblem(K=4, n=3, d=8, lw=5e-3, lh=5e-3, bias=False),
        MSEProblem(K=4, n=3, d=4, lw=5e-3, lh=1e-2),
        MSEProblem(K=4, n=3, d=8, lw=5e-3, lh=5e-3, bias=False),
        NormalizedProblem(4, 3, 4, 5.0),
        NormalizedProblem(4, 3, 8, 3.0),
        SphereProblem(5, 4, 2.0),
    ],
    ids=repr,
)
def test_closed_form_optimum_is_global_and_deflation_matters(problem):
    x = problem.optimal_point(seed=2)
    c = classify(problem, x)
    assert c.kind == "global_minimiser", c.reason
    assert c.lambda_min > c.eig_threshold > 0
    assert abs(c.relative_gap) < 1e-12
    if problem.loss in ("ce", "mse"):
        assert c.certificate["holds"]
        assert c.certificate["sigma_1"] == pytest.approx(math.sqrt(problem.lw * problem.lh), rel=1e-8)
    else:
        assert c.certificate is None
    # the same point without deflating the orbit: its zero eigenvalues make the test say nothing
    c0 = classify(problem, x, deflate=False)
    assert c0.kind == "inconclusive" and not c0.deflated
    assert abs(c0.lambda_min) <= c0.eig_threshold
    assert "NOT deflated" in c0.reason
    # the orbit's zero eigenvalues are there: as many as the orbit's dimension (dense oracle)
    spec = hessian_spectrum(problem, x)
    assert int((np.abs(spec) <= 1e-10 * np.abs(spec).max()).sum()) >= 1


def test_solver_output_counts_as_critical_and_global():
    p = CEProblem(K=4, n=3, d=5, lw=5e-3, lh=1e-2)
    x, log = lbfgs(p, p.random_start(0), gtol=1e-8, metrics_every=-1)
    assert log.converged
    c = classify(p, x)
    assert c.kind == "global_minimiser", c.reason
    assert c.grad_norm <= c.grad_threshold


def test_not_critical_and_threshold_formula():
    p = MSEProblem(K=3, n=2, d=3, lw=1e-2, lh=1e-2)
    x = p.random_start(0)
    c = classify(p, x, grad_tol=1e-6)
    assert c.kind == "not_critical" and c.lambda_min is None and c.hvps == 0
    xn = math.sqrt(sum(float((t * t).sum()) for t in x))
    assert c.grad_threshold == pytest.approx(1e-6 * abs(c.objective) / max(xn, 1.0), rel=1e-14)
    with pytest.raises(ValueError, match="grad_tol"):
        classify(p, x, grad_tol=-1.0)
    with pytest.raises(ValueError, match="method"):
        classify(p, x, method="exact")


@pytest.mark.parametrize(
    "problem",
    [CEProblem(K=4, n=3, d=8, lw=5e-3, lh=1e-2), MSEProblem(K=4, n=3, d=8, lw=5e-3, lh=1e-2),
     NormalizedProblem(4, 3, 8, 4.0)],
    ids=repr,
)
def test_lanczos_matches_dense_at_saddles_and_minimisers(problem):
    for x in (lowdim_point(problem, 2), problem.optimal_point(seed=0)):
        dense, vd = hessian_extreme_eigs(problem, x, k=3, deflate=True, method="dense", return_eigenvectors=True)
        # k = 1: a single-vector Krylov space sees one copy of a multiple eigenvalue (the optimum's
        # smallest eigenvalue has the symmetric group's multiplicity), so only the extreme one is compared
        lanczos, vl = hessian_extreme_eigs(problem, x, k=1, deflate=True, method="lanczos", return_eigenvectors=True)
        assert lanczos[0] == pytest.approx(dense[0], abs=1e-8 * max(1.0, abs(dense).max()))
        np.testing.assert_allclose(dense, hessian_spectrum(problem, x, deflate=True)[:3], rtol=0, atol=1e-12)
        # the eigenvectors: unit, tangent, Hess e = lambda e (at a critical point Hess maps the orbit to 0)
        M = problem.manifold
        for lam, e in zip(dense, vd):
            assert M.norm(x, e) == pytest.approx(1.0, abs=1e-12)
            r = M.lincomb(x, 1.0, problem.rhess(x, e), -float(lam), e)
            assert M.norm(x, r) < 1e-9
        e = vl[0]
        assert M.inner(x, e, problem.rhess(x, e)) == pytest.approx(lanczos[0], abs=1e-8)
    assert classify(problem, lowdim_point(problem, 2), method="lanczos").kind == "strict_saddle"


class _NoWeingarten(NormalizedProblem):
    """A wrong Riemannian Hessian: the projected Euclidean Hessian without the Weingarten term
    ``- <x_i, egrad_i> u_i``."""

    def rhess(self, x, u):
        self.counts["hess"] += 1
        return self.manifold.proj(x, self._ehess(x, self._state(x), u))


def test_a_hessian_without_the_weingarten_term_is_caught():
    good, bad = NormalizedProblem(4, 2, 4, 3.0), _NoWeingarten(4, 2, 4, 3.0)
    assert check_hessian(good, seed=1)["slope"] == pytest.approx(3.0, abs=0.1)
    slope = check_hessian(bad, seed=1)["slope"]
    assert abs(slope - 3.0) > 0.7, slope
    # and the wrong Hessian misreads the curvature at the optimum (the Weingarten term is its bulk)
    x = good.optimal_point(seed=0)
    assert abs(hessian_extreme_eigs(bad, x, deflate=True)[0] - hessian_extreme_eigs(good, x, deflate=True)[0]) > 1e-3


def test_doctests_of_the_landscape_modules():
    # the modules by name: the package's attributes certificate, classify and escape are the functions
    for name in ("", ".certificate", ".classify", ".points", ".escape"):
        mod = importlib.import_module("nclab.ufm.landscape" + name)
        res = doctest.testmod(mod)
        assert res.failed == 0 and res.attempted > 0, mod.__name__
