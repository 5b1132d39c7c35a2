"""The first trials of a new study: students spread over the space's range of MACs."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import FixedTrial

from hwkd.initial_design import forward_macs, spread_by_cost
from hwkd.latency.estimator import Estimator
from hwkd.profiles import load_profile
from hwkd.spaces import load_space

SHAPE = (1, 1, 28, 28)
BLOCKS = str(Path(__file__).parents[1] / "search_spaces" / "mbconv-small.yaml")


@pytest.mark.slow
@pytest.mark.parametrize("space_name", ["nb201-small", BLOCKS])
def test_students_span_the_cost_range_cheapest_first(space_name: str) -> None:
    space = load_space(space_name)
    picks = spread_by_cost(space, 10, SHAPE, 8, seed=0)
    archs = [arch for arch, _ in picks]
    assert len(archs) == 8 and len(set(archs)) == 8
    macs = [forward_macs(space, arch, 10, SHAPE) for arch in archs]
    assert macs == sorted(macs) and macs[-1] > 2.5 * macs[0]  # from the cheapest to the largest proposal
    for arch, params in picks:  # the params Optuna is given propose exactly that student
        assert space.suggest(FixedTrial(params)) == arch
    assert spread_by_cost(space, 10, SHAPE, 8, seed=0) == picks  # a continued study recomputes the same plan


@pytest.mark.slow
def test_under_a_budget_the_students_span_those_that_meet_it() -> None:
    space = load_space("nb201-small")
    estimator = Estimator(load_profile("rpi4"), "model")

    def latency_ms(arch: str) -> float:
        return estimator.model_estimate(space, arch, SHAPE, 10).latency_ms

    unbudgeted = sorted(latency_ms(arch) for arch, _ in spread_by_cost(space, 10, SHAPE, 8, seed=0))
    budget_ms = unbudgeted[3]  # half of the unbudgeted plan is over it
    picks = [arch for arch, _ in spread_by_cost(space, 10, SHAPE, 8, seed=0, fits=lambda a: latency_ms(a) <= budget_ms)]
    assert len(set(picks)) == 8
    latencies = [latency_ms(arch) for arch in picks]
    assert max(latencies) <= budget_ms and max(latencies) > 1.5 * min(latencies)
    macs = [forward_macs(space, arch, 10, SHAPE) for arch in picks]
    assert macs == sorted(macs)
    assert spread_by_cost(space, 10, SHAPE, 8, seed=0, fits=lambda a: False) == []  # nothing fits: no plan


def test_macs_are_counted_without_weights() -> None:
    space = load_space("nb201-small")
    all_3x3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    only_skip = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
    # six 3x3 edges at 16, 32 and 64 channels: 6 * 9 * C^2 * H * W per stage, on 28, 14 and 7 pixels
    cells = sum(6 * 9 * c * c * s * s for c, s in ((16, 28), (32, 14), (64, 7)))
    assert forward_macs(space, all_3x3, 10, SHAPE) - forward_macs(space, only_skip, 10, SHAPE) == cells
