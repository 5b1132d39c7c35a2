"""Analytic latency of a lowered graph on a device profile.

Built from first principles and the datasheet facts of the profile, never fitted to measured
latencies. For each fused kernel:

- compute: each loop body of hwkd's schedule (see `hwkd.latency.lowering.LoopBody`) runs
  `iterations` times; one execution needs `ceil(lanes / simd_lanes)` vector ops of its arithmetic,
  its vector loads (a gather costs one load per element), one broadcast per invariant load and its
  stores. Its cycles are the largest of arithmetic / `fma_per_cycle`, loads / `loads_per_cycle`,
  stores / `stores_per_cycle` and, for a reduction step, `fma_latency_cycles` (it waits for the
  previous step's accumulator), shared by the independent accumulators of a register tile and by
  the tiles an out-of-order core overlaps: the next outputs' chains do not wait for this one's, so
  the core runs as many tiles at once as its `reorder_window` holds instructions of whole tiles
  (a 5x5 depthwise convolution's 25-step chains overlap about six deep on a 512-entry window; a
  chain of a thousand steps does not overlap). A parallel body spreads its executions over the
  profile's threads in `ceil(parallel_extent / threads)` rounds.
- memory: the bytes the kernel reads and writes, from L2 when they fit (`cache_bytes_per_cycle`
  per core) or else from DRAM (`bandwidth_gb_s * dram_efficiency`).
- write-back: in a student, what a kernel writes also costs its bytes at the DRAM bandwidth, on
  top of its time alone and not overlapped with it. Each kernel writes a buffer last touched
  several kernels before, where alone it rewrites the same lines run after run: on 8 fbnet
  students of a 2-core AVX-512 VM, each student took 65-79 ns per KiB its kernels wrote beyond the
  sum of its kernels timed alone, 15 GB/s against that VM's 14.3 GB/s of DRAM bandwidth
  (benchmarks/kernels.py). Modeled, it raised the schedule model's ranking of hwkd's fbnet library
  from 0.946-0.967 to 0.983-0.988 on three sets of 110 students (benchmarks/calibrate.py).
  Only the schedule model has it (the other runtimes were not measured for it).
With `cost_model.model: roofline` (`hwkd calibrate --cost-model roofline`: a library whose loops
are nothing like hwkd's) a kernel's compute is instead its FLOPs at the cores' peak, or for a
depthwise or grouped convolution at one vector load per vector FMA if that is slower (each input
is reused only kernel-size times), and pooling, elementwise and layout kernels are memory-bound; memory and
overheads as above, without fork/join (the library's pool is not hwkd's).
With `cost_model.model: onnxruntime` (the runtime people ship ONNX files with) the cost is of the
nodes ONNX Runtime runs after its own graph optimizations
(`hwkd.latency.onnxruntime_graph.runtime_nodes`), not of hwkd's kernels: ONNX Runtime fuses less
than TVM, on x86 reorders tensors into and out of its blocked layout, and dispatches every node. A
convolution or matrix product costs its roofline (as above, from the node's own shapes) plus
`node_overhead_us`, the thread-pool dispatch of a node with work to split (a convolution with a
residual Add fused into it also reads that operand after its arithmetic, at the light-node rate
below); a node that only moves
data (a layout reorder, a transpose, pooling, an elementwise node) costs `light_node_overhead_us`
plus its bytes at `light_node_bytes_per_cycle` per core, both measured on the board
(benchmarks/overheads.py --onnxruntime); a reshape moves nothing. On a 2-core AVX-512 VM that
per-node cost, not its kernels' speed, was what ranked ONNX Runtime's fbnet students unlike
hwkd's library.

- time = scale * max(compute, memory) + `kernel_overhead_us` (+ `parallel_overhead_us` when it
  forks), where `scale` is the profile's multiplier for the kernel's class (`KERNEL_CLASSES`): 1
  from datasheets, fitted to the board's measurements by `hwkd calibrate`
  (hwkd.latency.calibration).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hwkd.latency.lowered import LOWERING_VERSION, Kernel, LoopBody
from hwkd.latency.onnxruntime_graph import RuntimeNode
from hwkd.profiles import DeviceProfile

# Bumped whenever a change moves what the models predict for the same constants (2: split vector
# loads, `memory_pieces`). A calibration records it: its multipliers were fitted to one model.
COST_MODEL_VERSION = 2


def model_version(profile: DeviceProfile) -> str:
    """What a calibration of `profile` is fitted to: the cost model and, unless it models ONNX Runtime,
    the schedule hwkd compiles (whose loops the other two models price)."""
    model = f"{profile.cost.model} model {COST_MODEL_VERSION}"
    return model if profile.cost.model == "onnxruntime" else f"{model}, lowering {LOWERING_VERSION}"


# The classes a calibration scales separately: they differ most in how well a runtime's code
# reaches the datasheet peak (a dense 3x3 convolution reuses every load; a depthwise one hardly).
KERNEL_CLASSES = ("dense_conv", "pointwise_conv", "depthwise_conv", "other")
_CLASS_OF_KIND = {
    "conv": "dense_conv",
    "pointwise_conv": "pointwise_conv",
    "depthwise_conv": "depthwise_conv",
    "group_conv": "depthwise_conv",
}


def kernel_class(kind: str) -> str:
    """The calibration class of a kernel kind (hwkd.latency.tir_analysis.kernel_kind)."""
    return _CLASS_OF_KIND.get(kind, "other")


@dataclass(frozen=True)
class KernelCost:
    """One kernel's modeled time; `compute_ms` and `memory_ms` already carry the class scale."""

    name: str
    kind: str
    compute_ms: float
    memory_ms: float
    overhead_ms: float
    write_back_ms: float = 0.0  # in a student, its output going back to memory (the schedule model)

    @property
    def work_ms(self) -> float:
        """The part a calibration scales with the kernel's class: all but the call overheads."""
        return max(self.compute_ms, self.memory_ms) + self.write_back_ms

    @property
    def alone_ms(self) -> float:
        """The kernel run alone, its output buffer staying in cache."""
        return max(self.compute_ms, self.memory_ms) + self.overhead_ms

    @property
    def latency_ms(self) -> float:
        return self.work_ms + self.overhead_ms

    @property
    def bound(self) -> str:
        return "compute" if self.compute_ms >= self.memory_ms else "memory"


def body_cycles(body: LoopBody, profile: DeviceProfile) -> float:
    """Cycles one core spends on all executions of `body` (before spreading over threads)."""
    return body.iterations * max(body_bounds(body, profile))


BODY_BOUNDS = ("arithmetic", "loads", "stores", "accumulator latency", "loop control")


def body_bounds(body: LoopBody, profile: DeviceProfile) -> tuple[float, ...]:
    """Cycles of one execution of `body` by each limit of the core (`BODY_BOUNDS`, in that order; a
    tuple, not a dict: costing a student runs this for every loop body); the largest is its cost."""
    cpu = profile.cpu
    hw_lanes = cpu.fp32_lanes if body.lanes > 1 else 1
    vector_ops = math.ceil(body.lanes / hw_lanes)
    memory_ops = memory_pieces(body.lanes, hw_lanes)
    gathered = body.gather_loads * body.lanes  # one element load per lane
    loads = memory_ops * body.vector_loads + gathered + body.invariant_loads
    instructions = vector_ops * body.alu_ops + memory_ops * body.stores + loads
    return (
        vector_ops * body.alu_ops / cpu.fma_per_cycle,
        loads / cpu.loads_per_cycle,
        memory_ops * body.stores / cpu.stores_per_cycle,
        _reduction_wait_cycles(body, instructions, cpu.fma_latency_cycles, cpu.reorder_window),
        1.0 / body.unrolled,  # at least one issue slot per loop iteration
    )


def memory_pieces(lanes: int, hw_lanes: int) -> int:
    """Loads (or stores) one vector load (store) of `lanes` floats takes on registers of `hw_lanes`.

    LLVM widens a vector's arithmetic to whole registers but splits its loads and stores into
    power-of-two pieces, so that none touches memory past the row: a 28-float row on AVX-512 is
    16 + 8 + 4 floats, three loads where its arithmetic takes two FMAs (and a 14-float one 8 + 4 +
    2 for one FMA; both checked in the assembly of depthwise rows). Counted so, the host
    model's uncalibrated median error on 110 mbconv-small students (28x28 images: rows of 28, 14
    and 7) fell from 22.1 % to 4.7 % and from 14.5 % to 5.5 % on the previous schedule's library,
    fbnet's (32x32) moved 2.3 -> 2.1 % and 6.8 -> 7.2 % (benchmarks/calibrate.py, seed 2, 2-core
    AVX-512 VM).
    """
    if hw_lanes <= 1:
        return lanes
    return lanes // hw_lanes + bin(lanes % hw_lanes).count("1")


def _reduction_wait_cycles(body: LoopBody, instructions: float, latency_cycles: float, window: int) -> float:
    """Cycles per execution that a reduction step waits for its accumulator: the FMA latency shared
    by the tile's independent chains and by the tiles in flight at once, as many as the reorder
    window holds (at least one; a tile is `chains * chain_steps` executions of `instructions`)."""
    if not body.carried:
        return 0.0
    tiles = max(1.0, window / (body.chains * body.chain_steps * max(instructions, 1.0)))
    return latency_cycles / (body.chains * tiles)


def parallel_rounds(parallel_extent: int, threads: int) -> float:
    """Fraction of the work the busiest thread does: ceil(P / T) / P."""
    if parallel_extent <= 1 or threads <= 1:
        return 1.0
    return math.ceil(parallel_extent / threads) / parallel_extent


def roofline_compute_s(kernel: Kernel, profile: DeviceProfile) -> float:
    """Seconds of arithmetic of a kernel in a vendor library, spread over the profile's threads."""
    kind = kernel_class(kernel.features.kind)
    if kind == "other":
        return 0.0
    return peak_compute_s(kernel.features.flops / 2, kind == "depthwise_conv", profile)


def peak_compute_s(macs: float, depthwise: bool, profile: DeviceProfile) -> float:
    """Seconds of `macs` vector FMAs at the cores' peak over the profile's threads; a depthwise or grouped
    convolution at one vector load per FMA if that is slower (each input is reused only kernel-size times)."""
    cpu = profile.cpu
    vector_ops_per_s = cpu.fp32_lanes * cpu.clock_ghz * 1e9 * profile.runtime.threads
    compute = macs / (cpu.fma_per_cycle * vector_ops_per_s)
    return max(compute, macs / (cpu.loads_per_cycle * vector_ops_per_s)) if depthwise else compute


def dram_bytes_per_s(profile: DeviceProfile) -> float:
    return profile.memory.bandwidth_gb_s * 1e9 * profile.cost.dram_efficiency


def kernel_cost(kernel: Kernel, profile: DeviceProfile) -> KernelCost:
    threads = profile.runtime.threads
    clock_hz = profile.cpu.clock_ghz * 1e9
    compute_s = 0.0
    forks = False
    busiest_threads = 1
    if profile.cost.model in ("roofline", "onnxruntime"):
        compute_s = roofline_compute_s(kernel, profile)
        busiest_threads = threads
    else:
        for body in kernel.features.bodies:
            share = parallel_rounds(body.parallel_extent, threads)
            compute_s += body_cycles(body, profile) * share / clock_hz
            if body.parallel_extent > 1 and threads > 1:
                forks = True
                busiest_threads = max(busiest_threads, min(threads, body.parallel_extent))
    traffic = kernel.bytes_read + kernel.bytes_written
    l2_bytes = profile.cpu.l2_kib * 1024
    if traffic <= l2_bytes:
        bandwidth = profile.cost.cache_bytes_per_cycle * clock_hz * busiest_threads
    else:
        bandwidth = dram_bytes_per_s(profile)
    memory_s = traffic / bandwidth
    write_back_s = kernel.bytes_written / dram_bytes_per_s(profile) if profile.cost.model == "schedule" else 0.0
    scale = profile.cost.scale(kernel_class(kernel.features.kind))
    overhead_us = profile.cost.kernel_overhead_us + (profile.cost.parallel_overhead_us if forks else 0.0)
    return KernelCost(
        name=kernel.name,
        kind=kernel.features.kind,
        compute_ms=scale * compute_s * 1e3,
        memory_ms=scale * memory_s * 1e3,
        overhead_ms=overhead_us * 1e-3,
        write_back_ms=scale * write_back_s * 1e3,
    )


# ONNX Runtime's operators with arithmetic to split over its thread pool; every other node moves data.
COMPUTE_OPS = frozenset({"Conv", "FusedConv", "ConvTranspose", "Gemm", "FusedGemm", "MatMul", "FusedMatMul"})
# Operators that hand on their input's buffer: a node to dispatch, no bytes to move.
ALIAS_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


def node_kind(node: RuntimeNode) -> str:
    """A kernel kind (as hwkd.latency.tir_analysis names them) for an ONNX Runtime node."""
    if node.op in ("Conv", "FusedConv", "ConvTranspose") and len(node.input_shapes) >= 2:
        data, weight = node.input_shapes[0], node.input_shapes[1]
        groups = max(1, data[1] // max(1, weight[1])) if len(data) > 1 and len(weight) > 1 else 1
        if groups > 1:
            return "depthwise_conv" if weight[1] == 1 else "group_conv"
        return "pointwise_conv" if math.prod(weight[2:]) == 1 else "conv"
    if node.op in COMPUTE_OPS:
        return "matmul"
    return node.op.lower()


def node_macs(node: RuntimeNode) -> int:
    """Multiply-accumulates of a convolution or matrix product node, from its shapes."""
    if node.op not in COMPUTE_OPS or len(node.input_shapes) < 2 or not node.output_shapes:
        return 0
    first, second, out = node.input_shapes[0], node.input_shapes[1], node.output_shapes[0]
    if node.op in ("Conv", "FusedConv"):  # weight (out channels, in channels per group, kernel...)
        return math.prod(second) * math.prod(out[2:]) * out[0] if len(out) > 2 else 0
    if node.op == "ConvTranspose":  # weight (in channels, out channels per group, kernel...)
        return math.prod(second) * math.prod(first[2:]) * first[0] if len(first) > 2 else 0
    if not second:
        return 0
    return math.prod(first) * (second[-1] if node.op in ("MatMul", "FusedMatMul") else math.prod(second) // first[-1])


def fused_sum_bytes(node: RuntimeNode) -> int:
    """Bytes of the operand a convolution adds to its output (ONNX Runtime's Conv + Add fusion: the
    inputs after data, weight and bias), in proportion to the node's inputs (all of one type)."""
    if node.op not in ("Conv", "FusedConv") or len(node.input_shapes) <= 3:
        return 0
    sizes = [math.prod(shape) for shape in node.input_shapes]
    return node.bytes_read * sum(sizes[3:]) // max(1, sum(sizes))


def node_cost(node: RuntimeNode, profile: DeviceProfile) -> KernelCost:
    """One ONNX Runtime node's modeled time (the onnxruntime model)."""
    cost, cpu = profile.cost, profile.cpu
    threads, clock_hz = profile.runtime.threads, cpu.clock_ghz * 1e9
    kind = node_kind(node)
    traffic = node.bytes_read + node.bytes_written
    dram = dram_bytes_per_s(profile)
    in_cache = traffic <= cpu.l2_kib * 1024
    light_rate = cost.light_bytes_per_cycle * clock_hz * threads
    light_bytes_per_s = light_rate if in_cache else min(light_rate, dram)  # a light node's, or a fused sum's
    if node.op in COMPUTE_OPS:
        compute_s = peak_compute_s(node_macs(node), kernel_class(kind) == "depthwise_conv", profile)
        # A residual Add fused into the convolution is read after the arithmetic, in the epilogue: the
        # Add node's bytes at the light rate without its dispatch (on 220 nb201 students timed with ONNX
        # Runtime on a 2-core AVX-512 VM, the model's error went from +7 % for students without fused
        # sums to -4 % for those with three per cell without it; benchmarks/calibrate.py)
        compute_s += fused_sum_bytes(node) / light_bytes_per_s
        memory_s = traffic / (cost.cache_bytes_per_cycle * clock_hz * threads if in_cache else dram)
        overhead_us = cost.node_overhead_us
    else:
        compute_s = 0.0
        memory_s = 0.0 if node.op in ALIAS_OPS else traffic / light_bytes_per_s
        overhead_us = cost.light_overhead_us
    scale = cost.scale(kernel_class(kind))
    return KernelCost(name=node.op, kind=kind, compute_ms=scale * compute_s * 1e3, memory_ms=scale * memory_s * 1e3,
                      overhead_ms=overhead_us * 1e-3)


def graph_cost(kernels: Iterable[Kernel], profile: DeviceProfile,
               runtime_nodes: Sequence[RuntimeNode] = ()) -> list[KernelCost]:
    """The modeled time of each kernel, or with the onnxruntime model of each node ONNX Runtime runs of
    the student (`runtime_nodes`; the kernels are then not costed)."""
    if profile.cost.model == "onnxruntime":
        return [node_cost(node, profile) for node in runtime_nodes]
    return [kernel_cost(k, profile) for k in kernels]


def latency_ms(kernels: Iterable[Kernel], profile: DeviceProfile, runtime_nodes: Sequence[RuntimeNode] = ()) -> float:
    """Modeled latency; `runtime_nodes`: the nodes ONNX Runtime runs of this student (the onnxruntime
    model costs them instead of the kernels; the others ignore them)."""
    return sum(c.latency_ms for c in graph_cost(kernels, profile, runtime_nodes))
