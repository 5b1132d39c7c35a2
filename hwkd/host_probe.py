"""Facts of the machine hwkd runs on, for the values a profile writes as `auto` (the `host` profile).

Each fact comes with where it came from ("probed: ...", "measured: ...", "fallback: ..."), which
the profile keeps beside the value.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil


class HostProbe:
    """Facts of the machine hwkd runs on, for profile values written as `auto`."""

    def __init__(self) -> None:
        self._cpuinfo: str | None = None
        self._mcpu: str | None = None

    def cpuinfo(self) -> str:
        if self._cpuinfo is None:
            try:
                self._cpuinfo = Path("/proc/cpuinfo").read_text()
            except OSError:
                self._cpuinfo = ""
        return self._cpuinfo

    def flags(self) -> set[str]:
        match = re.search(r"^(flags|Features)\s*:\s*(.*)$", self.cpuinfo(), re.M)
        return set(match.group(2).split()) if match else set()

    def value(self, dotted: str) -> tuple[Any, str] | None:
        getter = getattr(self, "_" + dotted.replace(".", "_"), None)
        return getter() if getter else None

    def _cpu_cores(self) -> tuple[int, str]:
        return len(os.sched_getaffinity(0)), "probed: os.sched_getaffinity"

    def _runtime_threads(self) -> tuple[int, str]:
        return len(os.sched_getaffinity(0)), "probed: os.sched_getaffinity"

    def _cpu_clock_ghz(self) -> tuple[float, str]:
        measured = _measured_clock()
        if measured is not None:
            return measured
        freq = psutil.cpu_freq()
        if freq is not None and freq.max:
            return freq.max / 1e3, "probed: psutil.cpu_freq max (measuring the clock failed)"
        match = re.search(r"^cpu MHz\s*:\s*([\d.]+)", self.cpuinfo(), re.M)
        if match:
            return float(match.group(1)) / 1e3, "probed: /proc/cpuinfo cpu MHz (measuring the clock failed)"
        match = re.search(r"^BogoMIPS\s*:\s*([\d.]+)", self.cpuinfo(), re.M | re.I)
        if match:
            return float(match.group(1)) / 2e3, "probed: /proc/cpuinfo BogoMIPS / 2 (measuring the clock failed)"
        return 2.0, "fallback: clock unknown, 2 GHz assumed"

    def _core_table(self, index: int) -> tuple[float, str]:
        mcpu = self.llvm_mcpu() or ""
        if "amx_tile" in self.flags():
            # Only Xeon cores from Sapphire Rapids on have AMX, and all have two 512-bit FMA units,
            # whatever CPU model a hypervisor reports: a VM that named Rocket Lake's model (LLVM
            # 'rocketlake', one 512-bit FMA unit) with AMX flags ran ONNX Runtime's 1x1 convolutions at
            # 60 flops per cycle per core, which one unit cannot (benchmarks/overheads.py --onnxruntime).
            values, source = _SAPPHIRE_RAPIDS
            return values[index], f"probed: amx_tile in /proc/cpuinfo flags (LLVM cpu {mcpu!r}); {source}"
        for prefix, values, source in _X86_CORES:
            if mcpu.startswith(prefix):
                return values[index], f"probed: LLVM cpu {mcpu!r}; {source}"
        return _GENERIC_CORE[index], (f"probed: LLVM cpu {mcpu!r} not in hwkd's table; one vector op of each kind "
                                      "per cycle and a 128-entry reorder buffer assumed")

    def _cpu_fma_per_cycle(self) -> tuple[float, str]:
        return self._core_table(0)

    def _cpu_loads_per_cycle(self) -> tuple[float, str]:
        return self._core_table(1)

    def _cpu_stores_per_cycle(self) -> tuple[float, str]:
        return self._core_table(2)

    def _cpu_fma_latency_cycles(self) -> tuple[float, str]:
        return self._core_table(3)

    def _cpu_reorder_window(self) -> tuple[int, str]:
        value, source = self._core_table(4)
        return int(value), source

    def _cpu_simd_bits(self) -> tuple[int, str]:
        flags = self.flags()
        if "avx512f" in flags:
            return 512, "probed: avx512f in /proc/cpuinfo flags"
        if "avx2" in flags or "avx" in flags:
            return 256, "probed: avx in /proc/cpuinfo flags"
        return 128, "probed: SSE/NEON baseline"

    def _cache_kib(self, level: int) -> tuple[int, str]:
        base = Path("/sys/devices/system/cpu/cpu0/cache")
        for index in sorted(base.glob("index*")) if base.is_dir() else []:
            try:
                lvl = int((index / "level").read_text())
                kind = (index / "type").read_text().strip()
                size = (index / "size").read_text().strip()
            except OSError:
                continue
            if lvl == level and kind in ("Data", "Unified"):
                number = int(re.sub(r"\D", "", size))
                return (number * 1024 if size.endswith("M") else number), f"probed: {index}/size"
        return 0, f"probed: no L{level} cache listed under {base}"

    def _cpu_l1d_kib(self) -> tuple[int, str]:
        return self._cache_kib(1)

    def _cpu_l2_kib(self) -> tuple[int, str]:
        return self._cache_kib(2)

    def _cpu_l3_kib(self) -> tuple[int, str]:
        return self._cache_kib(3)

    def _memory_size_mib(self) -> tuple[int, str]:
        return psutil.virtual_memory().total // 2**20, "probed: psutil.virtual_memory"

    def llvm_mcpu(self) -> str | None:
        """LLVM's name for this CPU, as TVM's bundled LLVM reports it."""
        if self._mcpu is None:
            self._mcpu = _system_cpu() or ""
        return self._mcpu or None

    def _memory_bandwidth_gb_s(self) -> tuple[float, str]:
        return _measured_bandwidth()


@functools.lru_cache(maxsize=1)
def _system_cpu() -> str | None:
    """LLVM's name for this CPU, as TVM's bundled LLVM reports it."""
    try:
        import tvm

        get = tvm.get_global_func("target.llvm_get_system_cpu", allow_missing=True)
        return str(get()) if get is not None else None
    except Exception:  # noqa: BLE001 - probing is best effort; the target then has no mcpu
        return None


BANDWIDTH_FILE = "host/bandwidth.json"  # under the cache dir: machine fingerprint -> measured figure
CLOCK_FILE = "host/clock.json"  # the same for the clock


@functools.lru_cache(maxsize=1)
def _measured_bandwidth() -> tuple[float, str]:
    """This machine's streaming bandwidth, measured once and kept in the cache dir.

    Measured again at every load, the figure moved 19-25 GB/s between runs of one idle VM and lower
    still beside a busy process, and every memory-bound kernel's cost with it: the same student
    got another `host` latency in each run. Delete the file to measure again."""
    kept = _kept_measurement(BANDWIDTH_FILE, "gb_s", _copy_bandwidth_gb_s)
    assert kept is not None  # the copy cannot fail
    gb_s, date, path = kept
    return gb_s, f"measured: numpy copy of 64 MiB (read + write) on {date}, kept in {path}"


@functools.lru_cache(maxsize=1)
def _measured_clock() -> tuple[float, str] | None:
    """The clock this machine's cores run at while all of them are busy, measured once and kept in
    the cache dir; None where it cannot be measured (then the OS's figure is used).

    The OS's figure is the nominal clock, and VMs and boosting cores run well above it: on a 2-core
    Zen 5 VM /proc/cpuinfo said 2.6 GHz while the cores ran 4.5, and every compute-bound cost came
    out 1.5x too slow. Delete the file to measure again, with nothing else running."""
    kept = _kept_measurement(CLOCK_FILE, "ghz", _chain_clock_ghz)
    if kept is None:
        return None
    ghz, date, path = kept
    return ghz, (f"measured: a chain of dependent integer adds and xors on every core "
                 f"({CHAIN_CYCLES / 1e6:.0f}M cycles) on {date}, kept in {path}")


def _kept_measurement(relative: str, unit: str, measure: Callable[[], float | None]) -> tuple[float, str, Path] | None:
    """(value, date measured, file) of a figure measured once per machine and kept in the cache
    dir under `relative`, keyed by machine; `measure()` runs where the file has none (None: failed)."""
    import json
    from datetime import datetime, timezone

    from hwkd.cache import cache_dir
    from hwkd.files import write_atomic

    path = cache_dir() / relative
    machine = _machine_fingerprint()
    known: dict[str, Any] = {}
    try:
        loaded = json.loads(path.read_text())
        known = loaded if isinstance(loaded, dict) else {}
        entry = known[machine]
        return float(entry[unit]), str(entry["date"]), path
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not measured on this machine yet, or an unreadable file: measure (and rewrite it)
    value = measure()
    if value is None:
        return None
    date = datetime.now(timezone.utc).date().isoformat()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps({**known, machine: {unit: value, "date": date}}, indent=1, sort_keys=True))
    except OSError:
        pass  # a read-only cache: the figure is still right for this run
    return value, date, path


def _machine_fingerprint() -> str:
    """What a cache shared by several machines tells them apart by."""
    import platform

    model = re.search(r"model name\s*:\s*(.+)", HostProbe().cpuinfo())
    return (f"{platform.node()}|{model.group(1).strip() if model else platform.processor()}|"
            f"{os.cpu_count()} cpus|{psutil.virtual_memory().total // 2**20} MiB")


def _copy_bandwidth_gb_s() -> float:
    """Streaming copy bandwidth (read + write bytes), best of a few runs."""
    import time

    import numpy as np

    src = np.ones(16 * 2**20, dtype=np.float32)  # 64 MiB, far above any cache here
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(8):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return round(2 * src.nbytes / best / 1e9, 2)


CHAIN_CYCLES = 100_000_000  # per core: 20-50 ms at 2-5 GHz
_CHAIN_LINKS = 2  # dependent integer ops per loop step (an add, then an xor: one cycle each on any core)


def _chain_clock_ghz(threads: int | None = None, cycles: int = CHAIN_CYCLES) -> float | None:
    """Cycles per second of a chain of dependent one-cycle integer ops run on every core at once,
    in a fresh process (its TVM thread pool sized to the cores; this process's pool, sized once,
    stays as its caller will size it). None where the child fails or reports nonsense."""
    import subprocess
    import sys

    threads = threads or len(os.sched_getaffinity(0))
    env = {**os.environ, "TVM_NUM_THREADS": str(threads)}
    try:
        command = [sys.executable, "-m", "hwkd.host_probe", "--chain-clock", str(threads), str(cycles)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=True)
        ghz = float(done.stdout.split()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    return ghz if 0.2 <= ghz <= 8.0 else None


def _run_chain(threads: int, cycles: int = CHAIN_CYCLES) -> float:
    """GHz from the fastest of several runs of the chain (`cycles` long), one per thread, compiled
    with TVM for this CPU."""
    import time

    import numpy as np
    import tvm
    import tvm.tirx  # makes `tvm.script.tirx` importable
    from tvm.script import tirx as T

    steps = cycles // _CHAIN_LINKS

    @T.prim_func
    def chain(x: T.Buffer((threads, 16), "int64"), out: T.Buffer((threads,), "int64")) -> None:  # type: ignore[valid-type]
        T.func_attr({"global_symbol": "chain", "tir.noalias": True})
        for t in T.parallel(threads):
            acc = T.alloc_buffer((1,), "int64", scope="local")
            acc[0] = x[t, 0]
            for i in range(steps):
                # Values read from memory keep LLVM from folding the chain; add then xor cannot
                # be reassociated, so each step waits for the one before: two cycles a step.
                acc[0] = (acc[0] + x[t, i % 16]) ^ x[t, (i + 5) % 16]
            out[t] = acc[0]

    target = {"kind": "llvm", **({"mcpu": mcpu} if (mcpu := _system_cpu()) else {})}
    run = tvm.compile(tvm.IRModule({"chain": chain}), target=tvm.target.Target(target))["chain"]
    x = tvm.runtime.tensor(np.arange(threads * 16, dtype=np.int64).reshape(threads, 16))
    out = tvm.runtime.tensor(np.zeros(threads, dtype=np.int64))
    best = float("inf")
    for _ in range(8):
        start = time.perf_counter()
        run(x, out)
        best = min(best, time.perf_counter() - start)
    return round(steps * _CHAIN_LINKS / best / 1e9, 3)


# Per-core throughput in vector ops of the full SIMD width (fma, loads, stores per cycle), FMA
# latency and reorder-buffer entries, for x86-64 cores the host profile may probe, from the
# vendors' optimization guides.
_Core = tuple[float, float, float, float, float]
_INTEL_XEON = "Intel optimization manual: two 512-bit FMA units on Xeon, two loads and one store per cycle, "
_INTEL_CLIENT = "Intel optimization manual: two 256-bit FMA units, two loads and one store per cycle, "
_AMD_256 = "two 256-bit FMA pipes, two 256-bit loads, one store per cycle, "
_SAPPHIRE_RAPIDS: tuple[_Core, str] = ((2, 2, 1, 4, 512), _INTEL_XEON + "512-entry reorder buffer")
_X86_CORES: list[tuple[str, _Core, str]] = [
    ("znver5", (2, 2, 1, 4, 448),
     "AMD Zen 5 optimization guide: full 512-bit FMA, load and store paths, 448-entry reorder buffer"),
    ("znver4", (1, 1, 0.5, 4, 320),
     "AMD Zen 4 optimization guide: two 256-bit FMA pipes and load paths, one 256-bit store; 512-bit ops use both "
     "halves; 320-entry reorder buffer"),
    ("znver3", (2, 2, 1, 4, 256), "AMD Zen 3 optimization guide: " + _AMD_256 + "256-entry reorder buffer"),
    ("znver2", (2, 2, 1, 5, 224), "AMD Zen 2 optimization guide: " + _AMD_256 + "224-entry reorder buffer"),
    ("sapphirerapids", *_SAPPHIRE_RAPIDS),
    ("icelake-server", (2, 2, 1, 4, 352), _INTEL_XEON + "352-entry reorder buffer"),
    ("cascadelake", (2, 2, 1, 4, 224), _INTEL_XEON + "224-entry reorder buffer"),
    ("skylake-avx512", (2, 2, 1, 4, 224), _INTEL_XEON + "224-entry reorder buffer"),
    ("skylake", (2, 2, 1, 4, 224), _INTEL_CLIENT + "224-entry reorder buffer"),
    ("haswell", (2, 2, 1, 5, 192), _INTEL_CLIENT + "192-entry reorder buffer"),
]
_GENERIC_CORE: _Core = (1.0, 1.0, 1.0, 4.0, 128.0)


# `python -m hwkd.host_probe --chain-clock THREADS CYCLES`: the clock measurement's child process
if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--chain-clock"]:
        print(_run_chain(int(sys.argv[2]), int(sys.argv[3])))
