"""Two processes on one machine (gloo): sharded feature extraction with exactly synced metrics, and
a short DistributedDataParallel training run under torchrun.

Oracles: the single-process statistics and metrics of the very features the two ranks extracted
(gathered here in sample order), and the single-process training run, whose global batches are the
unions of the two ranks' batches.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nclab.metrics import METRIC_NAMES, NCStats, compute_metrics
from nclab.nets.data import load_dataset
from nclab.nets.train import TrainConfig, build_model, collapse_metrics, read_log, train

PER_CLASS = 25  # 250 images: ranks get 125 each, classes split unevenly between them


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data(data_dir):
    images, labels = load_dataset("mnist", data_dir, train=True, per_class=PER_CLASS).tensors
    return images.double(), labels


def _net():
    """A float64 network: its features are float64, so NCStats accumulates them in float64 end to
    end and the only differences left between sharded and single-process are float64 roundings."""
    return build_model(TrainConfig(model="mlp", head="learned", seed=5)).double()


def _worker(rank: int, world: int, port: int, data_dir: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        images, labels = _data(data_dir)
        net = _net()
        metrics, ex, counter = collapse_metrics(net, images, labels, num_classes=10, batch_size=32,
                                                rank=rank, world_size=world)
        torch.save(
            {"metrics": metrics.as_dict(), "features": ex.features, "indices": ex.indices,
             "stats": (ex.stats.counts, ex.stats.means, ex.stats.m2, ex.stats.scatter),
             "nc4": (float(counter.mismatches), float(counter.total))},
            os.path.join(out, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def test_sharded_metrics_equal_single_process(data_dir, tmp_path):
    world = 2
    mp.spawn(_worker, args=(world, _free_port(), str(data_dir), str(tmp_path)), nprocs=world, join=True)
    parts = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]
    images, labels = _data(data_dir)
    N = labels.shape[0]
    # the shards are disjoint and cover every sample once
    idx = torch.cat([p["indices"] for p in parts])
    assert torch.equal(idx.sort().values, torch.arange(N))
    features = torch.empty(N, parts[0]["features"].shape[1], dtype=parts[0]["features"].dtype)
    for p in parts:
        features[p["indices"]] = p["features"]

    # synced float64 statistics == one process's statistics of the same features (1e-10 relative)
    ref = NCStats(10).update(features, labels)
    for p in parts:
        for got, want in zip(p["stats"], (ref.counts, ref.means, ref.m2, ref.scatter)):
            assert torch.allclose(got, want, rtol=1e-10, atol=1e-10 * float(want.abs().max())), "stats differ"
    # synced metrics (nc4 included) == compute_metrics of the same features and classifier
    net = _net()
    want = compute_metrics(features, labels, net.head.classifier_weight(), net.head.classifier_bias()).as_dict()
    for p in parts:
        assert p["nc4"][1] == N
        for name in METRIC_NAMES:
            assert math.isclose(p["metrics"][name], want[name], rel_tol=1e-10, abs_tol=1e-14), name
    # and so does the single-process loop on the same model (its own batches)
    single, _, _ = collapse_metrics(net, images, labels, num_classes=10, batch_size=50)
    for name in METRIC_NAMES:
        assert math.isclose(getattr(single, name), want[name], rel_tol=1e-10, abs_tol=1e-14), name


def test_torchrun_ddp_training(data_dir, tmp_path):
    """`torchrun -m nclab train`: completes, rank 0 alone writes, and the logged metrics are those of
    the final weights.  (The MLP has batch norm, which on CPU normalises each rank's half batch, so
    the run is not the single-process run; the check is against its own checkpoint.)"""
    args = ["--model", "mlp", "--head", "learned", "--per-class", "20", "--test-per-class", "10", "--epochs", "2",
            "--batch-size", "40", "--device", "cpu", "--data-dir", str(data_dir), "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "nclab", "train", *args, "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = read_log(tmp_path / "ddp")
    assert [r["epoch"] for r in log] == [1, 2]
    assert proc.stdout.count("2 epochs in") == 1  # one report, from rank 0
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["finished"]
    # the synced metrics of the last epoch == one process's metrics of the checkpointed model
    cfg = TrainConfig(model="mlp", head="learned", per_class=20, device="cpu")
    net = build_model(cfg)
    net.load_state_dict(torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)["model"])
    images, labels = load_dataset("mnist", data_dir, train=True, per_class=20).tensors
    single, ex, _ = collapse_metrics(net, images, labels, num_classes=10)
    for name in ("nc1", "nc1_trace_ratio", "nc2_equinorm_means", "nc3", "bias_collapse"):
        assert math.isclose(log[-1][name], getattr(single, name), rel_tol=1e-4), name
    assert math.isclose(log[-1]["train_acc"], ex.accuracy, abs_tol=1e-12)
    assert math.isclose(log[-1]["nc4"], single.nc4, abs_tol=1.5 / labels.numel())
