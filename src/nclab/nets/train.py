"""Train a network with a learned, fixed simplex-ETF or normalized head and track neural collapse.

This module owns the training loop (:func:`train`) and what it builds: the network
(:func:`build_model`), the optimizer (:func:`make_optimizer`) and the measure of the training
state's size (:func:`train_state_bytes`).  The options are :class:`nclab.nets.config.TrainConfig`,
the evaluation is :mod:`nclab.nets.evaluate`, the files are :mod:`nclab.nets.rundir`, processes and
devices are :mod:`nclab.nets.distributed`; the names a user needs are re-exported here.

The recipe is Papyan, Han & Donoho (2020) / Zhu et al. (2021): SGD with momentum 0.9, weight decay
5e-4, batch size 128, no data augmentation, learning rate divided by 10 at 1/3 and 2/3 of the epochs.
After each evaluated epoch the network is put in eval mode and the penultimate features of the
whole TRAINING set are extracted once, without gradients, into :class:`nclab.metrics.NCStats`, and
all metrics of REFERENCE.md section 3 are computed (:func:`nclab.nets.evaluate.collapse_metrics`).
The test set is evaluated likewise.  Nothing here prints: progress goes to the optional callbacks
``on_batch`` and ``on_epoch`` (the command line draws its progress bar from them).

Exact resume.  The order of the training data in epoch e is a permutation drawn from a generator
seeded with ``seed + e`` (``torch.utils.data.DistributedSampler``'s rule, also with one process),
never from a global RNG, and everything else that changes during training is in the checkpoint; so
``resume`` after an interruption reproduces the uninterrupted run's log numbers and final weights
bit for bit (on CPU, with the same number of torch threads; on GPU up to the nondeterminism of
cuDNN kernels).  The checkpoint is verified before it is loaded, and loaded weights-only
(:mod:`nclab.nets.rundir`); a larger ``epochs`` extends a run without changing the learning rate
of the epochs already trained (:func:`nclab.nets.config.plan_resume`).

Several processes.  Under ``torchrun`` (env vars WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT)
:func:`train` initialises torch.distributed (gloo on CPU, nccl on GPU) and wraps the model in
DistributedDataParallel.  ``batch_size`` is the global batch: each of the P ranks takes
``batch_size / P`` samples of the same per-epoch permutation, so the union of the ranks' batches is
the single-process batch (batch norm uses each rank's part on CPU, SyncBatchNorm on GPU).
Evaluation is sharded and merged exactly; only rank 0 writes files and calls the callbacks.

Example
-------
>>> from nclab.nets.train import TrainConfig, train                      # doctest: +SKIP
>>> summary = train(TrainConfig(model="mlp", head="etf", feature_dim=10, per_class=100,  # doctest: +SKIP
...                             epochs=5, data_dir="../shared/data", out="runs/etf"),
...                 on_epoch=lambda record: print(record["epoch"], record.get("nc1")))
>>> summary["final"]["train_acc"], summary["final"]["nc1"]                # doctest: +SKIP
"""

from __future__ import annotations

import math
import resource
from collections import Counter
import sys
import time
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from nclab.nets.config import EVAL_SCHEDULES, TrainConfig, eval_epochs, lr_milestones, plan_resume, schedule_milestones
from nclab.nets.distributed import DistEnv, all_reduce, init_distributed
# evaluate and rundir names are re-exported: what the former single module offered stays importable here
from nclab.nets.evaluate import KEEP_FEATURES_BYTES, Extraction, collapse_metrics, evaluate, extract  # noqa: F401
from nclab.nets.rundir import CHECKPOINT, CONFIG, LOG, LOG_KEYS, SUMMARY, RunDir, read_log  # noqa: F401

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

#: ``on_batch(progress)`` gets a dict with ``epoch`` (1-based), ``epochs`` (of the schedule),
#: ``until`` (the last epoch this call trains), ``batch`` (1-based) and ``batches`` (of the epoch);
#: ``on_epoch(record)`` gets the epoch's log record (:data:`LOG_KEYS`, metrics on evaluated epochs).
Callback = Callable[[dict], None]


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


def train_state_bytes(net: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the training state: parameters, buffers, gradients and optimizer state (momentum).
    Unlike the process's peak memory this counts only what the model costs: a fixed ETF head adds
    its K x d buffer once, a learned one K x d parameters plus their gradient and momentum."""
    tensors = [*net.parameters(), *net.buffers(), *(p.grad for p in net.parameters() if p.grad is not None)]
    tensors += [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def _peak_memory(device: torch.device) -> tuple[float, str]:
    """Peak memory in MiB: ``torch.cuda.max_memory_allocated`` on a GPU (reset every epoch), the
    process's peak resident set size (``getrusage``; never reset, so it is the peak so far) on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "cpu_peak_rss"


def _load_data(config: TrainConfig):
    from nclab.nets.data import load_dataset, num_classes

    kw = dict(data_dir=config.data_dir, seed=config.seed, download=config.download)
    train_set = load_dataset(config.dataset, train=True, per_class=config.per_class, **kw)
    test_set = load_dataset(config.dataset, train=False, per_class=config.test_per_class, **kw)
    return train_set.tensors, test_set.tensors, num_classes(config.dataset)


def train(config: TrainConfig, *, on_epoch: Callback | None = None, on_batch: Callback | None = None) -> dict:
    """Train as configured, logging NC metrics; returns the summary (also in ``out/summary.json``).

    ``on_batch`` and ``on_epoch`` (rank 0 only; see :data:`Callback`) report progress after
    every training batch and after every epoch (its log record, once it is written).

    Raises ValueError for bad options (before any data is read), FileNotFoundError when the data
    set is not where ``data_dir`` says (the message says how to get it), and ValueError when
    ``out`` already holds a run and ``resume`` is False, or when ``resume`` finds a damaged or
    inconsistent run folder, changed options or an extension that would rewrite the schedule's
    past (no file is changed then).
    """
    config.validate()
    if config.threads:
        torch.set_num_threads(config.threads)
    env = init_distributed(str(config.device))
    try:
        run = _Run(config, env)
        return run.run(on_epoch if env.main else None, on_batch if env.main else None)
    finally:
        env.close()


class _Run:
    """State of one training run; :meth:`run` is the loop."""

    def __init__(self, config: TrainConfig, env: DistEnv):
        self.config, self.env, self.device = config, env, env.device
        self.dir = RunDir(config.out)
        device = env.device
        from nclab.nets.data import input_shape, num_classes

        K = num_classes(config.dataset)
        channels, size = input_shape(config.dataset)  # (1, 28) MNIST / Fashion-MNIST, (3, 32) CIFAR-10
        # Build the network first: a bad head/dimension combination fails before data is read.
        self.net = build_model(config, K, channels, size).to(device)
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
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, schedule_milestones(config), gamma=0.1)
        from torch.utils.data.distributed import DistributedSampler

        self.sampler = DistributedSampler(
            range(self.train_x.shape[0]), num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=config.seed
        )
        self.start_epoch, self.total_seconds = 0, 0.0
        self.eval_at = set(eval_epochs(config))

    # -- set-up of the run directory ------------------------------------------------------------

    def _prepare_dir(self) -> None:
        """Fresh run: refuse to overwrite.  Resume: verify the folder and the checkpoint
        (:meth:`RunDir.resume_state`: any inconsistency is refused before a file changes), check
        the options and plan an extension (:func:`nclab.nets.config.plan_resume`), restore the
        checkpoint, trim the log to it and record a new length in config.json.

        ``resume`` with no run in ``out`` (no folder, or no log and no checkpoint) starts one:
        Python callers such as :func:`nclab.nets.reproduce.reproduce_heads` use it as "start or
        continue"; the command line refuses ``--resume`` there (:meth:`RunDir.saved_config`).

        Every rank decides from the files as they are before anything is written (a barrier
        separates the decision from rank 0's writes), so all ranks agree."""
        config, rundir = self.config, self.dir
        resumed = rundir.resume_state() if config.resume and rundir.holds_run() else None
        clash = not config.resume and rundir.holds_run()
        if self.env.active:
            dist.barrier()
        if clash:
            raise ValueError(f"{rundir.path} already holds a training run; pass --resume to continue it or "
                             "choose another --out")
        if resumed is not None and resumed.state is not None:
            saved = resumed.config
            config = self.config = plan_resume(config, saved, rundir.path, resumed.epoch)
            self.scheduler.milestones = Counter(schedule_milestones(config))
            self.eval_at = set(eval_epochs(config))
            self.start_epoch, self.total_seconds = rundir.restore(resumed, self.net, self.optimizer, self.scheduler)
            if self.env.main:
                rundir.trim_log(self.start_epoch)  # the log may hold an epoch written after the checkpoint's
                if config.epochs != saved.get("epochs") or config.milestones != saved.get("milestones"):
                    rundir.write_config(saved | {"epochs": config.epochs, "milestones": config.milestones,
                                                 "lr_milestones": schedule_milestones(config)})
        elif resumed is not None:  # the run's first epoch never finished: start it again, as configured there
            config = self.config = plan_resume(config, resumed.config, rundir.path, 0)
            if self.env.main:
                rundir.start(config.to_dict() | {"num_classes": self.K, "lr_milestones": schedule_milestones(config)})
        elif self.env.main:  # a fresh run
            rundir.start(config.to_dict() | {"num_classes": self.K, "lr_milestones": schedule_milestones(config)})
        if self.env.active:
            dist.barrier()

    # -- one epoch ----------------------------------------------------------------------------

    def _train_epoch(self, epoch: int, until: int, on_batch: Callback | None) -> float:
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
        for i, idx in enumerate(batches):
            x = self.train_x[idx.to(self.train_x.device)].to(device, non_blocking=True)
            y = self.train_y[idx.to(self.train_y.device)].to(device, non_blocking=True)
            loss = F.cross_entropy(self.model(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()  # the normalized head's hooks project and retract here
            loss_sum += loss.detach().double() * y.numel()
            seen += y.numel()
            if on_batch is not None:
                on_batch({"epoch": epoch + 1, "epochs": config.epochs, "until": until, "batch": i + 1,
                          "batches": len(batches)})
        total, count = all_reduce([float(loss_sum), float(seen)], self.env)
        return total / count

    def run(self, on_epoch: Callback | None = None, on_batch: Callback | None = None) -> dict:
        self._prepare_dir()  # may extend the run: self.config is the one to train
        config, env, device = self.config, self.env, self.device
        last = config.epochs if config.stop_after is None else min(config.epochs, config.stop_after)
        for epoch in range(self.start_epoch, last):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            running = self._train_epoch(epoch, last, on_batch)
            if not math.isfinite(running):
                raise ValueError(f"training diverged: the loss is {running} in epoch {epoch + 1}; "
                                 f"lower --lr (now {config.lr})")
            self.scheduler.step()
            t1 = time.perf_counter()
            record = {"epoch": epoch + 1, "lr": lr, "train_loss_running": running}
            if epoch + 1 in self.eval_at:
                record.update(evaluate(self.model, self.train_x, self.train_y, self.test_x, self.test_y,
                                       self.K, config.eval_batch_size, env))
                self.model.train()
            t2 = time.perf_counter()
            self.total_seconds += t2 - t0
            peak, kind = _peak_memory(device)
            (peak,) = all_reduce([peak], env, op=dist.ReduceOp.MAX if env.active else None)
            record.update(epoch_seconds=t1 - t0, eval_seconds=t2 - t1, total_seconds=self.total_seconds,
                          peak_memory_mb=peak, memory_kind=kind)
            if env.main:
                self.dir.append_log(record)
                self.dir.save_checkpoint(self.net, self.optimizer, self.scheduler, epoch + 1, self.total_seconds,
                                         config.to_dict())
            if on_epoch is not None:
                on_epoch(record)
        if env.active:
            dist.barrier()  # the checkpoint is complete before anyone returns
        return self._summary(last)

    def _summary(self, last: int) -> dict:
        from nclab.nets.backbones import parameter_summary

        log = self.dir.read_log() if self.dir.has_log() else []
        evaluated = [r for r in log if "nc1" in r]
        params = parameter_summary(self.net)
        summary = {
            "out": str(self.dir.path),
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
            self.dir.write_summary(summary)
        return summary
