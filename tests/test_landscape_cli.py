"""`nclab landscape classify` (nclab.cli.landscape), `nclab ufm solve --save-point`, the point specs
(nclab.ufm.landscape.spec) and the point files (nclab.ufm.pointfile), through typer's CliRunner.

Oracles: the theory of REFERENCE.md section 2 -- the origin W = H = 0 of the CE UFM is a strict
saddle exactly when beta = sqrt(n lw lh) < 1/K; a point solved to the closed-form optimum is a
global minimiser, where Zhu et al.'s certificate sigma_1(grad_Z L) <= sqrt(lw lh) holds with
equality (ratio 1).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from nclab.cli import app
from nclab.ufm.problems import make_problem

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see conftest

CE = ["--loss", "ce", "--classes", "4", "--per-class", "3", "--dim", "4", "--lambda-w", "5e-3", "--lambda-h", "5e-3"]
JSON_KEYS = {"kind", "lambda_min", "grad_norm", "objective", "optimum", "certificate", "direction_curvature",
             "hvps", "seconds", "problem", "point"}


def _classify(*args):
    return runner.invoke(app, ["landscape", "classify", *args])


def _assert_one_line_error(res, fragment):
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert fragment in res.output, res.output


def test_the_origin_of_the_ce_ufm_below_beta_1_over_k_is_a_strict_saddle(tmp_path):
    out = tmp_path / "origin.json"
    res = _classify(*CE, "--point", "origin", "--json", str(out))
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert JSON_KEYS <= set(data)
    assert data["kind"] == "strict_saddle"
    # REFERENCE.md: lambda_min = (lw+lh)/2 - sqrt(((lw-lh)/2)^2 + sigma^2), sigma = 1/(K sqrt(n))
    assert data["lambda_min"] == pytest.approx(5e-3 - 1 / (4 * math.sqrt(3)), rel=1e-6)
    assert {"sigma_1", "threshold"} <= set(data["certificate"])
    assert data["problem"] == make_problem("ce", K=4, n=3, d=4).describe()
    assert data["point"]["spec"] == "origin"
    assert "strict_saddle" in res.output
    assert max(len(line) for line in res.output.splitlines()) <= 80


def test_a_solution_is_a_certified_global_minimiser(tmp_path):
    out = tmp_path / "sol.json"
    res = _classify(*CE, "--point", "solution", "--seed", "3", "--json", str(out))
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["kind"] == "global_minimiser"
    assert data["point"]["solve"]["converged"] is True
    cert = data["certificate"]
    assert cert["holds"] is True and cert["ratio"] == pytest.approx(1.0, abs=1e-6)
    assert abs(data["relative_gap"]) < 1e-10


def test_lowdim_points_are_strict_saddles_and_random_points_not_critical(tmp_path):
    out = tmp_path / "low.json"
    res = _classify(*CE, "--point", "lowdim:2", "--json", str(out))
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["kind"] == "strict_saddle" and data["point"]["d_low"] == 2
    assert data["lambda_min"] < 0
    res = _classify(*CE, "--point", "random", "--json", str(out))
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["kind"] == "not_critical"


@pytest.mark.parametrize(
    "loss_args",
    [
        CE,
        ["--loss", "mse", "--classes", "3", "--per-class", "2", "--dim", "5", "--no-bias"],
        ["--loss", "normalized", "--classes", "3", "--per-class", "2", "--tau", "4"],
    ],
)
def test_a_saved_solution_is_classified_a_global_minimiser(tmp_path, loss_args):
    point, out = tmp_path / "x.npz", tmp_path / "c.json"
    res = runner.invoke(app, ["ufm", "solve", *loss_args, "--gtol", "1e-10", "--save-point", str(point)])
    assert res.exit_code == 0, res.output
    with np.load(point, allow_pickle=False) as z:  # plain arrays, no pickle
        assert {"W", "H"} <= set(z.files)
    res = _classify(*loss_args, "--point", str(point), "--json", str(out))
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["kind"] == "global_minimiser"
    assert data["point"]["file"] == str(point)


@pytest.mark.parametrize(
    "spec,fragment",
    [
        ("saddle", "--point must be one of origin, solution, random, lowdim:D, FILE.npz"),
        ("lowdim:x", "needs an integer dimension"),
        ("lowdim:0", "needs D >= 1"),
        ("lowdim:4", "needs D < d = 4"),
        ("nowhere.npz", "does not exist"),
    ],
)
def test_bad_point_specs_give_a_one_line_error(spec, fragment):
    _assert_one_line_error(_classify(*CE, "--point", spec), fragment)


def test_the_origin_of_a_problem_on_spheres_is_an_error():
    _assert_one_line_error(_classify("--loss", "normalized", "--point", "origin"), "has no origin")


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "arrays,args,fragment",
    [
        (dict(W=np.zeros((4, 4)), H=np.zeros((12, 4))), [], "missing ['b']"),
        (dict(W=np.zeros((4, 4)), H=np.zeros((12, 4)), b=np.zeros(4)), ["--no-bias"], "unknown ['b']"),
        (dict(W=np.zeros((4, 4)), H=np.zeros((12, 4)), b=np.zeros(4), extra=np.zeros(1)), [], "unknown ['extra']"),
        (dict(W=np.zeros((4, 3)), H=np.zeros((12, 4)), b=np.zeros(4)), [], "W has shape (4, 3)"),
        (dict(W=np.zeros((4, 4)), H=np.zeros((10, 4)), b=np.zeros(4)), [], "needs (12, 4)"),
        (dict(W=np.full((4, 4), np.nan), H=np.zeros((12, 4)), b=np.zeros(4)), [], "non-finite"),
        (dict(W=np.zeros((4, 4)), H=np.zeros((12, 4)), b=np.array(["a", "b", "c", "d"])), [], "real array"),
    ],
)
def test_malformed_point_files_give_a_one_line_error(tmp_path, arrays, args, fragment):
    path = _npz(tmp_path / "bad.npz", **arrays)
    _assert_one_line_error(_classify(*CE, *args, "--point", str(path)), fragment)


def test_a_file_that_is_not_an_npz_archive_gives_a_one_line_error(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip")
    _assert_one_line_error(_classify(*CE, "--point", str(path)), "not a readable .npz")


def test_points_on_spheres_must_have_unit_rows(tmp_path):
    X = np.ones((4, 3))
    path = _npz(tmp_path / "x.npz", X=X)
    _assert_one_line_error(_classify("--loss", "sphere", "--points", "4", "--dim", "3", "--point", str(path)),
                           "unit norm")


def test_save_point_needs_an_npz_name(tmp_path):
    res = runner.invoke(app, ["ufm", "solve", "--save-point", str(tmp_path / "x.txt")])
    _assert_one_line_error(res, "--save-point must end in .npz")


def test_point_files_round_trip_for_every_problem(tmp_path):
    from nclab.ufm.pointfile import factor_names, load_point, save_point

    for loss, opts, names in [("ce", dict(K=3, n=2, d=3), ("W", "H", "b")), ("mse", dict(K=3, n=2, bias=False), ("W", "H")),
                              ("normalized", dict(K=3, n=2), ("W", "H")), ("sphere", dict(n_points=4, d=3), ("X",))]:
        p = make_problem(loss, **opts)
        x = p.random_start(1)
        path = save_point(tmp_path / f"{loss}.npz", p, x)
        assert factor_names(p) == names
        y = load_point(path, p)
        assert all(torch.equal(a, b) and b.dtype == torch.float64 for a, b in zip(x, y))
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary file


def test_make_point_describes_how_the_point_was_made():
    from nclab.ufm.landscape.spec import make_point, parse_point_spec

    assert parse_point_spec("lowdim:3") == ("lowdim", 3)
    assert parse_point_spec(" origin ") == ("origin", None)
    p = make_problem("ce", K=3, n=2, d=3)
    x, info = make_point(p, "origin")
    assert float(x[0].abs().max()) == 0.0 and info == {"spec": "origin", "kind": "origin", "seed": 0}
    with pytest.raises(ValueError, match="seed"):
        make_point(p, "random", seed=-1)


def test_doctests_of_the_point_modules():
    import doctest

    import nclab.ufm.landscape.spec
    import nclab.ufm.pointfile

    for mod in (nclab.ufm.pointfile, nclab.ufm.landscape.spec):
        res = doctest.testmod(mod)
        assert res.failed == 0, mod.__name__
