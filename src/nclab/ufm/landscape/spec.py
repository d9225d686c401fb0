"""Points named by a short spec, the vocabulary of ``nclab landscape classify --point``.

=============  ================================================================================
spec           the point
=============  ================================================================================
``origin``     W = H = 0 with the bias optimal there (CE and MSE UFM;
               :func:`nclab.ufm.landscape.origin`)
``solution``   the end point of L-BFGS from ``problem.random_start(seed)`` to the relative
               gradient tolerance :data:`SOLUTION_GTOL` (:func:`nclab.ufm.run.run_solver`)
``random``     a random point, not a critical one (:func:`nclab.ufm.landscape.random_point`)
``lowdim:D``   the global minimiser of the same problem in dimension D < d, embedded in the
               first D coordinates (:func:`nclab.ufm.landscape.lowdim_point`): a critical point,
               a strict saddle when D is below the rank of the global minimisers
``FILE.npz``   a point file (:mod:`nclab.ufm.pointfile`: W, H[, b]; X for the sphere problem)
=============  ================================================================================

:func:`make_point` returns the point and a JSON-ready description of how it was made.  Bad specs
raise ValueError with one line that says what is allowed.

>>> from nclab.ufm.problems import make_problem
>>> p = make_problem("ce", K=3, n=2, d=3)
>>> x, info = make_point(p, "lowdim:1")
>>> info["d_low"], float(x[0][:, 1:].abs().max())
(1, 0.0)
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from nclab._validation import check_seed

__all__ = ["POINT_SPECS", "SOLUTION_GTOL", "parse_point_spec", "make_point"]

#: The accepted forms of a point spec (for messages and help texts).
POINT_SPECS = ("origin", "solution", "random", "lowdim:D", "FILE.npz")

#: ``solution``: L-BFGS runs to this relative gradient tolerance (|grad f| <= gtol |f|/max(|x|,1)).
SOLUTION_GTOL = 1e-10

_LOWDIM = re.compile(r"^lowdim:(.*)$")


def _allowed() -> str:
    return ", ".join(POINT_SPECS)


def parse_point_spec(spec: str) -> tuple[str, object]:
    """``(kind, argument)``: ("origin", None), ("solution", None), ("random", None),
    ("lowdim", D) or ("file", Path).  ValueError for anything else."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"--point must be one of {_allowed()}, got {spec!r}")
    s = spec.strip()
    if s in ("origin", "solution", "random"):
        return s, None
    m = _LOWDIM.match(s)
    if m:
        try:
            D = int(m.group(1))
        except ValueError:
            raise ValueError(f"--point lowdim:D needs an integer dimension D >= 1, got {spec!r}") from None
        if D < 1:
            raise ValueError(f"--point lowdim:D needs D >= 1, got {spec!r}")
        return "lowdim", D
    if s.endswith(".npz"):
        return "file", Path(s)
    raise ValueError(f"--point must be one of {_allowed()}, got {spec!r}")


def make_point(problem, spec: str, *, seed: int = 0) -> tuple[tuple, dict]:
    """The point of ``problem`` named by ``spec`` (see the module docstring) and a description
    ``{"spec", "kind", ...}``: ``d_low`` for lowdim, ``file`` for a file, ``solve`` (solver,
    converged, status, iterations, relative_gap, grad_norm, seconds) for solution, ``seed``.

    ValueError (one line) for a bad spec, ``origin`` on a problem without the point W = H = 0
    (normalized, sphere), ``lowdim:D`` with D >= d, or a point file that does not fit."""
    seed = check_seed(seed)
    kind, arg = parse_point_spec(spec)
    info: dict = {"spec": spec, "kind": kind, "seed": seed}
    if kind == "origin":
        if problem.loss not in ("ce", "mse"):
            raise ValueError(f"--point origin is the critical point W = H = 0 of the CE and MSE UFM; "
                             f"the {problem.loss} problem lives on spheres and has no origin")
        from nclab.ufm.landscape import origin

        return origin(problem), info
    if kind == "random":
        from nclab.ufm.landscape import random_point

        return random_point(problem, seed), info
    if kind == "lowdim":
        D = int(arg)
        if D >= problem.d:
            raise ValueError(f"--point lowdim:{D} needs D < d = {problem.d} (the point is embedded in the "
                             "first D of the d coordinates)")
        from nclab.ufm.landscape import lowdim_point

        info["d_low"] = D
        return lowdim_point(problem, D, seed=seed), info
    if kind == "file":
        from nclab.ufm.pointfile import load_point

        info["file"] = str(arg)
        return load_point(arg, problem), info
    # solution
    from nclab.ufm.run import run_solver

    x, result = run_solver(problem, "lbfgs", seed, gtol=SOLUTION_GTOL, metrics_every=-1)
    info["solve"] = {k: result[k] for k in ("solver", "converged", "status", "stop_reason", "iterations",
                                            "objective", "relative_gap", "grad_norm", "seconds")}
    if not math.isfinite(result["objective"]):
        raise ValueError("--point solution: L-BFGS diverged (non-finite objective)")
    return x, info
