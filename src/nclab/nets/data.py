"""Image data sets for the deep-network experiments, as in-memory normalised tensors.

Three data sets, 10 classes each: MNIST and Fashion-MNIST (28 x 28 grey-scale images) and
CIFAR-10 (32 x 32 colour images, 3 channels; :func:`input_shape`):

``"mnist"``
    The four original IDX files read by ``torchvision.datasets.MNIST(root=data_dir)``, i.e. from
    ``<data_dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``.  Official split: 60,000
    training and 10,000 test images.  ``download=True`` lets torchvision fetch them when online.
``"fashion-mnist"``
    All 70,000 Fashion-MNIST images pooled in ``<data_dir>/FashionMNIST70k/{images-idx3,labels-idx1}-ubyte``
    (the shared copy; its README says the official train/test split is *not* recorded in it).
    nclab draws its own split: 6,000 training and 1,000 test images per class (60,000 / 10,000),
    chosen by the seeded rule below with ``FASHION_SPLIT_SEED = 0``.  The results are therefore
    *not* comparable image for image with the official Fashion-MNIST test set.  ``download=True``
    fetches the official files with torchvision and pools them into that layout.
``"cifar10"``
    The python version of CIFAR-10 (Krizhevsky 2009) in torchvision's layout,
    ``<data_dir>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``: 50,000 training
    and 10,000 test images.  The batches are Python pickles (a dict with ``data``, an N x 3072
    uint8 array, rows = 1024 red, 1024 green, 1024 blue pixels of a 32 x 32 image, and ``labels``).
    torchvision's ``CIFAR10`` reads them with ``pickle.load``, which can execute code stored in a
    file; nclab's rule is that loading a file never executes code, so :func:`read_cifar_batch`
    unpickles with a restricted unpickler that accepts only plain containers, strings, bytes and
    numbers and the reconstruction of numpy arrays (every other global is refused with an error).
    ``download=True`` fetches and unpacks the official archive with torchvision's downloader
    (``torchvision.datasets.CIFAR10.url``, checked against its md5) without unpickling anything.

Seeded selection rule (split and balanced subsets)
    Every image gets a 64-bit key ``blake2b(image bytes, key="nclab/<purpose>/<seed>")``; within
    each class the images are ordered by key (ties by position in the file) and taken from the front.
    The Fashion-MNIST training set is the first 6,000 of each class (purpose "fashion-split",
    seed ``split_seed``), the test set the next 1,000.  ``per_class=n`` keeps the first n of each
    class of the chosen split (purpose "subset", seed ``seed``).  The choice depends only on the
    seed and the image contents: not on the order of the files, nor on numpy/torch versions, and a
    subset with n per class is contained in the one with n+1.  Identical images get identical keys
    and so almost always fall on the same side of the split.

Normalisation
    ``x = (pixel/255 - mean) / std`` with the customary statistics of each training set:
    MNIST mean 0.1307, std 0.3081; Fashion-MNIST mean 0.2860, std 0.3530; CIFAR-10 per channel
    (R, G, B) mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616) (``NORMALIZATION``).

Example
-------
>>> from nclab.nets.data import load_dataset
>>> ds = load_dataset("mnist", "../shared/data", train=False, per_class=5)   # doctest: +SKIP
>>> ds.tensors[0].shape, ds.tensors[1].bincount().tolist()                  # doctest: +SKIP
(torch.Size([50, 1, 28, 28]), [5, 5, 5, 5, 5, 5, 5, 5, 5, 5])
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = [
    "DATASETS",
    "NORMALIZATION",
    "FASHION_SPLIT_SEED",
    "FASHION_TRAIN_PER_CLASS",
    "FASHION_TEST_PER_CLASS",
    "MNIST_FILES",
    "FASHION_FILES",
    "load_dataset",
    "num_classes",
    "read_idx",
    "write_idx",
    "selection_keys",
    "balanced_indices",
    "fashion_split_indices",
    "CIFAR_DIR",
    "CIFAR_FILES",
    "input_shape",
    "read_cifar_batch",
]

#: Names accepted by :func:`load_dataset` (case and '-'/'_' do not matter).
DATASETS = ("mnist", "fashion-mnist", "cifar10")
#: (mean, std) of the pixel values in [0, 1] of each training set, used to normalise (per channel
#: for CIFAR-10: R, G, B).
NORMALIZATION = {
    "mnist": (0.1307, 0.3081),
    "fashion-mnist": (0.2860, 0.3530),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
#: (channels, height = width) of each data set's images.
_INPUT_SHAPE = {"mnist": (1, 28), "fashion-mnist": (1, 28), "cifar10": (3, 32)}
#: Seed of nclab's Fashion-MNIST train/test split (see the module docstring).
FASHION_SPLIT_SEED = 0
FASHION_TRAIN_PER_CLASS = 6000
FASHION_TEST_PER_CLASS = 1000
_NUM_CLASSES = {"mnist": 10, "fashion-mnist": 10, "cifar10": 10}

#: split -> (images file, labels file) under <data_dir>/MNIST/raw (torchvision's layout).
MNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: (images file, labels file) under <data_dir>/FashionMNIST70k.
FASHION_FILES = ("images-idx3-ubyte", "labels-idx1-ubyte")
_FASHION_DIR = "FashionMNIST70k"
#: CIFAR-10's folder under <data_dir> (torchvision's ``CIFAR10.base_folder``) and its batch files.
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_FILES = {True: tuple(f"data_batch_{i}" for i in range(1, 6)), False: ("test_batch",)}

_IDX_UBYTE = 0x08


def _canonical(name) -> str:
    key = str(name).strip().lower().replace("_", "-")
    if key == "fashionmnist":
        key = "fashion-mnist"
    if key == "cifar-10":
        key = "cifar10"
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    return key


def num_classes(name: str) -> int:
    """Number of classes of a data set in ``DATASETS`` (10 for each)."""
    return _NUM_CLASSES[_canonical(name)]


def input_shape(name: str) -> tuple[int, int]:
    """``(channels, image_size)`` of a data set's images: (1, 28) for MNIST and Fashion-MNIST,
    (3, 32) for CIFAR-10 (what :func:`nclab.nets.train.build_model` needs)."""
    return _INPUT_SHAPE[_canonical(name)]


# ---------------------------------------------------------------------------------------- IDX files
def _idx_header(path: Path, ndim: int) -> tuple[int, ...]:
    """Validate an unsigned-byte IDX file's header and size; return its dimensions.

    IDX (LeCun et al.): bytes 0-1 zero, byte 2 the type (0x08 = unsigned byte), byte 3 the number
    of dimensions, then one big-endian int32 per dimension, then the data."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4 + 4 * ndim)
    if len(head) < 4:
        raise ValueError(f"{path}: not an IDX file (only {size} bytes)")
    if head[0] != 0 or head[1] != 0 or head[2] != _IDX_UBYTE or head[3] != ndim:
        magic = int.from_bytes(head[:4], "big")
        expected = (_IDX_UBYTE << 8) | ndim
        raise ValueError(
            f"{path}: bad IDX magic number 0x{magic:08x}, expected 0x{expected:08x} "
            f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''}); the file is corrupt or not "
            "the expected one"
        )
    if len(head) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header ({size} bytes)")
    dims = tuple(int(v) for v in np.frombuffer(head[4:], dtype=">i4"))
    expected_size = 4 + 4 * ndim + int(np.prod(dims, dtype=np.int64))
    if size != expected_size:
        raise ValueError(
            f"{path}: IDX header says shape {dims} ({expected_size} bytes in all) but the file has "
            f"{size} bytes; it is truncated or corrupt, copy or download it again"
        )
    return dims


def read_idx(path, ndim: int, item_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Read an unsigned-byte IDX file (big-endian header) into a uint8 array of shape ``dims``.

    Raises ValueError with the file's name if the magic number, the number of dimensions, the
    per-item shape (``item_shape``, e.g. (28, 28)) or the file size is wrong."""
    path = Path(path)
    dims = _idx_header(path, ndim)
    if item_shape is not None and tuple(dims[1:]) != tuple(item_shape):
        raise ValueError(f"{path}: items have shape {tuple(dims[1:])}, expected {tuple(item_shape)}")
    offset = 4 + 4 * ndim
    data = np.fromfile(path, dtype=np.uint8, offset=offset)
    return data.reshape(dims)


def write_idx(path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (atomically: a temporary file renamed into place)."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, _IDX_UBYTE, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(header)
        f.write(array.tobytes())
    os.replace(tmp, path)


def _read_pair(images_path: Path, labels_path: Path, K: int) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, 3, (28, 28))
    labels = read_idx(labels_path, 1)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds {labels.shape[0]} labels"
        )
    if labels.size and int(labels.max()) >= K:
        raise ValueError(f"{labels_path}: label {int(labels.max())} out of range 0..{K - 1}")
    return images, labels


# --------------------------------------------------------------------------------- seeded selection
def selection_keys(images: np.ndarray, seed: int, purpose: str) -> np.ndarray:
    """64-bit keys ``blake2b(image bytes, key="nclab/<purpose>/<seed>")`` (uint64, one per image).

    A pure function of the seed, the purpose and each image's pixels."""
    salt = f"nclab/{purpose}/{int(seed)}".encode()
    flat = np.ascontiguousarray(images.reshape(len(images), -1), dtype=np.uint8)
    digests = b"".join(hashlib.blake2b(row.tobytes(), digest_size=8, key=salt).digest() for row in flat)
    return np.frombuffer(digests, dtype=">u8").astype(np.uint64)


def _ranked_by_class(labels: np.ndarray, keys: np.ndarray, K: int) -> list[np.ndarray]:
    """For each class, its indices ordered by (key, index)."""
    order = np.lexsort((np.arange(len(keys)), keys))  # primary: key; ties: position
    lab = labels[order]
    return [order[lab == k] for k in range(K)]


def balanced_indices(
    images: np.ndarray, labels: np.ndarray, per_class: int, seed: int, *, K: int = 10, what: str = "data"
) -> np.ndarray:
    """Indices (ascending) of a seeded balanced subset with ``per_class`` images of every class."""
    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise ValueError(f"per_class must be a positive integer (images per class), got {per_class!r}")
    counts = np.bincount(labels, minlength=K)
    short = [k for k in range(K) if counts[k] < per_class]
    if short:
        k = min(short, key=lambda c: counts[c])
        raise ValueError(
            f"per_class={per_class} is more than the {counts[k]} images of class {k} in {what}; "
            f"at most {counts.min()} per class are available (class counts: {counts.tolist()})"
        )
    ranked = _ranked_by_class(labels, selection_keys(images, seed, "subset"), K)
    return np.sort(np.concatenate([r[:per_class] for r in ranked]))


def fashion_split_indices(
    images: np.ndarray, labels: np.ndarray, train: bool, split_seed: int = FASHION_SPLIT_SEED, *, K: int = 10
) -> np.ndarray:
    """Indices (ascending) into the pooled Fashion-MNIST of nclab's seeded split: per class the
    first 6,000 by key are the training set, the next 1,000 the test set (module docstring)."""
    counts = np.bincount(labels, minlength=K)
    need = FASHION_TRAIN_PER_CLASS + FASHION_TEST_PER_CLASS
    if counts.min() < need:
        k = int(counts.argmin())
        raise ValueError(
            f"the Fashion-MNIST pool has {counts[k]} images of class {k}; the 6,000/1,000 split needs "
            f"{need} per class (class counts: {counts.tolist()})"
        )
    ranked = _ranked_by_class(labels, selection_keys(images, split_seed, "fashion-split"), K)
    lo, hi = (0, FASHION_TRAIN_PER_CLASS) if train else (FASHION_TRAIN_PER_CLASS, need)
    return np.sort(np.concatenate([r[lo:hi] for r in ranked]))


# ----------------------------------------------------------------------------------------- loaders
def _missing_message(name: str, where: Path, files, data_dir: Path) -> str:
    listing = ", ".join(files)
    if name == "cifar10":
        how = (
            "run with download=True (`nclab train --download`) where the internet is reachable, which "
            "fetches and unpacks the official cifar-10-python.tar.gz there with torchvision, or unpack "
            "that archive into the data directory yourself"
        )
    elif name == "mnist":
        how = (
            "run with download=True (`nclab train --download`) where the internet is reachable, which "
            "lets torchvision fetch them, or copy the four uncompressed IDX files there "
            "(e.g. from ../shared/data/MNIST/raw)"
        )
    else:
        how = (
            "run with download=True (`nclab train --download`) where the internet is reachable, which "
            "fetches the official Fashion-MNIST with torchvision and pools its 70,000 images there, or "
            "copy the two pooled IDX files (e.g. from ../shared/data/FashionMNIST70k)"
        )
    state = "does not exist" if not data_dir.is_dir() else "exists"
    return f"{name}: expected {listing} in {where} (data directory {data_dir} {state}); {how}"


def _load_mnist(data_dir: Path, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray]:
    raw = data_dir / "MNIST" / "raw"
    files = MNIST_FILES[train]
    # torchvision checks that all four files exist, whichever split is asked for
    every = MNIST_FILES[True] + MNIST_FILES[False]
    if not download:
        missing = [f for f in every if not (raw / f).is_file()]
        if missing:
            raise FileNotFoundError(_missing_message("mnist", raw, missing, data_dir))
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
    from torchvision.datasets import MNIST

    if (raw / files[0]).is_file() and (raw / files[1]).is_file():
        # validate before torchvision parses them: its reader fails with a bare assertion
        _idx_header(raw / files[0], 3)
        _idx_header(raw / files[1], 1)
    ds = MNIST(root=str(data_dir), train=train, download=download)
    images, labels = ds.data.numpy(), ds.targets.numpy()
    if images.shape[1:] != (28, 28) or images.shape[0] != labels.shape[0]:
        raise ValueError(f"{raw}: unexpected MNIST shapes {images.shape} / {labels.shape}")
    return images, labels.astype(np.int64)


def _download_fashion_pool(data_dir: Path) -> None:
    """Fetch the official Fashion-MNIST (torchvision) and write the pooled, class-sorted IDX files."""
    from torchvision.datasets import FashionMNIST

    parts = [FashionMNIST(root=str(data_dir), train=t, download=True) for t in (True, False)]
    images = np.concatenate([p.data.numpy() for p in parts])
    labels = np.concatenate([p.targets.numpy() for p in parts]).astype(np.uint8)
    order = np.argsort(labels, kind="stable")
    out = data_dir / _FASHION_DIR
    out.mkdir(parents=True, exist_ok=True)
    write_idx(out / FASHION_FILES[0], images[order])
    write_idx(out / FASHION_FILES[1], labels[order])


def _load_fashion(data_dir: Path, train: bool, download: bool, split_seed: int):
    where = data_dir / _FASHION_DIR
    missing = [f for f in FASHION_FILES if not (where / f).is_file()]
    if missing and download:
        _download_fashion_pool(data_dir)
        missing = [f for f in FASHION_FILES if not (where / f).is_file()]
    if missing:
        raise FileNotFoundError(_missing_message("fashion-mnist", where, missing, data_dir))
    images, labels = _read_pair(where / FASHION_FILES[0], where / FASHION_FILES[1], 10)
    idx = fashion_split_indices(images, labels, train, split_seed)
    return images[idx], labels[idx].astype(np.int64)


# ------------------------------------------------------------------------------------------ CIFAR-10
def _numpy_reconstruct():
    """numpy's array-reconstruction function, whatever its module is called in this numpy version."""
    return np.ndarray.__reduce__(np.zeros(1, dtype=np.uint8))[0]


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain data: dicts, lists, tuples, str, bytes, numbers (pickle
    opcodes, no globals) and numpy arrays.  The only globals it resolves are the array
    reconstruction (``_reconstruct`` of numpy's multiarray module, under its numpy 1 and numpy 2
    names), ``numpy.ndarray``, ``numpy.dtype`` and ``_codecs.encode`` (how protocol 2 stores bytes
    in Python 3), none of which runs code chosen by the file.  Any other global is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load the global {module}.{name}: a CIFAR-10 batch holds only a dict of "
                "arrays, lists and strings (nclab never runs code stored in a data file)")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        if name == "encode":
            import codecs

            return codecs.encode
        return getattr(np, name)


def read_cifar_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch (a pickled dict with ``data``: N x 3072 uint8, ``labels``:
    N ints) with a restricted unpickler (module docstring); returns ``(images, labels)``, images
    uint8 (N, 3, 32, 32) and labels int64 (N,).

    ValueError naming the file when it is not such a batch (a refused global, a wrong shape, labels
    out of 0..9, counts that disagree)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            entry = _CifarUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise ValueError(f"{path}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: not a CIFAR-10 python batch (a {type(entry).__name__}, expected a dict)")
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "data" not in entry or "labels" not in entry:
        raise ValueError(f"{path}: a CIFAR-10 batch needs the keys 'data' and 'labels', found {sorted(map(str, entry))}")
    data = np.asarray(entry["data"])
    labels = np.asarray(entry["labels"], dtype=np.int64).reshape(-1)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: 'data' must be an N x 3072 uint8 array, got {data.dtype} {data.shape}")
    if data.shape[0] != labels.shape[0]:
        raise ValueError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= 10):
        raise ValueError(f"{path}: labels must be in 0..9, found {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels


def _download_cifar(data_dir: Path) -> None:
    """Fetch and unpack the official archive with torchvision's downloader (md5-checked); nothing
    is unpickled here."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import download_and_extract_archive

    data_dir.mkdir(parents=True, exist_ok=True)
    download_and_extract_archive(CIFAR10.url, str(data_dir), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)


def _load_cifar(data_dir: Path, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray]:
    where = data_dir / CIFAR_DIR
    every = CIFAR_FILES[True] + CIFAR_FILES[False]
    missing = [f for f in every if not (where / f).is_file()]
    if missing and download:
        _download_cifar(data_dir)
        missing = [f for f in every if not (where / f).is_file()]
    if missing:
        raise FileNotFoundError(_missing_message("cifar10", where, missing, data_dir))
    parts = [read_cifar_batch(where / f) for f in CIFAR_FILES[train]]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_dataset(
    name: str,
    data_dir,
    train: bool = True,
    per_class: int | None = None,
    seed: int = 0,
    download: bool = False,
    *,
    split_seed: int = FASHION_SPLIT_SEED,
) -> TensorDataset:
    """Load a data set into memory as normalised tensors.

    Parameters
    ----------
    name : one of ``DATASETS`` ("mnist", "fashion-mnist", "cifar10").
    data_dir : root folder: MNIST in ``<data_dir>/MNIST/raw``, Fashion-MNIST in
        ``<data_dir>/FashionMNIST70k``, CIFAR-10 in ``<data_dir>/cifar-10-batches-py`` (module
        docstring).
    train : the training split (True) or the test split (False).
    per_class : if given, a balanced subset with this many images of every class, chosen by the
        seeded rule of the module docstring (small balanced sets let CPU runs reach the terminal
        phase of training).
    seed : seed of the subset (ignored without ``per_class``).
    download : fetch missing files when online (MNIST: torchvision; Fashion-MNIST: official files
        pooled into FashionMNIST70k; CIFAR-10: the official archive, unpacked).
    split_seed : seed of the Fashion-MNIST train/test split (default ``FASHION_SPLIT_SEED`` = 0).

    Returns
    -------
    TensorDataset of ``(images, labels)``: float32 (N, C, S, S) normalised with
    ``NORMALIZATION[name]`` ((N, 1, 28, 28) for MNIST and Fashion-MNIST, (N, 3, 32, 32) for
    CIFAR-10, :func:`input_shape`), int64 (N,) labels in 0..9, in file order.

    Raises
    ------
    ValueError : unknown name (lists the allowed ones), corrupt or wrong-shape IDX file or CIFAR-10
        batch (names it), per_class larger than a class.
    FileNotFoundError : missing data directory or files (says which files are expected where and
        how to get them).
    """
    key = _canonical(name)
    data_dir = Path(data_dir).expanduser()
    if key == "mnist":
        images, labels = _load_mnist(data_dir, bool(train), download)
    elif key == "cifar10":
        images, labels = _load_cifar(data_dir, bool(train), download)
    else:
        images, labels = _load_fashion(data_dir, bool(train), download, split_seed)
    if per_class is not None:
        what = f"{key} ({'train' if train else 'test'})"
        idx = balanced_indices(images, labels, per_class, seed, K=_NUM_CLASSES[key], what=what)
        images, labels = images[idx], labels[idx]
    channels, _ = _INPUT_SHAPE[key]
    mean, std = (torch.tensor(v, dtype=torch.float32).reshape(1, channels, 1, 1) for v in NORMALIZATION[key])
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0)
    if x.ndim == 3:  # grey-scale (N, H, W): one channel
        x = x.unsqueeze(1)
    x = x.sub_(mean).div_(std)
    y = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
    return TensorDataset(x, y)
