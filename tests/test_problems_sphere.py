"""n points on the sphere (nclab.ufm.problems.sphere): Lu & Steinerberger's closed form typed in
here, Jensen's lower bound, the frame statistics of the simplex ETF, and the structure checks."""

from __future__ import annotations

import math

import pytest

from nclab.ufm.problems import SphereProblem
from nclab.ufm.run import closed_form_checks
from ufm_oracles import rgrad_norm

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see conftest


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


@pytest.mark.parametrize("n_points,d", [(4, 3), (5, 6), (9, 3)])
def test_sphere_structure_is_the_frame_potential_excess_and_the_etf_distance(n_points, d):
    p = SphereProblem(n_points, d, 2.0)
    x = p.random_start(1)
    s = p.structure(x)
    assert s == closed_form_checks(p, x)
    X = x[0]
    fp = float(((X @ X.T) ** 2).sum())
    bound = max(n_points, n_points**2 / d)
    assert s["frame_potential_excess"] == pytest.approx(fp / bound - 1, rel=1e-9)
    assert ("etf_X" in s) is (d >= n_points - 1)  # only where the simplex ETF is the minimiser
    if d >= n_points - 1:
        assert s["etf_X"] > 1e-3 and p.structure(p.optimal_point(seed=0))["etf_X"] < 1e-12
