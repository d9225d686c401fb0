"""Riemannian L-BFGS: :func:`lbfgs` and its compact-form memory :class:`_LBFGSMemory`.

The inverse-Hessian approximation is the compact representation of Byrd, Nocedal & Schnabel (1994)
with a block-diagonal initial matrix over the factors of the point; on flat problems every
transport is the identity and this is ordinary L-BFGS.  The line search is an object of
:mod:`nclab.ufm.optim.line_search` (strong Wolfe by default).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.linalg.lapack import dtrtrs

from nclab._validation import check_choice, check_int, check_real
from nclab.ufm.optim.line_search import _first_step, line_search_from_options
from nclab.ufm.optim.space import _Space, _dot
from nclab.ufm.optim.stopping import _options, _start

__all__ = ["lbfgs"]


def _solve_upper(R, b, trans: int = 0):
    """``R^-1 b`` (``R^-T b`` with trans=1) for an upper-triangular R: LAPACK's dtrtrs straight
    (a few microseconds; scipy's solve_triangular wrapper costs more than the solve at m <= 10)."""
    x, info = dtrtrs(R, b, lower=0, trans=trans)
    if info != 0:  # a zero on the diagonal: cannot happen for kept pairs (s^T y > 0)
        raise np.linalg.LinAlgError(f"singular L-BFGS matrix R (dtrtrs info {info})")
    return x


class _LBFGSMemory:
    """The last ``m`` pairs (s_i, y_i) in one (2m, D) buffer ``Z`` (row 2i: s_i, row 2i+1: y_i) and
    the compact representation of the inverse-Hessian approximation (Byrd, Nocedal & Schnabel 1994,
    Theorem 2.2) with a block-diagonal initial matrix ``H0 = diag(gamma_f I)`` over the factors f of
    the point (W, H, b, ...):

        H = H0 + [S  H0 Y] [[R^-T (D + Y^T H0 Y) R^-1, -R^-T], [-R^-1, 0]] [S^T; Y^T H0],

    R = upper triangle of S^T Y, D its diagonal.  ``scaling="block"``: gamma_f = s_f^T y_f / y_f^T y_f
    of the newest pair restricted to factor f (the usual scalar s^T y / y^T y where that is not
    positive); ``scaling="scalar"``: one gamma for all factors (textbook L-BFGS).  Block scaling
    adapts to factors of different curvature, e.g. W and H of the normalized UFM, whose Hessian
    blocks differ by the class size n.

    Cost.  A direction is two passes over the buffer, each one matrix-vector product per block
    (``Z_f g_f``, then ``Z_f^T c_f``; a block is a column range of the row-major buffer, so each is
    one BLAS call on contiguous rows), plus one more ``Z_f y_f`` on manifolds for the new pair's
    inner products; the small matrices are kept per block and slot-indexed in numpy.  The pair of a
    slot is two adjacent rows (one (2, D) batch for the manifold's transport), and the slots are
    filled from 0, so while the memory is not full the products touch only the rows in use
    (``Z[:2(max slot + 1)]``).  On flat problems the new pair's inner products with the stored ones
    come for free: y_new = g_new - g_old, so ``Z y_new = Z g_new - Z g_old`` for the unchanged rows,
    and both products are needed anyway.  (Measured on the normalized UFM, K = 10, one thread: a
    column block of the row-major buffer is read as fast as a contiguous copy of it, and one GEMM
    with the two right-hand sides g and y is slower than two matrix-vector products; the products
    are memory-bound, about one full read of the buffer each.)"""

    def __init__(self, m: int, offsets, dtype, device, scaling: str = "block"):
        self.m = m
        self.slices = [(int(a), int(b)) for a, b in zip(offsets[:-1], offsets[1:])]
        self.block = scaling == "block" and len(self.slices) > 1
        # the blocks of H0: the factors, or the whole vector under scalar scaling
        self.blocks = self.slices if self.block else [(0, int(offsets[-1]))]
        nf = len(self.blocks)
        self.Z = torch.empty(2 * m, int(offsets[-1]), dtype=dtype, device=device)  # see rows_in_use
        self.SY = np.zeros((nf, m, m))  # per block: SY[f, i, j] = s_i,f . y_j,f (slot-indexed)
        self.YY = np.zeros((nf, m, m))
        self.order: list[int] = []
        self.zg_prev = np.zeros((nf, 2 * m))  # per-block Z_f g_f at the previous direction (flat case)
        self.pending = None  # (slot, s.y per block, y.y per block, threshold) of a pair not yet in SY/YY
        # the per-block products [Z_f g_f; Z_f y_f] are written here (numpy shares it on the CPU in
        # float64); the coefficients c of the second pass are read from _c the same way
        self._prod = torch.zeros(2, nf, 2 * m, dtype=dtype, device=device)
        self._c = np.zeros((nf, 2 * m))
        shared = self.Z.device.type == "cpu" and dtype == torch.float64
        self._prod_np = self._prod.numpy() if shared else None
        self._ct = torch.from_numpy(self._c) if shared else None
        self._indices: dict = {}
        self._row_views: dict = {}

    # --- the buffer's rows ------------------------------------------------------------------------
    def s_row(self, slot: int):
        return self.Z[2 * slot]

    def y_row(self, slot: int):
        return self.Z[2 * slot + 1]

    def pair_rows(self, slot: int):
        """Rows s and y of ``slot`` as one (2, D) view."""
        return self.Z[2 * slot : 2 * slot + 2]

    def rows_in_use(self) -> int:
        """How many leading rows of Z hold pairs: ``2 (max slot in use + 1)`` (slots are filled
        from 0, so every row before holds a pair written once, kept or not; the rows after it have
        never been written and are never read)."""
        return 2 * (max(self.order) + 1) if self.order else 0

    def scale(self) -> float | None:
        """``s^T y / y^T y`` of the newest pair (the scalar initial inverse Hessian a restart
        would use); None when the memory is empty or that pair has no positive curvature."""
        if not self.order:
            return None
        slot = self.order[-1]
        s, y = self.s_row(slot), self.y_row(slot)
        sy, yy = float(torch.dot(s, y)), float(torch.dot(y, y))
        return sy / yy if sy > 0 and yy > 0 else None

    def clear(self) -> None:
        self.order.clear()
        self.pending = None

    def __len__(self) -> int:
        return len(self.order)

    def next_slot(self) -> int:
        if len(self.order) < self.m:
            used = set(self.order)
            return next(i for i in range(self.m) if i not in used)
        return self.order[0]

    def pair_products(self, slot: int):
        """(s.y, y.y) of the pair in ``slot``, per block (numpy arrays)."""
        s, y = self.s_row(slot), self.y_row(slot)
        sy = np.array([float(torch.dot(s[a:b], y[a:b])) for a, b in self.blocks])
        yy = np.array([float(torch.dot(y[a:b], y[a:b])) for a, b in self.blocks])
        return sy, yy

    def commit(self, slot: int, sy, yy) -> None:
        """Register the pair just written into ``slot``, where ``y = g_new - g`` and g is the
        gradient of the last :meth:`direction` call (flat case): its inner products with the stored
        pairs are filled in by the next :meth:`direction`."""
        if slot in self.order:
            self.order.remove(slot)
        self.order.append(slot)
        self.pending = (slot, sy, yy, None)

    def commit_direct(self, slot: int, threshold: float) -> None:
        """Register the pair in ``slot`` (manifold case, where y is not a plain difference of
        gradients); its inner products with the stored pairs, its own included, are computed by
        the next :meth:`direction` (next to Z g), which drops it if ``s^T y <= threshold``."""
        self.drop(slot)
        self.order.append(slot)
        self.pending = (slot, None, None, threshold)

    def drop(self, slot: int) -> None:
        """The rows of ``slot`` were overwritten by a pair that is not kept."""
        if slot in self.order:
            self.order.remove(slot)

    def refresh(self, slot: int | None = None) -> None:
        """Recompute all inner products (after the rows were transported); ``slot`` is the pair
        just written.  Pairs whose curvature s^T y is no longer clearly positive are dropped."""
        self.pending = None
        if slot is not None:
            self.drop(slot)
            self.order.append(slot)
        m = self.m
        ss = np.zeros(m)
        rows = self.rows_in_use()
        k = rows // 2
        for f, (a, b) in enumerate(self.blocks):
            Zf = self.Z[:rows, a:b]
            G = (Zf @ Zf.T).cpu().numpy()
            self.SY[f, :k, :k] = G[0::2, 1::2]
            self.YY[f, :k, :k] = G[1::2, 1::2]
            ss[:k] += np.diag(G[0::2, 0::2])
        SY, YY = self.SY.sum(0), self.YY.sum(0)
        self.order[:] = [
            i for i in self.order if YY[i, i] > 0 and SY[i, i] > 1e-12 * math.sqrt(max(ss[i] * YY[i, i], 0.0))
        ]

    def _views(self, rows: int):
        """Per block f: (Z_f, the products' outputs for g and y, the coefficients c_f, start, end),
        views of the first ``rows`` rows (cached per row count: at most m of them)."""
        views = self._row_views.get(rows)
        if views is None:
            Z, P, ct = self.Z[:rows], self._prod, self._ct
            views = self._row_views[rows] = [
                (Z[:, a:b], P[0, f, :rows], P[1, f, :rows], None if ct is None else ct[f, :rows], a, b)
                for f, (a, b) in enumerate(self.blocks)
            ]
        return views

    def _products(self, g, rows: int, y=None):
        """Per-block products ``Z_f g_f`` (and ``Z_f y_f`` when y is given) of the first ``rows``
        rows: numpy arrays of shape (blocks, 2m), zero beyond ``rows``."""
        self._prod.zero_()
        for Zf, og, oy, _, a, b in self._views(rows):
            torch.mv(Zf, g[a:b], out=og)
            if y is not None:
                torch.mv(Zf, y[a:b], out=oy)
        P = self._prod
        Pn = self._prod_np if self._prod_np is not None else P.cpu().numpy().astype(np.float64)
        return Pn[0], Pn[1]

    def gammas(self, new: int):
        """gamma per block from the newest pair (the whole-vector value where a block's own is
        not positive)."""
        sy, yy = self.SY[:, new, new], self.YY[:, new, new]
        gamma = sy.sum() / yy.sum()
        return np.where((sy > 0) & (yy > 0), sy / np.where(yy > 0, yy, 1.0), gamma)

    def _index(self, idx):
        """(slots, their s rows, their y rows) as index arrays, cached per order of the slots (the
        ring buffer cycles through at most m orders once it is full)."""
        key = tuple(idx)
        hit = self._indices.get(key)
        if hit is None:
            ix = np.asarray(key)
            hit = self._indices[key] = (ix, 2 * ix, 2 * ix + 1)
        return hit

    def direction(self, g, out):
        """``out = -H g``; returns False when the memory is empty (out untouched)."""
        idx = self.order
        if not idx:
            return False
        pending, self.pending = self.pending, None
        lazy = pending is not None and pending[3] is not None
        rows = self.rows_in_use()
        zg, zy = self._products(g, rows, self.y_row(pending[0]) if lazy else None)  # (blocks, 2m)
        if pending is not None:
            slot, sy, yy, threshold = pending
            if not lazy:  # flat: y = g - g_prev, so Z y = Z g - Z g_prev (old rows)
                zy = zg - self.zg_prev
            else:  # manifold: y is not a gradient difference, one more product (computed above)
                sy, yy = zy[:, 2 * slot], zy[:, 2 * slot + 1]
                if not (sy.sum() > threshold and yy.sum() > 0):  # curvature not clearly positive
                    self.drop(slot)
                    slot = None
                    if not idx:
                        return False
            if slot is not None:
                o = [i for i in idx if i != slot]
                if o:
                    o2 = self._index(o)[1]
                    self.SY[:, o, slot] = zy[:, o2]
                    self.YY[:, o, slot] = self.YY[:, slot, o] = zy[:, o2 + 1]
                self.SY[:, slot, slot] = sy
                self.YY[:, slot, slot] = yy
        if not lazy:
            self.zg_prev[:] = zg
        ix, sx, yx = self._index(idx)
        gam = self.gammas(idx[-1])
        p = zg[:, sx].sum(0)
        q = gam @ zg[:, yx]
        SYo = self.SY.sum(0)[ix][:, ix]
        YHY = gam[0] * self.YY[0][ix][:, ix]
        for f in range(1, len(gam)):
            YHY += gam[f] * self.YY[f][ix][:, ix]
        # R = triu(SYo): LAPACK's triangular solve reads the upper triangle only
        r = _solve_upper(SYo, p)
        top = _solve_upper(SYo, SYo.diagonal() * r + YHY @ r - q, trans=1)
        c = self._c
        c.fill(0.0)
        c[:, sx] = top
        c[:, yx] = -gam[:, None] * r
        ct = None if self._ct is not None else torch.from_numpy(c).to(device=g.device, dtype=g.dtype)
        for f, (Zf, _, _, cf, a, b) in enumerate(self._views(rows)):
            cf = ct[f, :rows] if cf is None else cf
            torch.addmv(g[a:b], Zf.T, cf, beta=-float(gam[f]), alpha=-1.0, out=out[a:b])
        return True


def lbfgs(problem, x0, **options):
    """Riemannian limited-memory BFGS (Huang, Gallivan & Absil 2015; Manopt's rlbfgs in spirit).

    The inverse-Hessian approximation is the compact representation of Byrd, Nocedal & Schnabel
    (1994) over the last ``memory`` pairs with a block-diagonal initial matrix (see
    :class:`_LBFGSMemory`), and the step length comes from a strong-Wolfe (or Armijo) line search.
    A new pair is ``s = T(t d)``, ``y = grad f(x+) - T(grad f(x))`` with T the vector transport by
    projection onto the new tangent space.  Pairs without clearly positive curvature ``<s, y>`` are
    skipped; a non-descent direction or a failed line search clears the memory (steepest-descent
    restart).  On Euclidean problems every transport is the identity and this is ordinary L-BFGS.

    Transport of the stored pairs (manifolds only), ``transport=``:

    * ``"lazy"`` (default): every stored vector is moved to the current tangent space by the
      projection P_x where it acts -- on the gradient (``<P_x s_i, g> = <s_i, g>`` since g is
      tangent) and on the direction (``d = -P_x(H0 g + sum_i c_i z_i)``) -- i.e. transport by
      projection straight from the pair's point to the current one; the pairs' Gram matrix is kept
      from their creation.  The approximation is then ``P_x H P_x`` with H the L-BFGS matrix of the
      stored pairs, which is positive definite on the tangent space, so d is always a descent
      direction.  Costs as much as Euclidean L-BFGS: no pass over the memory beyond the two
      products of the compact form.
    * ``"full"``: all stored pairs are projected onto the new tangent space after every step and
      their Gram matrix is recomputed (the textbook scheme; same iteration counts on the nclab
      problems, several times the work per iteration).

    Initial scaling, ``scaling=``: ``"block"`` uses gamma_f = s_f^T y_f / y_f^T y_f per factor of the
    point (W, H, b); ``"scalar"`` the textbook single s^T y / y^T y; ``"auto"`` (default) chooses
    block on manifolds and scalar on Euclidean problems.  On the oblique manifold the norms are
    fixed, so the curvature of the W block (each w_k is shared by n samples) stays about n times
    that of the H block and block scaling needs 3x fewer iterations; on the Euclidean UFMs weight
    decay balances the blocks (|w_k|^2 = n |h|^2 at the optimum) and scalar scaling is as good.

    Options (besides the common ones, see the module docstring):
        memory=5, scaling="auto" | "block" | "scalar", transport="lazy" | "full",
        line_search="wolfe" | "armijo", c1=1e-4, c2=0.9, max_iter=5000,
        initial_step=None (the first trial step t along -grad f, x -> x - t grad f; None:
        min(1, |f|/|grad f|)/|grad f|.  A continuation passes the previous run's
        ``log.state["inverse_hessian_scale"]``, the step its memory would have taken).
    (memory 3 to 10 need the same number of iterations on the nclab problems; each extra pair adds
    its two rows to every product with the memory: two per iteration on flat problems, three on
    manifolds, each a read of vectors of the problem's size.)

    Returns (x, SolverLog)."""
    o = _options(
        "lbfgs",
        dict(memory=5, scaling="auto", transport="lazy", line_search="wolfe", c1=1e-4, c2=0.9, max_iter=5000,
             initial_step=None),
        options,
    )
    memory = check_int("memory", o["memory"], minimum=1)
    initial_step = None if o["initial_step"] is None else check_real("initial_step", o["initial_step"], positive=True)
    check_choice("scaling", o["scaling"], ("auto", "block", "scalar"))
    check_choice("transport", o["transport"], ("lazy", "full"))
    line_search = line_search_from_options(o)
    sp = _Space(problem, x0)
    mon, p, reason = _start("lbfgs", sp, o)
    it = 0
    if reason:
        return mon.finish(it, p, reason)
    scaling = o["scaling"] if o["scaling"] != "auto" else ("scalar" if sp.flat else "block")
    mem = _LBFGSMemory(memory, sp.offsets, sp.dtype, sp.device, scaling)

    def finish(it, p, reason):
        x, log = mon.finish(it, p, reason)
        gamma = mem.scale()
        if gamma is not None:
            log.state["inverse_hessian_scale"] = gamma
        return x, log

    full_transport = o["transport"] == "full"
    d = torch.empty_like(p.g)
    t_prev_sd = 1.0 / max(p.gn, 1e-300)

    while True:
        it += 1
        have = mem.direction(p.g, d)
        if have:
            if not sp.flat:
                sp.proj(p, d, inplace=True)
            slope = _dot(p.g, d)
            t0 = 1.0
        if not have or not slope < 0:
            mem.clear()
            torch.neg(p.g, out=d)
            slope = -p.gn * p.gn
            t0 = t_prev_sd if it > 1 else (initial_step if initial_step is not None else _first_step(p))
        q, t, ok = line_search.search(sp, p, d, slope, t0)
        if not ok and len(mem):  # retry along the steepest descent direction
            mem.clear()
            torch.neg(p.g, out=d)
            slope = -p.gn * p.gn
            q, t, ok = line_search.search(sp, p, d, slope, _first_step(p))
        if not ok:
            mon.record(it - 1, p, force=True)
            return finish(it - 1, p, "line search failed (no decrease)")
        if len(mem) == 0:
            t_prev_sd = t
        # new pair (s, y), written straight into the memory buffer
        slot = mem.next_slot()
        s_row, y_row = mem.s_row(slot), mem.y_row(slot)
        if sp.flat:
            torch.mul(d, t, out=s_row)
            torch.sub(q.g, p.g, out=y_row)
            sy, yy = mem.pair_products(slot)
            # curvature: sy >= (1 - c2) t |slope| under Wolfe; keep clearly positive pairs only
            if sy.sum() > 1e-10 * t * abs(slope) and yy.sum() > 0:
                mem.commit(slot, sy, yy)
            else:
                mem.drop(slot)
        elif full_transport:
            sp.transport_rows_(p, q, mem.Z[: mem.rows_in_use()])  # the slot being replaced is overwritten below
            s_row.copy_(sp.transport(p, q, d * t))
            y_row.copy_(q.g - sp.transport(p, q, p.g))
            mem.refresh(slot)
        else:  # lazy: only the new pair is transported, in place (its two rows are one batch)
            torch.mul(d, t, out=s_row)
            y_row.copy_(p.g)
            sp.transport_rows_(p, q, mem.pair_rows(slot))
            torch.sub(q.g, y_row, out=y_row)
            mem.commit_direct(slot, 1e-10 * t * abs(slope))
        f_prev = p.f
        p = q
        mon.record(it, p)
        reason = mon.check(it, p, f_prev)
        if reason:
            return finish(it, p, reason)
