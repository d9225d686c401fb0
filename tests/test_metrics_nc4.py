"""nclab.metrics.nc4.NC4Counter: nc4 and the accuracies against the reference, merges and their
compatibility checks."""

from __future__ import annotations

import pytest
import torch

from nclab.metrics import NC4Counter, NCStats

from metrics_helpers import planted
from reference_nc import reference_metrics


def test_nc4_counter_matches_reference_and_reports_accuracies():
    K, d = 5, 6
    X, y, M = planted(K, 60, d, 0.6, seed=18)
    W = M + 0.4 * torch.randn(K, d, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    stats = NCStats(K).update(X, y)
    counter = NC4Counter(stats.class_means, W)
    for xb, yb in zip(X.split(17), y.split(17)):
        counter.update(xb, yb)
    ref = reference_metrics(X.numpy(), y.numpy(), K, W.numpy())
    assert counter.compute() == pytest.approx(ref["nc4"], abs=0)
    assert 0.0 < ref["nc4"] < 0.5
    pred = (X @ W.T).argmax(1)
    assert counter.classifier_accuracy == pytest.approx(float((pred == y).double().mean()))


def _setup(seed=24):
    K, d = 5, 6
    X, y, M = planted(K, 60, d, 0.6, seed=seed)
    X = X + 40.0  # a common offset: the counter centres before any product
    W = M + 0.4 * torch.randn(K, d, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    b = 0.2 * torch.randn(K, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    stats = NCStats(K).update(X, y)
    return K, X, y, W, b, stats


def test_nc4_counts_are_unchanged_by_blocks_and_equal_a_direct_count(monkeypatch):
    K, X, y, W, b, stats = _setup()
    monkeypatch.setattr(NC4Counter, "MIN_BLOCK_ROWS", 1)  # blocks of 1 and 7 rows, a short last one
    means = stats.class_means
    pred = (X @ W.T + b).argmax(1)
    ncc = torch.cdist(X - means.mean(0), means - means.mean(0)).argmin(1)
    want = int((pred != ncc).sum())
    ref = reference_metrics(X.numpy(), y.numpy(), K, W.numpy(), b.numpy())
    assert want / len(y) == pytest.approx(ref["nc4"], abs=0)
    for block_rows in (None, 1, 7):
        c = NC4Counter(means, W, b)
        if block_rows is not None:
            monkeypatch.setattr(NC4Counter, "BLOCK_ELEMENTS", block_rows * K)  # many blocks
        assert NC4Counter.block_rows(K) == (block_rows or NC4Counter.block_rows(K))
        for xb, yb in zip(X.split(50), y.split(50)):
            c.update(xb, yb)
        assert (c.mismatches, c.total, c.labelled) == (want, len(y), len(y))
        assert c.compute() == want / len(y)
        assert c.classifier_accuracy == float((pred == y).double().mean())
        assert c.ncc_accuracy == float((ncc == y).double().mean())


def test_update_keeps_counts_on_the_device_without_reading_them(monkeypatch):
    K, X, y, W, b, stats = _setup()
    c = NC4Counter(stats.class_means, W, b)
    c.BLOCK_ELEMENTS = 16 * K

    def no_read(*args, **kwargs):
        raise AssertionError("update read a count back to the host")

    with monkeypatch.context() as m:
        m.setattr(torch.Tensor, "__float__", no_read)
        m.setattr(torch.Tensor, "item", no_read)
        m.setattr(torch.Tensor, "tolist", no_read)
        c.update(X, y)
    assert c._tally.dtype == torch.int64 and c._tally.device == X.device
    assert c.total == len(y)


def test_merge_of_split_passes_equals_one_pass():
    K, X, y, W, b, stats = _setup()
    whole = NC4Counter(stats.class_means, W, b, counts=stats.counts).update(X, y)
    a = NC4Counter(stats.class_means, W, b, counts=stats.counts).update(X[:100], y[:100])
    c = NC4Counter(stats.class_means, W, b, counts=stats.counts).update(X[100:])  # no labels
    a.merge(c)
    assert (a.mismatches, a.total) == (whole.mismatches, whole.total)
    assert a.compute() == whole.compute()
    assert a.labelled == 100


def test_merge_rejects_counts_made_with_another_head_or_other_means():
    K, X, y, W, b, stats = _setup()
    means, counts = stats.class_means, stats.counts
    base = NC4Counter(means, W, b, counts=counts)
    cases = [
        (NC4Counter(means + 1e-9, W, b, counts=counts), "different class means"),
        (NC4Counter(means, W * 2, b, counts=counts), "different classifier"),
        (NC4Counter(means, W, b + 1.0, counts=counts), "different bias"),
        (NC4Counter(means, W, None, counts=counts), "different bias"),
        (NC4Counter(means, W, b, counts=torch.tensor([1, 0, 1, 1, 1])), "different classes present"),
        (NC4Counter(means[:4], W[:4], b[:4]), "of 4 classes into 5"),
        (NC4Counter(means[:, :5], W[:, :5], b), "of dimension 5 into dimension 6"),
    ]
    for other, message in cases:
        with pytest.raises(ValueError, match=message):
            base.merge(other)
    with pytest.raises(ValueError, match="can only merge another NC4Counter"):
        base.merge(stats)
    assert base.total == 0  # nothing was added by the failed merges


def test_reset_and_empty_counter():
    K, X, y, W, b, stats = _setup()
    c = NC4Counter(stats.class_means, W, b).update(X, y)
    first = c.compute()
    c.reset()
    assert c.total == 0 and c.classifier_accuracy is None
    with pytest.raises(ValueError, match="no samples yet"):
        c.compute()
    assert c.update(X, y).compute() == first
