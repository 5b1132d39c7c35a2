"""Benchmark of the schedule cost model kernel by kernel: each kernel of hwkd's TVM library timed alone.

`benchmarks/calibrate.py` scores whole students; this one says which kernels the model gets wrong.
For `--students` random students of `--space`, every distinct kernel hwkd schedules is compiled
alone for the `host` profile and timed as `hwkd export --tune` times it (MetaSchedule's runner, the
mean of 5 repeats of at least 20 ms; hwkd's own schedule only, in a tuning database of this run),
and compared with the `host` schedule model's time for it. It prints,
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
import tempfile
from collections import defaultdict


def main_body_bound(kernel: object, profile: object) -> str:
    """Which limit bounds the body that takes most of the kernel's modeled cycles."""
    from hwkd.latency.cost_model import BODY_BOUNDS, body_bounds, body_cycles

    body = max(kernel.features.bodies, key=lambda b: body_cycles(b, profile))  # type: ignore[attr-defined]
    bounds = dict(zip(BODY_BOUNDS, body_bounds(body, profile)))  # type: ignore[arg-type]
    chains = f"{body.chains} chain" + ("s" if body.chains != 1 else "")
    return f"{max(bounds, key=bounds.__getitem__)} ({chains} of {body.chain_steps} steps)"


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
    from hwkd.latency.tuning import TuningPlan, tune_kernels
    from hwkd.profiles import load_profile
    from hwkd.spaces import load_space

    host = load_profile("host")  # with the bandwidth kept in the user's cache, as every command costs with
    # a tuning database of this run: timings taken now, none read from (or left in) the user's
    os.environ["HWKD_CACHE_DIR"] = tempfile.mkdtemp(prefix="hwkd-kernels-")
    space = load_space(args.space)
    shape = space.default_input_shape
    rng = random.Random(args.seed)
    archs = list(dict.fromkeys(space.parse(space.sample(rng)) for _ in range(args.students * 20)))[:args.students]
    by_kind: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    seen: dict[tuple[str, int], tuple[float, float, str, str]] = {}  # (kind, modeled us) -> one kernel
    untimed = 0
    for n, arch in enumerate(archs, start=1):
        print(f"\r  {args.space} student {n}/{len(archs)}", end="", flush=True)
        lowered = Lowerer().lower(torch_to_relax(space.build(arch, 10, shape), shape))
        # hwkd's schedule of each kernel, timed alone by the tuner with no other variant; a kernel
        # shared with an earlier student is read from the database
        timed = {k.kernel: k.default_us * 1e-3 for k in tune_kernels(lowered, host, TuningPlan(variants=1)).kernels}
        for kernel in lowered.kernels:
            if kernel.name not in timed:  # TVM's default loop nest: no hwkd schedule to time
                untimed += 1
                continue
            modeled = kernel_cost(kernel, host).latency_ms
            totals = by_kind[kernel.features.kind]
            totals[0] += timed[kernel.name]
            totals[1] += modeled
            totals[2] += 1
            seen.setdefault((kernel.features.kind, round(modeled * 1e6)),
                            (timed[kernel.name], modeled, kernel.name, main_body_bound(kernel, host)))
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


if __name__ == "__main__":
    main()
