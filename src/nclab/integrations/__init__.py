"""Neural-collapse metrics inside the training frameworks people already use.

==================================  ==========================================================
:mod:`.lightning`                   ``NeuralCollapseCallback`` for a PyTorch Lightning Trainer
                                    (``pip install 'nclab[lightning]'``)
:mod:`.hf`                          ``NeuralCollapseCallback`` for a Hugging Face ``Trainer``,
                                    causal language models included (``pip install 'nclab[hf]'``)
==================================  ==========================================================

Both measure with :class:`nclab.track.NeuralCollapseTracker` (a forward hook into the exact,
distributed :class:`nclab.metrics.NCStats`) and log through the framework's own loggers; nclab
writes no logging client.  Nothing here is imported by ``import nclab``: each module imports its
framework when it is imported, and says which extra to install when the framework is missing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the hint for a missing framework comes before torch is imported
    from nclab.metrics import NCMetrics

__all__ = ["require", "metric_logs", "preserved_rng"]


def require(module: str, extra: str, what: str):
    """Import ``module`` or, when it (or a package above it) is not installed, raise ImportError
    with a one-line install hint naming the extra.  An installed framework that fails to import
    for another reason keeps its own error."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if not missing or not (module == missing or module.startswith(missing + ".")):
            raise
        raise ImportError(f"{what} needs {module.split('.')[0]}: pip install 'nclab[{extra}]'") from None


def metric_logs(result: "NCMetrics", prefix: str) -> dict[str, float]:
    """The computable metrics of ``result`` keyed ``prefix + name`` (REFERENCE.md names)."""
    return {prefix + name: value for name, value in result.as_dict().items() if value is not None}


def preserved_rng():
    """A context that restores the random state of the CPU (and of the current GPU) on exit: a
    measurement that iterates a shuffled loader must not change the training that follows."""
    import torch

    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return torch.random.fork_rng(devices=devices)
