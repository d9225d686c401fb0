"""Solvers for the unconstrained feature models: Euclidean and Riemannian, first and second order.

Every solver is a function ``solver(problem, x0, **options) -> (x, SolverLog)``.  ``problem``
follows the UFMProblem interface (``manifold``, ``cost``, ``egrad``, ``cost_and_egrad``, ``rhess``,
``metrics``); ``x0`` is a tuple of float64 tensors, one per factor of ``problem.manifold``; the
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
Internally a point, a gradient and a tangent vector are single flat float64 vectors (the tuple's
tensors concatenated); the problem always sees tuples (views of the flat vector on Euclidean
problems, the retraction's output on manifolds; the same tuple object is reused at one point, so
the problem's per-point cache serves all the Hessian-vector products of a trust-region step).
Inner products are the ambient (Frobenius) ones, which is the metric of every nclab manifold
(Riemannian submanifolds of Euclidean space); this is checked once at the start.  On Euclidean
problems projection and transport are skipped (they are identities), so L-BFGS is exactly the
classical algorithm.

Example
-------
>>> import torch
>>> from nclab.ufm.manifolds import Euclidean, Product
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
>>> x, log = lbfgs(Quadratic(), (torch.zeros(3, dtype=torch.float64),), gtol_abs=1e-10, metrics_every=-1)
>>> log.stop_reason, log.converged, log.iterations[-1]["objective"] < 1e-18
('gradient norm <= gtol_abs', True, True)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from scipy.linalg import solve_triangular

__all__ = [
    "SolverLog",
    "STOP_GRADIENT",
    "STOP_GRADIENT_ABS",
    "STOP_TARGET",
    "CONVERGED_REASONS",
    "lbfgs",
    "gradient_descent",
    "riemannian_gradient_descent",
    "conjugate_gradient",
    "trust_regions",
    "SOLVERS",
    "get_solver",
]

_EPS = float(np.finfo(np.float64).eps)
#: Relative band within which two objective values are treated as equal by the line searches:
#: there the derivative decides (approximate Armijo/Wolfe, Hager & Zhang 2005).  The costs are sums
#: of many terms whose roundoff reaches a few 1e-15 relative; 1e-10 leaves a wide margin and only
#: matters in the last digits of convergence.
_FBAND = 1e-10

#: Stop reasons that mean convergence (``SolverLog.converged``); every other reason does not.
STOP_GRADIENT = "relative gradient norm <= gtol"
STOP_GRADIENT_ABS = "gradient norm <= gtol_abs"
STOP_TARGET = "objective <= f_target"
CONVERGED_REASONS = frozenset({STOP_GRADIENT, STOP_GRADIENT_ABS, STOP_TARGET})
STOP_STALLED = "stalled: objective flat to ftol and gradient norm not halving for {} iterations"


# --------------------------------------------------------------------------------------------
# Log
# --------------------------------------------------------------------------------------------
@dataclass
class SolverLog:
    """What a solver did.

    Attributes
    ----------
    solver : the solver's name (``SOLVERS`` key).
    iterations : one dict per recorded iteration: ``iter``, ``objective``, ``grad_norm`` (Riemannian
        gradient norm), ``time`` (seconds since the start, metric/callback time excluded) and, every
        ``metrics_every`` iterations and at the end, ``metrics`` (``problem.metrics(x)``).
    stop_reason : why it stopped (:data:`STOP_GRADIENT`, ``"max_iter"``, ...).
    converged : whether ``stop_reason`` is a convergence test (:data:`CONVERGED_REASONS`); False
        for caps, stalls, line-search or trust-region failures, divergence and callback stops.
    n_cost, n_grad, n_hess : evaluations of the cost, the gradient and Hessian-vector products.
    seconds : total solver time (metric/callback time excluded).
    options : the options the solver ran with.
    """

    solver: str
    iterations: list = field(default_factory=list)
    stop_reason: str = ""
    converged: bool = False
    n_cost: int = 0
    n_grad: int = 0
    n_hess: int = 0
    seconds: float = 0.0
    options: dict = field(default_factory=dict)

    @property
    def n_iter(self) -> int:
        """Number of iterations done (the last record's ``iter``)."""
        return int(self.iterations[-1]["iter"]) if self.iterations else 0

    @property
    def final(self) -> dict:
        """The last iteration record."""
        return self.iterations[-1] if self.iterations else {}

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (non-finite floats become None)."""
        return _jsonable(
            {
                "solver": self.solver,
                "stop_reason": self.stop_reason,
                "converged": self.converged,
                "n_iter": self.n_iter,
                "n_cost": self.n_cost,
                "n_grad": self.n_grad,
                "n_hess": self.n_hess,
                "seconds": self.seconds,
                "options": self.options,
                "iterations": self.iterations,
            }
        )


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return _jsonable(obj.item())
    if obj is None or isinstance(obj, str):
        return obj
    if callable(obj):
        return getattr(obj, "__name__", repr(obj))
    return repr(obj)


# --------------------------------------------------------------------------------------------
# Flat representation of points and tangent vectors
# --------------------------------------------------------------------------------------------
class _Point:
    """A point: flat vector ``x``, its tuple ``xt`` (what the problem sees), objective ``f``,
    flat Riemannian gradient ``g`` and its norm ``gn`` (filled by :meth:`_Space.evaluate`)."""

    __slots__ = ("x", "xt", "f", "g", "gn")

    def __init__(self, x, xt):
        self.x, self.xt = x, xt
        self.f = math.nan
        self.g = None
        self.gn = math.nan


class _Space:
    """The problem seen through flat vectors; counts evaluations."""

    def __init__(self, problem, x0):
        if not hasattr(problem, "manifold"):
            raise TypeError("problem must expose a `manifold` (the UFMProblem interface)")
        self.problem = problem
        self.M = problem.manifold
        if isinstance(x0, torch.Tensor):
            x0 = (x0,)
        if not isinstance(x0, (tuple, list)) or not x0:
            raise TypeError("x0 must be a tuple of tensors, one per factor of problem.manifold")
        x0 = tuple(torch.as_tensor(t) for t in x0)
        if any(not torch.is_floating_point(t) for t in x0):
            raise TypeError("x0 must hold floating-point tensors")
        self.device = x0[0].device
        self.dtype = torch.float64
        self.shapes = [tuple(t.shape) for t in x0]
        self.sizes = [t.numel() for t in x0]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).tolist()
        self.D = int(self.offsets[-1])
        flat = torch.cat([t.detach().to(self.dtype).reshape(-1) for t in x0]).to(self.device)
        if not bool(torch.isfinite(flat).all()):
            raise ValueError("x0 contains NaN or inf entries")
        self.x0 = self.point(flat)
        self.n_cost = self.n_grad = self.n_hess = 0
        self.euclidean = self._probe_euclidean()
        self.batched = False if self.euclidean else self._probe_batched_transport()

    def _nclab_manifold(self) -> bool:
        from nclab.ufm.manifolds import Euclidean, Oblique, Product

        return isinstance(self.M, Product) and all(type(f) in (Euclidean, Oblique) for f in self.M.factors)

    # --- conversions ---------------------------------------------------------------------------
    def split(self, v):
        o = self.offsets
        return tuple(v[o[i] : o[i + 1]].view(s) for i, s in enumerate(self.shapes))

    def cat(self, ts):
        if len(ts) == 1:
            return ts[0].reshape(-1)
        return torch.cat([t.reshape(-1) for t in ts])

    def point(self, flat) -> _Point:
        return _Point(flat, self.split(flat))

    # --- probes (once per run) --------------------------------------------------------------------
    def _gen(self):
        return torch.Generator(device="cpu").manual_seed(20240607)

    def _randn(self, *shape):
        return torch.randn(*shape, generator=self._gen(), dtype=self.dtype).to(self.device)

    def _probe_euclidean(self) -> bool:
        """True when projection is the identity (a flat space): transports are then skipped.

        nclab's own manifolds are recognised by type; any other manifold is probed once (its
        projection applied to a random vector, and its metric compared with the dot product)."""
        from nclab.ufm.manifolds import Euclidean

        if self._nclab_manifold():
            return all(isinstance(f, Euclidean) for f in self.M.factors)
        u = self._randn(self.D)
        pu = self.cat(self.M.proj(self.x0.xt, self.split(u)))
        flat = bool(torch.equal(pu, u))
        tu = self.cat(self.M.proj(self.x0.xt, self.split(u[: self.D] * 0.5 + 1.0)))
        v = self._randn(2, self.D)[1]
        pv = self.cat(self.M.proj(self.x0.xt, self.split(v)))
        # metric check: the solvers use flat dot products as the Riemannian metric
        ip = float(self.M.inner(self.x0.xt, self.split(tu), self.split(pv)))
        dot = float(torch.dot(tu, pv))
        if abs(ip - dot) > 1e-9 * max(1.0, abs(dot), float(tu.norm() * pv.norm())):
            raise NotImplementedError(
                "the solvers assume the ambient (Frobenius) metric on tangent vectors; "
                f"problem.manifold.inner disagrees ({ip} vs {dot})"
            )
        return flat

    def _probe_batched_transport(self) -> bool:
        """Whether ``manifold.transport`` accepts a leading batch dimension on every factor
        (used to transport several vectors in one call); nclab's factors act row-wise on the last
        axis, so they do."""
        if self._nclab_manifold():
            return True
        try:
            u = self._randn(2, self.D)
            y = self.retr(self.x0, self.proj(self.x0, u[0]) * 0.1, 1.0)
            o = self.offsets
            batch = tuple(u[:, o[i] : o[i + 1]].reshape(2, *s) for i, s in enumerate(self.shapes))
            out = self.M.transport(self.x0.xt, y.xt, batch)
            got = torch.cat([t.reshape(2, -1) for t in out], dim=1)
            want = torch.stack([self.transport(self.x0, y, u[0]), self.transport(self.x0, y, u[1])])
            return got.shape == want.shape and bool(torch.allclose(got, want, rtol=1e-12, atol=1e-12))
        except Exception:  # noqa: BLE001 - any failure means "not batchable": loop instead
            return False

    # --- geometry --------------------------------------------------------------------------------
    def retr(self, p: _Point, d, t: float) -> _Point:
        if self.euclidean:
            return self.point(torch.add(p.x, d, alpha=t))
        xt = tuple(self.M.retr(p.xt, self.split(d), t))
        return _Point(self.cat(xt), xt)

    def proj(self, p: _Point, v):
        if self.euclidean:
            return v
        return self.cat(self.M.proj(p.xt, self.split(v)))

    def transport(self, p: _Point, q: _Point, v):
        if self.euclidean:
            return v
        return self.cat(self.M.transport(p.xt, q.xt, self.split(v)))

    def transport_rows_(self, p: _Point, q: _Point, Z) -> None:
        """Transport every row of Z (k x D) from T_p to T_q, in place."""
        if self.euclidean or Z.shape[0] == 0:
            return
        if self.batched:
            k, o = Z.shape[0], self.offsets
            batch = tuple(Z[:, o[i] : o[i + 1]].reshape(k, *s) for i, s in enumerate(self.shapes))
            out = self.M.transport(p.xt, q.xt, batch)
            for i, t in enumerate(out):
                Z[:, o[i] : o[i + 1]] = t.reshape(k, -1)
        else:
            for r in range(Z.shape[0]):
                Z[r] = self.transport(p, q, Z[r])

    # --- evaluations -------------------------------------------------------------------------------
    def evaluate(self, p: _Point) -> _Point:
        """Objective and Riemannian gradient at p (one ``cost_and_egrad`` call)."""
        f, eg = self.problem.cost_and_egrad(p.xt)
        self.n_cost += 1
        self.n_grad += 1
        self._set_grad(p, eg)
        p.f = float(f)
        return p

    def cost(self, p: _Point) -> float:
        self.n_cost += 1
        p.f = float(self.problem.cost(p.xt))
        return p.f

    def grad(self, p: _Point) -> _Point:
        """Gradient at a point whose cost is known (the problem's per-point cache is reused)."""
        self.n_grad += 1
        self._set_grad(p, self.problem.egrad(p.xt))
        return p

    def _set_grad(self, p: _Point, eg) -> None:
        if self.euclidean:
            g = self.cat(tuple(eg))
        else:
            g = self.cat(tuple(self.M.egrad2rgrad(p.xt, tuple(eg))))
        if g.dtype != self.dtype:
            g = g.to(self.dtype)
        p.g = g
        p.gn = math.sqrt(max(float(torch.dot(g, g)), 0.0))

    def hess(self, p: _Point, v):
        """Riemannian Hessian-vector product at p (``problem.rhess``, cached per point)."""
        self.n_hess += 1
        return self.cat(tuple(self.problem.rhess(p.xt, self.split(v))))

    def tuple_of(self, p: _Point):
        """The point as a tuple of independent tensors (returned to the caller)."""
        return tuple(t.clone() for t in p.xt)


def _dot(u, v) -> float:
    return float(torch.dot(u, v))


# --------------------------------------------------------------------------------------------
# Monitoring: stopping criteria, records, metrics
# --------------------------------------------------------------------------------------------
_COMMON_DEFAULTS = dict(
    gtol=1e-8,
    gtol_abs=0.0,
    ftol=1e-15,
    stall_iters=50,
    f_target=None,
    max_time=math.inf,
    callback=None,
    metrics_every=0,
    log_every=1,
)


class _Monitor:
    def __init__(self, name: str, sp: _Space, opts: dict):
        self.name, self.sp, self.opts = name, sp, opts
        self.max_iter = _check_int("max_iter", opts["max_iter"], 0)
        self.gtol = _check_nonneg("gtol", opts["gtol"])
        self.gtol_abs = _check_nonneg("gtol_abs", opts["gtol_abs"])
        self.ftol = _check_nonneg("ftol", opts["ftol"])
        self.stall_iters = _check_int("stall_iters", opts["stall_iters"], 1)
        self.max_time = _check_pos("max_time", opts["max_time"])
        self.f_target = opts["f_target"]
        self.callback: Callable | None = opts["callback"]
        self.metrics_every = _check_int("metrics_every", opts["metrics_every"], -1)
        self.log_every = _check_int("log_every", opts["log_every"], 1)
        self.log = SolverLog(solver=name, options={k: v for k, v in opts.items() if k != "callback"})
        self.excluded = 0.0
        self.small_changes = 0
        self.stall_gn = math.inf
        self.last_logged = -1
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0 - self.excluded

    def _metrics(self, p: _Point):
        fn = getattr(self.sp.problem, "metrics", None)
        if fn is None or self.metrics_every < 0:
            return None
        t = time.perf_counter()
        try:
            return fn(p.xt)
        finally:
            self.excluded += time.perf_counter() - t

    def record(self, it: int, p: _Point, force: bool = False) -> None:
        if not force and it % self.log_every != 0 and it != 0:
            return
        if it == self.last_logged:
            return
        entry = {"iter": it, "objective": p.f, "grad_norm": p.gn, "time": self.elapsed()}
        if self.metrics_every > 0 and it % self.metrics_every == 0:
            m = self._metrics(p)
            if m is not None:
                entry["metrics"] = m
        self.log.iterations.append(entry)
        self.last_logged = it

    def gradient_scale(self, p: _Point) -> float:
        """The scale of the gradient test, ``|f(x)| / max(|x|, 1)`` (see the module docstring)."""
        return abs(p.f) / max(math.sqrt(max(_dot(p.x, p.x), 0.0)), 1.0)

    def check(self, it: int, p: _Point, f_prev: float | None) -> str | None:
        """The stop reason after iteration ``it`` (None: go on)."""
        if not (math.isfinite(p.f) and math.isfinite(p.gn)):
            return "non-finite objective or gradient (diverged)"
        if p.gn <= self.gtol * self.gradient_scale(p):
            return STOP_GRADIENT
        if p.gn <= self.gtol_abs:
            return STOP_GRADIENT_ABS
        if self.f_target is not None and p.f <= self.f_target:
            return STOP_TARGET
        if f_prev is not None and self.ftol > 0:
            scale = max(abs(f_prev), abs(p.f))
            if abs(f_prev - p.f) > self.ftol * scale:
                self.small_changes = 0
            elif self.small_changes == 0 or p.gn <= 0.5 * self.stall_gn:
                # the objective is flat to ftol: a window opens (or restarts while the gradient
                # still halves -- L-BFGS and CG keep converging on the derivative there)
                self.small_changes, self.stall_gn = 1, p.gn
            else:
                self.small_changes += 1
                if self.small_changes >= self.stall_iters:
                    return STOP_STALLED.format(self.stall_iters)
        if self.callback is not None:
            t = time.perf_counter()
            try:
                stop = self.callback(it, p.xt, p.f, p.gn)
            finally:
                self.excluded += time.perf_counter() - t
            if stop is True:
                return "callback"
        if it >= self.max_iter:
            return "max_iter"
        if self.elapsed() >= self.max_time:
            return "max_time"
        return None

    def start(self, p: _Point) -> str | None:
        self.record(0, p)
        return self.check(0, p, None)

    def finish(self, it: int, p: _Point, reason: str):
        log = self.log
        log.seconds = self.elapsed()
        if self.last_logged != it:
            self.record(it, p, force=True)
        final = log.iterations[-1]
        if "metrics" not in final and self.metrics_every >= 0:
            m = self._metrics(p)
            if m is not None:
                final["metrics"] = m
        log.stop_reason = reason
        log.converged = reason in CONVERGED_REASONS
        log.n_cost, log.n_grad, log.n_hess = self.sp.n_cost, self.sp.n_grad, self.sp.n_hess
        return self.sp.tuple_of(p), log


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_nonneg(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def _check_pos(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    return float(value)


def _start(name: str, sp: "_Space", o: dict):
    """Every solver's opening: a monitor, the first evaluation and the first stopping check."""
    mon = _Monitor(name, sp, o)
    p = sp.evaluate(sp.x0)
    return mon, p, mon.start(p)


def _line_search_options(o: dict) -> tuple[float, float]:
    """Validate the line-search options shared by L-BFGS and CG; return the Wolfe constants."""
    if o["line_search"] not in ("wolfe", "armijo"):
        raise ValueError(f"line_search must be 'wolfe' or 'armijo', got {o['line_search']!r}")
    c1, c2 = float(o["c1"]), float(o["c2"])
    if not 0 < c1 < c2 < 1:
        raise ValueError(f"need 0 < c1 < c2 < 1, got c1={c1}, c2={c2}")
    return c1, c2


def _first_step(p: _Point) -> float:
    """First trial step along -grad f: the step length ``min(1, |f|/|grad f|)`` (a unit move,
    or less where the linear model reaches f = 0 sooner), i.e. ``t = min(1, |f|/|g|)/|g|``.  Scaling
    f by any constant leaves it unchanged, unlike the usual ``min(1, 1/|g|)``, which at a loss of
    1e-30 would try a step of length 1e-30."""
    if not p.gn > 0:
        return 1.0
    length = min(1.0, abs(p.f) / p.gn) if p.f != 0 else 1.0
    return max(length, 1e-300) / p.gn


def _options(name: str, defaults: dict, given: dict) -> dict:
    allowed = {**_COMMON_DEFAULTS, **defaults}
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {unknown}; allowed: {sorted(allowed)}")
    return {**allowed, **given}


# --------------------------------------------------------------------------------------------
# Line searches
# --------------------------------------------------------------------------------------------
def _armijo(sp: _Space, p: _Point, d, slope: float, t0: float, c1: float, shrink: float = 0.5, max_trials: int = 40):
    """Backtracking until ``f(R_x(t d)) <= f(x) + c1 t <grad f, d>`` (cost-only trials).

    Near convergence the decrease falls below the roundoff of f and the test becomes noise; a
    trial whose cost is within ``_FBAND |f(x)|`` of f(x) is then judged by the approximate Armijo
    condition of Hager & Zhang (2005), ``<grad f(R_x(t d)), d> <= (2 c1 - 1) <grad f(x), d>``
    (equivalent to Armijo on a quadratic), which needs the gradient at the trial point.
    Returns (new point, step, ok); the new point's gradient may already be filled in."""
    t = t0
    slack = _FBAND * abs(p.f)
    for _ in range(max_trials):
        q = sp.retr(p, d, t)
        f = sp.cost(q)
        if math.isfinite(f):
            if abs(f - p.f) > slack:
                if f <= p.f + c1 * t * slope:
                    return q, t, True
            else:  # f(x+) and f(x) agree to roundoff: decide on the derivative
                sp.grad(q)
                if _dot(q.g, d) <= (2 * c1 - 1) * slope:
                    return q, t, True
        t *= shrink
    return p, 0.0, False


def _cubic_min(a, fa, da, b, fb, db):
    """Minimiser of the cubic interpolating (a, fa, da), (b, fb, db); None if it does not exist."""
    d1 = da + db - 3 * (fa - fb) / (a - b)
    disc = d1 * d1 - da * db
    if disc < 0:
        return None
    d2 = math.copysign(math.sqrt(disc), b - a)
    den = db - da + 2 * d2
    if den == 0:
        return None
    return b - (b - a) * (db + d2 - d1) / den


def _wolfe(sp: _Space, p: _Point, d, slope: float, t0: float, c1: float, c2: float, max_evals: int = 30):
    """Strong-Wolfe line search (Nocedal & Wright 2006, Algorithms 3.5 and 3.6, cubic interpolation).

    phi(t) = f(R_x(t d)); phi'(t) is approximated by ``<grad f(R_x(t d)), d>`` (vector transport by
    projection: exact on Euclidean problems).  Every trial evaluates cost and gradient.
    Returns (new evaluated point, step, ok); when the curvature condition cannot be met within
    ``max_evals`` the best point with sufficient decrease is returned (ok still True) and when no
    decrease is found the start is returned with ok False."""
    f0 = p.f
    slack = _FBAND * abs(f0)

    def armijo_ok(t, f, df):
        # sufficient decrease; at the roundoff level of f the approximate form of Hager & Zhang
        # (2005), phi'(t) <= (2 c1 - 1) phi'(0), decides instead
        if abs(f - f0) > slack:
            return f <= f0 + c1 * t * slope
        return df <= (2 * c1 - 1) * slope

    evals = 0
    best = None  # (f, t, point) with sufficient decrease

    def trial(t):
        nonlocal evals, best
        evals += 1
        q = sp.evaluate(sp.retr(p, d, t))
        dq = _dot(q.g, d) if math.isfinite(q.f) else math.nan
        if math.isfinite(q.f) and armijo_ok(t, q.f, dq) and (best is None or q.f < best[0]):
            best = (q.f, t, q)
        return q, dq

    def zoom(lo, flo, dlo, qlo, hi, fhi, dhi):
        while evals < max_evals:
            width = hi - lo
            t = _cubic_min(lo, flo, dlo, hi, fhi, dhi) if math.isfinite(fhi) and math.isfinite(dhi) else None
            lo_end, hi_end = min(lo, hi), max(lo, hi)
            margin = 0.1 * abs(width)
            if t is None or not (lo_end + margin <= t <= hi_end - margin):
                t = lo + 0.5 * width
            if abs(width) <= 1e-14 * max(abs(lo), abs(hi)):
                break
            q, dq = trial(t)
            if not math.isfinite(q.f) or not armijo_ok(t, q.f, dq) or (q.f >= flo and q.f > f0 + slack):
                hi, fhi, dhi = t, q.f, dq
            else:
                if abs(dq) <= -c2 * slope:
                    return q, t, True
                if dq * (hi - lo) >= 0:
                    hi, fhi, dhi = lo, flo, dlo
                lo, flo, dlo, qlo = t, q.f, dq, q
        if best is not None:
            return best[2], best[1], True
        return p, 0.0, False

    t_prev, f_prev, d_prev, q_prev = 0.0, f0, slope, p
    t = t0
    while evals < max_evals:
        q, dq = trial(t)
        if not math.isfinite(q.f):  # overshoot into overflow: pull back
            return zoom(t_prev, f_prev, d_prev, q_prev, t, math.inf, math.nan)
        if not armijo_ok(t, q.f, dq) or (evals > 1 and q.f >= f_prev and q.f > f0 + slack):
            return zoom(t_prev, f_prev, d_prev, q_prev, t, q.f, dq)
        if abs(dq) <= -c2 * slope:
            return q, t, True
        if dq >= 0:
            return zoom(t, q.f, dq, q, t_prev, f_prev, d_prev)
        # extrapolate: cubic step safeguarded to [2 t, 10 t]
        tc = _cubic_min(t_prev, f_prev, d_prev, t, q.f, dq)
        t_next = 4.0 * t if tc is None else min(max(tc, 2.0 * t), 10.0 * t)
        t_prev, f_prev, d_prev, q_prev = t, q.f, dq, q
        t = t_next
    if best is not None:
        return best[2], best[1], True
    return p, 0.0, False


# --------------------------------------------------------------------------------------------
# L-BFGS
# --------------------------------------------------------------------------------------------
class _LBFGSMemory:
    """The last ``m`` pairs (s_i, y_i) in one (2m, D) buffer ``Z`` (rows 0..m-1: s, m..2m-1: y) and
    the compact representation of the inverse-Hessian approximation (Byrd, Nocedal & Schnabel 1994,
    Theorem 2.2) with a block-diagonal initial matrix ``H0 = diag(gamma_f I)`` over the factors f of
    the point (W, H, b, ...):

        H = H0 + [S  H0 Y] [[R^-T (D + Y^T H0 Y) R^-1, -R^-T], [-R^-1, 0]] [S^T; Y^T H0],

    R = upper triangle of S^T Y, D its diagonal.  ``scaling="block"``: gamma_f = s_f^T y_f / y_f^T y_f
    of the newest pair restricted to factor f (the usual scalar s^T y / y^T y where that is not
    positive); ``scaling="scalar"``: one gamma for all factors (textbook L-BFGS).  Block scaling
    adapts to factors of different curvature, e.g. W and H of the normalized UFM, whose Hessian
    blocks differ by the class size n.

    A direction costs two passes over the buffer (Z_f g_f and Z_f^T c_f for every factor) whatever
    m is; the small matrices are kept per factor and slot-indexed in numpy.  On Euclidean problems
    the new pair's inner products with the stored ones come for free: y_new = g_new - g_old, so
    ``Z y_new = Z g_new - Z g_old`` for the unchanged rows, and both products are needed anyway."""

    def __init__(self, m: int, offsets, dtype, device, scaling: str = "block"):
        self.m = m
        self.slices = [(int(a), int(b)) for a, b in zip(offsets[:-1], offsets[1:])]
        self.block = scaling == "block" and len(self.slices) > 1
        # the blocks of H0: the factors, or the whole vector under scalar scaling
        self.blocks = self.slices if self.block else [(0, int(offsets[-1]))]
        nf = len(self.blocks)
        self.Z = torch.zeros(2 * m, int(offsets[-1]), dtype=dtype, device=device)
        self.SY = np.zeros((nf, m, m))  # per block: SY[f, i, j] = s_i,f . y_j,f (slot-indexed)
        self.YY = np.zeros((nf, m, m))
        self.order: list[int] = []
        self.zg_prev = None  # per-factor Z_f g_f at the previous direction (Euclidean incremental update)
        self.pending = None  # (slot, s.y per factor, y.y per factor) of a pair whose column is still missing

    def clear(self) -> None:
        self.order.clear()
        self.pending = None

    def __len__(self) -> int:
        return len(self.order)

    def next_slot(self) -> int:
        if len(self.order) < self.m:
            used = set(self.order)
            return next(i for i in range(self.m) if i not in used)
        return self.order[0]

    def pair_products(self, slot: int):
        """(s.y, y.y) of the pair in ``slot``, per block (numpy arrays)."""
        m = self.m
        s, y = self.Z[slot], self.Z[m + slot]
        sy = np.array([float(torch.dot(s[a:b], y[a:b])) for a, b in self.blocks])
        yy = np.array([float(torch.dot(y[a:b], y[a:b])) for a, b in self.blocks])
        return sy, yy

    def commit(self, slot: int, sy, yy) -> None:
        """Register the pair just written into rows ``slot`` / ``m+slot``, where ``y = g_new - g``
        and g is the gradient of the last :meth:`direction` call (Euclidean case): its inner
        products with the stored pairs are filled in by the next :meth:`direction`."""
        if slot in self.order:
            self.order.remove(slot)
        self.order.append(slot)
        self.pending = (slot, sy, yy, None)

    def commit_direct(self, slot: int, threshold: float) -> None:
        """Register the pair in rows ``slot`` / ``m+slot`` (manifold case, where y is not a plain
        difference of gradients); its inner products with the stored pairs, its own included, are
        computed by the next :meth:`direction` (next to Z g), which drops it if ``s^T y <=
        threshold``."""
        self.drop(slot)
        self.order.append(slot)
        self.pending = (slot, None, None, threshold)

    def drop(self, slot: int) -> None:
        """The row ``slot`` was overwritten by a pair that is not kept."""
        if slot in self.order:
            self.order.remove(slot)

    def refresh(self, slot: int | None = None) -> None:
        """Recompute all inner products (after the rows were transported); ``slot`` is the pair
        just written.  Pairs whose curvature s^T y is no longer clearly positive are dropped."""
        self.pending = None
        if slot is not None:
            self.drop(slot)
            self.order.append(slot)
        m = self.m
        ss = np.zeros(m)
        for f, (a, b) in enumerate(self.blocks):
            Zf = self.Z[:, a:b]
            G = (Zf @ Zf.T).cpu().numpy()
            self.SY[f] = G[:m, m:]
            self.YY[f] = G[m:, m:]
            ss += np.diag(G[:m, :m])
        SY, YY = self.SY.sum(0), self.YY.sum(0)
        self.order[:] = [
            i for i in self.order if YY[i, i] > 0 and SY[i, i] > 1e-12 * math.sqrt(max(ss[i] * YY[i, i], 0.0))
        ]

    def _zg(self, g):
        """Per-block products Z_f g_f, shape (blocks, 2m)."""
        return np.stack([(self.Z[:, a:b] @ g[a:b]).cpu().numpy() for a, b in self.blocks])

    def gammas(self, new: int):
        """gamma per block from the newest pair (the whole-vector value where a block's own is
        not positive)."""
        sy, yy = self.SY[:, new, new], self.YY[:, new, new]
        gamma = sy.sum() / yy.sum()
        return np.where((sy > 0) & (yy > 0), sy / np.where(yy > 0, yy, 1.0), gamma)

    def direction(self, g, out):
        """``out = -H g``; returns False when the memory is empty (out untouched)."""
        idx = self.order
        if not idx:
            return False
        m = self.m
        pending, self.pending = self.pending, None
        zg = self._zg(g)  # (blocks, 2m)
        if pending is not None:
            slot, sy, yy, threshold = pending
            if threshold is None:  # Euclidean: y = g - g_prev, so Z y = Z g - Z g_prev (old rows)
                zy = zg - self.zg_prev if self.zg_prev is not None else zg  # (no old rows without it)
            else:  # manifold: y is not a gradient difference, one more product
                zy = self._zg(self.Z[m + slot])
                sy, yy = zy[:, slot], zy[:, m + slot]
                if not (sy.sum() > threshold and yy.sum() > 0):  # curvature not clearly positive
                    self.drop(slot)
                    slot = None
                    if not idx:
                        return False
            if slot is not None:
                o = np.asarray([i for i in idx if i != slot], dtype=int)
                self.SY[:, o, slot] = zy[:, o]
                self.YY[:, o, slot] = zy[:, m + o]
                self.YY[:, slot, o] = zy[:, m + o]
                self.SY[:, slot, slot] = sy
                self.YY[:, slot, slot] = yy
        self.zg_prev = zg
        ix = np.asarray(idx)
        gam = self.gammas(idx[-1])
        p = zg[:, ix].sum(0)
        q = gam @ zg[:, m + ix]
        SYo = self.SY.sum(0)[ix][:, ix]
        YHY = gam[0] * self.YY[0][ix][:, ix]
        for f in range(1, len(gam)):
            YHY += gam[f] * self.YY[f][ix][:, ix]
        R = np.triu(SYo)
        r = solve_triangular(R, p, lower=False, check_finite=False)
        top = solve_triangular(R, np.diag(SYo) * r + YHY @ r - q, trans="T", lower=False, check_finite=False)
        c = np.zeros((len(gam), 2 * m))
        c[:, ix] = top
        c[:, m + ix] = -gam[:, None] * r
        ct = torch.from_numpy(c).to(device=g.device, dtype=g.dtype)
        for f, (a, b) in enumerate(self.blocks):
            torch.addmv(g[a:b], self.Z[:, a:b].T, ct[f], beta=-float(gam[f]), alpha=-1.0, out=out[a:b])
        return True


def lbfgs(problem, x0, **options):
    """Riemannian limited-memory BFGS (Huang, Gallivan & Absil 2015; Manopt's rlbfgs in spirit).

    The inverse-Hessian approximation is the compact representation of Byrd, Nocedal & Schnabel
    (1994) over the last ``memory`` pairs with a block-diagonal initial matrix (see
    :class:`_LBFGSMemory`), and the step length comes from a strong-Wolfe (or Armijo) line search.
    A new pair is ``s = T(t d)``, ``y = grad f(x+) - T(grad f(x))`` with T the vector transport by
    projection onto the new tangent space.  Pairs without clearly positive curvature ``<s, y>`` are
    skipped; a non-descent direction or a failed line search clears the memory (steepest-descent
    restart).  On Euclidean problems every transport is the identity and this is ordinary L-BFGS.

    Transport of the stored pairs (manifolds only), ``transport=``:

    * ``"lazy"`` (default): every stored vector is moved to the current tangent space by the
      projection P_x where it acts -- on the gradient (``<P_x s_i, g> = <s_i, g>`` since g is
      tangent) and on the direction (``d = -P_x(H0 g + sum_i c_i z_i)``) -- i.e. transport by
      projection straight from the pair's point to the current one; the pairs' Gram matrix is kept
      from their creation.  The approximation is then ``P_x H P_x`` with H the L-BFGS matrix of the
      stored pairs, which is positive definite on the tangent space, so d is always a descent
      direction.  Costs as much as Euclidean L-BFGS: no pass over the memory beyond the two
      products of the compact form.
    * ``"full"``: all stored pairs are projected onto the new tangent space after every step and
      their Gram matrix is recomputed (the textbook scheme; same iteration counts on the nclab
      problems, several times the work per iteration).

    Initial scaling, ``scaling=``: ``"block"`` uses gamma_f = s_f^T y_f / y_f^T y_f per factor of the
    point (W, H, b); ``"scalar"`` the textbook single s^T y / y^T y; ``"auto"`` (default) chooses
    block on manifolds and scalar on Euclidean problems.  On the oblique manifold the norms are
    fixed, so the curvature of the W block (each w_k is shared by n samples) stays about n times
    that of the H block and block scaling needs 3x fewer iterations; on the Euclidean UFMs weight
    decay balances the blocks (|w_k|^2 = n |h|^2 at the optimum) and scalar scaling is as good.

    Options (besides the common ones, see the module docstring):
        memory=5, scaling="auto" | "block" | "scalar", transport="lazy" | "full",
        line_search="wolfe" | "armijo", c1=1e-4, c2=0.9, max_iter=5000.
    (memory 3 to 10 need the same number of iterations on the nclab problems; each extra pair costs
    two more passes over a vector of the problem's size per iteration.)

    Returns (x, SolverLog)."""
    o = _options(
        "lbfgs",
        dict(memory=5, scaling="auto", transport="lazy", line_search="wolfe", c1=1e-4, c2=0.9, max_iter=5000),
        options,
    )
    memory = _check_int("memory", o["memory"], 1)
    if o["scaling"] not in ("auto", "block", "scalar"):
        raise ValueError(f"scaling must be 'auto', 'block' or 'scalar', got {o['scaling']!r}")
    if o["transport"] not in ("lazy", "full"):
        raise ValueError(f"transport must be 'lazy' or 'full', got {o['transport']!r}")
    c1, c2 = _line_search_options(o)
    sp = _Space(problem, x0)
    mon, p, reason = _start("lbfgs", sp, o)
    it = 0
    if reason:
        return mon.finish(it, p, reason)
    scaling = o["scaling"] if o["scaling"] != "auto" else ("scalar" if sp.euclidean else "block")
    mem = _LBFGSMemory(memory, sp.offsets, sp.dtype, sp.device, scaling)
    full_transport = o["transport"] == "full"
    pair_buf = None if sp.euclidean or full_transport else torch.empty(2, sp.D, dtype=sp.dtype, device=sp.device)
    d = torch.empty_like(p.g)
    wolfe = o["line_search"] == "wolfe"
    t_prev_sd = 1.0 / max(p.gn, 1e-300)

    def search(d, slope, t0):
        if wolfe:
            return _wolfe(sp, p, d, slope, t0, c1, c2)
        q, t, ok = _armijo(sp, p, d, slope, t0, c1)
        if ok and q.g is None:
            sp.grad(q)
        return q, t, ok

    while True:
        it += 1
        have = mem.direction(p.g, d)
        if have:
            if not sp.euclidean:
                d = sp.proj(p, d)
            slope = _dot(p.g, d)
            t0 = 1.0
        if not have or not slope < 0:
            mem.clear()
            d = torch.neg(p.g)
            slope = -p.gn * p.gn
            t0 = t_prev_sd if it > 1 else _first_step(p)
        q, t, ok = search(d, slope, t0)
        if not ok and len(mem):  # retry along the steepest descent direction
            mem.clear()
            d = torch.neg(p.g)
            slope = -p.gn * p.gn
            q, t, ok = search(d, slope, _first_step(p))
        if not ok:
            mon.record(it - 1, p, force=True)
            return mon.finish(it - 1, p, "line search failed (no decrease)")
        if len(mem) == 0:
            t_prev_sd = t
        # new pair (s, y), written straight into the memory buffer
        slot = mem.next_slot()
        s_row, y_row = mem.Z[slot], mem.Z[memory + slot]
        if sp.euclidean:
            torch.mul(d, t, out=s_row)
            torch.sub(q.g, p.g, out=y_row)
            sy, yy = mem.pair_products(slot)
            # curvature: sy >= (1 - c2) t |slope| under Wolfe; keep clearly positive pairs only
            if sy.sum() > 1e-10 * t * abs(slope) and yy.sum() > 0:
                mem.commit(slot, sy, yy)
            else:
                mem.drop(slot)
        elif full_transport:
            sp.transport_rows_(p, q, mem.Z)  # the slot being replaced is overwritten below
            s_row.copy_(sp.transport(p, q, d * t))
            y_row.copy_(q.g - sp.transport(p, q, p.g))
            mem.refresh(slot)
        else:  # lazy: only the new pair is transported (one batched call for t d and grad f(x))
            torch.mul(d, t, out=pair_buf[0])
            pair_buf[1].copy_(p.g)
            sp.transport_rows_(p, q, pair_buf)
            s_row.copy_(pair_buf[0])
            torch.sub(q.g, pair_buf[1], out=y_row)
            mem.commit_direct(slot, 1e-10 * t * abs(slope))
        f_prev = p.f
        p = q
        mon.record(it, p)
        reason = mon.check(it, p, f_prev)
        if reason:
            return mon.finish(it, p, reason)


# --------------------------------------------------------------------------------------------
# Gradient descent with heavy-ball momentum
# --------------------------------------------------------------------------------------------
def gradient_descent(problem, x0, **options):
    """Gradient descent with heavy-ball momentum, PyTorch-SGD form (the papers' baseline):

        v <- momentum * v + grad f(x);   x <- R_x(-lr v)

    with lr = 0.1, momentum = 0.9 by default (Zhu et al. 2021; Yaras et al. 2022).  On Euclidean
    problems R_x(u) = x + u; on manifolds the Riemannian gradient is used, the step is retracted
    and the velocity is transported (projection) to the new point.  One gradient per iteration,
    no line search, so it can diverge for a too large lr (stop reason "non-finite ...").

    Options: lr=0.1, momentum=0.9, max_iter=100000 (+ the common ones)."""
    o = _options("gd", dict(lr=0.1, momentum=0.9, max_iter=100000), options)
    lr = _check_pos("lr", o["lr"])
    mom = _check_nonneg("momentum", o["momentum"])
    if mom >= 1:
        raise ValueError(f"momentum must be in [0, 1), got {mom}")
    sp = _Space(problem, x0)
    mon, p, reason = _start("gd", sp, o)
    it = 0
    v = torch.zeros_like(p.g)
    while not reason:
        it += 1
        v.mul_(mom).add_(p.g)
        q = sp.evaluate(sp.retr(p, v, -lr))
        if not sp.euclidean and mom > 0:
            v = sp.transport(p, q, v)
        f_prev, p = p.f, q
        mon.record(it, p)
        reason = mon.check(it, p, f_prev)
    return mon.finish(it, p, reason)


# --------------------------------------------------------------------------------------------
# Riemannian gradient descent
# --------------------------------------------------------------------------------------------
def riemannian_gradient_descent(problem, x0, **options):
    """Riemannian steepest descent ``x <- R_x(-t grad f(x))``.

    ``step="armijo"`` (default): backtracking (factor 1/2) until
    ``f(x+) <= f(x) - c1 t |grad f(x)|^2``, the first trial being twice the last accepted step
    (adaptive, as Manopt's ``linesearch_adaptive``); the first iteration tries ``t = 1/|grad f|``.
    ``step="fixed"``: ``t = lr`` at every iteration (the normalized-UFM baseline).

    Options: step="armijo", lr=1.0 (fixed step), c1=1e-4, max_iter=20000 (+ the common ones)."""
    o = _options("rgd", dict(step="armijo", lr=1.0, c1=1e-4, max_iter=20000), options)
    if o["step"] not in ("armijo", "fixed"):
        raise ValueError(f"step must be 'armijo' or 'fixed', got {o['step']!r}")
    lr = _check_pos("lr", o["lr"])
    c1 = _check_pos("c1", o["c1"])
    sp = _Space(problem, x0)
    mon, p, reason = _start("rgd", sp, o)
    it = 0
    t_next = 1.0 / max(p.gn, 1e-300)
    while not reason:
        it += 1
        d = torch.neg(p.g)
        if o["step"] == "fixed":
            q = sp.evaluate(sp.retr(p, d, lr))
        else:
            q, t, ok = _armijo(sp, p, d, -p.gn * p.gn, t_next, c1)
            if not ok:
                return mon.finish(it - 1, p, "line search failed (no decrease)")
            t_next = 2.0 * t if t == t_next else t
            if q.g is None:
                sp.grad(q)
        f_prev, p = p.f, q
        mon.record(it, p)
        reason = mon.check(it, p, f_prev)
    return mon.finish(it, p, reason)


# --------------------------------------------------------------------------------------------
# Riemannian conjugate gradient
# --------------------------------------------------------------------------------------------
def conjugate_gradient(problem, x0, **options):
    """Riemannian nonlinear conjugate gradient (Absil, Mahony & Sepulchre 2008, section 8.3;
    Sato 2021) with vector transport by projection.

    ``d_{k+1} = -g_{k+1} + beta_k T(d_k)``, with y = g_{k+1} - T(g_k) and ``beta_rule``:
    ``"hs+"`` max(0, <g+, y>/<T d, y>) (Hestenes-Stiefel+, default), ``"pr+"`` max(0, <g+, y>/|g|^2)
    (Polak-Ribiere+), ``"fr"`` |g+|^2/|g|^2, ``"hz"`` Hager-Zhang (2005) with its lower bound.
    Restarts (d = -g) every ``restart_every`` iterations (default: never), when Powell's test
    ``|<g+, T g>| >= 0.1 |g+|^2`` fires, and whenever the direction is not a descent direction.
    Line search: strong Wolfe (c2=0.1) or Armijo; first trial step from the previous one as
    ``t_prev <g, d>/<g+, d+>`` (Nocedal & Wright 2006, eq. 3.60).

    Options: beta_rule="hs+", line_search="wolfe", c1=1e-4, c2=0.1, restart_every=0,
    powell=True, max_iter=10000 (+ the common ones)."""
    o = _options(
        "rcg",
        dict(beta_rule="hs+", line_search="wolfe", c1=1e-4, c2=0.1, restart_every=0, powell=True, max_iter=10000),
        options,
    )
    rule = str(o["beta_rule"]).lower()
    if rule not in ("hs+", "pr+", "fr", "hz"):
        raise ValueError(f"beta_rule must be one of 'hs+', 'pr+', 'fr', 'hz', got {o['beta_rule']!r}")
    c1, c2 = _line_search_options(o)
    restart_every = _check_int("restart_every", o["restart_every"], 0)
    sp = _Space(problem, x0)
    mon, p, reason = _start("rcg", sp, o)
    it = 0
    d = torch.neg(p.g)
    slope = -p.gn * p.gn
    t0 = _first_step(p)
    since_restart = 0
    while not reason:
        it += 1
        if o["line_search"] == "wolfe":
            q, t, ok = _wolfe(sp, p, d, slope, t0, c1, c2)
        else:
            q, t, ok = _armijo(sp, p, d, slope, t0, c1)
            if ok and q.g is None:
                sp.grad(q)
        if not ok and since_restart > 0:
            d = torch.neg(p.g)
            slope = -p.gn * p.gn
            t0 = 1.0 / max(p.gn, 1e-300)
            since_restart = 0
            if o["line_search"] == "wolfe":
                q, t, ok = _wolfe(sp, p, d, slope, t0, c1, c2)
            else:
                q, t, ok = _armijo(sp, p, d, slope, t0, c1)
                if ok and q.g is None:
                    sp.grad(q)
        if not ok:
            return mon.finish(it - 1, p, "line search failed (no decrease)")
        g_old = sp.transport(p, q, p.g)
        d_old = sp.transport(p, q, d)
        g = q.g
        gg = q.gn * q.gn
        y = g - g_old
        restart = restart_every > 0 and since_restart + 1 >= restart_every
        if o["powell"] and abs(_dot(g, g_old)) >= 0.1 * gg:
            restart = True
        beta = 0.0
        if not restart:
            if rule == "fr":
                beta = gg / max(p.gn * p.gn, 1e-300)
            elif rule == "pr+":
                beta = max(0.0, _dot(g, y) / max(p.gn * p.gn, 1e-300))
            else:
                dy = _dot(d_old, y)
                if dy != 0.0:
                    if rule == "hs+":
                        beta = max(0.0, _dot(g, y) / dy)
                    else:  # Hager-Zhang, with eta_k = -1/(|d| min(eta, |g|)) lower bound
                        yy = _dot(y, y)
                        beta = (_dot(g, y) - 2.0 * yy * _dot(d_old, g) / dy) / dy
                        dn = math.sqrt(max(_dot(d_old, d_old), 0.0))
                        eta = -1.0 / max(dn * min(0.01, math.sqrt(max(_dot(g_old, g_old), 0.0))), 1e-300)
                        beta = max(beta, eta)
        new_d = torch.add(torch.neg(g), d_old, alpha=beta) if beta != 0.0 else torch.neg(g)
        new_slope = _dot(g, new_d)
        if not new_slope < 0:
            new_d = torch.neg(g)
            new_slope = -gg
            beta = 0.0
        since_restart = since_restart + 1 if beta != 0.0 else 0
        t0 = t * slope / new_slope if new_slope != 0 else 1.0
        if not (math.isfinite(t0) and t0 > 0):
            t0 = 1.0
        d, slope = new_d, new_slope
        f_prev, p = p.f, q
        mon.record(it, p)
        reason = mon.check(it, p, f_prev)
    return mon.finish(it, p, reason)


# --------------------------------------------------------------------------------------------
# Riemannian trust regions
# --------------------------------------------------------------------------------------------
def _tcg(sp: _Space, p: _Point, Delta: float, kappa: float, theta: float, max_inner: int):
    """Truncated conjugate gradient (Steihaug 1983, Toint 1981) on the trust-region subproblem

        min_eta  <g, eta> + 1/2 <eta, Hess f(x)[eta]>   s.t. |eta| <= Delta,

    as in Absil, Baker & Gallivan (2007), Algorithm 2 (no preconditioner).  Returns
    (eta, Heta, stop reason, inner iterations)."""
    g = p.g
    eta = torch.zeros_like(g)
    Heta = torch.zeros_like(g)
    r = g.clone()
    r_r = p.gn * p.gn
    norm_r0 = p.gn
    delta = torch.neg(r)
    e_Pe, e_Pd, d_Pd = 0.0, 0.0, r_r
    z_r = r_r
    stop = "max_inner"
    j = 0
    for j in range(1, max_inner + 1):
        Hd = sp.hess(p, delta)
        d_Hd = _dot(delta, Hd)
        alpha = z_r / d_Hd if d_Hd != 0 else math.inf
        e_Pe_new = e_Pe + 2.0 * alpha * e_Pd + alpha * alpha * d_Pd
        if d_Hd <= 0 or e_Pe_new >= Delta * Delta:
            # go to the boundary along delta
            tau = (-e_Pd + math.sqrt(max(e_Pd * e_Pd + d_Pd * (Delta * Delta - e_Pe), 0.0))) / d_Pd
            eta.add_(delta, alpha=tau)
            Heta.add_(Hd, alpha=tau)
            stop = "negative curvature" if d_Hd <= 0 else "exceeded trust region"
            break
        e_Pe = e_Pe_new
        eta.add_(delta, alpha=alpha)
        Heta.add_(Hd, alpha=alpha)
        r.add_(Hd, alpha=alpha)
        if not sp.euclidean and j % 10 == 0:
            r = sp.proj(p, r)
        r_r = _dot(r, r)
        norm_r = math.sqrt(max(r_r, 0.0))
        if norm_r <= norm_r0 * min(norm_r0**theta, kappa):
            stop = "converged" if kappa < norm_r0**theta else "superlinear"
            break
        z_r_old = z_r
        z_r = r_r
        beta = z_r / z_r_old
        delta.mul_(beta).sub_(r)
        e_Pd = beta * (e_Pd + alpha * d_Pd)
        d_Pd = z_r + beta * beta * d_Pd
    return eta, Heta, stop, j


def trust_regions(problem, x0, **options):
    """Riemannian trust-region method with truncated CG (Absil, Baker & Gallivan 2007).

    At x the model ``m(eta) = f + <g, eta> + 1/2 <eta, Hess f(x)[eta]>`` is minimised approximately
    in ``|eta| <= Delta`` by :func:`_tcg` (``problem.rhess``, cached per point by the problem); the
    candidate R_x(eta) is accepted when ``rho = (f(x) - f(x+)) / (m(0) - m(eta)) > rho_prime``.
    Radius: ``Delta /= 4`` if rho < 1/4, ``Delta = min(2 Delta, Delta_bar)`` if rho > 3/4 and the
    step reached the boundary.  Both numerator and denominator of rho get a regularisation of
    ``1e3 eps |f|`` (Manopt uses ``1e3 eps max(1, |f|)``, which at |f| << 1 swamps the real
    decrease: relative to f, the ratio means the same at every scale).
    Negative curvature sends tCG to the boundary, so the method escapes strict saddles.

    Options: Delta_bar (default ``manifold.typical_dist`` or sqrt(dim)), Delta0 = Delta_bar/8,
    rho_prime=0.1, kappa=0.1, theta=1.0, max_inner (default min(dim, 1000)), max_iter=1000
    (+ the common ones)."""
    o = _options(
        "rtr",
        dict(Delta_bar=None, Delta0=None, rho_prime=0.1, kappa=0.1, theta=1.0, max_inner=None, max_iter=1000),
        options,
    )
    sp = _Space(problem, x0)
    dim = int(getattr(sp.M, "dim", sp.D))
    Delta_bar = o["Delta_bar"]
    if Delta_bar is None:
        Delta_bar = float(getattr(sp.M, "typical_dist", math.sqrt(dim)))
    Delta_bar = _check_pos("Delta_bar", Delta_bar)
    Delta = _check_pos("Delta0", o["Delta0"] if o["Delta0"] is not None else Delta_bar / 8.0)
    rho_prime = float(o["rho_prime"])
    if not 0 <= rho_prime < 0.25:
        raise ValueError(f"rho_prime must be in [0, 1/4), got {rho_prime}")
    kappa, theta = _check_pos("kappa", o["kappa"]), _check_nonneg("theta", o["theta"])
    max_inner = _check_int("max_inner", o["max_inner"] if o["max_inner"] is not None else min(dim, 1000), 1)
    mon, p, reason = _start("rtr", sp, o)
    it = 0
    rejections = 0
    while not reason:
        it += 1
        eta, Heta, tcg_stop, _ = _tcg(sp, p, Delta, kappa, theta, max_inner)
        if not sp.euclidean:
            eta = sp.proj(p, eta)
        q = sp.retr(p, eta, 1.0)
        fq = sp.cost(q)
        model_dec = -(_dot(p.g, eta) + 0.5 * _dot(eta, Heta))
        reg = 1e3 * _EPS * max(abs(p.f), 1e-300)
        rho = (p.f - fq + reg) / (model_dec + reg) if math.isfinite(fq) else -math.inf
        if model_dec < 0:  # the model did not decrease (numerical trouble): treat as a failure
            rho = -math.inf
        at_boundary = tcg_stop in ("negative curvature", "exceeded trust region")
        eta_norm = math.sqrt(max(_dot(eta, eta), 0.0))
        if rho < 0.25:
            Delta = 0.25 * min(Delta, max(eta_norm, 1e-300)) if eta_norm < Delta else 0.25 * Delta
        elif rho > 0.75 and at_boundary:
            Delta = min(2.0 * Delta, Delta_bar)
        if rho > rho_prime:
            sp.grad(q)
            f_prev, p = p.f, q
            rejections = 0
        else:
            f_prev = p.f
            rejections += 1
            if Delta < 1e-14 * max(1.0, math.sqrt(max(_dot(p.x, p.x), 0.0))) or rejections > 50:
                mon.record(it, p, force=True)
                return mon.finish(it, p, "trust region collapsed")
        mon.record(it, p)
        reason = mon.check(it, p, f_prev if rejections == 0 else None)
    return mon.finish(it, p, reason)


# --------------------------------------------------------------------------------------------
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
