"""Surveys of the UFM landscapes: where the solvers end, which critical points exist, and the
d = K case of Gu & Shen 2024.  Computation only: every function returns plain dicts and lists
(JSON-ready); the tables and figures are drawn by :mod:`nclab.cli.landscape`.

* :func:`random_start_survey` (a) -- every solver of :data:`nclab.ufm.optim.SOLVERS` from random
  starts, on the CE UFM, the MSE UFM with and without a bias and the normalized UFM, for
  d in {K-1, K, 2K}, several weight decays (beta = sqrt(n lw lh) < 1/K, so the optimum is the
  collapsed configuration of REFERENCE.md section 2) and temperatures; each end point is classified
  (:func:`nclab.ufm.landscape.classify`).  Plain gradient descent (heavy ball, the papers'
  baseline) runs under an iteration cap, and a run that stops on its cap is reported as such
  (``converged`` False), whatever its end point's class.
* :func:`critical_point_catalogue` (b) -- constructed critical points (the origin W = H = 0 and
  every ``lowdim:D``, D < d: the minimiser of the D-dimensional problem embedded) and critical
  points found from random starts (:func:`nclab.ufm.landscape.find_critical_point`), each
  classified, with the kind the theory predicts where it predicts one; and the dense Hessian
  spectra (orbit deflated) of a strict saddle and of a global minimiser of a small problem.
* :func:`gu_shen_check` (c) -- the d = K claims of Gu & Shen 2024 (Theorems 1.1 and 1.2) read
  off (a) and (b) for CE and MSE: every uncapped random start reaches the certified global
  minimum, and every constructed lower-dimensional critical point is a strict saddle.
* :func:`run_survey` -- all three, with one progress callback.

Settings are plain dicts (:data:`QUICK`, :data:`DEFAULT`; :func:`survey_settings`).

Example
-------
>>> from nclab.ufm.landscape.survey import survey_settings, critical_point_catalogue
>>> s = survey_settings(quick=True, configs=["ce"], dims=["K"], catalogue_starts=0)
>>> cat = critical_point_catalogue(s)
>>> [(p["label"], p["kind"]) for p in cat["points"]]
[('origin', 'strict_saddle'), ('lowdim:1', 'strict_saddle'), ('lowdim:2', 'global_minimiser')]
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from typing import Callable

from nclab._validation import check_int

__all__ = [
    "CONFIGS",
    "QUICK",
    "DEFAULT",
    "survey_settings",
    "expected_kind",
    "random_start_survey",
    "critical_point_catalogue",
    "gu_shen_check",
    "run_survey",
]

#: The problem families of the survey: name -> (loss, fixed options).
CONFIGS: dict[str, tuple[str, dict]] = {
    "ce": ("ce", {"bias": True, "lb": 0.0}),
    "mse": ("mse", {"bias": True, "lb": 0.0}),
    "mse-nobias": ("mse", {"bias": False, "lb": 0.0}),
    "normalized": ("normalized", {}),
}

#: The smallest dimension of a global minimiser (the rank of W there): a simplex ETF needs K-1
#: dimensions, an orthogonal frame (MSE without a bias) K.
_RANK = {"ce": -1, "mse": -1, "mse-nobias": 0, "normalized": -1}

#: ``--quick``: K = 3 (well under a minute on one core).
QUICK: dict = {
    "K": 3,
    "n": 2,
    "dims": ["K-1", "K", "2K"],
    "configs": list(CONFIGS),
    "lambdas": [[5e-3, 5e-3]],
    "taus": [5.0],
    "solvers": ["lbfgs", "gd", "rgd", "rcg", "rtr"],
    "seeds": 2,
    "gd_max_iter": 300,
    "gtol": None,
    "catalogue_starts": 2,
    "spectrum": {"config": "ce", "K": 3, "n": 2, "d": 3},
}

#: The default survey: K = 4, three weight decays and three temperatures, four starts.
DEFAULT: dict = {
    **QUICK,
    "K": 4,
    "n": 5,
    "lambdas": [[5e-3, 5e-3], [1e-2, 5e-3], [2e-2, 2e-2]],
    "taus": [2.0, 5.0, 10.0],
    "seeds": 4,
    "gd_max_iter": 2000,
    "catalogue_starts": 3,
}


def survey_settings(quick: bool = False, **overrides) -> dict:
    """A copy of :data:`QUICK` or :data:`DEFAULT` with ``overrides``; checked (ValueError)."""
    s = copy.deepcopy(QUICK if quick else DEFAULT)
    unknown = sorted(set(overrides) - set(s))
    if unknown:
        raise ValueError(f"unknown survey setting(s) {', '.join(unknown)}; allowed: {', '.join(s)}")
    s.update(copy.deepcopy(overrides))
    K = check_int("K", s["K"], minimum=2)
    n = check_int("n", s["n"], minimum=1)
    for lw, lh in s["lambdas"]:
        beta = math.sqrt(n * lw * lh)
        if not beta < 1.0 / K:
            raise ValueError(f"lambdas: beta = sqrt(n lw lh) = {beta:.3g} must be < 1/K = {1 / K:.3g} "
                             f"(lw={lw}, lh={lh}): the survey studies the collapsed optimum")
    for t in s["taus"]:
        if not t > 0:
            raise ValueError(f"taus must be > 0, got {t}")
    for c in s["configs"]:
        if c not in CONFIGS:
            raise ValueError(f"unknown config {c!r}; choose from {', '.join(CONFIGS)}")
    if "K" not in s["dims"]:
        raise ValueError("dims must contain 'K' (the d = K case of Gu & Shen 2024)")
    for d in s["dims"]:
        _dim(d, K)
    check_int("seeds", s["seeds"], minimum=1)
    check_int("gd_max_iter", s["gd_max_iter"], minimum=1)
    check_int("catalogue_starts", s["catalogue_starts"], minimum=0)
    return s


def _dim(spec, K: int) -> int:
    """'K-1', 'K', '2K' or an integer -> the dimension."""
    if isinstance(spec, int):
        return check_int("d", spec, minimum=1)
    table = {"K-1": K - 1, "K": K, "K+1": K + 1, "2K": 2 * K}
    if spec not in table:
        raise ValueError(f"dims: {spec!r} is not one of {', '.join(table)} or an integer")
    return max(table[spec], 1)


def _params(config: str, s: dict) -> list[dict]:
    if CONFIGS[config][0] == "normalized":
        return [{"tau": float(t)} for t in s["taus"]]
    return [{"lw": float(lw), "lh": float(lh)} for lw, lh in s["lambdas"]]


def _problem(config: str, K: int, n: int, d: int, params: dict):
    from nclab.ufm.problems import make_problem

    loss, fixed = CONFIGS[config]
    return make_problem(loss, K=K, n=n, d=d, **fixed, **params)


def expected_kind(config: str, point: str, K: int, d: int, d_low: int | None = None) -> str | None:
    """The kind the theory predicts for a constructed point, None where it predicts nothing
    specific (a point found by a solver: any kind but ``local_non_global_minimiser``).

    * ``origin`` (beta < 1/K): a strict saddle (REFERENCE.md section 2, the Hessian's smallest
      eigenvalue (lw+lh)/2 - sqrt(((lw-lh)/2)^2 + 1/(K^2 n)) < 0);
    * ``lowdim:D``: a global minimiser when D reaches the rank of the global minimisers in
      dimension d (min(d, K-1) for a simplex ETF, min(d, K) for the orthogonal frame of MSE
      without a bias), else a strict saddle (an unused direction of R^d curves down)."""
    if point == "origin":
        return "strict_saddle"
    if point == "lowdim":
        rank = min(d, K + _RANK[config])
        return "global_minimiser" if d_low >= rank else "strict_saddle"
    return None


def _classify_row(problem, x, seed: int) -> dict:
    from nclab.ufm.landscape import classify

    c = classify(problem, x, seed=seed).as_dict()
    cert = c.get("certificate") or {}
    return {
        "kind": c["kind"],
        "reason": c.get("reason"),
        "objective": c.get("objective"),
        "optimum": c.get("optimum"),
        "relative_gap": c.get("relative_gap"),
        "grad_norm": c.get("grad_norm"),
        "lambda_min": c.get("lambda_min"),
        "eig_threshold": c.get("eig_threshold"),
        "certificate_ratio": cert.get("ratio") if isinstance(cert, dict) else None,
        "hvps": c.get("hvps"),
        "classify_seconds": c.get("seconds"),
    }


def _tick(progress, done: int, total: int, text: str) -> None:
    if progress is not None:
        progress(done, total, text)


# ----------------------------------------------------------------------------------------------
# (a) random starts
# ----------------------------------------------------------------------------------------------
def _start_jobs(s: dict) -> list[tuple]:
    jobs = []
    for config in s["configs"]:
        for dspec in s["dims"]:
            d = _dim(dspec, s["K"])
            for params in _params(config, s):
                for solver in s["solvers"]:
                    for seed in range(s["seeds"]):
                        jobs.append((config, dspec, d, params, solver, seed))
    return jobs


def _summarise_starts(runs: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["config"], r["d_spec"], r["d"], r["solver"]), []).append(r)
    out = []
    for (config, dspec, d, solver), rs in groups.items():
        its = [r["iterations"] for r in rs]
        gaps = [r["relative_gap"] for r in rs if r["relative_gap"] is not None]
        n_global = sum(r["kind"] == "global_minimiser" for r in rs)
        out.append({
            "config": config, "d_spec": dspec, "d": d, "solver": solver, "runs": len(rs),
            "global": n_global, "fraction_global": n_global / len(rs),
            "converged": sum(bool(r["converged"]) for r in rs),
            "capped": sum(r["stop_reason"] == "max_iter" for r in rs),
            "kinds": {k: sum(r["kind"] == k for r in rs) for k in sorted({r["kind"] for r in rs})},
            "median_iterations": statistics.median(its), "max_iterations": max(its),
            "max_relative_gap": max(gaps) if gaps else None,
        })
    return out


def random_start_survey(settings: dict, progress: Callable | None = None, *, _offset: int = 0,
                        _total: int | None = None) -> dict:
    """(a): every solver from ``settings["seeds"]`` random starts on every configuration.

    Returns ``{"runs": [...], "summary": [...]}``.  A run: config, d_spec, d, params, solver,
    seed, converged, status, stop_reason, iterations, seconds, relative_gap (of the solver's end
    point), and its classification (kind, lambda_min, grad_norm, certificate_ratio, hvps, ...).
    A summary row per (config, d, solver): runs, global (end point classified
    ``global_minimiser``), fraction_global, converged, capped (stopped on the iteration cap),
    kinds, median_iterations, max_iterations, max_relative_gap.  ``progress(done, total, text)``
    is called after each run."""
    from nclab.ufm.run import run_solver

    s = settings
    jobs = _start_jobs(s)
    total = _total if _total is not None else len(jobs)
    runs = []
    for i, (config, dspec, d, params, solver, seed) in enumerate(jobs):
        problem = _problem(config, s["K"], s["n"], d, params)
        opts = {"max_iter": s["gd_max_iter"]} if solver == "gd" else {}
        x, r = run_solver(problem, solver, seed, gtol=s["gtol"], metrics_every=-1, **opts)
        row = {"config": config, "d_spec": dspec, "d": d, "params": params, "solver": solver, "seed": seed,
               "converged": r["converged"], "status": r["status"], "stop_reason": r["stop_reason"],
               "iterations": r["iterations"], "seconds": r["seconds"], "solver_relative_gap": r["relative_gap"]}
        row.update(_classify_row(problem, x, seed))
        runs.append(row)
        _tick(progress, _offset + i + 1, total, f"(a) {config} d={d} {solver} seed {seed}")
    return {"runs": runs, "summary": _summarise_starts(runs)}


# ----------------------------------------------------------------------------------------------
# (b) the catalogue of critical points
# ----------------------------------------------------------------------------------------------
def _catalogue_jobs(s: dict) -> list[tuple]:
    jobs = []
    for config in s["configs"]:
        params = _params(config, s)[0]
        for dspec in s["dims"]:
            d = _dim(dspec, s["K"])
            if CONFIGS[config][0] in ("ce", "mse"):
                jobs.append((config, dspec, d, params, "origin", None))
            for D in range(1, d):
                jobs.append((config, dspec, d, params, "lowdim", D))
            for seed in range(s["catalogue_starts"]):
                jobs.append((config, dspec, d, params, "found", seed))
    return jobs


def _spectra(s: dict) -> dict:
    """Dense Hessian spectra (orbit deflated) at a strict saddle (lowdim:1) and at the global
    minimiser (the closed-form optimal point) of the small problem ``settings["spectrum"]``."""
    from nclab.ufm.diagnostics import hessian_spectrum
    from nclab.ufm.landscape import lowdim_point

    sp = s["spectrum"]
    config = sp["config"]
    problem = _problem(config, sp["K"], sp["n"], sp["d"], _params(config, s)[0])
    points = {"saddle": ("lowdim:1", lowdim_point(problem, 1, seed=0)),
              "minimiser": ("optimal_point", problem.optimal_point(seed=0))}
    out = {"problem": problem.describe(), "deflated": True}
    for name, (label, x) in points.items():
        ev = hessian_spectrum(problem, x, deflate=True)
        out[name] = {"point": label, "kind": _classify_row(problem, x, 0)["kind"],
                     "eigenvalues": [float(v) for v in ev]}
    return out


def critical_point_catalogue(settings: dict, progress: Callable | None = None, *, _offset: int = 0,
                             _total: int | None = None) -> dict:
    """(b): constructed and found critical points of every configuration (the first weight decay
    or temperature), each classified.

    Returns ``{"points": [...], "spectra": {...}, "agreement": {...}}``.  A point: config,
    d_spec, d, params, point ("origin", "lowdim", "found"), d_low (lowdim), seed (found),
    expected (:func:`expected_kind`), matches (kind == expected, None without a prediction),
    the classification and, for found points, the finder's info.  ``spectra``: see
    :func:`_spectra`.  ``agreement``: how many predictions held, and whether a found point was a
    ``local_non_global_minimiser`` (the theorems say none exists)."""
    from nclab.ufm.landscape import find_critical_point, lowdim_point, origin, random_point

    s = settings
    jobs = _catalogue_jobs(s)
    total = _total if _total is not None else len(jobs) + 1
    points = []
    for i, (config, dspec, d, params, kind, arg) in enumerate(jobs):
        problem = _problem(config, s["K"], s["n"], d, params)
        t0 = time.perf_counter()
        row = {"config": config, "d_spec": dspec, "d": d, "params": params, "point": kind}
        if kind == "origin":
            x = origin(problem)
            label = "origin"
        elif kind == "lowdim":
            x = lowdim_point(problem, arg, seed=0)
            row["d_low"] = arg
            label = f"lowdim:{arg}"
        else:
            x, info = find_critical_point(problem, random_point(problem, arg))
            row["seed"] = arg
            row["finder"] = _plain(info)
            label = f"found (seed {arg})"
        row["label"] = label
        row["construct_seconds"] = time.perf_counter() - t0
        row.update(_classify_row(problem, x, 0))
        row["expected"] = expected_kind(config, kind, s["K"], d, arg if kind == "lowdim" else None)
        row["matches"] = None if row["expected"] is None else row["kind"] == row["expected"]
        points.append(row)
        _tick(progress, _offset + i + 1, total, f"(b) {config} d={d} {label}")
    spectra = _spectra(s)
    _tick(progress, _offset + len(jobs) + 1, total, "(b) Hessian spectra")
    predicted = [p for p in points if p["expected"] is not None]
    agreement = {
        "predicted": len(predicted),
        "held": sum(bool(p["matches"]) for p in predicted),
        "mismatches": [{k: p[k] for k in ("config", "d", "label", "kind", "expected")} for p in predicted
                       if not p["matches"]],
        "found": sum(p["point"] == "found" for p in points),
        "found_kinds": _count(p["kind"] for p in points if p["point"] == "found"),
        "spurious_local_minima": sum(p["kind"] == "local_non_global_minimiser" for p in points),
    }
    return {"points": points, "spectra": spectra, "agreement": agreement}


def _count(items) -> dict:
    out: dict = {}
    for k in items:
        out[k] = out.get(k, 0) + 1
    return out


def _plain(info) -> dict:
    """The JSON-ready scalars of a finder's info dict (tensors and logs left out)."""
    if not isinstance(info, dict):
        return {}
    return {k: v for k, v in info.items() if isinstance(v, (int, float, str, bool)) or v is None}


# ----------------------------------------------------------------------------------------------
# (c) Gu & Shen 2024, d = K
# ----------------------------------------------------------------------------------------------
def gu_shen_check(starts: dict, catalogue: dict, K: int, capped_solvers=("gd",)) -> dict:
    """The d = K claims of Gu & Shen 2024 for CE (Theorem 1.1) and MSE (Theorem 1.2), from the
    results of (a) and (b): per configuration, the random starts at d = K of every solver but the
    capped ones (``capped_solvers``) and how many reached the certified global minimum; the
    constructed lower-dimensional critical points (origin, lowdim:D with D below the rank) and
    how many are strict saddles.  ``holds`` is True when every start reached the global minimum
    and every such point is a strict saddle (None when there was nothing to check)."""
    out = {}
    for config in ("ce", "mse", "mse-nobias"):
        runs = [r for r in starts["runs"] if r["config"] == config and r["d"] == K
                and r["solver"] not in capped_solvers]
        saddles = [p for p in catalogue["points"] if p["config"] == config and p["d"] == K
                   and p["expected"] == "strict_saddle"]
        if not runs and not saddles:
            continue
        capped = [r for r in starts["runs"] if r["config"] == config and r["d"] == K and r["solver"] in capped_solvers]
        n_global = sum(r["kind"] == "global_minimiser" for r in runs)
        n_strict = sum(p["kind"] == "strict_saddle" for p in saddles)
        lam = [p["lambda_min"] for p in saddles if p["lambda_min"] is not None]
        out[config] = {
            "starts": len(runs), "global": n_global,
            "capped_starts": len(capped), "capped_global": sum(r["kind"] == "global_minimiser" for r in capped),
            "saddles": len(saddles), "strict": n_strict,
            "largest_saddle_lambda_min": max(lam) if lam else None,
            "holds": n_global == len(runs) and n_strict == len(saddles),
        }
    verdicts = [v["holds"] for v in out.values()]
    return {"d": K, "configs": out, "holds": all(verdicts) if verdicts else None}


# ----------------------------------------------------------------------------------------------
def run_survey(settings: dict | None = None, progress: Callable | None = None) -> dict:
    """(a), (b) and (c) with one progress callback ``progress(done, total, text)``.

    Returns ``{"settings", "starts", "catalogue", "gu_shen", "seconds"}`` (JSON-ready)."""
    s = survey_settings() if settings is None else settings
    t0 = time.perf_counter()
    n_a, n_b = len(_start_jobs(s)), len(_catalogue_jobs(s)) + 1
    total = n_a + n_b
    starts = random_start_survey(s, progress, _offset=0, _total=total)
    catalogue = critical_point_catalogue(s, progress, _offset=n_a, _total=total)
    return {
        "settings": s,
        "starts": starts,
        "catalogue": catalogue,
        "gu_shen": gu_shen_check(starts, catalogue, s["K"], capped_solvers=("gd",)),
        "seconds": time.perf_counter() - t0,
    }
