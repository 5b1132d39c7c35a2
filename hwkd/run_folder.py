"""The run folder: where a search keeps its study, teacher, caches and reports.

    RUN/study.db          the Optuna study (SQLite; another storage with --storage, see hwkd.storage)
    RUN/run.json          the full configuration, dataset, teacher and library versions
    RUN/teacher.*         the teacher the run distills from
    RUN/teacher_logits.pt the teacher's outputs on the training split (computed once)
    RUN/trials.csv, pareto.csv, pareto.png, pareto.html   the reports (hwkd report rebuilds them)

Files are written atomically (a temporary file, then a rename), so an interrupted run never
leaves a half-written one.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwkd.errors import RunError

STUDY_NAME = "hwkd-search"
# Settings that change what a trial measures: a run continues only with the same values.
FIXED_KEYS = ("space", "device", "data", "data_dir", "teacher", "brief", "input_shape", "num_classes",
              "latency_source", "threads")


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def teacher_logits(self) -> Path:
        return self.path / "teacher_logits.pt"

    def file(self, name: str) -> Path:
        return self.path / name

    def storage_url(self) -> str:
        """The URL of this run's study, from run.json (see `hwkd.storage.resolve_recorded`)."""
        from hwkd.storage import resolve_recorded

        return resolve_recorded(self.read()["config"].get("storage"), self.path)

    def exists(self) -> bool:
        return self.run_json.is_file()

    def read(self) -> dict[str, Any]:
        if not self.run_json.is_file():
            raise RunError(f"{self.path}: not a hwkd run folder (no run.json); give the folder a search wrote")
        try:
            data = json.loads(self.run_json.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise RunError(f"{self.run_json}: unreadable ({exc})") from None
        if not isinstance(data, dict) or "config" not in data:
            raise RunError(f"{self.run_json}: not written by hwkd (no 'config')")
        return data

    def write(self, data: dict[str, Any]) -> None:
        write_atomic(self.run_json, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")

    def check_same_run(self, config: dict[str, Any]) -> None:
        """One-line error naming each setting that differs (old -> new) when this folder holds a
        search with other fixed settings; nested settings are compared key by key."""
        if not self.exists():
            return
        previous = self.read()["config"]
        changed = [f"{key}: {old!r} -> {new!r}" for key in FIXED_KEYS
                   for key, old, new in _differences(key, previous.get(key), config.get(key))]
        if changed:
            raise RunError(
                f"{self.path} holds a search with other settings ({'; '.join(changed)}); "
                "continue it with the same settings or choose another --run-dir"
            )


def _differences(key: str, old: Any, new: Any) -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) for each leaf that differs between two settings."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new)) for d in _differences(f"{key}.{k}", old.get(k), new.get(k))]
    return [] if old == new else [(key, old, new)]


def open_run(run: str | os.PathLike[str]) -> RunFolder:
    folder = RunFolder(Path(run))
    if not folder.path.is_dir():
        raise RunError(f"{run}: no such run folder")
    folder.read()
    return folder


def write_atomic(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    if isinstance(text, bytes):
        partial.write_bytes(text)
    else:
        partial.write_text(text)
    os.replace(partial, path)


def library_versions() -> dict[str, str]:
    import numpy
    import onnx
    import onnxruntime
    import optuna
    import pandas
    import torch
    import tvm

    from hwkd import __version__

    return {
        "hwkd": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "tvm": tvm.__version__,
        "optuna": optuna.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
    }
