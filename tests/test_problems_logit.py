"""The penalised CE/MSE machinery (nclab.ufm.problems.logit): the critical point W = H = 0 and the
smallest Hessian eigenvalue there, against REFERENCE.md's closed form typed in here and the
dense spectrum of the Hessian."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nclab.ufm.diagnostics import hessian_spectrum
from nclab.ufm.problems import CEProblem, MSEProblem, zero_point_min_eig
from ufm_oracles import rgrad_norm

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see conftest


def ref_zero_min_eig(K, n, lw, lh):
    """REFERENCE.md: (lw+lh)/2 - sqrt(((lw-lh)/2)^2 + sigma^2), sigma = 1/(K sqrt(n))."""
    sigma = 1 / (K * math.sqrt(n))
    return (lw + lh) / 2 - math.sqrt(((lw - lh) / 2) ** 2 + sigma**2)


ZERO_CASES = [
    (CEProblem, dict(K=3, n=2, d=3, lw=5e-3, lh=2e-2)),
    (CEProblem, dict(K=4, n=3, d=2, lw=1e-2, lh=1e-2, bias=False)),
    (CEProblem, dict(K=3, n=2, d=3, lw=1e-2, lh=3e-2, lb=0.2)),
    (MSEProblem, dict(K=3, n=2, d=3, lw=5e-3, lh=2e-2)),
    (MSEProblem, dict(K=4, n=2, d=3, lw=5e-3, lh=2e-2, bias=False)),
    (MSEProblem, dict(K=3, n=3, d=2, lw=5e-3, lh=2e-2, lb=0.4)),
]


@pytest.mark.parametrize("cls,opts", ZERO_CASES, ids=lambda v: getattr(v, "__name__", str(v)))
@pytest.mark.parametrize("big", [False, True], ids=["beta<1/K", "beta>1/K"])
def test_zero_point_is_critical_and_min_eig_matches_reference(cls, opts, big):
    opts = dict(opts)
    if big:  # scale the penalties so that beta > 1/K
        opts["lw"], opts["lh"] = 30 * opts["lw"], 30 * opts["lh"]
    p = cls(**opts)
    beta = math.sqrt(p.n * p.lw * p.lh)
    assert (beta < 1 / p.K) == (not big)
    x = p.zero_critical_point()
    assert rgrad_norm(p, x) < 1e-15
    spec = hessian_spectrum(p, x)  # the whole Hessian, formed densely
    ref = ref_zero_min_eig(p.K, p.n, p.lw, p.lh)
    assert zero_point_min_eig(p.K, p.n, p.lw, p.lh) == pytest.approx(ref, abs=1e-15)
    assert p.zero_point_min_eig() == pytest.approx(spec[0], abs=1e-12)
    # REFERENCE's value is the (W, H) block's smallest eigenvalue: an eigenvalue of the Hessian
    assert np.min(np.abs(spec - ref)) < 1e-12
    if beta < 1 / p.K:
        assert spec[0] == pytest.approx(ref, abs=1e-12) and spec[0] < 0  # strict saddle
    else:
        assert spec[0] >= -1e-14 and ref > 0
    if not p.has_bias:  # then the Hessian is the (W, H) block alone
        assert spec[0] == pytest.approx(ref, abs=1e-12)
    # deflation only removes flat directions the problem declares (the CE shift); else no change
    if not p.flat_directions(x):
        assert p.zero_point_min_eig(deflate=True) == p.zero_point_min_eig()


def test_zero_point_min_eig_function_validates():
    with pytest.raises(ValueError, match="K must be >= 2"):
        zero_point_min_eig(1, 2, 1e-3, 1e-3)
    with pytest.raises(ValueError, match="lw must be >= 0"):
        zero_point_min_eig(3, 2, -1e-3, 1e-3)


@pytest.mark.parametrize("loss,opts", [("normalized", dict(K=3, n=4, d=5, tau=2.5)),
                                       ("ce", dict(K=3, n=4, d=5, lw=1e-2, lh=2e-2)),
                                       ("ce", dict(K=3, n=4, d=5, lw=1e-2, lh=2e-2, bias=False)),
                                       ("mse", dict(K=3, n=4, d=5, lw=1e-2, lh=2e-2))])
def test_logits_and_gradient_products_against_plain_matmuls(loss, opts):
    """The evaluation's products (class-major logits, BLAS alpha in the gradient products,
    written into given tensors or not) against plain float64 matmuls: Z = s H W^T + 1 b^T and
    grad_W = s G^T H + lw W, grad_H = s G W + lh H, grad_b = G^T 1 + lb b."""
    import torch

    from nclab.ufm.problems import make_problem

    p = make_problem(loss, **opts)
    x = p.random_start(3)
    W, H = x[0], x[1]
    b = x[2] if p.has_bias else None
    s = p._scale
    want_Z = s * (H @ W.T) + (b if b is not None else 0.0)
    Z = p._logits(W, H, b)
    assert Z.shape == (p.N, p.K)
    torch.testing.assert_close(Z, want_Z, rtol=1e-14, atol=1e-14)
    state = p._compute(x)
    G = state["G"]
    want = [s * (G.T @ H) + p.lw * W, s * (G @ W) + p.lh * H]
    if p.has_bias:
        want.append(G.sum(0) + p.lb * b)
    out = tuple(torch.full_like(t, float("nan")) for t in x)  # must be overwritten, never read
    for got in (p._egrad(x, state), p._egrad(x, state, out)):
        for a, w in zip(got, want):
            torch.testing.assert_close(a, w, rtol=1e-13, atol=1e-15)
    assert all(a is o for a, o in zip(p._egrad(x, state, out), out))
