"""Validation at the boundary: one set of checks, one wording, used once by every public entry point.

Every check takes the argument's public name (the keyword a user typed, e.g. ``"K"``, ``"gtol"``)
and raises ``ValueError`` with a message that names it, says what is allowed and shows the value:

    K must be an integer >= 2, got 1.5
    K must be >= 2, got 1
    tau must be > 0, got 0.0
    line_search must be one of 'wolfe', 'armijo', got 'exact'

The command line turns these messages into one-line errors (exit status 2); nothing below the
boundary validates again.  The array checks at the end (:func:`check_features`,
:func:`check_labels`, :func:`check_head`, :func:`check_num_classes`) validate what the metrics
(:mod:`nclab.metrics`) take in: an N x d feature matrix, N labels in [0, K), a (K, d) classifier
and its (K,) bias.

>>> check_int("K", 4, minimum=2)
4
>>> check_real("tau", 5, positive=True)
5.0
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable

import numpy as np
import torch

__all__ = [
    "check_int",
    "check_real",
    "check_bool",
    "check_choice",
    "check_seed",
    "as_tensor",
    "check_num_classes",
    "check_features",
    "check_labels",
    "check_head",
]


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (numpy integers included, bool excluded) in [minimum, maximum]; returns int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{name} must be an integer{bound}, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_real(
    name: str,
    value: Any,
    *,
    positive: bool = False,
    nonnegative: bool = False,
    finite: bool = True,
    maximum: float | None = None,
) -> float:
    """A real number (bool excluded; strings that parse as numbers are not accepted), optionally
    ``> 0`` (positive), ``>= 0`` (nonnegative), finite (default) and ``<= maximum``; returns float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if math.isnan(value) or (finite and not math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if nonnegative and not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """Exactly True or False (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """One of ``choices`` (compared as given)."""
    choices = tuple(choices)
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def check_seed(value: Any, name: str = "seed") -> int:
    """A reproducibility seed: an integer >= 0."""
    return check_int(name, value, minimum=0)


# --------------------------------------------------------------------------------------------
# arrays: features, labels, a classifier head (N x d, batch first; REFERENCE.md notation)
# --------------------------------------------------------------------------------------------


def as_tensor(x: Any, name: str) -> torch.Tensor:
    """A tensor as is; a numpy array, list or scalar as a tensor sharing or copying its data
    (read-only arrays, e.g. memory-mapped ones, are copied: torch wants writable memory)."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray) or np.isscalar(x) or isinstance(x, (list, tuple)):
        arr = np.asarray(x)
        if arr.dtype == object:
            raise ValueError(f"{name} must be a numeric array, got an object array")
        if arr.dtype.kind not in "biufc":  # strings, dates: torch cannot hold them
            raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
        if not arr.flags.writeable:
            arr = np.array(arr, copy=True)
        return torch.from_numpy(np.ascontiguousarray(arr))
    raise ValueError(f"{name} must be a torch.Tensor or a numpy array, got {type(x).__name__}")


def check_num_classes(value: Any, name: str = "num_classes") -> int:
    """A class count K: an integer >= 2 (numpy integers included, bool excluded); returns int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 2:
        raise ValueError(f"{name} must be an integer >= 2, got {value!r}")
    return int(value)


def check_features(features: Any, name: str = "features", dim: int | None = None) -> torch.Tensor:
    """An N x d float matrix of features, one sample per row: 2-D, floating point, finite, with
    ``d == dim`` when ``dim`` is given.  Returns a tensor (numpy input is wrapped, not cast)."""
    X = as_tensor(features, name)
    if X.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (N, d) with one sample per row, got shape {tuple(X.shape)}"
        )
    if not torch.is_floating_point(X):
        raise ValueError(f"{name} must have a floating-point dtype, got {X.dtype}; cast it with .float()")
    if dim is not None and X.shape[1] != dim:
        raise ValueError(f"{name} has dimension d = {X.shape[1]}, but earlier data had d = {dim}")
    # A finite sum proves every entry finite (one fast reduction); only then is the full check skipped.
    if X.numel() and not bool(torch.isfinite(X.sum())) and not bool(torch.isfinite(X).all()):
        bad = int((~torch.isfinite(X)).any(dim=1).sum())
        raise ValueError(f"{name} contains NaN or inf values in {bad} row(s); remove or fix them first")
    return X


def check_labels(labels: Any, num_samples: int, num_classes: int | None, name: str = "labels") -> torch.Tensor:
    """Integer class labels, one per sample (length ``num_samples``), in ``[0, num_classes)``;
    returns them as int64."""
    y = as_tensor(labels, name)
    if y.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class indices, got shape {tuple(y.shape)}")
    if y.shape[0] != num_samples:
        raise ValueError(f"{name} has {y.shape[0]} entries but features have {num_samples} rows")
    if torch.is_floating_point(y) or torch.is_complex(y) or y.dtype == torch.bool:
        raise ValueError(
            f"{name} must be integers (class indices 0..K-1), got dtype {y.dtype}; "
            "cast whole-number labels with .long() / .astype(int)"
        )
    if y.numel():
        lo, hi = int(y.min()), int(y.max())
        if lo < 0:
            raise ValueError(f"{name} must be >= 0, got a label {lo}")
        if num_classes is not None and hi >= num_classes:
            raise ValueError(
                f"{name} must be < num_classes = {num_classes}, got a label {hi}; "
                "pass the right num_classes (K) or fix the labels"
            )
    return y.long()


def check_head(classifier: Any, bias: Any, K: int, d: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """A (K, d) classifier W (row k = class k) and an optional (K,) bias b, both finite; returns
    both in float64 on ``device`` (b = 0 for a bias-free head)."""
    W = check_features(classifier, "classifier").to(device, torch.float64)
    if tuple(W.shape) != (K, d):
        raise ValueError(f"classifier must have shape (K, d) = ({K}, {d}), got {tuple(W.shape)}")
    if bias is None:
        return W, torch.zeros(K, dtype=torch.float64, device=device)
    b = as_tensor(bias, "bias").to(device, torch.float64)
    if tuple(b.shape) != (K,):
        raise ValueError(f"bias must have shape (K,) = ({K},), got {tuple(b.shape)}")
    if not bool(torch.isfinite(b).all()):
        raise ValueError("bias contains NaN or inf values")
    return W, b
