"""Latency, memory, MACs and parameters of students on a device: the `hwkd estimate` contract.

`Estimator` imports a student into TVM Relax, lowers it as TVM's build does, and takes:
- `latency_ms` from the profile's cost model (`source="model"`) or from running the compiled
  library (`source="measured"`: here for `host`, over TVM RPC for a profile with `rpc`);
- `peak_memory_bytes` from TVM's static memory plan, `params_bytes` from the weights, `macs`
  from the graph's convolutions and matrix products.
Results are cached by architecture id and by the fused graph's structure; kernel descriptions and
legalized operators are cached inside the `Lowerer`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import Any, Literal

from torch import nn

from hwkd.errors import HwkdError
from hwkd.latency.cost_model import latency_ms as model_latency_ms
from hwkd.latency.kernels import LoweredGraph, Lowerer
from hwkd.latency.measure import Measurement, TimingPlan, measure_local, measure_rpc
from hwkd.latency.relax_import import RelaxGraph, onnx_to_relax, torch_to_relax
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


class Estimator:
    def __init__(
        self,
        profile: DeviceProfile,
        latency_source: LatencySource = "auto",
        timing: TimingPlan = TimingPlan(),
    ) -> None:
        if latency_source == "measured" and not profile.can_measure:
            raise HwkdError(
                f"device {profile.name} cannot be measured: it has no rpc section and is not the host "
                "(use --latency-source model, or add rpc: {host, port} to its profile)"
            )
        self.profile = profile
        self.measure = latency_source == "measured" or (latency_source == "auto" and profile.can_measure)
        self.timing = timing
        self.lowerer = Lowerer()
        self._by_structure: dict[int, _GraphResult] = {}
        self._by_arch: dict[tuple[str, str, tuple[int, ...], int], Estimate] = {}

    def estimate_arch(
        self, space: SearchSpace, arch: str, input_shape: tuple[int, ...] | None = None, num_classes: int = 10
    ) -> Estimate:
        canonical = space.parse(arch)
        shape = tuple(input_shape or space.default_input_shape)
        key = (space.name, canonical, shape, num_classes)
        cached = self._by_arch.get(key)
        if cached is not None:
            return cached
        module = space.build(canonical, num_classes, shape)
        estimate = self._estimate(torch_to_relax(module, shape), arch=canonical)
        self._by_arch[key] = estimate
        return estimate

    def estimate_module(self, module: nn.Module, input_shape: tuple[int, ...], label: str | None = None) -> Estimate:
        return self._estimate(torch_to_relax(module, tuple(input_shape)), arch=label)

    def estimate_onnx(self, path: str | os.PathLike[str], input_shape: tuple[int, ...] | None = None) -> Estimate:
        return self._estimate(onnx_to_relax(path, input_shape), onnx=str(path))

    def lower(self, graph: RelaxGraph) -> LoweredGraph:
        return self.lowerer.lower(graph)

    def _estimate(self, graph: RelaxGraph, arch: str | None = None, onnx: str | None = None) -> Estimate:
        lowered = self.lowerer.lower(graph)
        result = self._by_structure.get(lowered.structure_hash)
        if result is None:
            model_ms = model_latency_ms(lowered.kernels, self.profile)
            measurement = None
            if self.measure:
                measure = measure_local if self.profile.measure_local else measure_rpc
                measurement = measure(lowered, graph.params, graph.input_shape, self.profile, self.timing)
            result = _GraphResult(lowered, model_ms, measurement)
            self._by_structure[lowered.structure_hash] = result
        measured = result.measurement
        return Estimate(
            arch=arch,
            onnx=onnx,
            latency_ms=round(measured.latency_ms if measured else result.model_ms, 4),
            source="measured" if measured else "model",
            model_latency_ms=round(result.model_ms, 4),
            latency_spread_ms=round(measured.spread_ms, 4) if measured else None,
            peak_memory_bytes=lowered.peak_memory_bytes,
            params_bytes=graph.params_bytes,
            macs=lowered.macs,
            kernels=len(lowered.kernels),
            device=self.profile.name,
            threads=self.profile.runtime.threads,
            measured_on=measured.where if measured else None,
        )
