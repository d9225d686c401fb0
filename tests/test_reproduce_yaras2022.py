"""The yaras2022 target at the tiny scale: every claim checked with the evidence its criterion
names, and a broken solver (capped at 2 iterations) turns the UFM claims to failed."""

from __future__ import annotations

import math

import pytest

from nclab.reproduce import yaras2022
from nclab.reproduce._yaras_nets import epochs_to
from nclab.reproduce._yaras_ufm import closed_form_optimum, gram_error
from nclab.reproduce.claims import Context

KEYS = ["yaras2022.global_minimisers", "yaras2022.strict_saddles", "yaras2022.random_starts",
        "yaras2022.network_collapse", "yaras2022.network_accuracy"]
#: The numbers each claim's criterion names.
NUMBERS = {
    "yaras2022.global_minimisers": ["max_abs_relative_gap", "max_gram_error", "max_feature_error", "all_converged",
                                    "starts_needed"],
    "yaras2022.strict_saddles": ["non_global_points", "non_global_strict_saddles", "largest_saddle_lambda_min",
                                 "local_non_global_minimisers"],
    "yaras2022.random_starts": ["runs", "global", "per_solver"],
    "yaras2022.network_collapse": ["epochs_to_threshold", "median_epochs_to_threshold", "final_nc1"],
    "yaras2022.network_accuracy": ["mean_test_acc", "difference", "margin"],
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("yaras2022")
    return out, {c.key: c for c in yaras2022.TARGET.run(Context(out=out, scale="tiny", data_dir=data_dir))}


def test_every_claim_passes_at_tiny_scale_with_its_evidence(tiny):
    out, claims = tiny
    assert list(claims) == KEYS
    for key, claim in claims.items():
        assert claim.verdict == "passed", (key, claim.summary, claim.reason)
        for name in NUMBERS[key]:
            assert claim.evidence.get(name) is not None, (key, name)
        for fig in claim.figures:
            assert (out / fig.path).is_file() and (out / fig.path).stat().st_size > 1000
    assert all(claims[k].figures for k in KEYS[:4])


def test_the_evidence_says_what_the_theorems_say(tiny):
    _, claims = tiny
    g = claims["yaras2022.global_minimisers"].evidence
    assert g["max_abs_relative_gap"] <= 1e-6 and g["max_gram_error"] <= 1e-4 and max(g["taus"]) >= 50
    s = claims["yaras2022.strict_saddles"].evidence
    assert s["non_global_points"] >= 1 and s["non_global_strict_saddles"] == s["non_global_points"]
    assert s["largest_saddle_lambda_min"] < 0 and s["spectrum_saddle_min"] < 0 <= s["spectrum_minimiser_min"] + 1e-8
    r = claims["yaras2022.random_starts"].evidence
    assert r["global"] == r["runs"] and set(r["per_solver"]) == {"rgd", "rcg", "rtr", "lbfgs"}
    n = claims["yaras2022.network_collapse"].evidence
    med = n["median_epochs_to_threshold"]
    assert med["normalized"] < med["learned"]


def test_a_solver_capped_at_two_iterations_fails_the_ufm_claims_and_no_data_is_not_run(tmp_path):
    ctx = Context(out=tmp_path, scale="tiny", data_dir=tmp_path / "no-data", overrides={"max_iter": 2})
    claims = {c.key: c for c in yaras2022.TARGET.run(ctx)}
    assert claims["yaras2022.global_minimisers"].verdict == "failed"
    assert claims["yaras2022.random_starts"].verdict == "failed"
    assert "not converged" in claims["yaras2022.global_minimisers"].reason or \
        claims["yaras2022.global_minimisers"].evidence["all_converged"] is False
    for key in ("yaras2022.network_collapse", "yaras2022.network_accuracy"):
        assert claims[key].verdict == "not run" and "no data" in claims[key].reason


def test_oracles():
    # f* of REFERENCE.md section 2 at K = 2: log(1 + exp(-2 tau)); the ETF Gram has error 0
    assert math.isclose(closed_form_optimum("normalized", 2, 3, tau=1.5), math.log1p(math.exp(-3.0)))
    import torch

    W = torch.tensor([[1.0, 0.0], [-0.5, 3 ** 0.5 / 2], [-0.5, -(3 ** 0.5) / 2]], dtype=torch.float64)
    assert gram_error(2.0 * W) < 1e-12 and gram_error(torch.eye(3, dtype=torch.float64), "orthogonal") == 0.0
    assert gram_error(torch.eye(3, dtype=torch.float64)) > 0.4
    log = [{"epoch": 1, "nc1": 0.9}, {"epoch": 2, "nc1": 0.3}, {"epoch": 3, "nc1": 0.1}]
    assert epochs_to(log, 0.3) == 2 and epochs_to(log, 0.05) is None
