"""Benchmark of the code hwkd compiles: its TVM library against ONNX Runtime and torch, same students,
same threads, side by side on this machine.

For the students of the runtime issue (NB201 cells of 3x3 convolutions and of cheap operations,
FBNet with every block alike, and FBNet at ImageNet resolution), it times three runtimes:

- `tvm`: the library `hwkd export` / `hwkd estimate --device host --latency-source measured`
  compiles (hwkd's default schedule), timed as `hwkd estimate` times it;
- `ort`: ONNX Runtime on the ONNX file `hwkd export` writes, CPU provider;
- `torch`: the eager network, channels-last, `torch.inference_mode`.

Each runtime is measured in its own process (their thread pools would compete), every student
`--passes` times in interleaved passes; the fastest pass is the latency. It also prints the `host`
cost model's figure beside hwkd's library. Run it with nothing else on the machine.

    python benchmarks/runtimes.py [--threads 2] [--passes 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

RUNTIMES = ("tvm", "ort", "torch")
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


def collect(runtime: str, threads: int, passes: int) -> list[float]:
    """Fastest of `passes` interleaved passes over STUDENTS, in ms, measured in this process."""
    from calibrate import OrtRunner, TvmRunner

    from hwkd.profiles import load_profile
    from hwkd.spaces import load_space

    host = load_profile("host").with_threads(threads)
    runners = []
    for n, (_, space_name, arch) in enumerate(STUDENTS, start=1):
        print(f"\r  compiling for {runtime}: {n}/{len(STUDENTS)}   ", end="", file=sys.stderr, flush=True)
        space = load_space(space_name)
        module = space.build(arch, 10, space.default_input_shape).eval()
        shape = space.default_input_shape
        runners.append(OrtRunner(module, shape, threads) if runtime == "ort" else
                       TorchRunner(module, shape, threads) if runtime == "torch" else TvmRunner(module, shape, host))
    times: list[list[float]] = [[] for _ in runners]
    for p in range(passes):
        for n, runner in enumerate(runners):
            print(f"\r  timing {runtime}: pass {p + 1}/{passes}, {n + 1}/{len(runners)}   ", end="",
                  file=sys.stderr, flush=True)
            times[n].append(runner.time_ms())
    print(file=sys.stderr)
    return [min(t) for t in times]


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
    parser.add_argument("--runtime", choices=RUNTIMES, help=argparse.SUPPRESS)  # one runtime, in a child process
    args = parser.parse_args()
    if args.runtime:
        print(json.dumps(collect(args.runtime, args.threads, args.passes)))
        return
    measured = {}
    for runtime in RUNTIMES:
        done = subprocess.run([sys.executable, __file__, "--runtime", runtime, "--threads", str(args.threads),
                               "--passes", str(args.passes)], stdout=subprocess.PIPE, text=True, check=True)
        measured[runtime] = json.loads(done.stdout.strip().splitlines()[-1])
    model = model_ms(args.threads)
    import onnxruntime
    import torch
    import tvm

    print(f"\n## Runtimes on this machine, {args.threads} threads, fastest of {args.passes} passes "
          f"(TVM {tvm.__version__}, ONNX Runtime {onnxruntime.__version__}, torch {torch.__version__})\n")
    print("| student | hwkd TVM library ms | ONNX Runtime ms | torch ms | TVM / ORT | TVM / torch | "
          "host model ms | model / TVM |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for n, (label, _, _) in enumerate(STUDENTS):
        t, o, p, m = measured["tvm"][n], measured["ort"][n], measured["torch"][n], model[n]
        print(f"| {label} | {t:.2f} | {o:.2f} | {p:.2f} | {t / o:.2f}x | {t / p:.2f}x | {m:.2f} | {m / t:.2f} |")
    ratios = [measured["tvm"][n] / measured["ort"][n] for n in range(len(STUDENTS))]
    print(f"\nmedian hwkd TVM / ONNX Runtime: {statistics.median(ratios):.2f}x (goal of the runtime issue: "
          "at most 1.5x with the default schedule; tuning is not built yet)")


if __name__ == "__main__":
    main()
