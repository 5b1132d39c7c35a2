"""The channel-blocked graph: same outputs as the NCHW graph, convolutions in blocked kernels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hwkd.latency.blocked_layout import blocked_graph
from hwkd.latency.lowering import Lowerer
from hwkd.latency.relax_import import torch_to_relax
from hwkd.latency.schedule import blocked_tiles, register_tile
from hwkd.spaces import load_space

SHAPE = (1, 3, 32, 32)
STUDENTS = [
    # 24- and 184-channel tensors (padded to whole blocks), grouped 1x1 convolutions with a channel
    # shuffle (left in NCHW), skip blocks, 3x3 and 5x5 depthwise at stride 1 and 2
    ("fbnet", "2141777631706607431500"),
    # 8 channels (padded to 16 for AVX-512), average pooling, the zero edge (a multiply)
    ("nb201-widths", "C8:|avg_pool_3x3~0|+|none~0|nor_conv_1x1~1|+|none~0|nor_conv_3x3~1|nor_conv_3x3~2|"),
    ("mbconv-small", "w16:k3e3|w24:k5e6,k5e3|w64:k3e6,k5e3|w64:k3e3,k3e6"),
]


def _run(mod: object, params: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    args = [tvm.runtime.tensor(a, tvm.cpu()) for a in [x, *params]]
    return vm["main"](*args).numpy()


@pytest.mark.parametrize("space,arch", STUDENTS)
@pytest.mark.parametrize("block", [8, 16])
def test_a_blocked_student_computes_what_the_nchw_one_does(space: str, arch: str, block: int) -> None:
    torch.manual_seed(0)
    graph = torch_to_relax(load_space(space).build(arch, 10, SHAPE).eval(), SHAPE)
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    expected = _run(graph.mod, graph.params, x)
    got = _run(blocked_graph(graph.mod, block), graph.params, x)
    assert np.abs(expected).max() > 1e-3  # a real signal, not zeros
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_convolutions_but_grouped_ones_become_blocked_kernels_and_channels_are_padded() -> None:
    from tvm import tirx

    space, arch = STUDENTS[0]
    graph = torch_to_relax(load_space(space).build(arch, 10, SHAPE).eval(), SHAPE)
    fused = Lowerer(register_tile(512), blocked=True).lower(graph).fused_mod
    names = [gv.name_hint for gv, f in fused.functions.items() if isinstance(f, tirx.PrimFunc)]
    assert any("depthwise_conv2d_blocked" in n for n in names)
    assert any("conv2d_blocked" in n and "depthwise" not in n for n in names)
    # the 2-group 1x1 convolutions stay NCHW, between layout transforms
    assert any(n.startswith("fused_conv2d") and "blocked" not in n for n in names)
    assert any("layout_transform" in n for n in names)
    # without grouped blocks, 24 channels travel only as 2 blocks of 16 (the second half zeros)
    graph = torch_to_relax(load_space("fbnet").build("3" * 22, 10, SHAPE).eval(), SHAPE)
    fused = Lowerer(register_tile(512), blocked=True).lower(graph).fused_mod
    shapes = {tuple(int(d) for d in p.shape) for f in fused.functions.values() if isinstance(f, tirx.PrimFunc)
              for p in f.params}
    assert (1, 2, 32, 32, 16) in shapes and (1, 24, 32, 32) not in shapes


def test_a_depthwise_kernel_vectorizes_over_channels_and_tiles_pixels() -> None:
    space, arch = STUDENTS[0]
    graph = torch_to_relax(load_space(space).build(arch, 10, SHAPE).eval(), SHAPE)
    lowered = Lowerer(register_tile(512), blocked=True).lower(graph)
    updates = [b for k in lowered.kernels if k.features.kind == "depthwise_conv" for b in k.features.bodies
               if b.carried]
    assert updates and all(k.features.strategy == "blocked" for k in lowered.kernels
                           if k.features.kind in ("depthwise_conv", "pointwise_conv", "conv"))
    # each tap: one 16-channel vector of each pixel (not a gather) and the tap's weight vector
    for body in updates:
        assert body.lanes == 16 and body.gather_loads == 0 and body.chain_steps in (9, 25)
        assert body.chains in (1, 2, 4, 8)


def test_blocked_tiles_feed_both_load_ports_and_reuse_weights_on_small_images() -> None:
    # 1104 -> 352 channels on a 4x4 image (22 blocks out): a tile of 2 blocks x 8 pixels uses each
    # weight vector 8 times; 11 blocks x 2 pixels would load as many weights for 2 pixels
    assert blocked_tiles(22, 4, 4, 24, 32)[0] == (2, 2, 4)
    # fbnet's expansion on 32x32 (9 blocks out): 3 blocks x 4 pixels, 7 loads per 12 multiply-adds;
    # 3 x 8 would need 24 accumulators + 3 weights + 8 inputs, more than AVX-512's 32 registers
    assert blocked_tiles(9, 32, 32, 24, 32)[0] == (3, 1, 4)
    assert blocked_tiles(6, 112, 112, 24, 32)[0] == (2, 1, 8)  # fbnet-imagenet's 16 -> 96 expansion
    for blocks, rows, columns in [(1, 32, 32), (69, 4, 4), (94, 1, 1), (6, 112, 112)]:
        for registers in (16, 32):
            for k, r, w in blocked_tiles(blocks, rows, columns, 24, registers):
                assert k * r * w <= 24 and blocks % k == rows % r == columns % w == 0
                assert k * r * w + k + r * w <= registers


@pytest.mark.parametrize("mcpu, simd_bits, register", [("skylake-avx512", 512, "zmm"), ("haswell", 256, "ymm")])
def test_blocked_convolutions_keep_their_accumulators_in_registers(mcpu: str, simd_bits: int, register: str) -> None:
    # Accumulators spilled to the stack are stored and reloaded at every reduction step: whole
    # blocked libraries of fbnet and fbnet-imagenet ran 1.09-1.15x as long that way. Compiled for
    # the target, not run.
    import re

    import tvm

    from hwkd.latency.schedule import schedule_primfunc
    from hwkd.latency.tuning import _main_kernels

    registers = register_tile(simd_bits)
    module = load_space("fbnet").build("3" * 22, 10, SHAPE).eval()
    lowered = Lowerer(registers, blocked=True).lower(torch_to_relax(module, SHAPE))
    kernels = {name: k for name, k in _main_kernels(lowered).items() if name.startswith("fused_conv2d_blocked")}
    assert len(kernels) >= 8
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
    for name, kernel in kernels.items():
        scheduled = schedule_primfunc(kernel["main"], registers)
        assert scheduled.strategy == "blocked", name
        asm = tvm.tirx.build(tvm.IRModule({"main": scheduled.func}), target=target).inspect_source("asm")
        assert re.findall(rf"vfmadd\w+\s+[^\n]*%{register}", asm), name  # vectorized for the target
        # a vector register stored to the stack (prologues save general registers only)
        spills = re.findall(rf"vmov[au]ps\s+%{register}\d+, -?\d*\(%rsp\)", asm)
        assert len(spills) <= 2, f"{name}: {len(spills)} {register} spills"


def test_blocked_and_nchw_students_have_their_own_cache_entries(tmp_path) -> None:
    from hwkd.latency.estimator import Estimator
    from hwkd.latency.lowered_cache import LoweredCache
    from hwkd.profiles import load_profile

    space, arch = STUDENTS[1]
    strategies = []
    for blocked in (False, True, False):
        estimator = Estimator(load_profile("rpi4"), "model", disk_cache=LoweredCache(tmp_path))
        estimator.lowerer = Lowerer(estimator.lowerer.registers, blocked=blocked)
        lowered = estimator.lowered_arch(load_space(space), arch)
        strategies.append({k.features.strategy for k in lowered.kernels})
    assert "blocked" in strategies[1] and "blocked" not in strategies[0]
    assert strategies[2] == strategies[0]  # read back from the disk cache, not the blocked entry


def test_an_operator_it_does_not_know_gets_its_nchw_input_back() -> None:
    class Net(torch.nn.Module):  # a split (a tuple and its items) between convolutions
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(3, 24, 3, padding=1), torch.nn.Conv2d(12, 16, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            left, right = torch.chunk(torch.relu(self.a(x)), 2, dim=1)
            return self.b(left * right).mean(dim=(2, 3))

    torch.manual_seed(0)
    shape = (1, 3, 8, 8)
    graph = torch_to_relax(Net().eval(), shape)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(_run(blocked_graph(graph.mod, 16), graph.params, x),
                               _run(graph.mod, graph.params, x), rtol=1e-4, atol=1e-5)


def test_the_memory_plan_of_a_blocked_student_leaves_out_its_weight_layout_transforms() -> None:
    all_3x3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    graph = torch_to_relax(load_space("nb201").build(all_3x3, 10, SHAPE).eval(), SHAPE)
    nchw = Lowerer().lower(graph).peak_memory_bytes
    blocked = Lowerer(blocked=True).lower(graph).peak_memory_bytes
    # the same activations (16, 32 and 64 channels are whole blocks of 8); counted, the transformed
    # 3x3 weights alone took 1.7x the plan
    assert blocked <= nchw <= 8 * 16 * 32 * 32 * 4


def test_a_blocked_library_computes_what_torch_computes_and_splits_heavy_1x1_weights_among_threads() -> None:
    import tvm
    from tvm import tirx

    from hwkd.latency.measure import compile_student
    from hwkd.latency.schedule import schedule_primfunc
    from hwkd.profiles import load_profile

    space, arch = STUDENTS[0]
    module = load_space(space).build(arch, 10, SHAPE).eval()
    graph = torch_to_relax(module, SHAPE)
    registers = register_tile(512)
    lowered = Lowerer(registers, blocked=True).lower(graph)
    compiled = compile_student(lowered, graph.params, load_profile("host").with_threads(2))
    vm = tvm.relax.VirtualMachine(compiled.executable, tvm.cpu())
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    got = vm["main"](tvm.runtime.tensor(x), *[tvm.runtime.tensor(w) for w in compiled.weights]).numpy()
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)

    # the parallel loop of a 1x1 convolution walks channel-block tiles first where its weights are
    # at least twice its input (the 1504-channel head on a 4x4 image), rows first where the input
    # dominates (the 32x32 stage); a thread then reads its own share of the weights
    def outer_is_blocks(func: tirx.PrimFunc) -> bool:
        text = schedule_primfunc(func, registers).func.script()
        binding = next(line for line in text.splitlines() if "v_ob = T.axis.spatial" in line)
        return "//" in binding.split(",", 1)[1]

    convs = {gv.name_hint: f for gv, f in lowered.fused_mod.functions.items()
             if isinstance(f, tirx.PrimFunc) and gv.name_hint.startswith("fused_conv2d_blocked")}
    out_shapes = {name: tuple(int(d) for d in f.params[-1].shape) for name, f in convs.items()}
    head = max(convs, key=lambda n: out_shapes[n][1])  # (1, 94, 4, 4, 16): 1504 channels
    first = next(n for n in convs if out_shapes[n][2:4] == (32, 32) and int(convs[n].params[1].shape[2]) == 1)
    assert out_shapes[head][2:4] == (4, 4) and outer_is_blocks(convs[head])
    assert not outer_is_blocks(convs[first])
