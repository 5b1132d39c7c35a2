"""Device profiles: the facts of a board and the constants of its cost model, read from YAML.

A profile is data: `yaml.safe_load` into frozen dataclasses, every problem of a file reported at
once, the file stem is the name. Built-in profiles live in the top-level `device_profiles`
package; users pass `--device path/to/board.yaml` for their own.

Numbers in `cpu`, `memory` and `cost_model` must each cite their public source under `sources`
(a key per dotted name, e.g. `cpu.clock_ghz`). The value `auto` (only sensible for the machine
hwkd runs on) is probed at load time and its source says how.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from hwkd.errors import ConfigError, UnknownNameError, error_line
from hwkd.host_probe import HostProbe

PROFILE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class CpuSpec:
    """The processor, per core unless the name says otherwise."""

    cores: int
    clock_ghz: float
    simd_bits: int  # width of one fp32 vector register (NEON 128, AVX2 256, AVX-512 512)
    fma_per_cycle: float  # vector fused multiply-add instructions issued per cycle per core
    loads_per_cycle: float  # vector loads per cycle per core
    stores_per_cycle: float  # vector stores per cycle per core
    fma_latency_cycles: float  # cycles before a dependent FMA may use an accumulator
    l1d_kib: int
    l2_kib: int  # the L2 one core can use (a shared L2 counts whole)
    l3_kib: int  # 0 when there is none
    # instructions an out-of-order core keeps in flight (its reorder buffer): how many independent
    # reduction chains overlap (hwkd.latency.cost_model.body_cycles); 128, the Cortex-A72's, when a
    # profile does not say
    reorder_window: int = 128

    @property
    def fp32_lanes(self) -> int:
        return self.simd_bits // 32

    @property
    def peak_gflops_per_core(self) -> float:
        return self.clock_ghz * self.fma_per_cycle * self.fp32_lanes * 2


@dataclass(frozen=True)
class MemorySpec:
    bandwidth_gb_s: float  # theoretical DRAM bandwidth, 1 GB = 1e9 bytes
    size_mib: int


@dataclass(frozen=True)
class RuntimeSpec:
    """How the compiled model is run on the board; latency depends on each of these."""

    threads: int
    affinity: str  # e.g. "cores 0-3", "none"
    clock_policy: str  # e.g. "performance governor"
    executor: str  # what runs the graph, e.g. "TVM Relax VM"


@dataclass(frozen=True)
class CostConstants:
    """Constants of the analytic cost model (see hwkd.latency.cost_model for their use)."""

    dram_efficiency: float  # fraction of theoretical DRAM bandwidth a streaming kernel reaches
    cache_bytes_per_cycle: float  # bytes per cycle per core from L2 for a streaming kernel
    kernel_overhead_us: float  # fixed cost of one kernel call in the VM
    parallel_overhead_us: float  # fork/join of the thread pool for one parallel kernel
    # Multipliers of the modeled time of each kernel class (see hwkd.latency.cost_model.KERNEL_CLASSES):
    # 1 from datasheets alone; `hwkd calibrate` fits them to measurements of the board.
    # "schedule" models hwkd's own TVM library loop by loop; "roofline" models any library by each
    # kernel's work against the peaks; "onnxruntime" costs the nodes ONNX Runtime runs, each its roofline
    # plus a fixed cost (what hwkd.calibrator fits to measurements of ONNX Runtime where it can).
    model: str = "schedule"
    dense_conv_scale: float = 1.0
    pointwise_conv_scale: float = 1.0
    depthwise_conv_scale: float = 1.0
    other_scale: float = 1.0
    # The onnxruntime model's costs per node ONNX Runtime runs, measured on the board:
    node_overhead_us: float = 0.0  # a convolution or matrix product (a dispatch to the thread pool)
    light_node_overhead_us: float | None = None  # a node that only moves data; None: node_overhead_us
    light_node_bytes_per_cycle: float | None = None  # per core, such a node's bytes; None: cache_bytes_per_cycle

    def scale(self, kernel_class: str) -> float:
        return float(getattr(self, f"{kernel_class}_scale"))

    @property
    def light_overhead_us(self) -> float:
        return self.node_overhead_us if self.light_node_overhead_us is None else self.light_node_overhead_us

    @property
    def light_bytes_per_cycle(self) -> float:
        rate = self.light_node_bytes_per_cycle
        return self.cache_bytes_per_cycle if rate is None else rate


@dataclass(frozen=True)
class CalibrationInfo:
    """Where a calibrated profile's constants came from and how far its estimates are off."""

    base_profile: str  # the profile the fit started from
    runtime: str  # what ran the measured students (tvm, onnxruntime, tflite, ncnn, ...)
    threads: int
    measurements: int
    date: str  # ISO date of the fit
    source: str  # the CSV file, or "rpc HOST:PORT" / "local" for hwkd's own measurements
    loo_median_abs_error_pct: float  # leave-one-out median |estimate - measured| / measured, in %
    loo_spearman: float  # leave-one-out rank correlation of estimate and measurement
    caveat: str | None = None  # multipliers the measurements pinned down poorly (calibration.Fit.caveat)
    model_version: str | None = None  # cost_model.model_version at the fit; None: written before it was recorded


@dataclass(frozen=True)
class RpcSpec:
    """Where a real board waits for TVM RPC sessions."""

    host: str
    port: int
    key: str | None  # set when connecting through a tracker at host:port
    timeout_s: float
    cross_compiler: str | None  # C compiler linking the library for the board; None: from the target triple


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    target: dict[str, Any]  # TVM target as a JSON-style dict
    cpu: CpuSpec
    memory: MemorySpec
    runtime: RuntimeSpec
    cost: CostConstants
    measure_local: bool  # hwkd runs on this device and can time it directly
    rpc: RpcSpec | None
    sources: dict[str, str] = field(repr=False)
    path: str = ""
    calibration: CalibrationInfo | None = None

    @property
    def expected_error_pct(self) -> float | None:
        """Median relative error of a model estimate on this profile; None when never checked."""
        return self.calibration.loo_median_abs_error_pct if self.calibration else None

    @property
    def can_measure(self) -> bool:
        """Whether TVM can time what this profile predicts: a board it reaches, and not ONNX Runtime's latency."""
        return (self.measure_local or self.rpc is not None) and self.cost.model != "onnxruntime"

    def tvm_target(self) -> Any:
        import tvm

        return tvm.target.Target(dict(self.target))

    def with_threads(self, threads: int) -> DeviceProfile:
        from dataclasses import replace

        if threads < 1:
            raise ConfigError(self.path or self.name, [f"threads must be >= 1, got {threads}"])
        return replace(self, runtime=replace(self.runtime, threads=threads))

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description, as `hwkd devices --json` prints it."""
        return {
            "name": self.name,
            "description": self.description,
            "target": self.target,
            "cores": self.cpu.cores,
            "clock_ghz": self.cpu.clock_ghz,
            "peak_gflops": round(self.cpu.peak_gflops_per_core * self.runtime.threads, 2),
            "threads": self.runtime.threads,
            "dram_bandwidth_gb_s": self.memory.bandwidth_gb_s,
            "measures": ("model only" if not self.can_measure else "local" if self.measure_local else "rpc"),
            "calibrated": self.calibration is not None,
            "expected_error_pct": self.expected_error_pct,
            "calibration": asdict(self.calibration) if self.calibration else None,
            "path": self.path,
        }


# (section, key, python type, required); a type of float also accepts ints.
_SCHEMA: dict[str, list[tuple[str, type, bool]]] = {
    "cpu": [
        ("cores", int, True),
        ("clock_ghz", float, True),
        ("simd_bits", int, True),
        ("fma_per_cycle", float, True),
        ("loads_per_cycle", float, True),
        ("stores_per_cycle", float, True),
        ("fma_latency_cycles", float, True),
        ("l1d_kib", int, True),
        ("l2_kib", int, True),
        ("l3_kib", int, True),
        ("reorder_window", int, False),
    ],
    "memory": [("bandwidth_gb_s", float, True), ("size_mib", int, True)],
    "runtime": [
        ("threads", int, True),
        ("affinity", str, True),
        ("clock_policy", str, True),
        ("executor", str, True),
    ],
    "cost_model": [
        ("dram_efficiency", float, True),
        ("cache_bytes_per_cycle", float, True),
        ("kernel_overhead_us", float, True),
        ("parallel_overhead_us", float, True),
        ("model", str, False),
        ("dense_conv_scale", float, False),
        ("pointwise_conv_scale", float, False),
        ("depthwise_conv_scale", float, False),
        ("other_scale", float, False),
        ("node_overhead_us", float, False),
        ("light_node_overhead_us", float, False),
        ("light_node_bytes_per_cycle", float, False),
    ],
    "rpc": [
        ("host", str, True),
        ("port", int, True),
        ("key", str, False),
        ("timeout_s", float, False),
        ("cross_compiler", str, False),
    ],
    "calibration": [
        ("base_profile", str, True),
        ("runtime", str, True),
        ("threads", int, True),
        ("measurements", int, True),
        ("date", str, True),
        ("source", str, True),
        ("loo_median_abs_error_pct", float, True),
        ("loo_spearman", float, True),
        ("caveat", str, False),
        ("model_version", str, False),
    ],
}
_OPTIONAL_SECTIONS = ("rpc", "calibration")
# optional costs: absent from a profile, node_overhead_us is 0 and the others None; written as absent
_OPTIONAL_COSTS = ("node_overhead_us", "light_node_overhead_us", "light_node_bytes_per_cycle")
_TOP_KEYS = {"description", "target", "measure", "sources", *_SCHEMA}
_CITED_SECTIONS = ("cpu", "memory", "cost_model")
_UNCITED = {"cost_model.model"}  # a choice, not a number
# optional facts with a default (the dataclass field's), and the citation of that default
_DEFAULT_SOURCES = {
    "cpu.reorder_window": "default: 128, the Cortex-A72's reorder buffer (the smallest of hwkd's profiles); "
                          "the profile does not say",
}
COST_MODELS = ("schedule", "roofline", "onnxruntime")


def builtin_profile_dir() -> Path:
    return Path(str(resources.files("device_profiles")))


def builtin_profiles() -> dict[str, Path]:
    """Built-in profile name -> file."""
    folder = builtin_profile_dir()
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix in PROFILE_SUFFIXES}


def load_profile(name_or_path: str | os.PathLike[str]) -> DeviceProfile:
    """A built-in profile by name, or a profile file by path."""
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in PROFILE_SUFFIXES or os.sep in text:
        if not path.is_file():
            raise ConfigError(text, ["no such profile file"])
        return parse_profile(path)
    known = builtin_profiles()
    if text not in known:
        raise UnknownNameError("device", text, list(known) + ["PATH.yaml"])
    return parse_profile(known[text])


def parse_profile(path: Path) -> DeviceProfile:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"not valid YAML ({error_line(exc, first=True)})"]) from None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot be read ({exc.strerror})"]) from None
    return profile_from_dict(path.stem, raw, str(path))


def profile_from_dict(name: str, raw: object, origin: str) -> DeviceProfile:
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise ConfigError(origin, ["the file must hold a mapping of sections"])
    for key in sorted(set(raw) - _TOP_KEYS):
        problems.append(f"unknown key {key!r} (accepted: {', '.join(sorted(_TOP_KEYS))})")

    probes = HostProbe()
    sources = raw.get("sources") or {}
    if not isinstance(sources, dict):
        problems.append("sources: must map dotted keys to citations")
        sources = {}
    sources = {str(k): str(v) for k, v in sources.items()}

    sections: dict[str, dict[str, Any]] = {}
    for section, fields in _SCHEMA.items():
        if section in _OPTIONAL_SECTIONS and section not in raw:
            continue
        body = raw.get(section)
        if not isinstance(body, dict):
            problems.append(f"{section}: missing section (keys: {', '.join(f for f, _, _ in fields)})")
            continue
        allowed = {f for f, _, _ in fields}
        for key in sorted(set(body) - allowed):
            problems.append(f"{section}.{key}: unknown key (accepted: {', '.join(sorted(allowed))})")
        values: dict[str, Any] = {}
        for key, typ, required in fields:
            dotted = f"{section}.{key}"
            if key not in body:
                if required:
                    problems.append(f"{dotted}: missing")
                elif dotted in _DEFAULT_SOURCES:  # a profile written from this one then cites it
                    sources.setdefault(dotted, _DEFAULT_SOURCES[dotted])
                continue
            value = body[key]
            if value == "auto" and section != "calibration":
                probed = probes.value(dotted)
                if probed is None:
                    problems.append(f"{dotted}: 'auto' is not supported for this key")
                    continue
                value, how = probed
                sources.setdefault(dotted, how)
            checked = _check_value(dotted, value, typ)
            if isinstance(checked, str) and typ is not str:
                problems.append(checked)
                continue
            values[key] = checked
            if section in _CITED_SECTIONS and dotted not in _UNCITED and not sources.get(dotted):
                problems.append(f"{dotted}: no public source under 'sources'")
        sections[section] = values

    target = raw.get("target")
    if not isinstance(target, dict) or target.get("kind") != "llvm":
        problems.append("target: must be a mapping with kind: llvm (a TVM target as a JSON dict)")
        target = {}
    else:
        target = {str(k): v for k, v in target.items()}
        problems.extend(_resolve_target_auto(target, probes))

    measure = raw.get("measure", "model")
    if measure not in ("model", "local"):
        problems.append(f"measure: {measure!r} is not one of model, local")

    description = raw.get("description")
    if not isinstance(description, str) or not description.strip():
        problems.append("description: missing")

    _check_ranges(sections, problems)
    if problems:
        raise ConfigError(origin, problems)

    rpc_raw = sections.get("rpc")
    rpc = None
    if rpc_raw is not None:
        rpc = RpcSpec(
            host=rpc_raw["host"],
            port=rpc_raw["port"],
            key=rpc_raw.get("key"),
            timeout_s=float(rpc_raw.get("timeout_s", 10.0)),
            cross_compiler=rpc_raw.get("cross_compiler"),
        )
    return DeviceProfile(
        name=name,
        description=str(description).strip(),
        target=target,
        cpu=CpuSpec(**sections["cpu"]),
        memory=MemorySpec(**sections["memory"]),
        runtime=RuntimeSpec(**sections["runtime"]),
        cost=CostConstants(**sections["cost_model"]),
        measure_local=measure == "local",
        rpc=rpc,
        sources=sources,
        path=origin,
        calibration=CalibrationInfo(**sections["calibration"]) if "calibration" in sections else None,
    )


def _check_value(dotted: str, value: object, typ: type) -> Any:
    if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if typ is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if typ is str and isinstance(value, str):
        return value
    return f"{dotted}: {value!r} is not a {typ.__name__}"


def _check_ranges(sections: dict[str, dict[str, Any]], problems: list[str]) -> None:
    positive = [
        ("cpu", "cores"), ("cpu", "clock_ghz"), ("cpu", "fma_per_cycle"),
        ("cpu", "loads_per_cycle"), ("cpu", "stores_per_cycle"), ("cpu", "fma_latency_cycles"),
        ("cpu", "l1d_kib"), ("cpu", "reorder_window"),
        ("cpu", "l2_kib"), ("memory", "bandwidth_gb_s"), ("runtime", "threads"),
        ("cost_model", "cache_bytes_per_cycle"), ("cost_model", "dense_conv_scale"),
        ("cost_model", "pointwise_conv_scale"), ("cost_model", "depthwise_conv_scale"), ("cost_model", "other_scale"),
        ("cost_model", "light_node_bytes_per_cycle"), ("calibration", "threads"), ("calibration", "measurements"),
    ]
    for section, key in positive:
        value = sections.get(section, {}).get(key)
        if isinstance(value, (int, float)) and value <= 0:
            problems.append(f"{section}.{key}: must be > 0, got {value}")
    simd = sections.get("cpu", {}).get("simd_bits")
    if isinstance(simd, int) and simd not in (32, 64, 128, 256, 512):
        problems.append(f"cpu.simd_bits: {simd} is not one of 32, 64, 128, 256, 512")
    eff = sections.get("cost_model", {}).get("dram_efficiency")
    if isinstance(eff, float) and not 0 < eff <= 1:
        problems.append(f"cost_model.dram_efficiency: must be in (0, 1], got {eff}")
    for key in ("kernel_overhead_us", "parallel_overhead_us", "node_overhead_us", "light_node_overhead_us"):
        value = sections.get("cost_model", {}).get(key)
        if isinstance(value, float) and value < 0:
            problems.append(f"cost_model.{key}: must be >= 0, got {value}")
    model = sections.get("cost_model", {}).get("model")
    if isinstance(model, str) and model not in COST_MODELS:
        problems.append(f"cost_model.model: {model!r} is not one of {', '.join(COST_MODELS)}")
    if model == "onnxruntime" and not sections.get("cost_model", {}).get("node_overhead_us"):
        problems.append("cost_model.node_overhead_us: the onnxruntime model needs ONNX Runtime's cost per node on "
                        "this board (python benchmarks/overheads.py --onnxruntime, run there)")
    port = sections.get("rpc", {}).get("port")
    if isinstance(port, int) and not 0 < port < 65536:
        problems.append(f"rpc.port: {port} is not a TCP port")


def _resolve_target_auto(target: dict[str, Any], probes: HostProbe) -> list[str]:
    if target.get("mcpu") != "auto":
        return []
    mcpu = probes.llvm_mcpu()
    if mcpu is None:
        del target["mcpu"]
    else:
        target["mcpu"] = mcpu
    return []


def profile_json(profile: DeviceProfile) -> str:
    return json.dumps(profile.summary(), sort_keys=True)


def profile_to_dict(profile: DeviceProfile) -> dict[str, Any]:
    """The YAML layout of `profile`, with every `auto` value as it was resolved here."""
    from dataclasses import fields

    def section(record: Any) -> dict[str, Any]:
        return {f.name: getattr(record, f.name) for f in fields(record)}

    out: dict[str, Any] = {
        "description": profile.description,
        "target": dict(profile.target),
        "measure": "local" if profile.measure_local else "model",
        "cpu": section(profile.cpu),
        "memory": section(profile.memory),
        "runtime": section(profile.runtime),
        # the onnxruntime model's costs are optional: a profile without them is written without them
        "cost_model": {k: v for k, v in section(profile.cost).items()
                       if k not in _OPTIONAL_COSTS or v is not None and (k != "node_overhead_us" or v)},
    }
    if profile.rpc is not None:
        out["rpc"] = {k: v for k, v in section(profile.rpc).items() if v is not None}
    if profile.calibration is not None:
        out["calibration"] = {k: v for k, v in section(profile.calibration).items() if v is not None}
    out["sources"] = dict(profile.sources)
    return out
