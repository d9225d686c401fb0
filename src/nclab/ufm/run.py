"""Solve a UFM problem end to end: problem and solver from options, a result dict, JSON and a figure.

Data flow (STYLE.md): ``make_problem(loss, **options)`` -> ``problem.random_start(seed)`` -> a
solver of :data:`nclab.ufm.optim.SOLVERS` -> the point -> objective, closed-form optimum and gap,
neural-collapse metrics (REFERENCE.md section 3; frame statistics for the sphere problem), the
minimiser's structure compared with the closed form (REFERENCE.md section 2) -> a JSON-ready dict,
written atomically.  This module computes and returns; the figure of a result is drawn by the
command-line layer (:func:`nclab.cli.plots.plot_result`).

Example
-------
>>> from nclab.ufm.run import solve
>>> r = solve("ce", "lbfgs", seed=0, K=4, n=5, d=4, lw=5e-3, lh=5e-3)
>>> r["converged"], r["status"], r["relative_gap"] < 1e-9 and r["metrics"]["nc1"] < 1e-6
(True, 'optimal', True)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch

from nclab._validation import check_seed
from nclab.io import write_json_atomic
from nclab.ufm.problems import make_problem
from nclab.ufm.optim import SOLVERS, get_solver
from nclab.ufm.optim.mixed import mixed_precision as run_mixed


__all__ = [
    "solve",
    "run_solver",
    "closed_form_checks",
    "write_json",
    "gap_history",
    "RESULT_KEYS",
    "MAX_LOG_RECORDS",
    "GAP_TOLERANCE",
    "FLOAT32_GTOL",
    "FLOAT32_GAP_TOLERANCE",
    "gap_tolerance",
    "STATUSES",
]

#: Keys every result of :func:`solve` has (the JSON schema's top level).
RESULT_KEYS = (
    "loss",
    "problem",
    "solver",
    "seed",
    "options",
    "objective",
    "optimum",
    "gap",
    "relative_gap",
    "grad_norm",
    "iterations",
    "seconds",
    "stop_reason",
    "converged",
    "status",
    "warnings",
    "evaluations",
    "metrics",
    "structure",
    "log",
)

#: The JSON keeps at most this many iteration records (evenly thinned; records with metrics,
#: the first and the last are always kept).
MAX_LOG_RECORDS = 2000

#: A converged run whose relative gap to the closed-form optimum exceeds this is not reported as
#: optimal (status "off_optimum"): a non-global critical point, or a stop the test let through.
GAP_TOLERANCE = 1e-6

#: The verdicts of a run (``result["status"]``):
#: "optimal" -- converged, and within GAP_TOLERANCE of the closed-form optimum;
#: "converged" -- converged, no closed form to compare with;
#: "off_optimum" -- converged, but more than GAP_TOLERANCE above the closed form;
#: "not_converged" -- stopped by a cap, a stall, a failed line search or trust region, divergence
#: or a callback (``stop_reason`` says which).
STATUSES = ("optimal", "converged", "off_optimum", "not_converged")


#: The default relative gradient tolerance of a float32 problem (float64: the solvers' 1e-8).
FLOAT32_GTOL = 1e-4

#: The verdict's gap tolerance for a float32 problem: its objective carries a relative roundoff
#: of ~1e-6 (sums of N float32 terms), so 1e-6 would call optimal points off the optimum.
FLOAT32_GAP_TOLERANCE = 1e-4


def _is_float32(problem) -> bool:
    return getattr(problem, "dtype", None) == torch.float32


def gap_tolerance(dtype=None) -> float:
    """The relative gap above which a converged run is "off_optimum": :data:`GAP_TOLERANCE`
    (float64, the default) or :data:`FLOAT32_GAP_TOLERANCE` (float32)."""
    return FLOAT32_GAP_TOLERANCE if dtype == torch.float32 else GAP_TOLERANCE


def verdict(converged: bool, stop_reason: str, relative_gap: float | None, iterations: int,
            tolerance: float = GAP_TOLERANCE) -> tuple[str, list[str]]:
    """``(status, warnings)`` of a run (see :data:`STATUSES`); the warnings are plain sentences
    for a person (empty for "optimal" and "converged").  ``tolerance``: the relative gap allowed
    to an "optimal" run (:func:`gap_tolerance`)."""
    if not converged:
        return "not_converged", [f"did not converge: stopped after {iterations} iteration(s) on "
                                 f"'{stop_reason}'; the point is not certified critical"]
    if relative_gap is not None and not relative_gap <= tolerance:
        return "off_optimum", [f"converged ('{stop_reason}') but the objective is {relative_gap:.3e} relative "
                               f"above the closed-form optimum (> {tolerance:g}): a non-global critical "
                               "point, or a gtol too loose for this problem"]
    return ("optimal" if relative_gap is not None else "converged"), []


def closed_form_checks(problem, x) -> dict[str, float | None]:
    """How far the point is from the minimiser's structure (REFERENCE.md section 2):
    ``problem.structure(x)``, a dict of relative errors, 0 at a global minimiser (each problem
    documents its keys: CE ``feature_ratio_error``, ``norm_error``, ``etf_W``, ``bias_spread`` or
    ``zero_norm``; MSE ``feature_ratio_error``, ``bias_error``, ``etf_W`` or ``orthogonality_W``,
    or ``zero_norm``; normalized ``feature_error``, ``etf_W``; sphere ``frame_potential_excess``,
    ``etf_X``).  Entries that do not apply are absent; a problem without a closed form gives {}."""
    return problem.structure(x)


def run_solver(
    problem,
    solver: str | Callable = "lbfgs",
    seed: int = 0,
    *,
    x0=None,
    max_iter: int | None = None,
    gtol: float | None = None,
    metrics_every: int = 10,
    callback: Callable | None = None,
    mixed_precision: bool = False,
    **solver_options,
) -> tuple[tuple, dict]:
    """Run ``solver`` on an existing ``problem`` from ``problem.random_start(seed)`` (or ``x0``).

    Returns ``(x, result)``: the point (tuple of tensors) and the result dict of :func:`solve`.
    ``gtol`` is the solvers' relative gradient tolerance (``|grad f| <= gtol |f| / max(|x|, 1)``,
    see :mod:`nclab.ufm.optim`; None keeps the solver's default 1e-8, or :data:`FLOAT32_GTOL` for
    a float32 problem, whose roundoff (eps = 1.2e-7) hides relative gradients far below that);
    ``solver_options`` go to the solver unchanged (e.g. ``ftol``, ``gtol_abs``, ``memory=5`` for
    L-BFGS, ``step="fixed", lr=10`` for RGD).  The solver computes on the problem's device and in
    its dtype (``x0`` is converted); the verdict's gap tolerance is :func:`gap_tolerance` of that
    dtype.  ``mixed_precision`` (float64 problems): the solver runs on the problem's float32 twin
    first, then on the problem from that point (:func:`nclab.ufm.optim.mixed.mixed_precision`);
    the result is the float64 phase's, judged as any float64 run."""
    fn = get_solver(solver) if isinstance(solver, str) else solver
    name = solver if isinstance(solver, str) else getattr(solver, "__name__", "custom")
    seed = check_seed(seed)
    if "tol" in solver_options:
        raise ValueError("tol is now called gtol (the relative gradient tolerance, as in the solvers and the CLI's --gtol)")
    opts = dict(solver_options)  # validated once, by the solver (nclab.ufm.optim.stopping)
    if mixed_precision and _is_float32(problem):
        raise ValueError("mixed_precision runs float32 then float64: build the problem in float64")
    if gtol is None and _is_float32(problem):
        gtol = FLOAT32_GTOL
    for key, value in (("gtol", gtol), ("max_iter", max_iter)):
        if value is not None:
            opts[key] = value
    opts["metrics_every"] = metrics_every
    if callback is not None:
        opts["callback"] = callback
    if x0 is None:
        x0 = problem.random_start(seed)
    if mixed_precision:
        x, log = run_mixed(fn, problem, x0, **opts)
    else:
        x, log = fn(problem, x0, **opts)
    f = float(problem.cost(x))
    opt = problem.optimum
    gap = None if opt is None else f - opt
    relative_gap = None if gap is None else gap / max(abs(opt), 1e-300)
    status, warnings = verdict(log.converged, log.stop_reason, relative_gap, log.n_iter,
                               tolerance=gap_tolerance(getattr(problem, "dtype", None)))
    metrics = log.final.get("metrics") or {}
    result: dict[str, Any] = {
        "loss": getattr(problem, "loss", ""),
        "problem": problem.describe(),
        "solver": name,
        "seed": seed,
        "options": {**problem.describe(), "solver": name, "seed": seed, "max_iter": max_iter,
                    **{k: v for k, v in log.options.items() if k != "callback"}},
        "objective": f,
        "optimum": opt,
        "gap": gap,
        "relative_gap": relative_gap,
        "grad_norm": float(log.final.get("grad_norm", math.nan)),
        "iterations": log.n_iter,
        "seconds": log.seconds,
        "stop_reason": log.stop_reason,
        "converged": log.converged,
        "status": status,
        "warnings": warnings,
        "evaluations": {"cost": log.n_cost, "grad": log.n_grad, "hess": log.n_hess},
        "metrics": metrics,
        "structure": closed_form_checks(problem, x),
        "log": log.to_dict(),
    }
    return x, result


def solve(
    loss: str = "ce",
    solver: str = "lbfgs",
    seed: int = 0,
    max_iter: int | None = None,
    gtol: float | None = None,
    *,
    metrics_every: int = 10,
    callback: Callable | None = None,
    solver_options: dict | None = None,
    device=None,
    dtype=None,
    **problem_options,
) -> dict:
    """Build ``make_problem(loss, **problem_options)``, solve it from ``random_start(seed)`` with
    ``solver`` (a :data:`SOLVERS` name) and return a JSON-ready dict with (at least)
    :data:`RESULT_KEYS`:

    * ``objective``, ``optimum`` (closed form, None when unknown), ``gap`` = objective - optimum
      (None without an optimum), ``relative_gap`` = gap/|optimum|, ``grad_norm`` (Riemannian),
      ``iterations``, ``seconds``, ``stop_reason``, ``evaluations`` (cost, grad, hess counts);
    * ``converged`` (the solver's convergence test held: not a cap, stall or failure),
      ``status`` (:data:`STATUSES`: "optimal", "converged", "off_optimum", "not_converged") and
      ``warnings`` (sentences for a person; empty when the run is optimal or converged);
    * ``metrics``: ``problem.metrics`` at the solution -- the REFERENCE.md NC metrics, or for the
      sphere problem frame_potential, frame_potential_bound, frame_potential_excess
      (= FP/bound - 1), welch_bound, max_coherence, etf_gram_error;
    * ``structure``: :func:`closed_form_checks` (distance to the closed-form minimiser's structure);
    * ``options`` (problem and solver options), ``problem`` (``problem.describe()``), ``log``
      (:meth:`SolverLog.to_dict`, metrics every ``metrics_every`` iterations).

    ``gtol`` is the relative gradient tolerance of the solvers (None: their default 1e-8);
    ``max_iter`` None keeps the solver's default.  ``device`` ("cpu", "cuda", "cuda:N"; None: the
    CPU) and ``dtype`` (torch.float64 / torch.float32 or their names, or "mixed"; None: float64) say where the
    problem and the solver compute (:func:`nclab.ufm.problems.make_problem`; asking for CUDA where
    torch has none is a ValueError); ``dtype="mixed"`` solves in float32 first and finishes in
    float64 (``run_solver(..., mixed_precision=True)``).  Bad options raise ValueError with a
    message naming the option."""
    if not isinstance(solver, str) or solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    mixed = isinstance(dtype, str) and dtype == "mixed"
    problem = make_problem(loss, device=device, dtype=torch.float64 if mixed else dtype, **problem_options)
    _, result = run_solver(
        problem, solver, seed, max_iter=max_iter, gtol=gtol, metrics_every=metrics_every,
        callback=callback, mixed_precision=mixed, **(solver_options or {}),
    )
    return result


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------
def _thin(records: list, limit: int) -> list:
    if len(records) <= limit:
        return records
    step = math.ceil(len(records) / limit)
    last = len(records) - 1
    return [r for i, r in enumerate(records) if i % step == 0 or i == last or "metrics" in r]


def write_json(path, result: dict, *, max_records: int = MAX_LOG_RECORDS) -> Path:
    """Write a result (or a list of results) as JSON atomically (temporary file + os.replace,
    :func:`nclab.io.write_json_atomic`); iteration logs longer than ``max_records`` are thinned."""

    def prune(r):
        if isinstance(r, dict) and isinstance(r.get("log"), dict) and "iterations" in r["log"]:
            r = dict(r)
            r["log"] = dict(r["log"])
            r["log"]["iterations"] = _thin(r["log"]["iterations"], max_records)
        return r

    obj = [prune(r) for r in result] if isinstance(result, list) else prune(result)
    return write_json_atomic(path, obj)


def gap_history(result: dict) -> tuple[list[int], list[float], str]:
    """(iterations, gaps, label) from a result's log: objective - optimum, or, without a closed
    form, objective - (best objective seen) (labelled as such)."""
    recs = result["log"]["iterations"]
    its = [int(r["iter"]) for r in recs]
    f = [r["objective"] if r["objective"] is not None else math.nan for r in recs]
    if result.get("optimum") is not None:
        ref, label = result["optimum"], "f - f*"
    else:
        ref, label = min(v for v in f if math.isfinite(v)), "f - f_best (no closed form)"
    return its, [v - ref for v in f], label
