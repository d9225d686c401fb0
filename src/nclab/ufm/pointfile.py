"""Points of a UFM problem in files: ``.npz`` archives of plain arrays (no pickle).

A point of a problem is a tuple of float64 tensors (:mod:`nclab.ufm.problems`); in a file each
factor has a name:

* CE and MSE UFM: ``W`` (K, d), ``H`` (N, d) -- batch first, samples class-major as
  ``problem.labels`` -- and ``b`` (K,) when the problem has a bias (``bias=True``);
* normalized UFM: ``W`` (K, d) and ``H`` (N, d) with unit-norm rows;
* sphere problem: ``X`` (n_points, d) with unit-norm rows.

:func:`save_point` writes such an archive atomically (:func:`nclab.io.atomic_write`), readable with
``numpy.load(path)`` (``allow_pickle=False``); :func:`load_point` reads one back for a given
problem and checks it against the problem's options: the keys, the shapes, finiteness and, on the
oblique manifold, the unit rows.  Every mismatch raises ValueError with a one-line message that
names the file, the array and what was expected.

Example
-------
>>> import tempfile, pathlib
>>> from nclab.ufm.problems import make_problem
>>> p = make_problem("ce", K=3, n=2, d=3)
>>> path = save_point(pathlib.Path(tempfile.mkdtemp()) / "x.npz", p, p.optimal_point(seed=0))
>>> x = load_point(path, p)
>>> [tuple(t.shape) for t in x]
[(3, 3), (6, 3), (3,)]
"""

from __future__ import annotations

import io as _io
import zipfile
from pathlib import Path

import numpy as np
import torch

from nclab.io import atomic_write

__all__ = ["factor_names", "factor_shapes", "save_point", "load_point", "UNIT_TOL"]

#: On the oblique manifold (normalized, sphere) a row norm may differ from 1 by at most this.
UNIT_TOL = 1e-8


def factor_names(problem) -> tuple[str, ...]:
    """The names of the factors of a point of ``problem`` in a point file, in the tuple's order."""
    if problem.loss == "sphere":
        return ("X",)
    names = ("W", "H")
    return names + ("b",) if len(problem.manifold.factors) == 3 else names


def factor_shapes(problem) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of a point of ``problem`` (from its manifold)."""
    return {name: tuple(f.shape) for name, f in zip(factor_names(problem), problem.manifold.factors)}


def _unit_rows(problem) -> bool:
    return problem.loss in ("normalized", "sphere")


def save_point(path, problem, x) -> Path:
    """Write the point ``x`` of ``problem`` to ``path`` (.npz, float64 arrays named by
    :func:`factor_names`) atomically; returns the path."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"a point file must end in .npz, got {path.name!r}")
    names = factor_names(problem)
    if len(x) != len(names):
        raise ValueError(f"a point of this problem has {len(names)} factors ({', '.join(names)}), got {len(x)}")
    arrays = {name: np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float64) for name, t in zip(names, x)}
    buf = _io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write(path, buf.getvalue())


def load_point(path, problem) -> tuple:
    """Read a point of ``problem`` from the .npz file ``path`` (see the module docstring).

    Returns a tuple of float64 tensors in the problem's factor order.  Raises ValueError (one
    line, naming the file) for a missing or unreadable file, missing or unknown keys, a shape that
    does not match the problem's options, non-finite values, or (normalized, sphere) rows that are
    not of unit norm."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"point file {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a readable .npz file (not a zip archive written by numpy.savez)")
    shapes = factor_shapes(problem)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            missing = [k for k in shapes if k not in keys]
            unknown = sorted(keys - set(shapes))
            if missing or unknown:
                parts = []
                if missing:
                    parts.append(f"missing {missing}")
                if unknown:
                    parts.append(f"unknown {unknown}")
                hint = ""
                if problem.loss in ("ce", "mse") and ("b" in missing or "b" in unknown):
                    hint = " (b goes with --bias, no b with --no-bias)"
                expected = ", ".join(f"{k} {s}" for k, s in shapes.items())
                raise ValueError(f"{path}: wrong keys for the {problem.loss} problem ({'; '.join(parts)}){hint}; "
                                 f"expected {expected}")
            arrays = {k: z[k] for k in shapes}
    except ValueError:
        raise
    except Exception as err:  # a corrupt member: zipfile, OSError, EOFError ...
        raise ValueError(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from None
    opts = ", ".join(f"{k}={v}" for k, v in problem.describe().items() if k != "loss")
    out = []
    for name, shape in shapes.items():
        a = arrays[name]
        if a.shape != shape:
            raise ValueError(f"{path}: {name} has shape {a.shape}, but the {problem.loss} problem ({opts}) "
                             f"needs {shape}")
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise ValueError(f"{path}: {name} must be a real array, got dtype {a.dtype}")
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            raise ValueError(f"{path}: {name} has {int((~np.isfinite(a)).sum())} non-finite value(s)")
        if _unit_rows(problem) and a.ndim == 2:
            err = float(np.abs(np.linalg.norm(a, axis=1) - 1.0).max()) if a.size else 0.0
            if err > UNIT_TOL:
                raise ValueError(f"{path}: the rows of {name} must have unit norm on the {problem.loss} problem's "
                                 f"oblique manifold (largest deviation {err:.2e} > {UNIT_TOL:g})")
        out.append(torch.from_numpy(np.ascontiguousarray(a)))
    return tuple(out)
