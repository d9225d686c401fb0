"""Points of the landscape (nclab.ufm.landscape.points) and the escape from saddles
(nclab.ufm.landscape.escape): embedded lower-dimensional minimisers are critical points of the full
problem and strict saddles (Zhu et al. 2021, Gu & Shen 2024, Yaras et al. 2022), the certificate
fails there and the explicit direction's curvature is the derived one, the escape reaches the
closed form; the critical-point finder reaches critical points of any kind from random starts."""

from __future__ import annotations

import math

import pytest
import torch

from nclab.ufm.diagnostics import hessian_extreme_eigs
from nclab.ufm.landscape import (
    KINDS,
    classify,
    escape,
    find_critical_point,
    lowdim_point,
    origin,
    random_point,
    relative_grad_norm,
)
from nclab.ufm.problems import CEProblem, MSEProblem, NormalizedProblem, SphereProblem, make_problem

pytestmark = pytest.mark.usefixtures("one_thread")


def _rel_grad(problem, x) -> float:
    """The relative gradient computed here, from the Euclidean gradient and the manifold's projection."""
    g = problem.manifold.proj(x, problem.egrad(x))
    gn = math.sqrt(sum(float((t * t).sum()) for t in g))
    xn = math.sqrt(sum(float((t * t).sum()) for t in x))
    return gn * max(xn, 1.0) / abs(problem.cost(x))


CASES = [(loss, K, d) for loss in ("ce", "mse", "normalized") for K in (4, 5) for d in (K, 2 * K)]


@pytest.mark.parametrize("loss,K,d", CASES)
def test_lowdim_embeddings_are_strict_saddles_and_escape_to_the_optimum(loss, K, d):
    opts = dict(lw=5e-3, lh=1e-2) if loss != "normalized" else dict(tau=4.0)
    p = make_problem(loss, K=K, n=2, d=d, **opts)
    for d_low in range(1, K - 1):
        x = lowdim_point(p, d_low, seed=d_low)
        rot = p.rotating_factors
        assert all(float(x[i][:, d_low:].abs().max()) == 0.0 for i in rot)  # zero padding
        if loss == "normalized":
            assert all(torch.allclose(t.norm(dim=1), torch.ones(t.shape[0], dtype=t.dtype)) for t in x)
        assert _rel_grad(p, x) < 1e-10
        assert relative_grad_norm(p, x) == pytest.approx(_rel_grad(p, x), rel=1e-12, abs=1e-300)
        c = classify(p, x)
        assert c.kind == "strict_saddle", (d_low, c.reason)
        assert c.decrease["confirmed"]
        if loss in ("ce", "mse"):
            assert c.certificate["applicable"] and not c.certificate["holds"]
            dc = c.direction_curvature
            assert dc["measured_curvature"] == pytest.approx(dc["predicted_curvature"], rel=1e-8)
            lam = hessian_extreme_eigs(p, x, k=1, deflate=True, method="lanczos")[0]
            assert lam == pytest.approx(c.lambda_min, abs=1e-8)
            assert dc["measured_curvature"] >= lam - 1e-10
        else:
            assert c.certificate is None and c.relative_gap > 1e-3
        x_new, r = escape(p, x, c)
        assert r["status"] == "optimal", r["warnings"]
        assert r["escape"]["history"][0]["direction"] == "eigenvector"
        assert r["escape"]["history"][0]["start_objective"] < c.objective
        assert classify(p, x_new).kind == "global_minimiser"


def test_escape_from_the_origin_and_from_a_minimiser():
    p = CEProblem(K=4, n=3, d=4, lw=5e-3, lh=5e-3)
    x, r = escape(p, origin(p))
    assert r["status"] == "optimal" and r["escape"]["rounds"] >= 1
    h = r["escape"]["history"][0]
    assert h["kind"] == "strict_saddle" and h["predicted_decrease"] < 0
    # the default step predicts a decrease of 1e-3 |f| (the module's rule)
    assert h["predicted_decrease"] == pytest.approx(-1e-3 * math.log(4), rel=1e-6)
    x, r = escape(p, p.optimal_point(seed=0))
    assert r["escape"]["history"][0]["step"] is None and r["status"] == "optimal"
    with pytest.raises(ValueError, match="step"):
        escape(p, origin(p), step=-1.0)


def test_origin_and_lowdim_point_errors():
    with pytest.raises(ValueError, match="no origin"):
        origin(NormalizedProblem(3, 2, 3, 2.0))
    with pytest.raises(ValueError, match="no origin"):
        origin(SphereProblem(4, 3, 2.0))
    with pytest.raises(ValueError, match="d_low"):
        lowdim_point(CEProblem(K=3, n=2, d=3, lw=1e-2, lh=1e-2), 4)


def test_lowdim_point_of_the_sphere_problem_lies_on_a_great_subsphere():
    p = SphereProblem(6, 5, 2.0)
    x = lowdim_point(p, 2)
    assert float(x[0][:, 2:].abs().max()) == 0.0 and _rel_grad(p, x) < 1e-10
    assert classify(p, x).kind == "strict_saddle"


PROBLEMS = [
    CEProblem(K=4, n=3, d=4, lw=5e-3, lh=1e-2),
    MSEProblem(K=4, n=3, d=4, lw=5e-3, lh=1e-2),
    NormalizedProblem(4, 3, 4, 5.0),
    SphereProblem(6, 3, 2.0),
]


@pytest.mark.parametrize("problem", PROBLEMS, ids=repr)
def test_find_critical_point_from_random_starts(problem):
    kinds = []
    for seed in (0, 1):
        x, info = find_critical_point(problem, random_point(problem, seed), gtol=1e-10)
        assert info["converged"], info
        assert _rel_grad(problem, x) <= 1e-10 * (1 + 1e-6)
        c = classify(problem, x)
        assert c.kind in KINDS and c.kind != "not_critical", c.reason
        kinds.append(c.kind)
    assert set(kinds) <= {"global_minimiser", "strict_saddle", "inconclusive"}


def test_find_critical_point_reports_a_cap():
    p = NormalizedProblem(4, 3, 4, 5.0)
    x, info = find_critical_point(p, random_point(p, 0), max_iter=2)
    assert not info["converged"] and info["stop_reason"] == "max_iter" and info["iterations"] == 2
