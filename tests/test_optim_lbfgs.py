"""The compact-form L-BFGS memory of nclab.ufm.optim.lbfgs against the textbook two-loop
recursion (Nocedal & Wright 2006, Algorithm 7.4)."""

from __future__ import annotations

import pytest
import torch

from nclab.ufm.optim.lbfgs import _LBFGSMemory

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see conftest


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
    mem = _LBFGSMemory(m, offsets, torch.float64, "cpu", scaling)
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
        mem.s_row(slot).copy_(s)
        mem.y_row(slot).copy_(y)
        mem.commit(slot, *mem.pair_products(slot))
        pairs.append((s, y))
        x, grad = x + s, new_grad
        assert mem.direction(grad, out)
        assert torch.allclose(out, _two_loop(grad, pairs[-m:], blocks), rtol=1e-10, atol=1e-12)
    # the transported (manifold) path recomputes the products from scratch: same direction
    mem.refresh()
    assert mem.direction(grad, out)
    assert torch.allclose(out, _two_loop(grad, pairs[-m:], blocks), rtol=1e-10, atol=1e-12)


def _compact_reference(g, pairs, blocks):
    """-H g with H the compact form of Byrd, Nocedal & Schnabel (1994), Theorem 2.2, formed as a
    dense float64 matrix: H = H0 + [S  H0 Y] [[R^-T (D + Y^T H0 Y) R^-1, -R^-T], [-R^-1, 0]] [S^T; Y^T H0],
    H0 = diag(gamma_f I) over the blocks (gamma_f from the newest pair, the whole-vector value where a
    block's own s^T y or y^T y is not positive)."""
    S = torch.stack([s.double() for s, _ in pairs], 1)
    Y = torch.stack([y.double() for _, y in pairs], 1)
    s, y = S[:, -1], Y[:, -1]
    h0 = torch.empty(S.shape[0], dtype=torch.float64)
    for a, b in blocks:
        sy, yy = float(s[a:b] @ y[a:b]), float(y[a:b] @ y[a:b])
        h0[a:b] = sy / yy if sy > 0 and yy > 0 else float(s @ y) / float(y @ y)
    H0 = torch.diag(h0)
    SY = S.T @ Y
    Rinv = torch.linalg.inv(torch.triu(SY))
    k = len(pairs)
    M = torch.zeros(2 * k, 2 * k, dtype=torch.float64)
    M[:k, :k] = Rinv.T @ (torch.diag(torch.diag(SY)) + Y.T @ H0 @ Y) @ Rinv
    M[:k, k:] = -Rinv.T
    M[k:, :k] = -Rinv
    left = torch.cat([S, H0 @ Y], 1)
    H = H0 + left @ M @ left.T
    return -(H @ g.double())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_memory_layout_gives_the_dense_compact_formula(dtype):
    """The manifold path of the memory (pairs written as adjacent rows, inner products computed
    next to Z g, products over the rows in use only, per-block scaling) against the compact
    formula as a dense float64 matrix: while the memory fills (the rows not yet in use hold NaN,
    which would poison the direction if they were read), once it is full, after a pair with
    negative curvature is refused (its slot is then refilled out of slot order) and after the ring
    wraps around; and after ``refresh`` (the full-transport path), half full and full."""
    g = torch.Generator().manual_seed(1)
    D, m, offsets = 11, 4, [0, 3, 11]
    blocks = [(0, 3), (3, 11)]
    A = torch.diag(torch.logspace(-1, 1, D, dtype=torch.float64))
    mem = _LBFGSMemory(m, offsets, dtype, "cpu", "block")
    mem.Z.fill_(float("nan"))
    out = torch.empty(D, dtype=dtype)
    kept = {}  # slot -> (s, y) as stored
    for step in range(10):
        s = torch.randn(D, generator=g, dtype=torch.float64)
        y = A @ s + 0.05 * torch.randn(D, generator=g, dtype=torch.float64)
        if step == 4:
            y = -y  # negative curvature: refused by the next direction
        slot = mem.next_slot()
        mem.s_row(slot).copy_(s)
        mem.y_row(slot).copy_(y)
        mem.commit_direct(slot, 0.0)
        kept.pop(slot, None)  # the slot's previous pair is overwritten
        grad = torch.randn(D, generator=g, dtype=torch.float64)
        assert mem.direction(grad.to(dtype), out)
        if step == 4:
            assert slot == 0 and mem.order == [1, 2, 3]  # the oldest pair's slot, now empty
        else:
            kept[slot] = (mem.s_row(slot).clone(), mem.y_row(slot).clone())
        if step == 5:
            assert mem.order == [1, 2, 3, 0]
        pairs = [kept[i] for i in mem.order]
        want = _compact_reference(grad.to(dtype), pairs, blocks)
        tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-5)
        torch.testing.assert_close(out.double(), want, **tol)
        if step in (2, 7):  # the full-transport path recomputes every product: same direction
            mem.refresh()
            assert mem.direction(grad.to(dtype), out)
            torch.testing.assert_close(out.double(), want, **tol)


class _Isotropic:
    """f(x) = a/2 |x - c|^2 on R^4: steepest descent with t = 1/a lands on c in one step."""

    def __init__(self, a):
        from nclab.manifolds import Euclidean, Product

        self.a, self.manifold = a, Product(Euclidean((4,)))
        self.c = torch.arange(1.0, 5.0, dtype=torch.float64)
        self.evals = 0

    def cost_and_egrad(self, x):
        self.evals += 1
        r = x[0] - self.c
        return 0.5 * self.a * float(r @ r), (self.a * r,)

    def cost(self, x):
        return self.cost_and_egrad(x)[0]

    def egrad(self, x):
        return self.cost_and_egrad(x)[1]


def test_initial_step_is_the_first_trial_and_the_scale_is_left_in_the_log():
    from nclab.ufm.optim import lbfgs

    prob = _Isotropic(a=250.0)
    x0 = (torch.zeros(4, dtype=torch.float64),)
    x, log = lbfgs(prob, x0, initial_step=1 / 250.0, gtol_abs=1e-12, metrics_every=-1)
    assert log.n_iter == 1 and prob.evals == 2  # the start, then the exact minimiser at once
    assert torch.allclose(x[0], prob.c, rtol=0, atol=1e-12)
    default = _Isotropic(a=250.0)
    _, log_default = lbfgs(default, x0, gtol_abs=1e-12, metrics_every=-1)
    assert default.evals > 2  # the unit-length first step overshoots and is cut back
    # s^T y / y^T y of a pair on f = a/2 |x|^2 is 1/a exactly
    assert log_default.state["inverse_hessian_scale"] == pytest.approx(1 / 250.0, rel=1e-12)
    with pytest.raises(ValueError, match="initial_step"):
        lbfgs(prob, x0, initial_step=-1.0)
