"""SynFlow against cases worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hwkd.spaces import load_space
from hwkd.zero_cost import synflow


def test_linear_chain_scores_depth_times_the_summed_output() -> None:
    # y = |W2| |W1| x on x = ones: every weight's |w * dR/dw| sums, layer by layer, to R itself
    # (R is linear in each layer's weights), so two layers score 2R
    first, second = nn.Linear(3, 2, bias=False), nn.Linear(2, 4, bias=False)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]]))
        second.weight.copy_(torch.tensor([[1.0, 1.0], [-2.0, 0.0], [0.5, -0.5], [0.0, 1.0]]))
    with torch.no_grad():
        r = float(torch.ones(4) @ second.weight.abs() @ first.weight.abs() @ torch.ones(3))
    assert r == pytest.approx(3.5 * 3.5 + 4.0 * 2.5)  # column sums of |W2| times row sums of |W1|
    assert synflow(nn.Sequential(first, second), (1, 3)) == pytest.approx(math.log10(2 * r))


def test_bias_counts_its_own_paths() -> None:
    # y = |w| x + |b| on x = 1: |w| * 1 + |b| * 1
    layer = nn.Linear(1, 1)
    with torch.no_grad():
        layer.weight.fill_(-3.0)
        layer.bias.fill_(2.0)
    assert synflow(layer, (1, 1)) == pytest.approx(math.log10(5.0))


def test_the_scored_model_is_left_as_it_was() -> None:
    model = load_space("nb201-widths").build("C8:|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+"
                                             "|none~0|avg_pool_3x3~1|nor_conv_3x3~2|", 10, (1, 1, 28, 28))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    score = synflow(model, (1, 1, 28, 28))
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).dtype == torch.float32
    assert math.isfinite(score) and score > 0


def test_wider_students_score_higher() -> None:
    space = load_space("nb201-widths")
    cell = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|"
    torch.manual_seed(0)
    narrow = synflow(space.build("C4:" + cell, 10, (1, 1, 28, 28)), (1, 1, 28, 28))
    torch.manual_seed(0)
    wide = synflow(space.build("C16:" + cell, 10, (1, 1, 28, 28)), (1, 1, 28, 28))
    assert wide > narrow + 1  # more than ten times the paths
