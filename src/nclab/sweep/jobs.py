"""The job kinds of a sweep: what one job is, its stable key, and how it runs into one table row.

A job is a plain dict ``{"kind": KIND, "options": {...}, "seed": int}`` (JSON-ready, picklable,
the same on every backend).  Each kind is ONE call of the library function its command-line
command uses, so a sweep runs exactly what the command would:

======================  ==========================================================================
kind                    the call
======================  ==========================================================================
``ufm solve``           :func:`nclab.ufm.run.solve` ``(loss, solver, seed, max_iter, gtol,
                        metrics_every=0, **problem_options)`` (``nclab ufm solve``)
``landscape classify``  :func:`nclab.ufm.problems.make_problem` -> :func:`nclab.ufm.landscape.spec.
                        make_point` ``(problem, point, seed)`` -> :func:`nclab.ufm.landscape.classify`
                        ``(problem, x, deflate, seed)`` (``nclab landscape classify``)
``train``               not yet: a config naming it is rejected (:data:`PLANNED`)
======================  ==========================================================================

Options of both kinds: ``loss`` and the problem options of :data:`nclab.ufm.problems.DEFAULTS`
(K, n, d, lw, lh, lb, bias, class_sizes, tau, n_points), plus ``lambda`` (sets lw = lh = lambda,
the usual one-parameter weight decay).  ``ufm solve`` adds ``solver``, ``max_iter``, ``gtol``;
``landscape classify`` adds ``point`` (origin | solution | random | lowdim:D | FILE.npz) and
``deflate``.

The job key (:func:`job_key`) is the first 16 hex digits of the SHA-256 of the canonical JSON of
``{"kind", "options", "seed"}`` (keys sorted; the config casts every value to its option's type first, so 0.001 and
1e-3, or 1 and 1.0 for a real option, are one key): the same job has the same key in every run, on every machine, which is
what resume relies on.

The row of a job (:func:`run_job`; never raises): ``job_key``, ``job`` (the kind), ``seed``, the
options (``class_sizes`` as JSON text), the resolved problem (``loss``, ``K``, ``n``, ``d``, ...,
defaults filled in) and ``beta`` = sqrt(n lw lh) for the CE and MSE UFM (REFERENCE.md section 2),
then the result:

* ``ufm solve``: ``objective``, ``optimum``, ``gap``, ``relative_gap``, ``grad_norm``,
  ``iterations``, ``stop_reason``, ``converged``, ``status``, the NC metrics at the solution
  (``nc1``, ``nc2_etf_W``, ..., or the sphere problem's frame statistics) and the distance to the
  minimiser's structure as ``structure_<name>`` (:func:`nclab.ufm.run.closed_form_checks`);
* ``landscape classify``: ``kind`` (:data:`nclab.ufm.landscape.KINDS`), ``reason``,
  ``objective``, ``optimum``, ``gap``, ``relative_gap``, ``grad_norm``, ``lambda_min``,
  ``certificate_holds``, ``hvps``, and for ``point: solution`` the solve's ``converged``,
  ``status`` and ``iterations``;
* every row: ``seconds`` (wall time of the job) and ``error`` (None, or ``"Type: message"`` of the
  exception the job raised; the row then has ``status`` "failed").

Every job runs with one intra-op torch thread (:func:`run_chunk`), whichever backend runs it, so
the numbers are bit for bit the same on every backend.

>>> job = {"kind": "ufm solve", "options": {"loss": "ce", "K": 3, "n": 2, "lambda": 0.01}, "seed": 0}
>>> row = run_job(job)
>>> row["error"], row["status"], row["lw"] == row["lh"] == 0.01, len(job_key(job))
(None, 'optimal', True, 16)
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import traceback
from typing import Any, Callable

__all__ = ["KINDS", "PLANNED", "OPTION_TYPES", "kind_options", "job_key", "run_job", "run_chunk", "problem_options"]

#: The job kinds a sweep runs.
KINDS = ("ufm solve", "landscape classify")
#: Kinds the command line has but sweeps do not run yet, with the reason given to the user.
PLANNED = {"train": "the kind 'train' is not available in sweeps yet (planned); sweep `nclab train` runs "
                    "with a shell loop for now"}

#: Every option a job may take and its type: "int", "real", "bool", "str" or "ints" (a list).
OPTION_TYPES = {
    "loss": "str", "K": "int", "n": "int", "d": "int", "n_points": "int",
    "lw": "real", "lh": "real", "lb": "real", "lambda": "real", "tau": "real", "bias": "bool",
    "class_sizes": "ints",
    "solver": "str", "max_iter": "int", "gtol": "real",
    "point": "str", "deflate": "bool",
}
_PROBLEM = ("K", "n", "d", "n_points", "lw", "lh", "lb", "tau", "bias", "class_sizes")
_OWN = {"ufm solve": ("solver", "max_iter", "gtol"), "landscape classify": ("point", "deflate")}


def kind_options(kind: str) -> tuple[str, ...]:
    """The options a job of ``kind`` takes (``loss``, ``lambda``, the problem's and the kind's own)."""
    return ("loss", "lambda", *_PROBLEM, *_OWN[kind])


def job_key(job: dict) -> str:
    """A stable 16-hex-digit key of a job: SHA-256 of its canonical JSON (module docstring)."""
    payload = {"kind": job["kind"], "seed": int(job["seed"]),
               "options": dict(sorted(job["options"].items()))}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def problem_options(options: dict) -> tuple[str, dict]:
    """``(loss, make_problem options)`` of a job's options: ``lambda`` becomes lw = lh."""
    loss = options.get("loss", "ce")
    popts = {k: options[k] for k in _PROBLEM if k in options}
    if "lambda" in options:
        popts["lw"] = popts["lh"] = options["lambda"]
    return loss, popts


def _describe(desc: dict) -> dict:
    desc = dict(desc)
    if desc.get("class_sizes") is not None:
        desc["class_sizes"] = json.dumps([int(v) for v in desc["class_sizes"]])
    if all(desc.get(k) is not None for k in ("n", "lw", "lh")) and desc.get("loss") in ("ce", "mse"):
        desc["beta"] = math.sqrt(desc["n"] * desc["lw"] * desc["lh"])
    return desc


def _solve(options: dict, seed: int) -> dict:
    from nclab.ufm.run import solve

    loss, popts = problem_options(options)
    r = solve(loss, options.get("solver", "lbfgs"), seed, options.get("max_iter"), options.get("gtol"),
              metrics_every=0, **popts)
    row = _describe(r["problem"])
    row.update({k: r[k] for k in ("objective", "optimum", "gap", "relative_gap", "grad_norm", "iterations",
                                  "stop_reason", "converged", "status")})
    row.update({k: float(v) for k, v in r["metrics"].items()})
    row.update({f"structure_{k}": (None if v is None else float(v)) for k, v in r["structure"].items()})
    return row


def _classify(options: dict, seed: int) -> dict:
    from nclab.ufm.landscape import classify
    from nclab.ufm.landscape.spec import make_point
    from nclab.ufm.problems import make_problem

    loss, popts = problem_options(options)
    problem = make_problem(loss, **popts)
    x, info = make_point(problem, options.get("point", "solution"), seed=seed)
    c = classify(problem, x, deflate=options.get("deflate", True), seed=seed)
    row = _describe(problem.describe())
    row.update(kind=c.kind, reason=c.reason, objective=c.objective, optimum=c.optimum,
               gap=None if c.optimum is None else c.objective - c.optimum, relative_gap=c.relative_gap,
               grad_norm=c.grad_norm, lambda_min=c.lambda_min,
               certificate_holds=None if c.certificate is None else bool(c.certificate["holds"]), hvps=c.hvps)
    solved = info.get("solve")
    if solved is not None:
        row.update(converged=solved["converged"], status=solved["status"], iterations=solved["iterations"])
    return row


_RUNNERS: dict[str, Callable[[dict, int], dict]] = {"ufm solve": _solve, "landscape classify": _classify}


def _option_columns(options: dict) -> dict:
    out = {}
    for k, v in options.items():
        out[k] = json.dumps(v) if isinstance(v, (list, tuple)) else v
    return out


def run_job(job: dict) -> dict:
    """Run one job and return its row (module docstring); an exception becomes the row's
    ``error`` (``"Type: message"``, one line) with ``status`` "failed": a job never raises."""
    t0 = time.perf_counter()
    base = {"job_key": job_key(job), "job": job["kind"], "seed": int(job["seed"]), **_option_columns(job["options"])}
    try:
        row = _RUNNERS[job["kind"]](job["options"], int(job["seed"]))
        error = None
    except Exception as err:  # recorded, not fatal: the sweep goes on
        message = " ".join(str(err).split()) or traceback.format_exception_only(type(err), err)[-1].strip()
        row, error = {"status": "failed"}, f"{type(err).__name__}: {message}"
    out = {**row, **base}
    out["seconds"] = time.perf_counter() - t0
    out["error"] = error
    return out


def run_chunk(jobs: list[dict]) -> list[dict]:
    """Run jobs one after the other with one intra-op torch thread (restored afterwards) and return
    their rows.  The unit of work a backend hands to a worker: batching several jobs per task
    amortises the per-task overhead of a process pool or of Ray."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [run_job(job) for job in jobs]
    finally:
        torch.set_num_threads(threads)
