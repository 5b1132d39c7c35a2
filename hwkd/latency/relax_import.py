"""Import a student into TVM Relax: a torch module through torch.fx, or an ONNX file.

Weights stay function parameters (`keep_params_as_input`), so nothing is constant-folded at import:
folding BatchNorm-heavy graphs in TVM is slow. BatchNorm after a convolution is folded into it in
torch first, as a deployed model has it. Kernels that depend on weights alone (a transposed linear
weight, say) are recognised later and not charged, as a deployed library pre-computes them.
"""

from __future__ import annotations

import copy
import logging
import operator
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from hwkd.errors import CompileError, error_line
from hwkd.latency.type_inference import memoize_layout_ops

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RelaxGraph:
    """A Relax module whose `main` takes the input first, then its weights."""

    mod: Any  # tvm.IRModule
    params: list[np.ndarray]  # weights, in the order `main` takes them after the input
    input_name: str
    input_shape: tuple[int, ...]

    @property
    def params_bytes(self) -> int:
        return int(sum(p.nbytes for p in self.params))


def torch_to_relax(module: nn.Module, input_shape: tuple[int, ...]) -> RelaxGraph:
    """Trace `module` (eval mode) with torch.fx and import it; BN is folded into preceding convs."""
    from tvm import relax
    from tvm.relax.frontend.torch import from_fx

    memoize_layout_ops()

    module = module.eval()
    try:
        graph = fx.Tracer().trace(module)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means the same to the user
        raise CompileError(
            f"cannot trace {type(module).__name__} with torch.fx ({error_line(exc)}); "
            "students must be traceable (no data-dependent control flow)"
        ) from None
    graph_module = prepare_for_tvm(module, graph)
    try:
        mod = from_fx(graph_module, [(tuple(input_shape), "float32")], keep_params_as_input=True)
    except Exception as exc:  # noqa: BLE001 - TVM raises many types for unsupported ops
        raise CompileError(f"TVM cannot import {type(module).__name__}: {error_line(exc)}") from None
    mod, params = relax.frontend.detach_params(mod)
    weights = [p.numpy() for p in params.get("main", [])]
    return RelaxGraph(mod, weights, "input", tuple(input_shape))


def onnx_to_relax(path: str | os.PathLike[str], input_shape: tuple[int, ...] | None = None) -> RelaxGraph:
    """Import an ONNX file; a free batch dimension is set to 1 (or to `input_shape`)."""
    import onnx
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    memoize_layout_ops()

    file = Path(path)
    if not file.is_file():
        raise CompileError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(file))
    except Exception as exc:  # noqa: BLE001 - protobuf errors vary
        raise CompileError(f"{path}: not an ONNX model ({error_line(exc)})") from None
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise CompileError(f"{path}: hwkd estimates models with one input; this one has {len(inputs)} ({names})")
    graph_input = inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in graph_input.type.tensor_type.shape.dim]
    if input_shape is not None:
        if len(input_shape) != len(dims) or any(d not in (None, s) for d, s in zip(dims, input_shape)):
            raise CompileError(f"{path}: input {graph_input.name!r} has shape {dims}, not {list(input_shape)}")
        shape = tuple(input_shape)
    else:
        if any(d is None for d in dims[1:]):
            raise CompileError(f"{path}: input {graph_input.name!r} has free dimensions {dims}; pass --input-shape")
        shape = tuple([1] + [int(d) for d in dims[1:] if d is not None]) if dims else ()
    try:
        mod = from_onnx(model, shape_dict={graph_input.name: list(shape)}, keep_params_in_input=True)
    except Exception as exc:  # noqa: BLE001 - TVM raises many types for unsupported ops
        raise CompileError(f"{path}: TVM cannot import this ONNX model ({error_line(exc)})") from None
    mod, params = relax.frontend.detach_params(mod)
    weights = [p.numpy() for p in params.get("main", [])]
    return RelaxGraph(mod, weights, graph_input.name, shape)


def prepare_for_tvm(module: nn.Module, graph: fx.Graph) -> nn.Module:
    """The traced graph as TVM 0.27's FX importer computes it right, in a module `from_fx` reads.

    - each eval BatchNorm2d that only follows a Conv2d is folded into it (a deployed model has it
      folded), every other BatchNorm2d becomes its inference-time affine map: the importer would
      run BatchNorm2d modules in training mode;
    - `nn.AvgPool2d` modules become `F.avg_pool2d` calls: the importer drops their
      `count_include_pad`.

    `module` itself is not changed or copied, which matters when thousands of students are
    estimated: only the folded convolutions are new (shallow copies with new weights). The result
    is an `_ImportView`, not a GraphModule: it cannot run, and it costs 2 ms instead of 6.
    """
    modules = dict(module.named_modules())
    new_attrs: dict[str, Any] = {}
    for node in list(graph.nodes):
        bn = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(bn, nn.BatchNorm2d) or bn.running_mean is None or bn.running_var is None:
            continue
        source = node.args[0]
        conv = modules.get(source.target) if isinstance(source, fx.Node) and source.op == "call_module" else None
        if isinstance(conv, nn.Conv2d) and isinstance(source, fx.Node) and len(source.users) == 1:
            fused_name = f"{source.target}_bnfold".replace(".", "_")
            new_attrs[fused_name] = _folded_conv(conv, bn)
            source.target = fused_name
            node.replace_all_uses_with(source)
            graph.erase_node(node)
            continue
        # TVM 0.27's FX importer runs BatchNorm2d modules in training mode (batch statistics), so
        # a BN that cannot be folded becomes the affine map it is at inference.
        scale, shift = _bn_affine(bn)
        base = str(node.target).replace(".", "_")
        new_attrs[f"{base}_scale"] = scale.reshape(1, -1, 1, 1).clone()
        new_attrs[f"{base}_shift"] = shift.reshape(1, -1, 1, 1).clone()
        with graph.inserting_before(node), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the attributes exist once the view is built
            scale_node = graph.get_attr(f"{base}_scale")
            shift_node = graph.get_attr(f"{base}_shift")
            scaled = graph.call_function(operator.mul, (node.args[0], scale_node))
            shifted = graph.call_function(operator.add, (scaled, shift_node))
        node.replace_all_uses_with(shifted)
        graph.erase_node(node)
    _functional_avg_pool(graph, modules)
    view = _ImportView(graph)
    for node in graph.nodes:
        if node.op == "call_module":
            view.place(node.target, new_attrs.get(node.target) or modules[node.target])
        elif node.op == "get_attr":
            view.place(node.target, new_attrs[node.target] if node.target in new_attrs
                       else _get_attr(module, node.target))
    return view


class _ImportView(nn.Module):
    """What TVM's `from_fx` reads of a GraphModule (`graph`, and the submodules, parameters and
    attributes its nodes name), without the Python code a GraphModule generates and compiles for
    its forward: that code is never run, and writing it was 4 ms of a new student's 0.09 s."""

    def __init__(self, graph: fx.Graph) -> None:
        super().__init__()
        self.graph = graph

    def place(self, target: str, value: Any) -> None:
        """Set the dotted attribute `target` (a.b.c) to `value`, making empty modules on the way."""
        *path, name = target.split(".")
        owner: nn.Module = self
        for part in path:
            if not hasattr(owner, part):
                owner.add_module(part, nn.Module())
            owner = getattr(owner, part)
        setattr(owner, name, value)  # as a GraphModule does: modules and parameters are registered


def _folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A shallow copy of `conv` whose weight and bias include `bn` (eval statistics)."""
    # torch's fuse_conv_bn_weights computes the same with autograd, several times slower here
    scale, shift = _bn_affine(bn)
    with torch.no_grad():
        weight = conv.weight * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
        bias = shift if conv.bias is None else conv.bias * scale + shift
    folded = copy.copy(conv)
    folded._parameters = {"weight": nn.Parameter(weight, requires_grad=False),
                          "bias": nn.Parameter(bias, requires_grad=False)}
    return folded


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) per channel: an eval BatchNorm2d is `x * scale + shift`."""
    assert bn.running_mean is not None and bn.running_var is not None
    with torch.no_grad():
        scale = bn.running_var.add(bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale
        if bn.bias is not None:
            shift = shift + bn.bias
    return scale, shift


def _functional_avg_pool(graph: fx.Graph, modules: dict[str, nn.Module]) -> None:
    """Rewrite `nn.AvgPool2d` modules as `F.avg_pool2d` calls, which keep `count_include_pad`."""
    for node in list(graph.nodes):
        pool = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(pool, nn.AvgPool2d):
            with graph.inserting_after(node):
                call = graph.call_function(
                    F.avg_pool2d,
                    (node.args[0], pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode, pool.count_include_pad),
                )
            node.replace_all_uses_with(call)
            graph.erase_node(node)


def _get_attr(module: nn.Module, target: str) -> Any:
    value: Any = module
    for part in target.split("."):
        value = getattr(value, part)
    return value
