"""Benchmark of the schedule cost model kernel by kernel: each kernel of hwkd's TVM library timed alone.

`benchmarks/calibrate.py` scores whole students; this one says which kernels the model gets wrong.
For `--students` random students of `--space`, every distinct kernel hwkd schedules is compiled
alone for the `host` profile and timed as `hwkd export --tune` times it (MetaSchedule's runner, the
mean of 5 repeats of at least 20 ms; hwkd's own schedule only, in a tuning database of this run),
and compared with the `host` schedule model's time for it. It prints,
per kernel kind, the measured and modeled totals and their ratio, then the kernels modeled worst,
with the bound the model took for their main loop body. A kernel alone runs on warm caches, so the
sum of a student's kernels is below the student's own latency; the ratios between kinds are what
tell a modeling error. It also times each whole student as `hwkd estimate` measures it and prints
what the student costs beyond its kernels alone, against the bytes its kernels write and their
count: alone, a kernel writes the same output buffer run after run, so its lines stay in cache; in
a student, each kernel writes a buffer last touched several kernels before. Run it with nothing
else on the machine.

    python benchmarks/kernels.py [--space fbnet] [--students 8] [--seed 0] [--blocked]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import tempfile
from collections import defaultdict


def main_body_bound(kernel: object, profile: object) -> str:
    """Which limit bounds the body that takes most of the kernel's modeled cycles."""
    from hwkd.latency.cost_model import BODY_BOUNDS, body_bounds, body_cycles

    body = max(kernel.features.bodies, key=lambda b: body_cycles(b, profile))  # type: ignore[attr-defined,arg-type]
    bounds = dict(zip(BODY_BOUNDS, body_bounds(body, profile)))  # type: ignore[arg-type]
    chains = f"{body.chains} chain" + ("s" if body.chains != 1 else "")
    return f"{max(bounds, key=bounds.__getitem__)} ({chains} of {body.chain_steps} steps)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="fbnet")
    parser.add_argument("--students", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worst", type=int, default=8, help="kernels listed as modeled worst (default 8)")
    parser.add_argument("--blocked", action="store_true", help="the library in the channel-blocked layout "
                        "(hwkd.latency.blocked_layout), not the default NCHW")
    args = parser.parse_args()
    from hwkd.threads import size_tvm_pool

    size_tvm_pool()
    from hwkd.latency.cost_model import kernel_cost
    from hwkd.latency.lowering import Lowerer
    from hwkd.latency.measure import measure_local
    from hwkd.latency.relax_import import torch_to_relax
    from hwkd.latency.schedule import register_tile
    from hwkd.latency.tuning import TuningPlan, tune_kernels
    from hwkd.profiles import load_profile
    from hwkd.spaces import load_space

    host = load_profile("host")  # with the bandwidth kept in the user's cache, as every command costs with
    # a tuning database of this run: timings taken now, none read from (or left in) the user's
    os.environ["HWKD_CACHE_DIR"] = tempfile.mkdtemp(prefix="hwkd-kernels-")
    space = load_space(args.space)
    shape = space.default_input_shape
    lowerer = Lowerer(register_tile(host.cpu.simd_bits), blocked=args.blocked)  # the tiles the host's library gets
    rng = random.Random(args.seed)
    archs = list(dict.fromkeys(space.parse(space.sample(rng)) for _ in range(args.students * 20)))[:args.students]
    by_kind: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    seen: dict[tuple[str, int], tuple[float, float, str, str]] = {}  # (kind, modeled us) -> one kernel
    untimed = 0
    students = []  # (whole student ms, its kernels alone ms, bytes its kernels write, kernels)
    for n, arch in enumerate(archs, start=1):
        print(f"\r  {args.space} student {n}/{len(archs)}", end="", flush=True)
        graph = torch_to_relax(space.build(arch, 10, shape), shape)
        lowered = lowerer.lower(graph)
        # hwkd's schedule of each kernel, timed alone by the tuner with no other variant; a kernel
        # shared with an earlier student is read from the database
        timed = {k.kernel: k.default_us * 1e-3 for k in tune_kernels(lowered, host, TuningPlan(variants=1)).kernels}
        for kernel in lowered.kernels:
            if kernel.name not in timed:  # TVM's default loop nest: no hwkd schedule to time
                untimed += 1
                continue
            modeled = kernel_cost(kernel, host).alone_ms  # alone: no write-back to memory
            totals = by_kind[kernel.features.kind]
            totals[0] += timed[kernel.name]
            totals[1] += modeled
            totals[2] += 1
            seen.setdefault((kernel.features.kind, round(modeled * 1e6)),
                            (timed[kernel.name], modeled, kernel.name, main_body_bound(kernel, host)))
        if all(kernel.name in timed for kernel in lowered.kernels):
            whole = measure_local(lowered, graph.params, shape, host).latency_ms
            students.append((whole, sum(timed[k.name] for k in lowered.kernels),
                             sum(k.bytes_written for k in lowered.kernels), len(lowered.kernels)))
    print(f"\n\n## Kernels of {len(archs)} {args.space} students timed alone against the host schedule model "
          f"({host.runtime.threads} threads, {os.cpu_count()} CPUs, LLVM cpu {host.target.get('mcpu')}, "
          f"reorder window {host.cpu.reorder_window})\n")
    if untimed:
        print(f"({untimed} kernels without an hwkd schedule, TVM's default loop nest, are left out)\n")
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
    if students:
        in_a_student(students, host.cpu.clock_ghz, host.runtime.threads,
                     host.memory.bandwidth_gb_s * host.cost.dram_efficiency)


def in_a_student(students: list[tuple[float, float, int, int]], clock_ghz: float, threads: int,
                 dram_gb_s: float) -> None:
    """What whole students cost beyond their kernels alone, and that extra fitted to the bytes the
    kernels write (at a rate in bytes per cycle per core) and to their count."""
    import numpy as np

    print(f"\n## {len(students)} whole students against their kernels alone\n")
    print("| student ms | kernels alone ms | extra ms | KiB written by its kernels | kernels | extra ns per KiB written |")
    print("|---:|---:|---:|---:|---:|---:|")
    for whole, alone, written, count in students:
        print(f"| {whole:.3f} | {alone:.3f} | {whole - alone:.3f} | {written / 1024:.0f} | {count} | "
              f"{(whole - alone) * 1e6 / (written / 1024):.1f} |")
    extra = np.array([whole - alone for whole, alone, _, _ in students])
    cycles = np.array([written for _, _, written, _ in students]) / (clock_ghz * 1e6 * threads)  # ms at 1 B/cycle/core
    kernels = np.array([count for *_, count in students], dtype=float)
    inverse_rate = float(np.linalg.lstsq(cycles[:, None], extra, rcond=None)[0][0])
    error = 100 * float(np.median(np.abs(cycles * inverse_rate - extra) / np.abs(extra)))
    print(f"\nextra = bytes written at {1 / inverse_rate:.1f} bytes per cycle per core ({threads} threads, "
          f"{clock_ghz:g} GHz: {clock_ghz * threads / inverse_rate:.1f} GB/s; the schedule model's write-back "
          f"takes the profile's DRAM rate, {dram_gb_s:.1f} GB/s): median error {error:.0f} %")
    (a, b), *_ = np.linalg.lstsq(np.stack([kernels * 1e-3, cycles], axis=1), extra, rcond=None)
    both = kernels * 1e-3 * a + cycles * b
    error = 100 * float(np.median(np.abs(both - extra) / np.abs(extra)))
    print(f"extra = {a:.2f} us per kernel + bytes written at {1 / b if b > 0 else float('inf'):.1f} bytes per cycle "
          f"per core: median error {error:.0f} %")


if __name__ == "__main__":
    main()
