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

Each runtime runs in its own process (their thread pools would compete), all five alive at once and
taking turns: every round times each student in every runtime, one after another, so the runtimes a
ratio compares ran seconds apart. A shared VM has slow spells: on the 2-core VM the same TVM library,
timed every half second, ran 0.88 ms for a while, then 1.40 ms for a few seconds (ONNX Runtime's
times jumped alike), and spells of several minutes have made every runtime 1.3-1.6x slower at once.
Timed in turns, every runtime meets the same spells, and its fastest round is its least disturbed
one: the milliseconds and ratios in the table are each runtime's fastest of `--rounds` rounds. The
median over rounds of the ratio within a round is printed too; it is not the headline because spells
do not slow runtimes alike (benchmarks/results/runtimes.json: fbnet-imagenet's tuned / ONNX Runtime
is 1.03x by fastest rounds and 1.13x by the median of rounds, whose quartiles span 1.06-1.14).
Within a round, every runtime takes the fastest of 7 runs of at least 20 ms (TVM's time_evaluator
for the libraries; the same loop for ONNX Runtime and torch), and the order of the runtimes turns
each round. Between two runtimes the benchmark waits until the last one's process is idle: TVM's
pool threads spin after a call (`Worker.wait_idle`). The tuned runtime tunes before the rounds, from an
empty tuning database (a temporary cache dir; the time tuning took and the schedules it measured are
printed: that is the budget). It also prints the `host` cost model's figure beside hwkd's library.
`--save` writes every round's figures; `--load` prints the tables of a saved run again. Run it with
nothing else on the machine.

    python benchmarks/runtimes.py [--threads 2] [--rounds 16] [--tune-trials 7] [--save F | --load F]
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

    def runs_ms(self) -> list[float]:
        import torch

        with torch.inference_mode():
            for _ in range(3):
                self.module(self.x)
            runs = []
            for _ in range(7):  # as TVM's time_evaluator: 7 runs of at least 20 ms
                start, calls = time.perf_counter(), 0
                while time.perf_counter() - start < 0.02:
                    self.module(self.x)
                    calls += 1
                runs.append((time.perf_counter() - start) / calls * 1e3)
        return runs


def serve(runtime: str, threads: int, tune_trials: int, cache: str) -> None:
    """A worker: compile (and tune) every student for `runtime`, say so in one JSON line, then answer
    each student index read from stdin with that student's runs in ms, until stdin closes."""
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
    print(file=sys.stderr)
    tunings = [r.tuning for r in runners if isinstance(r, TvmRunner) and r.tuning is not None]
    print(json.dumps({"prepare_s": time.perf_counter() - started,
                      "schedules": sum(t.to_json()["variants_measured_now"] for t in tunings),
                      "libraries": [t.library for t in tunings]}), flush=True)
    for line in sys.stdin:
        print(json.dumps(runners[int(line)].runs_ms()), flush=True)


class Worker:
    """A `serve` process for one runtime, asked for one student's runs at a time."""

    def __init__(self, runtime: str, threads: int, tune_trials: int, cache: str) -> None:
        self.runtime = runtime
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--runtime", runtime, "--threads", str(threads),
             "--tune-trials", str(tune_trials), "--cache", cache],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ready = json.loads(self._line())

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the {self.runtime} worker ended with code {self.process.wait()} (its error is above)")
        return line

    def runs_ms(self, student: int) -> list[float]:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{student}\n")
        self.process.stdin.flush()
        return json.loads(self._line())

    def wait_idle(self, quiet_s: float = 0.05, limit_s: float = 3.0) -> None:
        """Return once this worker has used no CPU for `quiet_s`. TVM's pool threads spin on
        sched_yield after a call (300000 times by default): on the 2-core VM they kept a core busy
        for 100-150 ms, and ONNX Runtime timed 50 ms after a TVM library read 3.4-4.1 ms in most
        rounds against 1.06 in the others (nb201 all 3x3)."""
        def cpu_ticks() -> int:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime + stime, all threads

        if not Path("/proc/self/stat").exists():  # not Linux: a fixed pause instead
            time.sleep(0.5)
            return
        started, last = time.perf_counter(), cpu_ticks()
        while time.perf_counter() - started < limit_s:
            time.sleep(quiet_s)
            now = cpu_ticks()
            if now == last:
                return
            last = now

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait()


def measure(threads: int, rounds: int, tune_trials: int) -> dict[str, object]:
    """Every round's fastest run per runtime and student: {"rounds": {runtime: [[ms per student] per
    round]}, "ready": {runtime: its worker's preparation}}."""
    cache = tempfile.mkdtemp(prefix="hwkd-runtimes-")  # tune from nothing
    workers: list[Worker] = []
    try:
        for runtime in RUNTIMES:  # one after another: tuning is timed too, and must run alone
            print(f"preparing {runtime}", file=sys.stderr, flush=True)
            workers.append(Worker(runtime, threads, tune_trials, cache))
        table = {w.runtime: [[0.0] * len(STUDENTS) for _ in range(rounds)] for w in workers}
        for r in range(rounds):
            turn = workers[r % len(workers):] + workers[:r % len(workers)]
            for n in range(len(STUDENTS)):
                print(f"\r  round {r + 1}/{rounds}, student {n + 1}/{len(STUDENTS)}   ", end="",
                      file=sys.stderr, flush=True)
                for worker in turn:
                    table[worker.runtime][r][n] = min(worker.runs_ms(n))
                    worker.wait_idle()  # its threads' spinning would slow the next runtime
        print(file=sys.stderr)
        return {"students": [label for label, _, _ in STUDENTS], "threads": threads, "tune_trials": tune_trials,
                "rounds": table, "ready": {w.runtime: w.ready for w in workers}}
    finally:
        for worker in workers:
            worker.close()
        shutil.rmtree(cache, ignore_errors=True)  # the tuning database of this run only


def model_ms(threads: int) -> list[float]:
    from hwkd.latency.estimator import Estimator
    from hwkd.profiles import load_profile
    from hwkd.spaces import load_space

    estimator = Estimator(load_profile("host").with_threads(threads), "model")
    return [estimator.estimate_arch(load_space(s), arch).latency_ms for _, s, arch in STUDENTS]


def paired(run: dict, runtime: str, base: str, student: int) -> list[float]:
    """`runtime` / `base` in each round, for one student."""
    return [a[student] / b[student] for a, b in zip(run["rounds"][runtime], run["rounds"][base])]


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def report(run: dict, model: list[float]) -> None:
    students, rounds = run["students"], run["rounds"]
    fastest = {rt: [min(r[n] for r in rounds[rt]) for n in range(len(students))] for rt in RUNTIMES}

    def ratio(rt: str, base: str = "ort") -> list[float]:
        return [fastest[rt][n] / fastest[base][n] for n in range(len(students))]

    to_ort = {rt: ratio(rt) for rt in RUNTIMES}
    versions = run["versions"]
    print(f"TVM {versions['tvm']}, ONNX Runtime {versions['onnxruntime']}, torch {versions['torch']}")
    print(f"\n## Runtimes on this machine, {run['threads']} threads, fastest of {len(rounds['ort'])} rounds in turns\n")
    print("| student | hwkd TVM library ms | blocked ms | tuned ms | ONNX Runtime ms | torch ms | TVM / ORT | "
          "blocked / ORT | tuned / ORT | TVM / torch | host model ms | model / TVM |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, label in enumerate(students):
        cells = [f"{fastest[rt][n]:.2f}" for rt in RUNTIMES]
        cells += [f"{to_ort[rt][n]:.2f}x" for rt in ("tvm", "tvm-blocked", "tvm-tuned")]
        cells += [f"{fastest['tvm'][n] / fastest['torch'][n]:.2f}x", f"{model[n]:.2f}",
                  f"{model[n] / fastest['tvm'][n]:.2f}"]
        print(f"| {label} | " + " | ".join(cells) + " |")
    med = {rt: statistics.median(to_ort[rt]) for rt in RUNTIMES}
    gain = ratio("tvm", "tvm-tuned")
    print(f"\nmedian over students, hwkd TVM / ONNX Runtime: default schedule {med['tvm']:.2f}x (goal: at most 1.5x), "
          f"blocked untuned {med['tvm-blocked']:.2f}x, tuned {med['tvm-tuned']:.3f}x (goal: at most 1.0x); tuned "
          f"speed-up over the default {statistics.median(gain):.2f}x median ({min(gain):.2f}-{max(gain):.2f}x)")
    pairs = [paired(run, "tvm-tuned", "ort", n) for n in range(len(students))]
    print("tuned / ONNX Runtime within each round, per student: quartiles over rounds (q1 median q3) and the rounds "
          "it was faster: " + "; ".join(f"{q[0]:.3f} {q[1]:.3f} {q[2]:.3f} ({sum(v < 1 for v in vs)}/{len(vs)})"
                                      for vs in pairs for q in [quartiles(vs)])
          + f"; median of the medians {statistics.median(statistics.median(vs) for vs in pairs):.3f}x")
    spread = {rt: [max(r[n] for r in rounds[rt]) / min(r[n] for r in rounds[rt]) for n in range(len(students))]
              for rt in RUNTIMES}
    print("slowest / fastest round (median over students; max): " + ", ".join(
        f"{rt} {statistics.median(s):.2f} ({max(s):.2f})" for rt, s in spread.items()))
    ready = run["ready"]
    print("tuned libraries shipped: " + ", ".join(ready["tvm-tuned"]["libraries"]))
    print(f"tuning budget: up to {run['tune_trials']} schedules per kernel, {ready['tvm-tuned']['schedules']} measured "
          f"for the {len(students)} students from an empty database; compiling and tuning took "
          f"{ready['tvm-tuned']['prepare_s']:.0f} s (compiling the default libraries: {ready['tvm']['prepare_s']:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=16, help="rounds of every student in every runtime (default 16)")
    parser.add_argument("--save", help="write every round's figures to this JSON file")
    parser.add_argument("--load", help="print the tables of a run saved with --save, measuring nothing")
    parser.add_argument("--tune-trials", type=int, default=DEFAULT_VARIANTS,
                        help=f"schedules measured per kernel for tvm-tuned (default {DEFAULT_VARIANTS})")
    parser.add_argument("--runtime", choices=RUNTIMES, help=argparse.SUPPRESS)  # a worker process
    parser.add_argument("--cache", help=argparse.SUPPRESS)  # the tuned worker's cache folder
    args = parser.parse_args()
    if args.runtime:
        serve(args.runtime, args.threads, args.tune_trials, args.cache)
        return
    if args.load:
        if not Path(args.load).is_file():
            parser.error(f"--load {args.load}: no such file (a run saved with --save)")
        run = json.loads(Path(args.load).read_text())
        report(run, run["model_ms"])
        return
    if args.rounds < 4:
        parser.error(f"--rounds {args.rounds}: at least 4 (the ratios' quartiles need them)")
    run = measure(args.threads, args.rounds, args.tune_trials)
    run["model_ms"] = model_ms(args.threads)
    import onnxruntime
    import torch
    import tvm

    run["versions"] = {"tvm": tvm.__version__, "onnxruntime": onnxruntime.__version__, "torch": torch.__version__}
    if args.save:
        Path(args.save).write_text(json.dumps(run, indent=1))
    report(run, run["model_ms"])


if __name__ == "__main__":
    main()
