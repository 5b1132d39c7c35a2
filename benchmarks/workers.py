"""Benchmark of hwkd beside other work: workers on one study, and a brief distillation next to a
CPU-bound neighbour.

Prints, in one run on this machine:
1. trials per hour of the default search (embedded data, nb201-widths, rpi4 cost model, the
   default teacher cached) with one worker and with `--workers 2` on the same cores, each on a
   fresh study with the same seed (goal: at least 1.3x);
2. the seconds of one brief distillation (the default 200 steps of a middle student) alone and
   beside one other CPU-bound process (a busy loop): with two threads as before, with OpenMP's
   passive wait policy, with one thread, and with hwkd's threads fitted to the cores others leave
   free (goal: at most 2.5x slower beside the neighbour; it was 7-20x).

    python benchmarks/workers.py [--trials 16] [--part 1,2]

Each measurement runs in a process of its own, so the thread settings apply from the start.
Run it while nothing else runs: it makes its own contention and measures nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_BRIEF_JOB = """
import json, sys, time, torch
from hwkd.data import load_dataset
from hwkd.distillation.brief import brief_distill, brief_subset
from hwkd.distillation.config import BriefConfig
from hwkd.spaces import load_space
data = load_dataset("embedded")
config = BriefConfig()
subset = brief_subset(data, config)
logits = torch.randn(len(subset.train), data.num_classes)  # the teacher's outputs: only their shape matters here
space = load_space("nb201-widths")
torch.manual_seed(0)
student = space.build("C12:|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
                      data.num_classes, data.input_shape)
start = time.perf_counter()
brief_distill(student, subset, logits, config, torch.device("cpu"))
print(json.dumps({"seconds": time.perf_counter() - start, "threads": torch.get_num_threads()}))
"""

_BUSY = "import time\nend = time.monotonic() + 600\nwhile time.monotonic() < end:\n    pass\n"


def brief_seconds(env: dict[str, str], neighbour: bool) -> tuple[float, int]:
    """Seconds of one brief distillation in a fresh process, and the threads it used."""
    busy = subprocess.Popen([sys.executable, "-c", _BUSY]) if neighbour else None
    job = _BRIEF_JOB
    try:
        time.sleep(0.5 if busy else 0)
        out = subprocess.run([sys.executable, "-c", job], env=env, capture_output=True, text=True, check=True)
    finally:
        if busy:
            busy.kill()
            busy.wait()
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return float(result["seconds"]), int(result["threads"])


def part_contention() -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "KMP_"))}
    settings = [  # (name, environment)
        ("2 threads, OpenMP spins (before)", {**base, "HWKD_THREADS": "2"}),
        ("2 threads, OMP_WAIT_POLICY=PASSIVE", {**base, "HWKD_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}),
        ("1 thread", {**base, "HWKD_THREADS": "1"}),
        ("hwkd: threads = cores free of others", base),
    ]
    print("\n2. one brief distillation (200 steps x 64 images, C12 middle student), alone and beside a busy loop")
    print(f"{'threads setting':<40} {'threads':>9} {'alone s':>8} {'beside s':>9} {'slowdown':>9}")
    for name, env in settings:
        alone, threads_alone = brief_seconds(env, False)
        beside, threads_beside = brief_seconds(env, True)
        print(f"{name:<40} {threads_alone:>5}/{threads_beside:<3} {alone:>8.1f} {beside:>9.1f} {beside / alone:>8.2f}x",
              flush=True)


def search_seconds(workers: int, trials: int, folder: Path) -> float:
    command = ["hwkd", "search", "--device", "rpi4", "--trials", str(trials), "--run-dir", str(folder)]
    if workers > 1:
        command += ["--workers", str(workers)]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def part_workers(trials: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp) / "warm"  # trains and caches the default teacher, if it is not cached yet
        subprocess.run(["hwkd", "search", "--device", "rpi4", "--trials", "1", "--run-dir", str(warm)], check=True,
                       capture_output=True)
        print(f"\n1. the default search, {trials} trials on a fresh study, teacher cached ({os.cpu_count()} cores)")
        print(f"{'workers':>7} {'seconds':>8} {'trials/hour':>12} {'ratio':>6}")
        base = None
        for workers in (1, 2):
            seconds = search_seconds(workers, trials, Path(tmp) / f"w{workers}")
            rate = trials * 3600 / seconds
            base = base or rate
            print(f"{workers:>7} {seconds:>8.0f} {rate:>12.0f} {rate / base:>5.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--part", default="1,2")
    args = parser.parse_args()
    parts = {p.strip() for p in args.part.split(",")}
    if "1" in parts:
        part_workers(args.trials)
    if "2" in parts:
        part_contention()


if __name__ == "__main__":
    main()
