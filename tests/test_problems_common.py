"""What every UFM problem shares (nclab.ufm.problems, base and logit machinery), against oracles
computed another way.

* Derivatives: an independent float64 autodiff implementation of each objective, written from
  REFERENCE.md section 2 with torch.nn.functional, differentiated by torch.func
  (tests/ufm_oracles.py).
* The per-point cache and counters, reproducible starts, the factory and its validation, the NC
  metrics at the closed forms, and the docstring examples of every module of the package.
"""

from __future__ import annotations

import doctest
import math

import pytest
import torch

import nclab.ufm.problems
from nclab.ufm.problems import CEProblem, MSEProblem, NormalizedProblem, make_problem
from nclab.ufm.problems import base, ce, logit, mse, normalized, sphere
from ufm_oracles import oracle_grad_hvp, rel_err

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see conftest


CONFIGS = [
    ("ce", dict(K=2, n=3, d=1, lw=1e-2, lh=2e-2)),  # d = K-1
    ("ce", dict(K=3, n=2, d=3, lw=5e-3, lh=1e-2)),  # d = K
    ("ce", dict(K=4, n=3, d=3, lw=1e-2, lh=1e-3, bias=False)),  # d = K-1, no bias
    ("ce", dict(K=5, n=2, d=2, lw=3e-2, lh=1e-2, lb=0.1)),  # d < K-1, penalised bias
    ("ce", dict(K=4, n=1, d=6, lw=1e-3, lh=1e-3, lb=0.05, class_sizes=[1, 3, 2, 5])),  # imbalanced
    ("ce", dict(K=3, n=1, d=2, lw=1e-2, lh=1e-2, bias=False, class_sizes=[2, 1, 4])),
    ("mse", dict(K=3, n=2, d=3, lw=5e-3, lh=1e-2)),
    ("mse", dict(K=4, n=3, d=3, lw=1e-2, lh=1e-3, bias=False)),
    ("mse", dict(K=5, n=2, d=2, lw=3e-2, lh=1e-2, lb=0.2)),
    ("mse", dict(K=2, n=4, d=5, lw=1e-1, lh=1e-1)),
    ("normalized", dict(K=3, n=2, d=3, tau=1.0)),
    ("normalized", dict(K=4, n=2, d=2, tau=5.0)),
    ("normalized", dict(K=5, n=3, d=4, tau=0.3)),
    ("sphere", dict(n_points=5, d=3, tau=2.0)),
    ("sphere", dict(n_points=4, d=4, tau=10.0)),
    ("sphere", dict(n_points=3, d=2, tau=0.5)),
]
IDS = [f"{loss}-" + "-".join(f"{k}{v}" for k, v in o.items()) for loss, o in CONFIGS]


def _random_point(problem, seed, scale):
    """A random start, spread out by ``scale`` (Euclidean factors) so softmaxes are not uniform."""
    x = problem.random_start(seed)
    if problem.loss in ("ce", "mse"):
        return tuple(scale * t for t in x)
    return x


@pytest.mark.parametrize("loss,opts", CONFIGS, ids=IDS)
def test_cost_gradient_hvp_match_torch_func_oracle(loss, opts):
    p = make_problem(loss, **opts)
    M = p.manifold
    for seed, scale in ((0, 1.0), (1, 3.0)):
        x = _random_point(p, seed, scale)
        # arbitrary ambient direction for the Euclidean HVP (tangency is irrelevant there)
        g = torch.Generator().manual_seed(100 + seed)
        u = tuple(torch.randn(t.shape, generator=g, dtype=torch.float64) for t in x)
        f_ref, g_ref, h_ref = oracle_grad_hvp(p, x, u)
        assert abs(p.cost(x) - float(f_ref)) <= 1e-12 * max(1.0, abs(float(f_ref)))
        assert rel_err(p.egrad(x), g_ref) < 1e-10
        assert rel_err(p.ehess(x, u), h_ref) < 1e-10
        c, eg = p.cost_and_egrad(x)
        assert c == p.cost(x) and rel_err(eg, g_ref) < 1e-10
        # Riemannian gradient is tangent; Riemannian Hessian symmetric and tangent
        rg = p.rgrad(x)
        for a, b in zip(M.proj(x, rg), rg):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-14)
        ut, vt = M.random_tangent(x, g), M.random_tangent(x, g)
        Hu, Hv = p.rhess(x, ut), p.rhess(x, vt)
        scale_h = M.norm(x, Hu) + M.norm(x, Hv)
        assert abs(M.inner(x, ut, Hv) - M.inner(x, Hu, vt)) < 1e-13 * max(scale_h, 1.0)
        for a, b in zip(M.proj(x, Hu), Hu):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-13 * max(scale_h, 1.0))


@pytest.mark.parametrize("loss,opts", CONFIGS, ids=IDS)
def test_symmetry_directions_are_flat_tangent_and_span_the_orbit(loss, opts):
    """f(W Q^T, H Q^T) = f(W, H): the explicit orbit directions (and the CE shift of a free bias)
    are tangent, the gradient is orthogonal to them, and the directions are x_i A for skew A."""
    p = make_problem(loss, **opts)
    x = _random_point(p, 0, 2.0)
    M = p.manifold
    dirs = p.symmetry_directions(x)
    d = p.d
    assert len(dirs) == d * (d - 1) // 2 + len(p.flat_directions(x))
    g = p.rgrad(x)
    gn = M.norm(x, g)
    for s in dirs:
        for a, b in zip(M.proj(x, s), s):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-13)
        assert abs(M.inner(x, g, s)) < 1e-12 * max(gn, 1.0) * max(M.norm(x, s), 1.0)
    # the first direction is A = E_01 - E_10 applied to the rotating factors only
    if d > 1:
        A = torch.zeros(d, d, dtype=torch.float64)
        A[0, 1], A[1, 0] = 1.0, -1.0
        for i, t in enumerate(x):
            expect = t @ A if i in p.rotating_factors else torch.zeros_like(t)
            torch.testing.assert_close(dirs[0][i], expect, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# metrics at the closed forms
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "problem",
    [
        CEProblem(K=4, n=3, d=4, lw=5e-3, lh=5e-3),
        CEProblem(K=3, n=2, d=2, lw=5e-3, lh=5e-3, bias=False),
        MSEProblem(K=4, n=3, d=3, lw=5e-3, lh=5e-3),
        NormalizedProblem(4, 3, 5, 2.0),
    ],
    ids=repr,
)
def test_nc_metrics_vanish_at_closed_form(problem):
    m = problem.metrics(problem.optimal_point(seed=0))
    for name in ("nc1", "nc1_trace_ratio", "cdnv", "nc2_equinorm_means", "nc2_equinorm_W",
                 "nc2_maxangle_means", "nc2_maxangle_W", "nc2_etf_means", "nc2_etf_W", "nc3",
                 "nc3_duality_gram", "nc4"):
        assert m[name] is not None and abs(m[name]) < 1e-10, name
    # REFERENCE.md: only the centred offset must vanish (the MSE optimum has b = 1/K 1, a constant)
    assert abs(m["bias_collapse"]) < 1e-10


def test_metrics_at_collapsed_zero_point_are_undefined_not_errors():
    """beta >= 1/K: W = H = 0; the ETF-shaped metrics are 0/0 and reported as None."""
    p = CEProblem(K=4, n=5, d=4, lw=0.1, lh=0.2)
    m = p.metrics(p.optimal_point())
    assert m["nc2_etf_W"] is None and m["nc1"] is None


@pytest.mark.parametrize("loss,opts", CONFIGS, ids=IDS)
def test_structure_vanishes_at_every_closed_form(loss, opts):
    """Every problem's structure(x) is 0 (to rounding) at its own optimal point."""
    p = make_problem(loss, **opts)
    x = p.optimal_point(seed=1)
    if x is None:
        assert p.optimum is None
        return
    s = p.structure(x)
    if loss == "sphere" and p.d != p.n_points - 1:
        # the simplex ETF is a tight frame of its (n-1)-dimensional span only (test_problems_sphere)
        s.pop("frame_potential_excess")
    assert s and all(v is not None and abs(v) < 1e-12 for v in s.values()), s


# --------------------------------------------------------------------------------------------
# caching, counters, starts, factory, validation
# --------------------------------------------------------------------------------------------


def test_cache_reuses_point_state_and_sees_in_place_changes(monkeypatch):
    p = make_problem("ce", K=3, n=2, d=3)
    calls = []
    orig = p._compute
    monkeypatch.setattr(p, "_compute", lambda x: calls.append(1) or orig(x))
    x = p.random_start(0)
    u = p.manifold.random_tangent(x, torch.Generator().manual_seed(0))
    f0 = p.cost(x)
    for _ in range(5):
        p.ehess(x, u)
        p.rhess(x, u)
    p.egrad(x)
    assert len(calls) == 1
    assert p.counts == {"cost": 1, "grad": 1, "hess": 10}
    x[0].mul_(2.0)  # in place: the version changes, so the state is recomputed
    assert p.cost(x) != f0 and len(calls) == 2
    y = tuple(t.clone() for t in x)  # equal values, new tensors
    assert p.cost(y) == p.cost(x) and len(calls) == 3


def test_random_start_is_reproducible_and_on_manifold():
    for loss in ("ce", "mse", "normalized", "sphere"):
        p = make_problem(loss)
        a, b, c = p.random_start(7), p.random_start(7), p.random_start(8)
        assert all(torch.equal(s, t) for s, t in zip(a, b))
        assert not torch.equal(a[0], c[0])
        assert len(a) == len(p.manifold.factors)
        for t, shape in zip(a, p.manifold.shapes):
            assert tuple(t.shape) == shape and t.dtype == torch.float64
        if loss in ("normalized", "sphere"):
            for t in a:
                torch.testing.assert_close(t.norm(dim=1), torch.ones(t.shape[0], dtype=torch.float64))


def test_factory_defaults_describe_roundtrip_and_accessors():
    p = make_problem("ce")
    assert (p.K, p.n, p.d, p.N) == (4, 5, 4, 20) and p.has_bias
    assert torch.equal(p.labels, torch.arange(4).repeat_interleave(5))
    q = make_problem(**p.describe())
    assert q.describe() == p.describe()
    for loss in ("mse", "normalized", "sphere"):
        r = make_problem(loss)
        assert make_problem(**r.describe()).describe() == r.describe()
    x = p.random_start(0)
    assert p.classifier(x) is x[0] and p.features(x) is x[1] and p.bias(x) is x[2]
    s = make_problem("sphere", n=5, d=4)
    assert s.n_points == 5 and s.bias(s.random_start(0)) is None
    imb = make_problem("ce", class_sizes=[1, 2, 3, 4])
    assert imb.N == 10 and torch.equal(imb.labels, torch.tensor([0, 1, 1, 2, 2, 2, 3, 3, 3, 3]))
    assert imb.describe()["class_sizes"] == [1, 2, 3, 4]


def test_defaults_name_exactly_each_problems_options():
    """DEFAULTS owns which options each problem takes: describe() reports the same names (n_points
    for the sphere; class_sizes only for CE) and LOSSES lists DEFAULTS' keys."""
    assert nclab.ufm.problems.LOSSES == tuple(nclab.ufm.problems.DEFAULTS)
    for loss, defaults in nclab.ufm.problems.DEFAULTS.items():
        assert set(make_problem(loss).describe()) == {"loss", *defaults}
    with pytest.raises(ValueError, match="not both"):
        make_problem("sphere", n=3, n_points=4)


@pytest.mark.parametrize(
    "loss,opts,name",
    [
        ("ce", dict(K=1), "K"),
        ("mse", dict(K=1), "K"),
        ("normalized", dict(K=1), "K"),
        ("ce", dict(n=0), "n"),
        ("normalized", dict(n=0), "n"),
        ("ce", dict(lw=-1e-3), "lw"),
        ("ce", dict(lh=-1e-3), "lh"),
        ("ce", dict(lb=-1e-3), "lb"),
        ("mse", dict(lw=-1.0), "lw"),
        ("ce", dict(lb=0.1, bias=False), "lb"),
        ("normalized", dict(tau=0.0), "tau"),
        ("sphere", dict(tau=-1.0), "tau"),
        ("ce", dict(d=0), "d"),
        ("mse", dict(d=0), "d"),
        ("normalized", dict(d=0), "d"),
        ("sphere", dict(d=0), "d"),
        ("sphere", dict(n_points=1), "n_points"),
        ("ce", dict(class_sizes=[2, 3]), "class_sizes"),
        ("ce", dict(class_sizes=[2, 0, 3, 1]), "class_sizes"),
        ("ce", dict(bias="yes"), "bias"),
        ("mse", dict(class_sizes=[1, 2, 3, 4]), "class_sizes"),
        ("ce", dict(tau=1.0), "tau"),
        ("hinge", dict(), "loss"),
    ],
)
def test_bad_options_raise_value_error_naming_the_option(loss, opts, name):
    with pytest.raises(ValueError, match=name):
        make_problem(loss, **opts)


@pytest.mark.parametrize(
    "loss,opts,message",
    [
        ("ce", dict(K=1), "K must be >= 2, got 1"),
        ("ce", dict(K=2.5), "K must be an integer >= 2, got 2.5"),
        ("ce", dict(lw=0.0), "lw must be > 0, got 0.0"),
        ("mse", dict(lb=-1.0), "lb must be >= 0, got -1.0"),
        ("normalized", dict(tau=float("inf")), "tau must be a finite number, got inf"),
        ("normalized", dict(tau="5"), "tau must be a real number, got '5'"),
        ("sphere", dict(n_points=1), "n_points must be >= 2, got 1"),
        ("ce", dict(bias=1), "bias must be True or False, got 1"),
    ],
)
def test_validation_uses_the_shared_wording(loss, opts, message):
    """The problems validate through nclab._validation: one wording everywhere (a string is no
    longer parsed as a number; the CLI passes floats)."""
    with pytest.raises(ValueError) as err:
        make_problem(loss, **opts)
    assert str(err.value) == message


@pytest.mark.parametrize("module", [nclab.ufm.problems, base, logit, ce, mse, normalized, sphere],
                         ids=lambda m: m.__name__)
def test_every_module_opens_with_a_docstring(module):
    assert module.__doc__ and len(module.__doc__.strip().splitlines()) >= 3


def test_docstring_examples_run():
    result = doctest.testmod(nclab.ufm.problems, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
