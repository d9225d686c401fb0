"""Validation at the boundary: one set of checks, one wording, used once by every public entry point.

Every check takes the argument's public name (the keyword a user typed, e.g. ``"K"``, ``"gtol"``)
and raises ``ValueError`` with a message that names it, says what is allowed and shows the value:

    K must be an integer >= 2, got 1.5
    K must be >= 2, got 1
    tau must be > 0, got 0.0
    line_search must be one of 'wolfe', 'armijo', got 'exact'

The command line turns these messages into one-line errors (exit status 2); nothing below the
boundary validates again.  Array checks (features, labels, a classifier head) live with the
metrics that define their shapes, in :mod:`nclab.metrics`.

>>> check_int("K", 4, minimum=2)
4
>>> check_real("tau", 5, positive=True)
5.0
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable

__all__ = ["check_int", "check_real", "check_bool", "check_choice", "check_seed"]


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
