"""Every metric but nc4 from the exact statistics: :func:`metrics_from_statistics`.

This is the ``compute`` step of :class:`nclab.metrics.NCStats` (REFERENCE.md section 3): from the
class counts, means, per-class sums of squared deviations and the pooled within-class scatter it
evaluates the pure formulas of :mod:`nclab.metrics.functional`, sharing the work between them.

Cost, with r = min(K, d) (K classes, d dimensions, all float64):

* nc1 works on the smaller Gram (:func:`nclab.metrics.functional.nc1_and_rank`): a Cholesky
  factor of the K x K Gram of the centred means (the centring direction removed) when K <= d,
  then ``T = H^{-1} B`` (2 K^2 d) and ``<Sigma_W, T^T T>`` from the blocks of T^T T on and above
  its diagonal (about K d^2 multiplications, half of ``T Sigma_W``); the d x d ``Mc^T Mc`` when
  K > d; a dense ``eigh`` only when the means are (nearly) rank-deficient, and then on one
  thread (:func:`nclab.metrics.resources.single_thread`).
* the pairwise metrics share one tiled pass per Gram (:func:`nclab.metrics.pairwise.pairwise_summaries`):
  ``Mc Mc^T`` for cdnv, the max-angle measure and the ETF distance, ``W W^T`` for the classifier's;
  ``W Mc^T`` only when K <= d + 1 (for K > d + 1 the three ETF distances come from d x d Grams).
  Symmetric Grams are formed only on and above their diagonal (half the multiplications).  When
  K <= d + 1 each Gram is formed once and kept whole (K^2 <= (d+1)^2 entries), and the means'
  Gram is nc1's; for K > d + 1 the Grams go in cache-sized tiles (512 rows on the CPU), whose
  elementwise work then costs little next to the product.

So for K <= d the work is about 3 K^2 d + K d^2 multiplications (the Grams K^2 d / 2 + K^2 d / 2
+ K^2 d, nc1 K^2 d + K d^2) and for K > d about K^2 d for the two half Grams plus O(K d^2 + d^3):
no K x K dense work where a d x d one suffices.  Measured on 2 cores (float64): K = 1000,
d = 2048 0.23 s (0.36 s before the half products); K = 10,000, d = 256 0.66 s (1.5 s with
2048-row tiles), against 0.82 s for the benchmark's float32 floor of the three full Grams.
``NCStats.compute`` first folds the open block of batches into the state (one K-row syrk and a
d x d mirror: about 0.1 s at d = 2048).
"""

from __future__ import annotations

import torch

from nclab.metrics import functional as F
from nclab.metrics.pairwise import pairwise_summaries
from nclab.metrics.result import NCMetrics

__all__ = ["EmptyClassesError", "metrics_from_statistics"]


class EmptyClassesError(ValueError):
    """Some of the K classes have no sample (``empty="raise"``).

    ``missing`` lists them, ``present`` counts the classes with samples and ``max_label`` is the
    largest label seen.  When fewer than half of the labels up to the largest have samples, the
    likely cause is a label out of range rather than a class left out (:attr:`out_of_range`).
    :meth:`message` words the remedy with the caller's names: Python arguments here, command-line
    options in :mod:`nclab.cli`.
    """

    def __init__(self, missing: list[int], present: int, max_label: int | None):
        self.missing = list(missing)
        self.present = int(present)
        self.max_label = max_label
        super().__init__(self.message())

    @property
    def out_of_range(self) -> bool:
        return self.max_label is not None and self.present < (self.max_label + 1) / 2

    def message(self, num_classes: str = "num_classes=K", head: str = "classifier=W",
                drop: str = 'empty="drop"') -> str:
        if self.out_of_range:
            return (f"labels go up to {self.max_label} but only {self.present} classes have samples: "
                    f"a label out of range? give {num_classes} or {head} to check the labels, "
                    f"or {drop} to ignore the empty classes")
        more = " ..." if len(self.missing) > 20 else ""
        return (f"{len(self.missing)} class(es) have no sample: {self.missing[:20]}{more}; "
                f"pass {drop} to compute the metrics over the {self.present} classes present")


@torch.no_grad()
def metrics_from_statistics(counts, means, m2, scatter, classifier=None, bias=None, *,
                            weighted_mean: bool = False, rtol: float | None = None, empty: str = "raise",
                            tile: int | None = None) -> NCMetrics:
    """All metrics of REFERENCE.md section 3 but nc4, from validated float64 statistics.

    Parameters: counts (K,), means (K, d), m2 (K,), scatter (d, d) as held by
    :class:`nclab.metrics.NCStats`; classifier (K, d) and bias (K,) already checked (bias not None
    when a classifier is given); ``weighted_mean``, ``rtol``, ``empty`` and ``tile`` as in
    :meth:`nclab.metrics.NCStats.compute` (``tile=None``: chosen from the available memory).
    Raises :class:`EmptyClassesError` for classes without a sample when ``empty="raise"``.
    """
    W, b = classifier, bias
    d = means.shape[1]
    missing = torch.nonzero(counts == 0).squeeze(1).tolist()
    if missing:
        present = torch.nonzero(counts > 0).squeeze(1)
        if empty == "raise":
            max_label = int(present.max()) if present.numel() else None
            raise EmptyClassesError(missing, present.numel(), max_label)
        counts, means, m2 = counts[present], means[present], m2[present]
        if W is not None:
            W, b = W[present], b[present]
    Kp = counts.shape[0]
    if Kp < 2:
        raise ValueError(f"need samples of at least 2 classes, got {Kp}")
    N = float(counts.sum())

    Mc, mu_g = F.centred_means(means, counts, weighted=weighted_mean)
    if rtol is None:
        rtol = F.default_rtol(Kp, d)
    # One tiled pass over each Gram serves all its pairwise metrics (and nc1's factorisation):
    # cdnv, nc2_maxangle and nc2_etf of the means are F.cdnv, F.nc2_maxangle, F.nc2_etf fused.
    pm = pairwise_summaries(Mc, angle=True, variances=m2 / counts, tile=tile, keep_gram=Kp <= d)
    # nc1 is linear in Sigma_W = scatter / N: the division is applied once, to the result
    nc1, rank = F.nc1_and_rank(Mc, scatter, rtol, gram=pm["gram"], weights=counts if weighted_mean else None)
    nc1 /= N

    W_metrics = dict(nc2_equinorm_W=None, nc2_maxangle_W=None, nc2_etf_W=None, nc3=None,
                     nc3_duality_gram=None, bias_collapse=None)
    if W is not None:
        pw = pairwise_summaries(W, angle=True, tile=tile)  # F.nc2_maxangle(W) and F.nc2_etf(W) fused
        W_metrics = dict(
            nc2_equinorm_W=F.nc2_equinorm(W),
            nc2_maxangle_W=pw["angle_error"],
            nc2_etf_W=pw["etf_gram_error"],
            nc3=F.nc3(W, Mc),
            nc3_duality_gram=F.nc3_duality_gram(W, Mc, tile=tile),
            bias_collapse=F.bias_collapse(W, b, mu_g),
        )
    return NCMetrics(
        nc1=nc1,
        nc1_trace_ratio=F.nc1_trace_ratio(Mc, m2, counts),
        cdnv=pm["cdnv"],
        nc2_equinorm_means=F.nc2_equinorm(Mc),
        nc2_maxangle_means=pm["angle_error"],
        nc2_etf_means=pm["etf_gram_error"],
        **W_metrics,
        num_classes=Kp,
        num_samples=int(N),
        dim=d,
        sigma_b_rank=rank,
        rtol=float(rtol),
        weighted_mean=bool(weighted_mean),
        empty_classes=tuple(missing),
    )
