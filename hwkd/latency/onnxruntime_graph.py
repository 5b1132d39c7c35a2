"""What ONNX Runtime runs of a student: the nodes of its graph after ONNX Runtime's own optimizations.

The `onnxruntime` cost model (hwkd.latency.cost_model) charges each node a fixed cost
(`cost_model.node_overhead_us`: allocating its output, dispatching it to the thread pool). That
count is not hwkd's fused kernels: ONNX Runtime fuses less (a channel shuffle stays a Reshape, a
Transpose and a Reshape) and, on x86, runs convolutions in a blocked layout (NCHWc) with a reorder
node wherever a tensor enters or leaves that layout. On 110 fbnet students timed on a 2-core
AVX-512 VM, its node count moved from 67 to 145, and that count, not the TVM kernels', is what
made ONNX Runtime's ranking differ from hwkd's library (benchmarks/calibrate.py).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import torch
from torch import nn

from hwkd.errors import CompileError, error_line

ONNX_OPSET = 17  # of every ONNX file hwkd writes (`hwkd export` too)


def student_onnx(module: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """`module` (eval mode) as the ONNX file `hwkd export` writes, batch fixed to `input_shape`'s."""
    buffer = io.BytesIO()
    try:
        torch.onnx.export(module.eval(), (torch.zeros(input_shape),), buffer,  # type: ignore[arg-type]  # writes to files too
                          input_names=["input"], output_names=["logits"], opset_version=ONNX_OPSET, dynamo=False)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types
        raise CompileError(f"cannot export {type(module).__name__} to ONNX: {error_line(exc)}") from None
    return buffer.getvalue()


def runtime_nodes(model: bytes, blocked_layout: bool) -> int:
    """Nodes ONNX Runtime's CPU provider runs for `model` after its graph optimizations.

    `blocked_layout`: the board's ONNX Runtime has the NCHWc layout transformer (x86 builds; ARM
    ones do not); without it, everything but the layout optimizations.
    """
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if blocked_layout
                                        else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    options.intra_op_num_threads = 1
    options.log_severity_level = 3  # the optimizer's notes on unused initializers are not for the user
    with tempfile.TemporaryDirectory(prefix="hwkd-ort-") as tmp:
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        try:
            ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
            return len(onnx.load(options.optimized_model_filepath).graph.node)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own types
            raise CompileError(f"ONNX Runtime cannot load this model: {error_line(exc)}") from None
