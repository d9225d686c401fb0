"""Reading feature files and writing results safely.

Writes: :func:`atomic_write` is nclab's one atomic writer (temporary file beside the target,
fsync, ``os.replace``): a reader, or a run interrupted at any moment, sees the old file or the
complete new one, never a part.  :func:`write_json_atomic` and the run directories of
:mod:`nclab.nets` (checkpoints, logs) write through it.

Feature files (``nclab metrics``):
  * ``.npz`` with ``features`` (N, d) float, ``labels`` (N,) int, optional ``classifier`` (K, d)
    and ``bias`` (K,); no other keys (a typo such as ``W`` is reported, not ignored);
  * a memory-mapped ``.npy`` pair: features.npy (N, d) plus labels.npy (N,) (and optional
    classifier/bias .npy files), read in batches, for data that does not fit in memory.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

__all__ = ["NPZ_KEYS", "load_feature_file", "atomic_write", "write_json_atomic", "json_ready"]

NPZ_KEYS = {
    "features": "(N, d) float features, one sample per row",
    "labels": "(N,) integer class labels 0..K-1",
    "classifier": "(K, d) last-layer weights, optional",
    "bias": "(K,) last-layer bias, optional",
}


def _expect(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _validate(arrays: dict, source: str) -> dict:
    X, y = arrays["features"], arrays["labels"]
    _expect(X.ndim == 2, f"{source}: 'features' must be 2-D (N, d), got shape {X.shape}")
    _expect(np.issubdtype(X.dtype, np.floating), f"{source}: 'features' must be floating point, got {X.dtype}")
    _expect(y.ndim == 1, f"{source}: 'labels' must be 1-D (N,), got shape {y.shape}")
    _expect(np.issubdtype(y.dtype, np.integer), f"{source}: 'labels' must be integers, got {y.dtype}")
    _expect(y.shape[0] == X.shape[0], f"{source}: {y.shape[0]} labels for {X.shape[0]} feature rows")
    W = arrays.get("classifier")
    if W is not None:
        _expect(W.ndim == 2 and W.shape[1] == X.shape[1],
                f"{source}: 'classifier' must be (K, d) with d = {X.shape[1]}, got shape {W.shape}")
        _expect(W.shape[0] >= 2, f"{source}: 'classifier' needs K >= 2 rows, got {W.shape[0]}")
    b = arrays.get("bias")
    if b is not None:
        _expect(W is not None, f"{source}: 'bias' given without 'classifier'")
        _expect(b.shape == (W.shape[0],), f"{source}: 'bias' must have shape ({W.shape[0]},), got {b.shape}")
    return arrays


def load_feature_file(path, labels=None, classifier=None, bias=None) -> dict:
    """Load features and labels (and optionally classifier, bias) from an .npz or an .npy pair.

    ``.npy`` files are memory-mapped (``mmap_mode='r'``), so N x d may exceed the memory; give
    ``labels`` (and ``classifier``/``bias``) as separate .npy paths.  Returns a dict with the keys
    of :data:`NPZ_KEYS` (None for absent optional arrays).  Raises ValueError naming the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"feature file {path} does not exist")
    if path.suffix == ".npz":
        if labels is not None or classifier is not None or bias is not None:
            raise ValueError("an .npz file carries its own labels/classifier/bias; do not pass them separately")
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path}: not a readable .npz file (not a zip archive written by numpy.savez)")
        try:
            with np.load(path, allow_pickle=False) as z:
                keys = set(z.files)
                missing = {"features", "labels"} - keys
                unknown = keys - set(NPZ_KEYS)
                if missing or unknown:
                    expected = "; ".join(f"{k}: {v}" for k, v in NPZ_KEYS.items())
                    problem = []
                    if missing:
                        problem.append(f"missing {sorted(missing)}")
                    if unknown:
                        problem.append(f"unknown {sorted(unknown)}")
                    raise ValueError(f"{path}: wrong keys ({', '.join(problem)}; found {sorted(keys)}). Expected {expected}")
                arrays = {k: (z[k] if k in keys else None) for k in NPZ_KEYS}
        except ValueError:
            raise
        except Exception as err:  # a corrupt archive: zipfile, OSError, EOFError ...
            raise ValueError(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from None
        return _validate(arrays, str(path))
    if path.suffix == ".npy":
        if labels is None:
            raise ValueError("features given as .npy: pass the labels .npy too (--labels LABELS.npy)")

        def npy(p, name):
            p = Path(p)
            if not p.is_file():
                raise ValueError(f"{name} file {p} does not exist")
            try:
                return np.load(p, mmap_mode="r", allow_pickle=False)
            except Exception as err:
                raise ValueError(f"{p}: not a readable .npy file for {name} ({type(err).__name__}: {err})") from None

        arrays = {
            "features": npy(path, "features"),
            "labels": npy(labels, "labels"),
            "classifier": None if classifier is None else np.asarray(npy(classifier, "classifier")),
            "bias": None if bias is None else np.asarray(npy(bias, "bias")),
        }
        return _validate(arrays, str(path))
    raise ValueError(f"{path}: expected an .npz file or a features .npy file, got '{path.suffix or 'no suffix'}'")


def json_ready(obj):
    """Replace non-finite floats by None (JSON has no NaN/inf), numpy scalars and one-element torch
    tensors by Python numbers, paths by strings and callables by their name (a solver log's
    options); dicts, lists and tuples are cleaned entry by entry (keys become strings).  Anything
    else is returned as it is.

    >>> json_ready({"f": float("nan"), 1: (np.float32(0.5), np.int64(3), np.bool_(True)), "g": len})
    {'f': None, '1': [0.5, 3, True], 'g': 'len'}
    """
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    torch = sys.modules.get("torch")  # a tensor exists only where torch was imported
    if torch is not None and isinstance(obj, torch.Tensor):
        return json_ready(obj.item()) if obj.numel() == 1 else obj
    if callable(obj):
        return getattr(obj, "__name__", repr(obj))
    return obj


def atomic_write(path, data: bytes | Callable[[BinaryIO], None], *, mode: int = 0o666) -> Path:
    """Replace ``path`` atomically by ``data`` (bytes) or by what ``data(file)`` writes to a binary file.

    The content goes to a new temporary file in the same folder (created exclusively, with
    permissions ``mode`` less the umask, as :func:`open` would), is flushed and ``os.fsync``-ed,
    and then renamed over ``path`` with ``os.replace``; so ``path`` holds either its old content or
    the complete new one, also after a crash.  On any error the temporary file is removed and
    ``path`` is untouched.  The folder is created if needed.  Returns ``path``.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> atomic_write(p, b"hello").read_bytes()
    b'hello'
    >>> atomic_write(p, lambda f: f.write(b"bye")).read_bytes()
    b'bye'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):  # a clash of two random names is only theoretically possible
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover
        raise FileExistsError(f"could not create a temporary file beside {path}")
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path, obj, *, indent: int = 2) -> Path:
    """Write ``obj`` as strict JSON (non-finite numbers as null, see :func:`json_ready`) to
    ``path`` through :func:`atomic_write`, with the permissions ``open`` gives a new file (0666
    less the umask: 0644 under the usual 022), so that collaborators on a shared machine can read
    results.  (Until this release JSON results were 0600, an accident of ``tempfile.mkstemp``.)"""
    text = json.dumps(json_ready(obj), indent=indent, allow_nan=False) + "\n"
    return atomic_write(path, text.encode())
