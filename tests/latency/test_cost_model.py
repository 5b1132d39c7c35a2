from __future__ import annotations

from dataclasses import replace

import pytest

from hwkd.latency.cost_model import (
    body_cycles,
    kernel_cost,
    latency_ms,
    memory_pieces,
    node_cost,
    node_kind,
    parallel_rounds,
)
from hwkd.latency.lowered import Kernel, KernelFeatures, LoopBody
from hwkd.latency.lowering import Lowerer
from hwkd.latency.onnxruntime_graph import RuntimeNode
from hwkd.latency.relax_import import torch_to_relax
from hwkd.profiles import load_profile
from hwkd.spaces import load_space

ALL_3X3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
SMALL = "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|"


def kernels(arch: str):
    return Lowerer().lower(torch_to_relax(load_space("nb201").build(arch, 10), (1, 3, 32, 32))).kernels


def test_a_reduction_step_by_hand() -> None:
    rpi4 = load_profile("rpi4")  # 4 fp32 lanes, 1 FMA, 1 load per cycle, accumulate latency 4
    step = LoopBody("conv", iterations=1000, parallel_extent=1, lanes=32, alu_ops=1, vector_loads=1,
                    gather_loads=0, invariant_loads=1, stores=0, carried=True)
    # 8 vector FMAs and 8 + 1 loads per step: load-bound at 9 cycles (the latency of 4 is hidden)
    assert body_cycles(step, rpi4) == pytest.approx(1000 * 9)
    narrow = replace(step, lanes=4, chain_steps=1000)
    # one FMA per step must wait for the previous one, and a chain of 1000 steps (3000 instructions)
    # is more than the 128-entry reorder window holds: latency-bound at 4 cycles
    assert body_cycles(narrow, rpi4) == pytest.approx(1000 * 4)
    # a 5x5 depthwise accumulator: 25 steps of 3 instructions, so the window holds 128 / 75 of
    # these chains and the next output's chain overlaps this one's wait
    tap = replace(narrow, chain_steps=25)
    assert body_cycles(tap, rpi4) == pytest.approx(1000 * 4 * 75 / 128)
    wide_window = replace(rpi4, cpu=replace(rpi4.cpu, reorder_window=512))
    assert body_cycles(tap, wide_window) == pytest.approx(1000 * 2)  # now load-bound: 2 loads per step


def test_a_row_that_is_not_whole_registers_loads_in_power_of_two_pieces() -> None:
    assert memory_pieces(32, 16) == 2 and memory_pieces(28, 16) == 3  # 16 + 8 + 4
    assert memory_pieces(14, 16) == 3 and memory_pieces(7, 4) == 3 and memory_pieces(8, 4) == 2
    assert memory_pieces(5, 1) == 5
    host512 = replace(load_profile("rpi4"), cpu=replace(load_profile("rpi4").cpu, simd_bits=512, loads_per_cycle=2,
                                                       fma_per_cycle=2))
    # a depthwise tap on a 28-float row: 2 FMAs (one per cycle each of two units) but 3 + 1 loads
    tap = LoopBody("dw", iterations=100, parallel_extent=1, lanes=28, alu_ops=1, vector_loads=1,
                   gather_loads=0, invariant_loads=1, stores=0, carried=False)
    assert body_cycles(tap, host512) == pytest.approx(100 * (3 + 1) / 2)
    assert body_cycles(replace(tap, lanes=32), host512) == pytest.approx(100 * (2 + 1) / 2)


def test_parallel_rounds() -> None:
    assert parallel_rounds(512, 4) == pytest.approx(1 / 4)
    assert parallel_rounds(5, 4) == pytest.approx(2 / 5)  # the busiest thread does two of five
    assert parallel_rounds(1, 4) == 1.0


def test_latency_ranks_students_by_their_work() -> None:
    rpi4 = load_profile("rpi4")
    big, small = latency_ms(kernels(ALL_3X3), rpi4), latency_ms(kernels(SMALL), rpi4)
    assert big > 4 * small > 0


def test_faster_board_and_more_threads_mean_lower_latency() -> None:
    ks = kernels(ALL_3X3)
    rpi4, rpi5 = load_profile("rpi4"), load_profile("rpi5")
    assert latency_ms(ks, rpi5) < latency_ms(ks, rpi4) / 2
    one, four = latency_ms(ks, rpi4.with_threads(1)), latency_ms(ks, rpi4)
    assert 2.5 < one / four < 4.0  # 4 threads, minus fork/join and serial kernels


def test_rpi4_latency_of_nb201_is_in_a_plausible_range() -> None:
    # 440 MFLOP at 48 GFLOP/s peak is 9 ms; an unblocked schedule reaches a fraction of it.
    assert 9 < latency_ms(kernels(ALL_3X3), load_profile("rpi4")) < 200


def test_kernel_cost_reports_its_bound() -> None:
    rpi4 = load_profile("rpi4")
    conv = next(k for k in kernels(ALL_3X3) if k.features.kind == "conv")
    cost = kernel_cost(conv, rpi4)
    assert cost.bound == "compute" and cost.latency_ms > cost.overhead_ms > 0


def test_in_a_student_a_kernel_writes_its_output_back_at_the_dram_rate() -> None:
    rpi4 = load_profile("rpi4")  # DRAM: 12.8 GB/s x 0.5
    conv = next(k for k in kernels(ALL_3X3) if k.features.kind == "conv")
    cost = kernel_cost(conv, rpi4)
    assert cost.write_back_ms == pytest.approx(conv.bytes_written / 6.4e9 * 1e3)
    assert cost.latency_ms == pytest.approx(cost.alone_ms + cost.write_back_ms)  # not overlapped with the work
    assert cost.work_ms == pytest.approx(max(cost.compute_ms, cost.memory_ms) + cost.write_back_ms)
    doubled = replace(rpi4, cost=replace(rpi4.cost, dense_conv_scale=2.0))  # a calibration scales it with the class
    assert kernel_cost(conv, doubled).write_back_ms == pytest.approx(2 * cost.write_back_ms)
    for model in ("roofline", "onnxruntime"):  # measured for hwkd's library only
        assert kernel_cost(conv, replace(rpi4, cost=replace(rpi4.cost, model=model))).write_back_ms == 0


def test_roofline_model_of_a_vendor_library_by_hand() -> None:
    rpi4 = replace(load_profile("rpi4"), cost=replace(load_profile("rpi4").cost, model="roofline"))
    peak = 4 * 1.5e9 * 4  # 4 lanes x 1.5 GHz x 4 threads, one FMA and one load per cycle
    gemm = Kernel("pw", KernelFeatures("pointwise_conv", flops=2 * 48_000_000, strategy="-", bodies=()), 1000, 1000)
    depthwise = Kernel("dw", KernelFeatures("depthwise_conv", flops=2 * 48_000_000, strategy="-", bodies=()), 1000, 1000)
    relu = Kernel("relu", KernelFeatures("elementwise", flops=10**6, strategy="-", bodies=()), 4_000_000, 4_000_000)
    assert kernel_cost(gemm, rpi4).compute_ms == pytest.approx(48e6 / peak * 1e3)  # FMA-bound at peak
    assert kernel_cost(depthwise, rpi4).compute_ms == pytest.approx(48e6 / peak * 1e3)  # one load per FMA: the same here
    fast_fma = replace(rpi4, cpu=replace(rpi4.cpu, fma_per_cycle=2))
    assert kernel_cost(depthwise, fast_fma).compute_ms == pytest.approx(2 * kernel_cost(gemm, fast_fma).compute_ms)
    cost = kernel_cost(relu, rpi4)  # memory-bound: 8 MB over DRAM at 12.8 GB/s x 0.5
    assert cost.compute_ms == 0 and cost.memory_ms == pytest.approx(8e6 / 6.4e9 * 1e3)
    assert cost.overhead_ms == pytest.approx(0.004)  # the call, no fork/join of hwkd's pool


def test_onnxruntime_model_by_hand() -> None:
    """ONNX Runtime's nodes, not hwkd's kernels: a convolution's roofline plus a dispatch, a node that
    moves data its bytes at its own rate plus a smaller fixed cost, a reshape the fixed cost alone."""
    rpi4 = load_profile("rpi4")  # 4 threads x 4 lanes x 1 FMA x 1.5 GHz; 16 B/cycle from L2; 1 MiB L2
    ort = replace(rpi4, cost=replace(rpi4.cost, model="onnxruntime", node_overhead_us=5.0,
                                     light_node_overhead_us=1.0, light_node_bytes_per_cycle=4.0))
    pointwise = RuntimeNode("Conv", ((1, 64, 16, 16), (128, 64, 1, 1), (128,)), ((1, 128, 16, 16),),
                            bytes_read=4 * (64 * 256 + 128 * 64 + 128), bytes_written=4 * 128 * 256)
    depthwise = RuntimeNode("Conv", ((1, 128, 16, 16), (128, 1, 3, 3), (128,)), ((1, 128, 16, 16),),
                            bytes_read=4 * (128 * 256 + 128 * 9 + 128), bytes_written=4 * 128 * 256)
    transpose = RuntimeNode("Transpose", ((1, 2, 64, 16, 16),), ((1, 64, 2, 16, 16),),
                            bytes_read=4 * 128 * 256, bytes_written=4 * 128 * 256)
    reshape = RuntimeNode("Reshape", ((1, 128, 16, 16), (5,)), ((1, 2, 64, 16, 16),),
                          bytes_read=4 * 128 * 256 + 40, bytes_written=4 * 128 * 256)
    assert [node_kind(n) for n in (pointwise, depthwise, transpose)] == ["pointwise_conv", "depthwise_conv", "transpose"]
    lanes_per_s = 4 * 1.5e9 * 4
    pointwise_ms = 128 * 64 * 256 / lanes_per_s * 1e3 + 0.005  # 2.1 M MACs, FMA-bound (the bytes: 0.003 ms)
    depthwise_ms = 128 * 9 * 256 / lanes_per_s * 1e3 + 0.005  # one load per FMA: load-bound, 1 load per cycle
    transpose_ms = 2 * 4 * 128 * 256 / (4 * 1.5e9 * 4) * 1e3 + 0.001  # 256 KiB at 4 B/cycle/core x 4 cores
    costs = [node_cost(n, ort) for n in (pointwise, depthwise, transpose, reshape)]
    assert [c.latency_ms for c in costs] == pytest.approx([pointwise_ms, depthwise_ms, transpose_ms, 0.001])
    nodes = (pointwise, depthwise, transpose, reshape)
    assert latency_ms([], ort, nodes) == pytest.approx(pointwise_ms + depthwise_ms + transpose_ms + 0.001)
    # the kernels are not costed: ONNX Runtime does not run them
    relu = Kernel("relu", KernelFeatures("elementwise", flops=10**6, strategy="-", bodies=()), 4_000_000, 4_000_000)
    assert latency_ms([relu], ort, nodes) == latency_ms([], ort, nodes) and latency_ms([relu], ort) == 0
    # a residual Add fused into the convolution: its operand read after the arithmetic at the light rate
    fused = RuntimeNode("Conv", (*pointwise.input_shapes, (1, 128, 16, 16)), pointwise.output_shapes,
                        bytes_read=pointwise.bytes_read + 4 * 128 * 256, bytes_written=pointwise.bytes_written)
    sum_ms = 4 * 128 * 256 / (4 * 1.5e9 * 4) * 1e3  # 128 KiB at 4 B/cycle/core x 4 cores
    assert node_cost(fused, ort).latency_ms == pytest.approx(pointwise_ms + sum_ms)
    # without the light-node constants, such a node costs a dispatch and streams at the cache rate
    plain = replace(ort, cost=replace(ort.cost, light_node_overhead_us=None, light_node_bytes_per_cycle=None))
    assert node_cost(transpose, plain).latency_ms == pytest.approx(2 * 4 * 128 * 256 / (16 * 1.5e9 * 4) * 1e3 + 0.005)
    # the other models cost the kernels and ignore the nodes
    roofline = replace(rpi4, cost=replace(rpi4.cost, model="roofline"))
    assert latency_ms([relu], roofline, nodes) == latency_ms([relu], roofline) == pytest.approx(8e6 / 6.4e9 * 1e3 + 0.004)
