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


def test_spearman_interval_by_hand_and_where_it_says_nothing() -> None:
    from hwkd.stats import MIN_INTERVAL_PAIRS, spearman_interval

    # rho 0.5 over 12 pairs: z = atanh(0.5) = 0.549306, se = sqrt(1.125 / 9) = 0.353553, 1.959964 se = 0.692951
    low, high = spearman_interval(0.5, 12)  # type: ignore[misc]
    assert low == pytest.approx(math.tanh(0.549306 - 0.692951), abs=1e-5) == pytest.approx(-0.1427, abs=1e-4)
    assert high == pytest.approx(0.8461, abs=1e-4)
    # 12 students ranked 0.85 cannot tell 0.85 from 0.5; 100 students can
    assert spearman_interval(0.85, 12)[0] < 0.5 < spearman_interval(0.85, 100)[0]  # type: ignore[index]
    assert spearman_interval(0.9, MIN_INTERVAL_PAIRS - 1) is None
    assert spearman_interval(1.0, 20) is None and spearman_interval(float("nan"), 20) is None
