from __future__ import annotations

import random

import pytest

from hwkd.latency.lowering import Lowerer
from hwkd.latency.relax_import import torch_to_relax
from hwkd.spaces import load_space

ALL_3X3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def lower(space: str, arch: str, lowerer: Lowerer | None = None, shape=(1, 3, 32, 32)):
    graph = torch_to_relax(load_space(space).build(arch, 10, shape), shape)
    return (lowerer or Lowerer()).lower(graph)


def test_macs_come_from_the_graph_and_match_the_formula() -> None:
    assert lower("nb201", ALL_3X3).macs == 7_783_040 + 15 * 6 * 2_359_296


def test_a_node_is_activated_once_for_all_its_edges() -> None:
    # every NB201 edge applies ReLU to its input node; the graph from torch has one ReLU per edge (95),
    # the library one per node, fused into the convolution that ends the node
    kernels = lower("nb201", ALL_3X3).kernels
    assert sum(k.name.startswith("relu") for k in kernels) == 2  # inputs of the two reduction cells' shortcut too
    assert len(kernels) == 103


def test_every_conv_is_fused_with_its_epilogue_and_scheduled() -> None:
    graph = lower("nb201", ALL_3X3)
    convs = [k for k in graph.kernels if k.features.kind in ("conv", "pointwise_conv")]
    # 90 cell convs + stem + 2 x 3 reduction convs, of which the two 1x1 shortcuts are pointwise
    assert len(convs) == 90 + 1 + 6
    assert sum(k.features.kind == "pointwise_conv" for k in convs) == 2
    assert all(k.features.strategy == "tiled" for k in convs)
    # a 16-channel 32x32 cell conv that reads only its input, weights and bias (no residual sum fused)
    cell_conv = next(k for k in convs if k.bytes_written == k.bytes_read - 16 * 16 * 9 * 4 - 16 * 4 == 16 * 32 * 32 * 4)
    update = next(b for b in cell_conv.features.bodies if b.carried)
    # one reduction step of a register tile of 4 channels x 2 rows x 8 columns: 8 vector FMAs, each
    # input vector serves the 4 channels, each broadcast weight the 2 rows
    assert (update.lanes, update.alu_ops, update.unrolled, update.chains) == (8, 1, 8, 8)
    assert (update.vector_loads, update.invariant_loads) == (0.25, 0.5)
    assert update.parallel_extent == 16 // 4 * 32 // 2  # channel tiles x row tiles
    assert update.iterations == 16 * 32 * 32 // 8 * 16 * 9  # output vectors x (input channels x 3 x 3)
    assert update.chain_steps == 16 * 9  # each accumulator sums input channels x 3 x 3


def test_a_depthwise_accumulator_takes_one_step_per_kernel_tap() -> None:
    graph = lower("fbnet", "7777777777777777777777")  # every block k5_e6: 5x5 depthwise convolutions
    steps = [b for k in graph.kernels if k.features.kind == "group_conv" for b in k.features.bodies if b.carried]
    assert steps and all((b.chains, b.chain_steps) == (1, 25) for b in steps)
    assert all(b.chain_steps == 1 for k in graph.kernels for b in k.features.bodies if not b.carried)


def test_weight_only_kernels_are_set_apart() -> None:
    graph = lower("nb201", ALL_3X3)
    assert graph.weight_only_kernels > 0  # bias reshapes, the transposed classifier weight
    assert not any(k.name.startswith("transpose") for k in graph.kernels)


def test_memory_plan_reuses_storage() -> None:
    graph = lower("nb201", ALL_3X3)
    one_activation = 16 * 32 * 32 * 4
    # every edge makes a 64 KiB tensor; the plan keeps only a handful alive at once
    assert one_activation <= graph.peak_memory_bytes <= 8 * one_activation


def test_kernels_and_legalization_are_cached_across_students() -> None:
    lowerer = Lowerer()
    space = load_space("nb201")
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(6)]
    lower("nb201", archs[0], lowerer)
    misses = lowerer.stats["kernel_misses"]
    for arch in archs[1:]:
        lower("nb201", arch, lowerer)
    assert lowerer.stats["kernel_hits"] > 4 * (lowerer.stats["kernel_misses"] - misses)
    assert lowerer.stats["legalize_hits"] > 10 * lowerer.stats["legalize_misses"]
    again = lower("nb201", archs[0], lowerer)
    assert again.structure_hash == lower("nb201", archs[0]).structure_hash


@pytest.mark.parametrize("digits", ["8888888888888888888888", "1111111111111111111111"])
def test_fbnet_kernels_cover_grouped_and_skip_blocks(digits: str) -> None:
    graph = lower("fbnet", digits)
    kinds = {k.features.kind for k in graph.kernels}
    assert "conv" in kinds and "matmul" in kinds
    assert all(k.features.strategy != "default" for k in graph.kernels)


def test_the_collector_is_paused_while_a_student_is_lowered_and_restored_after() -> None:
    import gc

    from hwkd.latency.lowering import gc_paused

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError), gc_paused():
        raise ValueError("a failed import")
    assert gc.isenabled()  # back on after an error too
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # a caller's own choice is kept
    finally:
        gc.enable()
