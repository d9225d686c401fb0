"""Case P of the UFM benchmark (nclab.benchmarks.ufm): its bound rows are the run's own counts
times the unit costs, and the table shows them with their ratio to pymanopt's best."""

from __future__ import annotations

import pytest
import torch

import nclab.benchmarks.ufm as B
from nclab.ufm.problems import make_problem

pytestmark = pytest.mark.usefixtures("one_thread")


def _case():
    rows = []
    for name, sec, gemms, iters in (("nclab lbfgs", {0: 0.02, 1: 0.03}, {0: 50, 1: 60}, {0: 16, 1: 19}),
                                    ("pymanopt ConjugateGradient", {0: 0.06, 1: 0.09}, {0: 270, 1: 280}, {0: None, 1: None})):
        per = {s: {"seconds": sec[s], "cpu_seconds": sec[s], "reached": True, "gemms": gemms[s],
                   "iterations": iters[s]} for s in (0, 1)}
        rows.append({"solver": name, "per_start": per, "seconds": max(sec.values()), "cpu_seconds": 0.0,
                     "reached": True, "gemms": 55})
    return {"problem": {"K": 10, "n": 100, "d": 64}, "starts": [0, 1], "rounds": 1, "rows": rows,
            "load": ["0", "0"], "pymanopt": True, "gemm_seconds": 1e-4, "pass_seconds": 2e-4, "memory": 5}


def test_bound_rows_are_counts_times_unit_costs():
    case = _case()
    gemm_only, with_passes = B._bound_rows(case)
    assert gemm_only["per_start"][0]["seconds"] == pytest.approx(50 * 1e-4)
    assert gemm_only["per_start"][1]["seconds"] == pytest.approx(60 * 1e-4)
    # iterations 2..m+1 read 1..m of the m pairs, every later one all of them: 3 passes each
    passes = {16: 3 * ((1 + 2 + 3 + 4) / 5 + 16 - 5), 19: 3 * ((1 + 2 + 3 + 4) / 5 + 19 - 5)}
    assert B._memory_passes(16, 5) == pytest.approx(passes[16]) and B._memory_passes(1, 5) == 0
    assert with_passes["per_start"][0]["seconds"] == pytest.approx(50 * 1e-4 + passes[16] * 2e-4)
    assert with_passes["per_start"][1]["seconds"] == pytest.approx(60 * 1e-4 + passes[19] * 2e-4)
    table, ratio, _ = B.public_table(case)
    assert ratio == pytest.approx((0.06 / 0.02 + 0.09 / 0.03) / 2)
    # vs pymanopt's best: the median over starts of pymanopt's time over the bound's
    assert case["bounds"][0]["vs_pymanopt"] == pytest.approx((0.06 / 0.005 + 0.09 / 0.006) / 2)
    assert case["bounds"][1]["vs_pymanopt"] < case["bounds"][0]["vs_pymanopt"]
    assert table.row_count == 4 and "us per GEMM" in str(table.caption)


def test_floor_costs_are_measured_on_the_problem():
    p = make_problem("normalized", K=3, n=4, d=5, tau=5.0)
    costs = B._floor_costs(p, memory=2)
    assert costs["gemm_seconds"] > 0 and costs["pass_seconds"] > 0 and costs["memory"] == 2
