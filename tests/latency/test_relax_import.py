"""Import into TVM must compute what torch computes (TVM's importer has pitfalls we work around)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from hwkd.errors import CompileError
from hwkd.latency.lowering import Lowerer
from hwkd.latency.measure import compile_student
from hwkd.latency.relax_import import onnx_to_relax, torch_to_relax
from hwkd.profiles import load_profile
from hwkd.spaces import load_space


def randomize_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial running statistics, so a BN computed in training mode would show."""
    gen = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
    return module.eval()


def run_tvm(graph, x: np.ndarray) -> np.ndarray:
    import tvm
    from tvm import relax

    student = compile_student(Lowerer().lower(graph), graph.params, load_profile("host"))
    device = tvm.cpu()
    vm = relax.VirtualMachine(student.executable, device)
    weights = [tvm.runtime.tensor(w, device) for w in student.weights]
    return vm["main"](tvm.runtime.tensor(x, device), *weights).numpy()


@pytest.mark.parametrize(
    ("space", "arch", "shape"),
    [
        # avg_pool (count_include_pad=False), a BN that cannot be folded (head), odd 15x15 input
        ("nb201", "|nor_conv_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|", (2, 3, 15, 15)),
        # grouped convs, channel shuffle, depthwise 5x5, strided skip convs, one input channel
        ("fbnet", "1587241365870124578812", (1, 1, 28, 28)),
    ],
)
@pytest.mark.slow
def test_compiled_student_computes_what_torch_computes(space: str, arch: str, shape: tuple[int, ...]) -> None:
    net = randomize_batchnorm(load_space(space).build(arch, 10, shape))
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    expected = net(torch.from_numpy(x)).detach().numpy()
    got = run_tvm(torch_to_relax(net, shape), x)
    assert np.abs(expected).max() > 0.1  # a real signal, not zeros
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_torch_module_is_left_untouched() -> None:
    net = randomize_batchnorm(load_space("nb201").build(
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|none~2|", 10))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    torch_to_relax(net, (1, 3, 32, 32))
    after = net.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


def test_untraceable_module_is_a_compile_error() -> None:
    class Branchy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x if x.sum() > 0 else -x

    with pytest.raises(CompileError, match="cannot trace Branchy with torch.fx"):
        torch_to_relax(Branchy(), (1, 3, 8, 8))


def export_onnx(net: torch.nn.Module, path: Path, shape: tuple[int, ...]) -> Path:
    torch.onnx.export(
        net.eval(), (torch.zeros(shape),), str(path), input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}}, dynamo=False,
    )
    return path


@pytest.mark.slow
def test_onnx_import_matches_onnxruntime(tmp_path: Path) -> None:
    import onnxruntime as ort

    net = randomize_batchnorm(load_space("nb201").build(
        "|nor_conv_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|", 10))
    path = export_onnx(net, tmp_path / "s.onnx", (1, 3, 32, 32))
    graph = onnx_to_relax(path)
    assert graph.input_shape == (1, 3, 32, 32)  # free batch set to 1
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    expected = ort.InferenceSession(str(path)).run(None, {"input": x})[0]
    np.testing.assert_allclose(run_tvm(graph, x), expected, rtol=1e-4, atol=1e-4)


def test_bad_onnx_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(CompileError, match="no such ONNX file"):
        onnx_to_relax(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x01garbage that is not protobuf" * 10)
    with pytest.raises(CompileError, match="junk.onnx: not an ONNX model|junk.onnx: TVM cannot import"):
        onnx_to_relax(junk)


@pytest.mark.parametrize("space", ["nb201-widths", "fbnet", "mbconv-small"])
def test_the_prepared_view_imports_what_a_graph_module_would(space: str) -> None:
    """`prepare_for_tvm` returns a view that skips a GraphModule's code generation; TVM must import
    from it exactly what it imports from a GraphModule of the same graph and attributes."""
    import tvm_ffi
    from torch import fx
    from tvm.relax.frontend.torch import from_fx

    from hwkd.latency.relax_import import _get_attr, prepare_for_tvm

    search_space = load_space(space)
    shape = search_space.default_input_shape
    module = randomize_batchnorm(search_space.build(search_space.sample(random.Random(2)), 10, shape))
    view = prepare_for_tvm(module, fx.Tracer().trace(module))
    targets = [n.target for n in view.graph.nodes if n.op in ("call_module", "get_attr")]
    graph_module = fx.GraphModule({t: _get_attr(view, t) for t in targets}, view.graph)
    imported = from_fx(view, [(shape, "float32")], keep_params_as_input=True)
    assert tvm_ffi.structural_equal(imported, from_fx(graph_module, [(shape, "float32")], keep_params_as_input=True))
    assert len(targets) > 10
