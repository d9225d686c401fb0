"""Machine resources of the metrics: the memory left for a tile, and threads that do not fight.

* :func:`available_memory` -- bytes a computation may still take on a device: ``MemAvailable``
  of ``/proc/meminfo`` on the CPU, ``torch.cuda.mem_get_info`` on a GPU (None when unknown);
* :func:`auto_tile` -- the rows per tile of the K x K pairwise kernel
  (:mod:`nclab.metrics.pairwise`) so that its temporaries take a small fraction of that memory:
  peak memory O(K d + tile^2) whatever K is;
* :func:`single_thread` -- a context that runs dense LAPACK factorisations (``eigh``) on one
  thread.  Their reductions synchronise threads at every column; with another process on the
  cores the waits dominate (a 1000 x 1000 ``eigh`` takes 0.7 s on one thread, 6-8 s on two
  threads fighting a second job).

>>> auto_tile(100, "cpu") <= 100
True
"""

from __future__ import annotations

import contextlib
import math

import torch

__all__ = ["available_memory", "auto_tile", "single_thread", "MAX_TILE"]

#: The largest auto tile per device type.  On the CPU a 512 x 512 float64 tile (2 MiB) stays in
#: the caches, so the elementwise work after each Gram product is nearly free next to the product;
#: measured on 2 cores, K = 10,000, d = 256, the means' pass (cdnv, angles) 0.37-0.40 s with 512
#: rows, 0.43 s with 1024, 0.6-1.9 s with 2048 (the bare half Gram 0.27 s).  On a GPU larger
#: tiles amortise kernel launches.
MAX_TILE = {"cpu": 512, "cuda": 8192}

#: Fraction of the available memory the tile's temporaries may take.
MEMORY_FRACTION = 0.125

#: Tile-sized float64 temporaries of the pairwise kernel alive at once (the Gram tile and one
#: reused buffer, with margin).
TILE_TEMPORARIES = 4


def available_memory(device="cpu") -> int | None:
    """Bytes still available on ``device``: ``MemAvailable`` of /proc/meminfo on the CPU, the free
    memory of ``torch.cuda.mem_get_info`` on a CUDA device; None where neither can be read."""
    device = torch.device(device)
    try:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0])
        if device.type == "cpu":
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
    except (OSError, RuntimeError, ValueError, IndexError):
        return None
    return None


def auto_tile(K: int, device="cpu", *, itemsize: int = 8) -> int:
    """Rows per tile for K x K work on ``device``: at most K and :data:`MAX_TILE` (the device's
    fast size), and small enough that :data:`TILE_TEMPORARIES` tile^2 temporaries of ``itemsize``
    bytes take at most :data:`MEMORY_FRACTION` of :func:`available_memory` (the cap alone when
    that is unknown).  At least 64 rows."""
    device = torch.device(device)
    cap = MAX_TILE.get(device.type, MAX_TILE["cpu"])
    avail = available_memory(device)
    if avail is not None:
        cap = min(cap, int(math.sqrt(MEMORY_FRACTION * avail / (TILE_TEMPORARIES * itemsize))))
    return max(1, min(int(K), max(cap, 64)))


@contextlib.contextmanager
def single_thread(device="cpu"):
    """Run the block on one intra-op thread (CPU tensors only; restored afterwards)."""
    if torch.device(device).type != "cpu" or torch.get_num_threads() == 1:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
