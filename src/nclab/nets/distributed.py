"""Processes and devices of a training run: where it computes, and how its processes talk.

This module owns the device decision, written once:

* :func:`resolve_device` turns ``TrainConfig.device`` into a torch device ("auto": the GPU if
  there is one; "cuda": this process's GPU, ``cuda:LOCAL_RANK``);
* :func:`nclab.distributed.backend_plan` (re-exported here) pairs a compute device with the
  torch.distributed backend and the device of its collectives; it is the one owner of that
  decision, shared with the metrics' sync.

:func:`init_distributed` joins the process group that ``torchrun`` describes (WORLD_SIZE, RANK,
LOCAL_RANK, MASTER_ADDR/PORT) or one the caller initialised, and returns a :class:`DistEnv`;
:func:`all_reduce` sums (or maxes) a few numbers over the ranks; :func:`unwrap` takes a model out
of its DistributedDataParallel wrapper.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from nclab.distributed import backend_plan

__all__ = ["DistEnv", "resolve_device", "backend_plan", "init_distributed", "all_reduce", "unwrap"]


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """The compute device of ``spec`` ("auto", "cpu", "cuda", "cuda:N") for process ``local_rank``
    of its machine.  Raises ValueError when a GPU is asked for and none is available."""
    spec = str(spec)
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} was asked for but no CUDA GPU is available; use --device cpu")
        if spec == "cuda":
            spec = f"cuda:{local_rank}"
    return torch.device(spec)


@dataclass
class DistEnv:
    """This process's place in the run: its rank among ``world_size``, its compute ``device`` and
    the backend and device of its collectives (see :func:`backend_plan`)."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    comm_device: torch.device | None = None
    owns_group: bool = False  # we initialised the process group, so we destroy it

    @property
    def main(self) -> bool:
        """The process that writes files and reports progress (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    def close(self) -> None:
        """Destroy the process group if :func:`init_distributed` created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def init_distributed(device_spec: str = "auto") -> DistEnv:
    """Resolve the device and join the process group set up by torchrun (or by the caller).

    A single process (no group, WORLD_SIZE unset or 1) gets ``DistEnv(device)``.  Under torchrun
    the group is initialised with the backend of :func:`backend_plan` (nccl for a GPU run, after
    making ``device`` this process's current CUDA device; gloo on the CPU)."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = resolve_device(device_spec, local_rank)
    if dist.is_available() and dist.is_initialized():
        backend, comm = backend_plan(device, dist.get_backend())
        return DistEnv(device, dist.get_rank(), dist.get_world_size(), local_rank, backend, comm)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv(device, local_rank=local_rank)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend, comm = backend_plan(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return DistEnv(device, dist.get_rank(), dist.get_world_size(), local_rank, backend, comm, owns_group=True)


def all_reduce(values: list[float], env: DistEnv, op=None) -> list[float]:
    """Sum (or reduce with ``op``, e.g. ``dist.ReduceOp.MAX``) a few float64 numbers over the
    ranks; the numbers themselves in a single process."""
    if not env.active:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=env.comm_device)
    dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t.cpu().tolist()


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
