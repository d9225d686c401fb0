"""Solvers for the unconstrained feature models: Euclidean and Riemannian, first and second order.

Every solver is a function ``solver(problem, x0, **options) -> (x, SolverLog)``.  ``problem``
follows the UFMProblem interface (``manifold``, ``cost``, ``egrad``, ``cost_and_egrad``, ``rhess``,
``metrics``); ``x0`` is a tuple of tensors, one per factor of ``problem.manifold`` (converted to the
problem's ``device`` and ``dtype``: float64 on the CPU unless the problem says otherwise); the
returned ``x`` is a tuple of the same shapes.  All geometry goes through ``problem.manifold``
(projection, retraction, vector transport by projection, ``egrad2rgrad``), so the same code runs on
the Euclidean CE/MSE models and on the oblique-manifold normalized and sphere models.

Solvers (``SOLVERS`` maps the command-line names to them):

=========  ================================  ==============================================
name       function                          method
=========  ================================  ==============================================
``lbfgs``  :func:`lbfgs`                     Riemannian L-BFGS (compact form, per-factor
                                             initial scaling, transport by projection;
                                             ordinary L-BFGS on Euclidean problems),
                                             strong-Wolfe or Armijo line search
``gd``     :func:`gradient_descent`          heavy-ball momentum (lr 0.1, momentum 0.9: the
                                             papers' baseline); retracts on manifolds
``rgd``    :func:`riemannian_gradient_descent`  steepest descent with Armijo backtracking or a
                                             fixed step (the normalized-UFM baseline)
``rcg``    :func:`conjugate_gradient`        Riemannian nonlinear CG (HS+, PR+, FR, HZ) with
                                             restarts and a strong-Wolfe line search
``rtr``    :func:`trust_regions`             Riemannian trust regions with truncated CG
                                             (Steihaug-Toint; Absil, Baker & Gallivan 2007)
=========  ================================  ==============================================

Common options (every solver):

* ``max_iter`` -- iteration cap (an iteration is one accepted or rejected outer step);
* ``gtol`` -- the first-order test, relative to the problem's own scale (default 1e-8):

      |grad f(x)| <= gtol * |f(x)| / max(|x|, 1),

  with ``|grad f(x)|`` the Riemannian gradient norm and ``|x|`` the Frobenius norm of the point
  (all factors).  ``|grad f| |x| / |f|`` is the relative change of f under a relative change of x
  (the relative condition number of f at x), so the test means the same whether f is 1 or 1e-40:
  at temperature tau = 40 the normalized UFM's optimum is ~1e-21 and every gradient is of that
  order, where an absolute test stops at once; for the CE UFM with tiny weight decay the point's
  norm grows and the loss shrinks, and the test follows both.  The floor 1 on |x| keeps the test
  meaningful at x = 0 (the CE/MSE zero minimiser, where it becomes ``|grad f| <= gtol |f|``).
  Close to a non-degenerate minimiser the relative gap obeys
  ``(f - f*)/f ~ |grad f|^2 / (2 lambda_min f) ~ gtol^2 / kappa`` with kappa the smallest Hessian
  eigenvalue in the units of f/|x|^2 (lambda_min |x|^2 / f), so 1e-8 leaves the gap at rounding;
* ``gtol_abs`` -- also stop when ``|grad f(x)| <= gtol_abs`` (absolute; default 0: off).  For
  problems whose minimum value is 0 (a consistent least-squares system), where no relative test
  can hold;
* ``ftol`` -- the stalled-progress test: stop when the relative objective change
  ``|f_k - f_{k+1}| <= ftol * max(|f_k|, |f_{k+1}|)`` holds at ``stall_iters`` consecutive
  iterations during which the gradient norm did not fall to half its value at the window's start
  (ftol = 0 disables it; defaults ftol = 1e-15, stall_iters = 50).  Near a minimiser f is flat to
  rounding (relative gap ~ gtol^2) while the gradient, which L-BFGS, CG and the approximate-Wolfe
  line searches still see, keeps halving: that is progress, not a stall.  A stall is not
  convergence: it is reported with ``converged = False``;
* ``f_target`` -- stop as soon as ``f(x) <= f_target`` (benchmarks: time to a given gap);
* ``max_time`` -- wall-clock cap in seconds;
* ``callback(iteration, x, objective, grad_norm)`` -- called after every iteration; returning
  ``True`` stops the solver;
* ``metrics_every`` -- record ``problem.metrics(x)`` every k iterations (0: only at the end; the
  final point's metrics are always recorded, ``metrics_every=-1`` disables them entirely);
* ``log_every`` -- keep one iteration record in k (the first and the last are always kept).

The time spent in ``problem.metrics`` and in the callback is excluded from the logged times.
The solvers are deterministic given the start (no random numbers are drawn).

Every run ends with ``log.stop_reason`` and ``log.converged``: True only when a convergence test
held (:data:`STOP_GRADIENT`, :data:`STOP_GRADIENT_ABS` or :data:`STOP_TARGET`); an iteration or
time cap, a stall, a failed line search, a collapsed trust region, divergence or a callback's stop
give ``converged = False``.

Implementation notes
--------------------
Internally a point, a gradient and a tangent vector are single flat vectors (the tuple's
tensors concatenated); the problem always sees tuples (views of the flat vector on Euclidean
problems, the retraction's output on manifolds; the same tuple object is reused at one point, so
the problem's per-point cache serves all the Hessian-vector products of a trust-region step).
Inner products are the ambient (Frobenius) ones, which is the metric of every nclab manifold
(Riemannian submanifolds of Euclidean space).  No solver asks which manifold it runs on: the
manifold says whether it is ``flat`` (then projection and transport are skipped, as they are
identities, so L-BFGS is exactly the classical algorithm) and whether its transport takes a
``batched_transport`` leading axis (:mod:`nclab.manifolds`); a manifold that does not say is
probed once at the start, and its metric checked against the dot product.  On products of nclab's
own factors the manifold maps act on the flat vector directly (``Product.proj_flat`` and friends:
consecutive oblique factors are one block of rows), and a problem with ``cost_and_egrad_into``
writes its gradient straight into a flat vector, so an iteration costs a few whole-vector
operations besides the problem's own products.  The vectors live on the problem's ``device`` in its
``dtype``; the line searches' roundoff band and the trust region's regularisation follow the
dtype's machine epsilon (float32: 100 eps = 1.2e-5 instead of 1e-10).

Package layout
--------------
=======================  =====================================================================
module                   owns
=======================  =====================================================================
``log``                  :class:`SolverLog` (the one result type) and the stop reasons
``stopping``             the stopping rules above, the records, the common options
``space``                the problem seen through flat vectors (points, geometry, counts)
``line_search``          :class:`Armijo` and :class:`StrongWolfe`, objects handed to solvers
``lbfgs``                :func:`lbfgs` and its compact-form memory
``descent``              :func:`gradient_descent`, :func:`riemannian_gradient_descent`
``cg``                   :func:`conjugate_gradient`
``trust_regions``        :func:`trust_regions` and its truncated CG
``mixed``                :func:`mixed_precision`: any solver in float32, then in float64
=======================  =====================================================================

Example
-------
>>> import torch
>>> from nclab.manifolds import Euclidean, Product
>>> class Quadratic:  # f(x) = 1/2 |A x - c|^2 on R^3, the minimum is 0
...     manifold = Product(Euclidean((3,)))
...     A = torch.diag(torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64))
...     c = torch.ones(3, dtype=torch.float64)
...     def cost_and_egrad(self, x):
...         r = self.A @ x[0] - self.c
...         return 0.5 * float(r @ r), (self.A.T @ r,)
...     def cost(self, x): return self.cost_and_egrad(x)[0]
...     def egrad(self, x): return self.cost_and_egrad(x)[1]
...     def rhess(self, x, u): return (self.A.T @ (self.A @ u[0]),)
>>> from nclab.ufm.optim import lbfgs
>>> x, log = lbfgs(Quadratic(), (torch.zeros(3, dtype=torch.float64),), gtol_abs=1e-10, metrics_every=-1)
>>> log.converged, log.final["grad_norm"] <= 1e-10, log.final["objective"] < 1e-18
(True, True, True)
"""

from __future__ import annotations

from typing import Callable

from nclab.ufm.optim.cg import conjugate_gradient
from nclab.ufm.optim.descent import gradient_descent, riemannian_gradient_descent
from nclab.ufm.optim.lbfgs import lbfgs
from nclab.ufm.optim.line_search import Armijo, StrongWolfe
from nclab.ufm.optim.log import (
    CONVERGED_REASONS,
    STOP_GRADIENT,
    STOP_GRADIENT_ABS,
    STOP_STALLED,
    STOP_TARGET,
    SolverLog,
)
from nclab.ufm.optim.mixed import mixed_precision
from nclab.ufm.optim.trust_regions import trust_regions

__all__ = [
    "SolverLog",
    "STOP_GRADIENT",
    "STOP_GRADIENT_ABS",
    "STOP_TARGET",
    "STOP_STALLED",
    "CONVERGED_REASONS",
    "Armijo",
    "StrongWolfe",
    "lbfgs",
    "gradient_descent",
    "riemannian_gradient_descent",
    "conjugate_gradient",
    "trust_regions",
    "mixed_precision",
    "SOLVERS",
    "get_solver",
]

#: The command-line names of the solvers.
SOLVERS: dict[str, Callable] = {
    "lbfgs": lbfgs,
    "gd": gradient_descent,
    "rgd": riemannian_gradient_descent,
    "rcg": conjugate_gradient,
    "rtr": trust_regions,
}


def get_solver(name: str) -> Callable:
    """The solver function registered under ``name`` (ValueError listing the choices otherwise)."""
    try:
        return SOLVERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown solver {name!r}; choose one of {', '.join(SOLVERS)}") from None
