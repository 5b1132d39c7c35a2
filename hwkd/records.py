"""The records a search writes and the later commands read, one frozen type per file or attribute set.

- `RunRecord`: `RUN/run.json` (the configuration, with the `FixedSettings` a continued run must
  keep; the dataset; the teacher; the device profile; library versions).
- `TrialOutcome`: one trial, from Optuna's state and values and the user attributes the search
  set on it (architecture, latency and its trust, memory, duplicate, reason of failure).
- `DistillRecord`: `RUN/distilled/trial-N/result.json`, written by `hwkd distill`.

Each has `to_dict`/`from_dict`; `to_dict` gives the JSON the files have always held, plus a
`version`. Files without one were written before records were versioned and read as version 1;
a newer version is refused with a one-line error instead of being misread. Nothing outside this
module indexes those dicts by string keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from hwkd.distillation.config import FULL_LEGACY, BriefConfig, FullConfig, setting_changes
from hwkd.errors import RunError

RECORD_VERSION = 2  # 2: trials keep val_accuracy as an attribute, the objective may be a blend


def check_version(data: Mapping[str, Any], what: str) -> None:
    version = data.get("version", 1)
    if not isinstance(version, int) or version > RECORD_VERSION:
        raise RunError(f"{what} has record version {version!r}; this hwkd reads versions up to {RECORD_VERSION} "
                       "(upgrade hwkd)")


def _required(data: Mapping[str, Any], what: str, *keys: str) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise RunError(f"{what}: missing {', '.join(missing)}; not written by hwkd")


# ---- run.json --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budgets:
    """Limits a student must meet to be trained; None: no limit."""

    max_latency_ms: float | None = None
    max_memory_kb: float | None = None  # peak activation memory, KiB
    max_params: int | None = None  # parameters of the deployed (BN-folded) student

    def active(self) -> bool:
        return any(v is not None for v in asdict(self).values())

    def violations(self, latency_ms: float, peak_memory_bytes: int, params_bytes: int) -> dict[str, float]:
        """Optuna constraint values by budget, <= 0 when met (one per active budget)."""
        values = {}
        if self.max_latency_ms is not None:
            values["max_latency_ms"] = latency_ms - self.max_latency_ms
        if self.max_memory_kb is not None:
            values["max_memory_kb"] = peak_memory_bytes / 1024 - self.max_memory_kb
        if self.max_params is not None:
            values["max_params"] = params_bytes / 4 - self.max_params
        return values

    def reasons(self, latency_ms: float, peak_memory_bytes: int, params_bytes: int) -> list[str]:
        """Why a student with these figures is over the budgets; empty when it meets them."""
        out = []
        if self.max_latency_ms is not None and latency_ms > self.max_latency_ms:
            out.append(f"latency {latency_ms:.3f} ms > --max-latency-ms {self.max_latency_ms:g}")
        if self.max_memory_kb is not None and peak_memory_bytes / 1024 > self.max_memory_kb:
            out.append(f"peak memory {peak_memory_bytes / 1024:.1f} KiB > --max-memory-kb {self.max_memory_kb:g}")
        if self.max_params is not None and params_bytes / 4 > self.max_params:
            out.append(f"{params_bytes // 4} parameters > --max-params {self.max_params}")
        return out


@dataclass(frozen=True)
class FixedSettings:
    """The settings that change what a trial measures: a run continues only with the same values."""

    space: str
    device: str
    data: str
    data_dir: str | None
    teacher: str | None  # a file; None: hwkd's default teacher
    brief: BriefConfig
    input_shape: tuple[int, ...]
    num_classes: int
    latency_source: str
    threads: int | None

    def to_dict(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in fields(self)},
                "brief": asdict(self.brief), "input_shape": list(self.input_shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FixedSettings:
        _required(data, "run.json config", "space", "device", "data", "input_shape", "num_classes")
        return cls(
            space=str(data["space"]), device=str(data["device"]), data=str(data["data"]),
            data_dir=data.get("data_dir"), teacher=data.get("teacher"),
            # older runs all used KD and ranked by accuracy alone
            brief=BriefConfig(**{"loss": "kd", "synflow_points": 0.0, **data.get("brief", {})}),
            input_shape=tuple(int(d) for d in data["input_shape"]),
            num_classes=int(data["num_classes"]), latency_source=str(data.get("latency_source", "auto")),
            threads=None if data.get("threads") is None else int(data["threads"]),
        )

    def differences(self, new: FixedSettings) -> list[str]:
        """'key: old -> new' for each setting that differs; nested settings key by key."""
        return setting_changes(self.to_dict(), new.to_dict())


@dataclass(frozen=True)
class RunConfig:
    """A search's whole configuration as run.json keeps it: the fixed settings and those a
    continued run may change."""

    fixed: FixedSettings
    run_dir: str
    storage: str | None  # None: the run folder's study.db; never holds a password
    sampler: str
    seed: int
    budgets: Budgets
    train_device: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.fixed.to_dict(), "run_dir": self.run_dir, "storage": self.storage, "sampler": self.sampler,
                "seed": self.seed, "budgets": asdict(self.budgets), "train_device": self.train_device}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        return cls(
            fixed=FixedSettings.from_dict(data), run_dir=str(data.get("run_dir", "")), storage=data.get("storage"),
            sampler=str(data.get("sampler", "tpe")), seed=int(data.get("seed", 0)),
            budgets=Budgets(**data.get("budgets", {})), train_device=str(data.get("train_device", "cpu")),
        )


@dataclass(frozen=True)
class DatasetRecord:
    name: str
    source: str
    fingerprint: str
    train: int
    brief_train: int
    val: int
    test: int
    classes: tuple[str, ...]
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "classes": list(self.classes), "input_shape": list(self.input_shape),
                "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetRecord:
        _required(data, "run.json dataset", *(f.name for f in fields(cls)))
        return cls(
            name=str(data["name"]), source=str(data["source"]), fingerprint=str(data["fingerprint"]),
            train=int(data["train"]), brief_train=int(data["brief_train"]), val=int(data["val"]),
            test=int(data["test"]), classes=tuple(data["classes"]), input_shape=tuple(data["input_shape"]),
            mean=tuple(data["mean"]), std=tuple(data["std"]),
        )


@dataclass(frozen=True)
class TeacherRecord:
    name: str
    kind: str  # the format of `file`: how hwkd loads it
    source: str  # where it came from (the --teacher file, or hwkd's cache for the default teacher)
    file: str  # its copy in the run folder
    sha256: str
    train_accuracy: float
    val_accuracy: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TeacherRecord:
        _required(data, "run.json teacher", *(f.name for f in fields(cls)))
        return cls(**{f.name: data[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class RunRecord:
    """`RUN/run.json`."""

    config: RunConfig
    dataset: DatasetRecord
    teacher: TeacherRecord
    device_profile: dict[str, Any]  # DeviceProfile.summary() of the profile searched on
    space: dict[str, Any]  # SearchSpace.summary()
    libraries: dict[str, str]
    created: str
    updated: str
    version: int = RECORD_VERSION

    @property
    def fixed(self) -> FixedSettings:
        return self.config.fixed

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "created": self.created, "updated": self.updated,
                "config": self.config.to_dict(), "dataset": self.dataset.to_dict(), "teacher": self.teacher.to_dict(),
                "device_profile": self.device_profile, "space": self.space, "libraries": self.libraries}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRecord:
        check_version(data, "run.json")
        _required(data, "run.json", "config", "dataset", "teacher")
        return cls(
            config=RunConfig.from_dict(data["config"]), dataset=DatasetRecord.from_dict(data["dataset"]),
            teacher=TeacherRecord.from_dict(data["teacher"]), device_profile=dict(data.get("device_profile", {})),
            space=dict(data.get("space", {})), libraries=dict(data.get("libraries", {})),
            created=str(data.get("created", "")), updated=str(data.get("updated", "")), version=RECORD_VERSION,
        )


# ---- a trial -----------------------------------------------------------------------------------

# Optuna's trial states as hwkd reports them: a pruned trial is a student hwkd refused to train.
_STATES = {"PRUNED": "INFEASIBLE"}


@dataclass(frozen=True)
class TrialOutcome:
    """One trial of the study: Optuna's state and values, and the attributes the search set on it.

    The attributes are written as the trial goes (`TrialWriter`), so a trial cut off midway still
    tells what it was doing; every field but `number` and `state` may therefore be missing (None).
    """

    number: int
    state: str  # COMPLETE, INFEASIBLE (over a budget or not valid, never trained), FAIL, RUNNING, WAITING
    score: float | None = None  # the objective the search ranked by (BriefConfig.score); accuracy in older runs
    val_accuracy: float | None = None  # after brief distillation
    constraints: Mapping[str, float] = field(default_factory=dict)  # budget name -> excess, <= 0 when met
    # -- user attributes
    arch: str | None = None
    worker: str | None = None  # host:pid of the process that ran it
    planned: bool = False  # one of the opening students spread over the cost range
    function_key: str | None = None
    duplicate_of: int | None = None  # the trial whose result this one reuses
    latency_ms: float | None = None
    model_latency_ms: float | None = None
    latency_source: str | None = None  # "model" or "measured"
    latency_calibrated: bool = False  # the run's profile was fitted to measurements of the board
    latency_expected_error_pct: float | None = None  # that fit's leave-one-out median error
    peak_memory_bytes: int | None = None
    params_bytes: int | None = None
    macs: int | None = None
    synflow: float | None = None  # log10 SynFlow of the untrained student (hwkd.zero_cost), a second accuracy proxy
    train_images_per_s: float | None = None
    train_seconds: float | None = None
    duration_s: float | None = None
    infeasible: str | None = None  # why it was not trained
    fail_reason: str | None = None

    @property
    def reason(self) -> str | None:
        return self.infeasible or self.fail_reason

    @property
    def cost_nothing(self) -> bool:
        """Estimated and trained nothing: its proposal was not a valid student, or its student computes
        what an earlier one computes (that result is reused). Such a trial uses none of `--trials`."""
        return self.duplicate_of is not None or (self.infeasible is not None and self.latency_ms is None)

    def attrs(self) -> dict[str, Any]:
        """The user attributes this outcome sets (fields left at their default are not written)."""
        out: dict[str, Any] = {"version": RECORD_VERSION}
        for f in fields(self):
            if f.name in _NOT_ATTRS:
                continue
            value = getattr(self, f.name)
            if value != f.default:
                out[f.name] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "state": self.state, "score": self.score,
                "constraints": dict(self.constraints), **self.attrs()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialOutcome:
        check_version(data, f"trial {data.get('number')}")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def from_trial(cls, trial: Any) -> TrialOutcome:
        """From an Optuna FrozenTrial."""
        state = _STATES.get(trial.state.name, trial.state.name)
        prefix = "constraints:"
        constraints = {k[len(prefix):]: float(v) for k, v in trial.system_attrs.items() if k.startswith(prefix)}
        score = None if trial.values is None else float(trial.values[0])
        # runs before record version 2 ranked by accuracy alone and kept it only as the objective
        return cls.from_dict({"val_accuracy": score, **trial.user_attrs, "number": trial.number, "state": state,
                              "score": score, "constraints": constraints})

    def trained(self) -> TrainedStudent:
        """This trial as a trained student; a one-line error when it is not one."""
        if self.state != "COMPLETE":
            what = self.state.lower()
            raise RunError(f"--trial {self.number} is {what} ({self.reason or what}) and was never trained; "
                           "choose a completed trial (hwkd report lists them)")
        figures = {name: getattr(self, name) for name in _TRAINED_FIGURES}
        missing = [name for name, value in figures.items() if value is None]
        if missing:
            raise RunError(f"trial {self.number} records no {', '.join(missing)}; not written by hwkd")
        return TrainedStudent(number=self.number, latency_source=self.latency_source or "model",
                              latency_calibrated=self.latency_calibrated,
                              latency_expected_error_pct=self.latency_expected_error_pct, **figures)


_TRAINED_FIGURES = ("arch", "val_accuracy", "latency_ms", "peak_memory_bytes", "params_bytes", "macs")
_NOT_ATTRS = frozenset({"number", "state", "score", "constraints"})


def planned_attrs() -> dict[str, Any]:
    """The user attributes of a queued opening student."""
    return TrialOutcome(number=-1, state="WAITING", planned=True).attrs()


class TrialWriter:
    """Writes a trial's outcome into its Optuna user attributes as the trial goes, each changed
    attribute once (every write is a round trip to the study's storage)."""

    def __init__(self, trial: Any) -> None:
        self._trial = trial
        self._written = dict(trial.user_attrs)
        self.outcome = TrialOutcome.from_dict({**self._written, "number": trial.number, "state": "RUNNING"})

    def update(self, **changes: Any) -> TrialOutcome:
        self.outcome = replace(self.outcome, **changes)
        for name, value in self.outcome.attrs().items():
            if self._written.get(name, _UNSET) != value:
                self._trial.set_user_attr(name, value)
                self._written[name] = value
        return self.outcome


_UNSET = object()


@dataclass(frozen=True)
class TrainedStudent:
    """A completed trial: a student that was trained, with the figures the search took."""

    number: int
    arch: str
    val_accuracy: float  # after brief distillation
    latency_ms: float
    latency_source: str
    latency_calibrated: bool
    latency_expected_error_pct: float | None
    peak_memory_bytes: int
    params_bytes: int
    macs: int


def _full_config(data: Mapping[str, Any]) -> FullConfig:
    """A FullConfig as a result file keeps it (JSON has lists where the config has tuples)."""
    config = {**FULL_LEGACY, **data}
    for key in ("teacher_layers", "student_layers"):
        config[key] = tuple(config.get(key, ()))
    return FullConfig(**config)


# ---- a fully distilled student ------------------------------------------------------------------


@dataclass(frozen=True)
class DistillRecord:
    """`RUN/distilled/trial-N/result.json`."""

    trial: int
    arch: str
    test_accuracy: float
    val_accuracy: float
    teacher_test_accuracy: float
    brief_val_accuracy: float
    brief_steps: int
    brief_batch_size: int
    epochs: int
    steps: int
    train_images: int
    seconds: float
    images_per_s: float
    layer_pairs: tuple[tuple[str, str], ...]
    config: FullConfig
    train_device: str
    finished: str
    libraries: dict[str, str]
    version: int = RECORD_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in fields(self)},
                "layer_pairs": [list(p) for p in self.layer_pairs], "config": asdict(self.config)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DistillRecord:
        check_version(data, "result.json")
        _required(data, "result.json", "trial", "arch", "test_accuracy", "config")
        return cls(
            trial=int(data["trial"]), arch=str(data["arch"]), test_accuracy=float(data["test_accuracy"]),
            val_accuracy=float(data.get("val_accuracy", float("nan"))),
            teacher_test_accuracy=float(data.get("teacher_test_accuracy", float("nan"))),
            brief_val_accuracy=float(data.get("brief_val_accuracy", float("nan"))),
            brief_steps=int(data.get("brief_steps", 0)), brief_batch_size=int(data.get("brief_batch_size", 0)),
            epochs=int(data.get("epochs", 0)), steps=int(data.get("steps", 0)),
            train_images=int(data.get("train_images", 0)), seconds=float(data.get("seconds", 0.0)),
            images_per_s=float(data.get("images_per_s", 0.0)),
            layer_pairs=tuple((str(a), str(b)) for a, b in data.get("layer_pairs", [])),
            config=_full_config(data["config"]), train_device=str(data.get("train_device", "")),
            finished=str(data.get("finished", "")), libraries=dict(data.get("libraries", {})),
        )


# ---- a pruned student -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CompressRecord:
    """`RUN/compressed/trial-N-NAME/result.json`, written by `hwkd compress`."""

    trial: int
    name: str
    arch: str
    target_ms: float
    latency_ms: float  # of the pruned student, on the run's device profile
    latency_source: str
    latency_calibrated: bool
    latency_expected_error_pct: float | None
    device: str
    peak_memory_bytes: int
    params_bytes: int
    macs: int
    unpruned_latency_ms: float  # the same estimate of the unpruned student
    unpruned_params_bytes: int
    unpruned_macs: int
    channels_before: int  # output channels of the student's convolutions
    channels_removed: int
    prune_steps: int
    unpruned_test_accuracy: float  # the fully distilled student's
    pruned_test_accuracy: float  # right after pruning, before fine-tuning
    test_accuracy: float  # after fine-tuning (= pruned_test_accuracy with no fine-tuning)
    val_accuracy: float
    finetune_epochs: int
    finetune: FullConfig
    seconds: float
    shapes: dict[str, dict[str, int]]  # layer -> sizes: rebuilds the pruned student (hwkd.pruning.reshape_like)
    distilled_sha256: str  # the fully distilled student.pt it was pruned from
    finished: str
    libraries: dict[str, str]
    version: int = RECORD_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, "finetune": asdict(self.finetune)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompressRecord:
        check_version(data, "result.json")
        names = [f.name for f in fields(cls) if f.name != "version"]
        _required(data, "result.json", *names)
        values = {name: data[name] for name in names}
        values["finetune"] = _full_config(data["finetune"])
        values["shapes"] = {str(k): {str(a): int(v) for a, v in s.items()} for k, s in data["shapes"].items()}
        return cls(**values)


# ---- an export ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportSummary:
    """What the report takes from an export's `manifest.json`."""

    trial: int
    compressed: str | None  # the pruned student's name, None for the distilled one
    latency_ms: float  # the fp32 student's estimate (hwkd does not model int8 kernels)
    test_accuracy: Mapping[str, float]  # by format: torch, onnx, onnx_int8, tvm

    @classmethod
    def from_manifest(cls, data: Mapping[str, Any]) -> ExportSummary:
        _required(data, "manifest.json", "trial", "latency_ms", "test_accuracy")
        compressed = data.get("compressed") or {}
        return cls(trial=int(data["trial"]), compressed=compressed.get("name"), latency_ms=float(data["latency_ms"]),
                   test_accuracy={str(k): float(v) for k, v in data["test_accuracy"].items()})
