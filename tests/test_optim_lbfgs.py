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
