"""hwkd's Python API: what the command line does, as functions that take and return typed records.

    import hwkd

    summary = hwkd.search(hwkd.SearchConfig(device="rpi4", trials=8, run_dir="runs/rpi4"))
    best = summary.front[0]                       # a TrialOutcome: arch, score, val_accuracy, latency_ms, ...
    hwkd.distill("runs/rpi4", best.number, hwkd.FullConfig(epochs=5))
    hwkd.export("runs/rpi4", best.number, formats=["onnx"])

The `hwkd` command is a thin layer over these functions. Each raises `HwkdError` (one line
naming the bad value) for bad input; none prints, and progress bars show only when asked.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hwkd.calibrator import CalibrateConfig, CalibrationOutcome
    from hwkd.compress_trial import CompressConfig, CompressOutcome
    from hwkd.distill_trial import DistillOutcome
    from hwkd.distillation.config import FullConfig
    from hwkd.exporter import ExportOutcome
    from hwkd.latency.estimator import Estimate, LatencySource
    from hwkd.latency.tuning import TuningPlan
    from hwkd.reports import Report
    from hwkd.searcher import SearchConfig, SearchSummary

PathLike = str | os.PathLike[str]


def search(config: SearchConfig | None = None, progress: bool | None = False) -> SearchSummary:
    """Add trials to a search (or start one) and write its reports; `config` defaults to
    `hwkd search --device rpi4` on the embedded data. `progress`: bars on standard error (None:
    when it is a terminal)."""
    from hwkd.searcher import Search, SearchConfig

    return Search(config or SearchConfig()).run(progress=progress)


def estimate(device: str, *, space: str | None = None, arch: str | None = None, onnx: PathLike | None = None,
             input_shape: tuple[int, ...] | None = None, num_classes: int = 10,
             latency_source: LatencySource = "auto", threads: int | None = None,
             tuning: TuningPlan | None = None) -> Estimate:
    """Latency, peak memory, MACs and parameters of one student on `device` (a profile name or
    file): an architecture id of `space`, or an ONNX file."""
    from hwkd.errors import HwkdError
    from hwkd.latency.estimator import Estimator
    from hwkd.profiles import load_profile
    from hwkd.spaces import load_space

    if (arch is None) == (onnx is None):
        raise HwkdError("give one of arch (with space) or onnx")
    if num_classes < 1:
        raise HwkdError(f"num_classes {num_classes}: must be at least 1")
    profile = load_profile(device)
    if threads is not None:
        profile = profile.with_threads(threads)
    estimator = Estimator(profile, latency_source, tuning=tuning)
    if onnx is not None:
        return estimator.estimate_onnx(onnx, input_shape)
    if space is None:
        raise HwkdError("space is needed with arch (hwkd spaces lists them)")
    return estimator.estimate_arch(load_space(space), str(arch), input_shape, num_classes)


def report(run: PathLike) -> Report:
    """The trials, front and fully distilled students of a run; rewrites its report files."""
    from hwkd.reports import write_reports
    from hwkd.run_folder import open_run

    return write_reports(open_run(run))


def distill(run: PathLike, trial: int, config: FullConfig | None = None, train_device: str = "auto",
            restart: bool = False, progress: bool | None = False) -> DistillOutcome:
    """Fully distill trial `trial` of a run from the run's teacher (resumes from its checkpoint)."""
    from hwkd.distill_trial import distill_trial
    from hwkd.distillation.config import FullConfig

    return distill_trial(Path(run), trial, config or FullConfig(), train_device, restart, progress)


def compress(run: PathLike, trial: int, config: CompressConfig, progress: bool | None = False) -> CompressOutcome:
    """Prune a fully distilled student to a latency target on the run's device and fine-tune it
    with KD from the run's teacher (`hwkd compress`)."""
    from hwkd.compress_trial import compress_trial

    return compress_trial(Path(run), trial, config, progress)


def export(run: PathLike, trial: int, formats: Sequence[str] = ("onnx", "onnx-int8", "tvm"),
           out: PathLike | None = None, force: bool = False, compressed: str | None = None,
           tuning: TuningPlan | None = None) -> ExportOutcome:
    """Deployable, checked files of a fully distilled student (or of its pruned version `compressed`,
    from `hwkd compress`), with their manifest. With `tuning`, the TVM library's kernels are tuned
    where the student runs (`hwkd.latency.tuning`) and the manifest says what changed."""
    from hwkd.exporter import export_trial, parse_formats

    return export_trial(Path(run), trial, parse_formats(",".join(formats)), None if out is None else Path(out), force,
                        compressed, tuning)


def calibrate(config: CalibrateConfig, progress: bool = False) -> CalibrationOutcome:
    """A device profile fitted to measurements of the user's board, written to `config.out`."""
    from hwkd.calibrator import calibrate as run

    return run(config, show=progress)
