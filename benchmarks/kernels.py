"""Benchmark of the schedule cost model kernel by kernel: each kernel of hwkd's TVM library timed alone.

`benchmarks/calibrate.py` scores whole students; this one says which kernels the model gets wrong.
For `--students` random students of `--space`, every distinct kernel hwkd schedules is compiled
alone for the `host` profile and timed with TVM's time evaluator on random inputs (the fastest of
5 repeats of at least 20 ms), and compared with the `host` schedule model's time for it. It prints,
per kernel kind, the measured and modeled totals and their ratio, then the kernels modeled worst,
with the bound the model took for their main loop body. A kernel alone runs on warm caches, so the
sum of a student's kernels is below the student's own latency; the ratios between kinds are what
tell a modeling error. Run it with nothing else on the machine.

    python benchmarks/kernels.py [--space fbnet] [--students 8] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import os
import random
from collections import defaultdict


def main_body_bound(kernel: object, profile: object) -> str:
    """Which term bounds the body that takes most of the kernel's modeled cycles."""
    from hwkd.latency.cost_model import body_cycles, reduction_wait_cycles

    cpu = profile.cpu  # type: ignore[attr-defined]
    body = max(kernel.features.bodies, key=lambda b: body_cycles(b, profile))  # type: ignore[attr-defined]
    vector_ops = math.ceil(body.lanes / (cpu.fp32_lanes if body.lanes > 1 else 1))
    loads = vector_ops * body.vector_loads + body.gather_loads * body.lanes + body.invariant_loads
    terms = {
        "arithmetic": vector_ops * body.alu_ops / cpu.fma_per_cycle,
        "loads": loads / cpu.loads_per_cycle,
        "stores": vector_ops * body.stores / cpu.stores_per_cycle,
        "accumulator latency": reduction_wait_cycles(body, vector_ops * (body.alu_ops + body.stores) + loads,
                                               cpu.fma_latency_cycles, cpu.reorder_window),
        "loop control": 1.0 / body.unrolled,
    }
    return f"{max(terms, key=terms.__getitem__)} ({body.chains} chains of {body.chain_steps} steps)"


def time_kernels(lowered: object, target: object, timed: dict[int, float]) -> dict[str, float]:
    """Milliseconds of each kernel of `lowered`, compiled and run alone; `timed`: by the kernel's
    structure, kernels already timed (students share most of theirs)."""
    import numpy as np
    import tvm
    import tvm_ffi
    from tvm import relax, tirx

    from hwkd.latency.graph_analysis import bindings
    from hwkd.latency.schedule import schedule_module

    fused = lowered.fused_mod  # type: ignore[attr-defined]
    scheduled = schedule_module(fused)
    funcs = {gv.name_hint: f for gv, f in scheduled.functions.items() if isinstance(f, tirx.PrimFunc)}
    call_tir = tvm.ir.Op.get("relax.call_tir")
    arguments = {}  # kernel -> (shape, dtype) of each argument and the output, from its call site
    for binding in bindings(fused["main"]):
        value = binding.value
        if isinstance(value, relax.Call) and value.op.same_as(call_tir):
            types = [a.ty for a in value.args[1].fields] + [value.ty]
            arguments[value.args[0].name_hint] = [([int(v) for v in t.shape.values], str(t.dtype)) for t in types]
    rng = np.random.default_rng(0)
    times = {}
    for kernel in lowered.kernels:  # type: ignore[attr-defined]
        func = funcs[kernel.name]
        key = int(tvm_ffi.structural_hash(func, map_free_vars=True))
        if key not in timed:
            library = tvm.compile(tvm.IRModule({kernel.name: func.with_attr("global_symbol", kernel.name)}),
                                  target=target)
            tensors = [tvm.runtime.tensor(rng.standard_normal(shape).astype(dtype), tvm.cpu())
                       for shape, dtype in arguments[kernel.name]]
            timer = library.mod.time_evaluator(kernel.name, tvm.cpu(), number=20, repeat=5, min_repeat_ms=20)
            timed[key] = min(timer(*tensors).results) * 1e3
        times[kernel.name] = timed[key]
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="fbnet")
    parser.add_argument("--students", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worst", type=int, default=8, help="kernels listed as modeled worst (default 8)")
    args = parser.parse_args()
    from hwkd.threads import size_tvm_pool

    size_tvm_pool()
    from hwkd.latency.cost_model import kernel_cost
    from hwkd.latency.lowering import Lowerer
    from hwkd.latency.relax_import import torch_to_relax
    from hwkd.profiles import load_profile
    from hwkd.spaces import load_space

    host = load_profile("host")
    space = load_space(args.space)
    shape = space.default_input_shape
    rng = random.Random(args.seed)
    archs = list(dict.fromkeys(space.parse(space.sample(rng)) for _ in range(args.students * 20)))[:args.students]
    by_kind: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    seen: dict[tuple[str, int], tuple[float, float, str, str]] = {}  # (kind, modeled us) -> one kernel
    timed: dict[int, float] = {}
    for n, arch in enumerate(archs, start=1):
        print(f"\r  {args.space} student {n}/{len(archs)}", end="", flush=True)
        lowered = Lowerer().lower(torch_to_relax(space.build(arch, 10, shape), shape))
        times = time_kernels(lowered, host.tvm_target(), timed)
        for kernel in lowered.kernels:
            modeled = kernel_cost(kernel, host).latency_ms
            totals = by_kind[kernel.features.kind]
            totals[0] += times[kernel.name]
            totals[1] += modeled
            totals[2] += 1
            seen.setdefault((kernel.features.kind, round(modeled * 1e6)),
                            (times[kernel.name], modeled, kernel.name, main_body_bound(kernel, host)))
    print(f"\n\n## Kernels of {len(archs)} {args.space} students timed alone against the host schedule model "
          f"({host.runtime.threads} threads, {os.cpu_count()} CPUs, LLVM cpu {host.target.get('mcpu')}, "
          f"reorder window {host.cpu.reorder_window})\n")
    print("| kind | kernels | measured ms | modeled ms | measured / modeled |")
    print("|---|---:|---:|---:|---:|")
    for kind, (measured, modeled, count) in sorted(by_kind.items(), key=lambda item: -item[1][0]):
        print(f"| {kind} | {int(count)} | {measured:.3f} | {modeled:.3f} | {measured / modeled:.2f} |")
    worst = sorted(seen.items(), key=lambda item: -abs(math.log(item[1][0] / item[1][1])))[:args.worst]
    print(f"\nThe {len(worst)} distinct kernels modeled worst:\n")
    print("| kind | kernel | measured us | modeled us | measured / modeled | model's bound of its main body |")
    print("|---|---|---:|---:|---:|---|")
    for (kind, _), (measured, modeled, name, bound) in worst:
        print(f"| {kind} | {name} | {measured * 1e3:.2f} | {modeled * 1e3:.2f} | {measured / modeled:.2f} | {bound} |")


if __name__ == "__main__":
    main()
