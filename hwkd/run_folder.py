"""The run folder: where a search keeps its study, teacher, caches and reports.

    RUN/study.db          the Optuna study (SQLite; another storage with --storage, see hwkd.storage)
    RUN/run.json          the full configuration, dataset, teacher and library versions (a RunRecord)
    RUN/config.yaml       the command's settings, in the form --config takes back
    RUN/teacher.*         the teacher the run distills from
    RUN/teacher_logits.pt the teacher's outputs on the training split (computed once)
    RUN/trials.csv, pareto.csv, pareto.png, pareto.html   the reports (hwkd report rebuilds them)
    RUN/distilled/trial-N/        hwkd distill: the fully distilled student
    RUN/compressed/trial-N-NAME/  hwkd compress: a pruned, fine-tuned student

Files are written atomically (a temporary file, then a rename), so an interrupted run never
leaves a half-written one.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hwkd.errors import RunError
from hwkd.files import write_atomic
from hwkd.records import CompressRecord, DistillRecord, ExportSummary, FixedSettings, RunRecord

STUDY_NAME = "hwkd-search"
R = TypeVar("R")


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def config_yaml(self) -> Path:
        return self.path / "config.yaml"

    @property
    def teacher_logits(self) -> Path:
        return self.path / "teacher_logits.pt"

    def file(self, name: str) -> Path:
        return self.path / name

    def storage_url(self) -> str:
        """The URL of this run's study, from run.json (see `hwkd.storage.resolve_recorded`)."""
        from hwkd.storage import resolve_recorded

        return resolve_recorded(self.read().config.storage, self.path)

    def exists(self) -> bool:
        return self.run_json.is_file()

    def read(self) -> RunRecord:
        if not self.run_json.is_file():
            raise RunError(f"{self.path}: not a hwkd run folder (no run.json); give the folder a search wrote")
        try:
            data = json.loads(self.run_json.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise RunError(f"{self.run_json}: unreadable ({exc})") from None
        if not isinstance(data, dict) or "config" not in data:
            raise RunError(f"{self.run_json}: not written by hwkd (no 'config')")
        try:
            return RunRecord.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise RunError(f"{self.run_json}: not written by hwkd ({exc})") from None

    def write(self, record: RunRecord) -> None:
        write_atomic(self.run_json, json.dumps(record.to_dict(), indent=2, sort_keys=True, default=str) + "\n")

    def check_same_run(self, fixed: FixedSettings) -> None:
        """One-line error naming each setting that differs (old -> new) when this folder holds a
        search with other fixed settings; nested settings are compared key by key."""
        if not self.exists():
            return
        changed = self.read().fixed.differences(fixed)
        if changed:
            raise RunError(
                f"{self.path} holds a search with other settings ({'; '.join(changed)}); "
                "continue it with the same settings or choose another --run-dir"
            )

    def distilled_dir(self, trial: int) -> Path:
        return self.path / "distilled" / f"trial-{trial}"

    def read_distilled(self, trial: int) -> DistillRecord | None:
        """The result of `hwkd distill --trial N`, None when it has not finished."""
        return _read_record(self.distilled_dir(trial) / "result.json", DistillRecord.from_dict)

    def distilled_trials(self) -> list[int]:
        """The trials with a finished full distillation."""
        found = (p.parent.name.removeprefix("trial-") for p in (self.path / "distilled").glob("trial-*/result.json"))
        return sorted(int(n) for n in found if n.isdigit())

    def compressed_dir(self, trial: int, name: str) -> Path:
        return self.path / "compressed" / f"trial-{trial}-{name}"

    def read_compressed(self, trial: int, name: str) -> CompressRecord | None:
        """The result of `hwkd compress --trial N --name NAME`, None when it has not finished."""
        return _read_record(self.compressed_dir(trial, name) / "result.json", CompressRecord.from_dict)

    def compressed(self) -> list[tuple[int, str]]:
        """(trial, name) of every finished compression."""
        out = []
        for path in sorted((self.path / "compressed").glob("trial-*-*/result.json")):
            number, _, name = path.parent.name.removeprefix("trial-").partition("-")
            if number.isdigit():
                out.append((int(number), name))
        return out

    def write_compressed(self, record: CompressRecord) -> None:
        write_atomic(self.compressed_dir(record.trial, record.name) / "result.json",
                     json.dumps(record.to_dict(), indent=2) + "\n")

    def exports(self) -> list[ExportSummary]:
        """The exports written to their default place (RUN/export/), each from its manifest."""
        out = []
        for path in sorted((self.path / "export").glob("*/manifest.json")):
            try:
                out.append(ExportSummary.from_manifest(json.loads(path.read_text())))
            except (OSError, json.JSONDecodeError, TypeError, ValueError, RunError):
                continue  # a foreign or half-written folder is not an export of this run
        return out

    def write_distilled(self, record: DistillRecord) -> None:
        write_atomic(self.distilled_dir(record.trial) / "result.json", json.dumps(record.to_dict(), indent=2) + "\n")


def _read_record(path: Path, from_dict: Callable[[dict[str, Any]], R]) -> R | None:
    """A record kept as JSON in `path`; None when the file is not there (not finished yet)."""
    if not path.is_file():
        return None
    try:
        return from_dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, TypeError, ValueError) as exc:
        raise RunError(f"{path}: unreadable ({exc})") from None


def open_run(run: str | os.PathLike[str]) -> RunFolder:
    folder = RunFolder(Path(run))
    if not folder.path.is_dir():
        raise RunError(f"{run}: no such run folder")
    folder.read()
    return folder


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
