"""The nodes ONNX Runtime runs of a student, as its own optimizer leaves the graph."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hwkd.errors import CompileError
from hwkd.latency.onnxruntime_graph import runtime_nodes, student_onnx


class Shuffle(nn.Module):
    """A channel shuffle of two groups, as ShuffleNet-style blocks have it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.reshape(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)


def plain() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 1), nn.ReLU())


def shuffled() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), Shuffle(), nn.Conv2d(16, 16, 1), nn.ReLU())


def test_onnxruntime_fuses_activations_but_not_a_shuffle() -> None:
    # ONNX has Conv, Relu, Conv, Relu: ONNX Runtime runs each ReLU inside its convolution
    assert runtime_nodes(student_onnx(plain(), (1, 3, 8, 8)), blocked_layout=False) == 2
    # the shuffle's Reshape, Transpose and Reshape stay three nodes (hwkd's TVM library fuses them away)
    assert runtime_nodes(student_onnx(shuffled(), (1, 3, 8, 8)), blocked_layout=False) == 5


def test_the_blocked_layout_adds_reorders_where_tensors_leave_it() -> None:
    # on x86 the convolutions run in NCHWc: a reorder out of it before the shuffle and back after it
    plain_nodes = runtime_nodes(student_onnx(plain(), (1, 3, 8, 8)), blocked_layout=True)
    shuffled_nodes = runtime_nodes(student_onnx(shuffled(), (1, 3, 8, 8)), blocked_layout=True)
    assert plain_nodes == 3 and shuffled_nodes == 8


def test_a_file_onnxruntime_cannot_read_is_one_line() -> None:
    with pytest.raises(CompileError, match="ONNX Runtime cannot load this model") as info:
        runtime_nodes(b"not a model", blocked_layout=False)
    assert "\n" not in str(info.value)
