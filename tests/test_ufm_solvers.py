"""Solvers (nclab.ufm.solvers) and the solve orchestration (nclab.ufm.run).

Oracles computed another way:
* two small problems of the test's own that follow the UFMProblem interface: a convex quadratic on
  a product of Euclidean factors (minimiser by a linear solve) and the Rayleigh quotient on the
  sphere (smallest eigenvalue and eigenvector by eigvalsh);
* the compact L-BFGS representation against the textbook two-loop recursion;
* every solver on every UFM problem from random starts, against the closed forms of REFERENCE.md
  section 2, re-derived here in the test (optimal value, b* 1, h = sqrt(lw/(n lh)) w_k, |w_k|^2,
  h_{k,i} = w_k) rather than read from the problem classes.
"""

from __future__ import annotations

import math

import pytest
import torch

from nclab.geometry import etf_gram_error
from nclab.ufm import solvers as S
from nclab.ufm.manifolds import Euclidean, Product, Sphere
from nclab.ufm.problems import make_problem
from nclab.ufm.run import RESULT_KEYS, run_solver, solve

SOLVER_NAMES = ("lbfgs", "gd", "rgd", "rcg", "rtr")
TOL = dict(gtol=1e-10, ftol=0.0)  # converge to the gradient tolerance, never stop on small changes


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see conftest


# --------------------------------------------------------------------------------------------
# the test's own problems (UFMProblem interface)
# --------------------------------------------------------------------------------------------
class _OwnProblem:
    def __init__(self):
        self.counts = {"cost": 0, "grad": 0, "hess": 0}

    def cost(self, x):
        self.counts["cost"] += 1
        return self._f(x)

    def egrad(self, x):
        self.counts["grad"] += 1
        return self._g(x)

    def cost_and_egrad(self, x):
        return self.cost(x), self.egrad(x)

    def rgrad(self, x):
        return self.manifold.egrad2rgrad(x, self.egrad(x))

    def rhess(self, x, u):
        self.counts["hess"] += 1
        return self.manifold.ehess2rhess(x, self._g(x), self._h(x, u), u)

    def metrics(self, x):
        return {"norm": float(sum(float((t * t).sum()) for t in x))}


class Quadratic(_OwnProblem):
    """f(X, y) = 1/2 v^T A v - c^T v, v = (vec X, y), X 3 x 2, y in R^4; A SPD, eigenvalues in [0.5, 5]."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.manifold = Product(Euclidean((3, 2)), Euclidean((4,)))
        Q, _ = torch.linalg.qr(torch.randn(10, 10, generator=g, dtype=torch.float64))
        self.A = Q @ torch.diag(torch.linspace(0.5, 5.0, 10, dtype=torch.float64)) @ Q.T
        self.c = torch.randn(10, generator=g, dtype=torch.float64)
        v = torch.linalg.solve(self.A, self.c)
        self.optimum = float(-0.5 * self.c @ v)
        self.minimiser = v

    def _vec(self, x):
        return torch.cat([x[0].reshape(-1), x[1]])

    def _split(self, v):
        return (v[:6].reshape(3, 2), v[6:])

    def _f(self, x):
        v = self._vec(x)
        return float(0.5 * v @ self.A @ v - self.c @ v)

    def _g(self, x):
        return self._split(self.A @ self._vec(x) - self.c)

    def _h(self, x, u):
        return self._split(self.A @ self._vec(u))

    def random_start(self, seed):
        g = torch.Generator().manual_seed(seed)
        return (torch.randn(3, 2, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64))


class Rayleigh(_OwnProblem):
    """f(x) = x^T A x on the unit sphere S^{d-1}: minimum = smallest eigenvalue of A (eigenvalues in [1, 4])."""

    def __init__(self, d=8, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.manifold = Product(Sphere(d))
        Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        self.A = Q @ torch.diag(torch.linspace(1.0, 4.0, d, dtype=torch.float64)) @ Q.T
        evals, evecs = torch.linalg.eigh(self.A)
        self.optimum, self.minimiser = float(evals[0]), evecs[:, 0]

    def _f(self, x):
        return float(x[0] @ self.A @ x[0])

    def _g(self, x):
        return (2 * self.A @ x[0],)

    def _h(self, x, u):
        return (2 * self.A @ u[0],)

    def random_start(self, seed):
        return self.manifold.random_point(torch.Generator().manual_seed(seed))


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


def _two_loop(g, pairs, blocks):
    """Nocedal & Wright (2006), Algorithm 7.4, with H0 = diag(gamma_f I) over the blocks,
    gamma_f = s_f^T y_f / y_f^T y_f of the newest pair (s^T y / y^T y where s_f^T y_f <= 0)."""
    q = g.clone()
    alphas = []
    for s, y in reversed(pairs):
        a = float(s @ q) / float(s @ y)
        alphas.append(a)
        q -= a * y
    s, y = pairs[-1]
    r = q.clone()
    for a, b in blocks:  # a block whose own s^T y is not positive takes the whole-vector gamma
        sy, yy = float(s[a:b] @ y[a:b]), float(y[a:b] @ y[a:b])
        r[a:b] *= sy / yy if sy > 0 else float(s @ y) / float(y @ y)
    for (s, y), a in zip(pairs, reversed(alphas)):
        b = float(y @ r) / float(s @ y)
        r += (a - b) * s
    return -r


@pytest.mark.parametrize("scaling", ["block", "scalar"])
def test_compact_lbfgs_direction_equals_the_two_loop_recursion(scaling):
    """Steps on a quadratic (y = A s = g_new - g_old, as in the solver): the compact form with its
    incremental inner products gives the two-loop direction at every step, also after the ring
    buffer starts dropping the oldest pair."""
    g = torch.Generator().manual_seed(0)
    D, m, offsets = 9, 4, [0, 4, 9]
    blocks = [(0, 4), (4, 9)] if scaling == "block" else [(0, 9)]
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    A = Q @ torch.diag(torch.logspace(-2, 1, D, dtype=torch.float64)) @ Q.T
    c = torch.randn(D, generator=g, dtype=torch.float64)
    mem = S._LBFGSMemory(m, offsets, torch.float64, "cpu", scaling)
    x = torch.randn(D, generator=g, dtype=torch.float64)
    grad = A @ x - c
    out = torch.empty(D, dtype=torch.float64)
    assert not mem.direction(grad, out)  # empty memory: no direction
    pairs = []
    for _ in range(8):
        s = torch.randn(D, generator=g, dtype=torch.float64)
        new_grad = A @ (x + s) - c
        y = new_grad - grad
        slot = mem.next_slot()
        mem.Z[slot], mem.Z[m + slot] = s, y
        mem.commit(slot, *mem.pair_products(slot))
        pairs.append((s, y))
        x, grad = x + s, new_grad
        assert mem.direction(grad, out)
        assert torch.allclose(out, _two_loop(grad, pairs[-m:], blocks), rtol=1e-10, atol=1e-12)
    # the transported (manifold) path recomputes the products from scratch: same direction
    mem.refresh()
    assert mem.direction(grad, out)
    assert torch.allclose(out, _two_loop(grad, pairs[-m:], blocks), rtol=1e-10, atol=1e-12)


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
    nclab.ufm.tools' Hessian eigenvalues on the tangent space (rotation orbit deflated)."""
    from nclab.ufm.tools import hessian_extreme_eigs

    problem = make_problem("sphere", n_points=8, d=3, tau=2.0)
    x, log = S.SOLVERS[name](problem, problem.random_start(1), metrics_every=-1, **TOL)
    assert log.final["grad_norm"] <= 1e-10
    assert float(hessian_extreme_eigs(problem, x, deflate=True)[0]) > -1e-8


# --------------------------------------------------------------------------------------------
# options, logs, stopping, determinism
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


def test_log_records_metrics_times_and_counts():
    problem = make_problem("ce", K=3, n=4, d=3)
    problem.reset_counts()
    x, log = S.lbfgs(problem, problem.random_start(0), metrics_every=5, gtol=1e-10)
    recs = log.iterations
    assert [r["iter"] for r in recs] == list(range(len(recs)))
    assert all({"iter", "objective", "grad_norm", "time"} <= set(r) for r in recs)
    assert all(("metrics" in r) == (r["iter"] % 5 == 0 or r is recs[-1]) for r in recs)
    assert set(recs[-1]["metrics"]) >= {"nc1", "nc2_etf_means", "nc2_etf_W", "nc3", "nc4"}
    times = [r["time"] for r in recs]
    assert times == sorted(times) and log.seconds >= times[-1]
    assert (log.n_cost, log.n_grad, log.n_hess) == (problem.counts["cost"], problem.counts["grad"], 0)
    d = log.to_dict()
    assert d["n_iter"] == log.n_iter == recs[-1]["iter"] and d["stop_reason"] == log.stop_reason

    problem.reset_counts()
    _, rlog = S.trust_regions(problem, problem.random_start(0), metrics_every=-1)
    assert rlog.n_hess == problem.counts["hess"] > 0 and "metrics" not in rlog.final


def test_stopping_options():
    problem = make_problem("ce", K=4, n=5, d=4)
    x0 = problem.random_start(0)
    fstar = problem.optimum
    _, log = S.lbfgs(problem, x0, f_target=fstar * (1 + 1e-6), gtol=0)
    assert log.stop_reason == "objective <= f_target" and log.final["objective"] <= fstar * (1 + 1e-6)
    _, log = S.gradient_descent(problem, x0, max_iter=7)
    assert log.stop_reason == "max_iter" and log.n_iter == 7
    _, log = S.riemannian_gradient_descent(problem, x0, max_iter=0)
    assert log.n_iter == 0 and log.stop_reason == "max_iter"
    _, log = S.conjugate_gradient(problem, x0, callback=lambda it, x, f, g: it >= 3)
    assert log.stop_reason == "callback" and log.n_iter == 3
    _, log = S.gradient_descent(problem, x0, max_time=0.05, gtol=0, ftol=0, max_iter=10**9)
    assert log.stop_reason == "max_time"
    _, log = S.gradient_descent(problem, x0, max_iter=50, log_every=10, metrics_every=-1)
    assert [r["iter"] for r in log.iterations] == [0, 10, 20, 30, 40, 50]
    _, log = S.gradient_descent(problem, x0, lr=1e3, momentum=0.0, max_iter=1000)
    assert log.stop_reason.startswith("non-finite")  # divergence is reported, not hidden


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


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda p, x: S.lbfgs(p, x, memory=0), "memory"),
        (lambda p, x: S.lbfgs(p, x, line_search="exact"), "line_search"),
        (lambda p, x: S.lbfgs(p, x, scaling="diagonal"), "scaling"),
        (lambda p, x: S.lbfgs(p, x, transport="parallel"), "transport"),
        (lambda p, x: S.lbfgs(p, x, c1=0.9, c2=0.1), "c1"),
        (lambda p, x: S.gradient_descent(p, x, lr=-0.1), "lr"),
        (lambda p, x: S.gradient_descent(p, x, momentum=1.0), "momentum"),
        (lambda p, x: S.riemannian_gradient_descent(p, x, step="big"), "step"),
        (lambda p, x: S.conjugate_gradient(p, x, beta_rule="dy"), "beta_rule"),
        (lambda p, x: S.trust_regions(p, x, rho_prime=0.5), "rho_prime"),
        (lambda p, x: S.lbfgs(p, x, max_iter=-1), "max_iter"),
        (lambda p, x: S.lbfgs(p, x, gtol=-1.0), "gtol"),
        (lambda p, x: S.lbfgs(p, x, max_time=0), "max_time"),
        (lambda p, x: S.lbfgs(p, x, learning_rate=0.1), "unknown option"),
        (lambda p, x: S.get_solver("newton"), "unknown solver"),
    ],
)
def test_bad_solver_options_raise_clear_errors(call, match):
    problem = make_problem("ce")
    with pytest.raises(ValueError, match=match):
        call(problem, problem.random_start(0))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(loss="ce", K=1), "K"),
        (dict(loss="mse", lw=-1e-3), "lw"),
        (dict(loss="ce", lh=-1.0), "lh"),
        (dict(loss="normalized", tau=0.0), "tau"),
        (dict(loss="sphere", tau=-2.0), "tau"),
        (dict(loss="ce", d=0), "d"),
        (dict(loss="ce", solver="newton"), "unknown solver"),
        (dict(loss="hinge"), "unknown loss"),
        (dict(loss="ce", seed=-1), "seed"),
        (dict(loss="ce", gtol=-1.0), "gtol"),
        (dict(loss="ce", solver_options=dict(tol=1e-8)), "tol is now called gtol"),
    ],
)
def test_bad_options_from_python_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        solve(**kwargs)


def test_solve_returns_the_documented_result():
    r = solve("ce", "lbfgs", seed=0, max_iter=500, gtol=1e-10, K=4, n=5, d=4)
    assert set(RESULT_KEYS) <= set(r)
    assert r["gap"] == pytest.approx(r["objective"] - r["optimum"], abs=0)
    assert abs(r["relative_gap"]) < 1e-9 and r["iterations"] == r["log"]["n_iter"]
    assert r["metrics"]["nc1"] < 1e-6 and max(r["structure"].values()) < 1e-6
    s = solve("sphere", "rtr", seed=0, n_points=9, d=3)
    assert s["optimum"] is None and s["gap"] is None and s["relative_gap"] is None
    assert {"frame_potential", "frame_potential_bound", "frame_potential_excess", "welch_bound"} <= set(s["metrics"])
    assert s["metrics"]["frame_potential_bound"] == 27.0
    assert r["converged"] is True and r["status"] == "optimal" and r["warnings"] == []
    x, r2 = run_solver(make_problem("ce"), "lbfgs", 0, gtol=1e-10)
    assert r2["objective"] == pytest.approx(r["objective"], rel=1e-12) and len(x) == 3
