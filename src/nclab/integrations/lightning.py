"""A PyTorch Lightning callback that measures neural collapse on a schedule and logs it through
the Trainer's own loggers (TensorBoard, CSV, W&B, MLflow: whatever the user configured).

Needs ``pip install 'nclab[lightning]'``; importing this module without Lightning raises an
ImportError that says so.

At the end of every ``every_n_epochs``-th training epoch the callback runs
:func:`nclab.track.track` over the training loader, the validation loader or a loader of the
user's, and logs every computable metric of REFERENCE.md section 3 as ``prefix + name`` (e.g.
``nc/nc1``) with ``pl_module.log_dict(..., on_epoch=True)``.  The measurement runs in eval mode
without gradients, under the Trainer's precision context (AMP/bf16 features are cast to float64
for the statistics), restores the modules' modes and the random state afterwards, and keeps the
last result in :attr:`NeuralCollapseCallback.metrics` (float64; loggers may store float32).

Under DDP every process measures its own shard (Lightning's DistributedSampler) and the
statistics are synced exactly before anything is logged, so every rank logs the same numbers.
DistributedSampler pads the last shard with repeated samples when the data set does not divide
evenly; those repeats count like any sample.

Example
-------
>>> from nclab.integrations.lightning import NeuralCollapseCallback
>>> cb = NeuralCollapseCallback(every_n_epochs=5, loader="val", nc4=True)
>>> # lightning.pytorch.Trainer(callbacks=[cb], logger=TensorBoardLogger("runs")).fit(module, dm)
"""

from __future__ import annotations

from collections.abc import Iterable

from nclab.integrations import metric_logs, preserved_rng, require

_pl = require("lightning.pytorch", "lightning", "nclab.integrations.lightning")  # first: a fast hint

from nclab._validation import check_bool, check_int  # noqa: E402
from nclab.metrics import NCMetrics  # noqa: E402
from nclab.track import track  # noqa: E402

__all__ = ["NeuralCollapseCallback"]


class NeuralCollapseCallback(_pl.Callback):
    """Log the NC metrics of a LightningModule every ``every_n_epochs`` training epochs.

    Parameters
    ----------
    every_n_epochs : measure after epochs n, 2n, ... (counted from 1).
    loader : "train" (the Trainer's training loader), "val" (its validation loader, the first
        one if there are several) or any DataLoader / re-iterable collection of batches.
    layer : the feature layer, as in :class:`nclab.track.NeuralCollapseTracker` (default: found
        automatically, the input of the last ``nn.Linear``).
    prefix : prepended to the metric names in the logs.
    nc4 : also measure nc4 (a second pass over the loader).
    **tracker_kwargs : passed to :class:`nclab.track.NeuralCollapseTracker` (``num_classes``,
        ``classifier``, ``capture``, ``batch_fn``, ``empty``, ``ignore_index``, ...).
    """

    def __init__(self, every_n_epochs: int = 1, loader: str | Iterable = "train", layer=None, *,
                 prefix: str = "nc/", nc4: bool = False, **tracker_kwargs):
        super().__init__()
        self.every_n_epochs = check_int("every_n_epochs", every_n_epochs, minimum=1)
        if isinstance(loader, str):
            if loader not in ("train", "val"):
                raise ValueError(f"loader must be 'train', 'val' or a DataLoader, got {loader!r}")
        elif not isinstance(loader, Iterable):
            raise ValueError(f"loader must be 'train', 'val' or a DataLoader, got {type(loader).__name__}")
        if not isinstance(prefix, str):
            raise ValueError(f"prefix must be a string, got {type(prefix).__name__}")
        self.loader, self.layer, self.prefix = loader, layer, prefix
        self.nc4 = check_bool("nc4", nc4)
        self.tracker_kwargs = tracker_kwargs
        self.metrics: NCMetrics | None = None

    def _data(self, trainer) -> Iterable:
        if not isinstance(self.loader, str):
            return self.loader
        found = trainer.train_dataloader if self.loader == "train" else trainer.val_dataloaders
        if isinstance(found, (list, tuple)) and found:
            found = found[0]
        if found is None or isinstance(found, dict):
            raise ValueError(
                f"the Trainer has no single {self.loader} loader to measure on; "
                "pass loader=<a DataLoader> to NeuralCollapseCallback"
            )
        return found

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        data = self._data(trainer)
        with preserved_rng(), trainer.precision_plugin.forward_context():
            self.metrics = track(pl_module, data, self.layer, nc4=self.nc4, **self.tracker_kwargs)
        # Every rank holds the same synced numbers: the max over ranks is each of them, exactly (and
        # sync_dist keeps Lightning from warning about unsynced epoch-level values).
        pl_module.log_dict(metric_logs(self.metrics, self.prefix), on_step=False, on_epoch=True,
                           sync_dist=True, reduce_fx="max")
