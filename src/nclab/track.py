"""Neural collapse of any ``nn.Module``: the penultimate features, caught by a forward hook, go
into the exact statistics of :mod:`nclab.metrics` (REFERENCE.md section 3).

:class:`NeuralCollapseTracker` attaches a hook to the layer whose input (or output) are the
features h of the metrics, runs the model over a data loader in eval mode without gradients, and
feeds every batch to an :class:`nclab.metrics.NCStats` as soon as the layer sees it: no feature is
kept beyond the batch being processed.  The classifier W (and bias b) of the metrics is the
weight of the same ``nn.Linear``.  nc4 (Papyan et al. 2020: the fraction of samples where
``argmax_k (w_k . h + b_k)`` differs from the nearest class mean) needs the final class means, so
it costs a second pass over the loader into an :class:`nclab.metrics.NC4Counter`.
:func:`track` does everything in one call.

The feature layer is found automatically for the common models: the output embeddings of a
Hugging Face model (``get_output_embeddings()``, i.e. ``lm_head`` of a causal LM), else a child
``nn.Linear`` named ``lm_head``, ``fc`` (torchvision ResNets), ``classifier`` or ``head`` (the last
``nn.Linear`` inside it when it is a block), else the last ``nn.Linear`` in registration order.
By default its *input* is captured: the penultimate features, d = ``in_features``, and K =
``out_features`` classes.

Batches and labels:

* a batch is an ``(inputs, labels)`` pair, a dict in the Hugging Face style (``model(**batch)``
  without the ``labels`` key; labels from ``batch["labels"]``), or anything a user
  ``batch_fn(batch) -> (inputs, labels)`` understands;
* features (B, d) go with labels (B,); features of any other shape (B, ...) are flattened per
  sample; sequence features (B, T, d) go with labels (B, T), one sample per position;
* positions labelled ``ignore_index`` (-100, Hugging Face's padding label) are dropped;
* causal language models (``shift_labels``, detected for Hugging Face ``...ForCausalLM`` and
  ``...LMHeadModel`` classes) predict the next token: position t's features go with the label of
  position t + 1 (``features[:, :-1]`` with ``labels[:, 1:]``); without a ``labels`` key the
  labels are the input ids with padding (``attention_mask == 0``) set to ``ignore_index``.

Numerics: features of any dtype (float16/bfloat16 under AMP included) are cast to ``dtype``
(float64 by default, exact for every narrower float) before they enter the statistics, so the
metrics equal the float64 formulas of the features the model computed.  Under torch.distributed
every process feeds its own shard and the statistics are synced exactly
(:meth:`nclab.metrics.NCStats.sync`, :meth:`nclab.metrics.NC4Counter.sync`); the forward passes run
on the module inside a ``DistributedDataParallel`` wrapper, so ranks with different numbers of
batches do not wait for each other.

Classes absent from the data (a language model's vocabulary, K = 50,000, is never all present)
raise :class:`nclab.metrics.EmptyClassesError` with ``empty="raise"`` (the default); with
``empty="drop"`` every metric, nc4 included, is computed over the classes present: their means,
their rows of W and b, the classifier's decision ``argmax`` over their rows.  The result says so:
``num_classes`` counts the classes present and ``empty_classes`` lists the others.

Example
-------
>>> import torch
>>> from torch import nn
>>> from nclab.track import track
>>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
>>> data = [(torch.randn(32, 8), torch.arange(32) % 3) for _ in range(4)]
>>> res = track(model, data, nc4=True)     # features: the input of the last Linear (d = 16)
>>> res.num_classes, res.num_samples, res.dim
(3, 128, 16)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import nullcontext

import torch
from torch import nn

from nclab._validation import check_bool, check_choice, check_int, check_num_classes
from nclab.metrics import NC4Counter, NCMetrics, NCStats
from nclab.nets.distributed import unwrap

__all__ = ["NeuralCollapseTracker", "track", "find_classifier", "is_causal_lm", "CLASSIFIER_NAMES"]

#: Names of the child module that holds the classifier, tried in this order.
CLASSIFIER_NAMES = ("lm_head", "fc", "classifier", "head")


class _Captured(Exception):
    """Raised by the hook once the features are consumed: the rest of the forward pass is skipped."""


def _last_linear(module: nn.Module) -> nn.Linear | None:
    found = None
    for m in module.modules():
        if isinstance(m, nn.Linear):
            found = m
    return found


def find_classifier(model: nn.Module) -> tuple[str, nn.Linear]:
    """``(name, linear)``: the classifier layer of ``model`` whose input are the penultimate
    features (the rules of the module docstring).  Raises ValueError when there is none."""
    names = {id(m): n for n, m in model.named_modules()}
    get = getattr(model, "get_output_embeddings", None)
    if callable(get):
        out = get()
        if isinstance(out, nn.Linear) and id(out) in names:
            return names[id(out)], out
    for name in CLASSIFIER_NAMES:
        child = getattr(model, name, None)
        if isinstance(child, nn.Module):
            lin = _last_linear(child)
            if lin is not None:
                return names[id(lin)], lin
    lin = _last_linear(model)
    if lin is None:
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear to take the features from; "
            "pass layer='name' (or the module) whose input or output are the features"
        )
    return names[id(lin)], lin


def is_causal_lm(model: nn.Module) -> bool:
    """True for a Hugging Face causal language model (its class is a ``...ForCausalLM`` or a
    ``...LMHeadModel`` of ``transformers``): its labels are the next tokens."""
    cls = type(model)
    name = cls.__name__
    from_hf = cls.__module__.startswith("transformers.")
    return from_hf and (name.endswith("ForCausalLM") or name.endswith("LMHeadModel"))


def _move(obj, device):
    if device is None:
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {k: _move(v, device) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_move(v, device) for v in obj)
    return obj


class NeuralCollapseTracker:
    """The NC metrics of a model's own features, by a forward hook (module docstring).

    Parameters
    ----------
    model : any ``nn.Module`` (a ``DistributedDataParallel`` wrapper is looked through).
    layer : None (found automatically, see :func:`find_classifier`), a submodule's name as in
        ``model.named_modules()`` (e.g. ``"fc"``, ``"transformer.ln_f"``), or the submodule.
    num_classes : K; default: the rows of the classifier.  Needed without a classifier.
    classifier : "auto" (the ``nn.Linear`` whose input are the features: ``layer`` itself when it
        is one and ``capture="input"``, else the automatically found one when its
        ``in_features`` match d), None (no W-metrics), an ``nn.Linear``, a (K, d) tensor W, or a
        pair ``(W, b)``.  Weights are read when the metrics are computed.
    capture : "input" (default: the features entering ``layer``) or "output" (what it returns;
        the first element of a tuple).
    nc4 : whether :meth:`run` makes the second pass for nc4.
    ignore_index : label of positions to drop (default -100).
    shift_labels : next-token labels (``features[:, :-1]`` with ``labels[:, 1:]``); None: True
        exactly for a Hugging Face causal LM (:func:`is_causal_lm`).
    empty : "raise" (a class without a sample is an error) or "drop" (metrics over the classes
        present, listed as absent in ``empty_classes``).
    batch_fn : ``batch -> (inputs, labels)`` for batches that are neither pairs nor dicts;
        ``inputs`` may be a tensor, a tuple (positional arguments) or a dict (keywords).
    device : where the statistics live (default: where the features are).  Inputs are moved to
        the device of the model's first parameter.
    dtype : precision of the statistics' products, torch.float64 (default; exact) or
        torch.float32 (faster, products of already-centred values; see :class:`NCStats`).
    weighted_mean : global mean = mean of all features instead of the mean of the class means.
    sync : all-reduce the statistics over torch.distributed's default group when it is
        initialised (every process must then call :meth:`run` / :meth:`compute`).
    early_exit : stop each forward pass once the features are consumed (skips the classifier's
        logits, e.g. the B x T x V product of a language model).
    progress : called with the number of feature rows after each batch, if given.

    Use :meth:`run` (or :func:`track`) for a loader, or a manual loop::

        with NeuralCollapseTracker(model) as tracker:      # hooks on, eval mode
            for x, y in loader:
                tracker.update(x, y)
            res = tracker.compute()                          # nc4: begin_nc4(), a second loop
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str | nn.Module | None = None,
        *,
        num_classes: int | None = None,
        classifier="auto",
        capture: str = "input",
        nc4: bool = False,
        ignore_index: int = -100,
        shift_labels: bool | None = None,
        empty: str = "raise",
        batch_fn=None,
        device=None,
        dtype: torch.dtype = torch.float64,
        weighted_mean: bool = False,
        sync: bool = True,
        early_exit: bool = True,
        progress=None,
    ):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = unwrap(model)
        self.capture = check_choice("capture", capture, ("input", "output"))
        self.nc4 = check_bool("nc4", nc4)
        self.ignore_index = check_int("ignore_index", ignore_index)
        self.empty = check_choice("empty", empty, ("raise", "drop"))
        self.dtype = check_choice("dtype", dtype, (torch.float64, torch.float32))
        self.weighted_mean = check_bool("weighted_mean", weighted_mean)
        self.sync = check_bool("sync", sync)
        self.early_exit = check_bool("early_exit", early_exit)
        if batch_fn is not None and not callable(batch_fn):
            raise ValueError(f"batch_fn must be a function batch -> (inputs, labels), got {type(batch_fn).__name__}")
        if progress is not None and not callable(progress):
            raise ValueError(f"progress must be a function of the number of rows, got {type(progress).__name__}")
        self.batch_fn, self.progress = batch_fn, progress
        if shift_labels is None:
            shift_labels = is_causal_lm(self.model)
        self.shift_labels = check_bool("shift_labels", shift_labels)
        self.device = None if device is None else torch.device(device)
        self.layer_name, self.layer = self._resolve_layer(layer)
        self._classifier = self._resolve_classifier(classifier)
        K = self._classifier_rows()
        if num_classes is not None:
            num_classes = check_num_classes(num_classes)
            if K is not None and num_classes != K:
                raise ValueError(
                    f"num_classes={num_classes} disagrees with the classifier's {K} rows; drop one of them")
            K = num_classes
        if K is None:
            raise ValueError("num_classes is needed when there is no classifier; pass num_classes=K")
        self.num_classes = K
        self._handles: list = []
        self._depth = 0
        self._modes: list[tuple[nn.Module, bool]] = []
        self.reset()

    # -- set-up ------------------------------------------------------------------------------

    def _resolve_layer(self, layer) -> tuple[str, nn.Module]:
        if layer is None:
            return find_classifier(self.model)
        if isinstance(layer, str):
            try:
                return layer, self.model.get_submodule(layer)
            except AttributeError:
                names = [n for n, _ in self.model.named_modules() if n][-8:]
                raise ValueError(
                    f"layer={layer!r} is not a submodule of the model; its last modules are {names}") from None
        if isinstance(layer, nn.Module):
            for name, m in self.model.named_modules():
                if m is layer:
                    return name, m
            raise ValueError("layer is a module that is not part of the model; pass one of model.modules()")
        raise ValueError(f"layer must be None, a module name or an nn.Module, got {type(layer).__name__}")

    def _resolve_classifier(self, classifier):
        if isinstance(classifier, str):
            check_choice("classifier", classifier, ("auto",))
            if isinstance(self.layer, nn.Linear) and self.capture == "input":
                return self.layer
            try:
                lin = find_classifier(self.model)[1]
            except ValueError:
                return None
            return ("auto", lin)
        if classifier is None or isinstance(classifier, nn.Linear):
            return classifier
        if isinstance(classifier, torch.Tensor):
            return (classifier, None)
        if isinstance(classifier, (tuple, list)) and len(classifier) == 2:
            return tuple(classifier)
        raise ValueError(
            "classifier must be 'auto', None, an nn.Linear, a (K, d) tensor W or a pair (W, b), "
            f"got {type(classifier).__name__}"
        )

    def _classifier_rows(self) -> int | None:
        c = self._classifier
        if c is None:
            return None
        if isinstance(c, nn.Linear):
            return c.out_features
        if c[0] == "auto":
            return c[1].out_features
        return int(c[0].shape[0])

    # -- hooks and modes ---------------------------------------------------------------------

    def __enter__(self) -> "NeuralCollapseTracker":
        if self._depth == 0:
            self._modes = [(m, m.training) for m in self.model.modules()]
            self.model.eval()
            if self.capture == "input":
                self._handles.append(self.layer.register_forward_pre_hook(self._pre_hook))
            else:
                self._handles.append(self.layer.register_forward_hook(self._hook))
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0:
            for h in self._handles:
                h.remove()
            self._handles = []
            for m, training in self._modes:
                m.training = training
            self._modes = []

    def _pre_hook(self, module, args):
        if not args or not isinstance(args[0], torch.Tensor):
            raise ValueError(f"layer {self.layer_name!r} was called without a tensor as first argument")
        self._consume(args[0])

    def _hook(self, module, args, output):
        self._consume(output[0] if isinstance(output, (tuple, list)) else output)

    def _consume(self, features: torch.Tensor) -> None:
        if self._labels is None:  # a forward pass that is not ours (e.g. inside the user's loop)
            return
        labels, self._labels = self._labels, None
        h, y = self._align(features.detach(), labels)
        if self._counter is None:
            self.stats.update(h, y)
        else:
            y = self._remap[y]
            if y.numel() and int(y.min()) < 0:
                raise ValueError("the nc4 pass met a class that had no sample in the first pass: "
                                 "the loader must yield the same data both times (no random subsets)")
            self._counter.update(h, y)
        self._rows = h.shape[0]
        if self.early_exit:
            raise _Captured

    def _align(self, f: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (n, d) features and (n,) labels of one batch: shifted, flattened, ignore_index dropped."""
        y = torch.as_tensor(y).to(f.device)
        if self.shift_labels:
            if y.ndim != 2 or f.ndim != 3 or f.shape[:2] != y.shape:
                raise ValueError(
                    f"next-token labels need features (B, T, d) and labels (B, T), got features "
                    f"{tuple(f.shape)} and labels {tuple(y.shape)}; pass shift_labels=False for other models"
                )
            f, y = f[:, :-1], y[:, 1:]
        if y.ndim >= 1 and f.ndim == y.ndim + 1 and f.shape[: y.ndim] == y.shape:
            f, y = f.reshape(-1, f.shape[-1]), y.reshape(-1)
        elif y.ndim == 1 and f.ndim >= 2 and f.shape[0] == y.shape[0]:
            f = f.reshape(f.shape[0], -1)
        else:
            raise ValueError(
                f"features of layer {self.layer_name!r} have shape {tuple(f.shape)}, labels {tuple(y.shape)}: "
                "expected (B, d) with (B,), (B, ...) with (B,), or (B, T, d) with (B, T)"
            )
        keep = y != self.ignore_index
        if not bool(keep.all()):
            f, y = f[keep], y[keep]
        return f.to(self.device or f.device, self.dtype), y.to(self.device or f.device)

    # -- feeding -----------------------------------------------------------------------------

    def reset(self) -> "NeuralCollapseTracker":
        """Forget every sample (a new pass starts)."""
        self.stats = NCStats(self.num_classes, device=self.device)
        self._counter = None
        self._counter_synced = False
        self._remap = None
        self._synced = False
        self._labels = None
        return self

    def split(self, batch) -> tuple[object, torch.Tensor]:
        """``(inputs, labels)`` of a batch (module docstring)."""
        if self.batch_fn is not None:
            out = self.batch_fn(batch)
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise ValueError("batch_fn must return a pair (inputs, labels)")
            return out[0], out[1]
        if isinstance(batch, Mapping):
            config = getattr(self.model, "config", None)
            keep_labels = bool(getattr(config, "is_encoder_decoder", False))
            inputs = {k: v for k, v in batch.items() if keep_labels or k != "labels"}
            labels = batch.get("labels")
            if labels is None and self.shift_labels and "input_ids" in batch:
                labels = batch["input_ids"].clone()
                if batch.get("attention_mask") is not None:
                    labels[batch["attention_mask"] == 0] = self.ignore_index
            if labels is None:
                raise ValueError(f"the batch (a dict with keys {sorted(batch)}) has no 'labels'; pass batch_fn=")
            return inputs, labels
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            return batch[0], batch[1]
        raise ValueError(
            f"cannot read a batch of type {type(batch).__name__}: expected (inputs, labels), a dict with "
            "'labels', or pass batch_fn=lambda batch: (inputs, labels)"
        )

    def update(self, inputs, labels) -> "NeuralCollapseTracker":
        """Run the model on ``inputs`` (no gradients, eval mode) and add the features of
        ``layer`` with ``labels`` to the statistics (to the nc4 counter after :meth:`begin_nc4`)."""
        if (self._synced and self._counter is None) or self._counter_synced:
            raise ValueError("the metrics are already computed; call reset() before feeding more batches")
        params = next(self.model.parameters(), None)
        inputs = _move(inputs, None if params is None else params.device)
        self._labels = labels
        self._rows = None
        with self, torch.no_grad():
            try:
                if isinstance(inputs, Mapping):
                    self.model(**inputs)
                elif isinstance(inputs, tuple):
                    self.model(*inputs)
                else:
                    self.model(inputs)
            except _Captured:
                pass
            finally:
                self._labels = None
        if self._rows is None:
            raise ValueError(f"layer {self.layer_name!r} did not run in the forward pass; "
                             "pick the layer that computes the features")
        if self.progress is not None:
            self.progress(self._rows)
        return self

    def update_batch(self, batch) -> "NeuralCollapseTracker":
        """:meth:`update` on :meth:`split` (batch)."""
        return self.update(*self.split(batch))

    # -- results -----------------------------------------------------------------------------

    def _sync(self) -> None:
        if not self._synced:
            if self.sync:
                self.stats.sync()
            self._synced = True

    def head(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(W, b)`` of the metrics (None, None without a classifier); b is None for a bias-free head."""
        c = self._classifier
        if c is None:
            return None, None
        if isinstance(c, tuple) and c[0] == "auto":
            lin = c[1]
            if self.stats.dim is not None and lin.in_features != self.stats.dim:
                return None, None  # the automatic classifier does not read these features
            c = lin
        if isinstance(c, nn.Linear):
            return c.weight.detach(), None if c.bias is None else c.bias.detach()
        return c

    def begin_nc4(self) -> "NeuralCollapseTracker":
        """Sync the statistics and start the nc4 pass: later :meth:`update` calls count nc4 with
        the final class means (of the classes present)."""
        W, b = self.head()
        if W is None:
            raise ValueError("nc4 needs a classifier; pass classifier= (an nn.Linear or (W, b))")
        self._sync()
        counts = self.stats.counts
        if counts is None:
            raise ValueError("no samples yet: feed the first pass before begin_nc4()")
        present = torch.nonzero(counts > 0).squeeze(1)
        dev = self.stats.device
        W = W.to(dev, torch.float64)
        b = None if b is None else b.to(dev, torch.float64)
        self._counter = NC4Counter(self.stats.means[present], W[present], None if b is None else b[present])
        self._remap = torch.full((self.num_classes,), -1, dtype=torch.long, device=dev)
        self._remap[present] = torch.arange(present.numel(), device=dev)
        return self

    def compute(self) -> NCMetrics:
        """The metrics (synced over the processes; nc4 if :meth:`begin_nc4` was called)."""
        self._sync()
        W, b = self.head()
        res = self.stats.compute(W, b, weighted_mean=self.weighted_mean, empty=self.empty)
        if self._counter is not None:
            if self.sync and not self._counter_synced:
                self._counter.sync()
                self._counter_synced = True
            res = res.with_nc4(self._counter.compute())
        return res

    @property
    def counter(self) -> NC4Counter | None:
        """The nc4 counter of the second pass (its accuracies, over the classes present)."""
        return self._counter

    def run(self, loader: Iterable) -> NCMetrics:
        """All metrics over ``loader`` (a DataLoader or any iterable of batches): one pass into
        the statistics and, with ``nc4``, a second one for nc4.  Hooks and the model's modes are
        restored afterwards, also on an exception."""
        if self.nc4 and isinstance(loader, Iterator):  # (iter() on a DataLoader would start its workers)
            raise ValueError("nc4 needs a second pass over the data: pass a DataLoader or a list, not an iterator")
        self.reset()
        with self:
            for batch in loader:
                self.update_batch(batch)
            if self.nc4:
                self.begin_nc4()
                for batch in loader:
                    self.update_batch(batch)
            return self.compute()


def track(model: nn.Module, loader: Iterable, layer: str | nn.Module | None = None, *, nc4: bool = False,
          autocast=None, **kwargs) -> NCMetrics:
    """All NC metrics of ``model``'s penultimate features over ``loader``, in one call:
    ``NeuralCollapseTracker(model, layer, nc4=nc4, **kwargs).run(loader)``.

    ``autocast`` (optional) is a context manager to run the passes in, e.g.
    ``torch.autocast("cuda", torch.bfloat16)``; the features are cast to float64 for the
    statistics either way.  See :class:`NeuralCollapseTracker` for the other arguments.

    >>> import torch
    >>> from torchvision.models import resnet18
    >>> net = resnet18(num_classes=4)                          # model.fc: d = 512, K = 4
    >>> data = [(torch.randn(8, 3, 32, 32), torch.arange(8) % 4) for _ in range(2)]
    >>> res = track(net, data)
    >>> res.dim, res.num_classes
    (512, 4)
    """
    tracker = NeuralCollapseTracker(model, layer, nc4=nc4, **kwargs)
    with autocast if autocast is not None else nullcontext():
        return tracker.run(loader)
