"""nclab.nets.evaluate: feature extraction and the network's NC metrics.

Oracles: a direct forward pass (model.features), nclab.metrics.compute_metrics on those features,
the nearest-class-mean rule applied directly; the recomputing nc4 pass against the one that keeps
the features.  (Sharded over two processes: test_nets_ddp.py.)
"""

from __future__ import annotations

import math

import pytest
import torch

from nclab.metrics import METRIC_NAMES, compute_metrics
from nclab.nets import evaluate as E
from nclab.nets.config import TrainConfig
from nclab.nets.data import load_dataset
from nclab.nets.distributed import DistEnv
from nclab.nets.evaluate import collapse_metrics, evaluate, extract
from nclab.nets.train import build_model


@pytest.fixture(scope="module")
def small_mnist(data_dir):
    images, labels = load_dataset("mnist", data_dir, train=True, per_class=30, seed=0).tensors
    return images, labels


@pytest.mark.parametrize("head", ["learned", "normalized"])
def test_extraction_equals_direct_forward_and_compute_metrics(small_mnist, head):
    images, labels = small_mnist
    net = build_model(TrainConfig(model="mlp", head=head, seed=3))
    net.train()  # extraction must switch to eval mode itself
    ex = extract(net, images, labels, num_classes=10, batch_size=images.shape[0], keep_features=True)
    with torch.no_grad():
        net.eval()
        h = net.features(images)
        direct = net.head.metric_features(h)
        logits = net(images)
    assert torch.equal(ex.features, direct)  # same batch: bit for bit
    assert ex.count == images.shape[0] and ex.correct == float((logits.argmax(1) == labels).sum())
    assert math.isclose(ex.loss, float(torch.nn.functional.cross_entropy(logits, labels)), rel_tol=1e-5)
    # small batches: the same features up to float32 rounding of the matrix products
    ex64 = extract(net, images, labels, num_classes=10, batch_size=64, keep_features=True)
    assert torch.allclose(ex64.features, direct, rtol=1e-5, atol=1e-6)
    # the loop's metrics (NCStats + NC4Counter, 64-sample batches) vs the one-call oracle; in
    # float64 (a float64 network) so that batching changes nothing beyond float64 rounding
    net64, images64 = net.double(), images.double()
    direct = net64.head.metric_features(net64.features(images64)).detach()
    W, b = net64.head.classifier_weight(), net64.head.classifier_bias()
    got, _, counter = collapse_metrics(net64, images64, labels, num_classes=10, batch_size=64)
    want = compute_metrics(direct, labels, W, b)
    for name in METRIC_NAMES:
        g, w = getattr(got, name), getattr(want, name)
        assert math.isclose(g, w, rel_tol=1e-10, abs_tol=1e-14), (name, g, w)
    # and the nearest-class-mean accuracy is that of the rule applied directly
    mu = torch.stack([direct[labels == k].double().mean(0) for k in range(10)])
    ncc = torch.cdist(direct.double(), mu).argmin(1)
    assert counter.ncc_accuracy == pytest.approx(float((ncc == labels).double().mean()), abs=1e-12)


def test_nc4_pass_recomputing_features_equals_keeping_them(small_mnist, monkeypatch):
    """Features too large to keep are recomputed for the nc4 pass: the same numbers."""
    images, labels = small_mnist
    net = build_model(TrainConfig(model="mlp", head="normalized", seed=1))
    kept, ex_kept, c_kept = collapse_metrics(net, images, labels, num_classes=10, batch_size=64)
    assert ex_kept.features is not None
    monkeypatch.setattr(E, "KEEP_FEATURES_BYTES", 0)
    redone, ex_redone, c_redone = collapse_metrics(net, images, labels, num_classes=10, batch_size=64)
    assert ex_redone.features is None
    assert redone.as_dict() == kept.as_dict()
    assert (c_redone.mismatches, c_redone.total) == (c_kept.mismatches, c_kept.total)


def test_evaluate_record(small_mnist):
    """The evaluated part of a log record: eval-mode losses and accuracies of both sets, ncc_acc
    and every metric, in one process equal to the functions it combines."""
    images, labels = small_mnist
    net = build_model(TrainConfig(model="mlp", head="learned", seed=2))
    test_x, test_y = images[:100], labels[:100]
    record = evaluate(net, images, labels, test_x, test_y, 10, 128, DistEnv(torch.device("cpu")))
    metrics, tr, counter = collapse_metrics(net, images, labels, num_classes=10, batch_size=128)
    te = extract(net, test_x, test_y, num_classes=10, batch_size=128, stats=False)
    assert record["train_loss"] == tr.loss and record["train_acc"] == tr.accuracy
    assert record["test_loss"] == te.loss and record["test_acc"] == te.accuracy
    assert record["ncc_acc"] == counter.ncc_accuracy
    assert set(METRIC_NAMES) <= set(record)
    assert all(record[k] == v or (v != v and record[k] != record[k]) for k, v in metrics.as_dict().items())
