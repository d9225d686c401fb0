"""The problem seen through flat vectors: :class:`_Point` and :class:`_Space`.

Internally a point, a gradient and a tangent vector are single flat float64 vectors (the tuple's
tensors concatenated); the problem always sees tuples (views of the flat vector on flat problems,
the retraction's output on manifolds; the same tuple object is reused at one point, so the
problem's per-point cache serves all the Hessian-vector products of a trust-region step).  Inner
products are the ambient (Frobenius) ones, which is the metric of every nclab manifold (Riemannian
submanifolds of Euclidean space).

The space asks the manifold what it is (:mod:`nclab.manifolds`): ``manifold.flat`` (projection and
transport are identities, so they are skipped) and ``manifold.batched_transport`` (several vectors
are transported in one call).  A manifold that does not say (``None`` or no such attribute: a
user's own) is probed once per run instead, and its metric is checked against the dot product.
The space also counts the evaluations of the cost, the gradient and Hessian-vector products.

Fused path.  Where the manifold is a product of nclab's own factors (``manifold.fused``) the
projection, retraction and transports act on the flat vector directly (consecutive oblique factors
as one block of rows: a few whole-vector operations, no tuple per call), and where the problem
offers ``cost_and_egrad_into`` the Euclidean gradient is written straight into a flat vector (no
tuple, no concatenation).  Otherwise every map goes through the manifold's tuple methods.

Device and dtype.  The vectors live on the problem's ``device`` and in its ``dtype`` (nclab's
problems say; for a problem that does not, float64 on the device of ``x0``); ``x0`` is converted.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["_Point", "_Space", "_dot"]


def _dot(u, v) -> float:
    return float(torch.dot(u, v))


class _Point:
    """A point: flat vector ``x``, its tuple ``xt`` (what the problem sees), objective ``f``,
    flat Riemannian gradient ``g`` and its norm ``gn`` (filled by :meth:`_Space.evaluate`)."""

    __slots__ = ("x", "xt", "f", "g", "gn")

    def __init__(self, x, xt):
        self.x, self.xt = x, xt
        self.f = math.nan
        self.g = None
        self.gn = math.nan


def _defined_in(cls, name: str):
    return next((k for k in cls.__mro__ if name in vars(k)), None)


def _fused_evaluation(problem) -> bool:
    """Whether the space may call ``problem.cost_and_egrad_into``: the problem has it, and it is
    defined no higher in the class tree than ``cost_and_egrad`` (a subclass that overrides only
    ``cost_and_egrad`` keeps its own evaluation)."""
    if not callable(getattr(problem, "cost_and_egrad_into", None)):
        return False
    into, plain = _defined_in(type(problem), "cost_and_egrad_into"), _defined_in(type(problem), "cost_and_egrad")
    return into is not None and (plain is None or issubclass(into, plain))


class _Space:
    """The problem seen through flat vectors; counts evaluations.

    ``flat``: projections and transports are identities (skipped); ``batched``: the manifold's
    transport takes a leading batch axis."""

    def __init__(self, problem, x0):
        if not hasattr(problem, "manifold"):
            raise TypeError("problem must expose a `manifold` (the UFMProblem interface)")
        self.problem = problem
        self.M = problem.manifold
        if isinstance(x0, torch.Tensor):
            x0 = (x0,)
        if not isinstance(x0, (tuple, list)) or not x0:
            raise TypeError("x0 must be a tuple of tensors, one per factor of problem.manifold")
        x0 = tuple(torch.as_tensor(t) for t in x0)
        if any(not torch.is_floating_point(t) for t in x0):
            raise TypeError("x0 must hold floating-point tensors")
        self.device = torch.device(getattr(problem, "device", None) or x0[0].device)
        self.dtype = getattr(problem, "dtype", None) or torch.float64
        if self.dtype not in (torch.float64, torch.float32):
            raise TypeError(f"the solvers compute in float64 or float32, not {self.dtype}")
        self.eps = float(torch.finfo(self.dtype).eps)
        self.shapes = [tuple(t.shape) for t in x0]
        self.sizes = [t.numel() for t in x0]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).tolist()
        self.D = int(self.offsets[-1])
        flat = torch.cat([t.detach().to(self.dtype).reshape(-1) for t in x0]).to(self.device)
        if not bool(torch.isfinite(flat).all()):
            raise ValueError("x0 contains NaN or inf entries")
        self.x0 = self.point(flat)
        self.n_cost = self.n_grad = self.n_hess = 0
        self.fused = getattr(self.M, "fused", False) is True
        self.into = _fused_evaluation(problem)
        declared = getattr(self.M, "flat", None)
        self.flat = bool(declared) if declared is not None else self._probe_flat()
        if self.flat:
            self.batched = False  # nothing is ever transported
        else:
            declared = getattr(self.M, "batched_transport", None)
            self.batched = bool(declared) if declared is not None else self._probe_batched_transport()

    # --- conversions ---------------------------------------------------------------------------
    def split(self, v):
        o = self.offsets
        return tuple(v[o[i] : o[i + 1]].view(s) for i, s in enumerate(self.shapes))

    def cat(self, ts):
        if len(ts) == 1:
            return ts[0].reshape(-1)
        return torch.cat([t.reshape(-1) for t in ts])

    def point(self, flat) -> _Point:
        return _Point(flat, self.split(flat))

    # --- probes (once per run, for manifolds that do not say) ---------------------------------
    def _gen(self):
        return torch.Generator(device="cpu").manual_seed(20240607)

    def _randn(self, *shape):
        return torch.randn(*shape, generator=self._gen(), dtype=self.dtype).to(self.device)

    def _probe_flat(self) -> bool:
        """True when projection is the identity (a flat space): transports are then skipped.

        For a manifold without a ``flat`` answer: its projection is applied to a random vector,
        and its metric compared with the dot product (the solvers use flat dot products)."""
        u = self._randn(self.D)
        pu = self.cat(self.M.proj(self.x0.xt, self.split(u)))
        flat = bool(torch.equal(pu, u))
        tu = self.cat(self.M.proj(self.x0.xt, self.split(u[: self.D] * 0.5 + 1.0)))
        v = self._randn(2, self.D)[1]
        pv = self.cat(self.M.proj(self.x0.xt, self.split(v)))
        # metric check: the solvers use flat dot products as the Riemannian metric
        ip = float(self.M.inner(self.x0.xt, self.split(tu), self.split(pv)))
        dot = float(torch.dot(tu, pv))
        if abs(ip - dot) > 1e-9 * max(1.0, abs(dot), float(tu.norm() * pv.norm())):
            raise NotImplementedError(
                "the solvers assume the ambient (Frobenius) metric on tangent vectors; "
                f"problem.manifold.inner disagrees ({ip} vs {dot})"
            )
        return flat

    def _probe_batched_transport(self) -> bool:
        """Whether ``manifold.transport`` accepts a leading batch dimension on every factor
        (used to transport several vectors in one call), for a manifold that does not say."""
        try:
            u = self._randn(2, self.D)
            y = self.retr(self.x0, self.proj(self.x0, u[0]) * 0.1, 1.0)
            o = self.offsets
            batch = tuple(u[:, o[i] : o[i + 1]].reshape(2, *s) for i, s in enumerate(self.shapes))
            out = self.M.transport(self.x0.xt, y.xt, batch)
            got = torch.cat([t.reshape(2, -1) for t in out], dim=1)
            want = torch.stack([self.transport(self.x0, y, u[0]), self.transport(self.x0, y, u[1])])
            return got.shape == want.shape and bool(torch.allclose(got, want, rtol=1e-12, atol=1e-12))
        except Exception:  # noqa: BLE001 - any failure means "not batchable": loop instead
            return False

    # --- geometry --------------------------------------------------------------------------------
    def retr(self, p: _Point, d, t: float) -> _Point:
        if self.flat:
            return self.point(torch.add(p.x, d, alpha=t))
        if self.fused:
            return self.point(self.M.retr_flat(p.x, d, t))
        xt = tuple(self.M.retr(p.xt, self.split(d), t))
        return _Point(self.cat(xt), xt)

    def proj(self, p: _Point, v, inplace: bool = False):
        """Proj_x(v): a new vector, or v itself overwritten with ``inplace=True`` (fused path: no
        allocation; elsewhere the result is copied into v)."""
        if self.flat:
            return v
        if self.fused:
            return self.M.proj_flat(p.x, v, out=v if inplace else None)
        out = self.cat(self.M.proj(p.xt, self.split(v)))
        return v.copy_(out) if inplace else out

    def transport(self, p: _Point, q: _Point, v):
        if self.flat:
            return v
        if self.fused:
            return self.M.proj_flat(q.x, v)
        return self.cat(self.M.transport(p.xt, q.xt, self.split(v)))

    def transport_rows_(self, p: _Point, q: _Point, Z) -> None:
        """Transport every row of Z (k x D) from T_p to T_q, in place."""
        if self.flat or Z.shape[0] == 0:
            return
        if self.fused:
            self.M.transport_rows_flat_(q.x, Z)
        elif self.batched:
            k, o = Z.shape[0], self.offsets
            batch = tuple(Z[:, o[i] : o[i + 1]].reshape(k, *s) for i, s in enumerate(self.shapes))
            out = self.M.transport(p.xt, q.xt, batch)
            for i, t in enumerate(out):
                Z[:, o[i] : o[i + 1]] = t.reshape(k, -1)
        else:
            for r in range(Z.shape[0]):
                Z[r] = self.transport(p, q, Z[r])

    # --- evaluations -------------------------------------------------------------------------------
    def evaluate(self, p: _Point) -> _Point:
        """Objective and Riemannian gradient at p (one ``cost_and_egrad`` call, or
        ``cost_and_egrad_into`` a flat vector where the problem has it)."""
        self.n_cost += 1
        self.n_grad += 1
        if self.into:
            eg = torch.empty(self.D, dtype=self.dtype, device=self.device)
            p.f = float(self.problem.cost_and_egrad_into(p.xt, self.split(eg)))
            if self.flat:
                g = eg
            elif self.fused:
                g = self.M.proj_flat(p.x, eg)
            else:
                g = self.cat(tuple(self.M.egrad2rgrad(p.xt, self.split(eg))))
            p.g = g
            p.gn = math.sqrt(max(float(torch.dot(g, g)), 0.0))
            return p
        f, eg = self.problem.cost_and_egrad(p.xt)
        self._set_grad(p, eg)
        p.f = float(f)
        return p

    def cost(self, p: _Point) -> float:
        self.n_cost += 1
        p.f = float(self.problem.cost(p.xt))
        return p.f

    def grad(self, p: _Point) -> _Point:
        """Gradient at a point whose cost is known (the problem's per-point cache is reused)."""
        self.n_grad += 1
        self._set_grad(p, self.problem.egrad(p.xt))
        return p

    def _set_grad(self, p: _Point, eg) -> None:
        if self.flat:
            g = self.cat(tuple(eg))
        elif self.fused:
            g = self.M.proj_flat(p.x, self.cat(tuple(eg)))
        else:
            g = self.cat(tuple(self.M.egrad2rgrad(p.xt, tuple(eg))))
        if g.dtype != self.dtype:
            g = g.to(self.dtype)
        p.g = g
        p.gn = math.sqrt(max(float(torch.dot(g, g)), 0.0))

    def hess(self, p: _Point, v):
        """Riemannian Hessian-vector product at p (``problem.rhess``, cached per point)."""
        self.n_hess += 1
        return self.cat(tuple(self.problem.rhess(p.xt, self.split(v))))

    def tuple_of(self, p: _Point):
        """The point as a tuple of independent tensors (returned to the caller)."""
        return tuple(t.clone() for t in p.xt)
