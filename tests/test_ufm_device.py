"""Where the UFM problems and solvers compute: ``device`` / ``dtype`` options, their validation, the
fused gradient (``cost_and_egrad_into``), and CUDA against the CPU (``@pytest.mark.gpu``).

Oracles: the float64 CPU problem (for float32 and CUDA), torch autograd of an independent
re-implementation of each cost (for the fused gradient), the closed-form optima.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from nclab.cli import app
from nclab.ufm.optim import SOLVERS
from nclab.ufm.problems import make_problem
from nclab.ufm.run import FLOAT32_GTOL, run_solver, solve

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see conftest

CASES = [
    ("ce", dict(K=4, n=3, d=4, lw=5e-3, lh=5e-3)),
    ("ce", dict(K=3, n=2, d=3, lw=1e-2, lh=5e-3, lb=1e-2)),
    ("mse", dict(K=3, n=2, d=3, bias=False)),
    ("normalized", dict(K=4, n=3, d=4, tau=3.0)),
    ("sphere", dict(n_points=5, d=3, tau=2.0)),
]
IDS = [f"{loss}-{i}" for i, (loss, _) in enumerate(CASES)]
NO_CUDA = not torch.cuda.is_available()


def _autograd_cost(problem, x):
    """An independent cost of each problem (REFERENCE.md section 2), for autograd."""
    if problem.loss == "sphere":
        X = x[0]
        return torch.nn.functional.cross_entropy(problem.tau * X @ X.T, torch.arange(X.shape[0]))
    W, H = x[0], x[1]
    s = problem.tau if problem.loss == "normalized" else 1.0
    Z = s * H @ W.T + (x[2] if len(x) > 2 else 0.0)
    y = problem.labels
    if problem.loss == "mse":
        data = 0.5 * ((Z - torch.nn.functional.one_hot(y, problem.K).to(Z.dtype)) ** 2).sum() / problem.N
    else:
        data = torch.nn.functional.cross_entropy(Z, y)
    reg = 0.5 * problem.lw * (W * W).sum() + 0.5 * problem.lh * (H * H).sum() if problem.loss in ("ce", "mse") else 0.0
    if len(x) > 2:
        reg = reg + 0.5 * problem.lb * (x[2] * x[2]).sum()
    return data + reg


@pytest.mark.parametrize("loss,opts", CASES, ids=IDS)
def test_the_fused_gradient_is_the_autograd_gradient(loss, opts):
    p = make_problem(loss, **opts)
    x = p.random_start(3)
    xs = [t.clone().requires_grad_(True) for t in x]
    want = torch.autograd.grad(_autograd_cost(p, xs), xs)
    flat = torch.full((sum(t.numel() for t in x),), math.nan, dtype=torch.float64)
    views, start = [], 0
    for t in x:
        views.append(flat[start : start + t.numel()].view(t.shape))
        start += t.numel()
    f = p.cost_and_egrad_into(x, tuple(views))
    assert f == pytest.approx(float(_autograd_cost(p, x)), rel=1e-13)
    for got, w in zip(views, want):
        torch.testing.assert_close(got, w, rtol=1e-10, atol=1e-13)
    # a second call at the same point serves the cache (the point's gradient), a copy into new tensors
    again = tuple(torch.empty_like(t) for t in x)
    assert p.cost_and_egrad_into(x, again) == f and all(torch.equal(a, b) for a, b in zip(again, views))


@pytest.mark.parametrize("loss,opts", CASES, ids=IDS)
def test_a_float32_problem_computes_in_float32_and_agrees_with_float64(loss, opts):
    p64, p32 = make_problem(loss, **opts), make_problem(loss, dtype=torch.float32, **opts)
    x32 = p32.random_start(1)
    assert all(t.dtype == torch.float32 for t in x32) and p32.describe()["dtype"] == "float32"
    x64 = tuple(t.double() for t in x32)
    u = p64.manifold.random_tangent(x64, torch.Generator().manual_seed(2))
    u32 = tuple(t.float() for t in u)
    assert p32.cost(x32) == pytest.approx(p64.cost(x64), rel=1e-5)
    for a, b in zip(p32.egrad(x32), p64.egrad(x64)):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5)
    for a, b in zip(p32.rhess(x32, u32), p64.rhess(x64, u)):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5)
    opt = p32.optimal_point(seed=0)
    if opt is not None:
        assert all(t.dtype == torch.float32 for t in opt)
        assert p32.cost(opt) == pytest.approx(p64.optimum, rel=1e-5)


@pytest.mark.parametrize("solver", ["lbfgs", "rcg", "rtr"])
@pytest.mark.parametrize("loss,opts", [CASES[0], CASES[3]], ids=["ce", "normalized"])
def test_the_solvers_follow_a_float32_problem(loss, opts, solver):
    p = make_problem(loss, dtype="float32", **opts)
    x0 = make_problem(loss, **opts).random_start(0)  # a float64 start is converted
    x, r = run_solver(p, solver, x0=x0, metrics_every=0)
    assert all(t.dtype == torch.float32 for t in x)
    assert r["options"]["gtol"] == FLOAT32_GTOL and r["problem"]["dtype"] == "float32"
    assert r["status"] == "optimal", r["warnings"]
    assert abs(r["relative_gap"]) < 1e-5  # float32: the objective's own roundoff is ~1e-7


def test_solve_takes_device_and_dtype():
    r = solve("normalized", "lbfgs", seed=0, K=3, n=2, d=3, device="cpu", dtype=torch.float32, metrics_every=0)
    assert r["status"] == "optimal" and r["problem"]["dtype"] == "float32"
    d = solve("normalized", "lbfgs", seed=0, K=3, n=2, d=3, device=torch.device("cpu"), metrics_every=0)
    assert "dtype" not in d["problem"] and "device" not in d["problem"]  # the defaults keep their keys
    assert abs(d["relative_gap"]) < 1e-9


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(dtype="float16"), "dtype must be float64 or float32"),
        (dict(dtype=torch.int64), "dtype must be float64 or float32"),
        (dict(device="tpu"), "device must be"),
        (dict(device=3.5), "device must be"),
    ],
)
def test_bad_device_or_dtype_is_refused_with_its_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_problem("ce", K=3, n=2, **kwargs)
    with pytest.raises(ValueError, match=match):
        solve("ce", K=3, n=2, **kwargs)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a CUDA GPU")
def test_cuda_where_there_is_none_is_a_clear_error():
    with pytest.raises(ValueError, match=r"device='cuda'.*no CUDA GPU.*use device='cpu'"):
        make_problem("ce", K=3, n=2, device="cuda")
    res = CliRunner().invoke(app, ["ufm", "solve", "--loss", "ce", "--device", "cuda"])
    assert res.exit_code == 2 and "error:" in res.output and "CUDA" in res.output


def test_the_cli_takes_dtype_and_refuses_a_bad_one(tmp_path):
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["ufm", "solve", "--loss", "normalized", "--classes", "3", "--per-class", "2",
                                   "--dtype", "float32", "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["problem"]["dtype"] == "float32" and data["status"] == "optimal"
    bad = CliRunner().invoke(app, ["ufm", "solve", "--dtype", "float16"])
    assert bad.exit_code == 2 and "--dtype" in bad.output


# ------------------------------------------------------------------------------------------
# CUDA against the CPU (skipped where there is no GPU: see conftest)
# ------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("loss,opts", CASES, ids=IDS)
def test_cuda_evaluations_equal_the_cpu_ones(loss, opts):
    cpu, gpu = make_problem(loss, **opts), make_problem(loss, device="cuda", **opts)
    x, xg = cpu.random_start(4), gpu.random_start(4)
    assert all(t.is_cuda for t in xg)
    assert all(torch.equal(a, b.cpu()) for a, b in zip(x, xg))  # the same start on every device
    u = cpu.manifold.random_tangent(x, torch.Generator().manual_seed(5))
    assert gpu.cost(xg) == pytest.approx(cpu.cost(x), rel=1e-12)
    for a, b in zip(gpu.egrad(xg), cpu.egrad(x)):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-10, atol=1e-13)
    for a, b in zip(gpu.rhess(xg, tuple(t.cuda() for t in u)), cpu.rhess(x, u)):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-10, atol=1e-13)


@pytest.mark.gpu
@pytest.mark.parametrize("solver", sorted(set(SOLVERS) - {"gd"}))  # gd: the slow baseline, not a check
@pytest.mark.parametrize("loss,opts", [CASES[0], CASES[3]], ids=["ce", "normalized"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cuda_solves_reach_the_cpu_solution(loss, opts, solver, dtype):
    c = solve(loss, solver, seed=1, dtype=dtype, metrics_every=0, **opts)
    g = solve(loss, solver, seed=1, device="cuda", dtype=dtype, metrics_every=0, **opts)
    assert g["problem"]["device"].startswith("cuda") and g["problem"].get("dtype", "float64") == dtype
    assert c["status"] == g["status"] == "optimal", (c["warnings"], g["warnings"])
    tol = 1e-9 if dtype == "float64" else 1e-5
    assert abs(g["relative_gap"]) < tol and abs(c["relative_gap"]) < tol
    assert g["metrics"]["nc1"] == pytest.approx(c["metrics"]["nc1"], rel=0.5, abs=1e-6)


def test_a_subclass_that_overrides_cost_and_egrad_keeps_its_own_evaluation():
    from nclab.ufm.optim.space import _Space
    from nclab.ufm.problems import NormalizedProblem

    class Doubled(NormalizedProblem):
        def cost_and_egrad(self, x):
            f, g = super().cost_and_egrad(x)
            return 2 * f, tuple(2 * t for t in g)

    base = make_problem("normalized", K=3, n=2, d=3)
    twice = Doubled(K=3, n=2, d=3, tau=5.0)
    assert _Space(base, base.random_start(0)).into and not _Space(twice, base.random_start(0)).into
    sp = _Space(twice, base.random_start(0))
    assert sp.evaluate(sp.x0).f == pytest.approx(2 * base.cost(base.random_start(0)), rel=1e-15)
