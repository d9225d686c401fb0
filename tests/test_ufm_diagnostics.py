"""Derivative checks and Hessian eigenvalues of nclab.ufm.diagnostics .

The Taylor checks must give slope 2/3 on every problem and must FAIL (slope 1/2) on a problem with a
deliberately wrong gradient/Hessian; the Lanczos eigenvalues are compared with the dense spectrum
and with the closed form at W = H = 0; deflation is checked against the dimension of the O(d)
orbit of a collapsed minimiser, and the matrix-free orbit projection against the explicit basis of
d(d-1)/2 directions it replaced (tests/ufm_oracles.py) at d = 20, without forming that basis."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch

import nclab.manifolds
import nclab.ufm.diagnostics
import nclab.ufm.problems
from nclab.ufm.problems import CEProblem, MSEProblem, NormalizedProblem, SphereProblem, make_problem
from nclab.ufm.diagnostics import (
    OrbitProjector,
    check_gradient,
    check_hessian,
    hessian_extreme_eigs,
    hessian_spectrum,
    taylor_slope,
)
from ufm_oracles import explicit_orbit_basis


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see conftest

PROBLEMS = [
    CEProblem(K=4, n=3, d=4, lw=5e-3, lh=1e-2),
    CEProblem(K=5, n=2, d=3, lw=1e-2, lh=1e-2, bias=False),
    CEProblem(K=3, n=None, d=2, lw=1e-2, lh=1e-2, lb=0.1, class_sizes=[1, 4, 2]),
    MSEProblem(K=4, n=3, d=4, lw=5e-3, lh=1e-2),
    MSEProblem(K=3, n=2, d=2, lw=5e-3, lh=1e-2, lb=0.3),
    MSEProblem(K=3, n=2, d=3, lw=5e-3, lh=1e-2, bias=False),
    NormalizedProblem(4, 3, 3, 2.0),
    NormalizedProblem(3, 2, 5, 8.0),
    SphereProblem(6, 3, 3.0),
    SphereProblem(4, 4, 0.5),
]


@pytest.mark.parametrize("problem", PROBLEMS, ids=repr)
def test_taylor_slopes_and_tangency(problem):
    for seed in (0, 1):
        cg = check_gradient(problem, seed=seed)
        assert cg["slope"] == pytest.approx(2.0, abs=0.05)
        assert cg["tangent_error"] < 1e-13
        ch = check_hessian(problem, seed=seed)
        assert ch["slope"] == pytest.approx(3.0, abs=0.1)
        assert ch["symmetry_error"] < 1e-13
        assert ch["tangent_error"] < 1e-13
        assert ch["linearity_error"] < 1e-13


class _WrongGradient(CEProblem):
    def _egrad(self, x, state):
        g = super()._egrad(x, state)
        return (1.01 * g[0],) + g[1:]


class _WrongHessian(NormalizedProblem):
    def _ehess(self, x, state, u):
        h = super()._ehess(x, state, u)
        return (h[0], 1.05 * h[1])


def test_checks_detect_wrong_derivatives():
    bad_g = _WrongGradient(K=3, n=2, d=3, lw=1e-2, lh=1e-2)
    assert check_gradient(bad_g)["slope"] == pytest.approx(1.0, abs=0.1)
    bad_h = _WrongHessian(3, 2, 3, 2.0)
    assert check_gradient(bad_h)["slope"] == pytest.approx(2.0, abs=0.05)  # gradient still right
    assert check_hessian(bad_h)["slope"] == pytest.approx(2.0, abs=0.1)


def test_taylor_slope_fit_on_synthetic_remainders():
    t = np.logspace(-8, 0, 49)
    slope, lo, hi = taylor_slope(t, 3 * t**2 + 1e-17, floor=1e-13)
    assert slope == pytest.approx(2.0, abs=1e-3) and lo > 1e-7
    # leading term cancelled by the next one further out: the straight window before the dip
    e = np.abs(0.5 * t**3 - 2.0 * t**4) + 1e-17
    assert taylor_slope(t, e, floor=1e-14)[0] == pytest.approx(3.0, abs=0.05)
    assert math.isnan(taylor_slope(t, np.full_like(t, 1e-20), floor=1e-13)[0])


def test_check_at_given_point_and_arrays():
    p = make_problem("mse")
    x = p.optimal_point(seed=0)
    cg = check_gradient(p, x=x)
    assert cg["grad_norm"] < 1e-12 and len(cg["t"]) == len(cg["errors"])
    assert cg["slope"] == pytest.approx(2.0, abs=0.05)  # at a critical point the remainder is O(t^2)
    assert check_hessian(p, x=x)["slope"] == pytest.approx(3.0, abs=0.1)


@pytest.mark.parametrize(
    "problem",
    [
        CEProblem(K=4, n=6, d=5, lw=5e-3, lh=1e-2),
        MSEProblem(K=3, n=8, d=4, lw=5e-3, lh=1e-2, lb=0.1),
        NormalizedProblem(4, 5, 4, 3.0),
        SphereProblem(12, 4, 2.0),
    ],
    ids=repr,
)
@pytest.mark.parametrize("deflate", [False, True])
def test_lanczos_matches_dense_spectrum(problem, deflate):
    x = problem.random_start(3)
    spec = hessian_spectrum(problem, x, deflate=deflate)
    lo = hessian_extreme_eigs(problem, x, k=3, which="SA", deflate=deflate, method="lanczos")
    hi = hessian_extreme_eigs(problem, x, k=2, which="LA", deflate=deflate, method="lanczos")
    scale = max(1.0, float(np.abs(spec).max()))
    np.testing.assert_allclose(lo, spec[:3], rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(hi, spec[-2:], rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(hessian_extreme_eigs(problem, x, k=3, deflate=deflate), spec[:3], rtol=0, atol=1e-12 * scale)
    # the tangent space has dimension manifold.dim (minus the deflated orbit)
    assert spec.size <= problem.manifold.dim
    if not deflate:
        assert spec.size == problem.manifold.dim


def test_zero_point_eigenvalue_lanczos_equals_closed_form():
    """A problem above the dense threshold, so 'auto' runs Lanczos."""
    p = CEProblem(K=5, n=30, d=6, lw=1e-3, lh=2e-3)
    assert p.manifold.ambient_dim > 600
    x = p.zero_critical_point()
    sigma = 1 / (p.K * math.sqrt(p.n))
    ref = (p.lw + p.lh) / 2 - math.sqrt(((p.lw - p.lh) / 2) ** 2 + sigma**2)
    ev = hessian_extreme_eigs(p, x, k=1, deflate=True)
    assert ev[0] == pytest.approx(ref, abs=1e-10) and ev[0] < 0


@pytest.mark.parametrize(
    "problem,extra",
    [
        (CEProblem(K=3, n=2, d=5, lw=5e-3, lh=1e-2), 1),  # + the flat shift of a free bias
        (CEProblem(K=3, n=2, d=4, lw=5e-3, lh=1e-2, lb=0.1), 0),
        (MSEProblem(K=3, n=2, d=4, lw=5e-3, lh=1e-2, bias=False), 0),
        (NormalizedProblem(3, 2, 4, 3.0), 0),
        (SphereProblem(3, 4, 2.0), 0),
    ],
    ids=lambda v: repr(v) if not isinstance(v, int) else str(v),
)
def test_deflation_removes_exactly_the_symmetry_orbit_at_a_minimiser(problem, extra):
    """At a global minimiser the zero eigenvalues are the O(d) orbit (dimension
    d(d-1)/2 - (d-r)(d-r-1)/2 for a configuration of rank r) plus, for CE with a free bias, the
    shift b -> b + t 1.  Without deflation the smallest eigenvalue is 0 (a minimum that a naive
    test could call degenerate or, with rounding, a saddle); with deflation it is positive."""
    x = problem.optimal_point(seed=1)
    d = problem.d
    r = int(torch.linalg.matrix_rank(torch.cat([x[0], x[1]]) if len(x) > 1 else x[0]))
    orbit = d * (d - 1) // 2 - (d - r) * (d - r - 1) // 2
    full = hessian_spectrum(problem, x)
    defl = hessian_spectrum(problem, x, deflate=True)
    tol = 1e-10 * max(1.0, float(np.abs(full).max()))
    assert int(np.sum(np.abs(full) < tol)) == orbit + extra
    assert full.size - defl.size == orbit + extra
    assert defl[0] > 1e3 * tol
    np.testing.assert_allclose(defl, full[np.abs(full) >= tol], rtol=0, atol=tol)
    assert hessian_extreme_eigs(problem, x, deflate=True)[0] == pytest.approx(defl[0], abs=tol)


def test_hessian_extreme_eigs_bad_arguments():
    p = make_problem("ce", K=3, n=2, d=3)
    x = p.random_start(0)
    with pytest.raises(ValueError, match="which"):
        hessian_extreme_eigs(p, x, which="LM")
    with pytest.raises(ValueError, match="method"):
        hessian_extreme_eigs(p, x, method="arpack")
    with pytest.raises(ValueError, match="k"):
        hessian_extreme_eigs(p, x, k=0)
    with pytest.raises(ValueError, match="k="):
        hessian_extreme_eigs(p, x, k=10_000)


@pytest.mark.parametrize("module", [nclab.ufm.problems, nclab.ufm.diagnostics], ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0



# --------------------------------------------------------------------------------------------
# the matrix-free orbit projection against the explicit basis it replaced
# --------------------------------------------------------------------------------------------


def _oracle_deflated_spectrum(problem, x):
    """The old method: the d(d-1)/2 orbit directions (and the problem's flat directions) formed
    explicitly and orthonormalised by an SVD; P = P_T - B B^T; the Hessian in an orthonormal basis
    of range(P), formed densely."""
    M = problem.manifold
    B = explicit_orbit_basis(problem, x, problem.rotating_factors, problem.flat_directions(x))
    n = M.ambient_dim

    def P(v):
        w = M.flatten(M.proj(x, M.unflatten(v)))
        return w - B @ (B.T @ w) if B is not None else w

    eye = torch.eye(n, dtype=torch.float64)
    Pm = torch.stack([P(eye[:, j]) for j in range(n)], dim=1)
    evals, evecs = torch.linalg.eigh(0.5 * (Pm + Pm.T))
    T = evecs[:, evals > 0.5]
    HT = torch.stack([P(M.flatten(problem.rhess(x, M.unflatten(P(T[:, j]))))) for j in range(T.shape[1])], dim=1)
    Hr = T.T @ HT
    return np.linalg.eigvalsh((0.5 * (Hr + Hr.T)).numpy()), B


D20 = [
    CEProblem(K=4, n=5, d=20, lw=5e-3, lh=5e-3),  # free bias: the shift is deflated too
    CEProblem(K=4, n=5, d=20, lw=5e-3, lh=5e-3, lb=0.1),
    MSEProblem(K=4, n=5, d=20, lw=5e-3, lh=5e-3, bias=False),
    NormalizedProblem(4, 5, 20, 3.0),
    SphereProblem(6, 20, 2.0),
]


@pytest.mark.parametrize("problem", D20, ids=repr)
def test_deflated_extremes_at_d20_minimiser_equal_the_explicit_basis_method(problem, monkeypatch):
    x = problem.optimal_point(seed=3)
    ref, B = _oracle_deflated_spectrum(problem, x)

    def forbidden(*a, **k):  # the new deflation must not form the d(d-1)/2 directions
        raise AssertionError("symmetry_directions called")

    monkeypatch.setattr(problem, "symmetry_directions", forbidden)
    scale = float(np.abs(ref).max())
    dense_lo = hessian_extreme_eigs(problem, x, k=3, which="SA", deflate=True, method="dense")
    dense_hi = hessian_extreme_eigs(problem, x, k=2, which="LA", deflate=True, method="dense")
    lz_lo = hessian_extreme_eigs(problem, x, k=3, which="SA", deflate=True, method="lanczos")
    lz_hi = hessian_extreme_eigs(problem, x, k=2, which="LA", deflate=True, method="lanczos")
    for got, want in ((dense_lo, ref[:3]), (lz_lo, ref[:3]), (dense_hi, ref[-2:]), (lz_hi, ref[-2:])):
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-8 * scale)
    assert ref[0] > 0  # a minimum, once the orbit is gone
    # the same deflated dimension: range(P) loses exactly the explicit basis' rank
    assert hessian_spectrum(problem, x, deflate=True).size == ref.size
    assert OrbitProjector(problem, x).dim == B.shape[1]


@pytest.mark.parametrize("problem", D20[:2] + D20[3:], ids=repr)
@pytest.mark.parametrize("where", ["minimiser", "random"])
def test_orbit_projection_is_the_orthogonal_projector_onto_the_explicit_span(problem, where):
    x = problem.optimal_point(seed=3) if where == "minimiser" else problem.random_start(1)
    M = problem.manifold
    B = explicit_orbit_basis(problem, x, problem.rotating_factors, problem.flat_directions(x))
    P = OrbitProjector(problem, x)
    assert P.dim == B.shape[1]
    gen = torch.Generator().manual_seed(9)
    for _ in range(3):
        v = torch.randn(M.ambient_dim, generator=gen, dtype=torch.float64)
        pv = P.apply(v)
        torch.testing.assert_close(pv, B @ (B.T @ v), rtol=0, atol=1e-10 * float(v.norm()))
        torch.testing.assert_close(P.apply(pv), pv, rtol=0, atol=1e-10 * float(v.norm()))  # idempotent
    # the orbit of a configuration of rank r: d(d-1)/2 - (d-r)(d-r-1)/2 (all of it when r = d)
    d = problem.d
    r = int(torch.linalg.matrix_rank(torch.cat([x[i] for i in problem.rotating_factors])))
    assert P.rank == d * (d - 1) // 2 - (d - r) * (d - r - 1) // 2
    assert (r == d) is (where == "random" and problem.N + problem.K >= d)


def test_orbit_projection_at_d100_needs_no_cubic_memory():
    """d = 100, N + K = 1010 (about 1e5 variables): the explicit basis would hold 4950 vectors of
    101,000 numbers (4 GB); the projection holds d x d matrices.  The peak resident memory of the
    process (ru_maxrss) grows by far less than the basis would take."""
    import resource

    p = CEProblem(K=10, n=100, d=100, lw=5e-3, lh=5e-3)
    x = p.random_start(0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    P = OrbitProjector(p, x)
    M = p.manifold
    v = torch.randn(M.ambient_dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pv = P.apply(v)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert P.rank == 100 * 99 // 2 and P.dim == P.rank + 1  # plus the shift of the free bias
    assert grown_mb < 200
    torch.testing.assert_close(P.apply(pv), pv, rtol=0, atol=1e-10 * float(v.norm()))
    # the residual is orthogonal to every orbit direction: S - S^T of the residual vanishes
    r = M.unflatten(v - pv)
    S = x[0].T @ r[0] + x[1].T @ r[1]
    assert float((S - S.T).abs().max()) < 1e-9 * float(v.norm()) * float(M.flatten(x).norm())
    assert abs(float(r[2].sum())) < 1e-10 * float(v.norm())


def test_lanczos_that_does_not_converge_falls_back_to_the_dense_hessian(monkeypatch):
    """ARPACK failing twice (seen at K = 10 on a tight cluster near zero) must not end a
    classification: the result is the dense method's, computed independently with method="dense"."""
    import scipy.sparse.linalg as sla

    from nclab.ufm.diagnostics import hessian_extreme_eigs
    from nclab.ufm.problems import make_problem

    p = make_problem("ce", K=3, n=2, d=4, lw=5e-3, lh=5e-3)
    x = p.random_start(1)
    expected = hessian_extreme_eigs(p, x, k=2, method="dense")
    calls = []

    def failing(*args, **kw):
        calls.append(kw.get("ncv"))
        raise sla.ArpackNoConvergence("no convergence (simulated)", np.zeros(0), np.zeros((0, 0)))

    monkeypatch.setattr(sla, "eigsh", failing)
    got = hessian_extreme_eigs(p, x, k=2, method="lanczos")
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert len(calls) == 2 and calls[0] is None and calls[1] > 20  # retried once, with a wider Krylov space
