"""Benchmark of where the thread that calls a TVM library runs, for the students of runtimes.py.

TVM's pool runs task 0 of every parallel loop on the calling thread and pins its workers to the other
cores, but leaves the calling thread free to run on any core, a worker's included; when Linux leaves it
on a worker's core the two take turns. hwkd pins the calling thread to the core no worker has
(`hwkd.threads.pin_tvm_pool`). Each student's blocked library (hwkd's default for `host`) is timed in
three ways, in turns, `--rounds` rounds, the order reversed every other round:

- `tvm`: TVM's own configuration (`runtime.config_threadpool(1, threads)`), the calling thread free;
- `shared`: the same, the calling thread put on the first worker's core (what `tvm` becomes when
  Linux leaves it there);
- `hwkd`: `pin_tvm_pool`.

It prints, per student, each way's fastest and median round (ms, the fastest of 7 runs per round) and
the ratios to `hwkd` by the median of rounds. Run it with nothing else on the machine.

    python benchmarks/pool_pinning.py [--threads 2] [--rounds 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runtimes import STUDENTS

WAYS = ("tvm", "shared", "hwkd")


def time_ms(way: str, student: object, input_shape: tuple[int, ...], threads: int) -> float:
    import tvm

    from hwkd.latency.measure import TimingPlan, _time, set_pool_threads
    from hwkd.threads import fastest_first, pin_tvm_pool

    cores = os.sched_getaffinity(0)
    try:
        if way == "hwkd":
            pin_tvm_pool(threads)
        else:  # TVM's "big cores" mode, as hwkd configures a board over RPC and a user's own code would
            set_pool_threads(tvm.get_global_func("runtime.config_threadpool"), threads)
            if way == "shared":
                os.sched_setaffinity(0, {fastest_first(sorted(cores))[1]})  # where TVM pins worker 1
        device = tvm.cpu()
        runs = _time(student.executable, device, student.weights, input_shape, TimingPlan(),  # type: ignore[attr-defined]
                     lambda a: tvm.runtime.tensor(a, device))
        return min(runs)
    finally:
        os.sched_setaffinity(0, cores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2 or args.threads < 2:
        raise SystemExit("pool_pinning.py needs two or more cores and --threads of at least 2")

    from hwkd.latency.lowering import Lowerer
    from hwkd.latency.measure import compile_student
    from hwkd.latency.relax_import import torch_to_relax
    from hwkd.latency.schedule import register_tile
    from hwkd.profiles import load_profile
    from hwkd.spaces import load_space
    from hwkd.threads import size_tvm_pool

    size_tvm_pool()
    host = load_profile("host").with_threads(args.threads)
    compiled = []
    for n, (label, space_name, arch) in enumerate(STUDENTS, start=1):
        print(f"\r  compiling {n}/{len(STUDENTS)}   ", end="", file=sys.stderr, flush=True)
        space = load_space(space_name)
        graph = torch_to_relax(space.build(arch, 10, space.default_input_shape).eval(), space.default_input_shape)
        lowered = Lowerer(register_tile(host.cpu.simd_bits), blocked=True).lower(graph)
        compiled.append((label, compile_student(lowered, graph.params, host), graph.input_shape))
    rounds: dict[str, list[list[float]]] = {way: [[] for _ in compiled] for way in WAYS}
    for r in range(args.rounds):
        print(f"\r  round {r + 1}/{args.rounds}   ", end="", file=sys.stderr, flush=True)
        for n, (_, student, shape) in enumerate(compiled):
            for way in WAYS[::-1 if r % 2 else 1]:
                rounds[way][n].append(time_ms(way, student, shape, args.threads))
    print(file=sys.stderr)
    print(f"{args.threads} threads, {args.rounds} rounds; ms = fastest / median round")
    print("| student | tvm ms | shared ms | hwkd ms | tvm / hwkd | shared / hwkd |")
    print("|---|---:|---:|---:|---:|---:|")
    ratios: dict[str, list[float]] = {"tvm": [], "shared": []}
    for n, (label, _, _) in enumerate(compiled):
        medians = {way: statistics.median(rounds[way][n]) for way in WAYS}
        cells = [f"{min(rounds[way][n]):.3f} / {medians[way]:.3f}" for way in WAYS]
        for way in ratios:
            ratios[way].append(medians[way] / medians["hwkd"])
        print(f"| {label} | " + " | ".join(cells) + f" | {ratios['tvm'][-1]:.2f}x | {ratios['shared'][-1]:.2f}x |")
    print(f"median over students: tvm / hwkd {statistics.median(ratios['tvm']):.2f}x, "
          f"shared / hwkd {statistics.median(ratios['shared']):.2f}x")


if __name__ == "__main__":
    main()
