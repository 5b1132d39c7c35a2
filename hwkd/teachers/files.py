"""Teachers from files: the user's (torch.export `.pt2`, TorchScript, ONNX) and the copy a run
folder keeps of its teacher."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hwkd.data.datasets import Dataset
from hwkd.errors import DataError, error_line
from hwkd.files import sha256_file
from hwkd.onnx_session import cpu_session
from hwkd.teachers.base import Teacher, check_teacher, torch_forward
from hwkd.teachers.default_training import load_default_teacher, wrap_default

TEACHER_SUFFIXES = {".pt2": "torch.export", ".pt": "TorchScript", ".ts": "TorchScript", ".onnx": "ONNX"}


def load_teacher_file(path: str | Path, dataset: Dataset) -> Teacher:
    file = Path(path)
    if not file.is_file():
        raise DataError(f"--teacher {path}: no such file")
    kind = TEACHER_SUFFIXES.get(file.suffix)
    if kind is None:
        formats = ", ".join(f"{k} ({v})" for k, v in TEACHER_SUFFIXES.items())
        raise DataError(f"--teacher {path}: unknown format; use {formats}")
    try:
        forward, batch, module = _OPENERS[kind](file)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - each format fails its own way
        raise DataError(f"--teacher {path}: cannot be loaded as {kind} ({error_line(exc)})") from None
    teacher = Teacher(file.name, kind, str(file), sha256_file(file), forward, batch, module)
    check_teacher(teacher, dataset)
    return teacher


def load_run_teacher(file: Path, kind: str, dataset: Dataset) -> Teacher:
    """The copy of its teacher a run folder keeps (`kind` as run.json records it)."""
    if kind != "default":
        return load_teacher_file(file, dataset)
    if not file.is_file():
        raise DataError(f"the run's teacher {file} is missing; the run folder is incomplete")
    try:
        model = load_default_teacher(file, dataset)
    except Exception as exc:  # noqa: BLE001 - a corrupt copy
        raise DataError(f"the run's teacher {file} is unreadable ({error_line(exc)})") from None
    teacher = wrap_default(model, file)
    check_teacher(teacher, dataset)
    return teacher


_Opened = tuple[Callable[[torch.Tensor], torch.Tensor], int, "nn.Module | None"]


def _open_export(file: Path) -> _Opened:
    # torch.export logs a whole traceback as a warning before it raises; the one-line error says it all
    export_log = logging.getLogger("torch.export")
    level = export_log.level
    export_log.setLevel(logging.ERROR)
    try:
        program = torch.export.load(str(file))
    finally:
        export_log.setLevel(level)
    module = program.module()
    batch = _static_batch([n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"][-1:])
    return torch_forward(module), batch, module


def _open_torchscript(file: Path) -> _Opened:
    module = torch.jit.load(str(file), map_location="cpu").eval()
    return torch_forward(module), 256, None  # a ScriptModule's layers cannot be tapped with fx


def _open_onnx(file: Path) -> _Opened:
    session = cpu_session(file)
    inp = session.get_inputs()[0]
    batch = inp.shape[0] if isinstance(inp.shape[0], int) else 256

    def forward(images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(session.run(None, {inp.name: images.numpy().astype(np.float32)})[0]))

    return forward, batch, None


_OPENERS: dict[str, Callable[[Path], _Opened]] = {
    "torch.export": _open_export,
    "TorchScript": _open_torchscript,
    "ONNX": _open_onnx,
}


def _static_batch(values: list[Any]) -> int:
    for value in values:
        shape = getattr(value, "shape", None)
        if shape is not None and len(shape) and isinstance(shape[0], int):
            return int(shape[0])
    return 256


def copy_into(teacher: Teacher, folder: Path) -> Path:
    """Keep a copy of the teacher file in the run folder so the run stands on its own."""
    target = folder / ("teacher" + (Path(teacher.path).suffix or ".pt"))
    if not target.exists():
        shutil.copyfile(teacher.path, target)
    return target
