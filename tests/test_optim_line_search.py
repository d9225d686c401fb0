"""Line searches as objects (nclab.ufm.optim.line_search): the conditions they promise, checked
on the tests' own problems where phi(t) = f(R_x(t d)) and its derivative are known another way.

Oracles: the Armijo and strong-Wolfe inequalities themselves, evaluated with the problem's own
cost and gradient at the returned point (a fresh evaluation, not the search's bookkeeping); on the
quadratic, phi'(t) = <grad f(x + t d), d> exactly."""

from __future__ import annotations

import math

import pytest
import torch

from nclab.ufm.optim.line_search import Armijo, StrongWolfe, _first_step, line_search_from_options
from nclab.ufm.optim.space import _Point, _Space
from optim_problems import Quadratic, Rayleigh

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see conftest


def _setup(problem, seed):
    sp = _Space(problem, problem.random_start(seed))
    p = sp.evaluate(sp.x0)
    d = torch.neg(p.g)
    return sp, p, d, -p.gn * p.gn


def _fresh(problem, sp, q):
    """Cost and Riemannian gradient at q's point, recomputed from the problem's tuple."""
    f = problem._f(q.xt)
    eg = problem._g(q.xt)
    g = sp.cat(tuple(problem.manifold.egrad2rgrad(q.xt, eg)))
    return f, g


PROBLEMS = [Quadratic, Rayleigh]


@pytest.mark.parametrize("make", PROBLEMS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("t0", [1e-3, 1.0, 50.0])
def test_armijo_returns_sufficient_decrease_with_the_gradient_filled_in(make, t0):
    problem = make()
    sp, p, d, slope = _setup(problem, 1)
    q, t, ok = Armijo(c1=1e-4).search(sp, p, d, slope, t0)
    assert ok and 0 < t <= t0
    assert math.log2(t0 / t) == round(math.log2(t0 / t))  # backtracking by halves
    f, g = _fresh(problem, sp, q)
    assert f == q.f and f <= p.f + 1e-4 * t * slope
    assert q.g is not None and torch.allclose(q.g, g, rtol=1e-13, atol=1e-15)
    if t < t0:  # the trial before (twice the step) did not decrease enough
        r = sp.retr(p, d, 2 * t)
        assert sp.cost(r) > p.f + 1e-4 * 2 * t * slope


@pytest.mark.parametrize("make", PROBLEMS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("t0", [1e-3, 1.0, 50.0])
def test_strong_wolfe_returns_a_point_meeting_both_conditions(make, t0):
    problem = make()
    sp, p, d, slope = _setup(problem, 2)
    c1, c2 = 1e-4, 0.5
    q, t, ok = StrongWolfe(c1, c2).search(sp, p, d, slope, t0)
    assert ok and t > 0
    f, g = _fresh(problem, sp, q)
    assert f == q.f and f <= p.f + c1 * t * slope  # sufficient decrease
    assert abs(float(g @ d)) <= c2 * abs(slope) * (1 + 1e-12)  # strong curvature condition
    assert torch.allclose(q.g, g, rtol=1e-13, atol=1e-15)


def test_strong_wolfe_on_the_quadratic_matches_the_exact_phi():
    """On f = 1/2 v^T A v - c^T v along d, phi'(t) = <A(x + t d) - c, d>, a line: the exact minimiser
    t* = -phi'(0) / <d, A d> meets the conditions with any c2, and the search lands near it for a
    small c2."""
    problem = Quadratic()
    sp, p, d, slope = _setup(problem, 3)
    t_star = -slope / float(d @ (problem.A @ d))
    q, t, ok = StrongWolfe(1e-4, 1e-3).search(sp, p, d, slope, 1.0)
    assert ok and abs(t - t_star) <= 1e-3 * t_star


@pytest.mark.parametrize("search", [Armijo(1e-4), StrongWolfe(1e-4, 0.9)], ids=repr)
def test_a_search_without_decrease_returns_the_start_and_fails(search):
    """Claiming a descent slope along the ascent direction +grad f: no trial decreases f."""
    problem = Quadratic()
    sp, p, d, slope = _setup(problem, 4)
    q, t, ok = search.search(sp, p, -d, slope, 1.0)
    assert (q, t, ok) == (p, 0.0, False)


def test_first_step_has_a_scale_free_length():
    """The first step's length t |grad f| = min(1, |f| / |grad f|) is the same for c f, any c > 0."""
    x = torch.zeros(3, dtype=torch.float64)
    lengths = []
    for c in (1.0, 1e-30, 1e30):
        p = _Point(x, (x,))
        p.f, p.gn = 2.0 * c, 8.0 * c
        lengths.append(_first_step(p) * p.gn)
    assert lengths == pytest.approx([0.25] * 3, rel=1e-14)
    p.f, p.gn = 0.0, 4.0
    assert _first_step(p) * p.gn == 1.0  # f = 0: a unit move
    p.gn = 0.0
    assert _first_step(p) == 1.0


@pytest.mark.parametrize(
    "opts,match",
    [
        (dict(line_search="exact", c1=1e-4, c2=0.9), "line_search must be one of 'wolfe', 'armijo'"),
        (dict(line_search="wolfe", c1=0.9, c2=0.1), "c1"),
        (dict(line_search="armijo", c1=0.0, c2=0.9), "c1"),
        (dict(line_search="wolfe", c1="0.1", c2=0.9), "c1 must be a real number"),
    ],
)
def test_line_search_options_are_validated(opts, match):
    with pytest.raises(ValueError, match=match):
        line_search_from_options(opts)


def test_line_search_options_build_the_named_search():
    s = line_search_from_options(dict(line_search="wolfe", c1=1e-3, c2=0.5))
    assert isinstance(s, StrongWolfe) and (s.c1, s.c2) == (1e-3, 0.5)
    s = line_search_from_options(dict(line_search="armijo", c1=1e-3, c2=0.5))
    assert isinstance(s, Armijo) and s.c1 == 1e-3
