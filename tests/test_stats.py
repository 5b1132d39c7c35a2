from __future__ import annotations

import math

import pytest

from hwkd.stats import kendall, spearman


def test_perfect_and_reversed_rankings() -> None:
    a = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert spearman(a, [10, 20, 30, 40, 50]) == pytest.approx(1.0)
    assert kendall(a, [5, 4, 3, 2, 1]) == pytest.approx(-1.0)


def test_known_values_with_ties() -> None:
    # hand-computed: concordant 4, discordant 1, one tie in y; tau-b = 3 / sqrt(6 * 5)
    x, y = [1, 2, 3, 4], [1, 3, 2, 3]
    assert kendall(x, y) == pytest.approx(3 / math.sqrt(30))
    # ranks of y: 1, 3.5, 2, 3.5
    assert spearman(x, y) == pytest.approx(3 / math.sqrt(22.5))  # ranks of y: 1, 3.5, 2, 3.5


def test_constant_input_gives_nan_and_bad_lengths_raise() -> None:
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError):
        kendall([1], [1])
