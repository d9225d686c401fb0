"""Escape from a strict saddle: one step along negative curvature, then a solver run.

This module owns the escape step.  At a strict saddle x with smallest (deflated) Hessian
eigenvalue lambda < 0 and unit eigenvector e (sign chosen so that <grad f, e> <= 0), the
second-order model along the retraction curve is

    f(R_x(t e)) ~ f(x) + t <grad f, e> + lambda t^2 / 2,

so every t > 0 descends; the default step is the t at which the model predicts a decrease of
ESCAPE_DECREASE = 1e-3 of |f| (relative, as the solvers' tests are),

    t = sqrt(2e-3 |f| / |lambda|),   capped at 0.5 max(|x|, 1),

large enough that the solver's first iterations see a gradient well above rounding
(|grad f| ~ |lambda| t), small enough that the quadratic model still describes the step.  Without
an eigenvector (a problem classified before eigenvectors were kept) the explicit null-space
direction of a failed certificate is used (:func:`nclab.ufm.landscape.certificate.negative_direction`,
Zhu et al. 2021) with its predicted curvature.  The solver then runs from ``R_x(t e)`` through
:func:`nclab.ufm.run.run_solver`; for the CE/MSE/normalized UFMs (benign landscapes) it should
reach the closed form (status "optimal").

Rounds.  Descent methods keep an invariant subspace: the rows of grad_W = G^T H + lw W and
grad_H = G W + lh H lie in the span of the rows of W and H, so from a point whose factors span d'
dimensions every iterate spans the same ones.  A step along one eigenvector adds one dimension:
from the embedded d' = 1 minimiser the solver converges to the d' = 2 one, another saddle.  So
when the run stops at a point that is not optimal, it is classified again and, if it is a strict
saddle, escaped again (at most ``max_rounds`` rounds): a second-order method in its simplest form.
"""

from __future__ import annotations

import math

from nclab._validation import check_int, check_real
from nclab.ufm.landscape.classify import Classification, classify

__all__ = ["escape", "ESCAPE_DECREASE"]

ESCAPE_DECREASE = 1e-3


def _norm(x) -> float:
    return math.sqrt(sum(float((t * t).sum()) for t in x))


def _step(problem, x, classification, step):
    """One escape step: (start point, info) from x along its negative-curvature direction."""
    M = problem.manifold
    lam = classification.lambda_min
    e, kind = None, None
    if lam is not None and lam < 0:
        if classification.eigenvector is not None:
            e, kind = classification.eigenvector, "eigenvector"
        elif classification.null_direction is not None:
            e, kind = classification.null_direction.direction, "null_direction"
            lam = classification.null_direction.predicted_curvature
    info = {"step": None, "direction": kind, "lambda_min": classification.lambda_min, "kind": classification.kind,
            "predicted_decrease": None, "start_objective": None}
    if e is None or not lam < 0:
        return x, info
    g = problem.rgrad(x)
    if M.inner(x, g, e) > 0:
        e = M.lincomb(x, -1.0, e)
    f = problem.cost(x)
    t = step if step is not None else min(math.sqrt(2 * ESCAPE_DECREASE * max(abs(f), 1e-300) / abs(lam)),
                                          0.5 * max(_norm(x), 1.0))
    x0 = M.retr(x, e, t)
    info.update(step=t, predicted_decrease=t * M.inner(x, g, e) + 0.5 * lam * t * t, start_objective=problem.cost(x0))
    return x0, info


def escape(problem, x, classification: Classification | None = None, *, step: float | None = None,
           solver="lbfgs", gtol: float | None = None, max_rounds: int = 10):
    """Step from x along its direction of negative curvature and run ``solver`` from there;
    repeat from the solver's point while it is a strict saddle (module docstring, "Rounds").

    ``classification`` (from :func:`classify`; computed when None) gives lambda_min and its
    eigenvector (or the null direction); ``step`` overrides the step length t of the module
    docstring; ``solver`` and ``gtol`` go to :func:`nclab.ufm.run.run_solver`.  Where x has no
    negative curvature (a minimiser, a non-critical point) no step is taken and the solver starts
    at x.

    Returns ``(x_new, result)``: the last solver run's point and :func:`run_solver`'s result dict,
    with an added ``"escape"`` entry: ``rounds`` (the number of solver runs) and ``history``, one
    dict per round: ``step``, ``direction`` ("eigenvector", "null_direction" or None),
    ``lambda_min`` and ``kind`` of the point escaped from, ``predicted_decrease``
    (t <grad f, e> + lambda t^2/2) and ``start_objective`` (f at the stepped point).

    >>> from nclab.ufm.problems import make_problem
    >>> p = make_problem("ce", K=4, n=5, d=4)
    >>> x, r = escape(p, p.zero_critical_point())
    >>> r["status"], r["escape"]["history"][0]["direction"]
    ('optimal', 'eigenvector')
    """
    from nclab.ufm.run import run_solver  # run imports the solvers and the problems: keep it lazy

    if step is not None:
        step = check_real("step", step, positive=True)
    max_rounds = check_int("max_rounds", max_rounds, minimum=1)
    if classification is None:
        classification = classify(problem, x)
    history = []
    for _ in range(max_rounds):
        x0, info = _step(problem, x, classification, step)
        history.append(info)
        x, result = run_solver(problem, solver, x0=tuple(t.clone() for t in x0), gtol=gtol, metrics_every=0)
        if result["status"] not in ("off_optimum", "converged"):
            break
        classification = classify(problem, x)
        if classification.kind != "strict_saddle":
            break
    result["escape"] = {"rounds": len(history), "history": history}
    return x, result
