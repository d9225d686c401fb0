"""Benchmark of the NC metrics at research scale: ratios to the float32 GEMM floors, in one run.

Two modes (``--mode``):

``pass`` (default; issue 11 goal 1)
    One pass of ``NCStats.update`` over float32 features plus ``compute`` (every metric but nc4,
    with a classifier), against (a) the floor: one float32 GEMM ``X_b^T X_b`` per batch over the
    same batches, and (b) a straightforward float64 two-pass implementation (class means, then
    one centred product per class, then the pseudo-inverse of Sigma_B).  Rounds are interleaved
    and the table reports the medians; ``compute()``'s share of the pass is printed.  The
    accuracy line compares nc1 and the trace ratio with the float64 two-pass on the same values
    (a common offset of 1e5 times the within-class spread).

``all`` (goal 2)
    Every metric including nc4: the statistics pass, ``compute()`` and the nc4 pass
    (:class:`~nclab.metrics.NC4Counter`), against the float32 GEMM floors of the same shapes:
    ``X_b^T [X_b, 1]`` per batch (N d (d+1)), ``X_b W^T`` and ``X_b M^T`` in the counter's row
    blocks (N d 2K) and the three K x K Grams ``M M^T``, ``W W^T``, ``W M^T`` in tiles (3 K^2 d).
    Prints each floor, each pass, the ratio of the total to the sum of the floors, and the peak
    memory: on the CPU the growth of the process's peak RSS (``resource.getrusage``
    ``ru_maxrss``) during a first, untimed run of the metrics, before any floor ran; on a GPU
    ``torch.cuda.max_memory_allocated`` during that run.

Features are made batch by batch (class means plus noise, generated on ``--device`` from a seed
per batch); with ``--stream`` they are never all in memory (each pass regenerates them, outside
the timed region), otherwise they are made once.  The load average is printed with the results:
the machines these run on are shared, so only ratios measured in the same run mean anything.

    python benchmarks/metrics.py                                   # goal 1: N=100,000 d=2048 K=1000
    python benchmarks/metrics.py --mode all --K 10000 --d 256 --N 100000
    python benchmarks/metrics.py --mode all --K 50000 --d 64 --N 150000
    python benchmarks/metrics.py --mode all --device cuda --K 50000 --d 4096 --N 1000000 --batch 50000
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from nclab.io import write_json_atomic
from nclab.metrics import NC4Counter, NCStats
from nclab.metrics.resources import auto_tile


# -- data ----------------------------------------------------------------------------------------


class Data:
    """Synthetic labelled features, made batch by batch from a seed per batch (so two passes see
    the same values without keeping them): class means (K, d) plus 0.1 noise, shifted by a common
    offset of ``offset_scale`` x 0.1, float32; a random classifier W (K, d)."""

    def __init__(self, N, d, K, batch, seed, device, offset_scale=1e5, stream=False):
        self.N, self.d, self.K, self.batch, self.seed = N, d, K, batch, seed
        self.device = torch.device(device)
        gen = torch.Generator(self.device).manual_seed(seed)
        self.means = torch.randn(K, d, generator=gen, device=self.device)
        self.offset = offset_scale * 0.1 * torch.randn(d, generator=gen, device=self.device)
        self.W = torch.randn(K, d, generator=gen, device=self.device)
        self._held = None if stream else list(self._make())

    def _make(self):
        for i, s in enumerate(range(0, self.N, self.batch)):
            B = min(self.batch, self.N - s)
            gen = torch.Generator(self.device).manual_seed(self.seed * 1_000_003 + i + 1)
            y = torch.randint(0, self.K, (B,), generator=gen, device=self.device)
            m = min(B, self.K)  # every class gets samples once N >= K
            y[:m] = (s + torch.arange(m, device=self.device)) % self.K
            X = self.means[y] + 0.1 * torch.randn(B, self.d, generator=gen, device=self.device)
            yield (X + self.offset).float(), y

    def batches(self):
        return iter(self._held) if self._held is not None else self._make()

    def all(self):
        """(X, y) whole (for the float64 baseline; only when the data are held)."""
        return torch.cat([x for x, _ in self._held]), torch.cat([y for _, y in self._held])


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device, fn, *args):
    _sync(device)
    t = time.perf_counter()
    out = fn(*args)
    _sync(device)
    return out, time.perf_counter() - t


# -- the measured passes -------------------------------------------------------------------------


def floor_stats(data):
    """float32 ``X_b^T [X_b, 1]`` per batch: the GEMM floor of the statistics (N d (d+1))."""
    total = 0.0
    for xb, _ in data.batches():
        ones = torch.ones(xb.shape[0], 1, dtype=xb.dtype, device=xb.device)
        total += _timed(data.device, lambda: xb.T @ torch.cat((xb, ones), 1))[1]
    return total


def floor_gram(data):
    """float32 ``X_b^T X_b`` per batch (goal 1's floor: N d^2)."""
    return sum(_timed(data.device, lambda: xb.T @ xb)[1] for xb, _ in data.batches())


def floor_nc4(data):
    """float32 ``X_b W^T`` and ``X_b M^T`` in NC4Counter's row blocks (N d 2K), written into one
    preallocated output (fresh outputs would time page faults, not the GEMM).  (Two products of
    width K: one of width 2K was slower than the two on the CPU.)"""
    Wt, Mt = data.W.T.contiguous(), data.means.T.contiguous()
    rows = NC4Counter.block_rows(data.K)
    out = torch.empty(min(rows, data.batch) * data.K, dtype=Wt.dtype, device=data.device)
    total = 0.0
    for xb, _ in data.batches():
        for s in range(0, xb.shape[0], rows):
            Xs = xb[s : s + rows]
            o = out[: Xs.shape[0] * data.K].view(Xs.shape[0], data.K)
            total += _timed(data.device, lambda: (torch.mm(Xs, Wt, out=o), torch.mm(Xs, Mt, out=o)))[1]
    return total


#: Rows per tile of the Gram floor: large tiles, the GEMM's best (no elementwise work follows).
FLOOR_TILE = 2048


def floor_pairwise(data):
    """float32 products of the three K x K Grams (M M^T, W W^T, W M^T) in tiles (3 K^2 d)."""
    K, M, W = data.K, data.means, data.W
    tile = FLOOR_TILE

    def grams():
        for A, B in ((M, M), (W, W), (W, M)):
            for i in range(0, K, tile):
                for j in range(0, K, tile):
                    A[i : i + tile] @ B[j : j + tile].T

    return _timed(data.device, grams)[1]


def nclab_stats(data):
    """The statistics pass; returns (stats, seconds of the update calls)."""
    stats = NCStats(data.K)
    total = 0.0
    for xb, yb in data.batches():
        total += _timed(data.device, stats.update, xb, yb)[1]
    return stats, total


def nclab_nc4(data, stats):
    counter = NC4Counter(stats.class_means, data.W, counts=stats.counts)
    total = 0.0
    for xb, yb in data.batches():
        total += _timed(data.device, counter.update, xb, yb)[1]
    return counter.compute(), total


def two_pass_float64(X, y, K):
    """The straightforward float64 reference: means, then one centred product per class."""
    X64 = X.double()
    order = torch.argsort(y, stable=True)
    counts = torch.bincount(y, minlength=K)
    Xs = X64[order]
    d = X.shape[1]
    means = torch.zeros(K, d, dtype=torch.float64, device=X.device)
    scatter = torch.zeros(d, d, dtype=torch.float64, device=X.device)
    start = 0
    for k, c in enumerate(counts.tolist()):
        means[k] = Xs[start : start + c].mean(0)
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


def _rss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: kB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _peak_memory(data):
    """Peak memory of one untimed run of every metric (the first use of the process's memory
    beyond the data): (bytes, how it was measured)."""
    if data.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(data.device)
        before = torch.cuda.memory_allocated(data.device)
        run_all(data)
        return torch.cuda.max_memory_allocated(data.device) - before, "torch.cuda.max_memory_allocated"
    before = _rss_bytes()
    run_all(data)
    return _rss_bytes() - before, "growth of ru_maxrss"


def run_all(data):
    stats, t_stats = nclab_stats(data)
    res, t_compute = _timed(data.device, stats.compute, data.W)
    nc4, t_nc4 = nclab_nc4(data, stats)
    return res.with_nc4(nc4), {"stats": t_stats, "compute": t_compute, "nc4": t_nc4}


# -- report --------------------------------------------------------------------------------------


def _table(title, rows, floor_total):
    table = Table(title=title)
    for col in ("", "seconds", "/ floor"):
        table.add_column(col, justify="left" if not col else "right")
    for name, sec in rows:
        table.add_row(name, f"{sec:.2f}", f"{sec / floor_total:.2f}x" if floor_total else "")
    return table


def _load():
    return "load average %.2f %.2f %.2f on %d cores" % (*os.getloadavg(), os.cpu_count() or 0)


def main_pass(args, data, console):
    baseline = args.baseline if args.baseline is not None else (data._held is not None and args.k <= 2000)
    times = {"floor": [], "update": [], "compute": [], "two_pass": []}
    res = ref = None
    for r in range(args.repeats):
        times["floor"].append(floor_gram(data))
        stats, t_up = nclab_stats(data)
        res, t_c = _timed(data.device, stats.compute, data.W)
        times["update"].append(t_up)
        times["compute"].append(t_c)
        if baseline:
            X, y = data.all()
            ref, t = _timed(data.device, two_pass_float64, X, y, args.k)
            times["two_pass"].append(t)
        console.print(f"round {r + 1}/{args.repeats}: floor {times['floor'][-1]:.2f} s, nclab "
                      f"{t_up + t_c:.2f} s (compute {t_c:.2f} s); {_load()}")
    med = {k: statistics.median(v) for k, v in times.items() if v}
    passes = [u + c for u, c in zip(times["update"], times["compute"])]
    med["nclab"] = statistics.median(passes)
    rows = [("floor: float32 X_b^T X_b per batch", med["floor"]),
            ("nclab update (statistics pass)", med["update"]),
            ("nclab compute()", med["compute"]),
            ("nclab pass: update + compute", med["nclab"])]
    if baseline:
        rows.append(("float64 two-pass reference", med["two_pass"]))
    console.print(_table(f"one pass, median of {args.repeats} interleaved rounds", rows, med["floor"]))
    share = statistics.median(c / p for c, p in zip(times["compute"], passes))
    out = {"seconds": med, "all_seconds": times, "ratio_to_floor": med["nclab"] / med["floor"],
           "compute_share": share, "compute_over_update": med["compute"] / med["update"]}
    console.print(f"ratio to the floor {out['ratio_to_floor']:.2f}x; compute() {100 * share:.1f}% of the "
                  f"pass, {out['compute_over_update']:.2f}x the statistics pass")
    if baseline:
        out["speedup_vs_two_pass"] = med["two_pass"] / med["nclab"]
        out["nc1_rel_error"] = abs(res.nc1 - ref[0]) / abs(ref[0])
        out["trace_ratio_rel_error"] = abs(res.nc1_trace_ratio - ref[1]) / abs(ref[1])
        console.print(f"accuracy vs float64 two-pass (common offset 1e5 x spread): nc1 rel. error "
                      f"{out['nc1_rel_error']:.2e}, trace ratio rel. error {out['trace_ratio_rel_error']:.2e}")
    return out


def main_all(args, data, console):
    peak, how = _peak_memory(data)
    K, d = args.k, args.d
    tile = auto_tile(K, data.device)
    nc4_rows = min(NC4Counter.block_rows(K), args.batch)  # the nc4 counter's reused logit block
    model = 8 * (6 * K * d + d * d) + 8 * 4 * min(K, tile) ** 2 + 4 * nc4_rows * K
    times = {"floor_stats": [], "floor_nc4": [], "floor_pairwise": [], "stats": [], "compute": [], "nc4": []}
    res = None
    for r in range(args.repeats):
        times["floor_stats"].append(floor_stats(data))
        times["floor_nc4"].append(floor_nc4(data))
        times["floor_pairwise"].append(floor_pairwise(data))
        res, t = run_all(data)
        for k, v in t.items():
            times[k].append(v)
        console.print(f"round {r + 1}/{args.repeats}: floors "
                      f"{sum(times[k][-1] for k in ('floor_stats', 'floor_nc4', 'floor_pairwise')):.2f} s, "
                      f"nclab {sum(t.values()):.2f} s; {_load()}")
    med = {k: statistics.median(v) for k, v in times.items()}
    floors = [sum(times[k][i] for k in ("floor_stats", "floor_nc4", "floor_pairwise")) for i in range(args.repeats)]
    totals = [sum(times[k][i] for k in ("stats", "compute", "nc4")) for i in range(args.repeats)]
    med["floor_total"], med["nclab_total"] = statistics.median(floors), statistics.median(totals)
    rows = [("floor: statistics, X_b^T [X_b, 1]  (N d (d+1))", med["floor_stats"]),
            ("floor: nc4, X_b W^T and X_b M^T  (N d 2K)", med["floor_nc4"]),
            ("floor: Grams M M^T, W W^T, W M^T  (3 K^2 d)", med["floor_pairwise"]),
            ("floor: sum", med["floor_total"]),
            ("nclab statistics pass (update)", med["stats"]),
            ("nclab compute()", med["compute"]),
            ("nclab nc4 pass", med["nc4"]),
            ("nclab: all metrics", med["nclab_total"])]
    console.print(_table(f"all metrics incl. nc4, median of {args.repeats} interleaved rounds", rows, med["floor_total"]))
    ratio = statistics.median(t / f for t, f in zip(totals, floors))
    console.print(f"total / sum of floors {ratio:.2f}x (median of per-round ratios); compute() "
                  f"{med['compute'] / med['stats']:.2f}x the statistics pass")
    console.print(f"peak memory {peak / 2**20:.0f} MiB ({how}); K d + tile^2 + nc4 block "
                  f"model {model / 2**20:.0f} MiB (tile {min(K, tile)}, nc4 block {nc4_rows} rows); nc4 = {res.nc4:.4f}")
    return {"seconds": med, "all_seconds": times, "ratio_to_floors": ratio, "peak_memory_bytes": peak,
            "peak_memory_measure": how, "memory_model_bytes": model, "tile": min(K, tile), "nc4_block_rows": nc4_rows,
            "compute_over_stats": med["compute"] / med["stats"], "nc4": res.nc4}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("pass", "all"), default="pass")
    ap.add_argument("--n", "--N", dest="n", type=int, default=100_000, help="samples N")
    ap.add_argument("--d", type=int, default=2048, help="feature dimension d")
    ap.add_argument("--k", "--K", dest="k", type=int, default=1000, help="classes K")
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds (medians reported)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--stream", action="store_true", help="make the features batch by batch in every pass")
    ap.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=None,
                    help="float64 two-pass baseline (pass mode; default: on when K <= 2000 and not streaming)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    for name in ("n", "d", "k", "batch", "repeats"):
        if getattr(args, name) < (2 if name == "k" else 1):
            ap.error(f"--{name} must be positive (K >= 2), got {getattr(args, name)}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA GPU here")

    console = Console()
    console.print(f"mode {args.mode}: N={args.n:,} d={args.d} K={args.k:,} batch={args.batch:,} float32 on "
                  f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads; {_load()}")
    data = Data(args.n, args.d, args.k, args.batch, args.seed, device, stream=args.stream)
    out = (main_pass if args.mode == "pass" else main_all)(args, data, console)
    console.print(_load())
    if args.json:
        out = {"args": vars(args) | {"json": str(args.json)}, "load_average_end": os.getloadavg(), **out}
        write_json_atomic(args.json, out)


if __name__ == "__main__":
    main()
