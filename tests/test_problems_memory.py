"""The memory guard of make_problem: estimated before anything is allocated, refused with numbers."""

from __future__ import annotations

import math
import time
import tracemalloc

import pytest
from typer.testing import CliRunner

from nclab.cli import app
from nclab.ufm.problems import make_problem
from nclab.ufm.problems.memory import available_memory, estimate_bytes


def test_the_estimate_counts_variables_and_logits():
    K, n, d = 10, 7, 5
    N = K * n
    D = (K + N) * d + K
    assert estimate_bytes("ce", dict(K=K, n=n, d=d, class_sizes=None)) == (
        8 * (24 * D + 8 * N * K) + 8 * N, f"{D:,} variables and {N * K:,} logits")
    b, _ = estimate_bytes("ce", dict(K=3, n=None, d=2, class_sizes=[1, 4, 2]))
    assert b == 8 * (24 * ((3 + 7) * 2 + 3) + 8 * 7 * 3) + 8 * 7
    assert estimate_bytes("sphere", dict(n_points=6, d=3))[0] == 8 * (24 * 18 + 8 * 36) + 8 * 6
    assert estimate_bytes("normalized", dict(K="4", n=5, d=4)) is None  # invalid: the problem reports it


@pytest.mark.parametrize("loss,opts", [("ce", dict(K=100_000, n=1000, d=10_000)),
                                       ("normalized", dict(K=3000, n=100, d=3000))])
def test_a_huge_problem_is_refused_before_it_allocates(loss, opts):
    if available_memory() is None:
        pytest.skip("the operating system does not report the available memory")
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"needs about .* GiB of memory .* available; .*memory_limit"):
        make_problem(loss, **opts)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 1.0 and peak < 2**20  # nothing of the problem's size was allocated


def test_the_limit_can_be_set_or_lifted():
    with pytest.raises(ValueError, match="allowed by memory_limit"):
        make_problem("ce", K=4, n=5, memory_limit=1e-6)
    assert make_problem("ce", K=4, n=5, memory_limit=1.0).N == 20
    assert make_problem("ce", K=4, n=5, memory_limit=math.inf).N == 20
    with pytest.raises(ValueError, match="memory_limit must be"):
        make_problem("ce", memory_limit=-1)


def test_the_cli_refuses_with_one_line_and_exit_2():
    res = CliRunner().invoke(app, ["ufm", "solve", "--loss", "ce", "--classes", "4", "--memory-limit", "1e-6"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "memory" in res.output and "--memory-limit" in " ".join(res.output.split())
