"""The stopping rules every solver shares, its records and the common options.

:class:`_Monitor` owns the options of the module docstring of :mod:`nclab.ufm.optim` (``gtol``,
``gtol_abs``, ``ftol``/``stall_iters``, ``f_target``, ``max_time``, ``callback``, ``max_iter``,
``metrics_every``, ``log_every``): it validates them (:mod:`nclab._validation`), keeps the
:class:`~nclab.ufm.optim.log.SolverLog`, and after every iteration says whether to stop.  The tests,
in this order:

1. a non-finite objective or gradient: diverged;
2. ``|grad f(x)| <= gtol |f(x)| / max(|x|, 1)``: :data:`STOP_GRADIENT` (relative first-order test);
3. ``|grad f(x)| <= gtol_abs``: :data:`STOP_GRADIENT_ABS`;
4. ``f(x) <= f_target``: :data:`STOP_TARGET`;
5. ``|f_k - f_{k+1}| <= ftol max(|f_k|, |f_{k+1}|)`` at ``stall_iters`` consecutive iterations in
   which the gradient norm did not fall to half its value at the window's start: :data:`STOP_STALLED`;
6. the callback returned True; 7. ``max_iter``; 8. ``max_time``.

Only 2-4 mean convergence.  Time spent in ``problem.metrics`` and in the callback is excluded from
the logged times.
"""

from __future__ import annotations

import math
import time
from typing import Callable

from nclab._validation import check_int, check_real
from nclab.ufm.optim.log import CONVERGED_REASONS, STOP_GRADIENT, STOP_GRADIENT_ABS, STOP_STALLED, STOP_TARGET, SolverLog
from nclab.ufm.optim.space import _Point, _Space, _dot

#: The options every solver accepts, with their defaults (``max_iter`` is per solver).
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


def _options(name: str, defaults: dict, given: dict) -> dict:
    """The common defaults, then the solver's, then the given options; unknown names are refused."""
    allowed = {**_COMMON_DEFAULTS, **defaults}
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {unknown}; allowed: {sorted(allowed)}")
    return {**allowed, **given}


def _nonneg(name: str, value) -> float:
    """A number >= 0 (inf allowed, as before: gtol=inf stops at once)."""
    return check_real(name, value, nonnegative=True, finite=False)


def _pos(name: str, value) -> float:
    """A number > 0 (inf allowed: max_time=inf is the default)."""
    return check_real(name, value, positive=True, finite=False)


class _Monitor:
    """Stopping tests, iteration records and metrics of one run (see the module docstring)."""

    def __init__(self, name: str, sp: _Space, opts: dict):
        self.name, self.sp, self.opts = name, sp, opts
        self.max_iter = check_int("max_iter", opts["max_iter"], minimum=0)
        self.gtol = _nonneg("gtol", opts["gtol"])
        self.gtol_abs = _nonneg("gtol_abs", opts["gtol_abs"])
        self.ftol = _nonneg("ftol", opts["ftol"])
        self.stall_iters = check_int("stall_iters", opts["stall_iters"], minimum=1)
        self.max_time = _pos("max_time", opts["max_time"])
        self.f_target = opts["f_target"]
        self.callback: Callable | None = opts["callback"]
        self.metrics_every = check_int("metrics_every", opts["metrics_every"], minimum=-1)
        self.log_every = check_int("log_every", opts["log_every"], minimum=1)
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
        # (the scale costs a pass over x: skipped at gtol = 0, where the test is |grad f| <= 0)
        if p.gn <= (self.gtol * self.gradient_scale(p) if self.gtol > 0 else 0.0):
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
        """Close the log (last record, final metrics, counts) and return ``(x, log)``."""
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


def _start(name: str, sp: _Space, o: dict):
    """Every solver's opening: a monitor, the first evaluation and the first stopping check."""
    mon = _Monitor(name, sp, o)
    p = sp.evaluate(sp.x0)
    return mon, p, mon.start(p)
