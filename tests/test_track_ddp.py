"""nclab.track under torch.distributed: two gloo processes, each tracking its own shard of the
data through a DistributedDataParallel wrapper, get the metrics of one process that sees every
batch (1e-10 relative; the same batches, so the features are the same numbers and only the
float64 merge order differs)."""

from __future__ import annotations

import math
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torchvision.models import resnet18

from nclab.metrics import METRIC_NAMES
from nclab.track import track

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model():
    torch.manual_seed(0)
    return resnet18(weights=None, num_classes=10)


def _batches():
    """Eight batches of 6 images of 3 x 16 x 16; rank r takes batches r, r + 2, ... (classes split
    unevenly over the ranks)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(48, 3, 16, 16, generator=g)
    y = torch.randint(0, 10, (48,), generator=g)
    y[:10] = torch.arange(10)  # every class present
    return list(zip(x.split(6), y.split(6)))


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(_model())
        shard = _batches()[rank::WORLD]
        if rank == 1:
            shard = shard[:-1]  # ranks with different numbers of batches
        res = track(ddp, shard, nc4=True)
        torch.save(res.as_dict() | {"num_samples": res.num_samples}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_equal_one_process(tmp_path, one_thread):
    # forked, not spawned: the children inherit the imports (seconds each on a loaded machine); they
    # run one intra-op thread, as DataLoader workers do, so no OpenMP pool crosses the fork
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True, start_method="fork")
    batches = _batches()
    used = batches[0::WORLD] + batches[1::WORLD][:-1]
    single = track(_model(), used, nc4=True).as_dict()
    for r in range(WORLD):
        got = torch.load(tmp_path / f"rank{r}.pt", weights_only=True)
        assert got["num_samples"] == 42
        for name in METRIC_NAMES:
            assert math.isclose(got[name], single[name], rel_tol=1e-10, abs_tol=1e-13), (r, name)
