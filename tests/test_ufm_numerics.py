"""Numerics at every temperature and scale: the cross-entropy UFMs with tiny losses.

Oracles computed another way:
* the cost at a float64 point evaluated in 50-digit arithmetic (mpmath) from REFERENCE.md's
  definition, and the closed-form optima typed in from REFERENCE.md section 2;
* gradients and Hessian-vector products of an objective written here in the log1p form,
  ``log1p(sum_{j != y} exp(z_j - z_y))``, differentiated by torch.func (float64);
* the structure and metric values at a collapsed point perturbed by a known 1e-9, recomputed in
  50-digit arithmetic.
"""

from __future__ import annotations

import math

import mpmath
import pytest
import torch
from torch.func import grad, jvp

from nclab.geometry import frame_potential_excess, simplex_etf
from nclab.metrics import compute_metrics
from nclab.ufm import optim as S
from nclab.ufm.problems import make_problem
from nclab.ufm.run import closed_form_checks, run_solver, solve

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see conftest

mpmath.mp.dps = 50
TAUS = (1.0, 5.0, 20.0, 40.0, 80.0)


def _fstar_normalized(K: int, tau: float) -> float:
    """REFERENCE.md: f* = log(1 + (K-1) exp(-tau K/(K-1))) (and E* with n points for the sphere)."""
    return float(mpmath.log1p((K - 1) * mpmath.exp(-mpmath.mpf(tau) * K / (K - 1))))


def _mp_mean_ce(Z_rows, labels) -> mpmath.mpf:
    """Mean cross-entropy of rows of logits (lists of mpf), straight from the definition
    log(sum_j exp(z_j)) - z_y, in 150 digits: the subtraction cancels ~1/CE digits (43 at tau = 80),
    which 150 digits can afford."""
    with mpmath.workdps(150):
        total = mpmath.mpf(0)
        for z, y in zip(Z_rows, labels):
            total += mpmath.log(mpmath.fsum(mpmath.exp(v) for v in z)) - z[y]
        return total / len(Z_rows)


def _mp_logits(A, B, scale, bias=None):
    """rows of scale * A B^T (+ bias) in 50 digits, from the float64 entries."""
    A = [[mpmath.mpf(float(v)) for v in row] for row in A.tolist()]
    B = [[mpmath.mpf(float(v)) for v in row] for row in B.tolist()]
    s = mpmath.mpf(scale)
    out = []
    for a in A:
        row = [s * mpmath.fsum(p * q for p, q in zip(a, b)) for b in B]
        if bias is not None:
            row = [v + mpmath.mpf(float(c)) for v, c in zip(row, bias.tolist())]
        out.append(row)
    return out


# --------------------------------------------------------------------------------------------
# 1. the cost at the closed-form point, every temperature
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("loss", ["normalized", "sphere"])
def test_cost_at_the_closed_form_point_equals_fstar_at_every_temperature(loss, tau):
    if loss == "normalized":
        p = make_problem("normalized", K=5, n=4, d=6, tau=tau)
        K = 5
    else:
        p = make_problem("sphere", n_points=5, d=4, tau=tau)
        K = 5
    fstar = _fstar_normalized(K, tau)
    assert p.optimum == pytest.approx(fstar, rel=1e-14)
    x = p.optimal_point(seed=3)
    f = p.cost(x)
    assert f > 0 and abs(f - fstar) <= 1e-12 * fstar, (f, fstar)  # 1e-40 at tau = 80, yet 12 digits
    # the float64 point itself, evaluated in 50 digits: the cost is correct to rounding
    if loss == "normalized":
        exact = _mp_mean_ce(_mp_logits(x[1], x[0], tau), p.labels.tolist())
    else:
        exact = _mp_mean_ce(_mp_logits(x[0], x[0], tau), list(range(5)))
    assert abs(f - float(exact)) <= 1e-13 * float(exact) * max(1.0, tau / 20)


def test_the_textbook_logsumexp_form_loses_every_digit_there():
    """Why the log1p form: logsumexp(z) - z_y at the tau = 40 optimum is 0 or noise (the defect)."""
    p = make_problem("normalized", K=5, n=4, d=6, tau=40.0)
    W, H = p.optimal_point(seed=0)
    Z = 40.0 * H @ W.T
    naive = float((torch.logsumexp(Z, 1) - Z[torch.arange(Z.shape[0]), p.labels]).mean())
    assert not abs(naive - p.optimum) <= 1e-3 * p.optimum  # the naive form is wrong by 100%
    assert abs(p.cost((W, H)) - p.optimum) <= 1e-12 * p.optimum


def test_ce_with_tiny_weight_decay_has_relative_accuracy():
    """lw = lh = 1e-6: large norms (|w_k|^2 ~ 22), margin ~ 13, CE term ~ 7e-6."""
    K, n, lw, lh = 4, 5, 1e-6, 1e-6
    p = make_problem("ce", K=K, n=n, d=K, lw=lw, lh=lh)
    beta = math.sqrt(n * lw * lh)
    m = math.log(1 / beta - (K - 1))
    fstar = math.log1p((K - 1) * math.exp(-m)) + (K - 1) * beta * m  # REFERENCE.md section 2
    x = p.optimal_point(seed=1)
    assert abs(p.cost(x) - fstar) <= 1e-12 * fstar
    W, H, b = x
    data = _mp_mean_ce(_mp_logits(H, W, 1.0, b), p.labels.tolist())
    reg = sum(mpmath.mpf(float(v)) ** 2 for v in W.reshape(-1).tolist()) * lw / 2
    reg += sum(mpmath.mpf(float(v)) ** 2 for v in H.reshape(-1).tolist()) * lh / 2
    assert abs(p.cost(x) - float(data + reg)) <= 1e-14 * fstar


@pytest.mark.parametrize("tau", [1.0, 40.0])
def test_cost_is_exact_where_samples_are_misclassified(tau):
    """Random points (the label is often not the largest logit): the pivot on the row maximum
    keeps the loss and its value exact whatever the margin's sign."""
    p = make_problem("normalized", K=6, n=3, d=4, tau=tau)
    x = p.random_start(7)
    exact = _mp_mean_ce(_mp_logits(x[1], x[0], tau), p.labels.tolist())
    assert abs(p.cost(x) - float(exact)) <= 1e-14 * float(exact)


# --------------------------------------------------------------------------------------------
# 2. derivatives against torch.func on a log1p-form objective
# --------------------------------------------------------------------------------------------
def _log1p_ce(Z, labels):
    """mean_i log1p(sum_{j != y_i} exp(z_ij - z_{i y_i})), for rows whose largest logit is the label."""
    D = Z - Z.gather(1, labels[:, None])
    mask = torch.ones_like(D, dtype=torch.bool).scatter_(1, labels[:, None], False)
    return torch.log1p(torch.where(mask, torch.exp(D), torch.zeros_like(D)).sum(1)).mean()


def _oracle(p):
    if p.loss == "sphere":
        return lambda X: _log1p_ce(p.tau * X @ X.T, p.labels)
    if p.loss == "normalized":
        return lambda W, H: _log1p_ce(p.tau * H @ W.T, p.labels)
    return lambda W, H, b: _log1p_ce(H @ W.T + b, p.labels) + p.lw / 2 * (W**2).sum() + p.lh / 2 * (H**2).sum()


def _rel(a, b) -> float:
    num = math.sqrt(sum(float(((u - v) ** 2).sum()) for u, v in zip(a, b)))
    return num / math.sqrt(sum(float((v**2).sum()) for v in b))


@pytest.mark.parametrize(
    "loss,opts",
    [
        ("normalized", dict(K=4, n=3, d=5, tau=40.0)),
        ("sphere", dict(n_points=5, d=4, tau=40.0)),
        ("ce", dict(K=4, n=3, d=4, lw=1e-6, lh=1e-6)),
    ],
)
def test_gradients_and_hvps_match_autodiff_of_the_log1p_form_at_tau_40(loss, opts):
    p = make_problem(loss, **opts)
    gen = torch.Generator().manual_seed(0)
    x = tuple(t + 1e-3 * torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in p.optimal_point(seed=2))
    if loss != "ce":  # back onto the product of spheres
        x = tuple(t / t.norm(dim=1, keepdim=True) for t in x)
    u = p.manifold.random_tangent(x, gen)
    f = _oracle(p)
    args = tuple(range(len(x)))
    g_or = grad(f, argnums=args)(*x)
    _, h_or = jvp(lambda *xs: grad(f, argnums=args)(*xs), tuple(x), tuple(u))
    assert float(f(*x)) < 1e-10 if loss != "ce" else True  # the tiny-loss regime
    assert abs(p.cost(x) - float(f(*x))) <= 1e-13 * float(f(*x))
    assert _rel(p.egrad(x), g_or) <= 1e-9
    assert _rel(p.ehess(x, u), h_or) <= 1e-9
    if loss != "ce":  # Riemannian versions: projections of the same quantities
        rg_or = p.manifold.egrad2rgrad(x, g_or)
        assert _rel(p.rgrad(x), rg_or) <= 1e-9
        rh_or = p.manifold.ehess2rhess(x, g_or, h_or, u)
        assert _rel(p.rhess(x, u), rh_or) <= 1e-9


# --------------------------------------------------------------------------------------------
# 3. every solver reaches the closed form at large tau / tiny weight decay
# --------------------------------------------------------------------------------------------
HARD = [
    ("normalized", dict(K=4, n=5, d=4, tau=20.0)),
    ("normalized", dict(K=5, n=4, d=6, tau=40.0)),
    ("sphere", dict(n_points=5, d=4, tau=30.0)),
    ("ce", dict(K=4, n=5, d=4, lw=1e-6, lh=1e-6)),
]


@pytest.mark.parametrize("name", ["lbfgs", "rcg", "rtr", "rgd"])
@pytest.mark.parametrize("loss,opts", HARD, ids=[f"{l}-{o.get('tau', o.get('lw'))}" for l, o in HARD])
def test_every_solver_reaches_the_closed_form_at_large_tau_from_several_starts(name, loss, opts):
    problem = make_problem(loss, **opts)
    for seed in (0, 1, 2):
        x, r = run_solver(problem, name, seed, metrics_every=0)  # the default gtol
        assert r["converged"] and r["status"] == "optimal", (seed, r["stop_reason"], r["relative_gap"])
        assert abs(r["relative_gap"]) < 1e-8, (seed, r["relative_gap"])
        s = r["structure"]
        if loss == "normalized":
            assert s["feature_error"] < 1e-6 and s["etf_W"] < 1e-6, (seed, s)
        elif loss == "sphere":
            assert s["etf_X"] < 1e-6, (seed, s)
        else:
            assert max(s.values()) < 1e-6, (seed, s)


def test_fixed_step_gradient_descent_does_not_claim_convergence_at_large_tau():
    """The papers' heavy-ball GD (lr 0.1) cannot make progress once the curvature is f* tau^2 ~
    1e-8 at tau = 20: capped, it must say so instead of reporting a solution."""
    problem = make_problem("normalized", K=4, n=5, d=4, tau=20.0)
    x, r = run_solver(problem, "gd", 0, max_iter=2000, metrics_every=0)
    assert r["converged"] is False and r["status"] == "not_converged" and r["stop_reason"] == "max_iter"
    assert r["warnings"] and "did not converge" in r["warnings"][0]


def test_the_previous_defaults_still_converge():
    for loss in ("ce", "mse", "normalized", "sphere"):
        r = solve(loss, "lbfgs", seed=0)
        assert r["converged"] and r["status"] == "optimal" and abs(r["relative_gap"]) < 1e-12, (loss, r["stop_reason"])


def test_a_run_capped_at_three_iterations_is_not_converged():
    r = solve("normalized", "lbfgs", seed=0, max_iter=3, tau=20.0)
    assert r["converged"] is False and r["log"]["converged"] is False
    assert r["stop_reason"] == "max_iter" and r["status"] == "not_converged" and r["warnings"]


def test_a_converged_stop_far_from_the_optimum_is_flagged():
    """A critical point that is not the global minimiser (a start on the strict saddle W = H = 0
    has zero gradient): converged, but the status says off_optimum and a warning explains."""
    problem = make_problem("ce", K=4, n=5, d=4)
    x, r = run_solver(problem, "lbfgs", 0, x0=problem.zero_critical_point(), metrics_every=0)
    assert r["converged"] is True and r["stop_reason"] == S.STOP_GRADIENT
    assert r["status"] == "off_optimum" and r["relative_gap"] > 1e-6
    assert "above the closed-form optimum" in r["warnings"][0]


def test_relative_gradient_test_is_invariant_to_the_objective_scale():
    """The same problem scaled by 1e-30 stops at the same iteration (an absolute test would stop
    at once): the stopping rule means the same at every scale."""

    class Scaled:
        def __init__(self, base, c):
            self.base, self.c, self.manifold = base, c, base.manifold

        def cost(self, x):
            return self.c * self.base.cost(x)

        def egrad(self, x):
            return tuple(self.c * g for g in self.base.egrad(x))

        def cost_and_egrad(self, x):
            return self.cost(x), self.egrad(x)

        def rhess(self, x, u):
            return tuple(self.c * h for h in self.base.rhess(x, u))

    base = make_problem("normalized", K=4, n=3, d=4, tau=5.0)
    x0 = base.random_start(0)
    _, a = S.lbfgs(base, x0, metrics_every=-1)
    _, b = S.lbfgs(Scaled(base, 1e-30), x0, metrics_every=-1)
    assert a.converged and b.converged and a.n_iter == b.n_iter > 5


# --------------------------------------------------------------------------------------------
# 4. metrics and structure near 0 keep their digits
# --------------------------------------------------------------------------------------------
def _mp_etf_gram_error(A):
    """| G/|G|_F - (I - J/K)/sqrt(K-1) |_F in 50 digits, G = A A^T."""
    rows = [[mpmath.mpf(float(v)) for v in r] for r in A.tolist()]
    K = len(rows)
    G = [[mpmath.fsum(p * q for p, q in zip(a, b)) for b in rows] for a in rows]
    norm = mpmath.sqrt(mpmath.fsum(v * v for r in G for v in r))
    c = 1 / mpmath.sqrt(K - 1)
    return mpmath.sqrt(mpmath.fsum(
        (G[i][j] / norm - c * ((1 if i == j else 0) - mpmath.mpf(1) / K)) ** 2 for i in range(K) for j in range(K)
    ))


def test_structure_and_metrics_near_zero_have_relative_accuracy():
    """A collapsed tau = 40 solution perturbed by a known 1e-9: the ETF distances, the feature
    error and nc3 are ~1e-9..1e-18 and must be computed to many digits, not as differences of O(1)."""
    K, n, d, eps = 5, 4, 6, 1e-9
    p = make_problem("normalized", K=K, n=n, d=d, tau=40.0)
    W0, _ = p.optimal_point(seed=1)
    gen = torch.Generator().manual_seed(4)
    W = W0 + eps * torch.randn(W0.shape, generator=gen, dtype=W0.dtype)
    W = W / W.norm(dim=1, keepdim=True)
    H = W[p.labels].clone()
    H[0] = W[0] + eps * torch.randn(d, generator=gen, dtype=W.dtype)
    H[0] /= H[0].norm()
    s = closed_form_checks(p, (W, H))
    fe = max(abs(mpmath.mpf(float(a)) - mpmath.mpf(float(b))) for a, b in zip(H[0].tolist(), W[0].tolist()))
    assert s["feature_error"] == pytest.approx(float(fe), rel=1e-12)
    ref = float(_mp_etf_gram_error(W))
    assert 1e-11 < ref < 1e-7
    assert s["etf_W"] == pytest.approx(ref, rel=1e-6)
    m = compute_metrics(H, p.labels, W)
    assert m.nc2_etf_W == pytest.approx(ref, rel=1e-6)
    # nc3 = |W/|W| - Mc/|Mc||^2 is ~1e-18 here: a 50-digit value, not rounding noise of 1e-16
    Hm = [[mpmath.mpf(float(v)) for v in r] for r in H.tolist()]
    labels = p.labels.tolist()
    means = [[mpmath.fsum(Hm[i][c] for i in range(len(Hm)) if labels[i] == k) / n for c in range(d)] for k in range(K)]
    g = [mpmath.fsum(mu[c] for mu in means) / K for c in range(d)]
    Mc = [[mu[c] - g[c] for c in range(d)] for mu in means]
    Wm = [[mpmath.mpf(float(v)) for v in r] for r in W.tolist()]
    nw = mpmath.sqrt(mpmath.fsum(v * v for r in Wm for v in r))
    nm = mpmath.sqrt(mpmath.fsum(v * v for r in Mc for v in r))
    nc3 = float(mpmath.fsum((a / nw - b / nm) ** 2 for ra, rb in zip(Wm, Mc) for a, b in zip(ra, rb)))
    assert 1e-24 < nc3 < 1e-14
    assert m.nc3 == pytest.approx(nc3, rel=1e-3)
    # exact ETF: every distance is at rounding, not at sqrt(rounding)
    W0c = simplex_etf(K, d, seed=2)
    assert closed_form_checks(p, (W0c, W0c[p.labels].clone()))["etf_W"] < 1e-14


def test_frame_potential_excess_is_computed_without_cancellation():
    """Two orthonormal bases of R^3 (a tight frame of 6 vectors) perturbed by a known 1e-8:
    FP/bound - 1 formed by subtraction is noise of 1e-16; the sum-of-squares form must give the
    50-digit value to 1e-6."""
    from nclab.geometry import random_orthogonal

    n, d = 6, 3
    tight = torch.cat([torch.eye(3, dtype=torch.float64), random_orthogonal(3, seed=1)])
    assert frame_potential_excess(tight) < 1e-30
    gen = torch.Generator().manual_seed(1)
    X = tight + 1e-8 * torch.randn(tight.shape, generator=gen, dtype=tight.dtype)
    X = X / X.norm(dim=1, keepdim=True)
    rows = [[mpmath.mpf(float(v)) for v in r] for r in X.tolist()]
    fp = mpmath.fsum(mpmath.fsum(a * b for a, b in zip(u, v)) ** 2 for u in rows for v in rows)
    exact = float(fp / (mpmath.mpf(n) ** 2 / d) - 1)
    assert 1e-19 < exact < 1e-13
    assert frame_potential_excess(X) == pytest.approx(exact, rel=1e-6)
    # n < d: the bound is n, the excess the off-diagonal sum of squares over n
    Y = torch.eye(4, dtype=torch.float64)[:2] + 1e-9 * torch.tensor([[0.0, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float64)
    Y = Y / Y.norm(dim=1, keepdim=True)
    assert frame_potential_excess(Y) == pytest.approx(2 * float(Y[0] @ Y[1]) ** 2 / 2, rel=1e-12)


@pytest.mark.parametrize("loss,opts", [("normalized", dict(K=4, n=3, d=5, tau=40.0)), ("sphere", dict(n_points=5, d=4, tau=40.0))])
def test_taylor_checks_work_where_the_loss_is_tiny(loss, opts):
    """nclab.ufm.diagnostics' rounding floor is relative to f: next to the tau = 40 optimum (f ~ 1e-17)
    the gradient and Hessian checks still find their slopes 2 and 3."""
    from nclab.ufm.diagnostics import check_gradient, check_hessian

    p = make_problem(loss, **opts)
    gen = torch.Generator().manual_seed(5)
    x = tuple(t + 1e-3 * torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in p.optimal_point(seed=1))
    x = tuple(t / t.norm(dim=1, keepdim=True) for t in x)
    assert p.cost(x) < 1e-12
    assert check_gradient(p, x)["slope"] == pytest.approx(2.0, abs=0.1)
    assert check_hessian(p, x)["slope"] == pytest.approx(3.0, abs=0.15)
