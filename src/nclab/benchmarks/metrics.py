"""Benchmark of the one-pass NC statistics (issue: foundation).

Times one full pass of ``NCStats.update`` over float32 features plus ``compute`` (every metric but
nc4, with a classifier) and prints it as a ratio to

  (a) the floor: one float32 GEMM X_b^T X_b per batch over the same data in the same batches;
  (b) a straightforward float64 two-pass implementation: class means, then the per-class centred
      scatter with one matrix product per class, then the pseudo-inverse of Sigma_B.

All three run in the same process, interleaved and repeated, and the table reports the median of
each, so machine noise affects them alike.  The accuracy column compares nc1 and nc1_trace_ratio
with a float64 two-pass reference on the same float32 values, shifted by a common offset of 1e5
times the within-class spread (the cancellation test's setting).

    python -m nclab.benchmarks.metrics             # N=100,000, d=2048, K=1000 (or: nclab bench)
    python benchmarks/metrics.py --n 20000 --d 512 --k 100 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from nclab.metrics import NCStats


def make_data(N: int, d: int, K: int, seed: int, offset_scale: float):
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(K, d, generator=gen)
    labels = torch.randint(0, K, (N,), generator=gen)
    feats = means[labels] + 0.1 * torch.randn(N, d, generator=gen)
    offset = offset_scale * 0.1 * torch.randn(d, generator=gen)  # 1e5 x the within-class spread
    W = torch.randn(K, d, generator=gen)
    return (feats + offset).float(), labels, W


def floor_pass(X, batch):
    acc = None
    for xb in X.split(batch):
        g = xb.T @ xb
        acc = g if acc is None else acc.add_(g)
    return acc


def nclab_pass(X, y, K, batch, W):
    stats = NCStats(K)
    for xb, yb in zip(X.split(batch), y.split(batch)):
        stats.update(xb, yb)
    return stats.compute(classifier=W)


def two_pass_float64(X, y, K):
    """The straightforward float64 reference: means, then one centred product per class."""
    X64 = X.double()
    order = torch.argsort(y, stable=True)
    counts = torch.bincount(y, minlength=K)
    Xs = X64[order]
    d = X.shape[1]
    means = torch.zeros(K, d, dtype=torch.float64)
    scatter = torch.zeros(d, d, dtype=torch.float64)
    start = 0
    for k, c in enumerate(counts.tolist()):
        block = Xs[start : start + c]
        means[k] = block.mean(0)
        start += c
    start = 0
    for k, c in enumerate(counts.tolist()):
        block = Xs[start : start + c] - means[k]
        scatter += block.T @ block
        start += c
    N = X.shape[0]
    Mc = means - means.mean(0)
    sigma_w = scatter / N
    sigma_b = Mc.T @ Mc / K
    pinv = torch.linalg.pinv(sigma_b, hermitian=True, rtol=max(K, d) * torch.finfo(torch.float64).eps)
    nc1 = float(torch.trace(sigma_w @ pinv)) / K
    ratio = float(torch.trace(sigma_w) / torch.trace(sigma_b))
    return nc1, ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    console = Console()
    console.print(
        f"N={args.n:,} d={args.d} K={args.k} batch={args.batch} float32, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    X, y, W = make_data(args.n, args.d, args.k, args.seed, offset_scale=1e5)
    times = {"floor": [], "nclab": [], "two_pass": []}
    res = ref = None
    for _ in range(args.repeats):
        t = time.perf_counter(); floor_pass(X, args.batch); times["floor"].append(time.perf_counter() - t)
        t = time.perf_counter(); res = nclab_pass(X, y, args.k, args.batch, W); times["nclab"].append(time.perf_counter() - t)
        t = time.perf_counter(); ref = two_pass_float64(X, y, args.k); times["two_pass"].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    rel_nc1 = abs(res.nc1 - ref[0]) / abs(ref[0])
    rel_ratio = abs(res.nc1_trace_ratio - ref[1]) / abs(ref[1])

    table = Table(title="one pass of update + compute (median of %d)" % args.repeats)
    for col in ("implementation", "seconds", "/ floor", "/ nclab"):
        table.add_column(col, justify="right" if col != "implementation" else "left")
    names = {"floor": "floor: float32 X^T X per batch", "nclab": "nclab NCStats (update + compute)",
             "two_pass": "float64 two-pass reference"}
    for key in ("floor", "nclab", "two_pass"):
        table.add_row(names[key], f"{med[key]:.2f}", f"{med[key] / med['floor']:.2f}x", f"{med[key] / med['nclab']:.2f}x")
    console.print(table)
    console.print(
        f"accuracy vs float64 two-pass (common offset 1e5 x spread): nc1 rel. error {rel_nc1:.2e}, "
        f"trace ratio rel. error {rel_ratio:.2e}"
    )
    if args.json:
        out = {"args": vars(args) | {"json": str(args.json)}, "seconds": med, "all_seconds": times,
               "ratio_to_floor": med["nclab"] / med["floor"], "speedup_vs_two_pass": med["two_pass"] / med["nclab"],
               "nc1_rel_error": rel_nc1, "trace_ratio_rel_error": rel_ratio}
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=2))
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
