"""Line searches, as small objects handed to the optimizers, and the first trial step.

A line search has one method, ``search(space, point, direction, slope, t0)``, which looks along
the curve ``t -> R_x(t d)`` from the evaluated point x (``slope = <grad f(x), d> < 0``) starting
from the trial step ``t0``, and returns ``(new point, step, ok)``: on success the new point carries
its objective AND its Riemannian gradient; on failure (no decrease found) it returns the start with
step 0 and ``ok = False``.

* :class:`Armijo` -- backtracking until sufficient decrease (cost-only trials);
* :class:`StrongWolfe` -- the strong-Wolfe conditions by bracketing and cubic zoom (Nocedal &
  Wright 2006, Algorithms 3.5 and 3.6).

Both judge decreases within the roundoff of f by the approximate conditions of Hager & Zhang (2005),
which use the derivative instead.  :func:`line_search_from_options` builds the search named by the
``line_search``/``c1``/``c2`` options of L-BFGS and CG; :func:`_first_step` is the scale-free first
trial step along -grad f.
"""

from __future__ import annotations

import math

from nclab._validation import check_choice, check_real
from nclab.ufm.optim.space import _Point, _Space, _dot

__all__ = ["Armijo", "StrongWolfe", "line_search_from_options", "LINE_SEARCHES"]

#: Relative band within which two objective values are treated as equal by the line searches:
#: there the derivative decides (approximate Armijo/Wolfe, Hager & Zhang 2005).  The costs are sums
#: of many terms whose roundoff reaches a few 1e-15 relative; 1e-10 leaves a wide margin and only
#: matters in the last digits of convergence.
_FBAND = 1e-10


def _fband(sp: _Space) -> float:
    """The band of the space's dtype: ``_FBAND``, or 100 eps where that is wider (float32:
    1.2e-5, its sums' roundoff)."""
    return max(_FBAND, 100.0 * sp.eps)

#: The ``line_search=`` option's values.
LINE_SEARCHES = ("wolfe", "armijo")


class Armijo:
    """Backtracking until ``f(R_x(t d)) <= f(x) + c1 t <grad f, d>`` (cost-only trials), the step
    multiplied by ``shrink`` after each failed trial, at most ``max_trials`` trials.

    Near convergence the decrease falls below the roundoff of f and the test becomes noise; a
    trial whose cost is within ``_FBAND |f(x)|`` of f(x) is then judged by the approximate Armijo
    condition of Hager & Zhang (2005), ``<grad f(R_x(t d)), d> <= (2 c1 - 1) <grad f(x), d>``
    (equivalent to Armijo on a quadratic), which needs the gradient at the trial point."""

    def __init__(self, c1: float = 1e-4, shrink: float = 0.5, max_trials: int = 40):
        self.c1, self.shrink, self.max_trials = c1, shrink, max_trials

    def search(self, sp: _Space, p: _Point, d, slope: float, t0: float):
        """(new point with its gradient, step, ok) -- see the module docstring."""
        c1 = self.c1
        t = t0
        slack = _fband(sp) * abs(p.f)
        for _ in range(self.max_trials):
            q = sp.retr(p, d, t)
            f = sp.cost(q)
            if math.isfinite(f):
                if abs(f - p.f) > slack:
                    if f <= p.f + c1 * t * slope:
                        return _with_grad(sp, q), t, True
                else:  # f(x+) and f(x) agree to roundoff: decide on the derivative
                    sp.grad(q)
                    if _dot(q.g, d) <= (2 * c1 - 1) * slope:
                        return q, t, True
            t *= self.shrink
        return p, 0.0, False

    def __repr__(self) -> str:
        return f"Armijo(c1={self.c1}, shrink={self.shrink}, max_trials={self.max_trials})"


def _with_grad(sp: _Space, q: _Point) -> _Point:
    if q.g is None:
        sp.grad(q)
    return q


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


class StrongWolfe:
    """Strong-Wolfe line search (Nocedal & Wright 2006, Algorithms 3.5 and 3.6, cubic interpolation):
    ``f(R_x(t d)) <= f(x) + c1 t <grad f, d>`` and ``|phi'(t)| <= c2 |phi'(0)|``.

    phi(t) = f(R_x(t d)); phi'(t) is approximated by ``<grad f(R_x(t d)), d>`` (vector transport by
    projection: exact on flat problems).  Every trial evaluates cost and gradient, at most
    ``max_evals`` of them.  When the curvature condition cannot be met within ``max_evals`` the
    best point with sufficient decrease is returned (ok still True) and when no decrease is found
    the start is returned with ok False."""

    def __init__(self, c1: float = 1e-4, c2: float = 0.9, max_evals: int = 30):
        self.c1, self.c2, self.max_evals = c1, c2, max_evals

    def search(self, sp: _Space, p: _Point, d, slope: float, t0: float):
        """(new evaluated point, step, ok) -- see the class docstring."""
        c1, c2, max_evals = self.c1, self.c2, self.max_evals
        f0 = p.f
        slack = _fband(sp) * abs(f0)

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

    def __repr__(self) -> str:
        return f"StrongWolfe(c1={self.c1}, c2={self.c2}, max_evals={self.max_evals})"


def line_search_from_options(o: dict):
    """The line search named by the options ``line_search`` ("wolfe" | "armijo"), ``c1``, ``c2``
    shared by L-BFGS and CG (validated: ``0 < c1 < c2 < 1``, c2 also for Armijo)."""
    check_choice("line_search", o["line_search"], LINE_SEARCHES)
    c1, c2 = check_real("c1", o["c1"]), check_real("c2", o["c2"])
    if not 0 < c1 < c2 < 1:
        raise ValueError(f"need 0 < c1 < c2 < 1, got c1={c1}, c2={c2}")
    return StrongWolfe(c1, c2) if o["line_search"] == "wolfe" else Armijo(c1)


def _first_step(p: _Point) -> float:
    """First trial step along -grad f: the step length ``min(1, |f|/|grad f|)`` (a unit move,
    or less where the linear model reaches f = 0 sooner), i.e. ``t = min(1, |f|/|g|)/|g|``.  Scaling
    f by any constant leaves it unchanged, unlike the usual ``min(1, 1/|g|)``, which at a loss of
    1e-30 would try a step of length 1e-30."""
    if not p.gn > 0:
        return 1.0
    length = min(1.0, abs(p.f) / p.gn) if p.f != 0 else 1.0
    return max(length, 1e-300) / p.gn
