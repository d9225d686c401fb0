"""Mixed precision: :func:`mixed_precision` runs a solver in float32 first, then in float64.

Most of a large UFM solve is spent far from the minimiser, where float32 arithmetic (half the
cost of float64 per product on a CPU, far less on most GPUs) steers as well as float64: on the
CE UFM at K = 300 and K = 1000 the float32 L-BFGS iterates follow the float64 ones to a relative
gap of about 1e-8, in the same number of iterations.  The float32 phase stops at its own
relative gradient test (:data:`LOW_GTOL`, where float32 roundoff starts to show in the
gradient), and the float64 phase continues from that point under the caller's options, so the
result is certified by float64 arithmetic exactly as a float64 run would be (the float32 point
is first put back on the manifold in float64, where a normalised UFM's unit vectors must lie to
float64 accuracy): the returned point,
stop reason and convergence are the float64 phase's.  Nothing is weakened: if the float32 phase
stalls or fails, the float64 phase simply has more to do.  Where float32 cannot steer (a float32
trust region on a noisy model, the normalized UFM at large tau), periodic float64 checks of the
objective end the float32 phase once it stops making progress (see :func:`mixed_precision`).

>>> from nclab.ufm.problems import make_problem
>>> from nclab.ufm.optim import lbfgs
>>> p = make_problem("ce", K=4, n=5, d=4, lw=5e-3, lh=5e-3)
>>> x, log = mixed_precision(lbfgs, p, p.random_start(0), metrics_every=-1)
>>> log.converged, abs(log.final["objective"] - p.optimum) / p.optimum < 1e-9
(True, True)
>>> [phase["dtype"] for phase in log.options["phases"]]
['float32', 'float64']
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch

from nclab._validation import check_int
from nclab.ufm.optim.log import SolverLog

__all__ = ["mixed_precision", "low_precision_twin", "LOW_GTOL", "CHECK_EVERY", "STOP_NO_FLOAT64_PROGRESS"]

#: The float32 phase's relative gradient tolerance (float32 eps is 1.2e-7).  On the CE UFM at
#: K = 300 the float32 L-BFGS reaches 1e-5 and then stalls in roundoff before 1e-6 (the float64
#: checks end it there); stopping at 1e-4 instead leaves 40 float64 iterations where 1e-5 leaves
#: 26, at twice the cost each.
LOW_GTOL = 1e-5

#: Solvers refused (by function name): their inner solves need float64 Hessian-vector products.
SECOND_ORDER = ("trust_regions",)

#: Iterations between the float64 checks of the float32 phase (a check is one float64 cost
#: evaluation, about a third of a float64 gradient evaluation on the logit problems).
CHECK_EVERY = 20


def low_precision_twin(problem, dtype=torch.float32):
    """The same problem in ``dtype`` (same options, device and class sizes): built again with
    :func:`nclab.ufm.problems.make_problem` from ``problem.describe()``.  A problem without
    ``describe()`` (one of the user's own) cannot be twinned: pass ``low_problem=`` instead."""
    from nclab.ufm.problems import make_problem

    describe = getattr(problem, "describe", None)
    if describe is None:
        raise ValueError("mixed precision needs the problem's float32 twin: this problem has no describe(); "
                         "pass low_problem=<the same problem in float32>")
    options = {k: v for k, v in describe().items() if k not in ("dtype", "device")}
    loss = options.pop("loss")
    return make_problem(loss, device=getattr(problem, "device", None), dtype=dtype, **options)


def mixed_precision(solver: Callable, problem, x0, *, low_problem=None, low_gtol: float = LOW_GTOL,
                    check_every: int = CHECK_EVERY, **options) -> tuple[tuple, SolverLog]:
    """Run ``solver(low_problem, x0, gtol=low_gtol)`` in float32, then ``solver(problem, x,
    **options)`` in the problem's float64 from where the first phase stopped.

    The float32 phase is watched in float64: every ``check_every`` iterations the float64
    objective of its point is evaluated (the cost only, its time counted in the run's), and the
    phase stops as soon as it did not decrease since the previous check -- float32 steps that
    no longer lower the float64 objective are roundoff, e.g. a float32 trust region accepting
    steps on a noisy model, or the normalized UFM at large tau where the float32 Riemannian
    gradient is mostly cancellation.  The float64 phase starts from the best checked point.

    Parameters
    ----------
    solver : a first-order solver of :data:`nclab.ufm.optim.SOLVERS` (``solver(problem, x0,
        **options)``; the trust region is refused, see :data:`SECOND_ORDER`).
    problem : a float64 problem (a float32 one is refused: it has no higher phase).
    x0 : the start (tuple of tensors).
    low_problem : the same problem in float32 (default :func:`low_precision_twin`).
    low_gtol : the float32 phase's relative gradient tolerance (default :data:`LOW_GTOL`).
    check_every : iterations between the float64 checks of the float32 phase (default
        :data:`CHECK_EVERY`).
    options : the solver's options for the whole run.  ``max_iter`` and ``max_time`` bound both
        phases together; ``callback`` sees one iteration count running through both phases;
        ``f_target`` is tested in both (the float64 phase confirms it, with no iteration when the
        float32 phase's point already meets it); ``gtol``, ``gtol_abs`` and ``ftol`` are the
        float64 phase's (the float32 phase stops at ``max(low_gtol, gtol)``).

    Returns ``(x, log)``: the float64 point and one :class:`SolverLog` of both phases (records
    carry ``"dtype"``; ``log.options["phases"]`` holds each phase's dtype, iterations, seconds,
    evaluations and stop reason; the stop reason and ``converged`` are the float64 phase's).
    """
    dtype = getattr(problem, "dtype", torch.float64)
    if dtype != torch.float64:
        raise ValueError(f"mixed precision runs float32 then float64: the problem is {dtype}, "
                         "build it in float64 (dtype='float64')")
    if getattr(solver, "__name__", "") in SECOND_ORDER:
        raise ValueError("mixed precision is for first-order solvers (lbfgs, rcg, rgd, gd): the trust region's "
                         "truncated CG needs float64 Hessian-vector products (in float32 its inner solves take "
                         "many times more of them); run rtr in float64")
    low = low_problem if low_problem is not None else low_precision_twin(problem)
    if getattr(low, "dtype", None) != torch.float32:
        raise ValueError(f"low_problem must be float32, got {getattr(low, 'dtype', None)}")
    check_every = check_int("check_every", check_every, minimum=1)

    max_iter = options.get("max_iter")
    max_time = options.get("max_time", math.inf)
    callback = options.get("callback")
    guard = _Float64Guard(problem, check_every, callback)
    low_opts = {k: v for k, v in options.items() if k not in ("gtol", "gtol_abs", "ftol")}
    low_opts["gtol"] = max(float(low_gtol), float(options.get("gtol", 0.0) or 0.0))
    low_opts["callback"] = guard

    start = time.perf_counter()
    x_low, log_low = solver(low, x0, **low_opts)
    finite = math.isfinite(log_low.final.get("objective", math.nan)) and all(
        bool(torch.isfinite(t).all()) for t in x_low)
    x_mid = _onto_manifold(problem, x_low if finite else x0)  # a diverged phase: back to the start
    if finite and guard.best_x is not None and not guard.value(x_mid) <= guard.best_f:
        x_mid = guard.best_x  # the phase wandered off after its best check
    if guard.stopped:
        log_low.stop_reason = STOP_NO_FLOAT64_PROGRESS

    n_low = log_low.n_iter
    high_opts = dict(options)
    if max_iter is not None:
        high_opts["max_iter"] = max(int(max_iter) - n_low, 0)
    if guard.user_stopped:  # the float64 phase only evaluates the point it is handed
        high_opts["max_iter"] = 0
        high_opts.pop("callback", None)
    if math.isfinite(max_time):
        high_opts["max_time"] = max(max_time - (time.perf_counter() - start), 1e-9)
    if callback is not None and not guard.user_stopped:
        high_opts["callback"] = lambda it, x, f, g: callback(it + n_low, x, f, g)
    gamma = log_low.state.get("inverse_hessian_scale")
    if gamma is not None and getattr(solver, "__name__", "") == "lbfgs" and "initial_step" not in options:
        high_opts["initial_step"] = gamma  # float64 L-BFGS starts with the float32 memory's step scale
    x, log_high = solver(problem, x_mid, **high_opts)
    log = _merge(log_low, log_high, finite, guard)
    if guard.user_stopped:
        log.stop_reason, log.converged = "callback", False
    return x, log


#: The float32 phase's stop reason when its float64 check found no decrease.
STOP_NO_FLOAT64_PROGRESS = "float32 steps no longer lower the float64 objective"


class _Float64Guard:
    """The float32 phase's callback: every ``every`` iterations the float64 cost of its point;
    stops the phase (returns True) when it did not decrease since the previous check, and keeps
    the best checked point.  Its time and evaluations are counted into the run's."""

    def __init__(self, problem, every: int, user_callback=None):
        self.problem, self.every, self.user_callback = problem, every, user_callback
        self.best_f, self.best_x, self.prev = math.inf, None, math.inf
        self.seconds, self.evals, self.stopped, self.user_stopped = 0.0, 0, False, False

    def value(self, x64) -> float:
        t = time.perf_counter()
        f = float(self.problem.cost(x64))
        self.seconds += time.perf_counter() - t
        self.evals += 1
        return f

    def __call__(self, it, x, f, g) -> bool:
        if self.user_callback is not None and self.user_callback(it, x, f, g) is True:
            self.user_stopped = True  # the caller ends the whole run, not just this phase
            return True
        if it == 0 or it % self.every:
            return False
        t = time.perf_counter()
        x64 = _onto_manifold(self.problem, x)
        self.seconds += time.perf_counter() - t
        f64 = self.value(x64)
        if f64 < self.best_f:
            self.best_f, self.best_x = f64, x64
        eps = torch.finfo(torch.float64).eps
        if not f64 < self.prev - 4 * eps * abs(f64):
            self.stopped = True
            return True
        self.prev = f64
        return False


def _onto_manifold(problem, x):
    """The float32 point in the problem's dtype, put back on its manifold in that precision: a
    float32 unit vector is off the float64 sphere by ~1e-8, where the objective can read below
    the minimum (the oblique factors' retraction at a zero step normalises; on Euclidean factors
    it is the identity)."""
    x = problem.place(x) if hasattr(problem, "place") else x
    manifold = problem.manifold
    return tuple(manifold.retr(x, manifold.zero_vector(x)))


def _merge(low: SolverLog, high: SolverLog, low_finite: bool, guard: _Float64Guard) -> SolverLog:
    """One log of both phases: iterations numbered and timed through, counts and seconds added
    (the float64 checks of the float32 phase counted in its time and cost evaluations)."""
    n_low, t_low = low.n_iter, low.seconds + guard.seconds
    records = [{**r, "dtype": "float32"} for r in low.iterations]
    for r in high.iterations:
        if r["iter"] == 0 and records:  # the float64 phase's start is the float32 phase's end
            records.append({**r, "iter": n_low, "time": t_low, "dtype": "float64"})
            continue
        records.append({**r, "iter": r["iter"] + n_low, "time": r.get("time", 0.0) + t_low, "dtype": "float64"})
    phases = [
        {"dtype": "float32", "iterations": n_low, "seconds": t_low, "cost_evals": low.n_cost,
         "grad_evals": low.n_grad, "float64_checks": guard.evals, "stop_reason": low.stop_reason,
         "used": low_finite},
        {"dtype": "float64", "iterations": high.n_iter, "seconds": high.seconds, "cost_evals": high.n_cost,
         "grad_evals": high.n_grad, "stop_reason": high.stop_reason},
    ]
    return SolverLog(
        solver=high.solver,
        iterations=records,
        stop_reason=high.stop_reason,
        converged=high.converged,
        n_cost=low.n_cost + guard.evals + high.n_cost,
        n_grad=low.n_grad + high.n_grad,
        n_hess=low.n_hess + high.n_hess,
        seconds=t_low + high.seconds,
        options={**high.options, "precision": "mixed", "phases": phases},
        state=dict(high.state),
    )
