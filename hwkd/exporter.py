"""`hwkd export RUN --trial N`: deployable files of a fully distilled student, each checked.

- `student.onnx`: one file, free batch size; run with onnxruntime on the whole test split and
  compared with torch (largest logit difference, both accuracies).
- `student-int8.onnx`: static quantization in QDQ format, per-channel weights, calibrated on
  images of the training split; its test accuracy is measured again.
- `student.so` (or `student.tar`, object files, when the board's cross compiler is missing):
  the TVM library compiled for the run's device profile with hwkd's schedule, plus
  `student_params.npz` (the weights `main` takes after the input, in order). A library built for
  this machine is also run on the test split and compared with torch.
- `manifest.json`: architecture, device profile, accuracies, latency and memory with their
  source, library versions, and the sha256 of every file written.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hwkd.data.datasets import Dataset
from hwkd.distill_trial import load_student
from hwkd.errors import HwkdError, RunError
from hwkd.files import sha256_file, write_atomic
from hwkd.latency.onnxruntime_graph import ONNX_OPSET
from hwkd.latency.tuning import TuningPlan, tuning_site
from hwkd.onnx_session import cpu_session
from hwkd.records import CompressRecord, TrainedStudent
from hwkd.run_context import RunContext, load_trial, open_context
from hwkd.run_folder import library_versions

log = logging.getLogger(__name__)

FORMATS = ("onnx", "onnx-int8", "tvm")
# Every file an export may write: --force replaces these and never touches anything else in --out.
EXPORT_FILES = ("student.onnx", "student-int8.onnx", "student.so", "student.tar", "student_params.npz",
                "manifest.json")  # the manifest last: it lists the sha256 of the others
CALIBRATION_IMAGES = 512


@dataclass
class ExportOutcome:
    out_dir: Path
    manifest: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def parse_formats(text: str) -> list[str]:
    formats = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise HwkdError(f"--format {text!r}: unknown {', '.join(unknown) or 'empty list'} "
                        f"(accepted: {', '.join(FORMATS)})")
    return list(dict.fromkeys(formats))


def export_trial(run: str | Path, number: int, formats: list[str], out: str | Path | None = None,
                 force: bool = False, compressed: str | None = None, tuning: TuningPlan | None = None) -> ExportOutcome:
    """Export trial `number`'s fully distilled student, or with `compressed` the pruned student of
    that name (`hwkd compress`)."""
    context = open_context(run)
    trial = load_trial(context, number)
    pruned = None
    if compressed is None:
        student = load_student(context, trial)
    else:
        from hwkd.compress_trial import load_compressed

        student, pruned = load_compressed(context, number, compressed)
    if tuning is not None:
        if "tvm" not in formats:
            raise HwkdError("--tune tunes the TVM library: add tvm to --format")
        tuning_site(context.profile)  # refuses a profile that can only be modeled, before anything is written
    folder = f"trial-{number}" if compressed is None else f"trial-{number}-{compressed}"
    out_dir = Path(out) if out else context.folder.path / "export" / folder
    _prepare_out_dir(out_dir, force)
    dataset = context.dataset
    test_x = dataset.normalize(dataset.test.images)
    labels = dataset.test.labels.numpy()
    with torch.no_grad():
        torch_logits = torch.cat([student(test_x[i : i + 500]) for i in range(0, len(test_x), 500)]).numpy()
    distilled = context.distilled_result(number)
    outcome = ExportOutcome(out_dir, {})
    accuracy: dict[str, float] = {"torch": _accuracy(torch_logits, labels)}
    files: dict[str, Any] = {}
    onnx_path = out_dir / "student.onnx"
    if "onnx" in formats or "onnx-int8" in formats:
        _export_onnx(student, context.input_shape, onnx_path)
        onnx_logits = _run_onnx(onnx_path, test_x.numpy())
        accuracy["onnx"] = _accuracy(onnx_logits, labels)
        files["onnx"] = {"file": onnx_path.name, "input": "input", "output": "logits",
                         "input_shape": ["batch", *context.input_shape[1:]],
                         "max_abs_diff_vs_torch": float(np.abs(onnx_logits - torch_logits).max())}
        log.info("ONNX: test accuracy %.2f%% (torch %.2f%%), largest logit difference %.2e",
                 100 * accuracy["onnx"], 100 * accuracy["torch"], files["onnx"]["max_abs_diff_vs_torch"])
    if "onnx-int8" in formats:
        int8_path = out_dir / "student-int8.onnx"
        _quantize(onnx_path, int8_path, dataset)
        accuracy["onnx_int8"] = _accuracy(_run_onnx(int8_path, test_x.numpy()), labels)
        files["onnx-int8"] = {"file": int8_path.name, "format": "QDQ", "weights": "int8 per channel",
                              "activations": "int8", "calibration_images": CALIBRATION_IMAGES}
        log.info("int8 ONNX: test accuracy %.2f%%", 100 * accuracy["onnx_int8"])
    if "onnx" not in formats and onnx_path.exists():
        onnx_path.unlink()  # only the int8 model was asked for
        files.pop("onnx", None)
    if "tvm" in formats:
        files["tvm"] = _export_tvm(student, context, out_dir, test_x.numpy(), torch_logits, outcome.warnings, tuning)
    figures: TrainedStudent | CompressRecord = trial if pruned is None else pruned  # what is shipped
    manifest = {
        "trial": trial.number,
        "arch": trial.arch,
        "space": context.space.name,
        "device": context.profile.summary(),
        "input": {"name": "input", "shape": list(context.input_shape), "dtype": "float32",
                  "mean": list(context.record.dataset.mean), "std": list(context.record.dataset.std),
                  "scaling": "pixels / 255, then (x - mean) / std per channel"},
        "classes": list(dataset.class_names),
        "test_accuracy": accuracy,
        "teacher_test_accuracy": distilled.teacher_test_accuracy if distilled else None,
        "brief_val_accuracy": trial.val_accuracy,
        "latency_ms": figures.latency_ms,
        "latency_source": figures.latency_source,
        "latency_calibrated": figures.latency_calibrated,
        "latency_expected_error_pct": figures.latency_expected_error_pct,
        "peak_memory_bytes": figures.peak_memory_bytes,
        "params_bytes": figures.params_bytes,
        "macs": figures.macs,
        "compressed": None if pruned is None else {
            "name": pruned.name, "target_ms": pruned.target_ms, "unpruned_latency_ms": pruned.unpruned_latency_ms,
            "channels_removed": pruned.channels_removed, "channels_before": pruned.channels_before,
            "unpruned_test_accuracy": pruned.unpruned_test_accuracy, "finetune_epochs": pruned.finetune_epochs,
        },
        "formats": files,
        "warnings": outcome.warnings,
        "libraries": library_versions(),
        "sha256": {name: sha256_file(out_dir / name) for name in EXPORT_FILES[:-1] if (out_dir / name).is_file()},
    }
    write_atomic(out_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    outcome.manifest = manifest
    return outcome


def _prepare_out_dir(out_dir: Path, force: bool) -> None:
    """An empty or new output folder; with `force`, an earlier export's files are removed (a stale
    library must not sit beside a manifest that no longer lists it) and every other file is kept."""
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"--out {out_dir} is a file; give a folder (new, empty, or an earlier export with --force)")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not force:
            raise RunError(f"--out {out_dir} exists and is not empty; pass --force to replace its files")
        for name in EXPORT_FILES:
            (out_dir / name).unlink(missing_ok=True)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"--out {out_dir}: cannot create the folder ({exc.strerror})") from None


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


def _export_onnx(student: torch.nn.Module, input_shape: tuple[int, ...], path: Path) -> None:
    example = torch.zeros((2, *input_shape[1:]))
    partial = path.with_name(path.name + ".partial")
    torch.onnx.export(student, (example,), str(partial), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=ONNX_OPSET,
                      dynamo=False)
    os.replace(partial, path)


def _run_onnx(path: Path, images: np.ndarray) -> np.ndarray:
    session = cpu_session(path)
    return np.concatenate([session.run(None, {"input": images[i : i + 500]})[0] for i in range(0, len(images), 500)])


def _quantize(source: Path, target: Path, dataset: Dataset) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    order = torch.randperm(len(dataset.train), generator=torch.Generator().manual_seed(0))[:CALIBRATION_IMAGES]
    images = dataset.normalize(dataset.train.images[order]).numpy()

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": images[i : i + 64]} for i in range(0, len(images), 64)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    prepared = target.with_name(target.stem + ".prep.onnx")
    partial = target.with_name(target.name + ".partial")
    root = logging.getLogger()
    root.addFilter(_harmless_axis_warning)
    try:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(partial), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        os.replace(partial, target)
    finally:
        root.removeFilter(_harmless_axis_warning)
        prepared.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)


def _harmless_axis_warning(record: logging.LogRecord) -> bool:
    """Drops onnxruntime's "Axis 1 is out-of-range for weight ... with rank 1": a 1-D weight (a
    BatchNorm that follows no convolution) cannot be quantized per channel, so it is quantized per
    tensor, which is what a 1-D weight needs anyway."""
    message = record.getMessage()
    return not (message.startswith("Axis ") and "is out-of-range for weight" in message and "with rank 1" in message)


def _export_tvm(student: torch.nn.Module, context: RunContext, out_dir: Path, test_x: np.ndarray,
                torch_logits: np.ndarray, warnings: list[str], tuning: TuningPlan | None = None) -> dict[str, Any]:
    import tvm

    from hwkd.latency.lowering import Lowerer
    from hwkd.latency.measure import compile_student, cross_compiler, install_hint, link_library, toolchain_problem
    from hwkd.latency.relax_import import torch_to_relax
    from hwkd.latency.schedule import register_tile

    profile = context.profile
    graph = torch_to_relax(student, context.input_shape)
    lowered = Lowerer(register_tile(profile.cpu.simd_bits)).lower(graph)
    tuned = None
    if tuning is not None:
        from hwkd.latency.tuning import tune_student

        tuned = tune_student(graph, lowered, profile, tuning)
        log.info("tuned %d kernels %s: the %s library (%s) was fastest whole, %d kernels take another schedule "
                 "than hwkd's default", len(tuned.kernels), tuned.where, tuned.library, tuned.layout, tuned.changed)
        lowered = tuned.lowered or lowered
    compiled = (tuned.compiled if tuned and tuned.compiled else  # compiled already while tuning chose it
                compile_student(lowered, graph.params, profile, tuned.schedules if tuned else None))
    params = out_dir / "student_params.npz"
    np.savez(params, *[], **{f"p{i:03d}": w for i, w in enumerate(compiled.weights)})  # type: ignore[arg-type]
    compiler = cross_compiler(profile)
    info: dict[str, Any] = {
        "target": profile.target,
        "params": params.name,
        "entry": "main",
        "inputs": [{"name": graph.input_name, "shape": list(graph.input_shape), "dtype": "float32"}],
        "call": "main(input, *params in order p000, p001, ...) -> logits",
        "load": "vm = tvm.relax.VirtualMachine(tvm.runtime.load_module(LIB), tvm.cpu()); "
                "vm['main'](x, *[w[k] for k in sorted(w)]) with w = numpy.load(PARAMS)",
        "tuning": tuned.to_json() if tuned else None,
        # of this library's static memory plan: a tuned library in the blocked layout pads channels
        "peak_memory_bytes": lowered.peak_memory_bytes,
        "layout": tuned.layout if tuned else "NCHW",
    }
    problem = toolchain_problem(compiler) if compiler is not None else None
    if compiler is not None and problem is not None:
        library = out_dir / "student.tar"
        compiled.executable.export_library(str(library))  # object files; link them on the board
        message = (f"{problem}, so {library.name} holds object files for {profile.name}; install the toolchain "
                   f"(Debian/Ubuntu: {install_hint(compiler)}) and export again for a shared library, or link "
                   "them on the board: tar xf student.tar && gcc -shared *.o -o student.so")
        warnings.append(message)  # the CLI prints it once
        info.update({"library": library.name, "kind": "object archive"})
        return info
    library = out_dir / "student.so"
    used = link_library(compiled, library, profile)
    info.update({"library": library.name, "kind": "shared library", "compiler": used,
                 "machine": _elf_machine(library)})
    if compiler is None:  # built for this machine: run it on the test images against torch
        vm = tvm.relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
        weights = [tvm.runtime.tensor(w) for w in compiled.weights]
        n = min(len(test_x), 200)
        outs = np.concatenate([vm["main"](tvm.runtime.tensor(test_x[i : i + 1]), *weights).numpy() for i in range(n)])
        info["checked_images"] = n
        info["max_abs_diff_vs_torch"] = float(np.abs(outs - torch_logits[:n]).max())
        info["agreement_with_torch"] = float((outs.argmax(1) == torch_logits[:n].argmax(1)).mean())
    return info


_ELF_MACHINES = {0x3E: "x86-64", 0xB7: "AArch64", 0x28: "ARM", 0xF3: "RISC-V"}


def _elf_machine(path: Path) -> str:
    header = path.read_bytes()[:20]
    if header[:4] != b"\x7fELF":
        return platform.machine()
    return _ELF_MACHINES.get(int.from_bytes(header[18:20], "little"), "unknown")
