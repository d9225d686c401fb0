"""Derivative and landscape diagnostics that work on any UFM problem and return numbers, not plots.

* :func:`check_gradient` / :func:`check_hessian`: Taylor-remainder tests along a retraction
  (Manopt's ``checkgradient`` / ``checkhessian``).  Along the curve ``c(t) = R_x(t u)`` for a random
  unit tangent u, the remainders

      E1(t) = |f(c(t)) - f(x) - t <grad f(x), u>|                       ~ t^2
      E2(t) = |f(c(t)) - f(x) - t <grad f(x), u> - t^2/2 <u, Hess f(x)[u]>|  ~ t^3

  hold for correct derivatives (E2 needs a second-order retraction; the metric projections of
  :mod:`nclab.manifolds` are).  The slope is fitted by least squares on log-log over two
  decades of t: the smallest-t window whose remainders all lie above the rounding floor
  ``1e2 eps |f(x)|`` (relative, so the tools work as well at tau = 40, where f ~ 1e-21), i.e. the
  asymptotic regime.  A wrong gradient gives slope 1, a wrong
  Hessian slope 2.
* :func:`hessian_extreme_eigs`: extreme eigenvalues of the Riemannian Hessian at x, by Lanczos
  (``scipy.sparse.linalg.eigsh``) on a basis-free flattening of the tangent space, or densely for
  small problems.  Optional deflation of the symmetry orbit, whose zero eigenvalues would
  otherwise hide the curvature classification of a critical point (REFERENCE.md section 2,
  "Symmetry").  The orbit of f(W Q^T, H Q^T) = f(W, H) has the tangent space
  ``{(W A, H A, 0) : A skew d x d}`` (the factors ``problem.rotating_factors`` move), and the
  projection onto it is computed without forming its d(d-1)/2 directions (:class:`OrbitProjector`:
  a d x d skew least-squares problem); the problem's further flat directions
  (``problem.flat_directions(x)``, e.g. the common shift of a free CE bias) are deflated
  explicitly.

Example
-------
>>> from nclab.ufm.problems import make_problem
>>> from nclab.ufm.diagnostics import check_gradient, check_hessian, hessian_extreme_eigs
>>> p = make_problem("ce", K=3, n=2, d=3)
>>> abs(check_gradient(p)["slope"] - 2) < 0.1 and abs(check_hessian(p)["slope"] - 3) < 0.1
True
>>> float(hessian_extreme_eigs(p, p.zero_critical_point())[0]) < 0   # beta < 1/K: a strict saddle
True
"""

from __future__ import annotations

import math

import numpy as np
import torch

from nclab._validation import check_choice, check_int

__all__ = [
    "check_gradient",
    "check_hessian",
    "hessian_extreme_eigs",
    "hessian_spectrum",
    "taylor_slope",
    "OrbitProjector",
]

_EPS = float(np.finfo(np.float64).eps)


def _tangent_pair(problem, x, seed: int):
    M = problem.manifold
    if x is None:
        x = problem.random_start(seed)
    gen = torch.Generator().manual_seed(int(seed) + 7919)
    return x, M.random_tangent(x, gen), gen


def taylor_slope(
    t: np.ndarray, err: np.ndarray, floor: float, window: int = 7, max_residual: float = 0.02
) -> tuple[float, float, float]:
    """Least-squares slope of log10(err) against log10(t) over ``window`` consecutive step sizes.

    The window is the smallest-t one whose remainders all lie above ``floor`` (rounding) and whose
    fit is straight (largest |residual| <= ``max_residual`` decades): the asymptotic regime, before
    higher-order terms bend the curve or cancel the leading one.  If no window is that straight,
    the straightest window above the floor is used.  Returns (slope, t_lo, t_hi); nan if every
    window touches the floor."""
    t = np.asarray(t, dtype=float)
    err = np.asarray(err, dtype=float)
    order = np.argsort(t)
    t, err = t[order], err[order]
    ok = err > floor
    best = None
    for i in range(len(t) - window + 1):
        if not ok[i : i + window].all():
            continue
        lt, le = np.log10(t[i : i + window]), np.log10(err[i : i + window])
        coef = np.polyfit(lt, le, 1)
        resid = float(np.abs(np.polyval(coef, lt) - le).max())
        fit = (float(coef[0]), float(t[i]), float(t[i + window - 1]))
        if resid <= max_residual:
            return fit
        if best is None or resid < best[0]:
            best = (resid, fit)
    return best[1] if best is not None else (math.nan, math.nan, math.nan)


def _remainders(problem, x, u, order: int, ts: np.ndarray):
    M = problem.manifold
    f0 = problem.cost(x)
    g = problem.rgrad(x)
    df = M.inner(x, g, u)
    d2 = M.inner(x, u, problem.rhess(x, u)) if order == 2 else 0.0
    err = np.empty_like(ts)
    for i, t in enumerate(ts):
        ft = problem.cost(M.retr(x, u, float(t)))
        err[i] = abs(ft - f0 - t * df - 0.5 * t * t * d2)
    return f0, g, err


def _rel_tangent_error(M, x, v) -> float:
    nv = M.norm(x, v)
    if nv == 0.0:
        return 0.0
    pv = M.proj(x, v)
    return M.norm(x, M.lincomb(x, 1.0, v, -1.0, pv)) / nv


def check_gradient(problem, x=None, seed: int = 0, ts=None) -> dict:
    """Taylor check of ``problem.rgrad`` at x (a random start from ``seed`` if None).

    Returns a dict: ``slope`` (about 2 when the gradient is right; nan if every remainder is at
    the rounding floor), ``window`` (t range of the fit), ``tangent_error``
    (|g - Proj_x g| / |g|), ``grad_norm``, ``cost``, and the arrays ``t`` and ``errors``."""
    x, u, _ = _tangent_pair(problem, x, seed)
    ts = np.logspace(-8, 0, 49) if ts is None else np.asarray(ts, dtype=float)
    f0, g, err = _remainders(problem, x, u, 1, ts)
    slope, lo, hi = taylor_slope(ts, err, 1e2 * _EPS * max(abs(f0), 1e-300))
    M = problem.manifold
    return {
        "slope": slope,
        "window": (lo, hi),
        "tangent_error": _rel_tangent_error(M, x, g),
        "grad_norm": M.norm(x, g),
        "cost": f0,
        "t": ts.tolist(),
        "errors": err.tolist(),
    }


def check_hessian(problem, x=None, seed: int = 0, ts=None) -> dict:
    """Taylor check of ``problem.rhess`` at x (a random start from ``seed`` if None).

    Returns a dict: ``slope`` (about 3 when the Hessian is right; it reads about 4 for the rare
    direction along which the cubic term of f(R_x(t u)) nearly vanishes, while a wrong Hessian
    reads 2), ``window``,
    ``symmetry_error`` = |<u, H v> - <H u, v>| / (|H u| |v| + |u| |H v|) for two random unit
    tangents, ``tangent_error`` = |H u - Proj_x H u| / |H u|, ``linearity_error`` =
    |H(2u + 3v) - 2 H u - 3 H v| / (|2 H u| + |3 H v|), ``cost``, ``t`` and ``errors``."""
    x, u, gen = _tangent_pair(problem, x, seed)
    M = problem.manifold
    ts = np.logspace(-6, 0, 37) if ts is None else np.asarray(ts, dtype=float)
    f0, _, err = _remainders(problem, x, u, 2, ts)
    slope, lo, hi = taylor_slope(ts, err, 1e2 * _EPS * max(abs(f0), 1e-300))
    v = M.random_tangent(x, gen)
    Hu, Hv = problem.rhess(x, u), problem.rhess(x, v)
    scale = M.norm(x, Hu) * M.norm(x, v) + M.norm(x, u) * M.norm(x, Hv)
    sym = abs(M.inner(x, u, Hv) - M.inner(x, Hu, v)) / scale if scale > 0 else 0.0
    Hw = problem.rhess(x, M.lincomb(x, 2.0, u, 3.0, v))
    lin_scale = 2 * M.norm(x, Hu) + 3 * M.norm(x, Hv)
    lin = M.norm(x, M.lincomb(x, 1.0, Hw, -1.0, M.lincomb(x, 2.0, Hu, 3.0, Hv)))
    return {
        "slope": slope,
        "window": (lo, hi),
        "symmetry_error": sym,
        "tangent_error": max(_rel_tangent_error(M, x, Hu), _rel_tangent_error(M, x, Hv)),
        "linearity_error": lin / lin_scale if lin_scale > 0 else 0.0,
        "cost": f0,
        "t": ts.tolist(),
        "errors": err.tolist(),
    }


# --------------------------------------------------------------------------------------------
# Hessian spectrum on the tangent space
# --------------------------------------------------------------------------------------------


class OrbitProjector:
    """The orthogonal projection onto the tangent space of the symmetry orbit through x, without
    forming a basis of the orbit (memory O(d^2) beyond one vector, not O(d^3 (K+N))).

    The orbit of f(W Q^T, H Q^T) = f(W, H) (Q orthogonal d x d) has the tangent space
    ``{(W A, H A, 0) : A skew}``, in general only the factors ``problem.rotating_factors`` move
    (the sphere problem: ``{X A}``).  The projection of (U, V) onto it is ``(W A, H A)`` with A
    the skew minimiser of ``|U - W A|^2 + |V - H A|^2``.  The gradient of that objective in A is
    ``2 (M A - S)``, M = W^T W + H^T H, S = W^T U + H^T V; it vanishes on the skew matrices
    (its skew part is 0) iff

        M A + A M = S - S^T =: C      (using (M A)^T = A^T M = -A M),

    and in the eigenbasis of M (``M = Q diag(m) Q^T``, ``A' = Q^T A Q``, ``C' = Q^T C Q``) this
    Sylvester equation is diagonal: ``A'_ij = C'_ij / (m_i + m_j)``.  Q and m = sigma^2 come from
    the SVD of the d x d R factor of the stacked rotating factors (no d x d Gram is squared).  The map A -> (W A, H A) has
    the singular values ``sqrt(m_i + m_j)`` (i < j) on the skew matrices (its Gram is diagonal in
    the basis E'_ij - E'_ji); a pair whose singular value is below
    ``max(1e-10 largest, 1e-12 max(|x|, 1))`` -- directions in the common null space of W and H,
    which give no orbit tangent -- gets A'_ij = 0 (a pseudo-inverse), the same cut-off as an SVD
    of the explicit directions.  At W = H = 0 nothing is deflated.

    ``problem.flat_directions(x)`` (e.g. the common shift (0, 0, 1) of a free CE bias) are
    projected onto T_x, made orthogonal to the orbit, orthonormalised and deflated explicitly
    (a handful of vectors).  ``apply(v)`` returns the component of a flattened ambient vector in
    the orbit's tangent space plus the span of the flat directions."""

    def __init__(self, problem, x):
        self.M = problem.manifold
        self.x = x
        self.rot = tuple(problem.rotating_factors)
        # M = sum_i x_i^T x_i = V diag(sigma^2) V^T from the SVD of the R factor of the stacked
        # rotating factors: sigma has absolute accuracy eps sigma_max (the eigenvalues of M only
        # eps sigma_max^2, whose square roots would blur the null space to sqrt(eps))
        Z = torch.cat([x[i] for i in self.rot], dim=0)
        R = torch.linalg.qr(Z, mode="r").R
        _, sig, Vh = torch.linalg.svd(R, full_matrices=True)
        d = Vh.shape[0]
        sigma = torch.zeros(d, dtype=Z.dtype)
        sigma[: sig.numel()] = sig
        del Z, R
        self.Q = Vh.T
        # the rotating factors usually sit side by side in the flat vector (W then H: one
        # (K + N) x d block), so S and x A are one product each instead of one per factor
        self._block = None
        sizes = [t.numel() for t in x]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        if all(x[i].dim() == 2 and x[i].shape[1] == d for i in self.rot) and all(
            starts[a] + sizes[a] == starts[b] for a, b in zip(self.rot, self.rot[1:])
        ):
            rows = sum(x[i].shape[0] for i in self.rot)
            self._block = (starts[self.rot[0]], rows, torch.cat([x[i] for i in self.rot], dim=0))
        sv = torch.hypot(sigma[:, None], sigma[None, :])  # singular values of A -> (x_i A), i < j
        off = ~torch.eye(d, dtype=torch.bool)
        sv_max = float(sv[off].max()) if d > 1 else 0.0
        xnorm = float(self.M.flatten(x).norm())
        self._xscale = 1e-12 * max(xnorm, 1.0)
        # flat directions: tangent, orthogonal to the orbit, orthonormal (an SVD of a few vectors)
        self.F = None
        flat = [self.M.flatten(self.M.proj(x, f)) for f in problem.flat_directions(x)]
        flat_sv = torch.zeros(0, dtype=torch.float64)
        if flat:
            self._set_orbit(sv, off, cut=max(1e-10 * sv_max, self._xscale))
            A = torch.stack([f - self._orbit(f) for f in flat], dim=1)
            U, flat_sv, _ = torch.linalg.svd(A, full_matrices=False)
        # one cut-off for both, relative to the largest singular value of all deflated directions
        top = max(sv_max, float(flat_sv.max()) if flat_sv.numel() else 0.0)
        cut = max(1e-10 * top, self._xscale)
        self._set_orbit(sv, off, cut)
        if flat:
            keep = flat_sv > cut
            self.F = U[:, keep] if bool(keep.any()) else None

    def _set_orbit(self, sv, off, cut: float) -> None:
        keep = off & (sv > cut)
        self.inv = torch.where(keep, 1.0 / torch.where(keep, sv, torch.ones_like(sv)) ** 2, torch.zeros_like(sv))
        self.rank = int(keep.sum()) // 2  # the orbit's dimension at x

    def _orbit(self, v: torch.Tensor) -> torch.Tensor:
        """The orbit component of the flattened ambient vector v (a new flat vector)."""
        Q = self.Q
        out = torch.zeros_like(v)
        if self._block is not None:
            start, rows, Z = self._block
            d = Z.shape[1]
            S = Z.T @ v[start : start + rows * d].view(rows, d)
            A = Q @ (((Q.T @ (S - S.T)) @ Q) * self.inv) @ Q.T
            torch.mm(Z, A, out=out[start : start + rows * d].view(rows, d))
            return out
        u = self.M.unflatten(v)
        S = sum(self.x[i].T @ u[i] for i in self.rot)
        A = Q @ (((Q.T @ (S - S.T)) @ Q) * self.inv) @ Q.T
        parts = self.M.unflatten(out)
        for i in self.rot:
            torch.mm(self.x[i], A, out=parts[i])
        return out

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        """Orthogonal projection of the flattened ambient vector v onto the orbit's tangent space
        plus the span of the flat directions."""
        w = self._orbit(v)
        if self.F is not None:
            w = w + self.F @ (self.F.T @ v)
        return w

    @property
    def dim(self) -> int:
        """Dimension of the deflated space (orbit plus flat directions) at x."""
        return self.rank + (0 if self.F is None else self.F.shape[1])


class _TangentOperator:
    """Q H Q on flattened ambient vectors, Q the orthogonal projector onto
    T_x minus the symmetry orbit's tangent space and flat directions (:class:`OrbitProjector`)."""

    def __init__(self, problem, x, deflate: bool):
        self.problem, self.x = problem, x
        self.M = problem.manifold
        self.n = self.M.ambient_dim
        self.orbit = OrbitProjector(problem, x) if deflate else None
        if self.orbit is not None and self.orbit.dim == 0:
            self.orbit = None

    def project(self, v: torch.Tensor) -> torch.Tensor:
        w = self.M.flatten(self.M.proj(self.x, self.M.unflatten(v)))
        if self.orbit is not None:
            w = w - self.orbit.apply(w)
        return w

    def apply(self, v: torch.Tensor, projected: torch.Tensor | None = None) -> torch.Tensor:
        """Q H Q v (``projected``: Q v, when the caller has it already)."""
        w = self.project(v) if projected is None else projected
        Hw = self.problem.rhess(self.x, self.M.unflatten(w))
        return self.project(self.M.flatten(Hw))


def _dense_reduced(op: _TangentOperator, basis: bool = False):
    """The Hessian in an orthonormal basis T of range(Q) (dim_eff x dim_eff), symmetrised; with
    ``basis`` also T (n x dim_eff, columns are flattened ambient vectors)."""
    eye = torch.eye(op.n, dtype=torch.float64)
    Q = torch.stack([op.project(eye[:, j]) for j in range(op.n)], dim=1)
    Q = 0.5 * (Q + Q.T)
    evals, evecs = torch.linalg.eigh(Q)
    T = evecs[:, evals > 0.5]
    HT = torch.stack([op.apply(T[:, j]) for j in range(T.shape[1])], dim=1) if T.shape[1] else T
    Hr = T.T @ HT
    Hr = (0.5 * (Hr + Hr.T)).numpy()
    return (Hr, T.numpy()) if basis else Hr


def hessian_spectrum(problem, x, deflate: bool = False) -> np.ndarray:
    """All eigenvalues (ascending) of the Riemannian Hessian restricted to the tangent space at x
    (minus the symmetry directions if ``deflate``), by forming it densely: for small problems and
    tests (ambient dimension up to a few thousand)."""
    return np.linalg.eigvalsh(_dense_reduced(_TangentOperator(problem, x, deflate)))


#: Largest ambient dimension for which :func:`hessian_extreme_eigs` falls back to the dense Hessian
#: (one Hessian-vector product per coordinate) when Lanczos does not converge.
DENSE_FALLBACK_MAX = 8000


def hessian_extreme_eigs(
    problem,
    x,
    k: int = 1,
    which: str = "SA",
    *,
    deflate: bool = False,
    method: str = "auto",
    dense_max: int = 600,
    tol: float = 1e-10,
    seed: int = 0,
    return_eigenvectors: bool = False,
):
    """The k smallest (``which="SA"``) or largest (``"LA"``) eigenvalues of the Riemannian Hessian
    of ``problem`` at x, restricted to the tangent space (ascending order).

    The operator acts on the flattened ambient space as ``Q Hess Q + c (I - Q)``, with Q the
    orthogonal projector onto the tangent space (minus the symmetry orbit's tangent space and
    ``problem.flat_directions(x)`` when ``deflate=True``, see :class:`OrbitProjector`; at
    W = H = 0 the orbit is a point).
    The shift c puts the complement beyond the wanted end of the spectrum (c = +-(2 |Q H Q| + 1),
    |Q H Q| from a loose Lanczos estimate), and Lanczos starts inside range(Q), so no basis of the
    tangent space is ever formed.  ``method="dense"`` (the default below ``dense_max`` ambient
    coordinates) forms the Hessian in an orthonormal basis of range(Q) instead; it is also the
    fallback when ARPACK does not converge twice (the second time with a wider Krylov space), up
    to :data:`DENSE_FALLBACK_MAX` coordinates.  Deflation never
    forms the d(d-1)/2 orbit directions: each projection costs O((K+N) d^2 + d^3) time and
    O(d^2) memory beyond one vector.

    Parameters
    ----------
    k : number of eigenvalues; which : "SA" or "LA"; deflate : remove the symmetry orbit;
    method : "auto" | "dense" | "lanczos"; tol : eigsh tolerance; seed : Lanczos start vector;
    return_eigenvectors : also return the eigenvectors.

    Returns the eigenvalues (ascending, a numpy array of length k) or, with
    ``return_eigenvectors=True``, ``(eigenvalues, vectors)``: ``vectors`` is a list of k tangent
    vectors at x (tuples shaped like x, unit norm, in the deflated tangent space when
    ``deflate``), in the order of the eigenvalues.
    """
    check_choice("which", which, ("SA", "LA"))
    check_choice("method", method, ("auto", "dense", "lanczos"))
    k = check_int("k", k, minimum=1)
    op = _TangentOperator(problem, x, deflate)

    def vectors(V: np.ndarray) -> list:
        out = []
        for j in range(V.shape[1]):
            v = op.project(torch.from_numpy(np.ascontiguousarray(V[:, j], dtype=np.float64)))
            out.append(op.M.unflatten(v / v.norm()))
        return out

    def dense():
        Hr, T = _dense_reduced(op, basis=True)
        ev, U = np.linalg.eigh(Hr)
        if k > ev.size:
            raise ValueError(f"k={k} exceeds the dimension {ev.size} of the (deflated) tangent space")
        sel = slice(0, k) if which == "SA" else slice(ev.size - k, ev.size)
        if not return_eigenvectors:
            return ev[sel]
        return ev[sel], vectors(T @ U[:, sel])

    if method == "dense" or (method == "auto" and op.n <= dense_max):
        return dense()

    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    def robust_eigsh(L, **kw):
        """eigsh, then (ARPACK not converging, e.g. on a tight cluster of eigenvalues near the
        wanted end) once more with a wider Krylov space and more restarts; None if that fails too."""
        try:
            return eigsh(L, **kw)
        except ArpackNoConvergence:
            pass
        ncv = min(op.n - 1, max(4 * kw["k"] + 40, 100))
        try:
            return eigsh(L, ncv=ncv, maxiter=300, **kw)  # bounded: the dense fallback is next
        except ArpackNoConvergence:
            return None

    if k >= op.n - 1:
        raise ValueError(f"k={k} is too large for Lanczos on {op.n} coordinates; use method='dense'")

    def operator(shift: float) -> LinearOperator:
        def matvec(v):
            v = torch.from_numpy(np.asarray(v, dtype=np.float64).reshape(-1))
            w = op.project(v)  # one projection of v serves Q H Q v and the shift c (I - Q) v
            out = op.apply(v, projected=w)
            if shift:
                out.add_(v - w, alpha=shift)
            return out.numpy()

        return LinearOperator((op.n, op.n), matvec=matvec, dtype=np.float64)

    gen = np.random.default_rng(seed)
    v0 = op.project(torch.from_numpy(gen.standard_normal(op.n))).numpy()
    rho = robust_eigsh(operator(0.0), k=1, which="LM", v0=v0, tol=1e-3, return_eigenvectors=False)
    out = None
    if rho is not None:
        L = operator((2.0 * float(abs(rho[0])) + 1.0) * (1.0 if which == "SA" else -1.0))
        out = robust_eigsh(L, k=k, which=which, v0=v0, tol=tol, return_eigenvectors=return_eigenvectors)
    if out is None:  # Lanczos failed twice: the dense method, where the Hessian fits
        if op.n > DENSE_FALLBACK_MAX:
            raise RuntimeError(f"Lanczos (ARPACK) did not converge on the {op.n}-coordinate Hessian, also with a "
                               f"wider Krylov space, and it is too large for the dense fallback "
                               f"(> {DENSE_FALLBACK_MAX}); retry with another seed or a looser tol")
        return dense()
    if not return_eigenvectors:
        return np.sort(out)
    ev, V = out
    order = np.argsort(ev)
    return ev[order], vectors(V[:, order])
