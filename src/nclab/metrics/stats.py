"""Exact, one-pass, mergeable neural-collapse statistics (REFERENCE.md section 3): :class:`NCStats`.

The state of :class:`NCStats` is, in float64 whatever the input dtype:

* ``counts``  (K,)    samples per class n_k,
* ``means``   (K, d)  class means mu_k,
* ``m2``      (K,)    per-class sums of squared deviations  sum_i |h_{k,i} - mu_k|^2,
* ``scatter`` (d, d)  pooled within-class scatter  sum_{k,i} (h_{k,i} - mu_k)(h_{k,i} - mu_k)^T.

Batches are accumulated as deviations from fixed per-class references (a first estimate of each
class mean; :class:`nclab.metrics.moments.ReferenceBlock`): each batch costs one symmetric product
of its own rows (BLAS syrk on the CPU), and the block is folded into the state when the state is
read, by one K-row correction and the exact pairwise update of Chan, Golub & LeVeque (1979):
with delta_k = mean_b,k - mean_a,k and w_k = n_a,k n_b,k / (n_a,k + n_b,k),

    scatter = scatter_a + scatter_b + sum_k w_k delta_k delta_k^T,
    m2_k    = m2_a,k + m2_b,k + w_k |delta_k|^2.

Raw moments (sum x x^T - n mu mu^T) are never formed, so a common offset of the features costs no
precision: this is what keeps NC1 exact in the terminal phase of training, where the within-class
spread is 1e-4..1e-6 of the feature norm.  Products run in the input's precision (float32 inputs:
float32 products of already-centred values, accumulated into the float64 state; float64 inputs:
float64 throughout).

Across processes only sums are all-reduced (:meth:`NCStats.sync`): counts and count-weighted means
first, then each rank's scatter corrected by its offset to the global class means.  This is exact
also when a class is spread over ranks or absent on some.

The lifecycle follows torchmetrics: :meth:`~NCStats.update`, :meth:`~NCStats.compute`,
:meth:`~NCStats.reset`, :meth:`~NCStats.merge_state` (also :meth:`~NCStats.merge`),
:meth:`~NCStats.sync`, and :meth:`~NCStats.state_dict` / :meth:`~NCStats.load_state_dict` (plain
tensors and ints, so a checkpoint can hold half an epoch's statistics and be read back with
``torch.load(..., weights_only=True)``).  The metrics themselves are the pure formulas of
:mod:`nclab.metrics.functional`.

Example
-------
>>> import torch
>>> from nclab.metrics import NCStats
>>> h = torch.randn(600, 16); y = torch.arange(600) % 3
>>> stats = NCStats(num_classes=3)
>>> for hb, yb in zip(h.split(128), y.split(128)):
...     _ = stats.update(hb, yb)
>>> res = stats.compute()
>>> res.nc1 > 0
True
"""

from __future__ import annotations

import torch

from nclab._validation import (
    check_bool,
    check_choice,
    check_features,
    check_head,
    check_int,
    check_labels,
    check_num_classes,
    check_real,
)
from nclab.distributed import collective_device
from nclab.metrics.compute import EmptyClassesError, metrics_from_statistics
from nclab.metrics.moments import ReferenceBlock, gemm_dtype
from nclab.metrics.result import NCMetrics

__all__ = ["NCStats", "EmptyClassesError"]


#: The tensors of the state, in the order of :meth:`NCStats.state_dict`.
_STATE_TENSORS = ("counts", "means", "m2", "scatter")


class NCStats:
    """Mergeable float64 sufficient statistics of labelled features for the NC metrics.

    Parameters
    ----------
    num_classes : K >= 2.  Class counts come from the data; K only fixes the label range.
    dim : feature dimension d (inferred from the first batch if None).
    device : where the state lives (default: the device of the first batch).
    gemm_dtype : precision of the per-batch scatter product (default: float64 for float64 input,
        float32 otherwise; the operands are already centred, so float32 loses no digits to a
        common offset).

    Methods: :meth:`update`, :meth:`compute`, :meth:`reset`, :meth:`merge` (alias
    :meth:`merge_state`), :meth:`sync`, :meth:`state_dict`, :meth:`load_state_dict`.
    """

    def __init__(self, num_classes: int, dim: int | None = None, *, device=None, gemm_dtype=None):
        self.num_classes = check_num_classes(num_classes)
        if dim is not None:
            dim = check_int("dim", dim, minimum=1)
        self.gemm_dtype = check_choice("gemm_dtype", gemm_dtype, (None, torch.float32, torch.float64))
        self._initial = (dim, None if device is None else torch.device(device))
        self.reset()

    # -- state -------------------------------------------------------------------------------

    def reset(self) -> "NCStats":
        """Forget every sample: back to the state of a fresh ``NCStats(num_classes, dim,
        device=device)`` (the constructor's dim and device; an inferred dim is forgotten)."""
        dim, device = self._initial
        self.device = device
        self.dim = None
        self._counts = self._means = self._m2 = self._scatter = None
        self._block = None
        self._synced = False
        if dim is not None:
            self._init_state(dim, self.device or torch.device("cpu"))
        return self

    def _init_state(self, dim: int, device) -> None:
        K = self.num_classes
        self.dim = int(dim)
        self.device = torch.device(device)
        f64 = dict(dtype=torch.float64, device=self.device)
        self.counts = torch.zeros(K, **f64)
        self.means = torch.zeros(K, dim, **f64)
        self.m2 = torch.zeros(K, **f64)
        self.scatter = torch.zeros(dim, dim, **f64)
        self._block = None

    @property
    def num_samples(self) -> int:
        if self._counts is None:
            return 0
        return int(self._counts.sum()) + (0 if self._block is None else int(self._block.n.sum()))

    # The state tensors fold the batches of the open block in when read (one K-row product).
    counts = property(lambda self: self._folded("_counts"), lambda self, v: setattr(self, "_counts", v),
                      doc="(K,) float64 samples per class n_k.")
    means = property(lambda self: self._folded("_means"), lambda self, v: setattr(self, "_means", v),
                     doc="(K, d) float64 class means mu_k (0 for classes without a sample).")
    m2 = property(lambda self: self._folded("_m2"), lambda self, v: setattr(self, "_m2", v),
                  doc="(K,) float64 per-class sums of squared deviations sum_i |h_{k,i} - mu_k|^2.")
    scatter = property(lambda self: self._folded("_scatter"), lambda self, v: setattr(self, "_scatter", v),
                       doc="(d, d) float64 pooled within-class scatter sum_{k,i} (h_{k,i} - mu_k)(h_{k,i} - mu_k)^T.")

    def _folded(self, name: str):
        if self._block is not None:
            block, self._block = self._block, None
            self._merge_state(*block.statistics(), owned=True)
        return getattr(self, name)

    @property
    def class_means(self) -> torch.Tensor:
        """(K, d) float64 class means (rows of classes with no sample are 0)."""
        self._require_data()
        return self.means

    def _require_data(self) -> None:
        if self.counts is None or self.num_samples == 0:
            raise ValueError("no samples yet: call update(features, labels) first")

    def state_dict(self) -> dict:
        """The statistics as plain tensors and ints (copies), for a checkpoint.

        Keys: ``num_classes`` and ``dim`` (ints; dim = 0 before the first batch when no dim was
        given), ``synced`` (0 or 1) and, once dim is known, the float64 tensors ``counts`` (K,),
        ``means`` (K, d), ``m2`` (K,) and ``scatter`` (d, d) on the state's device.  Everything
        loads with ``torch.load(..., weights_only=True)``; :meth:`load_state_dict` restores it.
        """
        out = {"num_classes": self.num_classes, "dim": self.dim or 0, "synced": int(self._synced)}
        if self.dim is not None:
            for name in _STATE_TENSORS:
                out[name] = getattr(self, name).detach().clone()
        return out

    def load_state_dict(self, state: dict) -> "NCStats":
        """Replace the statistics by those of :meth:`state_dict` (e.g. from a checkpoint).

        The state must match: same ``num_classes``, the same ``dim`` when this object has one,
        float64 tensors of shapes (K,), (K, d), (K,), (d, d).  Any mismatch raises ValueError
        naming it, and leaves this object unchanged.  Tensors move to this object's device (or
        stay where they are when it has none yet).
        """
        if not isinstance(state, dict):
            raise ValueError(f"state must be a dict from NCStats.state_dict(), got {type(state).__name__}")
        expected = {"num_classes", "dim", "synced"}
        missing = sorted(expected - state.keys())
        if missing:
            raise ValueError(f"state_dict lacks {missing}; pass the dict of NCStats.state_dict()")
        K = state["num_classes"]
        if K != self.num_classes:
            raise ValueError(f"state_dict has num_classes = {K}, but these statistics have num_classes = {self.num_classes}")
        d = check_int("state_dict['dim']", state["dim"], minimum=0)
        if d and self.dim is not None and d != self.dim:
            raise ValueError(f"state_dict has dim = {d}, but these statistics have dim = {self.dim}")
        tensors = set(_STATE_TENSORS) if d else set()
        unexpected = sorted(state.keys() - expected - tensors)
        absent = sorted(tensors - state.keys())
        if unexpected or absent:
            raise ValueError(f"state_dict with dim = {d}: missing keys {absent}, unexpected keys {unexpected}")
        shapes = {"counts": (K,), "means": (K, d), "m2": (K,), "scatter": (d, d)}
        for name in sorted(tensors, key=_STATE_TENSORS.index):
            t = state[name]
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"state_dict['{name}'] must be a torch.Tensor, got {type(t).__name__}")
            if tuple(t.shape) != shapes[name]:
                raise ValueError(f"state_dict['{name}'] must have shape {shapes[name]}, got {tuple(t.shape)}")
            if t.dtype != torch.float64:
                raise ValueError(f"state_dict['{name}'] must have dtype torch.float64, got {t.dtype}")
        synced = bool(state["synced"])
        if not d:
            self.reset()
        else:
            device = self.device or state["counts"].device
            self._init_state(d, device)
            for name in _STATE_TENSORS:
                setattr(self, name, state[name].detach().to(device).clone())
        self._synced = synced
        return self

    def _merge_state(self, nb, mb, m2b, scatter_b=None, *, owned: bool = False):
        """Chan et al.'s exact pairwise merge of (nb, mb, m2b, scatter_b) into self, float64.

        Returns the merge weights w_k = n_a n_b / n and offsets delta_k = mean_b - mean_a.  With
        ``scatter_b=None`` the scatter is left to the caller (``update`` folds
        ``scatter_b + sum_k w_k delta_k delta_k^T`` into its own product).  ``owned``: scatter_b
        is a temporary of the caller, so the sum is formed in it (no d x d allocation); into an empty
        state such statistics (zero rows for absent classes) are taken as they are, which is what
        the merge gives then (0 + x = x, w = 0)."""
        na = self.counts
        if owned and scatter_b is not None and not bool((na > 0).any()):
            self.counts, self.means, self.m2, self.scatter = nb.clone(), mb, m2b, scatter_b
            return torch.zeros_like(nb), mb
        n = na + nb
        w = torch.where(n > 0, na * nb / n.clamp_min(1.0), torch.zeros_like(n))
        delta = mb - self.means
        frac = torch.where(n > 0, nb / n.clamp_min(1.0), torch.zeros_like(n))
        self.means = self.means + delta * frac[:, None]
        self.m2 = self.m2 + m2b + w * (delta * delta).sum(1)
        if scatter_b is not None:
            self.scatter = scatter_b.add_(self.scatter) if owned else self.scatter + scatter_b
            if bool((w > 0).any()):
                self.scatter += delta.T @ (w[:, None] * delta)
        self.counts = n
        return w, delta

    # -- update ------------------------------------------------------------------------------

    @torch.no_grad()
    def update(self, features, labels) -> "NCStats":
        """Add a batch: ``features`` (B, d) in any float dtype on any device, ``labels`` (B,) ints.

        Cost: O(B d) elementwise work plus one rank-B product into the d x d scatter (BLAS syrk on
        the CPU from d = 1024, half the flops of the GEMM X^T X; a GEMM below:
        :class:`~nclab.metrics.moments.GramAccumulator`).  The batch joins the open
        :class:`~nclab.metrics.moments.ReferenceBlock`; reading the state folds it in (one K-row
        product), so a pass costs the products of its own rows plus one of K rows.
        """
        if self._synced:
            raise ValueError("these statistics were already synced across processes; start a new NCStats")
        X = check_features(features, dim=self.dim)
        y = check_labels(labels, X.shape[0], self.num_classes)
        if self.dim is None:
            self._init_state(X.shape[1], self.device or X.device)
        if X.shape[0] == 0:
            return self
        X = X.to(self.device)
        y = y.to(self.device)
        wdt = self.gemm_dtype or gemm_dtype(X.dtype)
        if X.dtype != wdt:
            X = X.to(wdt)
        if self._block is not None and self._block.dtype != wdt:
            self._folded("_counts")  # a batch in another precision: fold the open block first
        if self._block is None:
            self._block = ReferenceBlock(self.num_classes, self.dim, wdt, self.device)
        self._block.add(X, y)
        return self

    # -- merge and sync ----------------------------------------------------------------------

    @torch.no_grad()
    def merge(self, other: "NCStats") -> "NCStats":
        """Merge another accumulator into this one, exactly (Chan et al. 1979). Returns self."""
        if not isinstance(other, NCStats):
            raise ValueError(f"can only merge another NCStats, got {type(other).__name__}")
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge statistics of {other.num_classes} classes into {self.num_classes}")
        if other.dim is None:
            return self
        if self.dim is None:
            self._init_state(other.dim, self.device or other.device)
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dimension {other.dim} into dimension {self.dim}")
        dev = self.device
        self._merge_state(other.counts.to(dev), other.means.to(dev), other.m2.to(dev), other.scatter.to(dev))
        return self

    def merge_state(self, other) -> "NCStats":
        """torchmetrics' name for :meth:`merge`; ``other`` is an NCStats or its :meth:`state_dict`."""
        if isinstance(other, dict):
            other = NCStats(self.num_classes).load_state_dict(other)
        return self.merge(other)

    @torch.no_grad()
    def sync(self, group=None) -> "NCStats":
        """All-reduce the statistics over the processes of ``group`` (in place; call on every rank).

        Only sums travel: (1) counts and count-weighted means give the global class means;
        (2) each rank adds ``sum_k n_k,r (mu_k,r - mu_k)(mu_k,r - mu_k)^T`` to its scatter (and the
        matching term to m2), then scatter and m2 are summed.  Exact for classes split over ranks
        or absent on some.  A no-op when torch.distributed is not initialised.  Afterwards every
        rank holds the global statistics; a second sync or a further update raises.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        if self._synced:
            raise ValueError("these statistics were already synced; syncing twice would double-count")
        # Agree on the dimension (a rank may have seen no data).
        dim = torch.tensor([self.dim or 0], dtype=torch.int64, device=collective_device(group))
        dist.all_reduce(dim, op=dist.ReduceOp.MAX, group=group)
        if int(dim) == 0:
            raise ValueError("no process has any sample: nothing to sync")
        if self.dim is None:
            self._init_state(int(dim), collective_device(group))
        elif self.dim != int(dim):
            raise ValueError(f"feature dimension differs across processes: {self.dim} here, {int(dim)} elsewhere")
        orig = self.device
        dev = collective_device(group)
        counts, means, m2, scatter = (t.to(dev) for t in (self.counts, self.means, self.m2, self.scatter))

        total = counts.clone()
        weighted = means * counts[:, None]
        dist.all_reduce(total, group=group)
        dist.all_reduce(weighted, group=group)
        gmeans = weighted / total.clamp_min(1.0)[:, None]

        offset = means - gmeans
        offset = offset * (counts > 0)[:, None]  # absent classes carry no weight (and no garbage)
        scatter = scatter + offset.T @ (counts[:, None] * offset)
        m2 = m2 + counts * (offset * offset).sum(1)
        dist.all_reduce(scatter, group=group)
        dist.all_reduce(m2, group=group)

        self.counts, self.means, self.m2, self.scatter = (t.to(orig) for t in (total, gmeans, m2, scatter))
        self._synced = True
        return self

    # -- metrics -----------------------------------------------------------------------------

    @torch.no_grad()
    def compute(
        self,
        classifier=None,
        bias=None,
        *,
        weighted_mean: bool = False,
        rtol: float | None = None,
        empty: str = "raise",
        tile: int | None = None,
    ) -> NCMetrics:
        """All metrics of REFERENCE.md section 3 but nc4 (see :class:`nclab.metrics.NC4Counter`).

        Parameters
        ----------
        classifier : (K, d) last-layer weights W (row k = class k), optional.
        bias : (K,) last-layer bias b, optional; with a classifier and no bias, b = 0 is used
            (a bias-free head), so ``bias_collapse = |(I - J/K) W mu_G|``.
        weighted_mean : global mean mu_G = mean of all features instead of the (default,
            Papyan et al.) unweighted mean of the class means.
        rtol : relative eigenvalue cut-off of Sigma_B's pseudo-inverse: eigenvalues
            <= rtol * lambda_max count as zero.  Default ``max(K, d) * eps_float64`` (numpy's
            matrix-rank tolerance); no +eps*I regularisation and no hard rank-(K-1) truncation.
        empty : "raise" (default) if a class has no sample, or "drop" to compute the metrics over
            the classes present (listed in ``empty_classes`` of the result).
        tile : block size of the pairwise (K x K) quantities; memory O(tile^2).  Default: chosen
            from the available memory (:func:`nclab.metrics.resources.auto_tile`).

        Each metric is the pure formula of :mod:`nclab.metrics.functional`, evaluated by
        :func:`nclab.metrics.compute.metrics_from_statistics` (small eigenproblems on the smaller
        of the K x K and d x d Grams; the pairwise metrics share one tiled pass per Gram).
        """
        self._require_data()
        check_choice("empty", empty, ("raise", "drop"))
        weighted_mean = check_bool("weighted_mean", weighted_mean)
        if tile is not None:
            tile = check_int("tile", tile, minimum=1)
        if rtol is not None:
            rtol = check_real("rtol", rtol, nonnegative=True)
        W = b = None
        if classifier is not None:
            W, b = check_head(classifier, bias, self.num_classes, self.dim, self.device)
        elif bias is not None:
            raise ValueError("bias was given without a classifier; pass classifier=W as well")
        return metrics_from_statistics(self.counts, self.means, self.m2, self.scatter, W, b,
                                       weighted_mean=weighted_mean, rtol=rtol, empty=empty, tile=tile)
