"""Make the embedded default dataset: a class-balanced subset of Fashion-MNIST (MIT licence).

Reads Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist) or --source, takes the
first N images of each class from the training set and M of each class from the test set (a
deterministic choice), and writes hwkd/data/embedded/fashion_mnist_subset.npz (at most 5 MB).

    python scripts/make_embedded_data.py [--source DIR] [--train-per-class 800] [--test-per-class 150]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from hwkd.data.datasets import read_idx_pair

OUT = Path(__file__).resolve().parents[1] / "hwkd" / "data" / "embedded" / "fashion_mnist_subset.npz"


def balanced(images: np.ndarray, labels: np.ndarray, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
    keep.sort()
    return images[keep], labels[keep]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--train-per-class", type=int, default=800)
    parser.add_argument("--test-per-class", type=int, default=150)
    args = parser.parse_args()
    src = Path(args.source)
    train_x, train_y = balanced(*read_idx_pair(src, "train"), args.train_per_class)
    test_x, test_y = balanced(*read_idx_pair(src, "t10k"), args.test_per_class)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, train_images=train_x, train_labels=train_y, test_images=test_x, test_labels=test_y)
    size_mb = OUT.stat().st_size / 1e6
    print(f"wrote {OUT}: {len(train_y)} train + {len(test_y)} test images, {size_mb:.2f} MB")
    if size_mb > 5:
        raise SystemExit("the embedded data must stay under 5 MB: lower the counts")


if __name__ == "__main__":
    main()
