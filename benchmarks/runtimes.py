"""Benchmark of the code hwkd compiles: its TVM library against ONNX Runtime and torch, same students,
same threads, side by side on this machine.

For the students of the runtime issue (NB201 cells of 3x3 convolutions and of cheap operations,
FBNet with every block alike, and FBNet at ImageNet resolution), it times five runtimes:

- `tvm`: the library `hwkd export` / `hwkd estimate --device host --latency-source measured`
  compiles (hwkd's default schedule), timed as `hwkd estimate` times it;
- `tvm-blocked`: the same library with its convolutions in the channel-blocked layout
  (`hwkd.latency.blocked_layout`, not yet the default: the cost model does not follow it yet);
- `tvm-tuned`: the library `hwkd export --tune [--tune-trials N]` compiles, tuned here from an empty
  tuning database (a temporary cache dir; the time tuning took and the schedules it measured are
  printed: that is the budget);
- `ort`: ONNX Runtime on the ONNX file `hwkd export` writes, CPU provider;
- `torch`: the eager network, channels-last, `torch.inference_mode`.

Each runtime is measured in its own process (their thread pools would compete), every student
`--passes` times in interleaved passes; the fastest pass is that process's latency. A shared VM has
slow spells: on the 2-core VM, the same TVM library, timed every half second in one process, ran
0.88 ms for a while, then 1.40 ms for a few seconds, then 0.88 again (ONNX Runtime's times jumped
alike), and one spell can cover all passes of a process. So every runtime runs in `--processes` fresh
processes, one round of all runtimes after another, and the latency is the fastest process's,
as the fastest pass is each process's; the spread over processes is printed, and every process's
figures are written to `--save` (JSON). The tuned
runtime's first process tunes; the later ones find its kernels in the database and only time the
candidate libraries again, as a second `hwkd export --tune` would. It also prints the `host` cost
model's figure beside hwkd's library. Run it with nothing else on the machine.

    python benchmarks/runtimes.py [--threads 2] [--passes 3] [--processes 3] [--tune-trials 7] [--save F]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hwkd.latency.tuning import DEFAULT_VARIANTS

sys.path.insert(0, str(Path(__file__).parent))

RUNTIMES = ("tvm", "tvm-blocked", "tvm-tuned", "ort", "torch")
STUDENTS = (  # (label, space, arch)
    ("nb201, all six edges 3x3 conv", "nb201",
     "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"),
    ("nb201, 1x1 conv / skip / pool cell", "nb201",
     "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|nor_conv_1x1~0|skip_connect~1|avg_pool_3x3~2|"),
    ("fbnet, every block k3_e6", "fbnet", "3" * 22),
    ("fbnet, every block k3_e1", "fbnet", "0" * 22),
    ("fbnet, every block k5_e6", "fbnet", "7" * 22),
    ("fbnet-imagenet, every block k3_e6, 224x224", "fbnet-imagenet", "3" * 22),
)


class TorchRunner:
    """The eager network as a torch user runs it: channels-last, inference mode."""

    def __init__(self, module: object, input_shape: tuple[int, ...], threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.module = module.eval().to(memory_format=torch.channels_last)  # type: ignore[attr-defined]
        self.x = torch.randn(input_shape).contiguous(memory_format=torch.channels_last)

    def time_ms(self) -> float:
        import torch

        with torch.inference_mode():
            for _ in range(3):
                self.module(self.x)
            runs = []
            for _ in range(7):  # as TVM's time_evaluator: runs of at least 20 ms, the median of 7
                start, calls = time.perf_counter(), 0
                while time.perf_counter() - start < 0.02:
                    self.module(self.x)
                    calls += 1
                runs.append((time.perf_counter() - start) / calls * 1e3)
        return statistics.median(runs)


def collect(runtime: str, threads: int, passes: int, tune_trials: int, cache: str) -> dict[str, object]:
    """Fastest of `passes` interleaved passes over STUDENTS, in ms, measured in this process; the tuned
    runtime tunes in the cache folder `cache` (empty the first time)."""
    import os

    from calibrate import OrtRunner, TvmRunner

    from hwkd.latency.tuning import TuningPlan
    from hwkd.profiles import load_profile
    from hwkd.spaces import load_space

    host = load_profile("host").with_threads(threads)
    tuning = None
    if runtime == "tvm-tuned":
        os.environ["HWKD_CACHE_DIR"] = cache
        tuning = TuningPlan(variants=tune_trials)
    started = time.perf_counter()
    runners = []
    for n, (_, space_name, arch) in enumerate(STUDENTS, start=1):
        print(f"\r  compiling for {runtime}: {n}/{len(STUDENTS)}   ", end="", file=sys.stderr, flush=True)
        space = load_space(space_name)
        module = space.build(arch, 10, space.default_input_shape).eval()
        shape = space.default_input_shape
        runners.append(OrtRunner(module, shape, threads) if runtime == "ort" else
                       TorchRunner(module, shape, threads) if runtime == "torch" else
                       TvmRunner(module, shape, host, tuning, blocked=runtime == "tvm-blocked"))
    prepare_s = time.perf_counter() - started
    tunings = [r.tuning for r in runners if isinstance(r, TvmRunner) and r.tuning is not None]
    schedules = sum(t.to_json()["variants_measured_now"] for t in tunings)
    times: list[list[float]] = [[] for _ in runners]
    for p in range(passes):
        for n, runner in enumerate(runners):
            print(f"\r  timing {runtime}: pass {p + 1}/{passes}, {n + 1}/{len(runners)}   ", end="",
                  file=sys.stderr, flush=True)
            times[n].append(runner.time_ms())
    print(file=sys.stderr)
    libraries = [t.library for t in tunings]
    return {"ms": [min(t) for t in times], "prepare_s": prepare_s, "schedules": schedules, "libraries": libraries}


def model_ms(threads: int) -> list[float]:
    from hwkd.latency.estimator import Estimator
    from hwkd.profiles import load_profile
    from hwkd.spaces import load_space

    estimator = Estimator(load_profile("host").with_threads(threads), "model")
    return [estimator.estimate_arch(load_space(s), arch).latency_ms for _, s, arch in STUDENTS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--processes", type=int, default=3, help="fresh processes per runtime (default 3)")
    parser.add_argument("--save", help="write every process's figures to this JSON file")
    parser.add_argument("--tune-trials", type=int, default=DEFAULT_VARIANTS,
                        help=f"schedules measured per kernel for tvm-tuned (default {DEFAULT_VARIANTS})")
    parser.add_argument("--runtime", choices=RUNTIMES, help=argparse.SUPPRESS)  # one runtime, in a child process
    parser.add_argument("--cache", help=argparse.SUPPRESS)  # the tuned runtime's cache folder
    args = parser.parse_args()
    if args.processes < 1 or args.passes < 1:
        parser.error(f"--processes {args.processes} --passes {args.passes}: both must be at least 1")
    if args.runtime:
        print(json.dumps(collect(args.runtime, args.threads, args.passes, args.tune_trials, args.cache)))
        return
    cache = tempfile.mkdtemp(prefix="hwkd-runtimes-")  # tune from nothing, once for all processes
    runs: dict[str, list[dict]] = {runtime: [] for runtime in RUNTIMES}
    try:
        for k in range(args.processes):
            for runtime in RUNTIMES:
                print(f"process {k + 1}/{args.processes}: {runtime}", file=sys.stderr, flush=True)
                done = subprocess.run([sys.executable, __file__, "--runtime", runtime, "--threads", str(args.threads),
                                       "--passes", str(args.passes), "--tune-trials", str(args.tune_trials),
                                       "--cache", cache], stdout=subprocess.PIPE, text=True, check=True)
                runs[runtime].append(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        shutil.rmtree(cache, ignore_errors=True)  # the tuning database of this run only
    measured = {runtime: [min(run["ms"][n] for run in runs[runtime]) for n in range(len(STUDENTS))]
                for runtime in RUNTIMES}
    if args.save:
        Path(args.save).write_text(json.dumps({"students": [label for label, _, _ in STUDENTS], "runs": runs}, indent=1))
    model = model_ms(args.threads)
    import onnxruntime
    import torch
    import tvm

    print(f"\n## Runtimes on this machine, {args.threads} threads, fastest of {args.processes} processes' "
          f"fastest of {args.passes} passes "
          f"(TVM {tvm.__version__}, ONNX Runtime {onnxruntime.__version__}, torch {torch.__version__})\n")
    print("| student | hwkd TVM library ms | blocked ms | tuned ms | ONNX Runtime ms | torch ms | TVM / ORT | "
          "blocked / ORT | tuned / ORT | TVM / torch | host model ms | model / TVM |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, (label, _, _) in enumerate(STUDENTS):
        t, c, u, o, p, m = (measured["tvm"][n], measured["tvm-blocked"][n], measured["tvm-tuned"][n],
                            measured["ort"][n], measured["torch"][n], model[n])
        print(f"| {label} | {t:.2f} | {c:.2f} | {u:.2f} | {o:.2f} | {p:.2f} | {t / o:.2f}x | {c / o:.2f}x | "
              f"{u / o:.2f}x | {t / p:.2f}x | {m:.2f} | {m / t:.2f} |")
    ratios = [measured["tvm"][n] / measured["ort"][n] for n in range(len(STUDENTS))]
    tuned = [measured["tvm-tuned"][n] / measured["ort"][n] for n in range(len(STUDENTS))]
    gain = [measured["tvm"][n] / measured["tvm-tuned"][n] for n in range(len(STUDENTS))]
    layout = [measured["tvm"][n] / measured["tvm-blocked"][n] for n in range(len(STUDENTS))]
    blocked = [measured["tvm-blocked"][n] / measured["ort"][n] for n in range(len(STUDENTS))]
    print(f"\nmedian hwkd TVM / ONNX Runtime: default schedule {statistics.median(ratios):.2f}x (goal: at most "
          f"1.5x), tuned {statistics.median(tuned):.2f}x (goal: at most 1.0x); tuned speed-up over the default "
          f"{statistics.median(gain):.2f}x median ({min(gain):.2f}-{max(gain):.2f}x)")
    print(f"channel-blocked layout: {statistics.median(blocked):.2f}x ONNX Runtime (median), "
          f"{statistics.median(layout):.2f}x faster than the default ({min(layout):.2f}-{max(layout):.2f}x)")
    print("tuned libraries shipped, per process: " + "; ".join(", ".join(run["libraries"]) for run in runs["tvm-tuned"]))
    spread = {runtime: [max(run["ms"][n] for run in runs[runtime]) / min(run["ms"][n] for run in runs[runtime])
                        for n in range(len(STUDENTS))] for runtime in RUNTIMES}
    print("spread over processes (slowest / fastest process, median over students; max): " + ", ".join(
        f"{runtime} {statistics.median(s):.3f} ({max(s):.3f})" for runtime, s in spread.items()))
    budget, later = runs["tvm-tuned"][0], runs["tvm-tuned"][1:]
    print(f"tuning budget: up to {args.tune_trials} schedules per kernel, {budget['schedules']} measured for the "
          f"{len(STUDENTS)} students from an empty database; compiling and tuning took {budget['prepare_s']:.0f} s "
          f"(compiling the default libraries: {runs['tvm'][0]['prepare_s']:.0f} s)" + (
              f"; each later process measured {max(run['schedules'] for run in later)} schedules and took "
              f"{max(run['prepare_s'] for run in later):.0f} s at most" if later else ""))


if __name__ == "__main__":
    main()
