"""How hwkd's threads share the cores: each process runs on the cores it was given (its CPU
affinity mask, split between `--workers`), and uses only those that nobody else keeps busy.

Measured cause (benchmarks/workers.py, 2 cores): torch's OpenMP threads spin at the end of each
parallel region waiting for each other. When another process holds one of the cores, every
region waits for the thread that is not running, and a brief distillation of a small student took
3.5-3.8x as long beside one busy loop (7-20x was seen beside heavier work). A passive wait policy
cut that to 1.7x but made the same distillation 30 % slower alone; one thread is not slowed at
all by the neighbour. So before each brief distillation and each teacher epoch, hwkd counts the
cores of its mask that other processes keep busy and sets torch's threads to the rest.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

BUSY_SAMPLE_S = 0.1  # how long the cores' load is sampled before a piece of training
BUSY_PERCENT = 50.0  # a core this busy (by others: hwkd samples while it is idle) is taken


def available_cores() -> list[int]:
    """The cores this process may run on (its CPU affinity mask)."""
    return sorted(os.sched_getaffinity(0))


def split_cores(cores: list[int], workers: int) -> list[list[int]]:
    """Cores for each of `workers` processes: disjoint while there are enough, shared round-robin
    (one each) when there are more workers than cores."""
    if workers <= len(cores):
        return [cores[i::workers] for i in range(workers)]
    return [[cores[i % len(cores)]] for i in range(workers)]


def use_cores(cores: list[int]) -> None:
    """Run this process on `cores` only, with torch's and TVM's pools sized to them."""
    import torch

    os.sched_setaffinity(0, cores)
    torch.set_num_threads(len(cores))
    os.environ["TVM_NUM_THREADS"] = str(len(cores))


def size_tvm_pool() -> None:
    """Let TVM's thread pool have a worker for every core of this process's mask.

    TVM sizes its pool once, when it first runs a parallel loop, to `TVM_NUM_THREADS` or else half
    the hardware threads on x86 (it assumes hyper-threading): on a 2-core VM that is one thread, and
    `runtime.config_threadpool` cannot grow it later, so every library ran on one core whatever the
    profile's thread count said (measured: a 2-thread run used 1.0 core-second per second). Call
    before TVM runs anything parallel; a value set by the user or by `use_cores` is kept.
    """
    os.environ.setdefault("TVM_NUM_THREADS", str(len(available_cores())))


# TVM's affinity modes (src/runtime/threading_backend.cc): one worker pinned per listed core
ONE_CORE_PER_THREAD = -2


def fastest_first(cores: list[int]) -> list[int]:
    """`cores` by their maximum clock, fastest first, as TVM orders them for its "big cores" mode
    (equal clocks, or none readable, keep their order)."""
    def max_khz(core: int) -> int:
        try:
            return int(open(f"/sys/devices/system/cpu/cpu{core}/cpufreq/cpuinfo_max_freq").read())
        except (OSError, ValueError):
            return 0

    return sorted(cores, key=lambda core: (-max_khz(core), core))


def pin_tvm_pool(threads: int) -> None:
    """Give TVM's thread pool `threads` workers on this process's cores, fastest first, one core
    each, and pin the calling thread to the first: the core no worker is pinned to. The caller
    restores its own affinity afterwards.

    TVM runs task 0 of every parallel loop on the calling thread and pins its workers to the other
    cores, but lets the calling thread run on all of them. When Linux leaves it on a worker's core
    the two take turns: on the 2-core VM a 0.21 ms library read 0.50-0.55 ms for seconds at a time
    after MetaSchedule's kernel tuning, as it does with the calling thread put there on purpose
    (1.95x over six students, benchmarks/pool_pinning.py)."""
    import tvm

    cores = fastest_first(available_cores())
    tvm.get_global_func("runtime.config_threadpool")(ONE_CORE_PER_THREAD, threads, [str(core) for core in cores])
    os.sched_setaffinity(0, cores[:1])


@contextmanager
def tvm_pool_pinned(threads: int) -> Iterator[None]:
    """`pin_tvm_pool` for a while, then this thread back on all the cores it had: threads started
    later (torch's, ONNX Runtime's) inherit its mask."""
    cores = os.sched_getaffinity(0)
    try:
        pin_tvm_pool(threads)
        yield
    finally:
        os.sched_setaffinity(0, cores)


@contextmanager
def on_cores(cores: list[int]) -> Iterator[None]:
    """`use_cores(cores)` for a while (the parent's share as a worker), then back to all it had."""
    import torch

    before, threads, tvm_threads = available_cores(), torch.get_num_threads(), os.environ.get("TVM_NUM_THREADS")
    use_cores(cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
        torch.set_num_threads(threads)
        if tvm_threads is None:
            os.environ.pop("TVM_NUM_THREADS", None)
        else:
            os.environ["TVM_NUM_THREADS"] = tvm_threads


def free_cores(cores: list[int], sample_s: float = BUSY_SAMPLE_S) -> int:
    """How many of `cores` no other process keeps busy (sampled now, while this process is idle)."""
    import psutil

    load = psutil.cpu_percent(interval=sample_s, percpu=True)
    busy = sum(1 for core in cores if core < len(load) and load[core] >= BUSY_PERCENT)
    return len(cores) - busy


def fit_threads() -> int:
    """Set torch's threads to this process's cores that are free now (at least one); returns it.

    `$HWKD_THREADS` (or `OMP_NUM_THREADS`) fixes the count instead, for reproducible timing."""
    import torch

    cores = available_cores()
    fixed = os.environ.get("HWKD_THREADS") or os.environ.get("OMP_NUM_THREADS")
    if fixed and fixed.isdigit() and int(fixed) > 0:
        threads = min(int(fixed), len(cores))  # never more threads than the cores this process was given
    else:
        threads = max(1, free_cores(cores))
    if threads != torch.get_num_threads():
        log.debug("torch threads: %d -> %d (cores free of other work)", torch.get_num_threads(), threads)
        torch.set_num_threads(threads)
    return threads
