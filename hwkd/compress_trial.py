"""`hwkd compress RUN --trial N --max-latency-ms X`: prune a fully distilled student to a latency
target on the run's device, then fine-tune it with knowledge distillation from the run's teacher.

Pruning (`hwkd.pruning`) removes whole output channels, re-costing the pruned student after each
step with the same estimator as the search (the run's device profile and latency source), and
stops at the first step that meets the target. BatchNorm statistics are then re-estimated on
training images (downstream layers see new statistics once channels are gone). Fine-tuning is
`hwkd distill`'s loop (checkpoints every epoch, resumes when run again). The result lives beside the distilled student:

    RUN/compressed/trial-N-NAME/student.pt      the pruned, fine-tuned weights (state dict)
    RUN/compressed/trial-N-NAME/result.json     latency before and after, accuracies, the layer sizes
    RUN/compressed/trial-N-NAME/checkpoint.pt   fine-tuning checkpoint (resume)

`hwkd export RUN --trial N --compressed NAME` ships it like any student.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from hwkd.distill_trial import load_student
from hwkd.distillation.config import FINETUNE, FullConfig
from hwkd.errors import HwkdError, RunError, error_line
from hwkd.files import sha256_file
from hwkd.records import CompressRecord
from hwkd.run_context import RunContext, load_trial, open_context
from hwkd.run_folder import library_versions

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class CompressConfig:
    """What `hwkd compress` takes: the target (one of the two), the fine-tuning, where it goes."""

    max_latency_ms: float | None = None  # the latency to reach on the run's device
    ratio: float | None = None  # or: this fraction of the student's latency
    name: str | None = None  # of the result folder; default: the target, e.g. "0.42ms"
    finetune: FullConfig = field(default_factory=lambda: FINETUNE)  # epochs 0: no fine-tuning
    train_device: str = "auto"
    restart: bool = False  # ignore an existing fine-tuning checkpoint
    step_fraction: float = 0.05  # of the prunable channels removed per pruning step

    def check(self) -> None:
        problems = []
        if (self.max_latency_ms is None) == (self.ratio is None):
            problems.append("give one of --max-latency-ms X or --ratio R")
        if self.max_latency_ms is not None and not self.max_latency_ms > 0:
            problems.append(f"--max-latency-ms {self.max_latency_ms:g}: must be a positive number")
        if self.ratio is not None and not 0 < self.ratio < 1:
            problems.append(f"--ratio {self.ratio:g}: must be between 0 and 1 (0.7: 70 % of the student's latency)")
        if self.name is not None and not _NAME.match(self.name):
            problems.append(f"--name {self.name!r}: use letters, digits, '.', '_' and '-'")
        if not 0 < self.step_fraction <= 0.5:
            problems.append(f"step fraction {self.step_fraction:g}: must be in (0, 0.5]")
        if self.finetune.epochs < 0:
            problems.append(f"--epochs {self.finetune.epochs}: must be 0 (no fine-tuning) or more")
        if problems:
            raise HwkdError("; ".join(problems))
        if self.finetune.epochs > 0:
            self.finetune.check()


@dataclass(frozen=True)
class CompressOutcome:
    record: CompressRecord
    folder: Path


def compress_trial(run: str | Path, number: int, config: CompressConfig,
                   progress: bool | None = None) -> CompressOutcome:
    from hwkd.distillation.full import full_distill
    from hwkd.latency.estimator import Estimator
    from hwkd.pruning import prune_to_latency
    from hwkd.teachers import load_run_teacher
    from hwkd.training import evaluate, pick_device, recalibrate_batchnorm

    config.check()
    started = time.monotonic()
    context = open_context(run)
    trial = load_trial(context, number)
    student = load_student(context, trial)  # one-line error when the trial was never fully distilled
    distilled = context.distilled_result(number)
    dataset, shape = context.dataset, context.input_shape
    estimator = Estimator(context.profile, context.record.fixed.latency_source)  # type: ignore[arg-type]
    before = estimator.estimate_module(student, shape, trial.arch)
    ratio = float(config.ratio or 0)
    target = config.max_latency_ms if config.max_latency_ms is not None else ratio * before.latency_ms
    if before.latency_ms <= target:
        raise RunError(f"trial {number} already meets {target:.3f} ms: {before.latency_ms:.3f} ms on "
                       f"{context.profile.name}; nothing to prune")
    name = config.name or f"{target:.3g}ms"
    out = context.folder.compressed_dir(number, name)

    estimates = [before]  # the last is the pruned student's

    def latency_ms(module: nn.Module) -> float:
        estimates.append(estimator.estimate_module(module, shape))
        log.info("pruning trial %d: %.3f ms (target %.3f ms)", number, estimates[-1].latency_ms, target)
        return estimates[-1].latency_ms

    log.info("pruning trial %d (%s) from %.3f ms to %.3f ms on %s", number, trial.arch, before.latency_ms, target,
             context.profile.name)
    pruned = prune_to_latency(student, shape, latency_ms, target, config.step_fraction, start_ms=before.latency_ms)
    after = estimates[-1]
    cpu = torch.device("cpu")
    recalibrate_batchnorm(student, dataset, cpu)  # the layers after a pruned one see new statistics
    pruned_accuracy = evaluate(student, dataset, dataset.test, cpu)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint.pt"
    if config.restart:
        checkpoint.unlink(missing_ok=True)
    if config.finetune.epochs > 0:
        teacher_path, kind = context.teacher_file()
        teacher = load_run_teacher(teacher_path, kind, dataset)
        shapes_digest = hashlib.sha256(json.dumps(pruned.shapes(), sort_keys=True).encode()).hexdigest()
        identity = {"arch": trial.arch, "teacher_sha256": teacher.sha256, "data": dataset.fingerprint(),
                    "pruned_shapes": shapes_digest}
        log.info("fine-tuning the pruned student for %d epochs with KD from %s", config.finetune.epochs, teacher.name)
        result = full_distill(student, teacher.forward, teacher.module, dataset, config.finetune, checkpoint,
                              pick_device(config.train_device), identity, progress)
        test_accuracy, val_accuracy = result.test_accuracy, result.val_accuracy
    else:
        test_accuracy = pruned_accuracy
        val_accuracy = evaluate(student, dataset, dataset.val, cpu)
    partial = out / "student.pt.partial"
    torch.save(student.cpu().state_dict(), partial)
    partial.replace(out / "student.pt")
    record = CompressRecord(
        trial=number, name=name, arch=trial.arch, target_ms=round(target, 4), latency_ms=after.latency_ms,
        latency_source=after.source, latency_calibrated=after.calibrated,
        latency_expected_error_pct=after.expected_error_pct, device=context.profile.name,
        peak_memory_bytes=after.peak_memory_bytes, params_bytes=after.params_bytes, macs=after.macs,
        unpruned_latency_ms=before.latency_ms, unpruned_params_bytes=before.params_bytes, unpruned_macs=before.macs,
        channels_before=pruned.channels_before, channels_removed=pruned.steps[-1].channels_removed,
        prune_steps=len(pruned.steps) - 1,
        unpruned_test_accuracy=distilled.test_accuracy if distilled else float("nan"),
        pruned_test_accuracy=pruned_accuracy, test_accuracy=test_accuracy, val_accuracy=val_accuracy,
        finetune_epochs=config.finetune.epochs, finetune=config.finetune,
        seconds=round(time.monotonic() - started, 1), shapes=pruned.shapes(),
        distilled_sha256=sha256_file(context.distilled_dir(number) / "student.pt"),
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), libraries=library_versions(),
    )
    context.folder.write_compressed(record)
    return CompressOutcome(record, out)


def load_compressed(context: RunContext, number: int, name: str) -> tuple[nn.Module, CompressRecord]:
    """A pruned student of `hwkd compress`, rebuilt from its architecture id and layer sizes, in eval mode."""
    from hwkd.pruning import reshape_like

    record = context.folder.read_compressed(number, name)
    if record is None:
        names = [n for t, n in context.folder.compressed() if t == number]
        raise RunError(f"--compressed {name}: trial {number} has no such compressed student "
                       f"({'it has ' + ', '.join(names) if names else 'run hwkd compress first'})")
    path = context.folder.compressed_dir(number, name) / "student.pt"
    student = context.space.build(record.arch, context.num_classes, context.input_shape)
    try:
        reshape_like(student, record.shapes, torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:  # noqa: BLE001 - a missing, corrupt or foreign file
        raise RunError(f"{path} is unreadable ({error_line(exc, first=True, limit=160)}); "
                       "run hwkd compress again") from None
    return student.eval(), record
