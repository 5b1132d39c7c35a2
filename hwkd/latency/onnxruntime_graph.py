"""What ONNX Runtime runs of a student: the nodes of its graph after ONNX Runtime's own optimizations.

The `onnxruntime` cost model (hwkd.latency.cost_model) costs these nodes, not hwkd's fused TVM
kernels: ONNX Runtime fuses less (a channel shuffle stays a Reshape, a Transpose and a Reshape)
and, on x86, runs convolutions in a blocked layout (NCHWc) with a reorder node wherever a tensor
enters or leaves that layout, and each node costs a fixed dispatch besides its work. On 110 fbnet
students timed on a 2-core AVX-512 VM its node count moved from 67 to 145, and those nodes, not
the TVM kernels, are what made ONNX Runtime's ranking differ from hwkd's library
(benchmarks/calibrate.py). The nodes and their tensor shapes come from ONNX Runtime itself: one
profiled run of the model on zeros.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hwkd.errors import CompileError, error_line

if TYPE_CHECKING:  # the cost model reads RuntimeNode records without importing torch
    from torch import nn

ONNX_OPSET = 17  # of every ONNX file hwkd writes (`hwkd export` too)


def student_onnx(module: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """`module` (eval mode) as the ONNX file `hwkd export` writes, batch fixed to `input_shape`'s."""
    import torch

    buffer = io.BytesIO()
    try:
        torch.onnx.export(module.eval(), (torch.zeros(input_shape),), buffer,  # type: ignore[arg-type]  # writes to files too
                          input_names=["input"], output_names=["logits"], opset_version=ONNX_OPSET, dynamo=False)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types
        raise CompileError(f"cannot export {type(module).__name__} to ONNX: {error_line(exc)}") from None
    return buffer.getvalue()


@dataclass(frozen=True)
class RuntimeNode:
    """One node ONNX Runtime runs, as its profiler reports it."""

    op: str  # ONNX Runtime's operator: Conv, FusedConv, Gemm, ReorderInput, Transpose, Add, ...
    input_shapes: tuple[tuple[int, ...], ...]  # for a convolution: data, weight, bias (, a fused sum)
    output_shapes: tuple[tuple[int, ...], ...]
    bytes_read: int
    bytes_written: int


# Bytes per element of the tensor types the profiler names; others count 4.
_ELEMENT_BYTES = {"double": 8, "int64": 8, "uint64": 8, "float16": 2, "bfloat16": 2, "int16": 2, "uint16": 2,
                  "int8": 1, "uint8": 1, "bool": 1}
_FEED_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
               "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
               "tensor(bool)": "bool"}


def runtime_nodes(model: bytes, blocked_layout: bool,
                  input_shape: tuple[int, ...] | None = None) -> tuple[RuntimeNode, ...]:
    """The nodes ONNX Runtime's CPU provider runs for `model` after its graph optimizations, in order.

    `blocked_layout`: the board's ONNX Runtime has the NCHWc layout transformer (x86 builds; ARM
    ones do not); without it, everything but the layout optimizations. `input_shape`: of the first
    input, where the file leaves it free (other free dimensions are taken as 1).
    """
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if blocked_layout
                                        else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    options.intra_op_num_threads = 1
    options.log_severity_level = 3  # the optimizer's notes on unused initializers are not for the user
    options.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="hwkd-ort-") as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        try:
            session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
            feed = {}
            for position, arg in enumerate(session.get_inputs()):
                if arg.type not in _FEED_TYPES:
                    raise CompileError(f"input {arg.name} is a {arg.type}; hwkd feeds {', '.join(_FEED_TYPES)}")
                shape = [d if isinstance(d, int) and d > 0 else 1 for d in arg.shape]
                if position == 0 and input_shape is not None:
                    shape = list(input_shape)
                feed[arg.name] = np.zeros(shape, _FEED_TYPES[arg.type])
            session.run(None, feed)
            events = json.loads(Path(session.end_profiling()).read_text())
        except CompileError:
            raise
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own types
            raise CompileError(f"ONNX Runtime cannot run this model: {error_line(exc)}") from None
    return tuple(_node(event["args"]) for event in events
                 if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"))


def _node(args: dict) -> RuntimeNode:
    """A node from its profiler event's arguments; a tensor there is {type name: shape}."""
    def tensors(key: str) -> list[tuple[str, tuple[int, ...]]]:
        return [(kind, tuple(int(d) for d in shape)) for entry in args.get(key, []) for kind, shape in entry.items()]

    def nbytes(items: list[tuple[str, tuple[int, ...]]]) -> int:
        return sum(_ELEMENT_BYTES.get(kind, 4) * math.prod(shape) for kind, shape in items)

    inputs, outputs = tensors("input_type_shape"), tensors("output_type_shape")
    return RuntimeNode(op=str(args.get("op_name", "?")), input_shapes=tuple(shape for _, shape in inputs),
                       output_shapes=tuple(shape for _, shape in outputs),
                       bytes_read=nbytes(inputs), bytes_written=nbytes(outputs))
