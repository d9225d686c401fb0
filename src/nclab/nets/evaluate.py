"""Evaluation of a network: feature extraction and its neural-collapse metrics, sharded over ranks.

This module owns how a network is measured (REFERENCE.md section 3):

* :func:`extract`: one eval-mode, gradient-free pass over (a shard of) a data set: loss and
  accuracy sums and the head's metric features into an :class:`nclab.metrics.NCStats`;
* :func:`collapse_metrics`: all NC metrics of the training features, nc4 included, as the two
  passes of :func:`nclab.metrics.compute_metrics` (statistics, then an
  :class:`nclab.metrics.NC4Counter` with the final class means), but over the network's shards and
  synced exactly over the ranks in between;
* :func:`evaluate`: the record of one evaluated epoch (training metrics and loss/accuracy in eval
  mode, test loss/accuracy), as written to log.jsonl.

The metrics use the head's own classifier (``head.classifier_weight()``,
``head.classifier_bias()``) on the features that classifier sees (``head.metric_features(h)``,
i.e. h/|h| for the normalized head).  Rank r takes samples r, r+P, ...: no sample twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from nclab.metrics import NC4Counter, NCMetrics, NCStats
from nclab.nets.distributed import DistEnv, all_reduce, unwrap

__all__ = ["Extraction", "extract", "collapse_metrics", "evaluate", "KEEP_FEATURES_BYTES"]

#: Largest per-process feature matrix kept in memory for the nc4 pass (else it is recomputed).
KEEP_FEATURES_BYTES = 2 << 30


@dataclass
class Extraction:
    """Result of one evaluation pass over (a shard of) a data set.

    ``stats`` (this process's :class:`NCStats`, not yet synced) is None unless asked for;
    ``loss_sum``, ``correct`` and ``count`` are sums over this process's samples; ``features`` (the
    metric features, in the shard's sample order) and ``indices`` (the shard's sample indices) only
    with ``keep_features``."""

    stats: NCStats | None
    loss_sum: float
    correct: float
    count: float
    features: torch.Tensor | None = None
    indices: torch.Tensor | None = None

    @property
    def loss(self) -> float:
        return self.loss_sum / self.count

    @property
    def accuracy(self) -> float:
        return self.correct / self.count


def _shard(n: int, rank: int, world_size: int) -> torch.Tensor:
    """The sample indices of ``rank``: rank, rank + world_size, ... (below n)."""
    return torch.arange(rank, n, world_size)


def _batches(images, labels, idx: torch.Tensor, batch_size: int, device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` on ``device`` for consecutive chunks of ``batch_size`` of the indices ``idx``."""
    for chunk in idx.split(batch_size):
        x = images[chunk.to(images.device)].to(device, non_blocking=True)
        y = labels[chunk.to(labels.device)].to(device, non_blocking=True)
        yield x, y


@torch.no_grad()
def extract(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    stats: bool = True,
    keep_features: bool = False,
) -> Extraction:
    """One eval-mode, gradient-free pass of ``net`` over samples ``rank, rank + world_size, ...``.

    For every batch: ``h = net.features(x)``, logits ``net.head(h)`` (loss and accuracy sums) and,
    if ``stats``, the metric features ``net.head.metric_features(h)`` go into an
    :class:`NCStats` of ``num_classes`` classes.  Features are kept (on ``device``, in their own
    dtype) with ``keep_features``, for the nc4 pass.  The caller restores train mode.
    """
    net = unwrap(net)
    net.eval()
    device = torch.device(device)
    idx = _shard(images.shape[0], rank, world_size)
    acc = NCStats(num_classes, device=device) if stats else None
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    kept = []
    for x, y in _batches(images, labels, idx, batch_size, device):
        h = net.features(x)
        logits = net.head(h)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
        if stats or keep_features:
            z = net.head.metric_features(h)
            if stats:
                acc.update(z, y)
            if keep_features:
                kept.append(z)
    feats = torch.cat(kept) if keep_features and kept else None
    return Extraction(acc, float(loss_sum), float(correct), float(idx.numel()), feats, idx if keep_features else None)


@torch.no_grad()
def collapse_metrics(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
) -> tuple[NCMetrics, Extraction, NC4Counter]:
    """All NC metrics of the network's training features, nc4 included, synced over the ranks.

    The two passes of :func:`nclab.metrics.compute_metrics`, with a sync after each: pass 1
    (:func:`extract`) fills an :class:`NCStats` with ``head.metric_features(h)`` on every rank's
    shard and ``NCStats.sync`` merges them exactly; pass 2 feeds the same features (kept from pass
    1 when they fit in :data:`KEEP_FEATURES_BYTES`, recomputed otherwise) to an
    :class:`NC4Counter` built from the global class means, synced with ``NC4Counter.sync``.  The
    metrics use the head's classifier ``head.classifier_weight()`` and ``head.classifier_bias()``.
    Returns the metrics, the pass-1 extraction (loss/accuracy sums of this rank) and the synced
    counter (nearest-class-mean accuracy).  Equal to ``compute_metrics`` on the same features.
    """
    model = unwrap(net)
    head = model.head
    device = torch.device(device)
    keep = (images.shape[0] // world_size + 1) * head.d * 4 <= KEEP_FEATURES_BYTES
    first = extract(net, images, labels, num_classes=num_classes, batch_size=batch_size, device=device,
                    rank=rank, world_size=world_size, keep_features=keep)
    stats = first.stats
    stats.sync()
    W, b = head.classifier_weight(), head.classifier_bias()
    counter = NC4Counter(stats.class_means, W, b, counts=stats.counts)
    if keep:
        ys = labels[first.indices.to(labels.device)].to(device)
        second = zip(first.features.split(batch_size), ys.split(batch_size))
    else:
        batches = _batches(images, labels, _shard(images.shape[0], rank, world_size), batch_size, device)
        second = ((head.metric_features(model.features(x)), y) for x, y in batches)
    for z, y in second:
        counter.update(z, y)
    counter.sync()
    return stats.compute(W, b).with_nc4(counter.compute()), first, counter


def evaluate(net: nn.Module, train_x, train_y, test_x, test_y, num_classes: int, batch_size: int,
             env: DistEnv) -> dict:
    """The evaluated part of an epoch's log record, synced over the ranks: ``train_loss``,
    ``train_acc`` (eval mode, whole training set), ``test_loss``, ``test_acc``, ``ncc_acc``
    (nearest class mean on the training set) and every metric of :func:`collapse_metrics`.

    Under DDP, rank 0's batch-norm running statistics are broadcast first (they drift apart per
    rank between DDP's broadcasts), so every rank evaluates the same network."""
    kw = dict(num_classes=num_classes, batch_size=batch_size, device=env.device, rank=env.rank,
              world_size=env.world_size)
    if env.active:
        for buf in unwrap(net).buffers():
            dist.broadcast(buf, 0)
    metrics, tr, counter = collapse_metrics(net, train_x, train_y, **kw)
    te = extract(net, test_x, test_y, stats=False, **kw)
    tl, tc, tn, sl, sc, sn = all_reduce([tr.loss_sum, tr.correct, tr.count, te.loss_sum, te.correct, te.count], env)
    record = dict(train_loss=tl / tn, train_acc=tc / tn, test_loss=sl / sn, test_acc=sc / sn,
                  ncc_acc=counter.ncc_accuracy)
    record.update(metrics.as_dict())
    return record
