"""Options, logs and stopping rules shared by every solver (nclab.ufm.optim.stopping and .log).

Oracles: the documented formulas of the tests (relative gradient test, stall window) evaluated
here on hand-made points; the JSON form of a log against the cleaner the log used before it went
through nclab.io.json_ready (written out below)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from nclab.ufm import optim as S
from nclab.ufm.optim.space import _Point, _Space
from nclab.ufm.optim.stopping import _COMMON_DEFAULTS, _Monitor
from nclab.ufm.problems import make_problem
from optim_problems import Quadratic

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see conftest


def test_log_records_metrics_times_and_counts():
    problem = make_problem("ce", K=3, n=4, d=3)
    problem.reset_counts()
    x, log = S.lbfgs(problem, problem.random_start(0), metrics_every=5, gtol=1e-10)
    recs = log.iterations
    assert [r["iter"] for r in recs] == list(range(len(recs)))
    assert all({"iter", "objective", "grad_norm", "time"} <= set(r) for r in recs)
    assert all(("metrics" in r) == (r["iter"] % 5 == 0 or r is recs[-1]) for r in recs)
    assert set(recs[-1]["metrics"]) >= {"nc1", "nc2_etf_means", "nc2_etf_W", "nc3", "nc4"}
    times = [r["time"] for r in recs]
    assert times == sorted(times) and log.seconds >= times[-1]
    assert (log.n_cost, log.n_grad, log.n_hess) == (problem.counts["cost"], problem.counts["grad"], 0)
    d = log.to_dict()
    assert d["n_iter"] == log.n_iter == recs[-1]["iter"] and d["stop_reason"] == log.stop_reason

    problem.reset_counts()
    _, rlog = S.trust_regions(problem, problem.random_start(0), metrics_every=-1)
    assert rlog.n_hess == problem.counts["hess"] > 0 and "metrics" not in rlog.final


def test_stopping_options():
    problem = make_problem("ce", K=4, n=5, d=4)
    x0 = problem.random_start(0)
    fstar = problem.optimum
    _, log = S.lbfgs(problem, x0, f_target=fstar * (1 + 1e-6), gtol=0)
    assert log.stop_reason == "objective <= f_target" and log.final["objective"] <= fstar * (1 + 1e-6)
    _, log = S.gradient_descent(problem, x0, max_iter=7)
    assert log.stop_reason == "max_iter" and log.n_iter == 7
    _, log = S.riemannian_gradient_descent(problem, x0, max_iter=0)
    assert log.n_iter == 0 and log.stop_reason == "max_iter"
    _, log = S.conjugate_gradient(problem, x0, callback=lambda it, x, f, g: it >= 3)
    assert log.stop_reason == "callback" and log.n_iter == 3
    _, log = S.gradient_descent(problem, x0, max_time=0.05, gtol=0, ftol=0, max_iter=10**9)
    assert log.stop_reason == "max_time"
    _, log = S.gradient_descent(problem, x0, max_iter=50, log_every=10, metrics_every=-1)
    assert [r["iter"] for r in log.iterations] == [0, 10, 20, 30, 40, 50]
    _, log = S.gradient_descent(problem, x0, lr=1e3, momentum=0.0, max_iter=1000)
    assert log.stop_reason.startswith("non-finite")  # divergence is reported, not hidden


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda p, x: S.lbfgs(p, x, memory=0), "memory"),
        (lambda p, x: S.lbfgs(p, x, line_search="exact"), "line_search"),
        (lambda p, x: S.lbfgs(p, x, scaling="diagonal"), "scaling"),
        (lambda p, x: S.lbfgs(p, x, transport="parallel"), "transport"),
        (lambda p, x: S.lbfgs(p, x, c1=0.9, c2=0.1), "c1"),
        (lambda p, x: S.gradient_descent(p, x, lr=-0.1), "lr"),
        (lambda p, x: S.gradient_descent(p, x, momentum=1.0), "momentum"),
        (lambda p, x: S.riemannian_gradient_descent(p, x, step="big"), "step"),
        (lambda p, x: S.conjugate_gradient(p, x, beta_rule="dy"), "beta_rule"),
        (lambda p, x: S.trust_regions(p, x, rho_prime=0.5), "rho_prime"),
        (lambda p, x: S.lbfgs(p, x, max_iter=-1), "max_iter"),
        (lambda p, x: S.lbfgs(p, x, gtol=-1.0), "gtol"),
        (lambda p, x: S.lbfgs(p, x, max_time=0), "max_time"),
        (lambda p, x: S.lbfgs(p, x, learning_rate=0.1), "unknown option"),
        (lambda p, x: S.get_solver("newton"), "unknown solver"),
    ],
)
def test_bad_solver_options_raise_clear_errors(call, match):
    problem = make_problem("ce")
    with pytest.raises(ValueError, match=match):
        call(problem, problem.random_start(0))


# --------------------------------------------------------------------------------------------
# the stopping rules on hand-made points
# --------------------------------------------------------------------------------------------
def _monitor(**opts):
    problem = Quadratic()
    sp = _Space(problem, problem.random_start(0))
    return _Monitor("test", sp, {**_COMMON_DEFAULTS, "max_iter": 10**6, **opts})


def _point(f, gn, xnorm):
    x = torch.zeros(4, dtype=torch.float64)
    x[0] = xnorm
    p = _Point(x, (x,))
    p.f, p.gn = f, gn
    return p


@pytest.mark.parametrize("f,xnorm", [(1.0, 0.0), (3e-40, 0.5), (2e5, 1e3), (-7.0, 20.0)])
def test_relative_gradient_test_is_the_documented_formula(f, xnorm):
    """|grad f| <= gtol |f| / max(|x|, 1): stops just below the threshold, not just above."""
    mon = _monitor(gtol=1e-8, ftol=0.0)
    threshold = 1e-8 * abs(f) / max(xnorm, 1.0)
    assert mon.check(1, _point(f, threshold * (1 - 1e-12), xnorm), None) == S.STOP_GRADIENT
    assert mon.check(1, _point(f, threshold * (1 + 1e-12), xnorm), None) is None


def test_absolute_target_and_divergence_tests():
    mon = _monitor(gtol=0.0, gtol_abs=1e-6, f_target=0.5, ftol=0.0)
    assert mon.check(1, _point(3.0, 1e-7, 1.0), None) == S.STOP_GRADIENT_ABS
    assert mon.check(1, _point(0.5, 1.0, 1.0), None) == S.STOP_TARGET
    assert mon.check(1, _point(math.nan, 1.0, 1.0), None).startswith("non-finite")
    assert mon.check(1, _point(1.0, math.inf, 1.0), None).startswith("non-finite")
    assert S.CONVERGED_REASONS == {S.STOP_GRADIENT, S.STOP_GRADIENT_ABS, S.STOP_TARGET}


def test_stall_needs_flat_objective_and_a_gradient_that_stops_halving():
    stall = 5
    mon = _monitor(gtol=0.0, ftol=1e-12, stall_iters=stall)
    f = 1.0
    # a flat objective while the gradient halves at every step: progress, never a stall
    for it in range(1, 40):
        assert mon.check(it, _point(f, 2.0**-it, 1.0), f) is None
    # the gradient stops halving: the window of flat iterations closes after stall_iters
    mon = _monitor(gtol=0.0, ftol=1e-12, stall_iters=stall)
    reasons = [mon.check(it, _point(f, 1.0, 1.0), f) for it in range(1, stall + 1)]
    assert reasons[:-1] == [None] * (stall - 1) and reasons[-1] == S.STOP_STALLED.format(stall)
    # a change larger than ftol |f| resets the window
    mon = _monitor(gtol=0.0, ftol=1e-12, stall_iters=stall)
    for it in range(1, 4 * stall):
        f_new = f * (1 - 1e-9) if it % (stall - 1) == 0 else f
        assert mon.check(it, _point(f_new, 1.0, 1.0), f) is None
        f = f_new


def test_callback_and_caps():
    seen = []
    mon = _monitor(gtol=0.0, ftol=0.0, callback=lambda it, x, f, g: seen.append((it, f, g)) or it == 2)
    assert mon.check(1, _point(1.0, 1.0, 1.0), None) is None
    assert mon.check(2, _point(0.5, 1.0, 1.0), None) == "callback"
    assert seen == [(1, 1.0, 1.0), (2, 0.5, 1.0)]
    mon = _monitor(gtol=0.0, ftol=0.0, max_iter=3)
    assert mon.check(2, _point(1.0, 1.0, 1.0), None) is None
    assert mon.check(3, _point(1.0, 1.0, 1.0), None) == "max_iter"


@pytest.mark.parametrize(
    "opts,match",
    [
        (dict(gtol=float("nan")), "gtol"),
        (dict(gtol_abs=-1e-3), "gtol_abs"),
        (dict(ftol=True), "ftol"),
        (dict(stall_iters=0), "stall_iters"),
        (dict(metrics_every=-2), "metrics_every"),
        (dict(log_every=0), "log_every"),
        (dict(max_iter=2.5), "max_iter"),
    ],
)
def test_common_options_are_validated_with_their_names(opts, match):
    with pytest.raises(ValueError, match=match):
        _monitor(**opts)


def test_infinite_tolerances_and_time_are_allowed():
    mon = _monitor(gtol=math.inf, max_time=math.inf)
    assert mon.max_time == math.inf and mon.check(1, _point(1.0, 1e300, 1.0), None) == S.STOP_GRADIENT


# --------------------------------------------------------------------------------------------
# the log's JSON form
# --------------------------------------------------------------------------------------------
def _old_jsonable(obj):
    """The log's own cleaner before it went through nclab.io.json_ready (the oracle)."""
    if isinstance(obj, dict):
        return {str(k): _old_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_old_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return _old_jsonable(obj.item())
    if obj is None or isinstance(obj, str):
        return obj
    if callable(obj):
        return getattr(obj, "__name__", repr(obj))
    return repr(obj)


def test_log_to_dict_is_what_the_old_cleaner_gave():
    """Everything a log holds: records with non-finite floats, metrics with numpy scalars, None
    and booleans, options with one-element tensors, numpy numbers and a callable."""
    log = S.SolverLog(
        solver="lbfgs",
        iterations=[
            {"iter": 0, "objective": math.inf, "grad_norm": math.nan, "time": 0.0},
            {"iter": np.int64(1), "objective": np.float32(0.25), "grad_norm": -math.inf, "time": 1e-3,
             "metrics": {"nc1": np.float64(1e-9), "nc4": None, "ok": np.bool_(True), 3: (1, 2.0)}},
        ],
        stop_reason=S.STOP_GRADIENT,
        converged=True,
        n_cost=3,
        options={"gtol": 1e-8, "f_target": torch.tensor(0.5, dtype=torch.float64), "max_time": math.inf,
                 "memory": np.int32(5), "flag": True, "hook": len, "scaling": "auto", "none": None,
                 "nan_tensor": torch.tensor([math.nan])},
    )
    d = log.to_dict()
    assert d == _old_jsonable(
        {"solver": log.solver, "stop_reason": log.stop_reason, "converged": log.converged, "n_iter": 1,
         "n_cost": 3, "n_grad": 0, "n_hess": 0, "seconds": 0.0, "options": log.options, "iterations": log.iterations}
    )
    assert [type(v) for v in d["iterations"][1]["metrics"].values()] == [float, type(None), bool, list]
    assert d["options"]["hook"] == "len" and d["options"]["nan_tensor"] is None
    json.dumps(d, allow_nan=False)


def test_a_real_log_serialises_as_before():
    problem = make_problem("normalized", K=3, n=2, d=3)
    _, log = S.lbfgs(problem, problem.random_start(0), metrics_every=2, callback=lambda *a: False, f_target=np.float64(-1))
    d = log.to_dict()
    assert d == _old_jsonable(
        {"solver": log.solver, "stop_reason": log.stop_reason, "converged": log.converged, "n_iter": log.n_iter,
         "n_cost": log.n_cost, "n_grad": log.n_grad, "n_hess": log.n_hess, "seconds": log.seconds,
         "options": log.options, "iterations": log.iterations}
    )
    json.dumps(d, allow_nan=False)


def test_json_ready_keeps_its_answers_for_what_it_handled_before():
    """The extension (numpy bools, one-element tensors, callables) leaves the old inputs alone."""
    from pathlib import Path

    from nclab.io import json_ready

    marker = object()
    assert json_ready({"a": [np.float64(math.nan), np.int8(3), 1.5, True, "s", None]}) == {"a": [None, 3, 1.5, True, "s", None]}
    assert json_ready(Path("/tmp/x")) == "/tmp/x" and json_ready(marker) is marker
    big = torch.zeros(2)
    assert json_ready(big) is big  # only one-element tensors become numbers
    assert json_ready((np.bool_(False), torch.tensor([7]), print)) == [False, 7, "print"]
