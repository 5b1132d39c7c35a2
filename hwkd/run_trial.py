"""One trial of a finished search, with what its run folder knows: data, space, device, teacher.

`hwkd distill` and `hwkd export` start here. The student a trial names is rebuilt from its
architecture id; its fully distilled weights live in `RUN/distilled/trial-N/`.

    RUN/distilled/trial-N/checkpoint.pt   written every epoch (resume)
    RUN/distilled/trial-N/student.pt      the final weights (state dict)
    RUN/distilled/trial-N/result.json     test accuracy, the teacher's, the brief one, settings
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwkd.data.datasets import Dataset, load_dataset
from hwkd.errors import RunError
from hwkd.profiles import DeviceProfile, load_profile
from hwkd.run_folder import RunFolder, open_run
from hwkd.spaces import SearchSpace, load_space


@dataclass(frozen=True)
class TrialRecord:
    number: int
    arch: str
    val_accuracy: float  # after brief distillation
    latency_ms: float
    latency_source: str
    latency_calibrated: bool  # the run's profile was fitted to measurements of the board
    latency_expected_error_pct: float | None  # that fit's leave-one-out median error
    peak_memory_bytes: int
    params_bytes: int
    macs: int


@dataclass(frozen=True)
class RunContext:
    folder: RunFolder
    info: dict[str, Any]  # run.json
    dataset: Dataset
    space: SearchSpace
    profile: DeviceProfile

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.info["config"]["input_shape"])

    @property
    def num_classes(self) -> int:
        return int(self.info["config"]["num_classes"])

    def teacher_file(self) -> tuple[Path, str]:
        teacher = self.info.get("teacher") or {}
        if "file" not in teacher:
            raise RunError(f"{self.folder.run_json}: records no teacher; run hwkd search on it first")
        return self.folder.path / teacher["file"], str(teacher["kind"])

    def distilled_dir(self, trial: int) -> Path:
        return self.folder.path / "distilled" / f"trial-{trial}"

    def distilled_result(self, trial: int) -> dict[str, Any] | None:
        path = self.distilled_dir(trial) / "result.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise RunError(f"{path}: unreadable ({exc})") from None


def open_context(run: str | Path) -> RunContext:
    folder = open_run(run)
    info = folder.read()
    config = info["config"]
    profile = load_profile(config["device"])
    if config.get("threads") is not None:
        profile = profile.with_threads(int(config["threads"]))
    dataset = load_dataset(config["data"], config.get("data_dir"))
    if dataset.fingerprint() != info.get("dataset", {}).get("fingerprint"):
        raise RunError(f"the {config['data']} data changed since {folder.path} was searched "
                       "(its fingerprint differs); use the same files")
    return RunContext(folder, info, dataset, load_space(config["space"]), profile)


def load_trial(context: RunContext, number: int) -> TrialRecord:
    """The trial's record; one-line errors for trials that do not exist or were never trained."""
    from hwkd.report import load_study

    study = load_study(context.folder)
    trials = study.get_trials(deepcopy=False)
    ran = [t.number for t in trials if t.state.name != "WAITING"]
    if not 0 <= number < len(trials) or (trials[number].state.name == "WAITING" and number > max(ran, default=-1)):
        raise RunError(f"--trial {number}: {context.folder.path} has trials 0..{max(ran, default=-1)}")
    trial = trials[number]
    if trial.state.name == "WAITING":
        raise RunError(f"--trial {number} has not run yet (it waits in the study for a worker); choose a completed "
                       "trial (hwkd report lists them)")
    attrs = trial.user_attrs
    state = trial.state.name
    if state != "COMPLETE":
        reason = attrs.get("infeasible") or attrs.get("fail_reason") or state.lower()
        what = "infeasible" if state == "PRUNED" else state.lower()
        raise RunError(f"--trial {number} is {what} ({reason}) and was never trained; choose a completed trial "
                       "(hwkd report lists them)")
    return TrialRecord(
        number=number,
        arch=str(attrs["arch"]),
        val_accuracy=float(trial.values[0]),
        latency_ms=float(attrs["latency_ms"]),
        latency_source=str(attrs.get("latency_source", "model")),
        latency_calibrated=bool(attrs.get("latency_calibrated", False)),
        latency_expected_error_pct=attrs.get("latency_expected_error_pct"),
        peak_memory_bytes=int(attrs["peak_memory_bytes"]),
        params_bytes=int(attrs["params_bytes"]),
        macs=int(attrs["macs"]),
    )
