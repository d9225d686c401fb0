"""A Hugging Face ``transformers.TrainerCallback`` that measures neural collapse on a schedule and
logs it through ``Trainer.log``, so that every ``report_to`` integration (TensorBoard, W&B,
MLflow, ...) and ``trainer.state.log_history`` receive it.

Needs ``pip install 'nclab[hf]'``; importing this module without transformers raises an
ImportError that says so.

The callback runs :func:`nclab.track.track` over the training set or the evaluation set, in eval
mode without gradients and under the Trainer's autocast (features are cast to float64 for the
statistics).  The training set is read through ``trainer.get_test_dataloader(train_dataset)``:
in order, with the evaluation batch size and the Trainer's collator, so the measurement neither
disturbs the training loader nor draws from the random state (which is restored anyway).

Causal language models (Wu & Papyan 2024 measure collapse with K = the vocabulary): the features
are the last hidden state (the input of ``lm_head``, found through ``get_output_embeddings()``),
the classifier is ``lm_head`` (usually without a bias: b = 0), the labels are the next tokens
(``labels[:, 1:]``, or the shifted input ids when the batch has no labels) with padding (-100)
dropped, and K is the vocabulary size.  A vocabulary is never all present in the data, so for
these models the default ``empty`` is "drop": every metric is over the tokens present, and the
result (:attr:`NeuralCollapseCallback.metrics`) lists the absent ones in ``empty_classes``.

Trainer callbacks are not handed the Trainer, and the ``report_to`` integrations run before a
user's callbacks, so the callback needs its Trainer to log: build it with
:meth:`NeuralCollapseCallback.attach` (or pass ``trainer=`` and ``trainer.add_callback(cb)``).

Under DDP every process measures its own shard of the prepared loader and the statistics are
synced exactly before anything is logged.  The prepared evaluation loader evens out the shards by
repeating a few samples at the end; those count like any sample.

Example
-------
>>> from nclab.integrations.hf import NeuralCollapseCallback
>>> # trainer = transformers.Trainer(model=model, args=args, train_dataset=ds, data_collator=collate)
>>> # NeuralCollapseCallback.attach(trainer, every_n_epochs=1, at_evaluate=True)
>>> # trainer.train()        # logs nc/nc1, nc/nc2_etf_means, ... at the end of every epoch
"""

from __future__ import annotations

from collections.abc import Iterable

from nclab.integrations import metric_logs, preserved_rng, require

_transformers = require("transformers", "hf", "nclab.integrations.hf")  # first: a fast hint

from nclab._validation import check_bool, check_int  # noqa: E402
from nclab.metrics import NCMetrics  # noqa: E402
from nclab.track import is_causal_lm, track  # noqa: E402

__all__ = ["NeuralCollapseCallback"]


class NeuralCollapseCallback(_transformers.TrainerCallback):
    """Log the NC metrics of a Trainer's model on a schedule.

    Parameters
    ----------
    trainer : the ``transformers.Trainer`` to log through (or later :meth:`set_trainer`).
    every_n_epochs : measure at the end of epochs n, 2n, ... (None: never at epoch ends).
    every_n_steps : measure after optimizer steps n, 2n, ... (None: never at steps).
    at_evaluate : also measure after every evaluation.
    loader : "train" (the training set), "eval" (the evaluation set) or any DataLoader /
        re-iterable collection of batches.
    layer : the feature layer, as in :class:`nclab.track.NeuralCollapseTracker` (default: the input
        of ``get_output_embeddings()`` / the last ``nn.Linear``).
    prefix : prepended to the metric names; default "nc/" for the training set and "eval_nc/"
        for the evaluation set (the TensorBoard integration files them under train/ and eval/).
    nc4 : also measure nc4 (a second pass over the loader).
    **tracker_kwargs : passed to :class:`nclab.track.NeuralCollapseTracker` (``empty`` defaults to
        "drop" for causal LMs and to "raise" otherwise).
    """

    def __init__(self, trainer=None, *, every_n_epochs: int | None = 1, every_n_steps: int | None = None,
                 at_evaluate: bool = False, loader: str | Iterable = "train", layer=None,
                 prefix: str | None = None, nc4: bool = False, **tracker_kwargs):
        self.every_n_epochs = None if every_n_epochs is None else check_int("every_n_epochs", every_n_epochs, minimum=1)
        self.every_n_steps = None if every_n_steps is None else check_int("every_n_steps", every_n_steps, minimum=1)
        self.at_evaluate = check_bool("at_evaluate", at_evaluate)
        if isinstance(loader, str):
            if loader not in ("train", "eval"):
                raise ValueError(f"loader must be 'train', 'eval' or a DataLoader, got {loader!r}")
        elif not isinstance(loader, Iterable):
            raise ValueError(f"loader must be 'train', 'eval' or a DataLoader, got {type(loader).__name__}")
        if prefix is not None and not isinstance(prefix, str):
            raise ValueError(f"prefix must be a string, got {type(prefix).__name__}")
        self.loader, self.layer = loader, layer
        self.prefix = prefix if prefix is not None else ("eval_nc/" if loader == "eval" else "nc/")
        self.nc4 = check_bool("nc4", nc4)
        self.tracker_kwargs = tracker_kwargs
        self.trainer = None
        self._data = None
        self.metrics: NCMetrics | None = None
        if trainer is not None:
            self.set_trainer(trainer)

    @classmethod
    def attach(cls, trainer, **kwargs) -> "NeuralCollapseCallback":
        """A callback that logs through ``trainer``, added to its callbacks; returns it."""
        cb = cls(trainer, **kwargs)
        trainer.add_callback(cb)
        return cb

    def set_trainer(self, trainer) -> None:
        """Log through ``trainer`` (its ``log`` method feeds ``log_history`` and ``report_to``)."""
        if not isinstance(trainer, _transformers.Trainer):
            raise ValueError(f"trainer must be a transformers.Trainer, got {type(trainer).__name__}")
        self.trainer = trainer
        self._data = None

    # -- schedule ----------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        if self.trainer is None:
            raise ValueError(
                "NeuralCollapseCallback needs its Trainer to log: use NeuralCollapseCallback.attach(trainer, ...) "
                "or trainer.add_callback(NeuralCollapseCallback(trainer, ...))"
            )

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if self.every_n_epochs and state.epoch is not None and round(state.epoch) % self.every_n_epochs == 0:
            self.measure(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every_n_steps and state.global_step % self.every_n_steps == 0:
            self.measure(model)

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if self.at_evaluate:
            self.measure(model)

    # -- measurement -------------------------------------------------------------------------

    def _loader(self) -> Iterable:
        if not isinstance(self.loader, str):
            return self.loader
        if self._data is None:
            t = self.trainer
            if self.loader == "train":
                if t.train_dataset is None:
                    raise ValueError("the Trainer has no train_dataset; pass loader='eval' or a DataLoader")
                self._data = t.get_test_dataloader(t.train_dataset)  # in order, no random draws
            else:
                self._data = t.get_eval_dataloader()
        return self._data

    def measure(self, model=None) -> NCMetrics:
        """Compute the metrics now (every process under DDP), log them, and return them."""
        if self.trainer is None:
            self.on_train_begin(None, None, None)
        model = model if model is not None else self.trainer.model
        kwargs = dict(self.tracker_kwargs)
        kwargs.setdefault("empty", "drop" if is_causal_lm(model) else "raise")
        with preserved_rng(), self.trainer.accelerator.autocast():
            self.metrics = track(model, self._loader(), self.layer, nc4=self.nc4, **kwargs)
        self.trainer.log(metric_logs(self.metrics, self.prefix))
        return self.metrics
