"""Datasets (local files only) and the embedded default data."""

from hwkd.data.datasets import DATASETS, Dataset, Split, load_dataset

__all__ = ["DATASETS", "Dataset", "Split", "load_dataset"]
