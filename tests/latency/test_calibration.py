from __future__ import annotations

import random
import re
from dataclasses import replace

import pytest

from hwkd.errors import HwkdError
from hwkd.latency.calibration import (
    PARAMETERS,
    CostBreakdown,
    breakdown,
    calibrated_profile,
    fit,
    spread_picks,
)
from hwkd.latency.cost_model import KERNEL_CLASSES, kernel_class, latency_ms
from hwkd.latency.lowering import Lowerer
from hwkd.latency.relax_import import torch_to_relax
from hwkd.profiles import CalibrationInfo, load_profile
from hwkd.spaces import load_space

TRUE = {"dense_conv": 1.8, "pointwise_conv": 1.2, "depthwise_conv": 3.0, "other": 0.7, "overhead": 2.5}


def students(count: int, seed: int = 0, depthwise: bool = True) -> list[CostBreakdown]:
    rng = random.Random(seed)
    return [CostBreakdown((rng.uniform(0.5, 5), rng.uniform(0.2, 3), rng.uniform(0.1, 2) if depthwise else 0.0,
                           rng.uniform(0.1, 1)), rng.uniform(0.05, 0.5)) for _ in range(count)]


def measure(parts: list[CostBreakdown], noise: float = 0.0, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    weights = [TRUE[p] for p in PARAMETERS]
    return [sum(w * v for w, v in zip(weights, p.vector())) * (1 + rng.uniform(-noise, noise)) for p in parts]


def test_exact_measurements_give_back_the_constants_that_made_them() -> None:
    parts = students(12)
    result = fit(parts, measure(parts))
    for name in PARAMETERS:
        assert result.multipliers[name] == pytest.approx(TRUE[name], rel=0.02)
    assert result.loo_median_abs_error_pct < 0.5 and result.loo_spearman > 0.99
    assert result.uncalibrated_median_abs_error_pct > 30  # the datasheet model was far off
    assert result.caveat is None  # every class varies between these students: every multiplier is pinned down


def students_with_other_and_overhead_in_step(count: int, seed: int, spread: float) -> list[CostBreakdown]:
    """Students whose 'other' kernels and call overheads each take about 5 % of the modeled time,
    varying by +-`spread` of that."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        convs = (rng.uniform(0.5, 5), rng.uniform(0.2, 3), rng.uniform(0.1, 2))
        total = sum(convs)
        out.append(CostBreakdown((*convs, 0.05 * total * rng.uniform(1 - spread, 1 + spread)),
                                 0.05 * total * rng.uniform(1 - spread, 1 + spread)))
    return out


def test_a_multiplier_the_measurements_cannot_pin_down_is_warned_about() -> None:
    truth = {"dense_conv": 1.0, "pointwise_conv": 1.0, "depthwise_conv": 1.0, "other": 8.0, "overhead": 1.0}

    def measured(parts: list[CostBreakdown]) -> list[float]:
        rng = random.Random(7)
        return [sum(truth[n] * v for n, v in zip(PARAMETERS, p.vector())) * (1 + rng.uniform(-0.03, 0.03))
                for p in parts]

    # shares that move +-20 %: the fit gives the 'other' time to 'other' and leaves almost none to the
    # overhead (x0.07, truly x1.0), a trade-off the 3 % noise cannot settle
    parts = students_with_other_and_overhead_in_step(10, seed=0, spread=0.2)
    result = fit(parts, measured(parts))
    assert result.multipliers["overhead"] < result.global_factor / 3
    assert result.standard_errors["overhead"] > result.multipliers["overhead"]
    assert result.poorly_determined == ("overhead",)
    assert re.fullmatch(r"poorly determined, far from the global factor x1\.32: overhead x0\.07 \(standard error "
                        r"1\.\d\d\); the measured students hardly differ in the share of the time these take, .*",
                        result.caveat or "")
    # shares that vary widely: 'other' is fitted 8x the rest, and that is information, not a warning
    parts = students_with_other_and_overhead_in_step(10, seed=2, spread=0.9)
    result = fit(parts, measured(parts))
    assert result.multipliers["other"] == pytest.approx(8.0, rel=0.1)
    assert result.multipliers["other"] > 3 * result.global_factor and result.caveat is None


def test_ten_noisy_measurements_predict_new_students_within_the_noise() -> None:
    train, new = students(10, seed=2), students(100, seed=3)
    result = fit(train, measure(train, noise=0.03))
    truth = measure(new)
    errors = sorted(abs(result.predict_ms(p) - t) / t for p, t in zip(new, truth))
    assert errors[len(errors) // 2] < 0.04
    assert result.loo_median_abs_error_pct < 6  # what the profile will claim, measured without the new ones


def test_one_broken_measurement_does_not_drag_the_fit() -> None:
    parts = students(12, seed=4)
    measured = measure(parts)
    measured[3] *= 5  # a run disturbed by another job
    result = fit(parts, measured)
    others = [i for i in range(12) if i != 3]
    errors = sorted(abs(result.predict_ms(parts[i]) - measured[i]) / measured[i] for i in others)
    assert errors[len(errors) // 2] < 0.01
    # every prior misses the broken one alike, so it does not push the choice to the global factor alone:
    # the convolutions (most of the time) keep their own multipliers
    assert all(result.multipliers[name] == pytest.approx(TRUE[name], rel=0.05) for name in KERNEL_CLASSES[:3])


def test_a_class_the_measurements_lack_keeps_its_ratio_to_the_global_factor() -> None:
    parts = students(6, seed=5, depthwise=False)
    result = fit(parts, [2 * p.total_ms for p in parts])  # everything twice as slow as the datasheet says
    assert result.multipliers["depthwise_conv"] == pytest.approx(2.0, rel=0.01)
    assert all(v == pytest.approx(2.0, rel=0.05) for v in result.multipliers.values())


def test_too_few_measurements_are_refused_with_the_count() -> None:
    parts = students(2)
    with pytest.raises(HwkdError, match="at least 3 measurements, got 2"):
        fit(parts, measure(parts))


def test_spread_picks_cover_the_range() -> None:
    values = [5.0, 1.0, 9.0, 3.0, 7.0]
    picks = spread_picks(values, 3)  # the fastest, the median and the slowest
    assert sorted(values[i] for i in picks) == [1.0, 5.0, 9.0]
    assert sorted(spread_picks(values, 10)) == list(range(5))


@pytest.mark.slow
def test_kernel_classes_of_a_mobilenet_block() -> None:
    space = load_space("fbnet")
    lowered = Lowerer().lower(torch_to_relax(space.build("3" * 22, 10), space.default_input_shape))
    classes = {kernel_class(k.features.kind) for k in lowered.kernels}
    assert {"dense_conv", "pointwise_conv", "depthwise_conv", "other"} <= classes


def test_calibrated_profile_predicts_what_the_fit_predicts() -> None:
    rpi4 = load_profile("rpi4")
    space = load_space("nb201")
    lowerer = Lowerer()
    rng = random.Random(0)
    lowered = [lowerer.lower(torch_to_relax(space.build(space.sample(rng), 10), (1, 3, 32, 32))) for _ in range(4)]
    parts = [breakdown(low.kernels, rpi4) for low in lowered]
    assert [p.total_ms for p in parts] == pytest.approx([latency_ms(low.kernels, rpi4) for low in lowered])
    result = fit(parts[:3], [1.5 * p.total_ms for p in parts[:3]])
    info = CalibrationInfo("rpi4", "ncnn", 4, 3, "2026-12-02", "m.csv", result.loo_median_abs_error_pct,
                           result.loo_spearman)
    profile = calibrated_profile(rpi4, result, info, "my-rpi4", keep_measuring=False)
    assert profile.calibration == info and profile.expected_error_pct == info.loo_median_abs_error_pct
    assert latency_ms(lowered[3].kernels, profile) == pytest.approx(result.predict_ms(parts[3]), rel=1e-4)
    assert latency_ms(lowered[3].kernels, profile) == pytest.approx(1.5 * parts[3].total_ms, rel=0.01)
    for name in KERNEL_CLASSES:
        assert "fitted: hwkd calibrate" in profile.sources[f"cost_model.{name}_scale"]
    assert profile.rpc is None and not profile.measure_local and profile.runtime.executor == "ncnn"
    assert replace(profile, calibration=None).expected_error_pct is None


def test_a_calibrations_caveat_is_written_with_the_profile_and_read_back() -> None:
    import yaml

    from hwkd.profiles import profile_from_dict, profile_to_dict

    rpi4, parts = load_profile("rpi4"), students(6)
    result = fit(parts, measure(parts))
    plain = CalibrationInfo("rpi4", "ncnn", 4, 6, "2026-12-03", "m.csv", 3.2, 0.97)
    warned = replace(plain, caveat="overhead x0.07 is 0.05 times the global factor x1.32 but poorly determined")
    for info in (plain, warned):
        profile = calibrated_profile(rpi4, result, info, "my-rpi4", keep_measuring=False)
        text = yaml.safe_dump(profile_to_dict(profile), sort_keys=False)
        assert ("caveat" in text) == (info.caveat is not None)  # no empty key in an ordinary calibration
        assert profile_from_dict("my-rpi4", yaml.safe_load(text), "my-rpi4.yaml").calibration == info
