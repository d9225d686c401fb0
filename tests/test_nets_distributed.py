"""nclab.nets.distributed: the one device decision and the single-process environment.

Oracles: the rule itself (nccl <-> CUDA tensors, gloo <-> CPU tensors), written out by hand.
(Two processes: test_nets_ddp.py.)
"""

from __future__ import annotations

import pytest
import torch

from nclab.nets.distributed import DistEnv, all_reduce, backend_plan, init_distributed, resolve_device, unwrap


def test_backend_plan():
    assert backend_plan(torch.device("cpu")) == ("gloo", torch.device("cpu"))
    assert backend_plan(torch.device("cuda:1")) == ("nccl", torch.device("cuda:1"))
    # a group someone else initialised keeps its backend; gloo collectives take CPU tensors
    assert backend_plan(torch.device("cuda:0"), "gloo") == ("gloo", torch.device("cpu"))


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA GPU is available; use --device cpu"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda:1")
    assert resolve_device("cuda:3", local_rank=1) == torch.device("cuda:3")


def test_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    env = init_distributed("cpu")
    assert env == DistEnv(torch.device("cpu")) and env.main and not env.active
    assert all_reduce([1.0, 2.5], env) == [1.0, 2.5]
    net = torch.nn.Linear(2, 2)
    assert unwrap(net) is net
    env.close()  # nothing to destroy


def test_the_collective_device_is_decided_in_one_place():
    """nclab.distributed owns the nccl -> CUDA / gloo -> CPU decision; nets re-exports it and the
    metrics' sync asks it (no second copy of the rule)."""
    import inspect

    import nclab.distributed
    import nclab.metrics.nc4
    import nclab.metrics.stats
    import nclab.nets.distributed

    assert nclab.nets.distributed.backend_plan is nclab.distributed.backend_plan
    for module in (nclab.metrics.stats, nclab.metrics.nc4, nclab.nets.distributed):
        assert '"nccl"' not in inspect.getsource(module)
    assert nclab.distributed.backend_plan(torch.device("cpu")) == ("gloo", torch.device("cpu"))
    assert nclab.distributed.backend_plan(torch.device("cuda", 1)) == ("nccl", torch.device("cuda", 1))
    assert nclab.distributed.backend_plan(torch.device("cuda", 0), "gloo") == ("gloo", torch.device("cpu"))
