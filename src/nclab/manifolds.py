"""Manifolds of nclab: Euclidean space, oblique manifold, sphere and their products.

Used by the unconstrained feature models (``problem.manifold``) and their solvers
(:mod:`nclab.ufm.optim`), and shared with the networks' normalized classifier head.

A manifold is a small object with a fixed vocabulary (Manopt / pymanopt, see STYLE.md):
``inner``, ``norm``, ``proj``, ``retr``, ``egrad2rgrad``, ``ehess2rhess``, ``transport``,
``random_point``, ``random_tangent``, ``zero_vector``, ``lincomb`` and ``dim``.  A *factor*
(:class:`Euclidean`, :class:`Oblique`, :class:`Sphere`) acts on one torch tensor; a
:class:`Product` of factors acts on tuples of tensors and is what every UFM problem exposes as
``problem.manifold`` (even with a single factor).  Every map keeps the dtype and the device of the
point it is given (random points are drawn in float64 on the generator's device).  A product of
nclab's own factors (``Product.fused``) also acts on ONE flat vector (``proj_flat``, ``retr_flat``,
``transport_rows_flat_``, ``ehess2rhess_flat``), consecutive oblique factors with rows of the same
length fused into one block of rows: what the solvers use.

Conventions
-----------
* The metric is the Euclidean (Frobenius) inner product of the ambient space, restricted to the
  tangent space (Riemannian submanifold geometry).
* :class:`Oblique` (m, d) is the product of m unit spheres S^{d-1}, one per ROW of an m x d matrix
  (nclab is batch-first: classifier rows w_k, feature rows h_{k,i}).  Manopt's ``obliquefactory``
  uses columns; ours is its transpose.
* Tangent space at X: ``T_X = {U : <x_i, u_i> = 0 for every row i}``;
  projection ``Proj_X(U) = U - diag(<x_i, u_i>) X``.
* Retraction: the metric projection ``R_X(U) = (X + U) / |rows|`` (second order, so Taylor checks of
  the Riemannian Hessian have slope 3).
* Riemannian Hessian of a submanifold (Absil, Mahony & Trumpf 2013):
  ``Hess f(X)[U] = Proj_X(ehess[U]) - diag(<x_i, egrad_i>) U`` row by row (the Weingarten term).
* Vector transport: projection onto the new tangent space.

What a manifold tells the solvers
---------------------------------
The solvers ask the manifold, never its class:

* ``flat`` -- True when the tangent projection is the identity and the retraction is ``x + t u``
  (:class:`Euclidean`, and a :class:`Product` of flat factors); the solvers then skip projections
  and transports, so L-BFGS is exactly the classical algorithm.  False otherwise.
* ``batched_transport`` -- True when ``transport`` accepts tangent vectors with one extra LEADING
  axis (a batch of k vectors of the factor's shape, shape ``(k, *shape)``) and transports each of
  them; nclab's factors act row-wise on the last axis, so they do.  A product is batched when all
  its factors are.

On the abstract :class:`Manifold` both are ``None`` (unknown): a factor written by a user, or any
manifold object without these attributes, is probed once by the solvers instead (its projection
applied to a random vector, its metric compared with the dot product, its transport tried on a
batch of two vectors).  A subclass whose ``transport`` is not batchable must set
``batched_transport = False``.

Example
-------
>>> import torch
>>> from nclab.manifolds import Euclidean, Oblique, Product
>>> M = Product(Oblique(3, 4), Euclidean((3,)))
>>> g = torch.Generator().manual_seed(0)
>>> x = M.random_point(g)
>>> u = M.random_tangent(x, g)
>>> abs(M.norm(x, u) - 1.0) < 1e-12 and M.dim == 3 * 3 + 3
True
>>> M.flat, M.batched_transport, Product(Euclidean((2, 2))).flat
(False, True, True)
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

__all__ = ["Manifold", "Euclidean", "Oblique", "Sphere", "Product"]

_DTYPE = torch.float64


def _check_shape(shape) -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(shape)
    for s in shape:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ValueError(f"shape must be a tuple of positive integers, got {shape!r}")
    return shape


class Manifold:
    """Abstract factor: a Riemannian submanifold of R^shape acting on one tensor.

    Subclasses define ``shape``, ``dim``, ``proj``, ``retr``, ``ehess2rhess`` (if not Euclidean)
    and ``random_point``; the rest follows from the embedded (Euclidean) metric.  They should also
    say ``flat`` and ``batched_transport`` (see the module docstring); left at ``None`` the solvers
    probe them once per run.
    """

    shape: tuple[int, ...]
    dim: int
    #: projection = identity and retraction = x + t u (None: unknown, the solvers probe)
    flat: bool | None = None
    #: ``transport`` accepts a leading batch axis (None: unknown, the solvers probe)
    batched_transport: bool | None = None

    # --- metric -----------------------------------------------------------------------------
    def inner(self, x, u, v) -> float:
        """Riemannian metric <u, v>_x (the ambient Frobenius product)."""
        return float(torch.sum(u * v))

    def norm(self, x, u) -> float:
        return float(torch.linalg.vector_norm(u))

    # --- geometry -----------------------------------------------------------------------------
    def proj(self, x, u):  # pragma: no cover - abstract
        raise NotImplementedError

    def retr(self, x, u, t: float = 1.0):  # pragma: no cover - abstract
        raise NotImplementedError

    def egrad2rgrad(self, x, g):
        """Riemannian gradient from the Euclidean one: the tangent projection."""
        return self.proj(x, g)

    def ehess2rhess(self, x, g, h, u):  # pragma: no cover - abstract
        raise NotImplementedError

    def transport(self, x, y, u):
        """Vector transport of u in T_x to T_y by projection."""
        return self.proj(y, u)

    # --- vectors -----------------------------------------------------------------------------
    def zero_vector(self, x):
        return torch.zeros_like(x)

    def lincomb(self, x, a: float, u, b: float | None = None, v=None):
        """``a*u`` or ``a*u + b*v`` (new tensor)."""
        if v is None:
            return a * u
        return a * u + b * v

    def random_point(self, generator: torch.Generator | None = None):  # pragma: no cover
        raise NotImplementedError

    def random_tangent(self, x, generator: torch.Generator | None = None):
        """A random unit-norm tangent vector at x (projected standard Gaussian)."""
        u = self.proj(x, _randn(x.shape, generator, x))
        n = self.norm(x, u)
        return u / n if n > 0 else u

    @property
    def typical_dist(self) -> float:
        """Typical distance, used by trust regions for their maximal radius (Manopt's typicaldist)."""
        return math.sqrt(self.dim)

    def __repr__(self) -> str:
        return f"{type(self).__name__}{self.shape}"


def _randn(shape, generator, like=None):
    device = generator.device if generator is not None else (like.device if like is not None else None)
    out = torch.randn(*shape, generator=generator, dtype=_DTYPE, device=device)
    if like is not None and (out.device != like.device or out.dtype != like.dtype):
        out = out.to(device=like.device, dtype=like.dtype)
    return out


def _proj_rows(X, U, out=None):
    """``U - <x_i, u_i> x_i`` row by row (the oblique projection; ``out`` may be U)."""
    return torch.addcmul(U, X, torch.linalg.vecdot(X, U).unsqueeze_(-1), value=-1.0, out=out)


def _normalize_rows_(Y):
    """Y's rows divided by their norms, in place (the oblique retraction's second half)."""
    return Y.div_(torch.linalg.vector_norm(Y, dim=-1, keepdim=True))


def _all_of(flags) -> bool | None:
    """All of the factors' answers: False if one says False, None if one does not know."""
    flags = list(flags)
    if any(f is False for f in flags):
        return False
    if any(f is None for f in flags):
        return None
    return all(bool(f) for f in flags)


class Euclidean(Manifold):
    """R^shape with the Frobenius metric: the projection is the identity, R_x(u) = x + u."""

    flat = True
    batched_transport = True  # the identity transports any batch

    def __init__(self, shape):
        self.shape = _check_shape(shape)
        self.dim = math.prod(self.shape)

    def proj(self, x, u):
        return u

    def egrad2rgrad(self, x, g):
        return g

    def retr(self, x, u, t: float = 1.0):
        return x + t * u

    def ehess2rhess(self, x, g, h, u):
        return h

    def transport(self, x, y, u):
        return u

    def random_point(self, generator: torch.Generator | None = None):
        return _randn(self.shape, generator)


class Oblique(Manifold):
    """m x d matrices with unit-norm ROWS: the product of m spheres S^{d-1}; dim = m (d-1).

    ``Proj_X(U) = U - <x_i, u_i> x_i`` row by row; ``R_X(tU) = rows of (X + tU) normalised``;
    ``Hess f(X)[U] = Proj_X(ehess[U]) - <x_i, egrad_i> u_i`` row by row.
    Every formula acts on the last axis, so ``transport`` accepts a leading batch axis.
    """

    flat = False
    batched_transport = True

    def __init__(self, m: int, d: int):
        for name, v in (("m", m), ("d", d)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Oblique: {name} must be a positive integer, got {v!r}")
        self.m, self.d = m, d
        self.shape = (m, d)
        self.dim = m * (d - 1)

    @staticmethod
    def _rowdot(x, u):
        return torch.sum(x * u, dim=-1, keepdim=True)

    def proj(self, x, u):
        return _proj_rows(x, u)

    def retr(self, x, u, t: float = 1.0):
        return _normalize_rows_(torch.add(x, u, alpha=t))

    def ehess2rhess(self, x, g, h, u):
        return self.proj(x, h) - self._rowdot(x, g) * u

    def random_point(self, generator: torch.Generator | None = None):
        x = _randn(self.shape, generator)
        return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)

    @property
    def typical_dist(self) -> float:
        return math.pi * math.sqrt(self.m)

    def __repr__(self) -> str:
        return f"Oblique(m={self.m}, d={self.d})"


class Sphere(Oblique):
    """The unit sphere S^{d-1} of R^d: a single unit vector of shape (d,), dim = d - 1.

    Implemented as the one-row oblique manifold (the row-wise formulas act on the last axis)."""

    def __init__(self, d: int):
        super().__init__(1, d)
        self.shape = (d,)

    @property
    def typical_dist(self) -> float:
        return math.pi

    def __repr__(self) -> str:
        return f"Sphere(d={self.d})"


class Product(Manifold):
    """Product of factors, acting on tuples of tensors (one per factor); dim = sum of dims.

    The metric is the sum of the factors' metrics.  ``flatten``/``unflatten`` convert a tuple to
    and from one 1-D tensor (the basis-free coordinates used by the derivative tools)."""

    def __init__(self, *factors: Manifold):
        if len(factors) == 1 and isinstance(factors[0], (list, tuple)):
            factors = tuple(factors[0])
        if not factors or not all(isinstance(f, Manifold) and not isinstance(f, Product) for f in factors):
            raise ValueError("Product needs one or more factor manifolds (Euclidean, Oblique, Sphere)")
        self.factors: tuple[Manifold, ...] = tuple(factors)
        self.shapes = tuple(f.shape for f in self.factors)
        self.shape = self.shapes  # for repr / describe
        self.dim = sum(f.dim for f in self.factors)
        self.sizes = tuple(math.prod(s) for s in self.shapes)
        self.ambient_dim = sum(self.sizes)
        self.segments = _segments(self.factors, self.sizes)
        #: the flat-vector maps (``proj_flat``, ``retr_flat``, ...) are available: every factor is
        #: one of nclab's own (Euclidean, Oblique, Sphere), whose formulas they fuse
        self.fused = self.segments is not None
        # some coordinates lie outside the oblique segments (Euclidean factors)
        self._partial = self.fused and sum(b - a for a, b, _ in self.segments) != self.ambient_dim
        # the row length where one oblique segment covers the whole vector (else None)
        whole = self.fused and len(self.segments) == 1 and not self._partial
        self._whole = self.segments[0][2] if whole else None

    @property
    def flat(self) -> bool | None:
        """True when every factor is flat, False when one is not, None when one does not say."""
        return _all_of(f.flat for f in self.factors)

    @property
    def batched_transport(self) -> bool | None:
        """True when every factor's transport takes a leading batch axis (None: one does not say)."""
        return _all_of(f.batched_transport for f in self.factors)

    def _check(self, x) -> None:
        if not isinstance(x, (tuple, list)) or len(x) != len(self.factors):
            raise ValueError(
                f"a point/tangent of {self!r} is a tuple of {len(self.factors)} tensors, got {type(x).__name__}"
                + (f" of length {len(x)}" if isinstance(x, (tuple, list)) else "")
            )

    def inner(self, x, u, v) -> float:
        self._check(u)
        return float(sum(torch.sum(ui * vi) for ui, vi in zip(u, v)))

    def norm(self, x, u) -> float:
        return math.sqrt(max(self.inner(x, u, u), 0.0))

    def proj(self, x, u):
        self._check(u)
        return tuple(f.proj(xi, ui) for f, xi, ui in zip(self.factors, x, u))

    def retr(self, x, u, t: float = 1.0):
        self._check(x)
        return tuple(f.retr(xi, ui, t) for f, xi, ui in zip(self.factors, x, u))

    def egrad2rgrad(self, x, g):
        self._check(g)
        return tuple(f.egrad2rgrad(xi, gi) for f, xi, gi in zip(self.factors, x, g))

    def ehess2rhess(self, x, g, h, u):
        return tuple(f.ehess2rhess(xi, gi, hi, ui) for f, xi, gi, hi, ui in zip(self.factors, x, g, h, u))

    def transport(self, x, y, u):
        return tuple(f.transport(xi, yi, ui) for f, xi, yi, ui in zip(self.factors, x, y, u))

    def zero_vector(self, x):
        return tuple(torch.zeros_like(xi) for xi in x)

    def lincomb(self, x, a: float, u, b: float | None = None, v=None):
        if v is None:
            return tuple(a * ui for ui in u)
        return tuple(a * ui + b * vi for ui, vi in zip(u, v))

    def random_point(self, generator: torch.Generator | None = None):
        return tuple(f.random_point(generator) for f in self.factors)

    def random_tangent(self, x, generator: torch.Generator | None = None):
        u = self.proj(x, tuple(_randn(xi.shape, generator, xi) for xi in x))
        n = self.norm(x, u)
        return self.lincomb(x, 1.0 / n, u) if n > 0 else u

    @property
    def typical_dist(self) -> float:
        return math.sqrt(sum(f.typical_dist ** 2 for f in self.factors))

    # --- basis-free coordinates ---------------------------------------------------------------
    def flatten(self, u: Sequence[torch.Tensor]) -> torch.Tensor:
        """Concatenate the tuple's tensors into one 1-D tensor of length ``ambient_dim``."""
        self._check(u)
        return torch.cat([ui.reshape(-1) for ui in u])

    def unflatten(self, vec: torch.Tensor):
        """Inverse of :meth:`flatten` (views into ``vec``)."""
        if vec.numel() != self.ambient_dim:
            raise ValueError(f"expected a vector of length {self.ambient_dim}, got {vec.numel()}")
        out, start = [], 0
        for shape, size in zip(self.shapes, self.sizes):
            out.append(vec[start : start + size].reshape(shape))
            start += size
        return tuple(out)

    # --- the flat-vector maps (fused over factors) -------------------------------------------
    # A point and its tangent vectors as ONE contiguous 1-D tensor (the factors' tensors
    # concatenated, ``flatten``); consecutive oblique factors with rows of the same length are one
    # block of rows (W and H of the normalized UFM: one (K + N) x d block), so a projection or a
    # retraction is a handful of whole-vector operations whatever the number of factors.

    def _oblique_blocks(self, *vectors):
        """For every oblique segment, the given flat vectors (or (k, D) row batches) viewed as
        matrices of rows of length d (a list of tuples; where one segment is the whole vector, as
        for the normalized UFM's W and H, plain views without slicing)."""
        if self._whole is not None:
            d = self._whole
            return [tuple(v.view(*v.shape[:-1], -1, d) for v in vectors)]
        return [tuple(v[..., a:b].view(*v.shape[:-1], (b - a) // d, d) for v in vectors) for a, b, d in self.segments]

    def proj_flat(self, x: torch.Tensor, u: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``proj`` on flat vectors: Proj_x(u) (a new tensor, or ``out``, which may be ``u``)."""
        if out is None:
            out = u.clone() if self._partial else torch.empty_like(u)
        elif out is not u and self._partial:
            out.copy_(u)
        for X, U, O in self._oblique_blocks(x, u, out):
            _proj_rows(X, U, out=O)
        return out

    def retr_flat(self, x: torch.Tensor, u: torch.Tensor, t: float = 1.0) -> torch.Tensor:
        """``retr`` on flat vectors: R_x(t u) (a new tensor)."""
        y = torch.add(x, u, alpha=t)
        for (Y,) in self._oblique_blocks(y):
            _normalize_rows_(Y)
        return y

    def transport_rows_flat_(self, y: torch.Tensor, Z: torch.Tensor) -> None:
        """Transport (by projection onto T_y) every row of ``Z`` (k x ambient_dim), in place."""
        for Yb, Zb in self._oblique_blocks(y, Z):
            _proj_rows(Yb, Zb, out=Zb)

    def ehess2rhess_flat(self, x, g, h, u) -> torch.Tensor:
        """``ehess2rhess`` on flat vectors: Proj_x(h) - <x_i, g_i> u_i on the oblique rows."""
        out = self.proj_flat(x, h)
        for X, G, U, O in self._oblique_blocks(x, g, u, out):
            O.sub_(Oblique._rowdot(X, G) * U)
        return out

    def __repr__(self) -> str:
        return "Product(" + ", ".join(repr(f) for f in self.factors) + ")"


def _segments(factors, sizes):
    """``[(start, end, d), ...]``: the oblique segments of the flat vector (consecutive oblique
    factors with rows of the same length d merged), or None when a factor is not one of nclab's
    own (its formulas are unknown: no fused flat maps)."""
    segs: list[list[int]] = []
    start = 0
    for f, size in zip(factors, sizes):
        if type(f) not in (Euclidean, Oblique, Sphere):
            return None
        if isinstance(f, Oblique):
            if segs and segs[-1][1] == start and segs[-1][2] == f.d:
                segs[-1][1] = start + size
            else:
                segs.append([start, start + size, f.d])
        start += size
    return [tuple(s) for s in segs]
