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


def ops(model: nn.Module, blocked_layout: bool) -> list[str]:
    return [node.op for node in runtime_nodes(student_onnx(model, (1, 3, 8, 8)), blocked_layout=blocked_layout)]


def test_onnxruntime_fuses_activations_but_not_a_shuffle() -> None:
    # ONNX has Conv, Relu, Conv, Relu: ONNX Runtime runs each ReLU inside its convolution
    assert ops(plain(), blocked_layout=False) == ["FusedConv", "FusedConv"]
    # the shuffle's Reshape, Transpose and Reshape stay three nodes (hwkd's TVM library fuses them away)
    assert ops(shuffled(), blocked_layout=False) == ["FusedConv", "Reshape", "Transpose", "Reshape", "FusedConv"]


def test_the_blocked_layout_adds_reorders_where_tensors_leave_it() -> None:
    # on x86 the convolutions run in NCHWc: a reorder out of it at the end, and around the shuffle
    assert ops(plain(), blocked_layout=True) == ["Conv", "Conv", "ReorderOutput"]
    assert ops(shuffled(), blocked_layout=True) == ["Conv", "ReorderOutput", "Reshape", "Transpose", "Reshape",
                                                    "ReorderInput", "Conv", "ReorderOutput"]


def test_nodes_carry_their_shapes_and_bytes() -> None:
    first, reshape, transpose = runtime_nodes(student_onnx(shuffled(), (1, 3, 8, 8)), blocked_layout=False)[:3]
    # the 3x3 convolution reads its input, weight and bias (float32) and writes 16 channels of 8x8
    assert first.input_shapes == ((1, 3, 8, 8), (16, 3, 3, 3), (16,)) and first.output_shapes == ((1, 16, 8, 8),)
    assert first.bytes_read == 4 * (3 * 64 + 16 * 27 + 16) and first.bytes_written == 4 * 16 * 64
    assert reshape.output_shapes == ((1, 2, 8, 8, 8),)  # the shuffle's two groups of 8 channels
    assert transpose.input_shapes == ((1, 2, 8, 8, 8),) and transpose.output_shapes == ((1, 8, 2, 8, 8),)
    assert transpose.bytes_read == transpose.bytes_written == 4 * 16 * 64


def test_a_free_batch_takes_the_given_input_shape() -> None:
    model = student_onnx(plain(), (1, 3, 8, 8))
    import onnx

    graph = onnx.load_from_string(model)
    graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"  # as `hwkd export` writes it
    free = graph.SerializeToString()
    assert runtime_nodes(free, blocked_layout=False)[0].input_shapes[0] == (1, 3, 8, 8)  # a free dimension: 1
    assert runtime_nodes(free, blocked_layout=False, input_shape=(4, 3, 8, 8))[0].input_shapes[0] == (4, 3, 8, 8)


def test_a_file_onnxruntime_cannot_read_is_one_line() -> None:
    with pytest.raises(CompileError, match="ONNX Runtime cannot run this model") as info:
        runtime_nodes(b"not a model", blocked_layout=False)
    assert "\n" not in str(info.value)
