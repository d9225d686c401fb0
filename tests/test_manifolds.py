"""Geometry of nclab.manifolds: tangent projections, retractions, the Weingarten term.

Oracles: the defining equations of the tangent space (<x_i, u_i> = 0 row by row), the
sphere's geodesic cos(t) x + sin(t) u (second derivative of f along it is <u, Hess f(x)[u]>), and
finite differences of the retraction curve."""

from __future__ import annotations

import doctest
import math

import pytest
import torch

import nclab.manifolds
from nclab.manifolds import Euclidean, Manifold, Oblique, Product, Sphere


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see conftest


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


FACTORS = [Euclidean((3, 4)), Euclidean(5), Oblique(4, 3), Oblique(6, 1), Sphere(5)]


@pytest.mark.parametrize("M", FACTORS, ids=repr)
def test_projection_is_orthogonal_projector_onto_tangent_space(M):
    g = gen(1)
    x = M.random_point(g)
    u = torch.randn(*M.shape, generator=g, dtype=torch.float64)
    v = torch.randn(*M.shape, generator=g, dtype=torch.float64)
    pu = M.proj(x, u)
    torch.testing.assert_close(M.proj(x, pu), pu, rtol=0, atol=1e-14)  # idempotent
    assert abs(M.inner(x, pu, v) - M.inner(x, u, M.proj(x, v))) < 1e-13  # self-adjoint
    if isinstance(M, Oblique):
        assert float(torch.sum(x * pu, dim=-1).abs().max()) < 1e-14  # <x_i, u_i> = 0 row by row
        torch.testing.assert_close(x.norm(dim=-1), torch.ones_like(x.norm(dim=-1)))


@pytest.mark.parametrize("M", FACTORS, ids=repr)
def test_retraction_is_on_manifold_first_and_second_order(M):
    g = gen(2)
    x = M.random_point(g)
    u = M.random_tangent(x, g)
    assert abs(M.norm(x, u) - (1.0 if M.dim else 0.0)) < 1e-12  # S^0 has only the zero tangent
    torch.testing.assert_close(M.retr(x, u, 0.0), x, rtol=0, atol=1e-15)
    y = M.retr(x, u, 0.7)
    if isinstance(M, Oblique):
        torch.testing.assert_close(y.norm(dim=-1), torch.ones_like(y.norm(dim=-1)), rtol=0, atol=1e-14)
    # c(t) = R_x(t u): c'(0) = u (central difference), and the acceleration is normal, so the
    # tangential part of c(t) - x - t u is O(t^3) (second-order retraction)
    t = 1e-4
    deriv = (M.retr(x, u, t) - M.retr(x, u, -t)) / (2 * t)
    torch.testing.assert_close(deriv, u, rtol=0, atol=1e-7)
    for t in (1e-2, 1e-3):
        r = M.proj(x, M.retr(x, u, t) - x - t * u)
        assert M.norm(x, r) < 2 * t**3


@pytest.mark.parametrize("M", [Sphere(4), Oblique(3, 5)], ids=repr)
def test_weingarten_hessian_matches_second_derivative_along_geodesics(M):
    """f(X) = sum_i x_i^T A_i x_i (quadratic per row): egrad_i = 2 A_i x_i, ehess_i[u] = 2 A_i u_i.
    Along the geodesic of each sphere, row i: c_i(t) = cos(t|u_i|) x_i + sin(t|u_i|) u_i/|u_i|,
    d^2/dt^2 f(c(t)) at 0 equals <u, Hess f(x)[u]> (geodesics have normal acceleration)."""
    g = gen(3)
    rows = 1 if isinstance(M, Sphere) else M.m
    d = M.d
    A = torch.randn(rows, d, d, generator=g, dtype=torch.float64)
    A = A + A.transpose(1, 2)
    x = M.random_point(g)
    u = M.random_tangent(x, g)
    X, U = x.reshape(rows, d), u.reshape(rows, d)

    def f(Y):
        return float(torch.einsum("ri,rij,rj->", Y, A, Y))

    egrad = (2 * torch.einsum("rij,rj->ri", A, X)).reshape(x.shape)
    ehess = (2 * torch.einsum("rij,rj->ri", A, U)).reshape(x.shape)
    H = M.ehess2rhess(x, egrad, ehess, u)
    # the Riemannian Hessian maps to the tangent space
    torch.testing.assert_close(M.proj(x, H), H, rtol=0, atol=1e-13)

    nu = U.norm(dim=1, keepdim=True)

    def geo(t):
        return torch.cos(t * nu) * X + torch.sin(t * nu) * U / nu

    h = 1e-4
    second = (f(geo(h)) - 2 * f(geo(0.0)) + f(geo(-h))) / h**2
    assert abs(second - M.inner(x, u, H)) < 1e-5 * max(1.0, abs(second))
    # symmetric: <v, Hess[u]> = <Hess[v], u>
    v = M.random_tangent(x, g)
    Hv = M.ehess2rhess(x, egrad, (2 * torch.einsum("rij,rj->ri", A, v.reshape(rows, d))).reshape(x.shape), v)
    assert abs(M.inner(x, v, H) - M.inner(x, Hv, u)) < 1e-12


def test_sphere_hessian_formula_row_by_row():
    """The brief's formula: Hess f(x)[u] = Proj_x(ehess[u]) - <x, egrad> u (per row)."""
    M = Oblique(3, 4)
    g = gen(4)
    x = M.random_point(g)
    u = M.random_tangent(x, g)
    eg = torch.randn(3, 4, generator=g, dtype=torch.float64)
    eh = torch.randn(3, 4, generator=g, dtype=torch.float64)
    H = M.ehess2rhess(x, eg, eh, u)
    for i in range(3):
        xi = x[i]
        expect = eh[i] - (xi @ eh[i]) * xi - (xi @ eg[i]) * u[i]
        torch.testing.assert_close(H[i], expect, rtol=0, atol=1e-14)


def test_dimensions():
    assert Euclidean((3, 4)).dim == 12
    assert Oblique(4, 3).dim == 8
    assert Sphere(5).dim == 4
    assert Product(Oblique(2, 3), Euclidean(4), Sphere(3)).dim == 4 + 4 + 2


def test_transport_lands_in_target_tangent_space():
    M = Product(Oblique(4, 3), Euclidean((2, 2)))
    g = gen(5)
    x, y = M.random_point(g), M.random_point(g)
    u = M.random_tangent(x, g)
    w = M.transport(x, y, u)
    assert float(torch.sum(y[0] * w[0], dim=1).abs().max()) < 1e-14
    torch.testing.assert_close(w[1], u[1])


def test_product_vocabulary_and_flatten_roundtrip():
    M = Product(Oblique(3, 4), Euclidean((5, 4)), Euclidean(3))
    g = gen(6)
    x = M.random_point(g)
    u, v = M.random_tangent(x, g), M.random_tangent(x, g)
    assert abs(M.norm(x, u) - 1) < 1e-12
    assert abs(M.inner(x, u, v) - sum(float((a * b).sum()) for a, b in zip(u, v))) < 1e-13
    w = M.lincomb(x, 2.0, u, -3.0, v)
    for wi, ui, vi in zip(w, u, v):
        torch.testing.assert_close(wi, 2 * ui - 3 * vi)
    assert all(float(z.abs().max()) == 0 for z in M.zero_vector(x))
    flat = M.flatten(u)
    assert flat.shape == (M.ambient_dim,) == (12 + 20 + 3,)
    for a, b in zip(M.unflatten(flat), u):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    y = M.retr(x, u, 0.3)
    torch.testing.assert_close(y[0].norm(dim=1), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(y[1], x[1] + 0.3 * u[1])
    assert math.isfinite(M.typical_dist) and M.typical_dist > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="m"):
        Oblique(0, 3)
    with pytest.raises(ValueError, match="d"):
        Oblique(3, 0)
    with pytest.raises(ValueError, match="shape"):
        Euclidean((3, -1))
    with pytest.raises(ValueError, match="Product"):
        Product()
    M = Product(Euclidean(3), Euclidean(2))
    with pytest.raises(ValueError, match="tuple of 2"):
        M.inner(None, (torch.zeros(3),), (torch.zeros(3),))
    with pytest.raises(ValueError, match="length"):
        M.unflatten(torch.zeros(4))


# --------------------------------------------------------------------------------------------
# what a manifold tells the solvers: flat, batched_transport
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "M,flat",
    [
        (Euclidean((3, 4)), True),
        (Oblique(4, 3), False),
        (Sphere(5), False),
        (Product(Euclidean(3), Euclidean((2, 2))), True),
        (Product(Oblique(2, 3), Euclidean(4)), False),
        (Product(Sphere(3)), False),
    ],
    ids=repr,
)
def test_flat_is_true_exactly_when_projection_is_the_identity(M, flat):
    assert M.flat is flat and M.batched_transport is True
    g = gen(7)
    x = M.random_point(g)
    factors = M.factors if isinstance(M, Product) else (M,)
    u = tuple(torch.randn(*f.shape, generator=g, dtype=torch.float64) for f in factors)
    pu = M.proj(x, u) if isinstance(M, Product) else (M.proj(x, u[0]),)
    assert all(torch.equal(a, b) for a, b in zip(pu, u)) is flat  # the oracle: does proj change u?


@pytest.mark.parametrize("M", [Euclidean((3, 2)), Oblique(4, 3), Sphere(5)], ids=repr)
def test_batched_transport_transports_each_vector_of_a_leading_batch(M):
    """batched_transport = True promises: transport of a (k, *shape) stack = the stack of the k
    single transports."""
    g = gen(8)
    x, y = M.random_point(g), M.random_point(g)
    U = torch.stack([M.random_tangent(x, g) for _ in range(3)])
    got = M.transport(x, y, U)
    want = torch.stack([M.transport(x, y, U[i]) for i in range(3)])
    assert M.batched_transport is True and got.shape == U.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-15)
    P = Product(M, Euclidean(2))
    V = (U, torch.randn(3, 2, generator=g, dtype=torch.float64))
    out = P.transport((x, torch.zeros(2)), (y, torch.zeros(2)), V)
    torch.testing.assert_close(out[0], want, rtol=0, atol=1e-15)


def test_a_factor_that_does_not_say_makes_the_product_unknown():
    """A user's factor that leaves flat / batched_transport at None (unknown): the product does
    not know either, so the solvers probe it; one False factor decides a False."""

    class Mine(Euclidean):
        flat = None
        batched_transport = None

    assert Manifold.flat is None and Manifold.batched_transport is None
    assert Product(Mine(3), Euclidean(2)).flat is None
    assert Product(Mine(3), Euclidean(2)).batched_transport is None
    assert Product(Mine(3), Oblique(2, 3)).flat is False


@pytest.mark.parametrize("module", [nclab.manifolds], ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0



def test_the_fused_flat_maps_are_the_row_formulas():
    """Product's flat-vector maps (what the solvers use) against the formulas written out row by row:
    Proj_x(u) = u - <x_r, u_r> x_r on every oblique row, the identity on Euclidean coordinates;
    R_x(t u) = rows of x + t u normalised; Hess = Proj_x(h) - <x_r, g_r> u_r."""
    M = Product(Oblique(3, 4), Oblique(5, 4), Euclidean((2,)), Sphere(4))
    assert M.fused and [s[2] for s in M.segments] == [4, 4] and M.segments[0] == (0, 32, 4)
    g = torch.Generator().manual_seed(7)
    x = M.flatten(M.random_point(g))
    u, gr, h = (torch.randn(M.ambient_dim, generator=g, dtype=torch.float64) for _ in range(3))
    rows = [(0, 32), (34, 38)]  # the oblique coordinates (rows of 4); 32..34 is Euclidean

    def by_rows(fn, *vs):
        out = vs[0].clone()
        for a, b in rows:
            out[a:b] = fn(*(v[a:b].reshape(-1, 4) for v in vs)).reshape(-1)
        return out

    def proj(X, U):
        return torch.stack([U[r] - torch.dot(X[r], U[r]) * X[r] for r in range(X.shape[0])])

    want = by_rows(lambda U, X: proj(X, U), u, x)
    torch.testing.assert_close(M.proj_flat(x, u), want, rtol=1e-14, atol=1e-15)
    y = M.retr_flat(x, u, 0.3)
    z = x + 0.3 * u
    torch.testing.assert_close(y, by_rows(lambda Z: Z / Z.norm(dim=1, keepdim=True), z), rtol=1e-14, atol=1e-15)
    batch = torch.stack([u, h, gr])
    M.transport_rows_flat_(y, batch)
    for got, v in zip(batch, (u, h, gr)):
        torch.testing.assert_close(got, by_rows(lambda V, Y: proj(Y, V), v, y), rtol=1e-13, atol=1e-14)
    tu = M.proj_flat(x, u)
    want_h = M.flatten(M.ehess2rhess(M.unflatten(x), M.unflatten(gr), M.unflatten(h), M.unflatten(tu)))
    torch.testing.assert_close(M.ehess2rhess_flat(x, gr, h, tu), want_h, rtol=1e-14, atol=1e-15)

    class MyOblique(Oblique):  # a user's factor: its formulas are not known, so nothing is fused
        pass

    assert not Product(MyOblique(2, 3), Euclidean((2,))).fused
    assert Product(Oblique(2, 3), Oblique(2, 4)).segments == [(0, 6, 3), (6, 14, 4)]  # rows of other lengths
