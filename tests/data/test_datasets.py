from __future__ import annotations

import gzip
import os
import pickle
import struct
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hwkd.data import load_dataset
from hwkd.data.datasets import FASHION_MNIST_DIR
from hwkd.errors import DataError, UnknownNameError


def test_embedded_data_is_small_balanced_and_split_deterministically() -> None:
    path = Path(str(resources.files("hwkd.data") / "embedded" / "fashion_mnist_subset.npz"))
    assert path.stat().st_size <= 5_000_000
    assert (path.parent / "LICENSE-fashion-mnist.txt").is_file()
    data = load_dataset("embedded")
    assert data.input_shape == (1, 1, 28, 28) and data.num_classes == 10
    assert (len(data.train), len(data.val), len(data.test)) == (8100, 900, 1500)
    assert np.bincount(data.val.labels.numpy()).tolist() == [90] * 10
    again = load_dataset("embedded")
    assert np.array_equal(data.val.labels.numpy(), again.val.labels.numpy())
    assert data.fingerprint() == again.fingerprint()
    # validation images come from the training files, never from test
    train_rows = {bytes(row) for row in data.train.images.numpy().reshape(len(data.train), -1)}
    assert not any(bytes(row) in train_rows for row in data.val.images.numpy().reshape(len(data.val), -1))
    x = data.normalize(data.train.images[:512])
    assert abs(float(x.mean())) < 0.2 and 0.8 < float(x.std()) < 1.2


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_idx_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 200), ("t10k", 50)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    data = load_dataset("fashion-mnist", tmp_path)
    assert (len(data.train), len(data.val), len(data.test)) == (180, 20, 50)
    assert data.class_names[0] == "T-shirt/top"


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian_package() -> None:
    data = load_dataset("fashion-mnist")
    assert (len(data.train), len(data.val), len(data.test)) == (54000, 6000, 10000)


def test_truncated_idx_file_is_an_error(tmp_path: Path) -> None:
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((10, 28, 28)))
    with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">BBBBI", 0, 0, 8, 1, 10) + b"\x00" * 3)
    with pytest.raises(DataError, match="truncated"):
        load_dataset("fashion-mnist", tmp_path)


def cifar_batch(n: int, label_key: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), label_key.encode(): list(np.arange(n) % 10)}


def test_cifar10_batches(tmp_path: Path) -> None:
    for i in range(1, 6):
        (tmp_path / f"data_batch_{i}").write_bytes(pickle.dumps(cifar_batch(20, "labels", i)))
    (tmp_path / "test_batch").write_bytes(pickle.dumps(cifar_batch(30, "labels", 9)))
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    data = load_dataset("cifar10", tmp_path)
    assert data.input_shape == (1, 3, 32, 32)
    assert (len(data.train), len(data.val), len(data.test)) == (90, 10, 30)
    assert data.class_names == tuple(f"c{i}" for i in range(10))


def test_cifar100_files(tmp_path: Path) -> None:
    (tmp_path / "train").write_bytes(pickle.dumps(cifar_batch(100, "fine_labels", 1)))
    (tmp_path / "test").write_bytes(pickle.dumps(cifar_batch(20, "fine_labels", 2)))
    data = load_dataset("cifar100", tmp_path)
    assert len(data.test) == 20 and data.num_classes == 100


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_loader_refuses_pickled_code(tmp_path: Path) -> None:
    for i in range(1, 6):
        (tmp_path / f"data_batch_{i}").write_bytes(pickle.dumps({b"data": _Exploit()}))
    (tmp_path / "test_batch").write_bytes(pickle.dumps(cifar_batch(10, "labels", 0)))
    with pytest.raises(DataError, match="refusing to unpickle posix.system|refusing to unpickle os.system"):
        load_dataset("cifar10", tmp_path)


def test_image_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog", "fox"):
        (tmp_path / cls).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    data = load_dataset("folder", tmp_path)
    assert data.class_names == ("cat", "dog", "fox") and data.input_shape == (1, 3, 12, 12)
    assert len(data.train) + len(data.val) + len(data.test) == 30 and len(data.test) == 3


@pytest.mark.parametrize(
    ("name", "folder", "message"),
    [
        ("cifar10", None, "--data cifar10 needs --data-dir"),
        ("cifar10", "/nonexistent/cifar", "/nonexistent/cifar: no such folder"),
        ("fashion-mnist", "/nonexistent/fm", "/nonexistent/fm: no such folder"),
        ("folder", "/nonexistent/imgs", "no such folder"),
    ],
)
def test_bad_data_paths_are_named(name: str, folder: str | None, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_dataset(name, folder)


def test_unknown_dataset_lists_the_names() -> None:
    with pytest.raises(UnknownNameError, match="unknown dataset 'mnist'.*cifar10.*embedded.*fashion-mnist"):
        load_dataset("mnist")
