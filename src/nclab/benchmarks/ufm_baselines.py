"""Baselines of the UFM benchmark that are not nclab's solvers: pymanopt and a plain autograd RGD.

Both solve the normalized UFM (Yaras et al. 2022; REFERENCE.md section 2)

    f(W, H) = (1/N) sum_{k,i} CE(tau W h_{k,i}, k),   |w_k| = |h_{k,i}| = 1,

from the same start as nclab's solvers and report the time until the objective first reaches
``f_target`` (the benchmark passes ``f* (1 + 1e-8)``).

* :func:`pymanopt_run` -- pymanopt (Boumal et al.; Townsend, Koep & Weichwald 2016), the public
  reference implementation of Riemannian optimisation in Python, on its product of two oblique
  manifolds, with its numpy backend and hand-derived Euclidean gradient and Hessian-vector
  product written here in numpy (the fastest way to run pymanopt: no autodiff tape), the cost
  and gradient sharing a one-point cache.  pymanopt's oblique manifold has unit COLUMNS, so its
  point is (W^T, H^T).  pymanopt has no objective-target stop: the cost function raises
  :class:`_Reached` the first time it sees f <= f_target and the time of that evaluation is the
  result (generous to pymanopt: a trial point of a line search counts).
* :func:`autograd_rgd` -- our own straightforward baseline: Riemannian gradient descent with
  Armijo backtracking (the first trial twice the last accepted step), the Euclidean gradient
  from torch autograd, projection and retraction row by row on tuples of tensors.

Neither is used by the library; they are the benchmark's yardsticks.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

__all__ = ["pymanopt_available", "pymanopt_run", "autograd_rgd", "PYMANOPT_SOLVERS"]

#: The pymanopt optimizers the benchmark runs (its best is the baseline).
PYMANOPT_SOLVERS = ("ConjugateGradient", "TrustRegions", "SteepestDescent")


class _Reached(Exception):
    """Raised by the wrapped cost the first time f <= f_target."""


def pymanopt_available() -> bool:
    try:
        import pymanopt  # noqa: F401
    except ImportError:
        return False
    return True


def _ce_numpy(Z: np.ndarray, labels: np.ndarray):
    """Mean CE of the rows of Z and P = softmax(Z) (numpy, max-shifted)."""
    Z = Z - Z.max(axis=1, keepdims=True)
    E = np.exp(Z)
    s = E.sum(axis=1)
    rows = np.arange(Z.shape[0])
    ce = np.log(s) - Z[rows, labels]
    return float(ce.mean()), E / s[:, None]


def pymanopt_run(problem, x0, solver: str, f_target: float, max_time: float = 60.0, autodiff: bool = False) -> dict:
    """Run pymanopt's ``solver`` (one of :data:`PYMANOPT_SOLVERS`) on the normalized UFM
    ``problem`` from ``x0`` until f <= f_target; returns seconds, reached, evaluations.
    ``autodiff=True``: pymanopt's PyTorch backend differentiates the cost itself (the way its
    documentation sets problems up) instead of the hand-derived numpy derivatives."""
    import pymanopt
    from pymanopt.manifolds import Oblique, Product
    from pymanopt.optimizers import ConjugateGradient, SteepestDescent, TrustRegions

    K, N, d, tau = problem.K, problem.N, problem.d, problem.tau
    labels = problem.labels.cpu().numpy()
    rows = np.arange(N)
    manifold = Product([Oblique(d, K), Oblique(d, N)])
    counts = {"cost": 0, "grad": 0, "hess": 0}
    cache: dict = {}
    state = {"t0": 0.0, "t_hit": None, "best": math.inf}

    def _point(Wt, Ht):
        key = (id(Wt), id(Ht))
        if cache.get("key") != key:
            Z = tau * (Ht.T @ Wt)
            f, P = _ce_numpy(Z, labels)
            G = P.copy()
            G[rows, labels] -= 1.0
            G /= N
            cache.clear()
            cache.update(key=key, pts=(Wt, Ht), f=f, P=P, G=G)
        return cache

    @pymanopt.function.numpy(manifold)
    def cost(Wt, Ht):
        counts["cost"] += 1
        f = _point(Wt, Ht)["f"]
        state["best"] = min(state["best"], f)
        if f <= f_target:
            state["t_hit"] = time.perf_counter() - state["t0"]
            raise _Reached
        return f

    @pymanopt.function.numpy(manifold)
    def egrad(Wt, Ht):
        counts["grad"] += 1
        G = _point(Wt, Ht)["G"]
        return tau * (Ht @ G), tau * (Wt @ G.T)

    @pymanopt.function.numpy(manifold)
    def ehess(Wt, Ht, Ut, Vt):
        counts["hess"] += 1
        c = _point(Wt, Ht)
        P, G = c["P"], c["G"]
        dZ = tau * (Vt.T @ Wt + Ht.T @ Ut)
        PdZ = P * dZ
        dG = (PdZ - P * PdZ.sum(axis=1, keepdims=True)) / N
        return tau * (Ht @ dG + Vt @ G), tau * (Wt @ dG.T + Ut @ G.T)

    if autodiff:
        y = torch.as_tensor(labels)

        @pymanopt.function.pytorch(manifold)
        def cost_ad(Wt, Ht):
            counts["cost"] += 1
            f = torch.nn.functional.cross_entropy(tau * (Ht.T @ Wt), y)
            fv = float(f.detach())
            state["best"] = min(state["best"], fv)
            if fv <= f_target:
                state["t_hit"] = time.perf_counter() - state["t0"]
                raise _Reached
            return f

        prob = pymanopt.Problem(manifold, cost_ad)
    else:
        prob = pymanopt.Problem(manifold, cost, euclidean_gradient=egrad, euclidean_hessian=ehess)
    cls = {"ConjugateGradient": ConjugateGradient, "TrustRegions": TrustRegions,
           "SteepestDescent": SteepestDescent}[solver]
    opt = cls(verbosity=0, log_verbosity=0, max_time=max_time, max_iterations=10**6, min_gradient_norm=0.0,
              min_step_size=0.0)
    start = [x0[0].detach().cpu().numpy().T.copy(), x0[1].detach().cpu().numpy().T.copy()]
    state["t0"] = time.perf_counter()
    stop = "cap or pymanopt's own stop"
    try:
        opt.run(prob, initial_point=start)
    except _Reached:
        stop = "objective <= f_target"
    seconds = state["t_hit"] if state["t_hit"] is not None else time.perf_counter() - state["t0"]
    return {"solver": f"pymanopt {solver}" + (" (autodiff)" if autodiff else ""), "reached": state["t_hit"] is not None, "seconds": seconds,
            "stop_reason": stop, "best_objective": state["best"], "cost_evals": counts["cost"],
            # with autodiff pymanopt differentiates inside its backend: gradients are not counted here
            "grad_evals": None if autodiff else counts["grad"], "hess_evals": None if autodiff else counts["hess"]}


def autograd_rgd(problem, x0, f_target: float, max_time: float = 60.0, c1: float = 1e-4) -> dict:
    """Plain Riemannian gradient descent with Armijo backtracking on the normalized UFM, the
    gradient by torch autograd (see the module docstring); returns seconds, reached, iterations."""
    tau, labels = problem.tau, problem.labels.to(x0[0].device)

    def f_of(W, H):
        return torch.nn.functional.cross_entropy(tau * (H @ W.T), labels)

    def proj(X, U):
        return U - (X * U).sum(-1, keepdim=True) * X

    def retr(X, U, t):
        Y = X + t * U
        return Y / Y.norm(dim=-1, keepdim=True)

    def value_and_grad(x):
        xs = [t.detach().requires_grad_(True) for t in x]
        f = f_of(*xs)
        gs = torch.autograd.grad(f, xs)
        return float(f.detach()), tuple(proj(a.detach(), g) for a, g in zip(xs, gs))

    x = tuple(t.detach().clone() for t in x0)
    t0 = time.perf_counter()
    f, g = value_and_grad(x)
    step, it, evals = 1.0, 0, 1
    reached = f <= f_target
    while not reached and time.perf_counter() - t0 < max_time:
        it += 1
        gg = float(sum((gi * gi).sum() for gi in g))
        t = 2.0 * step
        for _ in range(50):
            y = tuple(retr(a, -gi, t) for a, gi in zip(x, g))
            with torch.no_grad():
                fy = float(f_of(*y))
            evals += 1
            if fy <= f - c1 * t * gg:
                break
            t *= 0.5
        else:
            break  # no decrease: the baseline gives up
        step = t
        x = y
        f, g = value_and_grad(x)
        reached = f <= f_target
    return {"solver": "autograd RGD + Armijo", "reached": reached, "seconds": time.perf_counter() - t0,
            "iterations": it, "cost_evals": evals, "stop_reason": "objective <= f_target" if reached else "cap"}
