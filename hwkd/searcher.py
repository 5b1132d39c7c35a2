"""`hwkd search`: an Optuna study over a space's students, scored on a device and by distillation.

Each trial: the sampler proposes an architecture; hwkd estimates it on the device (TVM-compiled
graph, cost model or measurement); a student over a budget (`--max-latency-ms`,
`--max-memory-kb`, `--max-params`) is recorded as infeasible with its reason and never trained;
the others are distilled briefly from the teacher. The two objectives are a score (maximize: the
brief validation accuracy plus `BriefConfig.synflow_points` per decade of the untrained student's
SynFlow) and latency_ms (minimize).

The study lives in the run folder (SQLite by default) or any Optuna storage; running the same
command again continues it, and any number of processes (`--workers`, other machines) add trials
to it together through Optuna's own loop (`study.optimize`). Finished trials are never lost or
repeated: a student that computes what a trained one computes reuses its result, a trial cut off
by Ctrl-C is marked failed, and one whose process died is failed by the heartbeat and run again.
"""

from __future__ import annotations

import logging
import os
import platform
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from hwkd.config_file import dump_config
from hwkd.data.datasets import Dataset, load_dataset
from hwkd.distillation.brief import TrainingDiverged, brief_distill, brief_subset
from hwkd.distillation.config import BriefConfig
from hwkd.errors import ArchitectureError, CompileError, HwkdError, RunError, error_line
from hwkd.file_lock import file_lock
from hwkd.files import write_atomic
from hwkd.latency.estimator import Estimator
from hwkd.profiles import DeviceProfile, load_profile
from hwkd.progress import deferred_interrupt, progress_bar
from hwkd.records import (
    Budgets,
    DatasetRecord,
    FixedSettings,
    RunConfig,
    RunRecord,
    TeacherRecord,
    TrialOutcome,
    TrialWriter,
    planned_attrs,
)
from hwkd.run_folder import STUDY_NAME, RunFolder, library_versions
from hwkd.spaces import SearchSpace, load_space
from hwkd.spaces.equivalence import function_key
from hwkd.storage import check_storage, default_url, hide_secrets, masked, recorded_form, requested_storage
from hwkd.teachers import Teacher, copy_into, default_teacher, load_run_teacher, load_teacher_file
from hwkd.training import pick_device
from hwkd.workers import TrialTickets, WorkerOutcome, run_workers
from hwkd.zero_cost import synflow

log = logging.getLogger(__name__)

DEFAULT_SPACE = "nb201-widths"
DEFAULT_TRIALS = 16
# After the opening students: gp (Optuna's GPSampler, log expected hypervolume improvement), tpe
# (multivariate TPE), nsga2; random: Optuna's RandomSampler from the first trial, a baseline. auto
# (default): gp, the only one above random at 16 trials (benchmarks/search_efficiency.py), but tpe
# under a budget: GPSampler learns only from completed trials, never from students pruned as over it.
SAMPLERS = ("auto", "gp", "tpe", "nsga2", "random")
STARTUP_TRIALS = 8  # spread over the cost range (hwkd.initial_design), then the sampler's own


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
    sampler: str = "auto"
    seed: int = 0
    budgets: Budgets = field(default_factory=Budgets)
    brief: BriefConfig = field(default_factory=BriefConfig)
    train_device: str = "auto"
    latency_source: str = "auto"
    threads: int | None = None
    workers: int = 1  # processes on this machine, each on its share of the cores
    heartbeat_s: int = 60  # a trial whose worker is silent for twice as long is failed and retried once

    def check(self) -> None:
        """Every bad flag value at once, as one line, before anything is loaded or trained."""
        problems = []
        if self.sampler not in SAMPLERS:
            problems.append(f"--sampler {self.sampler!r}: choose {', '.join(SAMPLERS[:-1])} or {SAMPLERS[-1]}")
        if self.trials is not None and self.trials < 1:
            problems.append(f"--trials {self.trials}: must be at least 1")
        if self.timeout_s is not None and not self.timeout_s > 0:
            problems.append(f"--timeout {self.timeout_s:g}: must be a positive number of seconds")
        if self.threads is not None and self.threads < 1:
            problems.append(f"--threads {self.threads}: must be at least 1")
        if self.workers < 1:
            problems.append(f"--workers {self.workers}: must be at least 1")
        if self.heartbeat_s < 1:
            problems.append(f"--heartbeat-s {self.heartbeat_s}: must be at least 1")
        for flag, value in (("--max-latency-ms", self.budgets.max_latency_ms),
                            ("--max-memory-kb", self.budgets.max_memory_kb), ("--max-params", self.budgets.max_params)):
            if value is not None and not value > 0:
                problems.append(f"{flag} {value:g}: must be a positive number (leave it out for no budget)")
        problems += self.brief.problems()
        if problems:
            raise HwkdError("; ".join(problems))

    def as_flags(self) -> dict[str, Any]:
        """The configuration as `hwkd search` flags (without dashes), as `--config` takes it back;
        the storage URL without its password."""
        from hwkd.storage import recorded_form, requested_storage

        b, r = self.brief, self.budgets
        return {
            "device": self.device, "space": self.space, "data": self.data, "data-dir": self.data_dir,
            "teacher": self.teacher, "run-dir": str(self.resolved_run_dir()),
            "storage": recorded_form(requested_storage(self.storage)), "trials": self.trials,
            "timeout": self.timeout_s, "sampler": self.sampler, "seed": self.seed,
            "max-latency-ms": r.max_latency_ms, "max-memory-kb": r.max_memory_kb, "max-params": r.max_params,
            "steps": b.steps, "batch-size": b.batch_size, "lr": b.lr, "temperature": b.temperature, "alpha": b.alpha,
            "loss": b.loss, "synflow-points": b.synflow_points, "train-device": self.train_device,
            "latency-source": self.latency_source,
            "threads": self.threads, "workers": self.workers, "heartbeat-s": self.heartbeat_s,
        }

    def resolved_sampler(self) -> str:
        """The sampler `--sampler auto` stands for: gp, or tpe when a budget is set (see SAMPLERS)."""
        if self.sampler != "auto":
            return self.sampler
        return "tpe" if self.budgets.active() else "gp"

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
    front: tuple[TrialOutcome, ...]  # trained students no other beats on both axes, best score first
    latency_note: str  # how far the front's latencies can be trusted, in a few words
    budget_hint: str | None = None  # why the front is empty, when every student was over a budget
    free_trials: int = 0  # proposals that cost nothing (TrialOutcome.cost_nothing): they used no trial

    @property
    def front_size(self) -> int:
        return len(self.front)


class Search:
    """Sets up data, teacher, estimator and study; `run()` adds trials."""

    def __init__(self, config: SearchConfig, worker: int = 0) -> None:
        config.check()
        self.config = config
        self.worker = worker  # this process's index among the --workers of one command
        self.folder = RunFolder(config.resolved_run_dir())
        self.storage = requested_storage(config.storage)  # None: the run folder's study.db
        if self.storage is not None:
            check_storage(self.storage)  # before any data, teacher or training
        self.profile: DeviceProfile = load_profile(config.device)
        if config.threads is not None:
            self.profile = self.profile.with_threads(config.threads)
        self.space: SearchSpace = load_space(config.space)
        self.train_device = pick_device(config.train_device)
        self.estimator = Estimator(self.profile, config.latency_source)  # type: ignore[arg-type]
        self.dataset: Dataset = load_dataset(config.data, config.data_dir)
        self.brief_data = brief_subset(self.dataset, config.brief)  # what every trial trains on
        self.input_shape = self.dataset.input_shape
        self.num_classes = self.dataset.num_classes
        self._check_space_builds()

    # ---- set-up -------------------------------------------------------------------------------

    def fixed_settings(self) -> FixedSettings:
        c = self.config
        return FixedSettings(space=c.space, device=c.device, data=c.data, data_dir=c.data_dir, teacher=c.teacher,
                             brief=c.brief, input_shape=tuple(self.input_shape), num_classes=self.num_classes,
                             latency_source=c.latency_source, threads=self.profile.runtime.threads)

    def _check_space_builds(self) -> None:
        try:
            arch = self.space.sample(random.Random(0))
            self.space.build(arch, self.num_classes, self.input_shape)
        except ArchitectureError:
            raise
        except Exception as exc:  # noqa: BLE001 - a space file that cannot build for this data
            raise HwkdError(f"space {self.space.name} cannot build students for {self.dataset.name} "
                            f"images {self.input_shape}: {exc}") from None

    def prepare(self, show: bool = False) -> tuple[Teacher, torch.Tensor]:
        """The teacher and its logits on the brief distillations' training images (once per run);
        `show`: progress bars on the terminal."""
        self.folder.check_same_run(self.fixed_settings())
        self.folder.path.mkdir(parents=True, exist_ok=True)
        teacher = self._teacher(show)
        logits = self._teacher_logits(teacher)
        self._write_run_json(teacher, logits)
        write_atomic(self.folder.config_yaml, dump_config(self.config.as_flags()))
        return teacher, logits

    def _teacher(self, show: bool = False) -> Teacher:
        """The run's teacher: a continued run keeps the one its trials were distilled from."""
        recorded = self.folder.read().teacher if self.folder.exists() else None
        if self.config.teacher:
            teacher = load_teacher_file(self.config.teacher, self.dataset)
            if recorded is not None and recorded.sha256 != teacher.sha256:
                raise RunError(f"--teacher {self.config.teacher} is not the teacher {self.folder.path} was searched "
                               f"with (sha256 {teacher.sha256[:12]}, the run's {recorded.sha256[:12]}); "
                               "continue with the same file or choose another --run-dir")
            return teacher
        kept = self.folder.path / recorded.file if recorded is not None else None
        if kept is not None and kept.is_file():  # not retrained: the cache may be gone or newer
            log.info("default teacher: the run's copy %s", kept)
            return load_run_teacher(kept, recorded.kind if recorded else "", self.dataset)
        return default_teacher(self.dataset, self.train_device, progress=log.info, show_bar=show)

    def _teacher_logits(self, teacher: Teacher) -> torch.Tensor:
        path = self.folder.teacher_logits
        key = f"{teacher.sha256}-{self.brief_data.fingerprint()}"
        if path.is_file():
            try:
                saved = torch.load(path, map_location="cpu", weights_only=True)
                if saved.get("key") == key and saved["logits"].shape == (len(self.brief_data.train), self.num_classes):
                    log.info("teacher outputs: reused from %s (same teacher sha256 and images)", path)
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
        previous = self.folder.read() if self.folder.exists() else None
        teacher_record = previous.teacher if previous is not None else None
        if teacher_record is None or teacher_record.sha256 != teacher.sha256:
            train_acc = float((logits.argmax(1) == self.brief_data.train.labels).float().mean())
            val = teacher.logits(self.dataset.normalize(self.dataset.val.images)).argmax(1)
            copy = copy_into(teacher, self.folder.path)
            teacher_record = TeacherRecord(
                name=teacher.name, kind=teacher.kind, source=str(teacher.path), file=copy.name, sha256=teacher.sha256,
                train_accuracy=train_acc, val_accuracy=float((val == self.dataset.val.labels).float().mean()))
        c, d = self.config, self.dataset
        self.folder.write(RunRecord(
            created=previous.created if previous is not None else _now(),
            updated=_now(),
            config=RunConfig(fixed=self.fixed_settings(), run_dir=str(self.folder.path),
                             storage=recorded_form(self.storage), sampler=c.sampler, seed=c.seed, budgets=c.budgets,
                             train_device=str(self.train_device)),
            dataset=DatasetRecord(
                name=d.name, source=d.source, fingerprint=d.fingerprint(), train=len(d.train),
                brief_train=len(self.brief_data.train), val=len(d.val), test=len(d.test),
                classes=tuple(d.class_names), input_shape=tuple(self.input_shape), mean=tuple(d.mean),
                std=tuple(d.std)),
            teacher=teacher_record,
            device_profile=self.profile.summary(),
            space=self.space.summary(),
            libraries=library_versions(),
        ))

    def open_study(self) -> Any:
        import warnings

        import optuna

        # hwkd logs each trial itself; optuna would add a traceback to every failed student
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

        url = self.storage or default_url(self.folder.path)
        heartbeat = self.config.heartbeat_s
        try:
            # Heartbeats: a trial whose worker died (kill -9, power loss) is failed by the next
            # worker once it has been silent for two intervals, and run again once.
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs=_engine_kwargs(url), heartbeat_interval=heartbeat, grace_period=2 * heartbeat,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
            summaries = optuna.get_all_study_summaries(storage)
            existing = next((s.n_trials for s in summaries if s.study_name == STUDY_NAME), 0)
            # A resumed study does not replay its first proposals; workers started together differ.
            seed = self.config.seed + existing + 1000 * self.worker
            kind = self.config.resolved_sampler()
            if kind == "gp":  # with running trials (--workers) it proposes for the batch
                sampler: Any = optuna.samplers.GPSampler(seed=seed, n_startup_trials=STARTUP_TRIALS,
                                                         warn_independent_sampling=False)
            elif kind == "nsga2":
                population = max(8, min(50, (self.config.trials or DEFAULT_TRIALS) // 2))
                sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
            elif kind == "random":
                sampler = optuna.samplers.RandomSampler(seed=seed)
            else:  # constant_liar: parallel workers do not all propose next to a running trial
                sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=STARTUP_TRIALS,
                                                     constant_liar=True)
            study = optuna.create_study(study_name=STUDY_NAME, storage=storage, sampler=sampler,
                                        directions=["maximize", "minimize"], load_if_exists=True)
        except Exception as exc:  # noqa: BLE001 - storage URLs fail in many ways
            raise RunError(f"--storage {masked(url)}: cannot open the study "
                           f"({hide_secrets(error_line(exc), url)})") from None
        if study.metric_names is None:
            study.set_metric_names(["score", "latency_ms"])
        return study

    def startup_plan(self, study: Any) -> list[dict[str, Any]]:
        """Params of the study's first trials: students spread evenly over the space's range of MACs
        (under budgets: over the students the cost model puts within them).

        The plan depends only on the space, the data's shape, the seed and the budgets (with the
        profile's cost model), so a continued study recomputes the same one; it is skipped once the
        study has that many trials and none of its planned trials was cut off (a cut-off planned
        student is tried again).
        """
        from hwkd.initial_design import spread_by_cost

        if self.config.sampler == "random":  # the baseline: random from the first trial, no opening design
            return []
        trials = study.get_trials(deepcopy=False)
        cut_off_plan = any(TrialOutcome.from_trial(t).planned and _cut_off(t) for t in trials)
        if len(trials) >= STARTUP_TRIALS and not cut_off_plan:
            return []
        budgets = self.config.budgets
        fits = self._meets_budgets if budgets.active() else None
        if fits is not None:
            log.info("costing random students against the budgets for the opening trials")
        picks = spread_by_cost(self.space, self.num_classes, self.input_shape, STARTUP_TRIALS, self.config.seed,
                               fits=fits)
        if picks and not trials:
            log.info("the first %d trials span the space's cost range%s, from %s to %s", len(picks),
                     " within the budgets" if fits else "", picks[0][0], picks[-1][0])
        return [params for _, params in picks]

    def _meets_budgets(self, arch: str) -> bool:
        """Whether the cost model puts `arch` within the budgets (a measured latency may still
        differ: the trial checks its own estimate)."""
        try:
            e = self.estimator.model_estimate(self.space, arch, self.input_shape, self.num_classes)
        except CompileError:
            return False
        return not self.config.budgets.reasons(e.latency_ms, e.peak_memory_bytes, e.params_bytes)

    # ---- the loop -----------------------------------------------------------------------------

    def enqueue_plan(self, study: Any) -> None:
        """Queue the opening students that have no trial yet (or whose trial was cut off), so
        every worker takes the next one from the study."""
        plan = self.startup_plan(study)
        while (params := _next_planned(study, plan)) is not None:
            study.enqueue_trial(params, user_attrs=planned_attrs())

    def run(self, progress: bool | None = None, reports: bool = True,
            tickets: TrialTickets | None = None) -> SearchSummary:
        """Add trials to the study (`--trials`, in total over `--workers` processes) and write
        the reports; `progress`: bars on the terminal (default: when standard error is one);
        `tickets`: a spawned worker's share of its command's trials (hwkd.workers)."""
        start = time.monotonic()
        show = sys.stderr.isatty() if progress is None else progress
        created = not self.folder.path.exists()
        try:
            self.folder.path.mkdir(parents=True, exist_ok=True)
            # one process at a time sets a run up; the others wait, then reuse its teacher and outputs
            waiting = f"waiting for another hwkd process setting up {self.folder.path}"
            with file_lock(self.folder.path / ".lock", waiting):
                teacher, logits = self.prepare(show)
                study = self.open_study()
                self.enqueue_plan(study)
        except BaseException:
            if created:  # nothing of this run existed: leave no half-made folder behind
                shutil.rmtree(self.folder.path, ignore_errors=True)
            raise
        c = self.config
        trials = c.trials if c.trials is not None else (None if c.timeout_s else DEFAULT_TRIALS)
        deadline = None if c.timeout_s is None else start + c.timeout_s
        log.info("search: %s on %s, %s data, teacher %s, sampler %s, run folder %s", self.space.name,
                 self.profile.name, self.dataset.name, teacher.name, c.resolved_sampler(), self.folder.path)
        objective = _Objective(self, logits)
        if tickets is not None:
            outcome = _optimize(study, objective, tickets, deadline, lambda: None)
        elif c.workers > 1:
            timeout = None if deadline is None else max(deadline - time.monotonic(), 1e-3)
            outcome = run_workers(
                run_worker, lambda tickets, refresh: _optimize(study, objective, tickets, deadline, refresh),
                c, study, trials, timeout, show, counted=lambda t: not TrialOutcome.from_trial(t).cost_nothing)
        else:
            with progress_bar(trials, "trials", "trial", show) as bar:
                outcome = _optimize(study, objective, TrialTickets(trials), deadline, lambda: bar.update(1))
        front: tuple[TrialOutcome, ...] = ()
        note, hint = "", None
        if reports:
            from hwkd.reports import latency_note, write_reports

            with deferred_interrupt():  # a second Ctrl-C waits until every report is written
                report = write_reports(self.folder, study)
            front, note = report.front, latency_note(report.front)
            hint = None if front else self._budget_hint(study)
        o = outcome
        return SearchSummary(self.folder.path, o.complete + o.infeasible + o.failed, o.complete, o.infeasible,
                             o.failed, o.interrupted, time.monotonic() - start, front, note, hint, o.free)

    def _queue_repair(self, study: Any, trial: Any) -> None:
        """Queue the valid student nearest an invalid proposal (hwkd.proposals): the sampler learns
        nothing from the proposal itself and might make it again."""
        from hwkd.proposals import nearest_valid

        repair = nearest_valid(self.space, trial.params, random.Random(f"{self.config.seed}:{trial.number}"))
        if repair is not None:
            log.info("trial %d: the nearest valid student, %s, is queued instead", trial.number, repair[0])
            study.enqueue_trial(repair[1], skip_if_exists=True)

    def _budget_hint(self, study: Any) -> str | None:
        """Why nothing was trained when every student tried was over a budget: the lowest figures."""
        from optuna.trial import TrialState

        outcomes = [TrialOutcome.from_trial(t) for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))]
        over = [o for o in outcomes if o.latency_ms is not None]
        b = self.config.budgets
        if not over or not b.active():
            return None
        lowest = []
        if b.max_latency_ms is not None:
            lowest.append(f"latency {min(o.latency_ms or 0 for o in over):.3f} ms "
                          f"(--max-latency-ms {b.max_latency_ms:g})")
        if b.max_memory_kb is not None:
            lowest.append(f"peak memory {min(o.peak_memory_bytes or 0 for o in over) / 1024:.1f} KiB "
                          f"(--max-memory-kb {b.max_memory_kb:g})")
        if b.max_params is not None:
            lowest.append(f"{min(o.params_bytes or 0 for o in over) // 4} parameters (--max-params {b.max_params})")
        return (f"no student met the budgets: the lowest figures of the {len(over)} students over them are "
                f"{', '.join(lowest)}; raise the budget or choose a space with smaller students")

    def trial_values(self, trial: Any, logits: torch.Tensor, writer: TrialWriter | None = None) -> list[float]:
        """One trial, as an Optuna objective: [score, latency_ms] of the student it proposes (the
        score: brief validation accuracy, plus `BriefConfig.synflow_points` per decade of SynFlow);
        raises optuna.TrialPruned for a student that is not valid or over a budget (recorded as
        infeasible, never trained) and TrialFailed for one that cannot be compiled or trained.
        Its outcome goes into the trial's user attributes through `writer` as the trial goes."""
        import optuna

        writer = writer or TrialWriter(trial)
        study = trial.study
        started = time.monotonic()
        writer.update(worker=f"{platform.node()}:{os.getpid()}")
        proposed = self.space.suggest(trial)
        try:
            arch = self.space.parse(proposed)
        except ArchitectureError as exc:
            writer.update(arch=proposed, infeasible=str(exc))
            log.info("trial %d: not a valid student (%s)", trial.number, exc)
            self._queue_repair(study, trial)
            raise optuna.TrialPruned(str(exc)) from None
        writer.update(arch=arch)
        with torch.random.fork_rng():  # initial weights depend on the student and seed, not on earlier trials
            torch.manual_seed(self.config.brief.seed)
            student = self.space.build(arch, self.num_classes, self.input_shape)
        key = function_key(student)
        writer.update(function_key=key)
        earlier = _same_student(study, arch, key)
        if earlier is not None:  # the same function was trained before (by any worker): its result stands
            mine = writer.outcome
            writer.update(**{name: value for name, value in earlier.attrs().items()
                             if name not in ("version", "arch", "worker", "planned", "function_key")},
                          duplicate_of=earlier.number)
            # its constraints too, against this run's budgets: Optuna's GP sampler refuses a study whose
            # trials name different ones (a completed trial always has its estimate's figures)
            figures = (earlier.latency_ms or 0.0, earlier.peak_memory_bytes or 0, earlier.params_bytes or 0)
            for name, value in self.config.budgets.violations(*figures).items():
                trial.set_constraint(name, value)
            log.info("trial %d: computes what trial %d computes, result reused (%s)", trial.number, earlier.number,
                     mine.arch)
            return [float(earlier.score or 0.0), float(earlier.latency_ms or 0.0)]
        try:
            estimate = self.estimator.estimate_arch(self.space, arch, self.input_shape, self.num_classes)
        except CompileError as exc:
            writer.update(fail_reason=str(exc))
            log.warning("trial %d failed: %s", trial.number, exc)
            raise TrialFailed(str(exc)) from None
        writer.update(latency_ms=estimate.latency_ms, model_latency_ms=estimate.model_latency_ms,
                      peak_memory_bytes=estimate.peak_memory_bytes, params_bytes=estimate.params_bytes,
                      macs=estimate.macs, latency_source=estimate.source, latency_calibrated=estimate.calibrated,
                      latency_expected_error_pct=estimate.expected_error_pct)
        budgets = self.config.budgets
        # Optuna's own constraints: samplers steer away from infeasible regions
        figures = (estimate.latency_ms, estimate.peak_memory_bytes, estimate.params_bytes)
        for name, value in budgets.violations(*figures).items():
            trial.set_constraint(name, value)
        reasons = budgets.reasons(*figures)
        if reasons:
            writer.update(infeasible="; ".join(reasons), duration_s=round(time.monotonic() - started, 3))
            log.info("trial %d: %s is over budget (%s), not trained", trial.number, arch, "; ".join(reasons))
            raise optuna.TrialPruned("; ".join(reasons))
        log10_synflow = round(synflow(student, self.input_shape), 4)
        writer.update(synflow=log10_synflow)
        try:
            result = brief_distill(student, self.brief_data, logits, self.config.brief, self.train_device)
        except TrainingDiverged as exc:
            writer.update(fail_reason=str(exc))
            log.warning("trial %d failed: %s", trial.number, exc)
            raise TrialFailed(str(exc)) from None
        writer.update(val_accuracy=result.val_accuracy, train_images_per_s=round(result.images_per_s, 1),
                      train_seconds=round(result.seconds, 2), duration_s=round(time.monotonic() - started, 3))
        log.info("trial %d: val accuracy %.2f%%, log10 SynFlow %.1f, %.3f ms (%s), %.1f MMACs, %.0f s  %s",
                 trial.number, 100 * result.val_accuracy, log10_synflow, estimate.latency_ms, estimate.source,
                 estimate.macs / 1e6, time.monotonic() - started, arch)
        return [self.config.brief.score(result.val_accuracy, log10_synflow), estimate.latency_ms]


def run_worker(config: SearchConfig, index: int, tickets: TrialTickets) -> WorkerOutcome:
    """One spawned `--workers` process's search (hwkd.workers runs it): trials while its command
    has some to hand out, no reports."""
    summary = Search(config, worker=index).run(progress=False, reports=False, tickets=tickets)
    return WorkerOutcome(summary.completed, summary.infeasible, summary.failed, summary.interrupted,
                         summary.free_trials)


def _optimize(study: Any, objective: _Objective, tickets: TrialTickets, deadline: float | None,
              after_trial: Callable[[], None]) -> WorkerOutcome:
    """Optuna's loop over `objective`, a trial at a time while the command's tickets last (or until
    the deadline); failed students are recorded, not raised. A proposal that cost nothing (not a
    valid student, or one computing what an earlier student computes: its result is reused) gives
    its ticket back, so `--trials N` is N students estimated. The outcome counts and whether Ctrl-C
    stopped it."""
    def one_more(study: Any, trial: Any) -> None:
        if objective.last_free and tickets.give_back():
            return
        after_trial()

    interrupted = False
    try:
        while (deadline is None or time.monotonic() < deadline) and tickets.take():
            study.optimize(objective, n_trials=1, catch=(TrialFailed,), callbacks=[one_more])
    except KeyboardInterrupt:
        interrupted = True
    return WorkerOutcome(**objective.counts, interrupted=interrupted)


class TrialFailed(HwkdError):
    """A student that could not be compiled or trained; its trial fails with the reason and the search goes on."""


class _Objective:
    """`Search.trial_values` for `study.optimize`, counting outcomes; a Ctrl-C fails the running
    trial with its reason (Optuna marks it failed and stops the loop)."""

    def __init__(self, search: Search, logits: torch.Tensor) -> None:
        self.search = search
        self.logits = logits
        self.counts = {"complete": 0, "infeasible": 0, "failed": 0, "free": 0}
        self.last_free = False  # the last trial cost nothing: no student estimated or trained

    def __call__(self, trial: Any) -> list[float]:
        import optuna

        outcome = "failed"
        writer = TrialWriter(trial)
        try:
            values = self.search.trial_values(trial, self.logits, writer)
            outcome = "complete"
            return values
        except optuna.TrialPruned:
            outcome = "infeasible"
            raise
        except KeyboardInterrupt:
            writer.update(fail_reason=INTERRUPTED)
            raise
        finally:
            self.last_free = outcome != "failed" and writer.outcome.cost_nothing
            self.counts["free" if self.last_free else outcome] += 1


INTERRUPTED = "interrupted by the user"


def _cut_off(trial: Any) -> bool:
    """A trial failed by a Ctrl-C or a dead worker (heartbeat), not by its student: its work is
    to be done again."""
    reason = TrialOutcome.from_trial(trial).fail_reason
    return trial.state.name == "FAIL" and (reason is None or reason == INTERRUPTED)


def _next_planned(study: Any, plan: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first planned student without a trial that finished, runs or waits (a cut-off one is retried)."""
    trials = study.get_trials(deepcopy=False)
    for params in plan:
        # a waiting (enqueued) trial keeps its params aside until a worker asks for it
        if not any((t.params or t.system_attrs.get("fixed_params")) == params and not _cut_off(t) for t in trials):
            return params
    return None


def _same_student(study: Any, arch: str, key: str) -> TrialOutcome | None:
    """A completed, trained trial of the study whose student computes the same function."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        outcome = TrialOutcome.from_trial(t)
        if outcome.duplicate_of is None and (outcome.function_key == key or outcome.arch == arch):
            return outcome
    return None


def _engine_kwargs(url: str) -> dict[str, Any]:
    """SQLite: writers queue for the file lock (workers on one machine) instead of failing at once."""
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
