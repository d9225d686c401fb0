"""Neural-collapse metrics (REFERENCE.md section 3): exact one-pass statistics, nc4, one call.

The package, one idea per module:

==============================  ==============================================================
:mod:`.stats`                   :class:`NCStats`: exact mergeable float64 statistics (update,
                                merge, sync, compute, reset, state_dict / load_state_dict)
:mod:`.compute`                 every metric but nc4 from the statistics (``NCStats.compute``),
                                on the smaller of the K x K and d x d Grams
:mod:`.moments`                 the per-batch kernels (deviations from class references, class sums, the symmetric product)
:mod:`.nc4`                     :class:`NC4Counter`: nc4 by a second pass with the final means
:mod:`.functional`              the pure formula of every metric, with its paper
:mod:`.pairwise`                the tiled K x K kernel (cdnv, max-angle, ETF Gram distances)
:mod:`.resources`               memory available for a tile, LAPACK on one thread
:mod:`.result`                  :data:`METRIC_NAMES`, :data:`METRIC_DESCRIPTIONS`, :class:`NCMetrics`
this module                     :func:`compute_metrics`: everything in one call
==============================  ==============================================================

Arrays are validated once where they enter, by :mod:`nclab._validation` (``check_features``,
``check_labels``, ``check_head``; importable from here as well).

Example
-------
>>> import torch
>>> from nclab.geometry import simplex_etf
>>> from nclab.metrics import compute_metrics
>>> M = simplex_etf(3, 8, seed=0)
>>> y = torch.arange(300) % 3
>>> res = compute_metrics(M[y] + 1e-3 * torch.randn(300, 8, dtype=M.dtype), y, classifier=M)
>>> res.nc1 < 1e-4 and res.nc4 == 0.0
True
"""

from __future__ import annotations

import numpy as np
import torch

from nclab._validation import check_features, check_head, check_int, check_labels, check_num_classes
from nclab.metrics.nc4 import NC4Counter
from nclab.metrics.result import METRIC_DESCRIPTIONS, METRIC_NAMES, NCMetrics
from nclab.metrics.compute import EmptyClassesError
from nclab.metrics.stats import NCStats

__all__ = [
    "METRIC_NAMES",
    "METRIC_DESCRIPTIONS",
    "NCMetrics",
    "NCStats",
    "EmptyClassesError",
    "NC4Counter",
    "compute_metrics",
    "check_features",
    "check_labels",
    "check_head",
]


def _batches(features, labels, batch_size):
    N = features.shape[0]
    step = N if not batch_size else int(batch_size)
    for s in range(0, N, max(step, 1)):
        yield features[s : s + step], labels[s : s + step]


def _load(x):
    if isinstance(x, np.ndarray):  # covers np.memmap: reading the slice (a private copy) happens here
        return torch.from_numpy(np.array(x, copy=True, order="C"))
    return x


def compute_metrics(
    features,
    labels,
    classifier=None,
    bias=None,
    *,
    num_classes: int | None = None,
    weighted_mean: bool = False,
    batch_size: int | None = None,
    rtol: float | None = None,
    empty: str = "raise",
    progress=None,
) -> NCMetrics:
    """All NC metrics of labelled features in one call (two passes when a classifier is given:
    :class:`NCStats`, then :class:`NC4Counter` for nc4 with the final means).

    ``features`` (N, d) and ``labels`` (N,) may be tensors or numpy arrays (memory-mapped ones are
    read ``batch_size`` rows at a time).  K is ``classifier.shape[0]`` if given, else
    ``num_classes``, else ``max(labels) + 1``.  ``progress(n_rows)`` is called after each batch.
    ``weighted_mean``, ``rtol`` and ``empty`` are those of :meth:`NCStats.compute`.

    >>> import torch
    >>> from nclab.geometry import simplex_etf
    >>> M = simplex_etf(3, 4)
    >>> y = torch.arange(30) % 3
    >>> h = M[y] + 0.01 * torch.randn(30, 4, dtype=torch.float64)
    >>> compute_metrics(h, y, classifier=M).nc4
    0.0
    """
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, minimum=1)
    if getattr(features, "ndim", None) != 2:
        raise ValueError(f"features must be a 2-D array of shape (N, d), got shape {tuple(getattr(features, 'shape', ()))}")
    if getattr(labels, "ndim", None) != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"labels must be a 1-D array with one entry per feature row ({features.shape[0]}), "
            f"got shape {tuple(getattr(labels, 'shape', ()))}"
        )
    if classifier is not None:
        K = int(classifier.shape[0])
        if num_classes is not None and num_classes != K:
            raise ValueError(f"num_classes={num_classes} disagrees with the classifier's {K} rows")
    elif num_classes is not None:
        K = check_num_classes(num_classes)
    else:
        if labels.shape[0] == 0:
            raise ValueError("no samples: features and labels are empty")
        ymax = int(labels.max())
        K = ymax + 1
        if K < 2:
            raise ValueError(f"labels contain a single class (max label {ymax}); need at least 2 classes")
    stats = NCStats(K)
    for Xb, yb in _batches(features, labels, batch_size):
        stats.update(_load(Xb), _load(yb))
        if progress is not None:
            progress(Xb.shape[0])
    res = stats.compute(classifier, bias, weighted_mean=weighted_mean, rtol=rtol, empty=empty)
    if classifier is None:
        return res
    counter = NC4Counter(stats.class_means, _load(classifier), None if bias is None else _load(bias), counts=stats.counts)
    for Xb, yb in _batches(features, labels, batch_size):
        counter.update(_load(Xb), _load(yb))
        if progress is not None:
            progress(Xb.shape[0])
    return res.with_nc4(counter.compute())
