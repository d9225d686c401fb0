"""Mixed precision (nclab.ufm.optim.mixed) and the float32 objective's accuracy.

Oracles: the closed-form optima of REFERENCE.md section 2, float64 evaluation of the same point,
and float64 sums of squares.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from nclab.cli import app
from nclab.ufm.optim import SOLVERS, lbfgs, mixed_precision
from nclab.ufm.optim.log import SolverLog
from nclab.ufm.optim.mixed import low_precision_twin
from nclab.ufm.problems import make_problem
from nclab.ufm.problems.logit import _sq_norm
from nclab.ufm.run import run_solver, solve

CASES = [
    ("ce", dict(K=5, n=6, d=5, lw=5e-3, lh=5e-3)),
    ("ce", dict(K=6, n=4, d=5, lw=1e-3, lh=1e-3, lb=1e-3)),  # d = K - 1
    ("mse", dict(K=4, n=5, d=6, lw=1e-3, lh=1e-3)),
    ("normalized", dict(K=5, n=6, d=8, tau=5.0)),
    ("sphere", dict(n_points=6, d=3, tau=5.0)),
]


@pytest.mark.parametrize("loss,opts", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
@pytest.mark.parametrize("solver", ["lbfgs", "rcg"])
def test_mixed_reaches_the_closed_form(loss, opts, solver):
    p = make_problem(loss, **opts)
    x, log = mixed_precision(SOLVERS[solver], p, p.random_start(1), metrics_every=-1)
    assert log.converged, log.stop_reason
    assert all(t.dtype == torch.float64 for t in x)
    f = p.cost(x)
    assert abs(f - log.final["objective"]) <= 1e-15 * max(abs(f), 1.0)  # the float64 phase's value
    if p.optimum is not None:
        assert abs(f - p.optimum) <= 1e-9 * abs(p.optimum), (f, p.optimum)
    low, high = log.options["phases"]
    assert (low["dtype"], high["dtype"]) == ("float32", "float64")
    assert low["iterations"] + high["iterations"] == log.n_iter
    assert log.n_cost == low["cost_evals"] + low["float64_checks"] + high["cost_evals"]
    assert [r["dtype"] for r in log.iterations][0] == "float32" and log.iterations[-1]["dtype"] == "float64"
    its = [r["iter"] for r in log.iterations]
    assert its == sorted(its)


def test_float64_lbfgs_starts_with_the_float32_memory_scale():
    p = make_problem("ce", K=6, n=5, d=6, lw=1e-3, lh=1e-3)
    x, log = mixed_precision(lbfgs, p, p.random_start(0), metrics_every=-1)
    gamma = log.options["initial_step"]  # the float64 phase's options
    assert gamma > 0 and log.converged
    # the scale is s^T y / y^T y of a float32 pair: within the range of the float64 curvature
    # along that step, i.e. of the same order as the float64 phase's own final scale
    assert 0.1 < gamma / log.state["inverse_hessian_scale"] < 10


def test_twin_is_the_same_problem_in_float32():
    p = make_problem("ce", K=4, n=3, d=5, lw=2e-3, lh=3e-3, lb=1e-3, class_sizes=[3, 5, 2, 4])
    low = low_precision_twin(p)
    assert low.dtype == torch.float32 and low.describe() == {**p.describe(), "dtype": "float32"}
    x = p.random_start(0)
    f64 = p.cost(x)
    f32 = low.cost(tuple(t.float() for t in x))
    assert abs(f32 - p.cost(tuple(t.float().double() for t in x))) <= 1e-6 * abs(f64)


def test_float32_objective_is_accurate_at_large_size():
    """The float32 cost of a point equals the float64 cost of the same (float32) point to float32
    rounding of the sums, not to the ~1e-5 bias of a float32-accumulated norm."""
    p64 = make_problem("ce", K=200, n=10, d=200, lw=1e-4, lh=1e-4)
    p32 = low_precision_twin(p64)
    x32 = tuple(t.float() for t in p64.optimal_point(0))
    f32 = p32.cost(x32)
    f64 = p64.cost(tuple(t.double() for t in x32))
    assert abs(f32 - f64) <= 2e-7 * abs(f64), (f32, f64)


@pytest.mark.parametrize("n", [1, 1000, (1 << 14) + 3, 5_000_001])
def test_sq_norm_float32_accumulates_accurately(n):
    gen = torch.Generator().manual_seed(n)
    A = (0.1 * torch.randn(n, generator=gen, dtype=torch.float64) + 0.05).float()
    ref = float((A.double() ** 2).sum())
    assert abs(_sq_norm(A) - ref) <= 1e-7 * ref
    assert abs(_sq_norm(A.double()) - ref) <= 1e-12 * ref


def test_caps_and_callback_run_through_both_phases():
    p = make_problem("ce", K=5, n=6, d=5, lw=5e-3, lh=5e-3)
    seen = []
    x, log = mixed_precision(lbfgs, p, p.random_start(0), max_iter=8, metrics_every=-1,
                             callback=lambda it, x, f, g: seen.append(it) or False)
    assert log.n_iter <= 8 and not log.converged
    assert seen == sorted(seen) and seen[-1] == log.n_iter  # one count through both phases
    _, full = mixed_precision(lbfgs, p, p.random_start(0), metrics_every=-1,
                              callback=lambda it, x, f, g: seen.append(it) or False)
    assert full.converged and full.options["phases"][0]["iterations"] > 0


def test_a_callback_stop_in_the_float32_phase_ends_the_whole_run():
    p = make_problem("ce", K=5, n=6, d=5, lw=5e-3, lh=5e-3)
    calls = []
    x, log = mixed_precision(lbfgs, p, p.random_start(0), metrics_every=-1,
                             callback=lambda it, x, f, g: calls.append(it) or it >= 3)
    assert log.stop_reason == "callback" and not log.converged
    assert log.n_iter == 3 and calls == [0, 1, 2, 3]  # not called again by the float64 phase
    assert all(t.dtype == torch.float64 for t in x)
    assert log.options["phases"][1]["iterations"] == 0


def test_a_diverged_float32_phase_leaves_the_float64_phase_the_start():
    p = make_problem("ce", K=4, n=5, d=4, lw=5e-3, lh=5e-3)
    x0 = p.random_start(2)

    def solver(problem, x, **options):
        if problem.dtype == torch.float32:  # a float32 phase that blew up
            nan = tuple(torch.full_like(t, math.nan) for t in problem.place(x))
            return nan, SolverLog(solver="fake", iterations=[{"iter": 3, "objective": math.nan, "grad_norm": math.nan,
                                                               "time": 0.0}], stop_reason="diverged")
        return lbfgs(problem, x, **options)

    x, log = mixed_precision(solver, p, x0, metrics_every=-1)
    _, plain = lbfgs(p, x0, metrics_every=-1)
    assert log.converged and log.options["phases"][0]["used"] is False
    assert log.options["phases"][1]["iterations"] == plain.n_iter
    assert abs(log.final["objective"] - plain.final["objective"]) <= 1e-14


def test_float64_checks_end_a_float32_phase_that_makes_no_progress():
    """A float32 phase whose steps stop lowering the float64 objective hands over at the next
    check: here a solver that keeps returning to the start after one descent step."""
    p = make_problem("ce", K=4, n=5, d=4, lw=5e-3, lh=5e-3)
    x0 = p.random_start(0)

    def stuck(problem, x, **options):
        if problem.dtype == torch.float32:  # runs plain lbfgs, but the callback sees a point stuck at x0
            cb = options.pop("callback")
            stop_at = []

            def frozen(it, xt, f, g):
                if cb(it, problem.place(x0), f, g):
                    stop_at.append(it)
                    return True
                return False
            out = lbfgs(problem, x, callback=frozen, **options)
            assert stop_at == [2 * 3]  # checks at 3 (first value) and 6 (no decrease): stopped there
            return out
        return lbfgs(problem, x, **options)

    x, log = mixed_precision(stuck, p, x0, check_every=3, metrics_every=-1)
    low = log.options["phases"][0]
    assert low["stop_reason"] == "float32 steps no longer lower the float64 objective"
    assert low["float64_checks"] >= 2 and log.converged
    assert abs(log.final["objective"] - p.optimum) <= 1e-9 * p.optimum


def test_trust_region_is_refused():
    p = make_problem("normalized", K=3, n=2, d=3, tau=2.0)
    with pytest.raises(ValueError, match="first-order solvers"):
        mixed_precision(SOLVERS["rtr"], p, p.random_start(0))


def test_refusals_name_the_dtype():
    p32 = make_problem("ce", K=3, n=2, d=3, lw=1e-3, lh=1e-3, dtype="float32")
    with pytest.raises(ValueError, match="build it in float64"):
        mixed_precision(lbfgs, p32, p32.random_start(0))
    with pytest.raises(ValueError, match="float64"):
        run_solver(p32, "lbfgs", 0, mixed_precision=True)
    p = make_problem("ce", K=3, n=2, d=3, lw=1e-3, lh=1e-3)
    with pytest.raises(ValueError, match="low_problem must be float32"):
        mixed_precision(lbfgs, p, p.random_start(0), low_problem=p)


def test_solve_dtype_mixed_is_judged_as_float64():
    r = solve("ce", "lbfgs", seed=0, K=4, n=5, d=4, lw=5e-3, lh=5e-3, dtype="mixed")
    assert r["status"] == "optimal" and r["relative_gap"] <= 1e-9
    assert r["options"]["precision"] == "mixed" and len(r["options"]["phases"]) == 2
    low = r["options"]["phases"][0]
    assert low["dtype"] == "float32" and low["stop_reason"] == "relative gradient norm <= gtol"
    assert r["log"]["iterations"][0]["dtype"] == "float32"


def test_cli_dtype_mixed(tmp_path):
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["ufm", "solve", "--loss", "ce", "--classes", "4", "--per-class", "5",
                                   "--dim", "4", "--dtype", "mixed", "--json", str(out)])
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert r["status"] == "optimal" and [ph["dtype"] for ph in r["options"]["phases"]] == ["float32", "float64"]
    assert "float32 phase" in res.output
    bad = CliRunner().invoke(app, ["ufm", "solve", "--dtype", "half"])
    assert bad.exit_code == 2 and "--dtype must be float64, float32 or mixed" in bad.output
