"""A finished search's context (what its run folder knows: data, space, device, teacher) and its trials.

`hwkd distill` and `hwkd export` start here. The student a trial names is rebuilt from its
architecture id; its fully distilled weights live in `RUN/distilled/trial-N/`.

    RUN/distilled/trial-N/checkpoint.pt   written every epoch (resume)
    RUN/distilled/trial-N/student.pt      the final weights (state dict)
    RUN/distilled/trial-N/result.json     test accuracy, the teacher's, the brief one, settings
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hwkd.data.datasets import Dataset, load_dataset
from hwkd.errors import RunError
from hwkd.profiles import DeviceProfile, load_profile
from hwkd.records import DistillRecord, RunRecord, TrainedStudent, TrialOutcome
from hwkd.run_folder import RunFolder, open_run
from hwkd.spaces import SearchSpace, load_space


@dataclass(frozen=True)
class RunContext:
    folder: RunFolder
    record: RunRecord  # run.json
    dataset: Dataset
    space: SearchSpace
    profile: DeviceProfile

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.record.fixed.input_shape

    @property
    def num_classes(self) -> int:
        return self.record.fixed.num_classes

    def teacher_file(self) -> tuple[Path, str]:
        teacher = self.record.teacher
        return self.folder.path / teacher.file, teacher.kind

    def distilled_dir(self, trial: int) -> Path:
        return self.folder.distilled_dir(trial)

    def distilled_result(self, trial: int) -> DistillRecord | None:
        return self.folder.read_distilled(trial)


def open_context(run: str | Path) -> RunContext:
    folder = open_run(run)
    record = folder.read()
    fixed = record.fixed
    profile = load_profile(fixed.device)
    if fixed.threads is not None:
        profile = profile.with_threads(fixed.threads)
    dataset = load_dataset(fixed.data, fixed.data_dir)
    if dataset.fingerprint() != record.dataset.fingerprint:
        raise RunError(f"the {fixed.data} data changed since {folder.path} was searched "
                       "(its fingerprint differs); use the same files")
    return RunContext(folder, record, dataset, load_space(fixed.space), profile)


def load_trial(context: RunContext, number: int) -> TrainedStudent:
    """The trial's trained student; one-line errors for trials that do not exist or were never trained."""
    from hwkd.reports import load_study

    study = load_study(context.folder)
    trials = study.get_trials(deepcopy=False)
    ran = [t.number for t in trials if t.state.name != "WAITING"]
    if not 0 <= number < len(trials) or (trials[number].state.name == "WAITING" and number > max(ran, default=-1)):
        raise RunError(f"--trial {number}: {context.folder.path} has trials 0..{max(ran, default=-1)}")
    trial = trials[number]
    if trial.state.name == "WAITING":
        raise RunError(f"--trial {number} has not run yet (it waits in the study for a worker); choose a completed "
                       "trial (hwkd report lists them)")
    return TrialOutcome.from_trial(trial).trained()
