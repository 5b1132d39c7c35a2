"""Facts of the machine hwkd runs on, for the values a profile writes as `auto` (the `host` profile).

Each fact comes with where it came from ("probed: ...", "measured: ...", "fallback: ..."), which
the profile keeps beside the value.
"""

from __future__ import annotations

import functools
import os
import re
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
        freq = psutil.cpu_freq()
        if freq is not None and freq.max:
            return freq.max / 1e3, "probed: psutil.cpu_freq max"
        match = re.search(r"^cpu MHz\s*:\s*([\d.]+)", self.cpuinfo(), re.M)
        if match:
            return float(match.group(1)) / 1e3, "probed: /proc/cpuinfo cpu MHz"
        match = re.search(r"^BogoMIPS\s*:\s*([\d.]+)", self.cpuinfo(), re.M | re.I)
        if match:
            return float(match.group(1)) / 2e3, "probed: /proc/cpuinfo BogoMIPS / 2"
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


@functools.lru_cache(maxsize=1)
def _measured_bandwidth() -> tuple[float, str]:
    """This machine's streaming bandwidth, measured once and kept in the cache dir.

    Measured again at every load, the figure moved 19-25 GB/s between runs of one idle VM and lower
    still beside a busy process, and every memory-bound kernel's cost with it: the same student
    got another `host` latency in each run. Delete the file to measure again."""
    import json
    from datetime import datetime, timezone

    from hwkd.cache import cache_dir
    from hwkd.files import write_atomic

    path = cache_dir() / BANDWIDTH_FILE
    machine = _machine_fingerprint()
    known: dict[str, Any] = {}
    try:
        loaded = json.loads(path.read_text())
        known = loaded if isinstance(loaded, dict) else {}
        entry = known[machine]
        return float(entry["gb_s"]), f"measured: numpy copy of 64 MiB (read + write) on {entry['date']}, kept in {path}"
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not measured on this machine yet, or an unreadable file: measure (and rewrite it)
    gb_s = _copy_bandwidth_gb_s()
    date = datetime.now(timezone.utc).date().isoformat()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps({**known, machine: {"gb_s": gb_s, "date": date}}, indent=1, sort_keys=True))
    except OSError:
        pass  # a read-only cache: the figure is still right for this run
    return gb_s, f"measured: numpy copy of 64 MiB (read + write) on {date}, kept in {path}"


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
