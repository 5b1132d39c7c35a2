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
With `cost_model.model: roofline` (`hwkd calibrate --cost-model roofline`: a library whose loops
are nothing like hwkd's) a kernel's compute is instead its FLOPs at the cores' peak, or for a
depthwise or grouped convolution at one vector load per vector FMA if that is slower (each input
is reused only kernel-size times), and pooling, elementwise and layout kernels are memory-bound; memory and
overheads as above, without fork/join (the library's pool is not hwkd's).
With `cost_model.model: onnxruntime` (the runtime people ship ONNX files with) a kernel costs its
roofline time alone, and the graph `node_overhead_us` for each node ONNX Runtime runs after its own
graph optimizations (`hwkd.latency.onnxruntime_graph.runtime_nodes`): ONNX Runtime fuses less than
TVM and dispatches every node to its thread pool, and on a 2-core AVX-512 VM that per-node cost,
not its kernels' speed, was what ranked its fbnet students unlike hwkd's library.

- time = scale * max(compute, memory) + `kernel_overhead_us` (+ `parallel_overhead_us` when it
  forks), where `scale` is the profile's multiplier for the kernel's class (`KERNEL_CLASSES`): 1
  from datasheets, fitted to the board's measurements by `hwkd calibrate`
  (hwkd.latency.calibration).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from hwkd.latency.lowered import Kernel, LoopBody
from hwkd.profiles import DeviceProfile

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

    @property
    def latency_ms(self) -> float:
        return max(self.compute_ms, self.memory_ms) + self.overhead_ms

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
    gathered = body.gather_loads * body.lanes  # one element load per lane
    loads = vector_ops * body.vector_loads + gathered + body.invariant_loads
    instructions = vector_ops * (body.alu_ops + body.stores) + loads
    return (
        vector_ops * body.alu_ops / cpu.fma_per_cycle,
        loads / cpu.loads_per_cycle,
        vector_ops * body.stores / cpu.stores_per_cycle,
        _reduction_wait_cycles(body, instructions, cpu.fma_latency_cycles, cpu.reorder_window),
        1.0 / body.unrolled,  # at least one issue slot per loop iteration
    )


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
    cpu = profile.cpu
    kind = kernel_class(kernel.features.kind)
    if kind == "other":
        return 0.0
    vector_ops_per_s = cpu.fp32_lanes * cpu.clock_ghz * 1e9 * profile.runtime.threads
    compute = kernel.features.flops / (2 * cpu.fma_per_cycle * vector_ops_per_s)
    if kind == "depthwise_conv":
        compute = max(compute, kernel.features.flops / 2 / (cpu.loads_per_cycle * vector_ops_per_s))
    return compute


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
        bandwidth = profile.memory.bandwidth_gb_s * 1e9 * profile.cost.dram_efficiency
    memory_s = traffic / bandwidth
    scale = profile.cost.scale(kernel_class(kernel.features.kind))
    overhead_us = profile.cost.kernel_overhead_us + (profile.cost.parallel_overhead_us if forks else 0.0)
    if profile.cost.model == "onnxruntime":
        overhead_us = 0.0  # charged per node of ONNX Runtime's graph instead (`node_overhead_ms`)
    return KernelCost(
        name=kernel.name,
        kind=kernel.features.kind,
        compute_ms=scale * compute_s * 1e3,
        memory_ms=scale * memory_s * 1e3,
        overhead_ms=overhead_us * 1e-3,
    )


def graph_cost(kernels: Iterable[Kernel], profile: DeviceProfile) -> list[KernelCost]:
    return [kernel_cost(k, profile) for k in kernels]


def node_overhead_ms(runtime_nodes: int, profile: DeviceProfile) -> float:
    """The per-node cost of the onnxruntime model for a graph of `runtime_nodes` nodes; 0 for the others."""
    return runtime_nodes * profile.cost.node_overhead_us * 1e-3 if profile.cost.model == "onnxruntime" else 0.0


def latency_ms(kernels: Iterable[Kernel], profile: DeviceProfile, runtime_nodes: int = 0) -> float:
    """Modeled latency; `runtime_nodes`: the nodes ONNX Runtime runs of this student (the onnxruntime
    model needs them; the others ignore them)."""
    return sum(c.latency_ms for c in graph_cost(kernels, profile)) + node_overhead_ms(runtime_nodes, profile)
