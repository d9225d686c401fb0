"""Train a network with a learned, fixed simplex-ETF or normalized head and track neural collapse.

The recipe is Papyan, Han & Donoho (2020) / Zhu et al. (2021): SGD with momentum 0.9, weight decay
5e-4, batch size 128, no data augmentation, learning rate divided by 10 at 1/3 and 2/3 of the epochs.
After each evaluated epoch the network is put in eval mode and the penultimate features of the
whole TRAINING set are extracted once, without gradients, into :class:`nclab.metrics.NCStats`
(exact, float64, mergeable); all metrics of REFERENCE.md section 3 are computed with the head's own
classifier (``head.classifier_weight()``, ``head.classifier_bias()``) on the features that
classifier sees (``head.metric_features(h)``, i.e. h/|h| for the normalized head), and nc4 comes
from a second pass (:class:`nclab.metrics.NC4Counter`) over the same features with the final class
means.  The same pass gives the training loss and accuracy in eval mode; the test set is evaluated
likewise.

Files in the run directory ``out``:

* ``config.json``   the :class:`TrainConfig` (plus the derived number of classes and milestones);
* ``log.jsonl``     one JSON object per epoch (see :data:`LOG_KEYS`; NC metrics use
                    :data:`nclab.metrics.METRIC_NAMES`; non-finite numbers are written as null);
* ``checkpoint.pt`` model, optimizer, scheduler, RNG states (torch, CUDA, numpy, python), epoch,
                    written atomically (temporary file + ``os.replace``) after every epoch;
* ``summary.json``  written at the end: final record, parameter counts, time, peak memory.

Exact resume.  The order of the training data in epoch e is a permutation drawn from a generator
seeded with ``seed + e`` (``torch.utils.data.DistributedSampler``'s rule, also with one process),
never from a global RNG, and everything else that changes during training is in the checkpoint; so
``--resume`` after an interruption reproduces the uninterrupted run's log numbers and final weights
bit for bit (on CPU; on GPU up to the nondeterminism of cuDNN kernels).

Several processes.  Under ``torchrun`` (env vars WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT)
:func:`train` initialises torch.distributed (gloo on CPU, nccl on GPU) and wraps the model in
DistributedDataParallel.  ``batch_size`` is the global batch: each of the P ranks takes
``batch_size / P`` samples of the same per-epoch permutation, so the union of the ranks' batches is
the single-process batch (batch norm uses each rank's half on CPU, SyncBatchNorm on GPU).  Evaluation is sharded (rank r takes samples r, r+P, ...: no sample
twice) and the statistics are merged exactly with ``NCStats.sync`` / ``NC4Counter.sync``; only rank
0 writes files and shows progress.

Example
-------
>>> from nclab.nets.train import TrainConfig, train                      # doctest: +SKIP
>>> summary = train(TrainConfig(model="mlp", head="etf", feature_dim=10, per_class=100,
...                             epochs=5, data_dir="../shared/data", out="runs/etf"))
>>> summary["final"]["train_acc"], summary["final"]["nc1"]
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import resource
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from nclab.io import json_ready, write_json_atomic
from nclab.metrics import NC4Counter, NCMetrics, NCStats

__all__ = [
    "TrainConfig",
    "train",
    "extract",
    "collapse_metrics",
    "make_optimizer",
    "build_model",
    "train_state_bytes",
    "Extraction",
    "lr_milestones",
    "eval_epochs",
    "read_log",
    "LOG_KEYS",
    "EVAL_SCHEDULES",
]

EVAL_SCHEDULES = ("every", "log")

#: Keys of every evaluated epoch's record in log.jsonl, besides the metric names.
LOG_KEYS = (
    "epoch",
    "lr",
    "train_loss_running",  # mean minibatch loss during the epoch (train mode)
    "train_loss",  # eval mode, whole training set
    "train_acc",
    "test_loss",
    "test_acc",
    "ncc_acc",  # accuracy of the nearest-class-mean rule on the training set
    "epoch_seconds",
    "eval_seconds",
    "total_seconds",
    "peak_memory_mb",
    "memory_kind",
)

#: Config fields that may differ between a run and its resumption.
_RESUME_FREE = ("resume", "stop_after", "device", "data_dir", "out", "download", "threads")

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
CONFIG = "config.json"
SUMMARY = "summary.json"


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """All options of ``nclab train`` (the CLI is a thin layer over this dataclass).

    Defaults are the papers' recipe (Papyan et al. 2020; Zhu et al. 2021): SGD, momentum 0.9,
    weight decay 5e-4, batch 128, lr 0.05 divided by 10 at 1/3 and 2/3 of ``epochs``.

    Fields
    ------
    dataset : "mnist" or "fashion-mnist" (:data:`nclab.nets.data.DATASETS`).
    model : "resnet18" (CIFAR-style, 3x3 stem) or "mlp".
    head : "learned", "etf" (fixed simplex ETF, a buffer) or "normalized" (unit W and h/|h|).
    feature_dim : penultimate dimension d (None: the backbone's own, 512 for both).
        An ETF head needs d >= K-1.
    tau : temperature of the normalized head: logits = tau * cosines, so with K = 10 the
        cross-entropy cannot go below log(1 + 9 exp(-10 tau/9)) (the normalized UFM's optimum,
        REFERENCE.md section 2): 1.38 at tau = 1, 1.3e-4 at the default tau = 10.
    bias : head bias (None: the head's default, learned True, etf False, normalized none).
    per_class : balanced training subset of n images per class (None: all); seeded by ``seed``.
    test_per_class : likewise for the test set (None: all of it).
    epochs, lr, momentum, weight_decay, batch_size : the optimiser (batch_size is global under DDP).
    eval_batch_size : batch of the evaluation passes (no gradients, so it can be large).
    eval_schedule : "every" epoch, or "log": about ``eval_points`` log-spaced epochs (always the last).
    device : "auto" (cuda if available), "cpu", "cuda" or "cuda:N".
    seed : model initialisation, head seed, data subset and the per-epoch data order.
    data_dir, download : where the data sets are (see :func:`nclab.nets.data.load_dataset`).
    out : run directory.  resume : continue from ``out/checkpoint.pt``.
    stop_after : stop (checkpointed) after this epoch although ``epochs`` is larger: a job that
        must fit a time limit continues later with ``resume``; the schedule still uses ``epochs``.
    threads : torch's intra-op CPU threads for this process (None: torch's default).  One thread
        per process is much faster than two when another process competes for the cores.
    etf_rotation : rotate the fixed ETF by the seed (:class:`nclab.nets.heads.ETFHead`: a
        rotation that fixes the all-ones vector).  Off by default, as in Zhu et al.'s code (the
        frame on the first K axes).  The backbones end with a ReLU, so features are non-negative;
        a general Haar rotation with d = K left a class outside the reach of the non-negative
        orthant (seed 0, K = d = 10: training accuracy stuck at 90%), which is why the head only
        rotates within the complement of the all-ones vector, where every class stays reachable.
    """

    dataset: str = "mnist"
    model: str = "resnet18"
    head: str = "learned"
    feature_dim: int | None = None
    tau: float = 10.0
    bias: bool | None = None
    per_class: int | None = None
    test_per_class: int | None = None
    epochs: int = 200
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    eval_batch_size: int = 1024
    eval_schedule: str = "every"
    eval_points: int = 30
    device: str = "auto"
    seed: int = 0
    data_dir: str = "../shared/data"
    download: bool = False
    out: str = "runs/train"
    resume: bool = False
    stop_after: int | None = None
    threads: int | None = None
    etf_rotation: bool = False

    def validate(self) -> "TrainConfig":
        """Check every field; raise ValueError naming the option, the value and what is allowed."""
        from nclab.nets.backbones import MODELS
        from nclab.nets.data import DATASETS
        from nclab.nets.heads import HEADS

        def choice(name, allowed):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")

        def integer(name, minimum, optional=False):
            value = getattr(self, name)
            if optional and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")

        def number(name, minimum, strict):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or value < minimum or (strict and value == minimum):
                raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {minimum}, got {value!r}")

        choice("dataset", DATASETS)
        choice("model", MODELS)
        choice("head", HEADS)
        choice("eval_schedule", EVAL_SCHEDULES)
        integer("feature_dim", 1, optional=True)
        integer("per_class", 1, optional=True)
        integer("test_per_class", 1, optional=True)
        integer("epochs", 1)
        integer("batch_size", 1)
        integer("eval_batch_size", 1)
        integer("eval_points", 1)
        integer("seed", 0)
        integer("stop_after", 1, optional=True)
        integer("threads", 1, optional=True)
        number("tau", 0.0, strict=True)
        number("lr", 0.0, strict=True)
        number("momentum", 0.0, strict=False)
        number("weight_decay", 0.0, strict=False)
        if self.head == "normalized" and self.bias:
            raise ValueError("the normalized head has no bias (logits are tau * cosines); drop --bias")
        device = str(self.device)
        if not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:")):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def lr_milestones(epochs: int) -> list[int]:
    """Epochs after which the learning rate is divided by 10: 1/3 and 2/3 of the run (Papyan et
    al. 2020), at least 1 and never repeated.  ``lr_milestones(200) == [66, 133]``."""
    return sorted({max(1, epochs // 3), max(1, (2 * epochs) // 3)})


def eval_epochs(config: TrainConfig) -> list[int]:
    """The epochs (1-based) after which metrics are computed: all of them, or about
    ``eval_points`` log-spaced ones (always including the first and the last)."""
    E = config.epochs
    if config.eval_schedule == "every" or config.eval_points >= E:
        return list(range(1, E + 1))
    pts = np.unique(np.round(np.logspace(0, math.log10(E), config.eval_points)).astype(int))
    return sorted(set(int(p) for p in pts) | {1, E})


# ---------------------------------------------------------------------------------------------
# processes and devices
# ---------------------------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we initialised the process group, so we destroy it

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def _resolve_device(spec: str, local_rank: int) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} was asked for but no CUDA GPU is available; use --device cpu")
        if spec == "cuda":
            spec = f"cuda:{local_rank}"
    return torch.device(spec)


def _init_distributed(device: torch.device) -> _Dist:
    """Join the process group set up by torchrun (or by the caller); single process otherwise."""
    if dist.is_available() and dist.is_initialized():
        return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), owns_group=True)


def _all_reduce(values: list[float], env: _Dist, device: torch.device, op=None) -> list[float]:
    """Sum (or ``op``) a few float64 numbers over the ranks."""
    if not env.active:
        return list(values)
    comm = device if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=comm)
    dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t.cpu().tolist()


def _peak_memory(device: torch.device) -> tuple[float, str]:
    """Peak memory in MiB: ``torch.cuda.max_memory_allocated`` on a GPU (reset every epoch), the
    process's peak resident set size (``getrusage``; never reset, so it is the peak so far) on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "cpu_peak_rss"


# ---------------------------------------------------------------------------------------------
# feature extraction
# ---------------------------------------------------------------------------------------------


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


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


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
    net = _unwrap(net)
    net.eval()
    device = torch.device(device)
    idx = torch.arange(rank, images.shape[0], world_size)
    acc = NCStats(num_classes, device=device) if stats else None
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    kept = []
    for chunk in idx.split(batch_size):
        x = images[chunk.to(images.device)].to(device, non_blocking=True)
        y = labels[chunk.to(labels.device)].to(device, non_blocking=True)
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

    Pass 1 (:func:`extract`) fills an :class:`NCStats` with ``head.metric_features(h)`` on every
    rank's shard; ``NCStats.sync`` merges them exactly; the metrics use the head's classifier
    ``head.classifier_weight()`` and ``head.classifier_bias()``.  Pass 2 feeds the same features
    (kept from pass 1 when they fit in :data:`KEEP_FEATURES_BYTES`, recomputed otherwise) to an
    :class:`NC4Counter` built from the global class means.  Returns the metrics, the pass-1
    extraction (loss/accuracy sums of this rank) and the synced counter (nearest-class-mean
    accuracy).  Equal to ``nclab.metrics.compute_metrics`` on the same features.
    """
    head = _unwrap(net).head
    device = torch.device(device)
    kw = dict(num_classes=num_classes, batch_size=batch_size, device=device, rank=rank, world_size=world_size)
    keep = (images.shape[0] // world_size + 1) * head.d * 4 <= KEEP_FEATURES_BYTES
    tr = extract(net, images, labels, keep_features=keep, **kw)
    tr.stats.sync()
    W, b = head.classifier_weight(), head.classifier_bias()
    res = tr.stats.compute(W, b)
    counter = NC4Counter(tr.stats.class_means, W, b, counts=tr.stats.counts)
    if keep:
        features, ys = tr.features, labels[tr.indices.to(labels.device)].to(device)
        for zb, yb in zip(features.split(batch_size), ys.split(batch_size)):
            counter.update(zb, yb)
    else:
        for chunk in torch.arange(rank, images.shape[0], world_size).split(batch_size):
            x = images[chunk.to(images.device)].to(device)
            y = labels[chunk.to(labels.device)].to(device)
            counter.update(head.metric_features(_unwrap(net).features(x)), y)
    counter.sync()
    return res.with_nc4(counter.compute()), tr, counter


#: Largest per-process feature matrix kept in memory for the nc4 pass (else it is recomputed).
KEEP_FEATURES_BYTES = 2 << 30


def _evaluate(net, train_x, train_y, test_x, test_y, K, config, device, env: _Dist) -> dict:
    """Training-set metrics and losses (eval mode) and test loss/accuracy, synced over the ranks."""
    kw = dict(num_classes=K, batch_size=config.eval_batch_size, device=device, rank=env.rank, world_size=env.world_size)
    if env.active:  # BatchNorm running statistics drift apart per rank between DDP's broadcasts
        for buf in _unwrap(net).buffers():
            dist.broadcast(buf, 0)
    metrics, tr, counter = collapse_metrics(net, train_x, train_y, **kw)
    te = extract(net, test_x, test_y, stats=False, **kw)
    tl, tc, tn, sl, sc, sn = _all_reduce([tr.loss_sum, tr.correct, tr.count, te.loss_sum, te.correct, te.count], env, device)
    record = dict(train_loss=tl / tn, train_acc=tc / tn, test_loss=sl / sn, test_acc=sc / sn, ncc_acc=counter.ncc_accuracy)
    record.update(metrics.as_dict())
    return record


# ---------------------------------------------------------------------------------------------
# files: atomic writes, log, checkpoint
# ---------------------------------------------------------------------------------------------


def _atomic_write(path: Path, write) -> None:
    """Write via ``write(file)`` to a temporary file beside ``path`` and rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _dumps(record: dict) -> str:
    """One strict-JSON log line (non-finite numbers become null)."""
    return json.dumps(json_ready(record), allow_nan=False)


def read_log(run_dir: str | Path) -> list[dict]:
    """The records of ``run_dir/log.jsonl``, in epoch order."""
    path = Path(run_dir) / LOG
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {path}; is {run_dir} a directory written by `nclab train`?")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def _save_checkpoint(path: Path, net, optimizer, scheduler, epoch: int, total_seconds: float, config) -> None:
    state = {
        "epoch": epoch,
        "model": _unwrap(net).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": _rng_state(),
        "total_seconds": total_seconds,
        "config": config.to_dict(),
    }
    _atomic_write(path, lambda f: torch.save(state, f))


def _check_resumable(config: TrainConfig, saved: dict, out: Path) -> None:
    diff = {
        k: (saved.get(k), v)
        for k, v in config.to_dict().items()
        if k not in _RESUME_FREE and saved.get(k) != v
    }
    if diff:
        shown = ", ".join(f"{k}: {a!r} in the run, {b!r} now" for k, (a, b) in diff.items())
        raise ValueError(f"cannot resume {out}: the options differ from the run's config.json ({shown})")


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------


def build_model(config: TrainConfig, num_classes: int = 10, in_channels: int = 1, image_size: int = 28):
    """The :class:`nclab.nets.backbones.Network` of ``config`` (model, head, d, tau, bias, ETF
    frame); its initial weights depend only on ``config.seed``."""
    from nclab.nets.backbones import build_network
    from nclab.nets.heads import ETFHead

    torch.manual_seed(config.seed)  # the global RNG too, for anything that draws from it later
    K = num_classes
    net = build_network(
        config.model,
        config.head,
        num_classes=K,
        feature_dim=config.feature_dim,
        in_channels=in_channels,
        image_size=image_size,
        tau=config.tau,
        seed=config.seed,
        head_bias=config.bias,
    )
    if isinstance(net.head, ETFHead) and not config.etf_rotation:
        # build_network rotates the frame by its seed; see TrainConfig.etf_rotation for why not here
        net.head = ETFHead(net.head.d, K, bias=net.head.bias is not None, seed=None)
    return net


def make_optimizer(net: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD; a normalized head's W lives on spheres, so it gets no weight decay (the retraction
    would undo it) and the documented Riemannian update (:func:`attach_riemannian_hooks`)."""
    from nclab.nets.heads import NormalizedHead, attach_riemannian_hooks

    sphere = [m.weight for m in net.modules() if isinstance(m, NormalizedHead)]
    sphere_ids = {id(p) for p in sphere}
    rest = [p for p in net.parameters() if p.requires_grad and id(p) not in sphere_ids]
    groups = [{"params": rest}]
    if sphere:
        groups.append({"params": sphere, "weight_decay": 0.0})
    opt = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    attach_riemannian_hooks(opt, net)
    return opt


def _load_data(config: TrainConfig):
    from nclab.nets.data import load_dataset, num_classes

    kw = dict(data_dir=config.data_dir, seed=config.seed, download=config.download)
    train_set = load_dataset(config.dataset, train=True, per_class=config.per_class, **kw)
    test_set = load_dataset(config.dataset, train=False, per_class=config.test_per_class, **kw)
    return train_set.tensors, test_set.tensors, num_classes(config.dataset)


def _progress(enabled: bool):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    )


def train(config: TrainConfig, progress: bool = True) -> dict:
    """Train as configured, logging NC metrics; returns the summary (also in ``out/summary.json``).

    Raises ValueError for bad options (before any data is read), FileNotFoundError when the data
    set is not where ``data_dir`` says (the message says how to get it), and ValueError when
    ``out`` already holds a run and ``resume`` is False.
    """
    config.validate()
    if config.threads:
        torch.set_num_threads(config.threads)
    device = _resolve_device(str(config.device), int(os.environ.get("LOCAL_RANK", 0)))
    env = _init_distributed(device)
    try:
        return _Run(config, device, env, progress and env.main).run()
    finally:
        if env.owns_group and dist.is_initialized():
            dist.destroy_process_group()


class _Run:
    """State of one training run; :meth:`run` is the loop."""

    def __init__(self, config: TrainConfig, device: torch.device, env: _Dist, progress: bool):
        self.config, self.device, self.env, self.show = config, device, env, progress
        self.out = Path(config.out)
        from nclab.nets.data import num_classes

        K = num_classes(config.dataset)
        # Build the network first: a bad head/dimension combination fails before data is read.
        self.net = build_model(config, K).to(device)
        (self.train_x, self.train_y), (self.test_x, self.test_y), self.K = _load_data(config)
        if self.K != K:  # pragma: no cover - data.py and num_classes disagree
            raise RuntimeError(f"{config.dataset}: num_classes says {K}, the data has {self.K}")
        if device.type == "cuda":  # MNIST-sized sets fit: no host-to-device copy per batch
            torch.backends.cudnn.benchmark = True  # fixed input size; GPU runs are not bitwise reproducible anyway
            self.train_x, self.train_y = self.train_x.to(device), self.train_y.to(device)
            self.test_x, self.test_y = self.test_x.to(device), self.test_y.to(device)
        if env.active and config.batch_size % env.world_size:
            raise ValueError(
                f"batch_size {config.batch_size} is the global batch and must be divisible by the "
                f"number of processes ({env.world_size})"
            )
        if env.active and device.type == "cuda":
            # batch statistics over the global batch, as in one process (SyncBatchNorm needs a GPU;
            # on CPU every rank normalises its own batch_size / P samples)
            self.net = nn.SyncBatchNorm.convert_sync_batchnorm(self.net)
        self.model = (
            nn.parallel.DistributedDataParallel(self.net, device_ids=[device] if device.type == "cuda" else None)
            if env.active
            else self.net
        )
        self.optimizer = make_optimizer(self.net, config)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, lr_milestones(config.epochs), gamma=0.1)
        from torch.utils.data.distributed import DistributedSampler

        self.sampler = DistributedSampler(
            range(self.train_x.shape[0]), num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=config.seed
        )
        self.start_epoch, self.total_seconds = 0, 0.0
        self.eval_at = set(eval_epochs(config))

    # -- set-up of the run directory ------------------------------------------------------------

    def _prepare_dir(self) -> None:
        """Fresh run: refuse to overwrite.  Resume: restore the checkpoint, trim the log to it.

        Every rank decides from the files as they are before anything is written (a barrier
        separates the decision from rank 0's writes), so all ranks agree."""
        config, out = self.config, self.out
        ckpt = out / CHECKPOINT
        resuming = config.resume and ckpt.is_file()
        clash = not config.resume and (ckpt.is_file() or (out / LOG).is_file())
        if self.env.active:
            dist.barrier()
        if clash:
            raise ValueError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
        if resuming:
            saved = json.loads((out / CONFIG).read_text()) if (out / CONFIG).is_file() else {}
            _check_resumable(config, saved, out)
            # on the CPU: RNG states must stay CPU tensors; load_state_dict moves the rest to the device
            state = torch.load(ckpt, map_location="cpu", weights_only=False)
            self.net.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            _set_rng_state(state["rng"])
            self.start_epoch, self.total_seconds = int(state["epoch"]), float(state["total_seconds"])
            if self.env.main:  # the log may hold an epoch written after the checkpoint's: drop it
                keep = [r for r in read_log(out) if r["epoch"] <= self.start_epoch] if (out / LOG).is_file() else []
                _atomic_write(out / LOG, lambda f: f.write("".join(_dumps(r) + "\n" for r in keep).encode()))
        elif self.env.main:
            out.mkdir(parents=True, exist_ok=True)
            (out / LOG).write_text("")
            cfg = config.to_dict() | {"num_classes": self.K, "lr_milestones": lr_milestones(config.epochs)}
            write_json_atomic(out / CONFIG, cfg)
        if self.env.active:
            dist.barrier()

    # -- one epoch ----------------------------------------------------------------------------

    def _train_epoch(self, epoch: int, bar, task) -> float:
        """One pass over the training set in the order of epoch ``epoch`` (0-based)."""
        config, device = self.config, self.device
        self.model.train()
        self.sampler.set_epoch(epoch)
        order = torch.as_tensor(list(iter(self.sampler)), dtype=torch.long)
        per_rank = config.batch_size // self.env.world_size
        batches = list(order.split(per_rank))
        if len(batches) > 1 and batches[-1].numel() == 1:
            batches.pop()  # a batch of one breaks BatchNorm in train mode (same on every rank)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        seen = 0
        if bar is not None:
            bar.reset(task, total=len(batches), description=f"epoch {epoch + 1}/{config.epochs}")
        for idx in batches:
            x = self.train_x[idx.to(self.train_x.device)].to(device, non_blocking=True)
            y = self.train_y[idx.to(self.train_y.device)].to(device, non_blocking=True)
            loss = F.cross_entropy(self.model(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()  # the normalized head's hooks project and retract here
            loss_sum += loss.detach().double() * y.numel()
            seen += y.numel()
            if bar is not None:
                bar.advance(task)
        total, count = _all_reduce([float(loss_sum), float(seen)], self.env, device)
        return total / count

    def run(self) -> dict:
        config, env, device = self.config, self.env, self.device
        self._prepare_dir()
        last = config.epochs if config.stop_after is None else min(config.epochs, config.stop_after)
        record = {}
        bar = _progress(self.show)
        with bar if bar is not None else nullcontext():
            task = bar.add_task("epoch", total=1, info="") if bar is not None else None
            for epoch in range(self.start_epoch, last):
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                t0 = time.perf_counter()
                lr = self.optimizer.param_groups[0]["lr"]
                running = self._train_epoch(epoch, bar, task)
                if not math.isfinite(running):
                    raise ValueError(f"training diverged: the loss is {running} in epoch {epoch + 1}; "
                                     f"lower --lr (now {config.lr})")
                self.scheduler.step()
                t1 = time.perf_counter()
                record = {"epoch": epoch + 1, "lr": lr, "train_loss_running": running}
                if epoch + 1 in self.eval_at:
                    record.update(_evaluate(self.model, self.train_x, self.train_y, self.test_x, self.test_y,
                                            self.K, config, device, env))
                    self.model.train()
                t2 = time.perf_counter()
                self.total_seconds += t2 - t0
                peak, kind = _peak_memory(device)
                (peak,) = _all_reduce([peak], env, device, op=dist.ReduceOp.MAX if env.active else None)
                record.update(epoch_seconds=t1 - t0, eval_seconds=t2 - t1, total_seconds=self.total_seconds,
                              peak_memory_mb=peak, memory_kind=kind)
                if env.main:
                    with open(self.out / LOG, "a") as f:
                        f.write(_dumps(record) + "\n")
                    _save_checkpoint(self.out / CHECKPOINT, self.net, self.optimizer, self.scheduler,
                                     epoch + 1, self.total_seconds, config)
                if bar is not None:
                    bar.update(task, info=_short(record))
                    if "nc1" in record:
                        bar.console.print(f"epoch {epoch + 1:4d}  {_short(record)}")
        if env.active:
            dist.barrier()  # the checkpoint is complete before anyone returns
        return self._summary(last)

    def _summary(self, last: int) -> dict:
        from nclab.nets.backbones import parameter_summary

        log = read_log(self.out) if (self.out / LOG).is_file() else []
        evaluated = [r for r in log if "nc1" in r]
        params = parameter_summary(self.net)
        summary = {
            "out": str(self.out),
            "config": self.config.to_dict(),
            "num_classes": self.K,
            "feature_dim": self.net.head.d,
            "epochs_done": last,
            "finished": last == self.config.epochs,
            "parameters_total": params["total"],  # a fixed ETF classifier's K*d included
            "parameters_trainable": params["trainable"],
            "parameters": params,
            "train_state_mb": train_state_bytes(self.net, self.optimizer) / 2**20,
            "total_seconds": self.total_seconds,
            "peak_memory_mb": max((r["peak_memory_mb"] for r in log), default=None),
            "memory_kind": _peak_memory(self.device)[1],
            "device": str(self.device),
            "world_size": self.env.world_size,
            "final": evaluated[-1] if evaluated else (log[-1] if log else {}),
        }
        if self.env.main:
            write_json_atomic(self.out / SUMMARY, summary)
        return summary


def train_state_bytes(net: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the training state: parameters, buffers, gradients and optimizer state (momentum).
    Unlike the process's peak memory this counts only what the model costs: a fixed ETF head adds
    its K x d buffer once, a learned one K x d parameters plus their gradient and momentum."""
    tensors = [*net.parameters(), *net.buffers(), *(p.grad for p in net.parameters() if p.grad is not None)]
    tensors += [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def _short(record: dict) -> str:
    parts = [f"loss {record['train_loss_running']:.4f}"]
    for key, fmt in (("train_acc", "train {:.4f}"), ("test_acc", "test {:.4f}"), ("nc1", "nc1 {:.3e}")):
        if record.get(key) is not None:
            parts.append(fmt.format(record[key]))
    return "  ".join(parts)
