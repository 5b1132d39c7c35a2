"""`hwkd distill RUN --trial N`: full distillation of a searched student from the run's teacher."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from hwkd.distillation.config import FullConfig
from hwkd.distillation.full import FullResult, full_distill
from hwkd.records import DistillRecord, TrainedStudent
from hwkd.run_context import RunContext, load_trial, open_context
from hwkd.run_folder import library_versions
from hwkd.teachers import load_run_teacher
from hwkd.training import pick_device

log = logging.getLogger(__name__)


# A student that ends this close to its teacher's test accuracy, or above it, is likely held back by
# the teacher: with alpha 0.9 a 91.18 % teacher kept a student at 91.24 % that reached 92.22 % from
# the labels alone in the same 5 epochs (benchmarks/distill.py, Fashion-MNIST, 3 seeds each)
TEACHER_BOUND_POINTS = 0.25


@dataclass(frozen=True)
class DistillOutcome:
    trial: TrainedStudent
    result: FullResult
    teacher_test_accuracy: float
    folder: Path
    alpha: float = FullConfig.alpha  # the teacher's weight in the loss it was distilled with

    def teacher_note(self) -> str | None:
        """A line for a student distilled with the teacher in its loss that ended within
        TEACHER_BOUND_POINTS of the teacher's test accuracy, or above it; None otherwise."""
        gap_points = 100 * (self.teacher_test_accuracy - self.result.test_accuracy)
        if gap_points > TEACHER_BOUND_POINTS or self.alpha == 0:
            return None
        where = f"{gap_points:.2f} points below" if gap_points > 0 else f"{-gap_points:.2f} points above"
        return (f"the student ended {where} its teacher ({100 * self.teacher_test_accuracy:.2f}%): the teacher may be "
                f"what limits it; a stronger teacher (a new search with --teacher), or a lower --alpha than "
                f"{self.alpha:g} so the labels weigh more, may do better")


def distill_trial(run: str | Path, number: int, config: FullConfig, train_device: str = "auto",
                  restart: bool = False, progress: bool | None = None) -> DistillOutcome:
    config.check()
    context = open_context(run)
    trial = load_trial(context, number)
    device = pick_device(train_device)
    teacher_path, kind = context.teacher_file()
    teacher = load_run_teacher(teacher_path, kind, context.dataset)
    student = context.space.build(trial.arch, context.num_classes, context.input_shape)
    out = context.distilled_dir(number)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint.pt"
    if restart and checkpoint.exists():
        checkpoint.unlink()
    identity = {"arch": trial.arch, "teacher_sha256": teacher.sha256, "data": context.dataset.fingerprint()}
    log.info("distilling trial %d (%s) from teacher %s for %d epochs on %s; checkpoints in %s", number,
             trial.arch, teacher.name, config.epochs, device, out)
    result = full_distill(student, teacher.forward, teacher.module, context.dataset, config, checkpoint, device,
                          identity, progress)
    test_logits = teacher.logits(context.dataset.normalize(context.dataset.test.images))
    teacher_test = float((test_logits.argmax(1) == context.dataset.test.labels).float().mean())
    torch.save(student.cpu().state_dict(), out / "student.pt.partial")
    (out / "student.pt.partial").replace(out / "student.pt")
    write_result(context, trial, result, teacher_test, config, str(device))
    return DistillOutcome(trial, result, teacher_test, out, config.alpha)


def write_result(context: RunContext, trial: TrainedStudent, result: FullResult, teacher_test: float,
                 config: FullConfig, device: str) -> DistillRecord:
    brief = context.record.fixed.brief
    record = DistillRecord(
        trial=trial.number, arch=trial.arch, test_accuracy=result.test_accuracy, val_accuracy=result.val_accuracy,
        teacher_test_accuracy=teacher_test, brief_val_accuracy=trial.val_accuracy, brief_steps=brief.steps,
        brief_batch_size=brief.batch_size, epochs=result.epochs, steps=result.steps,
        train_images=result.steps * config.batch_size, seconds=round(result.seconds, 2),
        images_per_s=round(result.images_per_s, 1), layer_pairs=tuple((a, b) for a, b in result.layer_pairs),
        config=config, train_device=device, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        libraries=library_versions(),
    )
    context.folder.write_distilled(record)
    return record


def load_student(context: RunContext, trial: TrainedStudent) -> torch.nn.Module:
    """The fully distilled student of `trial`, in eval mode."""
    from hwkd.errors import RunError, error_line

    path = context.distilled_dir(trial.number) / "student.pt"
    if not path.is_file():
        raise RunError(f"trial {trial.number} is not distilled yet ({path} is missing); run "
                       f"hwkd distill {context.folder.path} --trial {trial.number} first")
    student = context.space.build(trial.arch, context.num_classes, context.input_shape)
    try:
        student.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file
        raise RunError(f"{path} is unreadable ({error_line(exc, first=True, limit=160)}); "
                       "run hwkd distill again") from None
    return student.eval()
