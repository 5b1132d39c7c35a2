"""Rank correlations used to judge rankings (cost model vs measurement, brief vs full training)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

# Below this many pairs the interval's coverage falls short (simulated, bivariate normal: at 5
# pairs and rho 0.9 a 95 % interval held the truth 75 % of the time; from 8 pairs 94-96 %)
MIN_INTERVAL_PAIRS = 8


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


def spearman_interval(rho: float, pairs: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Confidence interval of a Spearman correlation of `pairs` pairs (Bonett and Wright 2000,
    Psychometrika 65(1): Fisher's z with the standard error sqrt((1 + rho^2 / 2) / (n - 3))).

    It says how much a ranking measured on few students can tell: 12 students that rank 0.85 are
    consistent with anything from 0.46 to 0.97 (95 %). None below MIN_INTERVAL_PAIRS pairs, and for
    rho of +-1 or nan, where Fisher's z is not finite.
    """
    if pairs < MIN_INTERVAL_PAIRS or not abs(rho) < 1:
        return None
    z = math.atanh(rho)
    half = NormalDist().inv_cdf(0.5 + confidence / 2) * math.sqrt((1 + rho * rho / 2) / (pairs - 3))
    return math.tanh(z - half), math.tanh(z + half)


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
