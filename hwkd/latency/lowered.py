"""What lowering tells of a student: its fused kernels, each described for the cost model.

These records are what `hwkd.latency.lowering` produces, the cost model reads and the on-disk cache
(`hwkd.latency.lowered_cache`) keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Bump when lowering, hwkd's schedule or the kernel descriptions change: it names the on-disk
# cache of lowered students (hwkd.latency.lowered_cache), which then starts afresh; so does a change
# of that cache's record format.
LOWERING_VERSION = 14


@dataclass(frozen=True)
class LoopBody:
    """One statement of a scheduled kernel, with how often and how wide it runs.

    Counts are per execution of the statement, an execution covering `lanes` elements. They model
    what LLVM makes of hwkd's schedule (checked on its x86 and AArch64 output): index arithmetic
    and padding conditions are hoisted (a padded load becomes a masked load), loads that do not
    vary across lanes become one broadcast, and an accumulator stays in registers across the
    reduction loops, so a reduction step costs no load or store of it but waits for the last one.
    In a register tile (loops the schedule unrolls), a load that is the same for every iteration
    of an unrolled loop is loaded once for all of them, so load counts may be fractions, and the
    tile's accumulators are independent chains that hide each other's latency.
    """

    block: str
    iterations: int  # executions: product of every enclosing loop but the vector loop
    parallel_extent: int  # extent of the enclosing parallel loop, 1 if none
    lanes: int  # elements per execution: the vector loop's extent, 1 when scalar
    alu_ops: int  # floating-point arithmetic per element; a multiply feeding an add is one FMA
    vector_loads: float  # lane-varying loads from consecutive elements
    gather_loads: float  # lane-varying loads with another stride: one element load per lane
    invariant_loads: float  # loads the same for every lane: one broadcast per execution
    stores: int  # per element; 0 for a reduction step (its accumulator stays in a register)
    carried: bool  # a reduction step: each execution waits for the previous one's result
    unrolled: int = 1  # executions in one iteration of the innermost loop that is not unrolled
    chains: int = 1  # independent accumulators among them (a register tile's outputs)
    chain_steps: int = 1  # executions one accumulator takes (its reduction loops' extents); 1 unless carried


@dataclass(frozen=True)
class KernelFeatures:
    """What the cost model needs of one fused PrimFunc, independent of where it is called."""

    kind: str  # conv, depthwise_conv, matmul, pool, reduce, elementwise, layout
    flops: int
    strategy: str  # how hwkd's schedule treated it (see hwkd.latency.schedule)
    bodies: tuple[LoopBody, ...]


@dataclass(frozen=True)
class Kernel:
    name: str
    features: KernelFeatures
    bytes_read: int
    bytes_written: int


@dataclass(frozen=True)
class LoweredGraph:
    kernels: tuple[Kernel, ...]  # per-inference kernels, in execution order
    weight_only_kernels: int  # kernels on weights alone, computed once at load time
    macs: int  # multiply-accumulates of convolutions and matrix products
    params_bytes: int
    peak_memory_bytes: int  # activation storage of TVM's static memory plan
    structure_hash: int  # of the fused graph, for result caches
    fused_mod: Any  # tvm.IRModule after fusion (unscheduled); None when read from the on-disk cache
