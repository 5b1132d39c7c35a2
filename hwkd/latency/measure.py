"""Compile a lowered graph with hwkd's schedule and time it, here or on a board over TVM RPC.

The library compiled here is the one `hwkd export` ships: weights are inputs, weight-only kernels
(transposed or reshaped weights) are lifted out and applied once here, so `main` takes the
transformed weights; every fused kernel carries hwkd's CPU schedule. Timing: one warm-up call, then `repeat`
runs of `number` calls each (at least
`min_repeat_ms` long); the result is the median over runs and the spread between the 10th and
90th percentile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwkd.errors import CompileError, MeasureError, error_line
from hwkd.latency.graph_analysis import main_only
from hwkd.latency.lowered import LoweredGraph
from hwkd.latency.schedule import register_tile, schedule_module
from hwkd.profiles import DeviceProfile
from hwkd.threads import size_tvm_pool, tvm_pool_pinned

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Measurement:
    latency_ms: float  # median over runs
    spread_ms: float  # 90th minus 10th percentile of the runs
    runs: int
    where: str  # "local" or "rpc HOST:PORT"


@dataclass(frozen=True)
class TimingPlan:
    number: int = 5
    repeat: int = 7
    min_repeat_ms: int = 20


@dataclass(frozen=True)
class CompiledStudent:
    """A library for the profile's target and the weights its `main` takes after the input."""

    executable: Any  # relax.VMExecutable
    weights: list[np.ndarray]  # weight-only kernels (transposes, reshapes) already applied


def compile_student(lowered: LoweredGraph, params: list[np.ndarray], profile: DeviceProfile,
                    tuned: Mapping[str, Any] | None = None) -> CompiledStudent:
    """Schedule, lift the weight-only kernels out of `main` and compile it for the profile.
    `tuned`: kernels by name that take a tuned schedule (`hwkd.latency.tuning`) instead of hwkd's."""
    size_tvm_pool()  # the weight-only kernels run here, and may start TVM's pool
    from tvm import relax

    target = profile.tvm_target()
    try:
        scheduled = schedule_module(lowered.fused_mod, tuned, register_tile(profile.cpu.simd_bits))
        lifted = relax.transform.LiftTransformParams()(scheduled)
        weights = _transform_weights(lifted, params)
        return CompiledStudent(_compile(main_only(lifted), target), weights)
    except Exception as exc:  # noqa: BLE001 - TVM raises many types
        raise CompileError(f"TVM cannot compile this model for {profile.name}: {error_line(exc)}") from None


def _compile(mod: Any, target: Any) -> Any:
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    with target:
        # Legalization and fusion already ran (hwkd.latency.lowering); running them again would
        # re-fuse scheduled kernels.
        mod = tvm.transform.Sequential(cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target))(mod)
    # "compiled": `main` becomes machine code calling the kernels, not bytecode the VM interprets
    # (loaded and called the same way). Students of many small kernels ran 4-7 % faster
    # (nb201 1x1/skip/pool cell, fbnet k3_e1; paired runs, 2 threads), large ones alike.
    # tvm.compile() no longer takes exec_mode; relax.build() is what it calls.
    return relax.build(mod, target=target, relax_pipeline=None, exec_mode="compiled")


def _transform_weights(lifted: Any, params: list[np.ndarray]) -> list[np.ndarray]:
    """Run the lifted weight-only kernels once, here: they are exact, so the board gets results."""
    import tvm
    from tvm import relax

    names = {gv.name_hint for gv in lifted.functions}
    if "main_transform_params" not in names:
        return list(params)
    only = relax.transform.DeadCodeElimination(entry_functions=["main_transform_params"])(
        tvm.IRModule({gv: f for gv, f in lifted.functions.items() if gv.name_hint != "main"}, attrs=lifted.attrs)
    )
    vm = relax.VirtualMachine(_compile(only, tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    out = vm["main_transform_params"]([tvm.runtime.tensor(p, tvm.cpu()) for p in params])
    return [t.numpy() for t in out]


def measure_local(
    lowered: LoweredGraph,
    params: list[np.ndarray],
    input_shape: tuple[int, ...],
    profile: DeviceProfile,
    plan: TimingPlan = TimingPlan(),
    tuned: Mapping[str, Any] | None = None,
) -> Measurement:

    return measure_compiled(compile_student(lowered, params, profile, tuned), input_shape, profile, plan)


def measure_compiled(
    student: CompiledStudent, input_shape: tuple[int, ...], profile: DeviceProfile, plan: TimingPlan = TimingPlan()
) -> Measurement:
    """Time a library compiled for the profile where the profile runs (here, for `host`)."""
    with Board(profile) as board:
        return board.measure(board.load(student), input_shape, plan)


def measure_rpc(
    lowered: LoweredGraph,
    params: list[np.ndarray],
    input_shape: tuple[int, ...],
    profile: DeviceProfile,
    plan: TimingPlan = TimingPlan(),
    tuned: Mapping[str, Any] | None = None,
) -> Measurement:
    """Cross-compile, upload to the profile's RPC server (or tracker key), time it there."""
    with Board(profile) as board:
        return board.measure(board.load(compile_student(lowered, params, profile, tuned)), input_shape, plan)


@dataclass(frozen=True)
class LoadedStudent:
    """A library loaded where it runs (`Board.load`), with the weights its `main` takes."""

    module: Any
    weights: list[np.ndarray]


class Board:
    """Where libraries are timed: this machine (a profile measured locally) or the profile's board over
    one TVM RPC session. A library is loaded once and can then be timed any number of times, so
    timing candidate libraries alternately costs one upload each, not one per round."""

    def __init__(self, profile: DeviceProfile) -> None:
        self.profile = profile
        self.where = "local"
        self._remote: Any = None
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._uploads = 0

    def __enter__(self) -> Board:
        if self.profile.measure_local:
            return self
        from tvm import rpc

        self.where = check_reachable(self.profile)
        spec = self.profile.rpc
        assert spec is not None  # check_reachable refuses a profile without one
        with self._failures():
            if spec.key:
                tracker = rpc.connect_tracker(spec.host, spec.port)
                self._remote = tracker.request(spec.key, session_timeout=int(spec.timeout_s * 60))
                self.where = f"rpc {spec.key}@{spec.host}:{spec.port}"
            else:
                self._remote = rpc.connect(spec.host, spec.port, session_timeout=int(spec.timeout_s * 60))
        self._folder = tempfile.TemporaryDirectory(prefix="hwkd-rpc-")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._folder is not None:
            self._folder.cleanup()
        self._remote = None

    def load(self, student: CompiledStudent) -> LoadedStudent:
        """`student` where it runs: as it is here, or linked for the board and uploaded."""
        if self._remote is None:
            return LoadedStudent(student.executable, student.weights)
        assert self._folder is not None
        self._uploads += 1
        name = f"student{self._uploads}.so"
        link_library(student, Path(self._folder.name) / name, self.profile)
        with self._failures():
            self._remote.upload(str(Path(self._folder.name) / name))
            return LoadedStudent(self._remote.load_module(name), student.weights)

    def runs_ms(self, student: LoadedStudent, input_shape: tuple[int, ...], plan: TimingPlan = TimingPlan()
                ) -> list[float]:
        """Milliseconds per call of each timed run of `student` with the profile's threads."""
        import tvm

        if self._remote is not None:
            with self._failures():
                device = self._remote.cpu()
                set_pool_threads(self._remote.get_function("runtime.config_threadpool"), self.profile.runtime.threads)
                return _time(student.module, device, student.weights, input_shape, plan,
                             lambda a: tvm.runtime.tensor(a, device))
        size_tvm_pool()
        device = tvm.cpu()
        with tvm_pool_pinned(self.profile.runtime.threads):
            return _time(student.module, device, student.weights, input_shape, plan,
                         lambda a: tvm.runtime.tensor(a, device))

    def measure(self, student: LoadedStudent, input_shape: tuple[int, ...], plan: TimingPlan = TimingPlan()
                ) -> Measurement:
        return self.summary(self.runs_ms(student, input_shape, plan))

    def summary(self, runs_ms: list[float]) -> Measurement:
        """The median and 10-90 % spread of timed runs, as a measurement taken here."""
        return _summary(runs_ms, self.where)

    @contextlib.contextmanager
    def _failures(self) -> Iterator[None]:
        """RPC errors as one line that names the board."""
        try:
            yield
        except MeasureError:
            raise
        except Exception as exc:  # noqa: BLE001 - RPC errors vary
            raise MeasureError(f"measuring on {self.where.removeprefix('rpc ')} failed: {error_line(exc)}") from None


def link_library(student: CompiledStudent, path: Path, profile: DeviceProfile) -> str:
    """Write `student` as a shared library for the profile's target; returns the compiler used."""
    from tvm.support import cc

    compiler = cross_compiler(profile)
    try:
        if compiler is None:
            student.executable.export_library(str(path))
        else:
            student.executable.export_library(str(path), fcompile=cc.cross_compiler(compiler))
    except Exception as exc:  # noqa: BLE001 - compiler failures vary
        hint = f"; install the toolchain ({install_hint(compiler)})" if compiler else ""
        raise CompileError(f"cannot link the library for {profile.name} with {compiler or 'cc'}: "
                           f"{_compiler_error(str(exc))}{hint}") from None
    return compiler or "cc"


def cross_compiler(profile: DeviceProfile) -> str | None:
    """The C compiler that links a library for the profile's target; None for this machine."""
    if profile.rpc is not None and profile.rpc.cross_compiler:
        return profile.rpc.cross_compiler
    triple = str(profile.target.get("mtriple", ""))
    if not triple or triple.split("-")[0] == os.uname().machine:
        return None
    return f"{triple}-gcc"


def toolchain_problem(compiler: str) -> str | None:
    """Why `compiler` cannot link a shared library on this machine, or None when it can.

    A cross gcc without its target's C library (Debian installs `libc6-dev-<arch>-cross` only as
    a recommendation) compiles but cannot link; linking a one-line library finds that out.
    """
    if shutil.which(compiler) is None:
        return f"{compiler} is not installed"
    with tempfile.TemporaryDirectory(prefix="hwkd-cc-") as tmp:
        source = Path(tmp) / "probe.c"
        source.write_text("int hwkd_probe(void) { return 0; }\n")
        try:
            done = subprocess.run([compiler, "-shared", "-fPIC", "-o", str(Path(tmp) / "probe.so"), str(source)],
                                  capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{compiler} cannot run ({exc})"
    if done.returncode != 0:
        return f"{compiler} cannot link a shared library ({_compiler_error(done.stderr)})"
    return None


# Debian's architecture names, for the package of a cross toolchain's C library.
_DEBIAN_ARCH = {"aarch64": "arm64", "arm": "armhf", "riscv64": "riscv64", "x86_64": "amd64", "i686": "i386"}


def install_hint(compiler: str) -> str:
    """The Debian/Ubuntu command that installs a cross compiler named `TRIPLE-gcc` and its C library."""
    triple = compiler.removesuffix("-gcc")
    arch = _DEBIAN_ARCH.get(triple.split("-")[0])
    return f"apt-get install gcc-{triple}" + (f" libc6-dev-{arch}-cross" if arch else "")


def _compiler_error(output: str) -> str:
    """The line of a compiler's output that says what went wrong (not the command line TVM appends)."""
    lines = [line.strip() for line in output.strip().splitlines()
             if line.strip() and not line.strip().startswith(("Compilation error", "Command line"))]
    for line in lines:
        if re.search(r"cannot find|error:|undefined reference|not found", line) and not line.startswith("collect2"):
            return line[:300]
    return lines[0][:300] if lines else "no output"


def check_reachable(profile: DeviceProfile) -> str:
    """'rpc HOST:PORT' of the profile's board, or a one-line MeasureError when it does not answer."""
    spec = profile.rpc
    if spec is None:
        raise MeasureError(f"device {profile.name} has no rpc section; add host and port to measure on a board")
    _check_reachable(spec.host, spec.port, spec.timeout_s, profile.name)
    return f"rpc {spec.host}:{spec.port}"


def _check_reachable(host: str, port: int, timeout_s: float, device: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise MeasureError(
            f"cannot reach the TVM RPC server of {device} at {host}:{port} within {timeout_s:g} s ({reason}); "
            f"start one on the board: python -m tvm.exec.rpc_server --host 0.0.0.0 --port {port}"
        ) from None


def set_pool_threads(config_threadpool: Any, threads: int) -> None:
    """A board's pool over RPC: `threads` workers on its big cores (mode 1). Its calling thread stays
    free to share a worker's core (see `pin_tvm_pool`): TVM's RPC API cannot pin it."""
    config_threadpool(1, threads)


def _time(module: Any, device: Any, params: list[np.ndarray], input_shape: tuple[int, ...], plan: TimingPlan,
          put: Any) -> list[float]:
    from tvm import relax

    vm = relax.VirtualMachine(module, device)
    weights = [put(p) for p in params]
    x = put(np.random.default_rng(0).standard_normal(input_shape).astype(np.float32))
    vm["main"](x, *weights)  # warm-up: first-touch of memory, thread pool start
    timer = vm.time_evaluator("main", device, number=plan.number, repeat=plan.repeat, min_repeat_ms=plan.min_repeat_ms)
    result = timer(x, *weights)
    return [float(r) * 1e3 for r in result.results]


def _summary(runs_ms: list[float], where: str) -> Measurement:
    ordered = sorted(runs_ms)
    low = ordered[int(0.1 * (len(ordered) - 1))]
    high = ordered[int(round(0.9 * (len(ordered) - 1)))]
    return Measurement(statistics.median(ordered), high - low, len(ordered), where)
