"""Independent oracles for the UFM problem tests (test_problems_*.py).

* ``oracle_objective``: REFERENCE.md section 2 written again, batch-first, with
  torch.nn.functional (cross_entropy, mse_loss); ``oracle_grad_hvp`` differentiates it by
  torch.func (grad; jvp of grad for Hessian-vector products).
* ``lbfgs_min``: scipy's L-BFGS-B from a random start, for closed forms derived beyond REFERENCE.md.
* ``explicit_orbit_basis``: the symmetry orbit's d(d-1)/2 directions formed one by one and
  orthonormalised by an SVD (the deflation nclab used before its matrix-free projection).
"""

from __future__ import annotations

import math

import scipy.optimize
import torch
import torch.nn.functional as F
from torch.func import grad, jvp


def oracle_objective(problem):
    """REFERENCE.md section 2, batch-first (H is N x d), with torch.nn.functional."""
    loss = problem.loss
    labels = problem.labels
    if loss == "sphere":
        tau = problem.tau

        def f(X):
            return F.cross_entropy(tau * X @ X.T, torch.arange(X.shape[0]))

        return f
    if loss == "normalized":
        tau = problem.tau

        def f(W, H):
            return F.cross_entropy(tau * H @ W.T, labels)

        return f
    K, lw, lh, lb = problem.K, problem.lw, problem.lh, problem.lb

    def f(W, H, b=None):
        Z = H @ W.T if b is None else H @ W.T + b
        if loss == "ce":
            data = F.cross_entropy(Z, labels)  # mean over the N samples
        else:
            Y = F.one_hot(labels, K).to(Z.dtype)
            data = F.mse_loss(Z, Y, reduction="sum") / (2 * Z.shape[0])
        reg = lw / 2 * (W**2).sum() + lh / 2 * (H**2).sum()
        if b is not None:
            reg = reg + lb / 2 * (b**2).sum()
        return data + reg

    return f


def oracle_grad_hvp(problem, x, u):
    f = oracle_objective(problem)
    argnums = tuple(range(len(x)))
    g = grad(f, argnums=argnums)

    def gfun(*xs):
        return g(*xs)

    _, hvp = jvp(gfun, tuple(x), tuple(u))
    return f(*x), g(*x), hvp


def rel_err(a, b) -> float:
    num = math.sqrt(sum(float(((ai - bi) ** 2).sum()) for ai, bi in zip(a, b)))
    den = math.sqrt(sum(float((bi**2).sum()) for bi in b))
    return num / den


def rgrad_norm(p, x):
    return p.manifold.norm(x, p.rgrad(x))


def lbfgs_min(p, seed):
    """The value L-BFGS-B reaches on the (Euclidean) problem p from ``p.random_start(seed)``."""
    M = p.manifold

    def fg(v):
        f, g = p.cost_and_egrad(M.unflatten(torch.from_numpy(v.copy())))
        return f, M.flatten(g).numpy()

    x0 = M.flatten(p.random_start(seed)).numpy()
    res = scipy.optimize.minimize(fg, x0, jac=True, method="L-BFGS-B",
                                  options=dict(maxiter=5000, gtol=1e-12, ftol=1e-15))
    return float(res.fun)


def explicit_orbit_basis(problem, x, rotating, flat=()):
    """Orthonormal basis (columns, flattened ambient coordinates) of the span of the symmetry
    directions, formed explicitly: ``x_i A`` for every skew basis matrix A = E_ab - E_ba and every
    rotating factor i, plus the ``flat`` directions, each projected onto T_x, orthonormalised by an
    SVD with the rank cut-off max(1e-10 s_max, 1e-12 max(|x|, 1)).  None if the span is empty."""
    M = problem.manifold
    d = x[rotating[0]].shape[1]
    dirs = []
    for a in range(d):
        for c in range(a + 1, d):
            parts = []
            for i, t in enumerate(x):
                D = torch.zeros_like(t)
                if i in rotating:
                    D[:, a] = -t[:, c]
                    D[:, c] = t[:, a]
                parts.append(D)
            dirs.append(M.flatten(M.proj(x, tuple(parts))))
    dirs += [M.flatten(M.proj(x, f)) for f in flat]
    A = torch.stack(dirs, dim=1)
    U, S, _ = torch.linalg.svd(A, full_matrices=False)
    keep = S > max(1e-10 * float(S.max()), 1e-12 * max(float(M.flatten(x).norm()), 1.0))
    return U[:, keep] if bool(keep.any()) else None
