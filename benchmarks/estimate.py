"""Benchmark of `hwkd estimate`: speed per new student, and how well the cost model ranks them.

Prints, in one run on this machine:
1. median seconds per new architecture for N random nb201 students (cost model, rpi4), with the
   per-stage split; then the same students through `Estimator` with the on-disk cache of lowered
   students cold (empty: every student is lowered by TVM) and warm (a new estimator, as a new process
   or a new search with a calibrated profile sees it: nothing is lowered again). Goal: at most
   0.1 s per student;
2. for M random nb201 students, the `host` cost model against latency measured with TVM here:
   Spearman and Kendall correlation, median absolute and relative error.

    python benchmarks/estimate.py [--students 200] [--measured 50] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from hwkd.latency.cost_model import latency_ms
from hwkd.latency.estimator import Estimator
from hwkd.latency.lowered_cache import LoweredCache
from hwkd.latency.lowering import Lowerer
from hwkd.latency.relax_import import torch_to_relax
from hwkd.profiles import load_profile
from hwkd.spaces import load_space
from hwkd.stats import kendall, spearman


def distinct_archs(count: int, seed: int) -> list[str]:
    space = load_space("nb201")
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    while len(seen) < count:
        seen.setdefault(space.sample(rng), None)
    return list(seen)


def speed(count: int, seed: int) -> None:
    space = load_space("nb201")
    rpi4 = load_profile("rpi4")
    lowerer = Lowerer()
    archs = distinct_archs(count, seed)
    stages: dict[str, list[float]] = {"build": [], "import": [], "lower": [], "model": [], "total": []}
    for n, arch in enumerate(archs, start=1):
        t0 = time.perf_counter()
        module = space.build(arch, 10)
        t1 = time.perf_counter()
        graph = torch_to_relax(module, (1, 3, 32, 32))
        t2 = time.perf_counter()
        lowered = lowerer.lower(graph)
        t3 = time.perf_counter()
        latency_ms(lowered.kernels, rpi4)
        t4 = time.perf_counter()
        for key, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
            stages[key].append(value)
        print(f"\r  speed: {n}/{count}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print(f"\n## Seconds per new architecture, {count} random nb201 students (rpi4 cost model)\n")
    print("| stage | median s | p90 s |")
    print("|---|---:|---:|")
    for key, values in stages.items():
        ordered = sorted(values)
        print(f"| {key} | {statistics.median(values):.3f} | {ordered[int(0.9 * (len(ordered) - 1))]:.3f} |")
    print(f"kernel cache: {lowerer.stats}")
    disk_cache(archs)


def disk_cache(archs: list[str]) -> None:
    """Seconds per student through `Estimator`, the on-disk cache of lowered students cold and warm."""
    space = load_space("nb201")
    rpi4 = load_profile("rpi4")
    calibrated = replace(rpi4, cost=replace(rpi4.cost, dense_conv_scale=1.7, depthwise_conv_scale=2.4))
    rows = []
    with tempfile.TemporaryDirectory(prefix="hwkd-bench-") as tmp:
        for label, profile in (("cold (empty cache, new process)", rpi4), ("warm (new process, same students)", rpi4),
                               ("warm, another profile (a calibrated rpi4)", calibrated)):
            estimator = Estimator(profile, "model", disk_cache=LoweredCache(Path(tmp)))
            times = []
            for n, arch in enumerate(archs, start=1):
                start = time.perf_counter()
                estimator.estimate_arch(space, arch)
                times.append(time.perf_counter() - start)
                print(f"\r  {label}: {n}/{len(archs)}", end="", file=sys.stderr, flush=True)
            print(file=sys.stderr)
            rows.append((label, times, estimator.disk_cache.hits))
    print(f"\n## Seconds per student through Estimator, {len(archs)} random nb201 students (rpi4 cost model)\n")
    print("| on-disk cache | median s | p90 s | from disk | median / goal 0.1 s |")
    print("|---|---:|---:|---:|---:|")
    for label, times, hits in rows:
        ordered = sorted(times)
        median = statistics.median(times)
        print(f"| {label} | {median:.4f} | {ordered[int(0.9 * (len(ordered) - 1))]:.4f} | {hits} | "
              f"{median / 0.1:.2f} ({'met' if median <= 0.1 else 'NOT met'}) |")


def fidelity(count: int, seed: int) -> None:
    if count < 2:
        return
    host = load_profile("host")
    estimator = Estimator(host, "measured")
    space = load_space("nb201")
    archs = distinct_archs(count, seed + 1)
    model, measured, spreads = [], [], []
    for n, arch in enumerate(archs, start=1):
        estimate = estimator.estimate_arch(space, arch)
        model.append(estimate.model_latency_ms)
        measured.append(estimate.latency_ms)
        spreads.append(estimate.latency_spread_ms or 0.0)
        print(f"\r  measured: {n}/{count}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    abs_err = [abs(a - b) for a, b in zip(model, measured)]
    rel_err = [abs(a - b) / b for a, b in zip(model, measured)]
    ratio = [a / b for a, b in zip(model, measured)]
    print(f"\n## host cost model vs TVM-measured latency, {count} random nb201 students")
    print(f"(host: {host.cpu.cores} cores at {host.cpu.clock_ghz:.2f} GHz, {host.cpu.simd_bits}-bit SIMD, "
          f"target {host.target}, {host.runtime.threads} threads)\n")
    print("| metric | value |")
    print("|---|---:|")
    print(f"| Spearman rho | {spearman(model, measured):.3f} |")
    print(f"| Kendall tau | {kendall(model, measured):.3f} |")
    print(f"| median absolute error, ms | {statistics.median(abs_err):.3f} |")
    print(f"| median relative error | {statistics.median(rel_err):.1%} |")
    print(f"| median model / measured | {statistics.median(ratio):.2f} |")
    print(f"| measured latency range, ms | {min(measured):.2f} .. {max(measured):.2f} |")
    print(f"| median 10-90% spread of a measurement, ms | {statistics.median(spreads):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=200)
    parser.add_argument("--measured", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    speed(args.students, args.seed)
    fidelity(args.measured, args.seed)


if __name__ == "__main__":
    main()
