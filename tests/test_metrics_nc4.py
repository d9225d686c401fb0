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
