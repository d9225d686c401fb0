"""Data: MNIST as published, nclab's seeded Fashion-MNIST split, balanced subsets, and clear errors
for unknown names, missing files and corrupt IDX files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nclab.nets import data as D
from nclab.nets.data import (
    DATASETS,
    FASHION_FILES,
    balanced_indices,
    fashion_split_indices,
    load_dataset,
    num_classes,
    read_idx,
    write_idx,
)

README_MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(scope="module")
def mnist_train(data_dir):
    return load_dataset("mnist", data_dir, train=True)


@pytest.fixture(scope="module")
def fashion_pool(data_dir):
    root = data_dir / "FashionMNIST70k"
    return read_idx(root / FASHION_FILES[0], 3, (28, 28)), read_idx(root / FASHION_FILES[1], 1).astype(np.int64)


def test_mnist_sizes_counts_and_normalisation(mnist_train, data_dir):
    x, y = mnist_train.tensors
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.int64
    assert y.bincount().tolist() == README_MNIST_TRAIN_COUNTS
    # the standard statistics make the training set ~zero-mean, unit-variance
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-3
    xt, yt = load_dataset("mnist", data_dir, train=False).tensors
    assert xt.shape == (10000, 1, 28, 28) and yt.shape == (10000,)
    assert yt.bincount().sum() == 10000


def test_mnist_pixels_match_the_raw_idx_file(mnist_train, data_dir):
    raw = read_idx(data_dir / "MNIST/raw/train-images-idx3-ubyte", 3, (28, 28))
    mean, std = D.NORMALIZATION["mnist"]
    back = (mnist_train.tensors[0][:100, 0] * std + mean) * 255
    assert torch.allclose(back, torch.from_numpy(raw[:100]).float(), atol=1e-3)


def test_fashion_split_is_6000_1000_per_class_disjoint_and_covers_the_pool(fashion_pool):
    images, labels = fashion_pool
    tr = fashion_split_indices(images, labels, train=True)
    te = fashion_split_indices(images, labels, train=False)
    assert np.bincount(labels[tr]).tolist() == [6000] * 10
    assert np.bincount(labels[te]).tolist() == [1000] * 10
    assert len(np.intersect1d(tr, te)) == 0
    assert len(np.union1d(tr, te)) == 70000


def test_fashion_split_is_reproducible_from_its_seed_and_independent_of_file_order(fashion_pool):
    images, labels = fashion_pool
    a = fashion_split_indices(images, labels, train=False, split_seed=0)
    assert np.array_equal(a, fashion_split_indices(images, labels, train=False, split_seed=0))
    assert not np.array_equal(a, fashion_split_indices(images, labels, train=False, split_seed=1))
    # shuffling the pool's order selects the same images (the rule keys on pixels, not positions)
    perm = np.random.default_rng(0).permutation(len(labels))
    shuffled = images[perm]
    b = fashion_split_indices(shuffled, labels[perm], train=False, split_seed=0)
    assert sorted(images[i].tobytes() for i in a) == sorted(shuffled[i].tobytes() for i in b)


def test_load_fashion_returns_the_split(data_dir, fashion_pool):
    images, labels = fashion_pool
    ds = load_dataset("fashion-mnist", data_dir, train=False)
    x, y = ds.tensors
    assert x.shape == (10000, 1, 28, 28) and y.bincount().tolist() == [1000] * 10
    idx = fashion_split_indices(images, labels, train=False)
    mean, std = D.NORMALIZATION["fashion-mnist"]
    assert torch.allclose((x[:, 0] * std + mean) * 255, torch.from_numpy(images[idx]).float(), atol=1e-3)
    assert torch.equal(y, torch.from_numpy(labels[idx]))
    assert len(load_dataset("Fashion_MNIST", data_dir, train=True)) == 60000


def test_balanced_subset_has_n_per_class_reproducible_and_nested(data_dir):
    a = load_dataset("mnist", data_dir, train=False, per_class=7, seed=3)
    b = load_dataset("mnist", data_dir, train=False, per_class=7, seed=3)
    c = load_dataset("mnist", data_dir, train=False, per_class=7, seed=4)
    assert a.tensors[1].bincount().tolist() == [7] * 10
    assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1])
    assert not torch.equal(a.tensors[0], c.tensors[0])
    f = load_dataset("fashion-mnist", data_dir, train=True, per_class=5, seed=0)
    assert f.tensors[1].bincount().tolist() == [5] * 10


def test_balanced_indices_nested_and_validated():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(300, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(3), 100)
    small = balanced_indices(images, labels, 10, seed=5, K=3)
    large = balanced_indices(images, labels, 20, seed=5, K=3)
    assert set(small) <= set(large)
    assert np.bincount(labels[large]).tolist() == [20, 20, 20]
    with pytest.raises(ValueError, match="positive integer"):
        balanced_indices(images, labels, 0, seed=5, K=3)


def test_per_class_larger_than_available_is_a_clear_error(data_dir):
    with pytest.raises(ValueError, match=r"per_class=900 is more than the 892 images of class 5 in mnist \(test\)"):
        load_dataset("mnist", data_dir, train=False, per_class=900)


def test_unknown_dataset_lists_the_allowed_names(data_dir):
    with pytest.raises(ValueError, match="unknown dataset 'svhn'; allowed: mnist, fashion-mnist, cifar10"):
        load_dataset("svhn", data_dir)
    with pytest.raises(ValueError, match="allowed"):
        num_classes("svhn")
    assert [num_classes(n) for n in DATASETS] == [10, 10, 10]


@pytest.mark.parametrize("name,where", [("mnist", "MNIST/raw"), ("fashion-mnist", "FashionMNIST70k"),
                                        ("cifar10", "cifar-10-batches-py")])
def test_missing_directory_names_the_expected_files_and_how_to_get_them(tmp_path, name, where):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        load_dataset(name, missing)
    msg = str(err.value)
    assert str(missing / where) in msg
    assert "does not exist" in msg and "download=True" in msg
    assert ("t10k-images-idx3-ubyte" in msg) or ("images-idx3-ubyte" in msg) or ("test_batch" in msg)


def _write_fake_mnist(root, n=20, train=False):
    """A tiny valid MNIST (all four files, as torchvision requires); returns the chosen split's."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    out = {}
    for split in (True, False):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        files = D.MNIST_FILES[split]
        write_idx(raw / files[0], images)
        write_idx(raw / files[1], labels)
        out[split] = (raw / files[0], images, labels)
    return out[train]


def test_small_mnist_written_with_write_idx_loads_through_torchvision(tmp_path):
    _, images, labels = _write_fake_mnist(tmp_path)
    x, y = load_dataset("mnist", tmp_path, train=False).tensors
    mean, std = D.NORMALIZATION["mnist"]
    assert torch.allclose((x[:, 0] * std + mean) * 255, torch.from_numpy(images).float(), atol=1e-3)
    assert torch.equal(y, torch.from_numpy(labels).long())


def test_truncated_mnist_file_is_a_clear_value_error(tmp_path):
    path, _, _ = _write_fake_mnist(tmp_path)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) - 100])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte: IDX header says shape \(20, 28, 28\).*truncated"):
        load_dataset("mnist", tmp_path, train=False)


def _write_fashion(root, images, labels):
    where = root / "FashionMNIST70k"
    where.mkdir(parents=True)
    write_idx(where / FASHION_FILES[0], images)
    write_idx(where / FASHION_FILES[1], labels)
    return where


def test_corrupt_fashion_files_give_clear_value_errors(tmp_path):
    images = np.zeros((10, 28, 28), np.uint8)
    labels = np.arange(10, dtype=np.uint8)
    where = _write_fashion(tmp_path / "a", images, labels)
    blob = (where / FASHION_FILES[0]).read_bytes()
    (where / FASHION_FILES[0]).write_bytes(blob[:-1])  # truncated
    with pytest.raises(ValueError, match="images-idx3-ubyte.*truncated or corrupt"):
        load_dataset("fashion-mnist", tmp_path / "a")
    (where / FASHION_FILES[0]).write_bytes(b"\x00\x00\x0d\x03" + blob[4:])  # float magic
    with pytest.raises(ValueError, match="bad IDX magic number 0x00000d03, expected 0x00000803"):
        load_dataset("fashion-mnist", tmp_path / "a")
    where = _write_fashion(tmp_path / "b", np.zeros((10, 32, 32), np.uint8), labels)  # wrong item shape
    with pytest.raises(ValueError, match=r"items have shape \(32, 32\), expected \(28, 28\)"):
        load_dataset("fashion-mnist", tmp_path / "b")
    _write_fashion(tmp_path / "c", images, np.arange(9, dtype=np.uint8))  # 10 images, 9 labels
    with pytest.raises(ValueError, match="10 images but .* 9 labels"):
        load_dataset("fashion-mnist", tmp_path / "c")
    _write_fashion(tmp_path / "d", images, labels)  # valid files, but too few per class to split
    with pytest.raises(ValueError, match="needs 7000 per class"):
        load_dataset("fashion-mnist", tmp_path / "d")


def test_download_pools_official_fashion_files_sorted_by_class(tmp_path, monkeypatch):
    """The online path (download=True) is exercised with a stand-in for torchvision's class."""
    import torchvision.datasets

    rng = np.random.default_rng(0)
    fake = {t: (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)) for t, n in ((True, 30), (False, 12))}

    class FakeFashionMNIST:
        def __init__(self, root, train, download):
            assert download
            self.data, self.targets = (torch.from_numpy(a) for a in fake[train])

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    D._download_fashion_pool(tmp_path)
    images = read_idx(tmp_path / "FashionMNIST70k" / FASHION_FILES[0], 3, (28, 28))
    labels = read_idx(tmp_path / "FashionMNIST70k" / FASHION_FILES[1], 1)
    all_images = np.concatenate([fake[True][0], fake[False][0]])
    all_labels = np.concatenate([fake[True][1], fake[False][1]])
    order = np.argsort(all_labels, kind="stable")
    assert np.array_equal(labels, all_labels[order]) and np.array_equal(images, all_images[order])


# ------------------------------------------------------------------------------------------ CIFAR-10
def _write_fake_cifar(root, per_batch=20, protocol=2):
    """A tiny CIFAR-10 in torchvision's layout, written with pickle as the official files are
    (a dict per batch: data N x 3072 uint8 = R, G, B planes of 32 x 32, labels a list of ints).
    Returns {file: (images (N, 3, 32, 32), labels)}."""
    import pickle

    where = root / "cifar-10-batches-py"
    where.mkdir(parents=True)
    rng = np.random.default_rng(7)
    out = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        images = rng.integers(0, 256, size=(per_batch, 3, 32, 32), dtype=np.uint8)
        labels = [int(v) for v in (np.arange(per_batch) + i) % 10]
        entry = {"batch_label": f"batch {i}", "labels": labels, "data": images.reshape(per_batch, -1),
                 "filenames": [f"img_{i}_{j}.png" for j in range(per_batch)]}
        with open(where / name, "wb") as f:
            pickle.dump(entry, f, protocol=protocol)
        out[name] = (images, np.array(labels))
    with open(where / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"], "num_vis": 3072, "num_cases_per_batch": per_batch}, f, protocol=2)
    return out


@pytest.mark.parametrize("protocol", [2, 4])
def test_small_cifar10_in_torchvision_layout_loads_with_its_pixels_and_labels(tmp_path, protocol):
    batches = _write_fake_cifar(tmp_path, protocol=protocol)
    x, y = load_dataset("cifar10", tmp_path, train=True).tensors
    images = np.concatenate([batches[f"data_batch_{k}"][0] for k in range(1, 6)])
    labels = np.concatenate([batches[f"data_batch_{k}"][1] for k in range(1, 6)])
    assert x.shape == (100, 3, 32, 32) and x.dtype == torch.float32 and D.input_shape("cifar10") == (3, 32)
    mean, std = (torch.tensor(v).reshape(1, 3, 1, 1) for v in D.NORMALIZATION["cifar10"])
    assert torch.allclose((x * std + mean) * 255, torch.from_numpy(images).float(), atol=1e-3)
    assert torch.equal(y, torch.from_numpy(labels).long())
    xt, yt = load_dataset("cifar10", tmp_path, train=False).tensors
    assert xt.shape == (20, 3, 32, 32) and yt.tolist() == batches["test_batch"][1].tolist()
    # a balanced subset: n per class, the same rule as MNIST
    xs, ys = load_dataset("cifar10", tmp_path, train=True, per_class=3, seed=1).tensors
    assert ys.bincount().tolist() == [3] * 10 and xs.shape == (30, 3, 32, 32)


def test_cifar10_batch_refuses_code_in_the_pickle(tmp_path):
    import pickle

    batches = tmp_path / "cifar-10-batches-py"
    _write_fake_cifar(tmp_path)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # would create the file if the loader executed globals

    with open(batches / "test_batch", "wb") as f:
        pickle.dump({"data": Payload(), "labels": [0]}, f, protocol=2)
    with pytest.raises(ValueError, match=r"test_batch: not a CIFAR-10 python batch .*refusing to load the global"):
        load_dataset("cifar10", tmp_path, train=False)
    assert not marker.exists()


def test_cifar10_batch_with_wrong_shapes_is_a_clear_error(tmp_path):
    import pickle

    _write_fake_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    with open(path, "wb") as f:
        pickle.dump({"data": np.zeros((4, 100), dtype=np.uint8), "labels": [0, 1, 2, 3]}, f, protocol=2)
    with pytest.raises(ValueError, match="N x 3072 uint8"):
        D.read_cifar_batch(path)
    with open(path, "wb") as f:
        pickle.dump({"data": np.zeros((2, 3072), dtype=np.uint8), "labels": [0, 12]}, f, protocol=2)
    with pytest.raises(ValueError, match="labels must be in 0..9"):
        D.read_cifar_batch(path)


def test_cifar10_download_fetches_the_official_archive_without_unpickling(tmp_path, monkeypatch):
    """download=True hands torchvision's archive (its CIFAR10.url, filename, md5) to its md5-checked
    downloader; torchvision is replaced by stand-ins here (no network, and no slow import)."""
    import sys
    import types

    calls = []
    fake_ds = types.ModuleType("torchvision.datasets")
    fake_ds.CIFAR10 = types.SimpleNamespace(url="https://example.invalid/cifar-10-python.tar.gz",
                                            filename="cifar-10-python.tar.gz", tgz_md5="0123")
    fake_utils = types.ModuleType("torchvision.datasets.utils")

    def fake_download(url, root, filename=None, md5=None, **kw):
        calls.append((url, root, filename, md5))
        _write_fake_cifar(tmp_path / "dl")

    fake_utils.download_and_extract_archive = fake_download
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake_ds)
    monkeypatch.setitem(sys.modules, "torchvision.datasets.utils", fake_utils)
    x, y = load_dataset("cifar10", tmp_path / "dl", train=False, download=True).tensors
    assert calls == [(fake_ds.CIFAR10.url, str(tmp_path / "dl"), "cifar-10-python.tar.gz", "0123")]
    assert x.shape == (20, 3, 32, 32)
    load_dataset("cifar10", tmp_path / "dl", train=False, download=True)  # present: not fetched again
    assert len(calls) == 1


def test_training_on_cifar10_builds_a_three_channel_network_and_runs(tmp_path):
    """`nclab train --dataset cifar10` end to end on the tiny file: the network takes 3 x 32 x 32
    inputs (a 1-channel 28 x 28 MNIST network would fail on the first batch) and the run finishes."""
    from nclab.nets.config import TrainConfig
    from nclab.nets.rundir import read_log
    from nclab.nets.train import train

    _write_fake_cifar(tmp_path / "data", per_batch=20)
    config = TrainConfig(dataset="cifar10", model="mlp", per_class=5, test_per_class=2, epochs=1, batch_size=10,
                         lr=0.01, device="cpu", data_dir=str(tmp_path / "data"), out=str(tmp_path / "run"))
    train(config)
    records = read_log(tmp_path / "run")
    assert records[-1]["epoch"] == 1 and 0.0 <= records[-1]["train_acc"] <= 1.0
