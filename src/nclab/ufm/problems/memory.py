"""How much memory a UFM problem will need, checked before anything is allocated.

A solve holds the point and a few dozen vectors of its size (the solver's memory, trial points,
the per-point caches' gradients) and, for the logit problems, a handful of N x K arrays (logits,
softmax and the loss gradient of two cached points, the temporaries of an evaluation and of a
Hessian-vector product).  :func:`estimate_bytes` counts

    8 bytes x (24 D + 8 N K) + 8 N        (D variables, N samples, K classes; the sphere: n x n),

an upper estimate for every nclab solver, and :func:`check_memory` refuses a problem whose
estimate exceeds the limit (default: the memory the operating system reports as available now)
with both numbers in the message, before the problem allocates its first array.

>>> estimate_bytes("ce", dict(K=4, n=5, d=4, class_sizes=None))[0] < 2**20
True
"""

from __future__ import annotations

import math
import numbers
import os

import torch

__all__ = ["estimate_bytes", "available_memory", "check_memory"]

_GIB = 2**30


def _size(b: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= 0.1 * scale:
            return f"{b / scale:,.1f} {unit}"
    return f"{b:,.0f} bytes"


def _positive_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1


def estimate_bytes(loss: str, opts: dict) -> tuple[int, str] | None:
    """``(bytes, what)`` for the problem of ``make_problem(loss, **opts)`` (options already merged
    with the defaults), or None when the sizes are not valid integers yet (the problem's own
    validation then reports them)."""
    if loss == "sphere":
        n, d = opts.get("n_points"), opts.get("d")
        if not (_positive_int(n) and _positive_int(d)):
            return None
        D, logits, N = n * d, n * n, n
    else:
        K, d = opts.get("K"), opts.get("d")
        sizes = opts.get("class_sizes")
        if sizes is not None:
            try:
                N = int(sum(int(s) for s in sizes))
            except (TypeError, ValueError):
                return None
        else:
            n = opts.get("n")
            if not _positive_int(n):
                return None
            N = int(K) * int(n) if _positive_int(K) else 0
        if not (_positive_int(K) and _positive_int(d) and N >= 1):
            return None
        D, logits = (K + N) * d + K, N * K
    total = 8 * (24 * D + 8 * logits) + 8 * N
    return total, f"{D:,} variables and {logits:,} logits"


def available_memory(device=None) -> int | None:
    """Bytes of memory available now (Linux: MemAvailable of /proc/meminfo; elsewhere the free
    physical pages; on a CUDA ``device`` the GPU's free memory), or None where the system does not
    say."""
    if device is not None and torch.device(device).type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        except (RuntimeError, AssertionError):
            return None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(loss: str, opts: dict, memory_limit: float | None = None, *, device=None, dtype=None) -> None:
    """Raise ValueError when the estimate exceeds ``memory_limit`` GiB (None: the available
    memory of ``device``; ``math.inf``: never).  The estimate is for float64; a float32 problem
    needs half of it."""
    if memory_limit is not None:
        if isinstance(memory_limit, bool) or not isinstance(memory_limit, numbers.Real) or not memory_limit > 0:
            raise ValueError(f"memory_limit must be a number of GiB > 0, got {memory_limit!r}")
        if math.isinf(memory_limit):
            return
    est = estimate_bytes(loss, opts)
    if est is None:
        return
    need, what = est
    if dtype is not None and torch.finfo(dtype).bits == 32:
        need //= 2
    if memory_limit is None:
        avail = available_memory(device)
        if avail is None:
            return
        limit, source = avail, "available"
    else:
        limit, source = memory_limit * _GIB, "allowed by memory_limit"
    if need > limit:
        raise ValueError(
            f"this {loss} problem needs about {_size(need)} of memory ({what}), more than the "
            f"{_size(limit)} {source}; make it smaller, or raise the limit with "
            "memory_limit=GIB (--memory-limit GIB)"
        )
