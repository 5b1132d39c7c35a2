"""`hwkd calibrate` (`hwkd.calibrator`): a device profile fitted to latencies measured on the user's own board.

Two ways in: a CSV of measurements the user took with any runtime (`--measurements`), or N
students hwkd picks over the space's latency range and measures itself, here for `host` or over
the profile's TVM RPC section (`--measure N`). Every input is checked before anything is lowered,
and nothing is written unless the fit succeeded. The fit itself is `hwkd.latency.calibration`.
"""

from __future__ import annotations

import csv
import datetime
import io
import math
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from hwkd.errors import ConfigError, HwkdError, error_line
from hwkd.profiles import PROFILE_SUFFIXES, CalibrationInfo, DeviceProfile

if TYPE_CHECKING:
    from hwkd.latency.calibration import CostBreakdown, Fit
    from hwkd.latency.estimator import Estimator
    from hwkd.spaces import SearchSpace

DEFAULT_SPACE = "nb201-widths"  # the search's default


@dataclass(frozen=True)
class Measured:
    """One measured student: an architecture id of the space or an ONNX file."""

    line: int  # line in the CSV; 0 for students hwkd measured itself
    arch: str | None
    onnx: str | None
    latency_ms: float

    @property
    def label(self) -> str:
        return self.arch or self.onnx or "?"


def read_measurements(path: Path, space: SearchSpace) -> list[Measured]:
    """Rows of a measurements CSV, every problem reported with its line; nothing is lowered yet."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise HwkdError(f"--measurements {path}: cannot be read ({exc.strerror})") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in reader.fieldnames or []]
    reader.fieldnames = columns
    which = [c for c in ("arch", "onnx") if c in columns]
    if "latency_ms" not in columns or len(which) != 1:
        raise HwkdError(f"--measurements {path}: needs a column latency_ms and one of arch (ids of --space) or onnx "
                        f"(ONNX file paths); it has {', '.join(columns) or 'no header'}")
    rows: list[Measured] = []
    for row in reader:
        line = reader.line_num
        where = f"{path}:{line}"
        value = (row.get(which[0]) or "").strip()
        if not value:
            raise HwkdError(f"{where}: empty {which[0]}")
        raw_latency = (row.get("latency_ms") or "").strip()
        try:
            latency = float(raw_latency)
        except ValueError:
            latency = math.nan
        if not math.isfinite(latency) or latency <= 0:
            raise HwkdError(f"{where}: latency_ms {raw_latency!r} is not a positive number of milliseconds")
        if which[0] == "arch":
            try:
                arch = space.parse(value)
            except HwkdError as exc:
                raise HwkdError(f"{where}: {exc}") from None
            rows.append(Measured(line, arch, None, latency))
        else:
            onnx = Path(value) if Path(value).is_absolute() else path.parent / value
            if not onnx.is_file():
                raise HwkdError(f"{where}: ONNX file {value} not found (paths are relative to the CSV or absolute)")
            rows.append(Measured(line, None, str(onnx), latency))
    return rows


@dataclass(frozen=True)
class CalibrateConfig:
    """What `hwkd calibrate` takes: a base profile, where the measurements come from, the output."""

    device: str
    out: str
    measurements: str | None = None  # a CSV of arch or onnx, latency_ms
    runtime: str | None = None  # what ran the measured students; needed with `measurements`
    measure: int | None = None  # or: students hwkd picks and measures itself
    space: str = DEFAULT_SPACE
    input_shape: tuple[int, ...] | None = None  # None: the space's own
    num_classes: int = 10
    threads: int | None = None
    seed: int = 0
    force: bool = False  # replace `out`
    cost_model: str | None = None  # one of profiles.COST_MODELS; None: onnxruntime for measurements of ONNX Runtime
    # where the profile has its cost per node, else the base profile's (schedule for built-ins)


ORT_NAMES = ("onnxruntime", "ort")  # --runtime values that mean ONNX Runtime


@dataclass(frozen=True)
class CalibrationOutcome:
    profile: DeviceProfile  # the calibrated profile, as written to `path`
    path: Path
    fit: Fit
    measured: tuple[Measured, ...]
    source: str  # the CSV, or where hwkd measured ("local", host:port)
    runtime: str


def calibrate(config: CalibrateConfig, show: bool = False) -> CalibrationOutcome:
    """Fit `config.device`'s cost constants to measurements and write the calibrated profile;
    `show`: progress bars on the terminal."""
    from hwkd.latency.calibration import MIN_MEASUREMENTS, breakdown, calibrated_profile, fit
    from hwkd.latency.cost_model import model_version
    from hwkd.latency.estimator import Estimator
    from hwkd.profiles import COST_MODELS, load_profile, profile_to_dict
    from hwkd.progress import progress_bar
    from hwkd.spaces import load_space

    base = load_profile(config.device)
    if config.threads is not None:
        base = base.with_threads(config.threads)
    out = _check_out(config.out, config.force)
    shape = config.input_shape
    if config.num_classes < 1:
        raise HwkdError(f"--num-classes {config.num_classes}: must be at least 1")
    if (config.measurements is None) == (config.measure is None):
        raise HwkdError("give one of --measurements CSV (your own measurements) or --measure N (hwkd measures)")
    space = load_space(config.space)
    # Measurements of ONNX Runtime fit the onnxruntime model where the profile knows ONNX Runtime's cost
    # per node: on a 2-core AVX-512 VM (110 students of each of nb201, fbnet, mbconv-small;
    # benchmarks/calibrate.py --seed 2) it ranked them 0.991, 0.978 and 0.986 uncalibrated against the
    # schedule model's 0.961, 0.864 and 0.909, and calibrated from 10 to 5.2, 1.9 and 2.0 % median error
    # against 13.5, 6.9 and 7.6 %. Every other runtime, and a profile without that cost, fits the schedule model.
    if config.cost_model is None and config.runtime in ORT_NAMES and base.cost.node_overhead_us:
        base = replace(base, cost=replace(base.cost, model="onnxruntime"))
    if config.cost_model is not None:
        if config.cost_model not in COST_MODELS:
            raise HwkdError(f"--cost-model {config.cost_model!r}: choose {', '.join(COST_MODELS)}")
        base = replace(base, cost=replace(base.cost, model=config.cost_model))
    if base.cost.model == "onnxruntime" and not base.cost.node_overhead_us:
        raise HwkdError(f"--cost-model onnxruntime: device {base.name} has no cost_model.node_overhead_us (ONNX "
                        "Runtime's cost per node there: python benchmarks/overheads.py --onnxruntime on the board)")
    if base.cost.model == "onnxruntime" and config.measure is not None:
        raise HwkdError("--cost-model onnxruntime models ONNX Runtime, and --measure times hwkd's TVM library; "
                        "give measurements of ONNX Runtime with --measurements")
    estimator = Estimator(base, "model")

    if config.measurements is not None:
        source = str(config.measurements)
        if not config.runtime:
            raise HwkdError("--runtime is needed with --measurements: what ran the students (tvm for hwkd's own "
                            "library, onnxruntime, tflite, ncnn, ...); it picks the cost model that is fitted")
        runtime = config.runtime
        measured = read_measurements(Path(config.measurements), space)
        if len(measured) < MIN_MEASUREMENTS:
            raise HwkdError(f"--measurements {source}: {len(measured)} measurement(s); calibration needs at least "
                            f"{MIN_MEASUREMENTS} (5-10 students spread over the latency range are enough)")
    else:
        count = int(config.measure or 0)
        if count < MIN_MEASUREMENTS:
            raise HwkdError(f"--measure {count}: calibration needs at least {MIN_MEASUREMENTS} students")
        runtime = config.runtime or "tvm"
        if runtime != "tvm":
            raise HwkdError(f"--runtime {runtime}: hwkd measures its own TVM library; give measurements of "
                            "another runtime with --measurements")
        measured, source = _measure(base, space, shape, config.num_classes, count, config.seed, estimator, show)

    parts = []
    with progress_bar(len(measured), "lowering", "student", show) as bar:
        for m in measured:
            try:
                lowered = (estimator.lowered_arch(space, m.arch, shape, config.num_classes) if m.arch
                           else estimator.lowered_onnx(str(m.onnx), shape))
                nodes = (estimator.runtime_nodes_arch(space, m.arch, shape, config.num_classes) if m.arch
                         else estimator.runtime_nodes_onnx(str(m.onnx), shape))
            except HwkdError as exc:
                where = f"{config.measurements}:{m.line}: " if m.line else ""
                raise HwkdError(f"{where}{m.label}: {exc}") from None
            parts.append(breakdown(lowered.kernels, base, nodes))
            bar.update()
    result = fit(parts, [m.latency_ms for m in measured])

    info = CalibrationInfo(
        base_profile=base.name, runtime=runtime, threads=base.runtime.threads, measurements=len(measured),
        date=datetime.date.today().isoformat(), source=source,
        loo_median_abs_error_pct=round(result.loo_median_abs_error_pct, 2),
        loo_spearman=round(result.loo_spearman, 4),
        caveat=result.caveat, model_version=model_version(base),
    )
    profile = calibrated_profile(base, result, info, out.stem, keep_measuring=runtime == "tvm")
    _write_profile(out, profile_to_dict(profile))
    if config.measurements is None:
        _write_measured(out.with_suffix(".measurements.csv"), measured, parts)
    return CalibrationOutcome(profile, out, result, tuple(measured), source, runtime)


def _check_out(text: str, force: bool) -> Path:
    out = Path(text)
    if out.suffix not in PROFILE_SUFFIXES:
        raise HwkdError(f"--out {text}: a profile file ends in {' or '.join(PROFILE_SUFFIXES)}")
    if out.exists() and not force:
        raise HwkdError(f"--out {text} exists; choose another name or pass --force to replace it")
    if not out.parent.is_dir():
        raise HwkdError(f"--out {text}: folder {out.parent} does not exist")
    return out


def _measure(base: DeviceProfile, space: SearchSpace, shape: tuple[int, ...] | None, num_classes: int, count: int,
             seed: int, estimator: Estimator, show: bool) -> tuple[list[Measured], str]:
    """`count` students spread over the space's modeled latency range, measured on the board."""
    from hwkd.latency.calibration import spread_picks
    from hwkd.latency.estimator import Estimator
    from hwkd.latency.measure import check_reachable
    from hwkd.progress import progress_bar

    if not base.can_measure:
        raise HwkdError(f"--measure: device {base.name} cannot be measured (it has no rpc section and is not the "
                        "host); add rpc: {host, port} to its profile, or give --measurements")
    where = "local" if base.measure_local else check_reachable(base)
    rng = random.Random(seed)
    candidates: dict[str, None] = {}
    wanted = min(space.size(), max(8 * count, 40))
    for _ in range(50 * wanted):
        if len(candidates) >= wanted:
            break
        candidates.setdefault(space.parse(space.sample(rng)), None)
    archs = list(candidates)
    modeled = []
    with progress_bar(len(archs), "costing candidates", "student", show) as bar:
        for arch in archs:
            modeled.append(estimator.estimate_arch(space, arch, shape, num_classes).latency_ms)
            bar.update()
    picks = [archs[i] for i in spread_picks(modeled, count)]
    measuring = Estimator(base, "measured")
    measured = []
    with progress_bar(len(picks), f"measuring on {base.name}", "student", show) as bar:
        for arch in picks:
            estimate = measuring.estimate_arch(space, arch, shape, num_classes)
            measured.append(Measured(0, arch, None, estimate.latency_ms))
            bar.update()
    return measured, where


def _write_profile(out: Path, data: dict[str, object]) -> None:
    """Write atomically, after checking that the text reads back as a valid profile."""
    import yaml

    from hwkd.files import write_atomic
    from hwkd.profiles import profile_from_dict

    header = ("# Written by hwkd calibrate: the base profile's facts with cost_model constants fitted to\n"
              "# measurements of the board (see the calibration section and the sources of each constant).\n")
    text = header + yaml.safe_dump(data, sort_keys=False, width=120)
    try:
        profile_from_dict(out.stem, yaml.safe_load(text), str(out))
    except ConfigError as exc:  # a bug, not the user's: say so rather than write a broken file
        raise HwkdError(f"the calibrated profile does not validate ({error_line(exc)}); nothing written") from None
    write_atomic(out, text)


def _write_measured(path: Path, measured: list[Measured], parts: list[CostBreakdown]) -> None:
    from hwkd.files import write_atomic

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["arch", "latency_ms", "model_latency_ms"])
    for m, part in zip(measured, parts):
        writer.writerow([m.arch, f"{m.latency_ms:.4f}", f"{part.total_ms:.4f}"])
    write_atomic(path, buffer.getvalue())
