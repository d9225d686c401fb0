"""The lu2022 target at the tiny scale: every claim checked with the evidence it names, the numbers
re-derived from the written files with independent formulas (scipy's polynomials, the closed-form
E*), a broken solver turning the claims to failed, and the real report in headless Chromium."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import special

from nclab.reproduce.claims import Claim
from nclab.reproduce.runner import reproduce
from reproduce_helpers import assert_self_contained, render_in_chromium

KEYS = ("lu2022.simplex_etf", "lu2022.uniform_limit", "lu2022.frame_potential")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("lu2022")
    lines = []
    result = reproduce(["lu2022"], out, scale="tiny", seed=0, progress=lines.append, command="pytest tiny run")
    return out, result, lines


def _claims(result):
    return {c["key"]: c for t in result["targets"] for c in t["claims"]}


def test_every_claim_passes_with_its_evidence(tiny):
    out, result, lines = tiny
    claims = _claims(result)
    assert tuple(claims) == KEYS
    assert result["ok"] and result["counts"] == {"passed": 3, "failed": 0, "not run": 0}
    assert any("d=3 n=32" in line for line in lines)  # progress was reported
    etf = claims["lu2022.simplex_etf"]
    assert etf["evidence"]["max_relative_gap"] <= 1e-6 and etf["evidence"]["max_etf_error"] <= 1e-5
    uni = claims["lu2022.uniform_limit"]
    assert uni["evidence"]["d2_max_nS_at_n32"] <= 0.05 and uni["evidence"]["d3_max_nS_at_n32"] <= 0.05
    fp = claims["lu2022.frame_potential"]
    assert fp["evidence"]["d3_excess_at_n32"] <= 1e-3
    for c in claims.values():
        assert c["statement"] and c["source"].startswith("Lu & Steinerberger 2022") and c["criterion"]
        assert c["tables"] and c["tables"][0]["rows"] and c["headline"]
        for fig in c["figures"]:
            assert (out / "lu2022" / fig["path"]).read_bytes().startswith(b"\x89PNG")
    assert {f["path"] for f in uni["figures"]} == {"moment_sums.png", "points_d2.png", "points_d3.png"}
    # claims.json holds the same claims, readable back as Claim objects
    saved = json.loads((out / "lu2022" / "claims.json").read_text())
    assert [Claim.from_dict(c).verdict for c in saved["claims"]] == ["passed"] * 3
    # provenance
    prov = result["provenance"]
    assert prov["command"] == "pytest tiny run" and prov["scale"] == "tiny" and prov["seed"] == 0
    for key in ("nclab", "git_commit", "python", "torch", "numpy", "platform", "cpu_count", "gpu", "started"):
        assert key in prov


def test_simplex_table_against_the_closed_form(tiny):
    _, result, _ = tiny
    table = _claims(result)["lu2022.simplex_etf"]["tables"][0]
    col = {name: i for i, name in enumerate(table["columns"])}
    for row in table["rows"]:
        n, d, tau = row[col["n"]], row[col["d"]], row[col["tau"]]
        assert d >= n - 1
        assert row[col["E*"]] == pytest.approx(math.log(1 + (n - 1) * math.exp(-tau * n / (n - 1))), rel=1e-12)
        assert row[col["status"]] == "optimal"


def test_sweep_points_are_near_designs_by_scipy(tiny):
    """Recompute S_l of the written minimisers with scipy's Chebyshev / Legendre polynomials."""
    out, _, _ = tiny
    sweep = json.loads((out / "lu2022" / "sweep.json").read_text())
    for d, poly in ((2, special.eval_chebyt), (3, special.eval_legendre)):
        n = max(sweep["ns"])
        X = np.array(sweep["points"][f"d{d}_n{n}"])
        assert np.allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-12)
        t = np.clip(X @ X.T, -1, 1)
        nS = [n * poly(l, t).mean() for l in sweep["degrees"]]
        assert max(nS) <= 0.05
        run = next(r for r in sweep["runs"] if r["d"] == d and r["n"] == n)
        assert run["nS"] == pytest.approx(nS, abs=1e-12)
        # the frame potential is the degree-2 moment: FP/(n^2/d) - 1 = (d-1) S_2
        assert run["fp_excess"] == pytest.approx((d - 1) * nS[1] / n, abs=1e-13)
        assert 0.5 < max(run["random_nS_mean"]) < 3  # random points: E[n S_l] = 1


def test_report_marks_every_claim_and_renders(tiny, tmp_path):
    out, result, _ = tiny
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for c in _claims(result).values():
        assert c["title"] in md and f"— {c['verdict'].upper()}" in md
        assert f'id="c-{c["key"]}"' in page
    images = assert_self_contained(page)
    assert len(images) == 4  # moment sums, points d = 2 and 3, frame potential
    seen = render_in_chromium(out / "report.html", tmp_path, "report-lu2022")
    assert seen["severe"] == [], seen["severe"]
    assert len(seen["images"]) == 4 and all(i["complete"] and i["width"] > 0 for i in seen["images"])


def test_a_solver_capped_at_two_iterations_fails_the_claims(tmp_path):
    result = reproduce(["lu2022"], tmp_path, scale="tiny", overrides={"max_iter": 2})
    claims = _claims(result)
    assert not result["ok"]
    etf = claims["lu2022.simplex_etf"]
    assert etf["verdict"] == "failed" and "missed E* or the ETF" in etf["reason"]
    assert claims["lu2022.uniform_limit"]["verdict"] == "failed"
    assert "FAILED" in (tmp_path / "report.md").read_text()
