"""nclab.integrations.lightning under DDP: Trainer(strategy="ddp_fork", devices=2) on the CPU.
Every rank measures its DistributedSampler shard; the logged metrics are those of the whole data
set, computed in one process on the same batches (to the float32 precision of the log)."""

from __future__ import annotations

import csv
import math

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from nclab.integrations.lightning import NeuralCollapseCallback
from nclab.metrics import METRIC_NAMES
from nclab.track import track


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(6, 16), nn.Tanh())
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(self.body(x))

    def training_step(self, batch, _):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)  # the weights stay those of Tiny()


def _data():
    g = torch.Generator().manual_seed(1)
    y = torch.arange(64) // 2 % 4  # each rank (every other sample) sees every class
    x = torch.randn(64, 6, generator=g) + torch.nn.functional.one_hot(y, 6).float()
    return torch.utils.data.TensorDataset(x, y)


def test_two_cpu_processes_log_the_metrics_of_the_whole_data_set(tmp_path, one_thread):
    data = _data()
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=2, strategy="ddp_fork",
                         logger=CSVLogger(tmp_path, name="csv", version=0), callbacks=[NeuralCollapseCallback(nc4=True)],
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         num_sanity_val_steps=0, log_every_n_steps=1)
    trainer.fit(Tiny(), loader)
    # rank r's batches: samples r, r + 2, ... (DistributedSampler without shuffling), 8 at a time
    x, y = data.tensors
    batches = [(x[i], y[i]) for r in range(2) for i in torch.arange(r, 64, 2).split(8)]
    want = track(Tiny(), batches, nc4=True).as_dict()
    half = track(Tiny(), batches[:4], nc4=True).as_dict()  # what rank 0 would log unsynced
    rows = [r for r in csv.DictReader(open(tmp_path / "csv" / "version_0" / "metrics.csv")) if r.get("nc/nc1")]
    assert len(rows) == 1
    for name in METRIC_NAMES:
        assert math.isclose(float(rows[0][f"nc/{name}"]), want[name], rel_tol=1e-6, abs_tol=1e-7), name
    assert not math.isclose(want["nc1"], half["nc1"], rel_tol=1e-3)
