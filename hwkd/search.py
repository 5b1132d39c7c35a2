"""`hwkd search`: an Optuna study over a space's students, scored on a device and by distillation.

Each trial: the sampler proposes an architecture; hwkd estimates it on the device (TVM-compiled
graph, cost model or measurement); a student over a budget (`--max-latency-ms`,
`--max-memory-kb`, `--max-params`) is recorded as infeasible with its reason and never trained;
the others are distilled briefly from the teacher and score their validation accuracy. The two
objectives are validation accuracy (maximize) and latency_ms (minimize).

The study lives in the run folder (SQLite by default); running the same command again continues
it. Finished trials are never lost or repeated: a student proposed again reuses its result, a
trial cut off by Ctrl-C or a crash is marked failed and the search goes on from there.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from hwkd.data.datasets import Dataset, load_dataset
from hwkd.distill.brief import TrainingDiverged, brief_distill, brief_subset, pick_device
from hwkd.distill.config import BriefConfig
from hwkd.errors import ArchitectureError, CompileError, HwkdError, RunError
from hwkd.latency.estimator import Estimate, Estimator
from hwkd.profiles import DeviceProfile, load_profile
from hwkd.progress import progress_bar
from hwkd.run_folder import STUDY_NAME, RunFolder, library_versions
from hwkd.spaces import SearchSpace, load_space
from hwkd.teacher import Teacher, copy_into, default_teacher, load_run_teacher, load_teacher_file

log = logging.getLogger(__name__)

DEFAULT_SPACE = "nb201-widths"
DEFAULT_TRIALS = 16
STARTUP_TRIALS = 8  # spread over the cost range (hwkd.initial_design), then the sampler's own


@dataclass(frozen=True)
class Budgets:
    max_latency_ms: float | None = None
    max_memory_kb: float | None = None  # peak activation memory, KiB
    max_params: int | None = None  # parameters of the deployed (BN-folded) student

    def active(self) -> bool:
        return any(v is not None for v in asdict(self).values())

    def violations(self, estimate: Estimate) -> dict[str, float]:
        """Optuna constraint values by budget, <= 0 when met (one per active budget)."""
        values = {}
        if self.max_latency_ms is not None:
            values["max_latency_ms"] = estimate.latency_ms - self.max_latency_ms
        if self.max_memory_kb is not None:
            values["max_memory_kb"] = estimate.peak_memory_bytes / 1024 - self.max_memory_kb
        if self.max_params is not None:
            values["max_params"] = estimate.params_bytes / 4 - self.max_params
        return values

    def reasons(self, estimate: Estimate) -> list[str]:
        out = []
        if self.max_latency_ms is not None and estimate.latency_ms > self.max_latency_ms:
            out.append(f"latency {estimate.latency_ms:.3f} ms > --max-latency-ms {self.max_latency_ms:g}")
        if self.max_memory_kb is not None and estimate.peak_memory_bytes / 1024 > self.max_memory_kb:
            out.append(f"peak memory {estimate.peak_memory_bytes / 1024:.1f} KiB > --max-memory-kb {self.max_memory_kb:g}")
        if self.max_params is not None and estimate.params_bytes / 4 > self.max_params:
            out.append(f"{estimate.params_bytes // 4} parameters > --max-params {self.max_params}")
        return out


@dataclass(frozen=True)
class SearchConfig:
    device: str = "rpi4"
    space: str = DEFAULT_SPACE
    data: str = "embedded"
    data_dir: str | None = None
    teacher: str | None = None  # a file; None trains hwkd's default teacher
    run_dir: str | None = None
    storage: str | None = None
    trials: int | None = None
    timeout_s: float | None = None
    sampler: str = "tpe"
    seed: int = 0
    budgets: Budgets = field(default_factory=Budgets)
    brief: BriefConfig = field(default_factory=BriefConfig)
    train_device: str = "auto"
    latency_source: str = "auto"
    threads: int | None = None

    def resolved_run_dir(self) -> Path:
        if self.run_dir:
            return Path(self.run_dir)
        space = Path(self.space).stem
        device = Path(self.device).stem
        return Path("hwkd-runs") / f"{space}-{device}-{self.data}"


@dataclass(frozen=True)
class SearchSummary:
    run_dir: Path
    new_trials: int
    completed: int
    infeasible: int
    failed: int
    interrupted: bool
    seconds: float
    front_table: str
    front_size: int


class Search:
    """Sets up data, teacher, estimator and study; `run()` adds trials."""

    def __init__(self, config: SearchConfig) -> None:
        self.config = config
        self.folder = RunFolder(config.resolved_run_dir())
        self.profile: DeviceProfile = load_profile(config.device)
        if config.threads is not None:
            self.profile = self.profile.with_threads(config.threads)
        self.space: SearchSpace = load_space(config.space)
        if config.sampler not in ("tpe", "nsga2"):
            raise HwkdError(f"--sampler {config.sampler!r}: choose tpe or nsga2")
        if config.trials is not None and config.trials < 1:
            raise HwkdError(f"--trials {config.trials}: must be at least 1")
        self.train_device = pick_device(config.train_device)
        self.estimator = Estimator(self.profile, config.latency_source)  # type: ignore[arg-type]
        self.dataset: Dataset = load_dataset(config.data, config.data_dir)
        self.brief_data = brief_subset(self.dataset, config.brief)  # what every trial trains on
        self.input_shape = self.dataset.input_shape
        self.num_classes = self.dataset.num_classes
        self._check_space_builds()

    # ---- set-up -------------------------------------------------------------------------------

    def fixed_settings(self) -> dict[str, Any]:
        c = self.config
        return {
            "space": c.space,
            "device": c.device,
            "data": c.data,
            "data_dir": c.data_dir,
            "teacher": c.teacher,
            "brief": asdict(c.brief),
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "latency_source": c.latency_source,
            "threads": self.profile.runtime.threads,
        }

    def _check_space_builds(self) -> None:
        try:
            arch = self.space.sample(random.Random(0))
            self.space.build(arch, self.num_classes, self.input_shape)
        except ArchitectureError:
            raise
        except Exception as exc:  # noqa: BLE001 - a space file that cannot build for this data
            raise HwkdError(f"space {self.space.name} cannot build students for {self.dataset.name} "
                            f"images {self.input_shape}: {exc}") from None

    def prepare(self) -> tuple[Teacher, torch.Tensor]:
        """The teacher and its logits on the brief distillations' training images (once per run)."""
        self.folder.check_same_run(self.fixed_settings())
        self.folder.path.mkdir(parents=True, exist_ok=True)
        teacher = self._teacher()
        logits = self._teacher_logits(teacher)
        self._write_run_json(teacher, logits)
        return teacher, logits

    def _teacher(self) -> Teacher:
        """The run's teacher: a continued run keeps the one its trials were distilled from."""
        recorded = (self.folder.read().get("teacher") or {}) if self.folder.exists() else {}
        if self.config.teacher:
            teacher = load_teacher_file(self.config.teacher, self.dataset)
            if recorded.get("sha256") not in (None, teacher.sha256):
                raise RunError(f"--teacher {self.config.teacher} is not the teacher {self.folder.path} was searched "
                               f"with (sha256 {teacher.sha256[:12]}, the run's {recorded['sha256'][:12]}); "
                               "continue with the same file or choose another --run-dir")
            return teacher
        kept = self.folder.path / recorded["file"] if "file" in recorded else None
        if kept is not None and kept.is_file():  # not retrained: the cache may be gone or newer
            log.info("default teacher: the run's copy %s", kept)
            return load_run_teacher(kept, str(recorded["kind"]), self.dataset)
        return default_teacher(self.dataset, self.train_device, progress=log.info)

    def _teacher_logits(self, teacher: Teacher) -> torch.Tensor:
        path = self.folder.teacher_logits
        key = f"{teacher.sha256}-{self.brief_data.fingerprint()}"
        if path.is_file():
            try:
                saved = torch.load(path, map_location="cpu", weights_only=True)
                if saved.get("key") == key and saved["logits"].shape == (len(self.brief_data.train), self.num_classes):
                    return saved["logits"]
            except Exception as exc:  # noqa: BLE001 - a corrupt cache is recomputed
                log.warning("%s is unreadable (%s); computing the teacher's outputs again", path, exc)
        log.info("computing the teacher's outputs on %d training images (once per run)", len(self.brief_data.train))
        logits = teacher.logits(self.dataset.normalize(self.brief_data.train.images))
        partial = path.with_name(path.name + ".partial")
        torch.save({"key": key, "logits": logits}, partial)
        os.replace(partial, path)
        return logits

    def _write_run_json(self, teacher: Teacher, logits: torch.Tensor) -> None:
        previous = self.folder.read() if self.folder.exists() else {}
        teacher_info = previous.get("teacher")
        if not teacher_info or teacher_info.get("sha256") != teacher.sha256:
            train_acc = float((logits.argmax(1) == self.brief_data.train.labels).float().mean())
            val = teacher.logits(self.dataset.normalize(self.dataset.val.images)).argmax(1)
            copy = copy_into(teacher, self.folder.path)
            teacher_info = {
                "name": teacher.name, "kind": teacher.kind, "source": teacher.path, "file": copy.name,
                "sha256": teacher.sha256, "train_accuracy": train_acc,
                "val_accuracy": float((val == self.dataset.val.labels).float().mean()),
            }
        c = self.config
        data = {
            "created": previous.get("created", _now()),
            "updated": _now(),
            "config": {
                **self.fixed_settings(),
                "run_dir": str(self.folder.path),
                "storage": c.storage or self.folder.default_storage(),
                "sampler": c.sampler,
                "seed": c.seed,
                "budgets": asdict(c.budgets),
                "train_device": str(self.train_device),
            },
            "dataset": {
                "name": self.dataset.name, "source": self.dataset.source, "fingerprint": self.dataset.fingerprint(),
                "train": len(self.dataset.train), "brief_train": len(self.brief_data.train),
                "val": len(self.dataset.val), "test": len(self.dataset.test),
                "classes": list(self.dataset.class_names), "input_shape": list(self.input_shape),
                "mean": list(self.dataset.mean), "std": list(self.dataset.std),
            },
            "teacher": teacher_info,
            "device_profile": self.profile.summary(),
            "space": self.space.summary(),
            "libraries": library_versions(),
        }
        self.folder.write(data)

    def open_study(self) -> Any:
        import warnings

        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # hwkd logs each trial itself
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

        storage = self.config.storage or self.folder.default_storage()
        existing = 0
        try:
            summaries = optuna.get_all_study_summaries(storage)
            existing = next((s.n_trials for s in summaries if s.study_name == STUDY_NAME), 0)
        except Exception:  # noqa: BLE001 - a new storage has no studies yet
            existing = 0
        seed = self.config.seed + existing  # a resumed study does not replay its first proposals
        if self.config.sampler == "nsga2":
            population = max(8, min(50, (self.config.trials or DEFAULT_TRIALS) // 2))
            sampler: Any = optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
        else:
            sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=STARTUP_TRIALS)
        try:
            study = optuna.create_study(study_name=STUDY_NAME, storage=storage, sampler=sampler,
                                        directions=["maximize", "minimize"], load_if_exists=True)
        except Exception as exc:  # noqa: BLE001 - storage URLs fail in many ways
            raise RunError(f"--storage {storage}: cannot open the study ({exc})") from None
        if study.metric_names is None:
            study.set_metric_names(["val_accuracy", "latency_ms"])
        _fail_abandoned(study)
        return study

    def startup_plan(self, study: Any) -> list[dict[str, Any]]:
        """Params of the study's first trials: students spread evenly over the space's range of MACs.

        The plan depends only on the space, the data's shape and the seed, so a continued study
        recomputes the same one; empty once the study has that many trials.
        """
        from hwkd.initial_design import spread_by_cost

        done = len(study.get_trials(deepcopy=False))
        if done >= STARTUP_TRIALS:
            return []
        picks = spread_by_cost(self.space, self.num_classes, self.input_shape, STARTUP_TRIALS, self.config.seed)
        if picks and not done:
            log.info("the first %d trials span the space's cost range, from %s to %s", len(picks), picks[0][0],
                     picks[-1][0])
        return [params for _, params in picks]

    # ---- the loop -----------------------------------------------------------------------------

    def run(self, progress: bool | None = None) -> SearchSummary:
        from optuna.trial import TrialState

        start = time.monotonic()
        teacher, logits = self.prepare()
        study = self.open_study()
        plan = self.startup_plan(study)
        known = {t.user_attrs.get("arch"): t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
        trials = self.config.trials if self.config.trials is not None else (None if self.config.timeout_s else DEFAULT_TRIALS)
        show = sys.stderr.isatty() if progress is None else progress
        bar = progress_bar(trials, "trials", "trial", show)
        counts = {"complete": 0, "infeasible": 0, "failed": 0}
        new = 0
        interrupted = False
        log.info("search: %s on %s, %s data, teacher %s, run folder %s", self.space.name, self.profile.name,
                 self.dataset.name, teacher.name, self.folder.path)
        try:
            while trials is None or new < trials:
                if self.config.timeout_s is not None and time.monotonic() - start > self.config.timeout_s:
                    break
                done = len(study.get_trials(deepcopy=False)) if plan else 0
                if done < len(plan):  # enqueued one at a time: no waiting trials are left in the study
                    study.enqueue_trial(plan[done])
                trial = study.ask()
                new += 1
                try:
                    outcome = self._one_trial(study, trial, logits, known)
                except KeyboardInterrupt:
                    trial.set_user_attr("fail_reason", "interrupted by the user")
                    study.tell(trial, state=TrialState.FAIL)
                    raise
                counts[outcome] += 1
                bar.update(1)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
        from hwkd.report import front_table, write_reports

        _, front = write_reports(self.folder, study)
        return SearchSummary(self.folder.path, new, counts["complete"], counts["infeasible"], counts["failed"],
                             interrupted, time.monotonic() - start, front_table(front), len(front))

    def _one_trial(self, study: Any, trial: Any, logits: torch.Tensor, known: dict[str, Any]) -> str:
        from optuna.trial import TrialState

        started = time.monotonic()
        proposed = self.space.suggest(trial)
        try:
            arch = self.space.parse(proposed)
        except ArchitectureError as exc:
            trial.set_user_attr("arch", proposed)
            trial.set_user_attr("infeasible", str(exc))
            study.tell(trial, state=TrialState.PRUNED)
            log.info("trial %d: not a valid student (%s)", trial.number, exc)
            return "infeasible"
        trial.set_user_attr("arch", arch)
        if arch in known:  # proposed before: its result stands, nothing is trained again
            earlier = known[arch]
            for key, value in earlier.user_attrs.items():
                if key not in ("arch", "duplicate_of"):
                    trial.set_user_attr(key, value)
            trial.set_user_attr("duplicate_of", earlier.number)
            study.tell(trial, earlier.values)
            log.info("trial %d: same student as trial %d, result reused", trial.number, earlier.number)
            return "complete"
        try:
            estimate = self.estimator.estimate_arch(self.space, arch, self.input_shape, self.num_classes)
        except CompileError as exc:
            trial.set_user_attr("fail_reason", str(exc))
            study.tell(trial, state=TrialState.FAIL)
            log.warning("trial %d failed: %s", trial.number, exc)
            return "failed"
        for key in ("latency_ms", "model_latency_ms", "peak_memory_bytes", "params_bytes", "macs"):
            trial.set_user_attr(key, getattr(estimate, key))
        trial.set_user_attr("latency_source", estimate.source)
        budgets = self.config.budgets
        # Optuna's own constraints: samplers steer away from infeasible regions
        for key, value in budgets.violations(estimate).items():
            trial.set_constraint(key, value)
        reasons = budgets.reasons(estimate)
        if reasons:
            trial.set_user_attr("infeasible", "; ".join(reasons))
            trial.set_user_attr("duration_s", round(time.monotonic() - started, 3))
            study.tell(trial, state=TrialState.PRUNED)
            log.info("trial %d: %s is over budget (%s), not trained", trial.number, arch, "; ".join(reasons))
            return "infeasible"
        with torch.random.fork_rng():  # initial weights depend on the student and seed, not on earlier trials
            torch.manual_seed(self.config.brief.seed)
            student = self.space.build(arch, self.num_classes, self.input_shape)
        try:
            result = brief_distill(student, self.brief_data, logits, self.config.brief, self.train_device)
        except TrainingDiverged as exc:
            trial.set_user_attr("fail_reason", str(exc))
            study.tell(trial, state=TrialState.FAIL)
            log.warning("trial %d failed: %s", trial.number, exc)
            return "failed"
        trial.set_user_attr("train_images_per_s", round(result.images_per_s, 1))
        trial.set_user_attr("train_seconds", round(result.seconds, 2))
        trial.set_user_attr("duration_s", round(time.monotonic() - started, 3))
        study.tell(trial, [result.val_accuracy, estimate.latency_ms])
        known[arch] = study.trials[trial.number]
        log.info("trial %d: val accuracy %.2f%%, %.3f ms (%s), %.1f MMACs, %.0f s  %s", trial.number,
                 100 * result.val_accuracy, estimate.latency_ms, estimate.source, estimate.macs / 1e6,
                 time.monotonic() - started, arch)
        return "complete"


def _fail_abandoned(study: Any) -> None:
    """Trials left RUNNING by a crash or a kill are marked failed; their work is not trusted."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", "abandoned: the search stopped during it")
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        log.info("trial %d was cut off by an earlier stop; marked failed", trial.number)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
