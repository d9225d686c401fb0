"""Benchmark of the heads' cost (issue: deep networks, fixed simplex-ETF classifier, d = K).

Table 1, per network (CIFAR-style ResNet18 and the MLP, K = 10) and head (learned d = 512, fixed
ETF d = 512, fixed ETF d = K, normalized d = 512):

  * parameters: total (a fixed ETF classifier's K*d included) and trainable;
  * train state: bytes of parameters, buffers, gradients and SGD momentum after one step;
  * step time: median of ``--repeats`` SGD steps (forward, backward, update) on a batch;
  * GPU only: torch.cuda.max_memory_allocated of one step (activations included).

Table 2, the cost of tracking collapse: one eval-mode pass over N images that only computes the
logits (the floor) vs :func:`nclab.nets.train.collapse_metrics` over the same images (features into
NCStats, the metrics, the nc4 pass), median of the repeats.

    python benchmarks/heads.py                         # CPU: batch 32, 3 repeats, N = 512
    python benchmarks/heads.py --device cuda --batch 128 --n 60000
    python benchmarks/heads.py --threads 1 --json out.json   # steadier on a shared CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from nclab.nets.backbones import build_network, parameter_summary
from nclab.nets.train import TrainConfig, train_state_bytes, collapse_metrics, make_optimizer

K = 10
CONFIGS = (("learned", None), ("etf", None), ("etf", K), ("normalized", None))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_costs(model: str, head: str, d, device, batch: int, repeats: int, in_channels: int) -> dict:
    net = build_network(model, head, K, feature_dim=d, in_channels=in_channels, image_size=28, tau=10.0).to(device)
    opt = make_optimizer(net, TrainConfig(model=model, head=head, feature_dim=d))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, in_channels, 28, 28, generator=gen).to(device)
    y = torch.randint(0, K, (batch,), generator=gen).to(device)
    times = []
    for i in range(repeats + 1):  # the first step warms up (allocations, cuDNN choice)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        t = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        if i:
            times.append(time.perf_counter() - t)
    params = parameter_summary(net)
    return {
        "model": model, "head": head, "d": net.head.d, "in_channels": in_channels,
        "params_total": params["total"], "params_trainable": params["trainable"],
        "train_state_mib": train_state_bytes(net, opt) / 2**20,
        "step_ms": 1e3 * statistics.median(times),
        "gpu_peak_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
    }


@torch.no_grad()
def tracking_cost(model: str, device, n: int, batch: int, repeats: int) -> dict:
    net = build_network(model, "learned", K).to(device).eval()
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(n, 1, 28, 28, generator=gen).to(device)
    labels = (torch.arange(n) % K).to(device)
    floor, track = [], []
    for i in range(repeats + 1):
        _sync(device)
        t = time.perf_counter()
        for xb in images.split(batch):
            net(xb)
        _sync(device)
        t1 = time.perf_counter()
        collapse_metrics(net, images, labels, num_classes=K, batch_size=batch, device=device)
        _sync(device)
        t2 = time.perf_counter()
        if i:
            floor.append(t1 - t)
            track.append(t2 - t1)
    f, c = statistics.median(floor), statistics.median(track)
    return {"model": model, "n": n, "forward_s": f, "collapse_metrics_s": c, "ratio": c / f}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=None, help="training batch (default 32 on CPU, 128 on GPU)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=None, help="images of the tracking pass (default 512 CPU, 60000 GPU)")
    ap.add_argument("--eval-batch", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch = args.batch or (128 if device.type == "cuda" else 32)
    n = args.n or (60000 if device.type == "cuda" else 512)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)

    rows = [step_costs(m, h, d, device, batch, args.repeats, 1) for m in ("resnet18", "mlp") for h, d in CONFIGS]
    rows.append(step_costs("resnet18", "learned", None, device, batch, args.repeats, 3))  # the reference count
    rows.append(step_costs("resnet18", "learned", K, device, batch, args.repeats, 3))
    table = Table(title=f"Heads: parameters, training state, one SGD step (batch {batch}, {device}, "
                        f"{torch.get_num_threads()} thread(s))")
    for col in ("model", "head", "d", "C", "params", "trainable", "train state MiB", "step ms", "GPU peak MiB"):
        table.add_column(col, justify="left" if col in ("model", "head") else "right")
    for r in rows:
        table.add_row(r["model"], r["head"], str(r["d"]), str(r["in_channels"]), f"{r['params_total']:,}",
                      f"{r['params_trainable']:,}", f"{r['train_state_mib']:.2f}", f"{r['step_ms']:.1f}",
                      "–" if r["gpu_peak_mib"] is None else f"{r['gpu_peak_mib']:.0f}")
    console.print(table)

    track = [tracking_cost(m, device, n, args.eval_batch, args.repeats) for m in ("mlp", "resnet18")]
    t2 = Table(title=f"Cost of tracking collapse over {n} images (eval batch {args.eval_batch}, {device})")
    for col in ("model", "forward only s", "collapse_metrics s", "ratio"):
        t2.add_column(col, justify="left" if col == "model" else "right")
    for r in track:
        t2.add_row(r["model"], f"{r['forward_s']:.3f}", f"{r['collapse_metrics_s']:.3f}", f"{r['ratio']:.2f}")
    console.print(t2)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "batch": batch, "steps": rows, "tracking": track}, f, indent=2)


if __name__ == "__main__":
    main()
