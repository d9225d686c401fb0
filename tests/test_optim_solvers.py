"""Every solver (nclab.ufm.optim) on every problem: the tests' own problems and the UFMs.

Oracles computed another way:
* two small problems of the tests' own (tests/optim_problems.py): a convex quadratic on a product
  of Euclidean factors (minimiser by a linear solve) and the Rayleigh quotient on the sphere
  (smallest eigenvalue and eigenvector by eigh);
* every solver on every UFM problem from random starts, against the closed forms of REFERENCE.md
  section 2, re-derived here in the test (optimal value, b* 1, h = sqrt(lw/(n lh)) w_k, |w_k|^2,
  h_{k,i} = w_k) rather than read from the problem classes;
* determinism: two runs from one start give the same iterates, bit for bit.
"""

from __future__ import annotations

import doctest
import math

import pytest
import torch

import nclab.ufm.optim
from nclab.geometry import etf_gram_error
from nclab.ufm import optim as S
from nclab.ufm.problems import make_problem
from optim_problems import Quadratic, Rayleigh

SOLVER_NAMES = ("lbfgs", "gd", "rgd", "rcg", "rtr")
TOL = dict(gtol=1e-10, ftol=0.0)  # converge to the gradient tolerance, never stop on small changes


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see conftest


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_every_solver_minimises_a_convex_quadratic(name):
    prob = Quadratic()
    x, log = S.SOLVERS[name](prob, prob.random_start(1), **TOL)
    assert abs(prob._f(x) - prob.optimum) <= 1e-12 * max(1.0, abs(prob.optimum))
    assert torch.allclose(prob._vec(x), prob.minimiser, atol=1e-9)
    assert log.stop_reason == S.STOP_GRADIENT
    assert [type(t) for t in x] == [torch.Tensor, torch.Tensor] and x[0].shape == (3, 2)


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_every_solver_finds_the_smallest_eigenvalue_on_the_sphere(name):
    prob = Rayleigh()
    x, log = S.SOLVERS[name](prob, prob.random_start(2), **TOL)
    assert abs(float(x[0].norm()) - 1.0) < 1e-14  # stays on the manifold
    assert abs(prob._f(x) - prob.optimum) <= 1e-12
    assert abs(abs(float(x[0] @ prob.minimiser)) - 1.0) < 1e-9
    assert log.final["grad_norm"] <= 1e-10


# --------------------------------------------------------------------------------------------
# every solver on every UFM problem, against the closed forms written here
# --------------------------------------------------------------------------------------------
CONFIGS = [
    ("ce", dict(K=4, n=5, d=4, lw=5e-3, lh=5e-3)),  # d = K
    ("ce", dict(K=5, n=3, d=4, lw=1e-2, lh=2e-3)),  # d = K-1, unequal lambdas
    ("ce", dict(K=3, n=4, d=6, lw=5e-3, lh=5e-3, lb=1e-2)),  # d > K, penalised bias: b* = 0
    ("ce", dict(K=4, n=3, d=5, lw=4e-3, lh=6e-3, bias=False)),
    ("mse", dict(K=4, n=5, d=4, lw=5e-3, lh=5e-3)),  # free bias: b* = 1/K
    ("mse", dict(K=5, n=3, d=4, lw=1e-2, lh=5e-3)),  # d = K-1
    ("mse", dict(K=3, n=4, d=4, lw=5e-3, lh=5e-3, bias=False)),  # orthogonal frame
    ("normalized", dict(K=4, n=5, d=4, tau=5.0)),
    ("normalized", dict(K=5, n=3, d=4, tau=3.0)),  # d = K-1
    ("sphere", dict(n_points=4, d=3, tau=5.0)),  # d = n-1: the simplex ETF
    ("sphere", dict(n_points=5, d=6, tau=2.0)),
]


def _ce_closed_form(K, n, lw, lh):
    """REFERENCE.md section 2 (Zhu et al. 2021): f*, and |w_k|^2 at the minimiser."""
    beta = math.sqrt(n * lw * lh)
    assert beta < 1 / K
    m = math.log(1 / beta - (K - 1))
    f = math.log(1 + (K - 1) * math.exp(-m)) + (K - 1) * beta * m
    return f, m * (K - 1) / K * math.sqrt(n * lh / lw)


def _mse_closed_form(K, n, lw, lh, bias):
    """MSE UFM (Zhou et al. 2022): Z* = p Y (p = 1 - K beta) on 1-perp with a free bias, on R^K without;
    balanced factors give h = sqrt(lw/(n lh)) w_k, so |w_k|^2 = Z*_kk / c."""
    beta = math.sqrt(n * lw * lh)
    assert K * beta < 1
    p = 1 - K * beta
    c = math.sqrt(lw / (n * lh))
    if bias:
        return (K - 1) * beta * (1 - K * beta / 2), p * (K - 1) / K / c
    return K * beta * (1 - K * beta / 2), p / c


def _optimum(loss, o):
    if loss == "ce":
        return _ce_closed_form(o["K"], o["n"], o["lw"], o["lh"])[0]
    if loss == "mse":
        return _mse_closed_form(o["K"], o["n"], o["lw"], o["lh"], o.get("bias", True))[0]
    if loss == "normalized":
        K, tau = o["K"], o["tau"]
        return math.log(1 + (K - 1) * math.exp(-tau * K / (K - 1)))
    n, tau = o["n_points"], o["tau"]
    return math.log(1 + (n - 1) * math.exp(-tau * n / (n - 1)))


def _check_structure(loss, o, problem, x):
    W, H = x[0], x[1] if len(x) > 1 else None
    labels = problem.labels
    if loss == "sphere":
        assert etf_gram_error(x[0]) < 1e-6
        return
    if loss == "normalized":
        assert float((H - W[labels]).abs().max()) < 1e-6  # h_{k,i} = w_k
        return
    K, n, lw, lh = o["K"], o["n"], o["lw"], o["lh"]
    c = math.sqrt(lw / (n * lh))
    assert float((H - c * W[labels]).abs().max()) < 1e-6 * float(H.abs().max())  # h = sqrt(lw/(n lh)) w_k
    if loss == "ce":
        rho = _ce_closed_form(K, n, lw, lh)[1]
        if o.get("bias", True):
            b = x[2]
            assert float((b - b.mean()).abs().max()) < 1e-6  # b = b* 1
            if o.get("lb", 0) > 0:
                assert float(b.abs().max()) < 1e-6  # b* = 0 when lb > 0
    else:
        rho = _mse_closed_form(K, n, lw, lh, o.get("bias", True))[1]
        if o.get("bias", True):
            assert float((x[2] - 1 / K).abs().max()) < 1e-6  # b* = 1/K 1
        else:  # W W^T = rho I: a scaled orthogonal frame
            assert float((W @ W.T - rho * torch.eye(K, dtype=W.dtype)).abs().max()) < 1e-6 * rho
    assert float(((W * W).sum(1) - rho).abs().max()) < 1e-6 * rho  # equal norms |w_k|^2 = rho


@pytest.mark.parametrize("name", SOLVER_NAMES)
@pytest.mark.parametrize("loss,opts", CONFIGS, ids=[f"{l}-{i}" for i, (l, _) in enumerate(CONFIGS)])
def test_every_solver_reaches_the_closed_form(name, loss, opts):
    problem = make_problem(loss, **opts)
    fstar = _optimum(loss, opts)
    seed = 3 + CONFIGS.index((loss, opts))
    x, log = S.SOLVERS[name](problem, problem.random_start(seed), metrics_every=0, **TOL)
    f = problem.cost(x)
    assert abs(f - fstar) <= 1e-9 * fstar, (log.stop_reason, f, fstar)
    m = log.final["metrics"]
    if loss == "sphere":
        assert m["etf_gram_error"] < 1e-6
    else:
        assert m["nc1"] < 1e-6
        assert m["nc2_etf_means"] < 1e-6
        if not (loss == "mse" and opts.get("bias") is False):  # there W is an orthogonal frame
            assert m["nc2_etf_W"] < 1e-6
    _check_structure(loss, opts, problem, x)


@pytest.mark.parametrize("name", SOLVER_NAMES)
@pytest.mark.parametrize(
    "loss,opts",
    [("ce", dict(K=4, n=5, d=4, lw=0.2, lh=0.2)), ("mse", dict(K=3, n=4, d=3, lw=0.3, lh=0.3))],
)
def test_large_lambdas_give_the_zero_minimiser(name, loss, opts):
    K, n = opts["K"], opts["n"]
    beta = math.sqrt(n * opts["lw"] * opts["lh"])
    assert beta >= 1 / K  # REFERENCE.md: then W = H = 0 is the global minimiser
    problem = make_problem(loss, **opts)
    x, log = S.SOLVERS[name](problem, problem.random_start(1), metrics_every=-1, **TOL)
    assert float(x[0].abs().max()) < 1e-7 and float(x[1].abs().max()) < 1e-7
    fstar = math.log(K) if loss == "ce" else (K - 1) / (2 * K)  # CE at b = b* 1; MSE with b = 1/K
    assert abs(problem.cost(x) - fstar) <= 1e-9 * fstar


def test_sphere_frame_potential_approaches_n2_over_d():
    """Lu & Steinerberger (2022): for fixed d the minimisers spread out as n grows, and their frame
    potential approaches the tight-frame bound n^2/d (Benedetto & Fickus 2003)."""
    d, excess = 3, []
    for n in (5, 10, 20, 50):
        assert n > d + 1
        problem = make_problem("sphere", n_points=n, d=d, tau=5.0)
        x, log = S.lbfgs(problem, problem.random_start(0), metrics_every=0, **TOL)
        X = x[0]
        assert torch.allclose(X.norm(dim=1), torch.ones(n, dtype=X.dtype), atol=1e-14)
        fp = float(((X @ X.T) ** 2).sum())
        assert fp >= n * n / d * (1 - 1e-12)
        excess.append(fp / (n * n / d) - 1)
        assert log.final["metrics"]["frame_potential"] == pytest.approx(fp, rel=1e-12)
    assert all(a > b for a, b in zip(excess, excess[1:])), excess
    assert excess[-1] < 1e-6


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_every_solver_runs_on_the_sphere_with_more_points_than_dimensions(name):
    problem = make_problem("sphere", n_points=8, d=3, tau=2.0)
    x, log = S.SOLVERS[name](problem, problem.random_start(0), metrics_every=-1, **TOL)
    assert log.stop_reason == S.STOP_GRADIENT and log.final["grad_norm"] <= 1e-10
    assert problem.cost(x) < problem.cost(problem.random_start(0))


@pytest.mark.parametrize("name", ["lbfgs", "rtr"])
def test_solvers_escape_the_strict_saddle_at_zero(name):
    """REFERENCE.md: W = H = 0 is a strict saddle when beta < 1/K; started next to it (a 1e-6
    perturbation), the solvers leave it and reach the global minimum."""
    problem = make_problem("ce", K=4, n=5, d=4, lw=5e-3, lh=5e-3)
    gen = torch.Generator().manual_seed(0)
    x0 = tuple(t + 1e-6 * torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in problem.zero_critical_point())
    x, log = S.SOLVERS[name](problem, x0, metrics_every=-1, **TOL)
    assert abs(problem.cost(x) - problem.optimum) <= 1e-9 * problem.optimum


@pytest.mark.parametrize("name", ["lbfgs", "rtr"])
def test_sphere_solutions_are_second_order_critical(name):
    """No closed form for n > d + 1: check instead that the point found is a local minimum, with
    nclab.ufm.diagnostics' Hessian eigenvalues on the tangent space (rotation orbit deflated)."""
    from nclab.ufm.diagnostics import hessian_extreme_eigs

    problem = make_problem("sphere", n_points=8, d=3, tau=2.0)
    x, log = S.SOLVERS[name](problem, problem.random_start(1), metrics_every=-1, **TOL)
    assert log.final["grad_norm"] <= 1e-10
    assert float(hessian_extreme_eigs(problem, x, deflate=True)[0]) > -1e-8


# --------------------------------------------------------------------------------------------
# determinism, option variants, the public names
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_solvers_are_deterministic_given_the_start(name):
    problem = make_problem("normalized", K=4, n=3, d=4, tau=4.0)
    x0 = problem.random_start(5)
    xa, la = S.SOLVERS[name](problem, x0, max_iter=40, metrics_every=-1)
    xb, lb = S.SOLVERS[name](problem, x0, max_iter=40, metrics_every=-1)
    assert all(torch.equal(a, b) for a, b in zip(xa, xb))
    assert [r["objective"] for r in la.iterations] == [r["objective"] for r in lb.iterations]
    assert all(torch.equal(a, b) for a, b in zip(x0, problem.random_start(5)))  # x0 untouched


def test_fixed_step_rgd_and_armijo_lbfgs_options():
    problem = make_problem("normalized", K=4, n=5, d=4, tau=5.0)
    x0 = problem.random_start(0)
    _, log = S.riemannian_gradient_descent(problem, x0, step="fixed", lr=2.0, **TOL, max_iter=50000)
    assert abs(log.final["objective"] - problem.optimum) <= 1e-9 * problem.optimum
    _, log = S.lbfgs(problem, x0, line_search="armijo", memory=3, **TOL)
    assert abs(log.final["objective"] - problem.optimum) <= 1e-9 * problem.optimum
    for kw in (dict(scaling="scalar"), dict(scaling="block", transport="full"), dict(transport="full", memory=4)):
        _, log = S.lbfgs(problem, x0, **kw, **TOL)
        assert abs(log.final["objective"] - problem.optimum) <= 1e-9 * problem.optimum, kw
    for rule in ("pr+", "fr", "hz"):
        _, log = S.conjugate_gradient(problem, x0, beta_rule=rule, **TOL)
        assert abs(log.final["objective"] - problem.optimum) <= 1e-9 * problem.optimum, rule


def test_solver_registry():
    assert tuple(S.SOLVERS) == SOLVER_NAMES
    assert all(S.get_solver(n) is S.SOLVERS[n] for n in SOLVER_NAMES)


@pytest.mark.parametrize("module", [nclab.ufm.optim], ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
