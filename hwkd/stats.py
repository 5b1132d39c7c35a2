"""Rank correlations used to judge rankings (cost model vs measurement, brief vs full training)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks starting at 1, ties sharing their average rank."""
    data = np.asarray(values, dtype=float)
    order = np.argsort(data, kind="mergesort")
    ranks = np.empty(len(data))
    sorted_values = data[order]
    start = 0
    while start < len(data):
        end = start
        while end + 1 < len(data) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho: Pearson correlation of the ranks (ties averaged)."""
    _check(a, b)
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def kendall(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b (accounts for ties in either sequence)."""
    _check(a, b)
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    upper = np.triu_indices(len(x), k=1)
    dx, dy = dx[upper], dy[upper]
    concordance = float(np.sum(dx * dy))
    pairs_x, pairs_y = float(np.sum(dx != 0)), float(np.sum(dy != 0))
    if pairs_x == 0 or pairs_y == 0:
        return float("nan")
    return concordance / np.sqrt(pairs_x * pairs_y)


def _check(a: Sequence[float], b: Sequence[float]) -> None:
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"need two sequences of equal length >= 2, got {len(a)} and {len(b)}")
