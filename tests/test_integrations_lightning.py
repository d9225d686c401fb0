"""nclab.integrations.lightning: a Lightning Trainer (CPU, 2 epochs, a tiny MLP on 1,000 MNIST
images) logs every metric through its own CSV and TensorBoard loggers; the values are those of
the independent float64 reference on the features of an explicit forward pass of the final model.
Also: the one-line install hint when Lightning is missing."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from nclab.metrics import METRIC_NAMES
from reference_nc import reference_metrics

SRC = Path(__file__).resolve().parents[1] / "src"


def _import_without(package: str, module: str) -> subprocess.CompletedProcess:
    """Import ``module`` in a fresh interpreter where ``package`` cannot be imported."""
    code = f"import sys; sys.modules[{package!r}] = None\nimport {module}\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_missing_lightning_gives_a_one_line_install_hint():
    res = _import_without("lightning", "nclab.integrations.lightning")
    assert res.returncode != 0
    last = res.stderr.strip().splitlines()[-1]
    assert last == ("ImportError: nclab.integrations.lightning needs lightning: "
                    "pip install 'nclab[lightning]'"), res.stderr[-2000:]


def test_trainer_logs_every_metric_to_csv_and_tensorboard(data_dir, tmp_path, one_thread):
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from nclab.integrations.lightning import NeuralCollapseCallback
    from nclab.nets.data import load_dataset

    class MLP(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU())
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            return self.fc(self.body(x))

        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    data = load_dataset("mnist", data_dir, train=True, per_class=100)  # 1,000 images
    loader = torch.utils.data.DataLoader(data, batch_size=100)
    torch.manual_seed(0)
    model = MLP()
    cb = NeuralCollapseCallback(every_n_epochs=1, nc4=True)
    loggers = [CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path, name="tb")]
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=loggers, callbacks=[cb],
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         num_sanity_val_steps=0, log_every_n_steps=5)
    trainer.fit(model, loader)
    assert model.training and all(not m._forward_pre_hooks for m in model.modules())

    # oracle: the final model (the one measured after epoch 2) on the same batches, float64 formulas
    model.eval()
    with torch.no_grad():
        feats = torch.cat([model.body(x) for x, _ in loader]).double().numpy()
    labels = data.tensors[1].numpy()
    want = reference_metrics(feats, labels, 10, model.fc.weight.detach().double().numpy(),
                             model.fc.bias.detach().double().numpy())
    got = cb.metrics.as_dict()
    for name in METRIC_NAMES:
        assert math.isclose(got[name], want[name], rel_tol=1e-10, abs_tol=1e-13), name

    rows = list(csv.DictReader(open(Path(loggers[0].log_dir) / "metrics.csv")))
    logged = [r for r in rows if r.get("nc/nc1")]
    assert [int(r["epoch"]) for r in logged] == [0, 1]  # once per epoch
    for name in METRIC_NAMES:  # every metric, the last epoch's equal to the reference (float32 logs)
        assert math.isclose(float(logged[-1][f"nc/{name}"]), want[name], rel_tol=1e-6, abs_tol=1e-7), name

    acc = EventAccumulator(loggers[1].log_dir)
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {f"nc/{name}" for name in METRIC_NAMES} <= tags
    events = acc.Scalars("nc/nc1")
    assert len(events) == 2 and math.isclose(events[-1].value, want["nc1"], rel_tol=1e-6)


def test_bad_arguments_name_the_fix():
    from nclab.integrations.lightning import NeuralCollapseCallback

    with pytest.raises(ValueError, match="every_n_epochs must be >= 1"):
        NeuralCollapseCallback(every_n_epochs=0)
    with pytest.raises(ValueError, match="loader must be 'train', 'val' or a DataLoader"):
        NeuralCollapseCallback(loader="test")


def test_schedule_and_the_validation_loader_without_a_trainer_run():
    """The callback's own logic with stand-ins for the Trainer: it measures on epochs n, 2n, ...
    only, on the first validation loader, and hands pl_module.log_dict the prefixed metrics."""
    from contextlib import nullcontext
    from types import SimpleNamespace

    from nclab.integrations.lightning import NeuralCollapseCallback
    from nclab.track import track

    class Module(nn.Sequential):
        def __init__(self):
            torch.manual_seed(0)
            super().__init__(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
            self.logged = []

        def log_dict(self, values, **kwargs):
            self.logged.append((values, kwargs))

    g = torch.Generator().manual_seed(0)
    val = [(torch.randn(12, 5, generator=g), torch.arange(12) % 3) for _ in range(2)]
    module = Module()
    trainer = SimpleNamespace(sanity_checking=False, current_epoch=0, train_dataloader=None, val_dataloaders=[val],
                              precision_plugin=SimpleNamespace(forward_context=nullcontext))
    cb = NeuralCollapseCallback(every_n_epochs=2, loader="val", prefix="val_nc/")
    for epoch in range(4):
        trainer.current_epoch = epoch
        cb.on_train_epoch_end(trainer, module)
    assert len(module.logged) == 2  # after epochs 2 and 4 (current_epoch 1 and 3)
    values, kwargs = module.logged[-1]
    assert kwargs == {"on_step": False, "on_epoch": True, "sync_dist": True, "reduce_fx": "max"}
    want = track(module, val).as_dict()
    assert values == {f"val_nc/{k}": v for k, v in want.items() if v is not None}
    with pytest.raises(ValueError, match="no single train loader"):
        NeuralCollapseCallback(loader="train").on_train_epoch_end(trainer, module)


def test_doctests():
    import doctest

    import nclab.integrations
    import nclab.integrations.lightning

    for mod in (nclab.integrations, nclab.integrations.lightning):
        res = doctest.testmod(mod)
        assert res.failed == 0, mod.__name__
    assert doctest.testmod(nclab.integrations.lightning).attempted > 0
