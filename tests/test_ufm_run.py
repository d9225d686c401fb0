"""The solve orchestration of nclab.ufm.run: options from Python and the documented result."""

from __future__ import annotations

import pytest

from nclab.ufm.problems import make_problem
from nclab.ufm.run import RESULT_KEYS, run_solver, solve

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see conftest


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(loss="ce", K=1), "K"),
        (dict(loss="mse", lw=-1e-3), "lw"),
        (dict(loss="ce", lh=-1.0), "lh"),
        (dict(loss="normalized", tau=0.0), "tau"),
        (dict(loss="sphere", tau=-2.0), "tau"),
        (dict(loss="ce", d=0), "d"),
        (dict(loss="ce", solver="newton"), "unknown solver"),
        (dict(loss="hinge"), "unknown loss"),
        (dict(loss="ce", seed=-1), "seed"),
        (dict(loss="ce", gtol=-1.0), "gtol"),
        (dict(loss="ce", solver_options=dict(tol=1e-8)), "tol is now called gtol"),
    ],
)
def test_bad_options_from_python_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        solve(**kwargs)


def test_solve_returns_the_documented_result():
    r = solve("ce", "lbfgs", seed=0, max_iter=500, gtol=1e-10, K=4, n=5, d=4)
    assert set(RESULT_KEYS) <= set(r)
    assert r["gap"] == pytest.approx(r["objective"] - r["optimum"], abs=0)
    assert abs(r["relative_gap"]) < 1e-9 and r["iterations"] == r["log"]["n_iter"]
    assert r["metrics"]["nc1"] < 1e-6 and max(r["structure"].values()) < 1e-6
    s = solve("sphere", "rtr", seed=0, n_points=9, d=3)
    assert s["optimum"] is None and s["gap"] is None and s["relative_gap"] is None
    assert {"frame_potential", "frame_potential_bound", "frame_potential_excess", "welch_bound"} <= set(s["metrics"])
    assert s["metrics"]["frame_potential_bound"] == 27.0
    assert r["converged"] is True and r["status"] == "optimal" and r["warnings"] == []
    x, r2 = run_solver(make_problem("ce"), "lbfgs", 0, gtol=1e-10)
    assert r2["objective"] == pytest.approx(r["objective"], rel=1e-12) and len(x) == 3
