"""Latency, memory, MACs and parameters of students on a device: the `hwkd estimate` contract.

`Estimator` imports a student into TVM Relax, lowers it as TVM's build does, and takes:
- `latency_ms` from the profile's cost model (`source="model"`) or from running the compiled
  library (`source="measured"`: here for `host`, over TVM RPC for a profile with `rpc`);
- `peak_memory_bytes` from TVM's static memory plan, `params_bytes` from the weights, `macs`
  from the graph's convolutions and matrix products.
Results are cached by architecture id and by the fused graph's structure; kernel descriptions and
legalized operators are cached inside the `Lowerer`; lowered students are also kept on disk
(`hwkd.latency.lowered_cache`), so a model estimate of a student lowered before, in any process,
compiles nothing.

With the onnxruntime cost model (`cost_model.model: onnxruntime`) the estimate is of the student
as ONNX Runtime runs the exported ONNX file: the nodes it runs, with their shapes, are taken once
per student (from ONNX Runtime itself, `hwkd.latency.onnxruntime_graph`) and kept beside the
lowered students; such a profile is never measured with TVM, which would time another runtime.

Every estimate says how far to trust it: `calibrated` (the profile was fitted to measurements of
the board by `hwkd calibrate`) and `expected_error_pct` (that fit's leave-one-out median error;
None for an uncalibrated profile, whose error nobody measured, for a calibration fitted to another
version of the cost model or schedule, which warns, and for a measured latency).
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from torch import nn

from hwkd.errors import HwkdError
from hwkd.files import sha256_file
from hwkd.latency.calibration import stale_calibration
from hwkd.latency.cost_model import latency_ms as model_latency_ms
from hwkd.latency.lowered import LoweredGraph
from hwkd.latency.lowered_cache import LoweredCache, graph_key
from hwkd.latency.lowering import Lowerer, gc_paused
from hwkd.latency.measure import Measurement, TimingPlan, measure_local, measure_rpc
from hwkd.latency.onnxruntime_graph import RuntimeNode, runtime_nodes, student_onnx
from hwkd.latency.relax_import import RelaxGraph, onnx_to_relax, torch_to_relax
from hwkd.latency.schedule import register_tile
from hwkd.latency.tuning import TuningPlan, tune_student
from hwkd.profiles import DeviceProfile
from hwkd.spaces.base import SearchSpace

log = logging.getLogger(__name__)

LatencySource = Literal["auto", "model", "measured"]


@dataclass(frozen=True)
class Estimate:
    arch: str | None  # the architecture id, for students of a space
    onnx: str | None  # the file, for ONNX models
    latency_ms: float
    source: str  # "model" or "measured"
    model_latency_ms: float  # the cost model's figure, also when `latency_ms` was measured
    latency_spread_ms: float | None  # 10-90 percentile spread of measured runs
    peak_memory_bytes: int
    params_bytes: int
    macs: int
    kernels: int
    device: str
    threads: int
    measured_on: str | None  # "local" or "rpc HOST:PORT"
    calibrated: bool  # the profile's constants were fitted to measurements of the board
    expected_error_pct: float | None  # median relative error to expect; None when unknown or measured
    tuned_kernels: int | None = None  # with tuning: kernels whose measured-fastest schedule replaced hwkd's
    layout: str | None = None  # with tuning: the activation layout of the library measured ("NCHW", "NCHW16c")

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        if self.arch is None:
            del row["arch"]
        if self.onnx is None:
            del row["onnx"]
        return row


@dataclass(frozen=True)
class _GraphResult:
    lowered: LoweredGraph
    model_ms: float
    measurement: Measurement | None
    tuned_kernels: int | None = None
    layout: str | None = None


class Estimator:
    def __init__(
        self,
        profile: DeviceProfile,
        latency_source: LatencySource = "auto",
        timing: TimingPlan = TimingPlan(),  # noqa: B008 - frozen: one shared default is safe
        disk_cache: LoweredCache | None = None,
        tuning: TuningPlan | None = None,
    ) -> None:
        calibration = profile.calibration
        if latency_source == "measured" and calibration is not None and calibration.runtime != "tvm":
            raise HwkdError(
                f"device {profile.name} is calibrated to {calibration.runtime}, so TVM cannot measure what it "
                f"predicts (use --latency-source model, or measure with --device {calibration.base_profile})"
            )
        if latency_source == "measured" and profile.cost.model == "onnxruntime":
            raise HwkdError(f"device {profile.name} models ONNX Runtime (cost_model.model: onnxruntime), so TVM "
                            "cannot measure what it predicts (use --latency-source model)")
        if latency_source == "measured" and not profile.can_measure:
            raise HwkdError(
                f"device {profile.name} cannot be measured: it has no rpc section and is not the host "
                "(use --latency-source model, or add rpc: {host, port} to its profile)"
            )
        if tuning is not None and latency_source != "measured":
            raise HwkdError("tuning needs --latency-source measured: it measures the kernels where the student runs")
        self.profile = profile
        self.stale_calibration = stale_calibration(profile)
        if self.stale_calibration:
            log.warning("%s", self.stale_calibration)
        self.tuning = tuning
        self.measure = latency_source == "measured" or (latency_source == "auto" and profile.can_measure)
        self.timing = timing
        self.lowerer = Lowerer(register_tile(profile.cpu.simd_bits))
        self.disk_cache = disk_cache if disk_cache is not None else LoweredCache()
        self._by_structure: dict[tuple[int, tuple[RuntimeNode, ...]], _GraphResult] = {}
        self._by_arch: dict[tuple[str, str, tuple[int, ...], int], Estimate] = {}
        self._lowered: dict[str, LoweredGraph] = {}
        self._nodes: dict[str, tuple[RuntimeNode, ...]] = {}

    def estimate_arch(
        self, space: SearchSpace, arch: str, input_shape: tuple[int, ...] | None = None, num_classes: int = 10
    ) -> Estimate:
        canonical = space.parse(arch)
        shape = tuple(input_shape or space.default_input_shape)
        key = (space.name, canonical, shape, num_classes)
        cached = self._by_arch.get(key)
        if cached is not None:
            return cached
        if self.measure:
            module = space.build(canonical, num_classes, shape)
            estimate = self._estimate(torch_to_relax(module, shape), arch=canonical)
        else:
            lowered = self.lowered_arch(space, canonical, shape, num_classes)
            nodes = self.runtime_nodes_arch(space, canonical, shape, num_classes)
            estimate = self._result_estimate(lowered, self._result(lowered, nodes=nodes), arch=canonical)
        self._by_arch[key] = estimate
        return estimate

    def model_estimate(
        self, space: SearchSpace, arch: str, input_shape: tuple[int, ...] | None = None, num_classes: int = 10
    ) -> Estimate:
        """The cost model's estimate of `arch`, even where this estimator measures: no compile, no board,
        so a search can cost many candidates before it chooses which to try."""
        canonical = space.parse(arch)
        lowered = self.lowered_arch(space, canonical, input_shape, num_classes)
        nodes = self.runtime_nodes_arch(space, canonical, input_shape, num_classes)
        result = _GraphResult(lowered, model_latency_ms(lowered.kernels, self.profile, nodes), None)
        return self._result_estimate(lowered, result, arch=canonical)

    def lowered_arch(
        self, space: SearchSpace, arch: str, input_shape: tuple[int, ...] | None = None, num_classes: int = 10
    ) -> LoweredGraph:
        """The student's kernels, from memory, the disk cache, or TVM (then cached in both)."""
        key, canonical, shape = _arch_key(space, arch, input_shape, num_classes)
        return self._lowered_by_key(key, lambda: torch_to_relax(space.build(canonical, num_classes, shape), shape))

    def runtime_nodes_arch(self, space: SearchSpace, arch: str, input_shape: tuple[int, ...] | None = None,
                           num_classes: int = 10) -> tuple[RuntimeNode, ...]:
        """Nodes ONNX Runtime runs of the student, for the onnxruntime cost model (none for the others)."""
        if self.profile.cost.model != "onnxruntime":
            return ()
        key, canonical, shape = _arch_key(space, arch, input_shape, num_classes)
        return self._nodes_by_key(key, lambda: student_onnx(space.build(canonical, num_classes, shape), shape), shape)

    def runtime_nodes_onnx(self, path: str | os.PathLike[str],
                           input_shape: tuple[int, ...] | None = None) -> tuple[RuntimeNode, ...]:
        if self.profile.cost.model != "onnxruntime":
            return ()
        key = graph_key("onnx", _file_digest(str(path)), input_shape)
        return self._nodes_by_key(key, lambda: Path(path).read_bytes(), input_shape)

    def _nodes_by_key(self, key: str, make_onnx: Any, input_shape: tuple[int, ...] | None) -> tuple[RuntimeNode, ...]:
        import onnxruntime

        blocked = _is_x86(self.profile)
        key = graph_key(key, "onnxruntime nodes", onnxruntime.__version__, "nchwc" if blocked else "plain")
        nodes = self._nodes.get(key)
        if nodes is None:
            nodes = self.disk_cache.get_nodes(key)
            if nodes is None:
                nodes = runtime_nodes(make_onnx(), blocked_layout=blocked, input_shape=input_shape)
                self.disk_cache.put_nodes(key, nodes)
            self._nodes[key] = nodes
        return nodes

    def lowered_onnx(self, path: str | os.PathLike[str], input_shape: tuple[int, ...] | None = None) -> LoweredGraph:
        key = graph_key("onnx", _file_digest(str(path)), input_shape)
        return self._lowered_by_key(key, lambda: onnx_to_relax(path, input_shape))

    def _lowered_by_key(self, key: str, make_graph: Any) -> LoweredGraph:
        # the same graph has other kernels for another register file, or in the channel-blocked layout
        key = graph_key(key, self.lowerer.registers, self.lowerer.blocked)
        lowered = self._lowered.get(key) or self.disk_cache.get(key)
        if lowered is None:
            with gc_paused():
                lowered = self.lowerer.lower(make_graph())
            self.disk_cache.put(key, lowered)
        self._lowered[key] = lowered
        return lowered

    def estimate_module(self, module: nn.Module, input_shape: tuple[int, ...], label: str | None = None) -> Estimate:
        nodes: tuple[RuntimeNode, ...] = ()
        if self.profile.cost.model == "onnxruntime":
            nodes = runtime_nodes(student_onnx(module, tuple(input_shape)), blocked_layout=_is_x86(self.profile))
        return self._estimate(torch_to_relax(module, tuple(input_shape)), arch=label, nodes=nodes)

    def estimate_onnx(self, path: str | os.PathLike[str], input_shape: tuple[int, ...] | None = None) -> Estimate:
        if self.measure:
            return self._estimate(onnx_to_relax(path, input_shape), onnx=str(path))
        lowered = self.lowered_onnx(path, input_shape)
        nodes = self.runtime_nodes_onnx(path, input_shape)
        return self._result_estimate(lowered, self._result(lowered, nodes=nodes), onnx=str(path))

    def lower(self, graph: RelaxGraph) -> LoweredGraph:
        return self.lowerer.lower(graph)

    def _estimate(self, graph: RelaxGraph, arch: str | None = None, onnx: str | None = None,
                  nodes: tuple[RuntimeNode, ...] = ()) -> Estimate:
        lowered = self.lowerer.lower(graph)
        return self._result_estimate(lowered, self._result(lowered, graph, nodes), arch=arch, onnx=onnx)

    def _result(self, lowered: LoweredGraph, graph: RelaxGraph | None = None,
                nodes: tuple[RuntimeNode, ...] = ()) -> _GraphResult:
        """Cost (and with a graph to compile, measure) a lowered student once per structure;
        `nodes`: ONNX Runtime's, for the onnxruntime model."""
        result = self._by_structure.get((lowered.structure_hash, nodes))
        if result is None:
            model_ms = model_latency_ms(lowered.kernels, self.profile, nodes)
            measurement, tuned, shipped, layout = None, None, lowered, None
            if self.measure and graph is not None:
                schedules = None
                if self.tuning is not None:
                    tuning = tune_student(graph, lowered, self.profile, self.tuning)
                    schedules, tuned = tuning.schedules, len(tuning.schedules)
                    measurement = tuning.measurement  # the shipped library, timed whole while choosing it
                    shipped, layout = tuning.lowered or lowered, tuning.layout  # the layout that was fastest
                if measurement is None:
                    measure = measure_local if self.profile.measure_local else measure_rpc
                    measurement = measure(shipped, graph.params, graph.input_shape, self.profile, self.timing,
                                          schedules)
            result = _GraphResult(shipped, model_ms, measurement, tuned, layout)
            self._by_structure[lowered.structure_hash, nodes] = result
        return result

    def _result_estimate(self, lowered: LoweredGraph, result: _GraphResult, arch: str | None = None,
                         onnx: str | None = None) -> Estimate:
        measured = result.measurement
        return Estimate(
            arch=arch,
            onnx=onnx,
            latency_ms=round(measured.latency_ms if measured else result.model_ms, 4),
            source="measured" if measured else "model",
            model_latency_ms=round(result.model_ms, 4),
            latency_spread_ms=round(measured.spread_ms, 4) if measured else None,
            peak_memory_bytes=result.lowered.peak_memory_bytes,  # of the library measured, when tuned
            params_bytes=lowered.params_bytes,
            macs=lowered.macs,
            kernels=len(result.lowered.kernels),
            device=self.profile.name,
            threads=self.profile.runtime.threads,
            measured_on=measured.where if measured else None,
            calibrated=self.profile.calibration is not None,
            expected_error_pct=None if measured or self.stale_calibration else self.profile.expected_error_pct,
            tuned_kernels=result.tuned_kernels,
            layout=result.layout,
        )


def _arch_key(space: SearchSpace, arch: str, input_shape: tuple[int, ...] | None,
              num_classes: int) -> tuple[str, str, tuple[int, ...]]:
    """(cache key, canonical id, input shape) of a student of `space`: what its lowering and its node
    count are kept under."""
    canonical = space.parse(arch)
    shape = tuple(input_shape or space.default_input_shape)
    return graph_key("arch", _file_digest(space.origin), space.name, canonical, shape, num_classes), canonical, shape


def _is_x86(profile: DeviceProfile) -> bool:
    """Whether the profile's board is x86, where ONNX Runtime runs convolutions in its blocked layout."""
    triple = str(profile.target.get("mtriple", ""))
    machine = triple.split("-")[0] if triple else os.uname().machine
    return machine in ("x86_64", "amd64", "i686", "i386")


@functools.lru_cache(maxsize=64)
def _file_digest(path: str) -> str:
    """The content hash of a space or ONNX file: an edited file never reads another's lowering."""
    try:
        return sha256_file(Path(path))
    except OSError:
        return f"unreadable:{path}"
