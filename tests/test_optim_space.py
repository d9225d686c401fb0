"""The flat-vector view of a problem (nclab.ufm.optim.space): the solvers ask the manifold
(``flat``, ``batched_transport``) and probe only a manifold that does not say.

Oracles: the same solver run on a manifold that says and on a user's wrapper of it that says
nothing (probed) gives the same iterates bit for bit; the probe's answers against the wrapped
manifold's declared ones."""

from __future__ import annotations

import pytest
import torch

from nclab.manifolds import Euclidean, Oblique, Product
from nclab.ufm import optim as S
from nclab.ufm.optim.space import _Space
from nclab.ufm.problems import make_problem
from optim_problems import Quadratic, Rayleigh

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see conftest


class Plain:
    """A user's manifold: nclab's vocabulary by delegation, and no flat / batched_transport.

    ``batchable=False``: its transport refuses a leading batch axis; ``scale``: a metric that is
    ``scale`` times the Frobenius one (not what the solvers assume)."""

    def __init__(self, M, batchable=True, scale=1.0):
        self._M, self.batchable, self.scale = M, batchable, scale
        self.dim, self.typical_dist = M.dim, M.typical_dist

    def inner(self, x, u, v):
        return self.scale * self._M.inner(x, u, v)

    def proj(self, x, u):
        return self._M.proj(x, u)

    def retr(self, x, u, t=1.0):
        return self._M.retr(x, u, t)

    def egrad2rgrad(self, x, g):
        return self._M.egrad2rgrad(x, g)

    def ehess2rhess(self, x, g, h, u):
        return self._M.ehess2rhess(x, g, h, u)

    def transport(self, x, y, u):
        if not self.batchable and u[0].dim() > x[0].dim():
            raise ValueError("this transport takes one vector at a time")
        return self._M.transport(x, y, u)


class Wrapped:
    """A problem whose manifold is replaced by ``Plain(problem.manifold, ...)``."""

    def __init__(self, base, **plain):
        self.base, self.manifold = base, Plain(base.manifold, **plain)

    def cost(self, x):
        return self.base.cost(x)

    def egrad(self, x):
        return self.base.egrad(x)

    def cost_and_egrad(self, x):
        return self.base.cost_and_egrad(x)

    def rhess(self, x, u):
        return self.base.rhess(x, u)


def _no_probe(monkeypatch):
    def refuse(self):
        raise AssertionError("a manifold that says flat / batched_transport was probed")

    monkeypatch.setattr(_Space, "_probe_flat", refuse)
    monkeypatch.setattr(_Space, "_probe_batched_transport", refuse)


@pytest.mark.parametrize(
    "loss,opts,flat",
    [("ce", dict(K=3, n=2, d=3), True), ("normalized", dict(K=3, n=2, d=3), False), ("sphere", dict(n_points=4, d=3), False)],
)
def test_nclab_manifolds_are_asked_not_probed(monkeypatch, loss, opts, flat):
    _no_probe(monkeypatch)
    problem = make_problem(loss, **opts)
    sp = _Space(problem, problem.random_start(0))
    assert sp.flat is flat and sp.batched is (not flat)  # flat: nothing is ever transported
    x, log = S.lbfgs(problem, problem.random_start(0), max_iter=5, metrics_every=-1)
    assert log.n_iter == 5


@pytest.mark.parametrize("batchable", [True, False])
@pytest.mark.parametrize("make", [Quadratic, Rayleigh], ids=lambda c: c.__name__)
def test_a_manifold_that_does_not_say_is_probed_correctly(make, batchable):
    problem = make()
    x0 = problem.random_start(1)
    sp = _Space(Wrapped(problem, batchable=batchable), x0)
    assert sp.flat is problem.manifold.flat
    assert sp.batched is (batchable and not problem.manifold.flat)


@pytest.mark.parametrize("batchable", [True, False])
@pytest.mark.parametrize("name,opts", [("lbfgs", {}), ("lbfgs", dict(transport="full")), ("rcg", {}), ("rtr", {}), ("gd", {})])
def test_probed_and_declared_manifolds_give_the_same_iterates(name, opts, batchable):
    """The normalized UFM (oblique factors) and its wrapper that says nothing: one run each, the
    same records and point bit for bit (the probe's answers equal the declared ones, and the
    unbatched loop transports exactly what the batched call does)."""
    problem = make_problem("normalized", K=4, n=3, d=4, tau=5.0)
    x0 = problem.random_start(2)
    xa, la = S.SOLVERS[name](problem, x0, max_iter=60, metrics_every=-1, **opts)
    xb, lb = S.SOLVERS[name](Wrapped(problem, batchable=batchable), x0, max_iter=60, metrics_every=-1, **opts)
    strip = lambda log: [{k: v for k, v in r.items() if k != "time"} for r in log.iterations]  # noqa: E731
    assert strip(la) == strip(lb) and la.stop_reason == lb.stop_reason
    assert all(torch.equal(a, b) for a, b in zip(xa, xb))


def test_a_manifold_with_another_metric_is_refused():
    problem = Rayleigh()
    with pytest.raises(NotImplementedError, match="Frobenius"):
        S.lbfgs(Wrapped(problem, scale=2.0), problem.random_start(0))


def test_a_declared_answer_wins_over_the_probe(monkeypatch):
    """A Product of nclab factors is asked even when it is not what the old code recognised by
    class name (a subclass of Oblique)."""
    _no_probe(monkeypatch)

    class MyOblique(Oblique):
        pass

    class P(Quadratic):
        pass

    problem = P()
    problem.manifold = Product(MyOblique(2, 3), Euclidean(4))
    sp = _Space(problem, problem.manifold.random_point(torch.Generator().manual_seed(0)))
    assert sp.flat is False and sp.batched is True
