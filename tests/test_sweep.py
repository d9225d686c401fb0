"""Sweeps (nclab.sweep): configs fail before any job, keys are stable, the local pool and Ray give the
same table bit for bit, a failing job is recorded and retried on request, and the beta phase
diagram of the CE UFM puts collapse below beta = 1/K and the zero solution above it.

Oracles: the closed-form optimum of the CE UFM with a free bias (REFERENCE.md section 2),
f* = log(1 + (K-1) e^{-m}) + (K-1) beta m with m = log(1/beta - (K-1)) for beta < 1/K and f* = log K
(W = H = 0) otherwise, written out here; the in-process run of the same jobs for the backends.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("yaml")

from nclab.sweep import aggregate, job_key, load_config, parse_config, read_table, run_sweep  # noqa: E402
from nclab.sweep.jobs import run_chunk  # noqa: E402

#: The small grid of every backend test: CE UFM, beta = sqrt(3) lambda = 0.087, 0.17 (below 1/K
#: for K = 3, 4) and 0.52, 0.87 (above), two seeds: 16 jobs of a few ms.
BETA = {
    "kind": "ufm solve",
    "options": {"loss": "ce", "n": 3, "d": 4},
    "grid": {"K": [3, 4], "lambda": [0.05, 0.1, 0.3, 0.5]},
    "seeds": 2,
}
VOLATILE = ("seconds",)  # wall time: the only column allowed to differ between runs


def numbers(table) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in table.to_pylist()]


def same(a, b) -> bool:
    """Bit-for-bit equality of rows (NaN equal to NaN)."""
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            continue
        if x != y or type(x) is not type(y):
            return False
    return True


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("beta_local")
    seen = []
    summary = run_sweep(BETA, out, backend="local", workers=2, progress=seen.append)
    return out, summary, seen


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False)
    yield ray
    ray.shutdown()


# ------------------------------------------------------------------------------------------------
# configs and keys
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config, key", [
    ({"kind": "solve"}, "kind"),
    ({"kind": "ufm solve", "grid": {"K": [4, 1]}}, "grid.K[1]"),
    ({"kind": "ufm solve", "options": {"tau": 5.0}}, "options.tau"),
    ({"kind": "ufm solve", "options": {"solver": "adam"}}, "options.solver"),
    ({"kind": "ufm solve", "grid": {"loss": ["ce", "hinge"]}}, "grid.loss[1]"),
    ({"kind": "ufm solve", "options": {"lambda": 0.1, "lw": 0.1}}, "options.lw"),
    ({"kind": "ufm solve", "options": {"K": 3}, "grid": {"K": [4]}}, "grid.K"),
    ({"kind": "ufm solve", "seeds": -1}, "seeds"),
    ({"kind": "ufm solve", "sedes": 3}, "sedes"),
    ({"kind": "landscape classify", "options": {"loss": "normalized", "point": "origin"}}, "options.point"),
    ({"kind": "landscape classify", "grid": {"point": ["lowdim:2", "lowdim:4"]}}, "grid.point"),
])
def test_a_bad_config_is_refused_naming_the_key(config, key):
    with pytest.raises(ValueError) as err:
        parse_config(config)
    assert str(err.value).startswith(key + ":"), str(err.value)


def test_kind_train_is_planned_not_silently_accepted():
    with pytest.raises(ValueError, match=r"^kind: .*'train' is not available in sweeps yet.*allowed: 'ufm solve'"):
        parse_config({"kind": "train"})


def test_a_bad_config_runs_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"^grid\.K\[0\]"):
        run_sweep({"kind": "ufm solve", "grid": {"K": [1]}}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_job_key_depends_on_the_job_not_on_how_it_was_written():
    a = load_config("kind: ufm solve\noptions: {lw: 1e-3, lh: 1, K: 3}\nseeds: [4]\n")  # YAML: 1e-3 is text
    b = parse_config({"kind": "ufm solve", "options": {"K": 3, "lh": 1.0, "lw": 0.001}, "seeds": [4]})
    assert a.jobs == b.jobs and a.keys == b.keys
    c = parse_config({"kind": "ufm solve", "options": {"K": 3, "lh": 1.0, "lw": 0.001}, "seeds": [5]})
    assert c.keys != a.keys
    # the documented hash, recomputed here: SHA-256 of the sorted canonical JSON
    import hashlib
    import json

    text = json.dumps({"kind": "ufm solve", "options": {"K": 3, "lh": 1.0, "lw": 0.001}, "seed": 4},
                      sort_keys=True, separators=(",", ":"))
    assert a.keys[0] == hashlib.sha256(text.encode()).hexdigest()[:16]


def test_grid_and_seeds_expand_to_the_product():
    cfg = parse_config(BETA)
    assert len(cfg.jobs) == 2 * 4 * 2 and len(set(cfg.keys)) == len(cfg.jobs)
    assert {(j["options"]["K"], j["options"]["lambda"], j["seed"]) for j in cfg.jobs} == {
        (K, lam, s) for K in (3, 4) for lam in (0.05, 0.1, 0.3, 0.5) for s in (0, 1)}


# ------------------------------------------------------------------------------------------------
# backends
# ------------------------------------------------------------------------------------------------
def test_local_pool_rows_equal_the_same_jobs_run_in_process(local_run):
    out, summary, seen = local_run
    assert (summary.total, summary.ran, summary.done, summary.failed, summary.remaining) == (16, 16, 16, 0, 0)
    assert seen[0] == {"total": 16, "done": 0, "failed": 0, "remaining": 16}
    assert seen[-1] == {"total": 16, "done": 16, "failed": 0, "remaining": 0}
    cfg = parse_config(BETA)
    expected = sorted(run_chunk(cfg.jobs), key=lambda r: r["job_key"])
    got = numbers(read_table(out))
    assert len(got) == 16
    for g, e in zip(got, expected):
        e = {k: v for k, v in e.items() if k not in VOLATILE}
        assert {k: v for k, v in g.items() if v is not None or k in e} == e


def test_ray_gives_the_same_table_bit_for_bit(local_run, ray_local, tmp_path):
    out, _, _ = local_run
    summary = run_sweep(BETA, tmp_path / "ray", backend="ray", workers=2, chunk=3)
    assert (summary.ran, summary.done, summary.failed) == (16, 16, 0)
    a, b = numbers(read_table(out)), numbers(read_table(tmp_path / "ray"))
    assert len(a) == len(b) == 16
    assert all(same(x, y) for x, y in zip(a, b))


def test_a_finished_sweep_is_not_rerun(local_run):
    out, _, _ = local_run
    before = read_table(out).to_pylist()
    summary = run_sweep(BETA, out, workers=2)
    assert (summary.reused, summary.ran, summary.done) == (16, 0, 16)
    assert read_table(out).to_pylist() == before  # same seconds too: nothing ran again


# ------------------------------------------------------------------------------------------------
# failures
# ------------------------------------------------------------------------------------------------
def test_a_failing_job_is_recorded_the_sweep_finishes_and_retry_reruns_it(tmp_path):
    import torch

    from nclab.ufm.pointfile import save_point
    from nclab.ufm.problems import make_problem

    point = tmp_path / "x.npz"  # does not exist yet: the classify job of this point fails
    config = {"kind": "landscape classify", "options": {"loss": "ce", "K": 3, "n": 2, "d": 3},
              "grid": {"point": ["origin", str(point)]}}
    s = run_sweep(config, tmp_path / "out", workers=1)
    assert (s.ran, s.done, s.failed) == (2, 1, 1)
    rows = {r["point"]: r for r in read_table(tmp_path / "out").to_pylist()}
    assert rows["origin"]["error"] is None and rows["origin"]["kind"] == "strict_saddle"
    bad = rows[str(point)]
    assert bad["status"] == "failed" and str(point) in bad["error"] and bad["error"].startswith("ValueError")
    assert s.errors == {bad["job_key"]: bad["error"]}

    again = run_sweep(config, tmp_path / "out", workers=1)  # without --retry-failed: nothing runs
    assert (again.ran, again.failed) == (0, 1)

    origin_seconds = rows["origin"]["seconds"]
    problem = make_problem("ce", K=3, n=2, d=3)
    with torch.no_grad():
        save_point(point, problem, problem.optimal_point(seed=0))
    retried = run_sweep(config, tmp_path / "out", workers=1, retry_failed=True)
    assert (retried.ran, retried.done, retried.failed) == (1, 2, 0)
    rows = {r["point"]: r for r in read_table(tmp_path / "out").to_pylist()}
    assert len(rows) == 2 and rows[str(point)]["error"] is None
    assert rows[str(point)]["kind"] == "global_minimiser"
    assert rows["origin"]["seconds"] == origin_seconds  # the finished job was not run again


# ------------------------------------------------------------------------------------------------
# the phase diagram
# ------------------------------------------------------------------------------------------------
def ce_optimum(K: int, beta: float) -> float:
    if beta >= 1.0 / K:
        return math.log(K)
    m = math.log(1.0 / beta - (K - 1))
    return math.log1p((K - 1) * math.exp(-m)) + (K - 1) * beta * m


def test_beta_phase_diagram_collapse_below_one_over_K_zero_solution_above(local_run):
    out, _, _ = local_run
    rows = read_table(out).to_pylist()
    below = above = 0
    for r in rows:
        beta = math.sqrt(r["n"] * r["lw"] * r["lh"])
        assert r["beta"] == pytest.approx(beta, rel=1e-15)
        assert r["objective"] == pytest.approx(ce_optimum(r["K"], beta), rel=1e-9, abs=1e-12)
        if beta < 1.0 / r["K"]:
            below += 1
            assert r["nc1"] < 1e-8 and r["nc2_etf_W"] < 1e-6 and r["nc2_etf_means"] < 1e-6
            assert r["objective"] < math.log(r["K"]) - 1e-3
        else:
            above += 1
            assert r["structure_zero_norm"] < 1e-4  # |(W, H)| at the end point: the zero solution
            assert r["objective"] == pytest.approx(math.log(r["K"]), rel=1e-9)
    assert below == above == 8

    g = aggregate(read_table(out), "beta", "nc2_etf_W", "K")
    assert g["y"] == [3, 4] and g["boundary_axis"] == "x"
    xs = np.array(g["x"])
    for bx, by in g["boundary"]:  # the boundary point lies where beta = 1/K, between grid columns
        K = g["y"][int(by)]
        i = int(bx)
        assert xs[i] < 1.0 / K < xs[i + 1]
        assert math.exp(np.interp(bx, np.arange(len(xs)), np.log(xs))) == pytest.approx(1.0 / K, rel=1e-9)
    assert len(g["boundary"]) == 2


def test_lines_put_the_boundary_at_lambda_one_over_K_sqrt_n(local_run):
    out, _, _ = local_run
    g = aggregate(read_table(out), "lambda", "objective", group="K")
    assert g["boundary_x"] == pytest.approx(sorted(1.0 / (K * math.sqrt(3)) for K in (3, 4)), rel=1e-12)
    for K, line in ((3, g["lines"]["3"]), (4, g["lines"]["4"])):
        assert line["count"] == [2, 2, 2, 2]
        assert all(lo <= c <= hi for lo, c, hi in zip(line["low"], line["center"], line["high"]))
        assert line["center"][-1] == pytest.approx(math.log(K), rel=1e-9)


def test_aggregate_filters_numbers_as_numbers_and_names_a_missing_column():
    rows = [{"tau": 10.0, "K": 3, "solver": s, "seed": i, "iterations": n, "converged": c, "error": None}
            for s, n, c in (("lbfgs", 40, True), ("rtr", 1000, False)) for i in range(2)]
    rows.append({"tau": 10.0, "K": 3, "solver": "rtr", "seed": 9, "error": "ValueError: boom"})
    g = aggregate(rows, "tau", "iterations", group="solver", where={"K": "3", "tau": "10"})
    assert g["lines"]["lbfgs"]["center"] == [40.0] and g["lines"]["rtr"]["center"] == [1000.0]
    assert g["failed"] == 1 and g["rows"] == 4
    assert aggregate(rows, "tau", "converged", agg="mean")["lines"][""]["center"] == [0.5]
    assert aggregate(rows, "tau", "solver=rtr")["lines"][""]["center"] == [0.5]
    with pytest.raises(ValueError, match="no column 'lamda'"):
        aggregate(rows, "lamda", "iterations")
    with pytest.raises(ValueError, match="holds text"):
        aggregate(rows, "tau", "solver")
