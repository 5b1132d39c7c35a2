from __future__ import annotations

import subprocess
import sys
import textwrap

# The memoized inference is installed process-wide and for good, so the comparison with TVM's own
# inference runs in a fresh interpreter: first without it, then with it.
SCRIPT = textwrap.dedent(
    """
    import torch, tvm, tvm_ffi
    from torch import fx
    from tvm import relax
    from tvm.relax.frontend.torch import from_fx
    from hwkd.latency import type_inference
    from hwkd.latency.relax_import import prepare_for_tvm
    from hwkd.spaces import load_space

    def imported(space, arch, shape):
        torch.manual_seed(0)  # the same weights: BatchNorms that are not folded become constants
        module = load_space(space).build(arch, 10, shape).eval()
        graph_module = prepare_for_tvm(module, fx.Tracer().trace(module))
        return from_fx(graph_module, [(shape, "float32")], keep_params_as_input=True)

    students = [("nb201", "|nor_conv_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|skip_connect~0|none~1|nor_conv_3x3~2|",
                 (1, 3, 32, 32)),
                ("fbnet", None, (1, 3, 32, 32)), ("mbconv-small", None, (1, 1, 28, 28))]
    import random
    students = [(s, a or load_space(s).sample(random.Random(1)), shape) for s, a, shape in students]
    before = [imported(*s) for s in students]
    type_inference.memoize_layout_ops()
    type_inference.memoize_layout_ops()  # a second install changes nothing
    after = [imported(*s) for s in students]
    again = [imported(*s) for s in students]  # every convolution and pooling now from the cache
    assert all(tvm_ffi.structural_equal(a, b) for a, b in zip(before, after))
    assert all(tvm_ffi.structural_equal(a, b) for a, b in zip(before, again))
    cached = len(type_inference._RESULTS)
    assert cached > 10, cached

    # a symbolic batch is inferred by TVM itself, never cached
    n = tvm.tirx.Var("n", "int64")
    x = relax.Var("x", relax.TensorType([n, 3, 8, 8], "float32"))
    w = relax.Var("w", relax.TensorType([4, 3, 3, 3], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x, w]):
        out = bb.emit(relax.op.nn.conv2d(x, w))
        bb.emit_func_output(out)
    assert str(out.ty) == 'R.Tensor((n, 4, 6, 6), dtype="float32")', out.ty
    assert len(type_inference._RESULTS) == cached
    print("ok", cached)
    """
)


def test_memoized_inference_gives_tvms_own_types_for_every_space() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok")
