"""Feature taps, automatic layer pairing, adapters and the transfer losses."""

from __future__ import annotations

import pytest
import torch

from hwkd.distillation.features import (
    Transfer,
    attention_map,
    feature_points,
    pair_layers,
    stage_outputs,
    tap,
    trace,
)
from hwkd.errors import HwkdError
from hwkd.spaces import load_space
from hwkd.teachers import DefaultTeacher

ARCH = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
SHAPE = (1, 1, 28, 28)


def student() -> torch.nn.Module:
    torch.manual_seed(0)
    return load_space("nb201-small").build(ARCH, 10, SHAPE)


def test_stage_outputs_of_a_student_and_the_default_teacher() -> None:
    s_points = feature_points(trace(student()), SHAPE)
    t_points = feature_points(trace(DefaultTeacher(1, 10)), SHAPE)
    assert [(p.height, p.channels) for p in stage_outputs(s_points)] == [(28, 16), (14, 32), (7, 64)]
    assert [(p.height, p.channels) for p in stage_outputs(t_points)] == [(28, 32), (14, 64), (7, 128)]
    pairs = pair_layers(t_points, s_points)
    assert [(t.height, s.height) for t, s in pairs] == [(28, 28), (14, 14), (7, 7)]


def test_a_tap_returns_the_same_logits_and_shares_the_parameters() -> None:
    model = student().eval()
    graph = trace(model)
    stages = stage_outputs(feature_points(graph, SHAPE))
    tapped = tap(graph, [p.name for p in stages]).eval()
    x = torch.randn(3, 1, 28, 28)
    logits, *features = tapped(x)
    torch.testing.assert_close(logits, model(x))
    assert [tuple(f.shape) for f in features] == [(3, 16, 28, 28), (3, 32, 14, 14), (3, 64, 7, 7)]
    assert {id(p) for p in tapped.parameters()} == {id(p) for p in model.parameters()}


def test_adapters_are_sized_from_the_traced_shapes_and_the_losses_vanish_on_a_match() -> None:
    s_points = feature_points(trace(student()), SHAPE)
    t_points = feature_points(trace(DefaultTeacher(1, 10)), SHAPE)
    pairs = pair_layers(t_points, s_points)
    transfer = Transfer("feature", pairs)
    conv = transfer.adapters[2].project[0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (64, 128, (1, 1))
    same = torch.randn(2, 8, 7, 7)
    attention = Transfer("attention", [(pairs[2][0], pairs[2][1])])
    assert float(attention([same], [same * 3])) == pytest.approx(0.0, abs=1e-9)  # scale-free maps
    assert float(attention([same], [torch.randn(2, 8, 7, 7)])) > 0


def test_attention_maps_are_unit_vectors_resized_to_the_teacher() -> None:
    a = attention_map(torch.randn(4, 8, 14, 14), size=(7, 7))
    assert a.shape == (4, 49)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(4))


def test_chosen_layers_are_checked_by_name() -> None:
    s_points = feature_points(trace(student()), SHAPE)
    t_points = feature_points(trace(DefaultTeacher(1, 10)), SHAPE)
    t_name, s_name = stage_outputs(t_points)[-1].name, stage_outputs(s_points)[-1].name
    assert pair_layers(t_points, s_points, [t_name], [s_name])[0][0].channels == 128
    with pytest.raises(HwkdError, match="--student-layers 'nope': not a 4-D feature of the student"):
        pair_layers(t_points, s_points, [t_name], ["nope"])
    with pytest.raises(HwkdError, match="give the same number"):
        pair_layers(t_points, s_points, [t_name], [])
    with pytest.raises(HwkdError, match="--transfer 'hint': choose none, feature, attention"):
        Transfer("hint", [])
