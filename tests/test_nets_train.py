"""nclab.nets.train: the training loop, its model and optimizer, its progress callbacks.

Tiny settings throughout (MLP, 30 MNIST images per class, 3 epochs): each run takes seconds.
Oracles: an uninterrupted run for the resumed one, a freshly built ETF for the trained one, the
log file for the callbacks' records, the metrics recomputed on CPU from a GPU run's checkpoint.
(Extraction and metrics: test_nets_evaluate.py; options: test_nets_config.py; files:
test_nets_rundir.py.)
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from nclab.metrics import METRIC_NAMES
from nclab.nets.data import load_dataset
from nclab.nets.heads import ETFHead
from nclab.nets.train import (
    LOG_KEYS,
    TrainConfig,
    build_model,
    collapse_metrics,
    lr_milestones,
    make_optimizer,
    read_log,
    train,
)

#: Wall-clock and memory entries differ between two identical runs; everything else must not.
VOLATILE = {"epoch_seconds", "eval_seconds", "total_seconds", "peak_memory_mb"}


def tiny(data_dir, out, **kw) -> TrainConfig:
    base = dict(model="mlp", per_class=30, test_per_class=20, epochs=3, batch_size=32, lr=0.05,
                device="cpu", data_dir=str(data_dir), out=str(out))
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def small_mnist(data_dir):
    images, labels = load_dataset("mnist", data_dir, train=True, per_class=30, seed=0).tensors
    return images, labels


@pytest.mark.parametrize("head", ["learned", "etf", "normalized"])
def test_short_run_learns_and_collapses(data_dir, tmp_path, head):
    cfg = tiny(data_dir, tmp_path / head, head=head, lr=0.1, epochs=6)  # nc1 may rise at first
    summary = train(cfg)
    log = read_log(tmp_path / head)
    assert [r["epoch"] for r in log] == [1, 2, 3, 4, 5, 6]
    for r in log:
        assert set(LOG_KEYS) | set(METRIC_NAMES) <= set(r), set(LOG_KEYS) | set(METRIC_NAMES) - set(r)
        assert r["nc1"] is not None and r["nc4"] is not None and 0 <= r["nc4"] <= 1
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    assert log[-1]["train_loss_running"] < log[0]["train_loss_running"]
    assert log[-1]["nc1"] < log[0]["nc1"]
    assert log[-1]["train_acc"] > 0.5
    assert summary["finished"] and summary["final"] == log[-1]
    assert summary["parameters_trainable"] <= summary["parameters_total"]
    config = json.loads((tmp_path / head / "config.json").read_text())
    assert config["head"] == head and config["lr_milestones"] == lr_milestones(6)


def test_etf_buffer_is_fixed_and_not_optimized(data_dir, tmp_path):
    cfg = tiny(data_dir, tmp_path / "etf", head="etf", feature_dim=10, lr=0.1)
    net = build_model(cfg)
    head = net.head
    assert isinstance(head, ETFHead)
    optimized = {id(p) for g in make_optimizer(net, cfg).param_groups for p in g["params"]}
    assert id(head.weight) not in optimized
    assert {id(p) for p in net.parameters()} == optimized  # everything else is trained
    summary = train(cfg)
    trained = torch.load(tmp_path / "etf" / "checkpoint.pt", weights_only=True)["model"]
    assert torch.equal(trained["head.weight"], head.weight)  # bit for bit the initial frame
    assert summary["parameters_total"] - summary["parameters_trainable"] == 10 * 10  # the fixed K x d frame
    # the frame is a simplex ETF: W W^T = K/(K-1) (I - J/K)
    K = 10
    G = trained["head.weight"].double() @ trained["head.weight"].double().T
    assert torch.allclose(G, K / (K - 1) * (torch.eye(K) - 1 / K).double(), atol=1e-6)


def test_normalized_head_rows_stay_unit(data_dir, tmp_path):
    cfg = tiny(data_dir, tmp_path / "norm", head="normalized", epochs=2)
    train(cfg)
    W = torch.load(tmp_path / "norm" / "checkpoint.pt", weights_only=True)["model"]["head.weight"]
    assert torch.allclose(W.norm(dim=1), torch.ones(10), atol=1e-6)
    assert not torch.allclose(W, build_model(cfg).head.weight)  # it was trained


def test_resume_reproduces_an_uninterrupted_run(data_dir, tmp_path):
    full = tiny(data_dir, tmp_path / "full", head="normalized")
    train(full)
    part = tiny(data_dir, tmp_path / "part", head="normalized", stop_after=2)
    summary = train(part)
    assert summary["epochs_done"] == 2 and not summary["finished"]
    # a line written after the last checkpoint (a crash between log and checkpoint) is dropped
    with open(tmp_path / "part" / "log.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 3, "train_loss": -1.0}) + "\n")
    with pytest.raises(ValueError, match="--resume"):
        train(tiny(data_dir, tmp_path / "part", head="normalized"))
    train(tiny(data_dir, tmp_path / "part", head="normalized", resume=True))

    def numbers(run):
        return [{k: v for k, v in r.items() if k not in VOLATILE} for r in read_log(tmp_path / run)]

    a, b = numbers("full"), numbers("part")
    assert len(a) == len(b) == 3
    assert a == b  # every loss, accuracy and metric identical, to the last bit
    wa = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    wb = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert wa["model"].keys() == wb["model"].keys()
    for key in wa["model"]:
        assert torch.equal(wa["model"][key], wb["model"][key]), key
    assert wa["optimizer"]["state"].keys() == wb["optimizer"]["state"].keys()


def test_resume_refuses_changed_options(data_dir, tmp_path):
    train(tiny(data_dir, tmp_path / "r", epochs=1))
    with pytest.raises(ValueError, match="lr"):
        train(tiny(data_dir, tmp_path / "r", epochs=1, lr=0.5, resume=True))


@pytest.mark.gpu
def test_cuda_run_and_resume(data_dir, tmp_path):
    """On a GPU: data and model on the device, cuda peak memory logged, resume from a checkpoint
    saved there, and the logged metrics are those of the checkpointed weights (recomputed on CPU)."""
    cfg = tiny(data_dir, tmp_path / "gpu", head="etf", feature_dim=10, device="cuda", stop_after=2)
    train(cfg)
    train(tiny(data_dir, tmp_path / "gpu", head="etf", feature_dim=10, device="cuda", resume=True))
    log = read_log(tmp_path / "gpu")
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert all(r["memory_kind"] == "cuda_max_allocated" and r["peak_memory_mb"] > 0 for r in log)
    net = build_model(cfg)
    net.load_state_dict(torch.load(tmp_path / "gpu" / "checkpoint.pt", weights_only=True, map_location="cpu")["model"])
    images, labels = load_dataset("mnist", data_dir, train=True, per_class=30, seed=0).tensors
    cpu, ex, _ = collapse_metrics(net, images, labels, num_classes=10)
    assert math.isclose(log[-1]["nc1"], cpu.nc1, rel_tol=1e-3)
    assert math.isclose(log[-1]["train_acc"], ex.accuracy, abs_tol=2 / labels.numel())


def test_etf_frame_reaches_every_class_with_relu_features(data_dir, tmp_path):
    """The backbones end with a ReLU: features are non-negative.  With d = K the default (unrotated)
    frame lets every class win somewhere (h = e_k), and so does the head's seeded rotation (it fixes
    the all-ones vector); a general Haar rotation (seed 0) does not: one class's decision cone
    misses the orthant."""
    from nclab.geometry import simplex_etf
    from scipy.optimize import linprog

    def reachable(W):
        W = W.double().numpy()
        K, d = W.shape
        return sum(
            linprog([0.0] * d, A_ub=[W[j] - W[k] for j in range(K) if j != k], b_ub=[-1.0] * (K - 1),
                    bounds=[(0, None)] * d).status == 0
            for k in range(K)
        )

    plain = build_model(TrainConfig(model="mlp", head="etf", feature_dim=10, seed=0)).head.weight
    rotated = build_model(TrainConfig(model="mlp", head="etf", feature_dim=10, seed=0, etf_rotation=True)).head.weight
    assert reachable(plain) == 10
    assert reachable(rotated) == 10
    assert reachable(simplex_etf(10, 10, seed=0)) < 10  # a general rotation: the failure mode
    # and the unrotated d = K network does fit every class of a small training set
    cfg = tiny(data_dir, tmp_path / "etfk", head="etf", feature_dim=10, epochs=6, lr=0.1)
    log = train(cfg)["final"]
    assert log["train_acc"] > 0.9 and log["ncc_acc"] > 0.9


def test_callbacks_report_every_batch_and_every_logged_record(data_dir, tmp_path):
    batches, records = [], []
    cfg = tiny(data_dir, tmp_path / "cb", epochs=3, stop_after=2)  # 300 images, batch 32: 10 batches (the last of 12)
    train(cfg, on_batch=batches.append, on_epoch=records.append)
    assert records == read_log(tmp_path / "cb")  # what was written, in order (NaN-free here)
    assert [b["epoch"] for b in batches] == [1] * 10 + [2] * 10
    assert [b["batch"] for b in batches] == list(range(1, 11)) * 2
    assert {(b["batches"], b["epochs"], b["until"]) for b in batches} == {(10, 3, 2)}
    # resuming reports only the epochs it trains
    records.clear()
    train(tiny(data_dir, tmp_path / "cb", epochs=3, resume=True), on_epoch=records.append)
    assert [r["epoch"] for r in records] == [3]


def test_former_single_module_names_stay_importable():
    import nclab.nets.train as T
    from nclab.nets import config, evaluate, rundir

    for name in ("TrainConfig", "lr_milestones", "eval_epochs", "EVAL_SCHEDULES"):
        assert getattr(T, name) is getattr(config, name)
    for name in ("extract", "collapse_metrics", "Extraction", "KEEP_FEATURES_BYTES"):
        assert getattr(T, name) is getattr(evaluate, name)
    for name in ("read_log", "LOG_KEYS", "CHECKPOINT", "LOG", "CONFIG", "SUMMARY"):
        assert getattr(T, name) is getattr(rundir, name)
    for name in T.__all__:
        assert hasattr(T, name), name
