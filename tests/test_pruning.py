"""Structured pruning of real students of three spaces (residual adds, grouped and depthwise
convolutions, channel shuffles): the pruned student computes what the original computes with the
removed channels zeroed, its estimate on the device went down to the target, and it is rebuilt
from plain weights and layer sizes."""

from __future__ import annotations

import copy

import pytest
import torch

from hwkd.latency.estimator import Estimator
from hwkd.profiles import load_profile
from hwkd.pruning import PruningError, prune_to_latency, reshape_like, zero_channels
from hwkd.spaces import load_space

SHAPE = (1, 1, 28, 28)
STUDENTS = [
    ("nb201-widths", "C16:|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|"),
    ("fbnet", "1587241365870124578812"),  # grouped convs with channel shuffles (1, 5), skips (8), k5_e6 (7)
    ("mbconv-small", None),  # the space's first sample: depthwise convs, residual MBConv blocks
]


@pytest.fixture(scope="module")
def estimator() -> Estimator:
    return Estimator(load_profile("rpi4"), "model")


def _student(space_name: str, arch: str | None) -> tuple[object, str, torch.nn.Module]:
    import random

    space = load_space(space_name)
    arch = space.parse(arch or space.sample(random.Random(0)))
    torch.manual_seed(0)
    student = space.build(arch, 10, SHAPE).eval()
    with torch.no_grad():  # BatchNorm statistics as after training, so that zeroing is really tested
        for m in student.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return space, arch, student


@pytest.mark.slow
@pytest.mark.parametrize("space_name, arch", STUDENTS, ids=[s for s, _ in STUDENTS])
def test_pruning_meets_the_target_and_computes_what_the_zeroed_original_computes(
        estimator: Estimator, space_name: str, arch: str | None) -> None:
    space, arch, student = _student(space_name, arch)
    original = copy.deepcopy(student)
    cost = lambda m: estimator.estimate_module(m, SHAPE).latency_ms  # noqa: E731
    before = estimator.estimate_module(student, SHAPE)
    result = prune_to_latency(student, SHAPE, cost, 0.75 * before.latency_ms)
    after = estimator.estimate_module(student, SHAPE)
    assert result.met_target and after.latency_ms <= 0.75 * before.latency_ms
    assert [s.latency_ms for s in result.steps] == sorted((s.latency_ms for s in result.steps), reverse=True)
    assert after.params_bytes < before.params_bytes and after.macs < before.macs
    assert 0 < result.steps[-1].channels_removed < result.channels_before
    widths = {name: m.out_channels for name, m in original.named_modules() if isinstance(m, torch.nn.Conv2d)}
    pruned_convs = {name: len(gone) for name, gone in result.removed.items() if name in widths and gone}
    assert pruned_convs and all((widths[name] - n) % 8 == 0 for name, n in pruned_convs.items())
    x = torch.randn(8, *SHAPE[1:])
    with torch.no_grad():
        torch.testing.assert_close(student(x), zero_channels(original, result.removed)(x), rtol=1e-4, atol=1e-4)
        rebuilt = reshape_like(space.build(arch, 10, SHAPE).eval(), result.shapes(), student.state_dict())
        torch.testing.assert_close(rebuilt(x), student(x))


def test_a_target_already_met_prunes_nothing(estimator: Estimator) -> None:
    _, _, student = _student(*STUDENTS[0])
    before = estimator.estimate_module(student, SHAPE).latency_ms
    result = prune_to_latency(student, SHAPE, lambda m: estimator.estimate_module(m, SHAPE).latency_ms, 2 * before)
    assert result.met_target and len(result.steps) == 1 and not result.removed


def test_an_unreachable_target_names_the_smallest_latency_reached(estimator: Estimator) -> None:
    _, _, student = _student(*STUDENTS[0])
    with pytest.raises(PruningError, match=r"--max-latency-ms 0.001: structured pruning reaches \d+\.\d{3} ms at "
                                           r"best .* going further would remove whole layers"):
        prune_to_latency(student, SHAPE, lambda m: estimator.estimate_module(m, SHAPE).latency_ms, 0.001,
                         step_fraction=0.3)
