"""Datasets hwkd trains on, read from local files only (nothing downloads at run time).

- `embedded`: a class-balanced subset of Fashion-MNIST shipped inside the package (the default).
- `fashion-mnist`: the IDX gz files of `--data-dir`, or Debian's `dataset-fashion-mnist`.
- `cifar10`, `cifar100`: the python batch files in `--data-dir`.
- `folder`: an image folder, one sub-folder per class (optionally under `train/` and `test/`).

Splits are deterministic: validation is a stratified slice of the training files (seed 0), test
is the dataset's test set. The search scores on validation only, never on test.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from hwkd.errors import DataError
from hwkd.registry import Registry

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
VAL_FRACTION = 0.1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    class_names: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, of the training images scaled to [0, 1]
    std: tuple[float, ...]
    source: str = field(default="")  # where the files came from

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        _, c, h, w = self.train.images.shape
        return (1, int(c), int(h), int(w))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float32, standardized with the training statistics."""
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        return (images.float() / 255.0 - mean) / std

    def fingerprint(self) -> str:
        """A short hash of the training split, for caches that depend on the data."""
        digest = hashlib.sha256()
        digest.update(self.train.images.numpy().tobytes())
        digest.update(self.train.labels.numpy().tobytes())
        return digest.hexdigest()[:16]


Loader = Callable[[Path | None], Dataset]
DATASETS: Registry[Loader] = Registry("dataset")


def load_dataset(name: str, data_dir: str | Path | None = None) -> Dataset:
    return DATASETS.get(name)(Path(data_dir) if data_dir else None)


# ---- builders -----------------------------------------------------------------------------------


def _dataset(name: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
             classes: tuple[str, ...], source: str) -> Dataset:
    if train_x.ndim == 3:
        train_x, test_x = train_x[:, None], test_x[:, None]
    train_idx, val_idx = stratified_split(train_y, VAL_FRACTION, seed=0)
    scaled = train_x[train_idx].astype(np.float32) / 255.0
    mean = tuple(float(v) for v in scaled.mean(axis=(0, 2, 3)))
    std = tuple(float(max(v, 1e-3)) for v in scaled.std(axis=(0, 2, 3)))
    return Dataset(
        name=name,
        train=_split(train_x[train_idx], train_y[train_idx]),
        val=_split(train_x[val_idx], train_y[val_idx]),
        test=_split(test_x, test_y),
        class_names=classes,
        mean=mean,
        std=std,
        source=source,
    )


def _split(images: np.ndarray, labels: np.ndarray) -> Split:
    return Split(torch.from_numpy(np.require(images, np.uint8, ["C", "W"])),
                 torch.from_numpy(np.asarray(labels, dtype=np.int64)))


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): `fraction` of every class held out, chosen by a seeded shuffle."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_held = max(1, int(round(len(idx) * fraction))) if len(idx) > 1 else 0
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


# ---- Fashion-MNIST -------------------------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: truncated (header says {dims})")
    return body.reshape(dims)


def read_idx_pair(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images = _find(folder, [f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-images-idx3-ubyte"])
    labels = _find(folder, [f"{prefix}-labels-idx1-ubyte.gz", f"{prefix}-labels-idx1-ubyte"])
    x, y = read_idx(images), read_idx(labels)
    if len(x) != len(y):
        raise DataError(f"{folder}: {len(x)} {prefix} images but {len(y)} labels")
    return x, y


def _find(folder: Path, names: list[str]) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: missing {names[0]} (expected the Fashion-MNIST IDX files)")


@DATASETS.register("fashion-mnist")
def load_fashion_mnist(data_dir: Path | None) -> Dataset:
    folder = data_dir or FASHION_MNIST_DIR
    if not folder.is_dir():
        raise DataError(
            f"{folder}: no such folder; pass --data-dir with the Fashion-MNIST IDX files, "
            "or install Debian's dataset-fashion-mnist"
        )
    train_x, train_y = read_idx_pair(folder, "train")
    test_x, test_y = read_idx_pair(folder, "t10k")
    return _dataset("fashion-mnist", train_x, train_y, test_x, test_y, FASHION_CLASSES, str(folder))


@DATASETS.register("embedded")
def load_embedded(data_dir: Path | None) -> Dataset:
    if data_dir is not None:
        raise DataError("the embedded dataset takes no --data-dir (use --data fashion-mnist for files)")
    path = Path(str(resources.files("hwkd.data") / "embedded" / "fashion_mnist_subset.npz"))
    with np.load(path, allow_pickle=False) as data:
        return _dataset("embedded", data["train_images"], data["train_labels"], data["test_images"],
                        data["test_labels"], FASHION_CLASSES, f"{path} (Fashion-MNIST subset, MIT licence)")


# ---- CIFAR ----------------------------------------------------------------------------------------


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batch files and nothing else: only numpy arrays and plain containers."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise DataError(f"refusing to unpickle {module}.{name}: not part of a CIFAR batch file")


def _read_batch(path: Path) -> dict[str, object]:
    try:
        with open(path, "rb") as f:
            raw = _BatchUnpickler(f, encoding="bytes").load()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken pickle raises many types
        raise DataError(f"{path}: not a CIFAR python batch file ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: not a CIFAR python batch file")
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in raw.items()}


def _cifar_arrays(batch: dict[str, object], label_key: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (KeyError, ValueError):
        raise DataError(f"{path}: expected 'data' (N x 3072 bytes) and '{label_key}'") from None
    return data, labels


def _names(meta: Path, key: str, default: tuple[str, ...] | None, count: int) -> tuple[str, ...]:
    if meta.is_file():
        names = _read_batch(meta).get(key)
        if isinstance(names, list):
            return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    return default or tuple(f"class_{i}" for i in range(count))


@DATASETS.register("cifar10")
def load_cifar10(data_dir: Path | None) -> Dataset:
    folder = _need_dir(data_dir, "cifar10", "data_batch_1 .. data_batch_5 and test_batch")
    train_files = sorted(folder.glob("data_batch_*"))
    if not train_files or not (folder / "test_batch").is_file():
        raise DataError(f"{folder}: expected data_batch_1 .. data_batch_5 and test_batch (CIFAR-10 python version)")
    parts = [_cifar_arrays(_read_batch(p), "labels", p) for p in train_files]
    test_x, test_y = _cifar_arrays(_read_batch(folder / "test_batch"), "labels", folder / "test_batch")
    classes = _names(folder / "batches.meta", "label_names", CIFAR10_CLASSES, 10)
    return _dataset("cifar10", np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                    test_x, test_y, classes, str(folder))


@DATASETS.register("cifar100")
def load_cifar100(data_dir: Path | None) -> Dataset:
    folder = _need_dir(data_dir, "cifar100", "train and test")
    if not (folder / "train").is_file() or not (folder / "test").is_file():
        raise DataError(f"{folder}: expected the files train and test (CIFAR-100 python version)")
    train_x, train_y = _cifar_arrays(_read_batch(folder / "train"), "fine_labels", folder / "train")
    test_x, test_y = _cifar_arrays(_read_batch(folder / "test"), "fine_labels", folder / "test")
    classes = _names(folder / "meta", "fine_label_names", None, 100)
    return _dataset("cifar100", train_x, train_y, test_x, test_y, classes, str(folder))


def _need_dir(data_dir: Path | None, name: str, expected: str) -> Path:
    if data_dir is None:
        raise DataError(f"--data {name} needs --data-dir: the folder with {expected}")
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such folder (expected {expected})")
    return data_dir


# ---- image folders --------------------------------------------------------------------------------


@DATASETS.register("folder")
def load_folder(data_dir: Path | None) -> Dataset:
    folder = _need_dir(data_dir, "folder", "one sub-folder of images per class")
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        classes = _class_dirs(folder / "train")
        train_x, train_y = _read_images(folder / "train", classes)
        test_x, test_y = _read_images(folder / "test", classes)
    else:
        classes = _class_dirs(folder)
        images, labels = _read_images(folder, classes)
        keep, test = stratified_split(labels, VAL_FRACTION, seed=1)
        train_x, train_y, test_x, test_y = images[keep], labels[keep], images[test], labels[test]
    return _dataset("folder", train_x, train_y, test_x, test_y, tuple(classes), str(folder))


def _class_dirs(folder: Path) -> list[str]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{folder}: needs at least two class sub-folders, found {len(classes)}")
    return classes


def _read_images(folder: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    images, labels = [], []
    size: tuple[int, int] | None = None
    mode: str | None = None
    for label, name in enumerate(classes):
        files = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{folder / name}: no images ({', '.join(IMAGE_SUFFIXES)})")
        for path in files:
            try:
                with Image.open(path) as img:
                    img.load()
                    mode = mode or ("L" if img.mode in ("L", "1", "I;16") else "RGB")
                    size = size or img.size
                    arr = np.asarray(img.convert(mode).resize(size))
            except (OSError, ValueError) as exc:
                raise DataError(f"{path}: not a readable image ({exc})") from None
            images.append(arr if arr.ndim == 3 else arr[:, :, None])
            labels.append(label)
    stacked = np.stack(images).transpose(0, 3, 1, 2)
    return stacked, np.asarray(labels, dtype=np.int64)
