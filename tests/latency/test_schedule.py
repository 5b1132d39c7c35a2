"""hwkd's CPU schedule: each kind of fused kernel gets a parallel, vectorized schedule that computes
exactly what TVM's untuned loop nest computes."""

from __future__ import annotations

import numpy as np
import pytest

from hwkd.latency.lowering import Lowerer
from hwkd.latency.relax_import import torch_to_relax
from hwkd.latency.schedule import schedule_primfunc
from hwkd.latency.tir_analysis import kernel_kind
from hwkd.spaces import load_space

# an fbnet student with every kind of kernel: dense stem conv, pointwise, depthwise (a grouped conv to
# TVM), the global mean, the classifier
FBNET = "k3_e6-k5_e1-" * 10 + "k3_e3-k5_e6"


@pytest.fixture(scope="module")
def kernels_by_kind() -> dict[str, object]:
    from tvm import tirx

    shape = (1, 3, 32, 32)
    graph = torch_to_relax(load_space("fbnet").build(FBNET, 10, shape), shape)
    fused = Lowerer().lower(graph).fused_mod
    out: dict[str, object] = {}
    for _, func in fused.functions.items():
        if isinstance(func, tirx.PrimFunc):
            out.setdefault(kernel_kind(func), func)
    return out


def _run(func: object, inputs: list[np.ndarray]) -> list[np.ndarray]:
    import tvm

    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target="llvm")
    device = tvm.cpu()
    args = [tvm.runtime.tensor(a, device) for a in inputs]
    lib["main"](*args)
    return [a.numpy() for a in args]


def _inputs(func: object, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for param in func.params:  # type: ignore[attr-defined]
        shape = [int(d) for d in param.shape]
        arrays.append(rng.standard_normal(shape).astype(str(param.dtype)))
    return arrays


def test_the_kernels_of_a_block_space_cover_every_kind(kernels_by_kind) -> None:
    assert {"conv", "pointwise_conv", "group_conv", "matmul", "reduce"} <= set(kernels_by_kind)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["conv", "pointwise_conv", "group_conv", "matmul", "reduce"])
def test_each_kind_is_scheduled_parallel_and_vectorized_and_computes_the_same(kernels_by_kind, kind: str) -> None:
    func = kernels_by_kind[kind]
    scheduled = schedule_primfunc(func)
    assert scheduled.strategy in ("anchored", "per-block")
    text = scheduled.func.script()
    assert "T.parallel" in text and "T.vectorized" in text
    inputs = _inputs(func, seed=0)
    expected = _run(func, [a.copy() for a in inputs])[-1]
    got = _run(scheduled.func, [a.copy() for a in inputs])[-1]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
