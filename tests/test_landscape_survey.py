"""The landscape survey (nclab.ufm.landscape.survey) and `nclab landscape survey --quick`.

Oracles: the theorems of REFERENCE.md sections 2 and 5 -- no spurious local minima, so every
uncapped solver from a random start ends at the certified global minimum; the origin (beta < 1/K)
and every embedded lower-dimensional minimiser below the rank of the global minimisers are strict
saddles, the ones at or above it global minimisers; the d = K case of Gu & Shen 2024.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from nclab.cli import app
from nclab.ufm.landscape.survey import (
    QUICK,
    expected_kind,
    gu_shen_check,
    survey_settings,
)

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One `nclab landscape survey --quick` for the whole module: (result, output folder, CLI output)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("survey")
    try:
        res = runner.invoke(app, ["landscape", "survey", "--quick", "--out", str(out)])
    finally:
        torch.set_num_threads(previous)
    assert res.exit_code == 0, res.output
    return json.loads((out / "survey.json").read_text()), out, res.output


def test_the_quick_survey_writes_json_and_labelled_figures(quick):
    survey, out, output = quick
    assert {"settings", "starts", "catalogue", "gu_shen", "seconds"} <= set(survey)
    assert survey["settings"]["K"] == QUICK["K"]
    for name in ("starts.png", "catalogue.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    assert not list(out.glob("*.tmp"))
    assert "(a) random starts" in output and "(b) critical points" in output and "(c) Gu & Shen" in output
    assert survey["seconds"] > 0  # timed, not asserted on: the benchmark reports speed, tests only correctness


def test_every_uncapped_start_reaches_the_certified_global_minimum(quick):
    survey, _, _ = quick
    s = survey["settings"]
    runs = survey["starts"]["runs"]
    configs = {r["config"] for r in runs}
    assert configs == {"ce", "mse", "mse-nobias", "normalized"}
    assert {r["d"] for r in runs} == {s["K"] - 1, s["K"], 2 * s["K"]}
    assert {r["solver"] for r in runs} == {"lbfgs", "gd", "rgd", "rcg", "rtr"}
    for r in runs:
        if r["solver"] == "gd":
            continue
        if r["config"] == "mse-nobias" and r["d"] < s["K"]:
            # d < K without a bias: the minimisers (rank d of a K-dimensional eigenspace) form a family
            # larger than the O(d) orbit (the deflated Hessian is singular there); RGD may stall on it
            # before its gradient passes the critical-point test (then not_critical, converged False),
            # but every end point is at the closed-form optimum
            assert r["kind"] in ("global_minimiser", "inconclusive") or not r["converged"], r
            assert abs(r["relative_gap"]) < 1e-8, r
            continue
        assert r["kind"] == "global_minimiser", r


def test_capped_gradient_descent_is_reported_as_not_converged(quick):
    survey, _, output = quick
    gd = [r for r in survey["starts"]["summary"] if r["solver"] == "gd"]
    assert gd and all(r["capped"] == r["runs"] for r in gd)
    for r in survey["starts"]["runs"]:
        if r["solver"] == "gd":
            assert r["converged"] is False and r["stop_reason"] == "max_iter"
    assert "stopped on their iteration cap" in " ".join(output.split())


def test_the_catalogue_has_the_kinds_the_theory_predicts(quick):
    survey, _, _ = quick
    cat = survey["catalogue"]
    K = survey["settings"]["K"]
    origins = [p for p in cat["points"] if p["point"] == "origin"]
    lowdims = [p for p in cat["points"] if p["point"] == "lowdim"]
    assert origins and all(p["kind"] == "strict_saddle" and p["lambda_min"] < 0 for p in origins)
    assert {p["config"] for p in origins} == {"ce", "mse", "mse-nobias"}  # the normalized UFM has no origin
    for p in lowdims:
        rank = min(p["d"], K if p["config"] == "mse-nobias" else K - 1)
        assert p["kind"] == ("global_minimiser" if p["d_low"] >= rank else "strict_saddle"), p
    assert any(p["kind"] == "strict_saddle" for p in lowdims) and any(p["kind"] == "global_minimiser" for p in lowdims)
    ag = cat["agreement"]
    assert ag["held"] == ag["predicted"] > 0 and ag["mismatches"] == []
    assert ag["spurious_local_minima"] == 0
    assert ag["found"] == len(survey["settings"]["configs"]) * len(survey["settings"]["dims"]) * 2
    sp = cat["spectra"]
    assert sp["saddle"]["kind"] == "strict_saddle" and min(sp["saddle"]["eigenvalues"]) < 0
    assert sp["minimiser"]["kind"] == "global_minimiser" and min(sp["minimiser"]["eigenvalues"]) > 0


def test_gu_shen_d_equals_k(quick):
    survey, _, _ = quick
    g = survey["gu_shen"]
    assert g["d"] == survey["settings"]["K"] and g["holds"] is True
    assert set(g["configs"]) == {"ce", "mse", "mse-nobias"}
    for v in g["configs"].values():
        assert v["starts"] > 0 and v["global"] == v["starts"]
        assert v["saddles"] > 0 and v["strict"] == v["saddles"] and v["largest_saddle_lambda_min"] < 0


def test_gu_shen_check_reports_a_failure():
    starts = {"runs": [{"config": "ce", "d": 3, "solver": "lbfgs", "kind": "global_minimiser"},
                       {"config": "ce", "d": 3, "solver": "rcg", "kind": "local_non_global_minimiser"},
                       {"config": "ce", "d": 3, "solver": "gd", "kind": "not_critical"}]}
    catalogue = {"points": [{"config": "ce", "d": 3, "expected": "strict_saddle", "kind": "strict_saddle",
                             "lambda_min": -0.1}]}
    g = gu_shen_check(starts, catalogue, 3)
    assert g["holds"] is False
    assert g["configs"]["ce"] == {"starts": 2, "global": 1, "capped_starts": 1, "capped_global": 0, "saddles": 1,
                                  "strict": 1, "largest_saddle_lambda_min": -0.1, "holds": False}
    assert gu_shen_check({"runs": []}, {"points": []}, 3)["holds"] is None


def test_expected_kinds():
    assert expected_kind("ce", "origin", 4, 4) == "strict_saddle"
    assert expected_kind("ce", "lowdim", 4, 8, 2) == "strict_saddle"
    assert expected_kind("ce", "lowdim", 4, 8, 3) == "global_minimiser"  # a simplex ETF needs K-1 = 3
    assert expected_kind("mse-nobias", "lowdim", 4, 8, 3) == "strict_saddle"  # an orthogonal frame needs K
    assert expected_kind("mse-nobias", "lowdim", 4, 3, 2) == "strict_saddle"
    assert expected_kind("normalized", "found", 4, 4) is None


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        (dict(lambdas=[[0.5, 0.5]]), "must be < 1/K"),
        (dict(dims=["K-1", "2K"]), "must contain 'K'"),
        (dict(dims=["K", "3K"]), "is not one of"),
        (dict(configs=["hinge"]), "unknown config"),
        (dict(seeds=0), "seeds must be >= 1"),
        (dict(colour="red"), "unknown survey setting"),
    ],
)
def test_bad_settings_are_rejected(overrides, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")):
        survey_settings(quick=True, **overrides)


def test_survey_out_must_be_a_folder(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    res = runner.invoke(app, ["landscape", "survey", "--quick", "--out", str(f)])
    assert res.exit_code == 2 and "Traceback" not in res.output and "must be a folder" in res.output


def test_doctests_of_the_survey_module():
    import doctest

    import nclab.ufm.landscape.survey

    res = doctest.testmod(nclab.ufm.landscape.survey)
    assert res.failed == 0 and res.attempted > 0
