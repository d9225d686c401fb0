"""The gushen2024 target at the tiny scale: every claim checked with the evidence its criterion
names, and a broken solver (capped at 2 iterations) turns claims to failed."""

from __future__ import annotations

import math

import pytest

from nclab.reproduce import gushen2024
from nclab.reproduce._yaras_ufm import closed_form_optimum, identity_bounds
from nclab.reproduce.claims import Context

KEYS = ["gushen2024.ce_global_form", "gushen2024.mse_global_form", "gushen2024.strict_saddles",
        "gushen2024.random_starts"]
NUMBERS = {
    "gushen2024.ce_global_form": ["max_abs_relative_gap", "max_gram_error", "max_alignment_error", "max_bias_error",
                                  "all_converged"],
    "gushen2024.mse_global_form": ["max_abs_relative_gap", "max_gram_error", "max_alignment_error", "max_bias_error",
                                   "all_converged"],
    "gushen2024.strict_saddles": ["non_global_points", "non_global_strict_saddles", "largest_saddle_lambda_min",
                                  "lemma_3_1_holds", "max_balance_error", "prop_4_1_agrees"],
    "gushen2024.random_starts": ["runs", "global", "gu_shen_check", "capped_max_relative_gap"],
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("gushen2024")
    return out, {c.key: c for c in gushen2024.TARGET.run(Context(out=out, scale="tiny"))}


def test_every_claim_passes_at_tiny_scale_with_its_evidence(tiny):
    out, claims = tiny
    assert list(claims) == KEYS
    for key, claim in claims.items():
        assert claim.verdict == "passed", (key, claim.summary, claim.reason)
        for name in NUMBERS[key]:
            assert claim.evidence.get(name) is not None, (key, name)
        assert claim.figures
        for fig in claim.figures:
            assert (out / fig.path).is_file() and (out / fig.path).stat().st_size > 1000


def test_the_evidence_says_what_the_theorems_say(tiny):
    _, claims = tiny
    for key in KEYS[:2]:
        e = claims[key].evidence
        assert e["max_abs_relative_gap"] <= 1e-6 and e["max_gram_error"] <= 1e-4 and e["d"] == e["K"]
    s = claims["gushen2024.strict_saddles"].evidence
    assert s["non_global_strict_saddles"] == s["non_global_points"] >= 3  # an origin per problem at least
    assert s["largest_saddle_lambda_min"] < 0 and s["prop_4_1_agrees"] == s["prop_4_1_points"] > 0
    assert s["non_global_min_null_dim"] >= 1
    r = claims["gushen2024.random_starts"].evidence
    assert r["global"] == r["runs"] and r["gu_shen_check"]["holds"] is True
    assert set(r["gu_shen_check"]["configs"]) == {"ce", "mse", "mse-nobias"}


def test_a_solver_capped_at_two_iterations_fails_claims(tmp_path):
    ctx = Context(out=tmp_path, scale="tiny", overrides={"max_iter": 2})
    claims = {c.key: c for c in gushen2024.TARGET.run(ctx)}
    assert claims["gushen2024.ce_global_form"].verdict == "failed"
    assert claims["gushen2024.random_starts"].verdict == "failed"
    assert claims["gushen2024.ce_global_form"].evidence["all_converged"] is False


def test_oracles_and_identity_bounds():
    # MSE closed forms of REFERENCE.md section 2 at beta = sqrt(n lw lh)
    K, n, lw, lh = 4, 3, 5e-3, 5e-3
    beta = math.sqrt(n * lw * lh)
    assert math.isclose(closed_form_optimum("mse", K, n, lw=lw, lh=lh), (K - 1) * beta * (1 - K * beta / 2))
    assert math.isclose(closed_form_optimum("mse-nobias", K, n, lw=lw, lh=lh), K * beta * (1 - K * beta / 2))
    assert closed_form_optimum("ce", K, n, lw=1.0, lh=1.0) == math.log(K)  # beta >= 1/K: W = H = 0
    # at an exact critical point the bounds are ~0; at a random point they bound the residuals
    from nclab.ufm.landscape import criticality_identities
    from nclab.ufm.problems import make_problem

    p = make_problem("ce", K=3, n=2, d=3, lw=lw, lh=lh)
    x = p.random_start(0)
    ids, b = criticality_identities(p, x), identity_bounds(p, x)
    assert ids["balance_error"] <= b["balance"] * (1 + 1e-9) and ids["ones_error"] <= b["ones"] * (1 + 1e-9)
    assert identity_bounds(p, p.optimal_point(seed=0))["balance"] < 1e-6
