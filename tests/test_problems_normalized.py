"""The normalized UFM (nclab.ufm.problems.normalized): REFERENCE.md's closed form typed in here,
the theorem's structure (W a simplex ETF, h_{k,i} = w_k) and the structure checks."""

from __future__ import annotations

import math

import pytest
import torch

from nclab.geometry import simplex_gram
from nclab.ufm.problems import NormalizedProblem
from nclab.ufm.run import closed_form_checks
from ufm_oracles import rgrad_norm

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see conftest


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


def test_normalized_structure_matches_the_formulas():
    p = NormalizedProblem(4, 3, 5, 3.0)
    x = p.optimal_point(seed=1)
    assert set(p.structure(x)) == {"feature_error", "etf_W"}
    assert all(v < 1e-12 for v in p.structure(x).values())
    y = p.random_start(0)
    s = p.structure(y)
    assert s == closed_form_checks(p, y)
    W, H = y
    G = W @ W.T
    C = (torch.eye(4, dtype=W.dtype) - 0.25) / math.sqrt(3)
    assert s["feature_error"] == float((H - W[p.labels]).abs().max())
    assert s["etf_W"] == pytest.approx(float((G / G.norm() - C).norm()), rel=1e-10)
    q = NormalizedProblem(5, 2, 3, 1.0)  # d < K-1: no closed form
    assert q.structure(q.random_start(0)) == {}
