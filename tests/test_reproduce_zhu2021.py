"""The zhu2021 target of `nclab reproduce` at the tiny scale: every claim marked, with its evidence.

Oracles: the verdicts' numbers are read back against the criteria's tolerances; the non-negative
solver's end point is checked against an independently written CE UFM objective differentiated by
torch.autograd (first-order KKT conditions of min f over H >= 0), not against the solver's own output.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from nclab.reproduce import _zhu_nonneg, _zhu_ufm
from nclab.reproduce.claims import VERDICTS, Context
from nclab.reproduce.zhu2021 import CLAIMS, TARGET
from nclab.ufm.problems import make_problem

#: The numbers each claim's criterion reads (they must be in its evidence).
REQUIRED = {
    "zhu2021.global_minimisers": ["max_relative_gap", "max_structure_error", "max_nc_metric", "converged", "runs",
                                  "dims", "seeds"],
    "zhu2021.phase_transition": ["below", "above", "failures", "max_relative_gap", "max_zero_norm_above",
                                 "min_rho_below", "boundary_beta"],
    "zhu2021.benign_landscape": ["constructed_mismatches", "certificate_disagreements", "curvature_mismatches",
                                 "random_starts", "random_starts_global", "global_by_solver", "found"],
    "zhu2021.nonnegative_features": ["max_relative_projected_gradient", "min_relative_gap", "min_H",
                                     "max_structure_error", "dims_reaching_optimum", "worst_at_optimum"],
    "zhu2021.fixed_etf_parameters": ["params_d512", "params_dK", "parameter_reduction", "frozen_parameters",
                                     "train_state_reduction"],
    "zhu2021.fixed_etf_training": ["pairs", "margin_pp", "min_difference_pp", "seeds"],
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("zhu2021")
    ctx = Context(out=out, scale="tiny", seed=0, device="cpu")
    return ctx, TARGET.run(ctx)


def test_target_names_its_paper():
    assert TARGET.name == "zhu2021" and "Zhu" in TARGET.citation and callable(TARGET.run)


def test_every_claim_is_marked_with_its_evidence(tiny):
    ctx, claims = tiny
    keys = [c.key for c in claims]
    assert len(keys) == len(set(keys)) == len(CLAIMS)
    for c in claims:
        assert c.verdict in VERDICTS
        assert c.statement and c.criterion and c.source.startswith("Zhu et al. 2021") and c.summary
        json.dumps(c.to_dict())  # JSON-ready
    by = {c.key: c for c in claims}
    for key, names in REQUIRED.items():
        c = by[key]
        assert c.verdict == "passed", (key, c.summary, c.reason, c.evidence.get("traceback"))
        missing = [n for n in names if n not in c.evidence]
        assert not missing, (key, missing)
    gpu = by["zhu2021.fixed_etf_resnet18_gpu"]
    assert gpu.verdict == "not run" and gpu.reason  # tiny scale (and no GPU here)


def test_numbers_meet_the_criteria(tiny):
    _, claims = tiny
    by = {c.key: c.evidence for c in claims}
    a = by["zhu2021.global_minimisers"]
    assert a["converged"] == a["runs"] == len(a["dims"]) * len(a["seeds"])
    assert a["dims"] == [2, 3, 6]  # K-1, K, 2K for K = 3
    assert a["max_relative_gap"] <= _zhu_ufm.GAP_TOL and a["max_structure_error"] <= _zhu_ufm.STRUCTURE_TOL
    b = by["zhu2021.phase_transition"]
    assert b["below"] > 0 and b["above"] > 0 and b["failures"] == []
    assert b["max_zero_norm_above"] <= _zhu_ufm.ZERO_TOL and b["min_rho_below"] > 0
    c = by["zhu2021.benign_landscape"]
    assert c["random_starts_global"] == c["random_starts"] > 0 and "gd" in c["global_by_solver"]
    assert c["constructed_mismatches"] == [] and c["certificate_disagreements"] == 0
    d = by["zhu2021.nonnegative_features"]
    assert d["min_H"] >= 0 and d["min_relative_gap"] >= -_zhu_nonneg.GAP_TOL
    e = by["zhu2021.fixed_etf_parameters"]
    assert (e["params_d512"], e["params_dK"]) == (11_173_962, 8_859_862) and e["frozen_parameters"] == 100
    assert round(100 * e["parameter_reduction"], 1) == 20.7


def test_figures_are_png_files(tiny):
    ctx, claims = tiny
    figures = [f for c in claims for f in c.figures]
    assert {f.path for f in figures} >= {"phase_transition.png", "landscape.png", "nonnegative_features.png"}
    for f in figures:
        data = (ctx.out / f.path).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000 and f.caption


def test_results_files_are_written(tiny):
    ctx, claims = tiny
    for c in claims:
        name = c.evidence.get("results_file")
        if name:
            assert json.loads((ctx.out / name).read_text())


@pytest.mark.parametrize("claim", [_zhu_ufm.claim_global_minimisers, _zhu_ufm.claim_phase_transition,
                                   _zhu_nonneg.claim_nonnegative])
def test_a_solver_capped_at_two_iterations_fails_the_claim(tmp_path, claim):
    ctx = Context(out=tmp_path, scale="tiny", overrides={"max_iter": 2})
    c = claim(ctx)
    assert c.verdict == "failed", c.summary
    assert c.evidence.get("max_iter") == 2


def _independent_objective(W, H, b, labels, lw, lh):
    """The CE UFM of REFERENCE.md section 2 written from scratch (batch-first): mean CE of H W^T + b."""
    Z = H @ W.T + b
    ce = torch.nn.functional.cross_entropy(Z, labels, reduction="mean")
    return ce + lw / 2 * (W * W).sum() + lh / 2 * (H * H).sum()


@pytest.mark.parametrize("d,seed", [(3, 1), (6, 0)])
def test_nonnegative_solver_reaches_a_kkt_point(d, seed):
    K, n, lw, lh = 3, 2, 5e-3, 5e-3
    p = make_problem("ce", K=K, n=n, d=d, lw=lw, lh=lh)
    x, info = _zhu_nonneg.solve_nonnegative(p, p.random_start(seed))
    W, H, b = (t.detach().clone().requires_grad_(True) for t in x)
    assert float(H.detach().min()) >= 0.0
    labels = torch.arange(K).repeat_interleave(n)
    f = _independent_objective(W, H, b, labels, lw, lh)
    assert math.isclose(float(f.detach()), info["objective"], rel_tol=1e-12)
    gW, gH, gb = torch.autograd.grad(f, (W, H, b))
    with torch.no_grad():
        # KKT of min f s.t. H >= 0: grad = 0 in W, b and on the free entries of H; grad >= 0 where H = 0
        pg_H = H - torch.clamp(H - gH, min=0.0)
        pg = math.sqrt(float((gW**2).sum() + (gb**2).sum() + (pg_H**2).sum()))
        scale = math.sqrt(float((W**2).sum() + (H**2).sum() + (b**2).sum()))
    assert pg * max(scale, 1.0) / float(f.detach()) < 1e-6
    active = H.detach() == 0
    assert bool(active.any())  # the bound is active: the constraint matters
    assert float(gH[active].min()) >= -1e-8  # no active entry would decrease f by going negative


def test_resnet18_claim_is_not_run_without_a_gpu(tmp_path, monkeypatch):
    from nclab.reproduce import _zhu_practice

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    c = _zhu_practice.claim_resnet_gpu(Context(out=tmp_path, scale="full", device="cuda"))
    assert (c.verdict, c.reason) == ("not run", "no GPU")
    c = _zhu_practice.claim_resnet_gpu(Context(out=tmp_path, scale="quick"))
    assert c.verdict == "not run" and "full" in c.reason
