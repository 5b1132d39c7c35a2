"""hwkd's CPU schedule: each kind of fused kernel gets a parallel, vectorized schedule that computes
exactly what TVM's untuned loop nest computes."""

from __future__ import annotations

import numpy as np
import pytest

from hwkd.latency.lowering import Lowerer
from hwkd.latency.relax_import import torch_to_relax
from hwkd.latency.schedule import (
    ConvTile,
    RegisterTile,
    conv_tile,
    conv_tiles,
    register_tile,
    schedule_primfunc,
    schedule_variants,
)
from hwkd.latency.tir_analysis import kernel_kind
from hwkd.spaces import load_space

TILE_FLOATS = RegisterTile().tile_floats
AVX512 = register_tile(512)

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


STRATEGY = {"conv": "tiled", "pointwise_conv": "tiled", "group_conv": "anchored", "matmul": "anchored",
            "reduce": "anchored"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["conv", "pointwise_conv", "group_conv", "matmul", "reduce"])
def test_each_kind_is_scheduled_parallel_and_vectorized_and_computes_the_same(kernels_by_kind, kind: str) -> None:
    func = kernels_by_kind[kind]
    scheduled = schedule_primfunc(func)
    assert scheduled.strategy == STRATEGY[kind]
    text = scheduled.func.script()
    assert "T.parallel" in text and "T.vectorized" in text
    inputs = _inputs(func, seed=0)
    expected = _run(func, [a.copy() for a in inputs])[-1]
    got = _run(scheduled.func, [a.copy() for a in inputs])[-1]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_a_dense_tile_keeps_its_accumulators_in_registers_and_fills_whole_vectors() -> None:
    # nb201's 3x3 convolutions: 4 channels x 2 rows x 8 columns, 8 vectors, 6 loads per 8 multiply-adds
    assert conv_tile(64, 8, 8) == ConvTile(channels=4, rows=2, row_floats=8)
    assert conv_tile(16, 32, 32) == ConvTile(channels=4, rows=2, row_floats=8)
    # a 1x1 convolution on a 4x4 image is a matrix product of 16-float rows: two vectors, six channels
    assert conv_tile(1104, 1, 16, image_width=4) == ConvTile(channels=6, rows=1, row_floats=16)
    # a stride-2 convolution gathers its input row element by element: the tile shares it among more
    # channels (a 4-channel tile of 2 rows would load 14 elements for 8 multiply-adds)
    assert conv_tile(64, 7, 7, column_stride=2) == ConvTile(channels=8, rows=1, row_floats=7)
    assert conv_tile(64, 7, 7) == ConvTile(channels=8, rows=1, row_floats=7)
    assert conv_tile(32, 14, 14, column_stride=2) == ConvTile(channels=8, rows=1, row_floats=7)
    assert conv_tile(32, 14, 14) == ConvTile(channels=4, rows=2, row_floats=7)
    for shape in [(64, 8, 8), (184, 1, 16), (352, 1, 49), (3, 224, 224), (1504, 1, 1)]:
        tile = conv_tile(*shape)
        vectors = -(-tile.row_floats // 8)
        assert tile.channels * tile.rows * vectors * 8 <= TILE_FLOATS
        assert shape[0] % tile.channels == 0 and shape[1] % tile.rows == 0 and shape[2] % tile.row_floats == 0


@pytest.mark.slow
@pytest.mark.parametrize("simd_bits", [128, 512])
def test_a_strided_and_a_padded_convolution_compute_the_same_when_tiled(simd_bits: int) -> None:
    """The stem (stride 2, padding), 1x1 convs with stride 2, on a 16x16 image, on an 8x8 image with a
    residual (flattened for AVX-512's 16 lanes) and on a 4x4 image (flattened) are tiled correctly,
    with NEON/AVX2 tiles and with AVX-512's (compiled for this CPU: what the schedule computes does
    not depend on the instructions LLVM picks)."""
    import torch
    from tvm import tirx

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1)
            self.down = torch.nn.Conv2d(16, 24, 1, stride=2)
            self.wide = torch.nn.Conv2d(24, 40, 5, padding=2)
            self.point = torch.nn.Conv2d(16, 16, 1)  # on 16x16: a tile of 2 rows of 8
            self.mid = torch.nn.Conv2d(24, 24, 1)  # on 8x8: 4 image rows in two 16-lane vectors on AVX-512
            self.late = torch.nn.Conv2d(40, 48, 1)  # on 4x4: the image flattened into one 16-float row

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.point(torch.relu(self.stem(x))))
            x = torch.relu(self.down(x))
            x = self.wide(x + self.mid(x))
            return torch.relu(self.late(torch.nn.functional.max_pool2d(x, 2)))

    shape = (1, 3, 32, 32)
    fused = Lowerer().lower(torch_to_relax(Net().eval(), shape)).fused_mod
    tiled = 0
    for _, func in fused.functions.items():
        if not isinstance(func, tirx.PrimFunc) or "conv" not in kernel_kind(func):
            continue
        scheduled = schedule_primfunc(func, register_tile(simd_bits))
        tiled += scheduled.strategy == "tiled"
        if [int(d) for d in func.params[-1].shape] == [1, 48, 4, 4]:  # `late`: one flattened 16-float row
            assert "T.vectorized(T.int64(16))" in scheduled.func.script()
        shapes = [[int(d) for d in p.shape] for p in func.params]
        if shapes[0] == shapes[-1] == [1, 24, 8, 8] and simd_bits == 512:  # `mid`, with its residual
            update = scheduled.func.script().split('T.sblock("conv2d_nchw_update")')[1].split("T.sblock(")[0]
            # one axis of 64 pixels in the block itself (linear indices), in whole 16-lane vectors
            assert "T.vectorized(T.int64(32))" in scheduled.func.script() and "T.axis.spatial(T.int64(64)" in update
        inputs = _inputs(func, seed=1)
        expected = _run(func, [a.copy() for a in inputs])[-1]
        got = _run(scheduled.func, [a.copy() for a in inputs])[-1]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert tiled == 6


@pytest.mark.slow
def test_a_wide_depthwise_row_is_vectorized_in_16_lane_pieces_and_computes_the_same() -> None:
    """A 112-float row as 7 x 16 lanes (2 x 56 ran 3.8x slower); a 56-float row stays one vector."""
    import re

    import torch
    from tvm import tirx

    for size, lanes in ((112, 16), (56, 56)):
        net = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8).eval()
        shape = (1, 8, size, size)
        fused = Lowerer().lower(torch_to_relax(net, shape)).fused_mod
        funcs = [f for _, f in fused.functions.items()
                 if isinstance(f, tirx.PrimFunc) and kernel_kind(f) == "group_conv"]
        assert len(funcs) == 1
        scheduled = schedule_primfunc(funcs[0])
        widths = {int(w) for w in re.findall(r"T\.vectorized\((?:T\.int64\()?(\d+)", scheduled.func.script())}
        assert lanes in widths and (size <= 64 or max(widths) <= 16)
        inputs = _inputs(funcs[0], seed=2)
        expected = _run(funcs[0], [a.copy() for a in inputs])[-1]
        got = _run(scheduled.func, [a.copy() for a in inputs])[-1]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("size", "kernel", "deinterleaved"), [(16, 3, True), (28, 5, True), (15, 3, False)])
def test_a_stride_2_depthwise_conv_reads_its_padded_input_by_parity_and_computes_the_same(
        size: int, kernel: int, deinterleaved: bool) -> None:
    """Its padded input is stored as even and odd columns apart (a contiguous read per filter column
    instead of a gather), where the padded row has an even width; an odd one keeps its layout."""
    import torch
    from tvm import tirx

    net = torch.nn.Conv2d(8, 8, kernel, stride=2, padding=kernel // 2, groups=8).eval()
    shape = (1, 8, size, size)
    fused = Lowerer().lower(torch_to_relax(net, shape)).fused_mod
    funcs = [f for _, f in fused.functions.items() if isinstance(f, tirx.PrimFunc) and kernel_kind(f) == "group_conv"]
    assert len(funcs) == 1
    scheduled = schedule_primfunc(funcs[0])
    assert scheduled.strategy == "anchored"
    padded = size + 2 * (kernel // 2)
    split = f"T.int64({padded // 2})))" if deinterleaved else f"T.int64({padded})))"
    assert any(line.strip().startswith("pad_temp = ") and split in line and ("T.int64(2)" in line) == deinterleaved
               for line in scheduled.func.script().splitlines())
    inputs = _inputs(funcs[0], seed=3)
    expected = _run(funcs[0], [a.copy() for a in inputs])[-1]
    got = _run(scheduled.func, [a.copy() for a in inputs])[-1]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("op", "size", "per_channel"), [
    ("depthwise", 32, True), ("depthwise-stride-2", 16, True), ("avg_pool", 8, True), ("depthwise", 112, False)])
def test_a_small_padded_plane_is_padded_channel_by_channel_inside_the_parallel_loop(
        op: str, size: int, per_channel: bool) -> None:
    """Before a depthwise convolution or pooling, each channel's padded plane is written inside the
    kernel's one parallel loop over channels (it stays in L1 until read); a plane beyond
    CHANNEL_PAD_BYTES (114 x 114 floats) keeps its own parallel loop over rows. Same outputs."""
    import re

    import torch
    from tvm import tirx

    from hwkd.latency.schedule import CHANNEL_PAD_BYTES

    channels = 8
    net = (torch.nn.AvgPool2d(3, 1, 1) if op == "avg_pool" else
           torch.nn.Conv2d(channels, channels, 3, stride=2 if "stride" in op else 1, padding=1, groups=channels))
    shape = (1, channels, size, size)
    fused = Lowerer().lower(torch_to_relax(net.eval(), shape)).fused_mod
    funcs = [f for _, f in fused.functions.items() if isinstance(f, tirx.PrimFunc) and "pad" in f.script()]
    assert len(funcs) == 1
    scheduled = schedule_primfunc(funcs[0])
    assert scheduled.strategy == "anchored"
    assert (4 * (size + 2) ** 2 <= CHANNEL_PAD_BYTES) == per_channel
    parallel = [int(n) for n in re.findall(r"T\.parallel\((?:T\.int64\()?(\d+)", scheduled.func.script())]
    assert parallel == ([channels] if per_channel else [channels * (size + 2), channels * size])
    inputs = _inputs(funcs[0], seed=4)
    expected = _run(funcs[0], [a.copy() for a in inputs])[-1]
    got = _run(scheduled.func, [a.copy() for a in inputs])[-1]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["conv", "pointwise_conv", "group_conv"])
def test_variants_for_tuning_start_with_the_default_differ_and_compute_the_same(kernels_by_kind, kind: str) -> None:
    import tvm_ffi

    func = kernels_by_kind[kind]
    variants = schedule_variants(func)
    labels = [label for label, _ in variants]
    assert labels[0] == STRATEGY[kind] and len(labels) == len(set(labels)) >= 3
    assert tvm_ffi.structural_equal(variants[0][1].mod["main"], schedule_primfunc(func).func)
    if kind != "group_conv":  # a convolution's next-ranked tile and the anchored schedule are among them
        assert {"tiled tile_rank=1", "anchored"} <= set(labels)
    assert len(schedule_variants(func, limit=2)) == 2
    inputs = _inputs(func, 5)
    expected = _run(func, inputs)[-1]
    for label, sch in variants:
        np.testing.assert_allclose(_run(sch.mod["main"], inputs)[-1], expected, rtol=1e-4, atol=1e-4, err_msg=label)


def test_avx512_tiles_fill_16_float_vectors_and_twice_the_accumulators() -> None:
    assert register_tile(128) == register_tile(256) == RegisterTile(vector_floats=8, tile_floats=96)
    assert AVX512 == RegisterTile(vector_floats=16, tile_floats=192, blocked_accumulators=24, vector_registers=32)
    # nb201's convolutions on 32x32: 4 channels x 2 rows of one zmm vector, 8 multiply-adds per 6 loads
    assert conv_tile(16, 32, 32, registers=AVX512) == ConvTile(channels=4, rows=2, row_floats=16)
    assert conv_tile(16, 32, 32) == ConvTile(channels=4, rows=2, row_floats=8)
    # a 14-float row is one vector, not a 16-float tile across two image rows
    assert conv_tile(96, 14, 14, registers=AVX512) == ConvTile(channels=6, rows=2, row_floats=14)
    for shape in [(64, 8, 8), (184, 1, 16), (352, 1, 49), (3, 224, 224), (1504, 1, 1), (32, 112, 112)]:
        for tile in conv_tiles(*shape, registers=AVX512):
            assert tile.channels * tile.rows * -(-tile.row_floats // 16) * 16 <= 192


@pytest.mark.slow
@pytest.mark.parametrize(("registers", "zmm"), [(RegisterTile(), False), (AVX512, True)])
def test_a_tiled_convolution_for_avx512_multiplies_in_512_bit_registers(registers: RegisterTile, zmm: bool) -> None:
    """Rows of 8 floats compile to 256-bit FMAs on AVX-512 (half the machine); rows of 16 to 512-bit
    ones. Compiled only (LLVM targets any x86 CPU), so it holds on a machine without AVX-512."""
    import re

    import torch
    import tvm
    from tvm import tirx

    shape = (1, 96, 32, 32)
    fused = Lowerer(registers).lower(torch_to_relax(torch.nn.Conv2d(96, 32, 1).eval(), shape)).fused_mod
    func = next(f for _, f in fused.functions.items()
                if isinstance(f, tirx.PrimFunc) and kernel_kind(f) == "pointwise_conv")
    scheduled = schedule_primfunc(func, registers)
    assert scheduled.strategy == "tiled"
    # the parallel loop runs over row tiles, then channel tiles: a thread computes a band of rows
    assert re.search(r"for \w*yy_0\w*ff_0\w*fused in T\.parallel", scheduled.func.script())
    lib = tvm.compile(tvm.IRModule({"main": scheduled.func.with_attr("global_symbol", "main")}),
                      target=tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"}))
    asm = "".join(m.inspect_source("asm") for m in [lib.mod, *lib.mod.imports] if m.kind == "llvm")
    fmas = re.findall(r"vfmadd\w*\s+\S+,\s*%(\w)mm", asm)
    assert fmas and (set(fmas) == {"z"}) == zmm and ("y" in fmas) != zmm


def test_conv_tiles_are_ranked_best_first_and_the_first_is_conv_tile() -> None:
    tiles = conv_tiles(64, 8, 8)
    assert tiles[0] == conv_tile(64, 8, 8) and len(tiles) == len(set(tiles)) > 5
    assert all(t.channels * t.rows * -(-t.row_floats // 8) * 8 <= TILE_FLOATS for t in tiles)
    assert tiles[-1] == ConvTile(1, 1, 1)  # one multiply-add per three loads: the worst
