"""The one device decision of torch.distributed in nclab: which backend a process uses and where
the tensors of its collectives live.

A CUDA device talks nccl through CUDA tensors; anything else talks gloo through CPU tensors; a
process group that someone else initialised keeps its backend, with the matching device.  Both the
metrics' exact sync (:meth:`nclab.metrics.NCStats.sync`, :meth:`nclab.metrics.NC4Counter.sync`) and
the training runs (:mod:`nclab.nets.distributed`) ask here.

>>> backend_plan(torch.device("cpu"))
('gloo', device(type='cpu'))
"""

from __future__ import annotations

import torch

__all__ = ["backend_plan", "collective_device"]


def backend_plan(device: torch.device, backend: str | None = None) -> tuple[str, torch.device]:
    """``(backend, comm_device)`` for a process computing on ``device``.

    Without ``backend``: nccl for a CUDA device, gloo otherwise.  The collectives of nccl exchange
    CUDA tensors (on ``device``), those of gloo CPU tensors; with ``backend`` given (the backend of
    an existing group) only the second half applies."""
    device = torch.device(device)
    if backend is None:
        backend = "nccl" if device.type == "cuda" else "gloo"
    return backend, (device if backend == "nccl" else torch.device("cpu"))


def collective_device(group=None) -> torch.device:
    """Where the buffers of an all-reduce over ``group`` (an initialised torch.distributed group;
    None: the default one) must live: this process's current GPU under nccl, else the CPU."""
    import torch.distributed as dist

    backend = dist.get_backend(group)
    compute = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    return backend_plan(compute, backend)[1]
