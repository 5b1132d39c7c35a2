"""hwkd distill's outcome: what it tells a user about the teacher."""

from __future__ import annotations

from pathlib import Path

from hwkd.distill_trial import DistillOutcome
from hwkd.distillation.full import FullResult
from hwkd.records import TrainedStudent


def _outcome(student_test: float, teacher_test: float, alpha: float = 0.9) -> DistillOutcome:
    result = FullResult(test_accuracy=student_test, val_accuracy=student_test, epochs=5, steps=2105, seconds=1.0,
                        images_per_s=1.0, resumed_from_epoch=0, layer_pairs=())
    trial = TrainedStudent(number=3, arch="a", val_accuracy=0.85, latency_ms=1.0, latency_source="model",
                           latency_calibrated=False, latency_expected_error_pct=None, peak_memory_bytes=1,
                           params_bytes=1, macs=1)
    return DistillOutcome(trial, result, teacher_test, Path("."), alpha)


def test_a_student_level_with_its_teacher_is_told_the_teacher_may_limit_it() -> None:
    # the measured case: a 91.18 % teacher, its student 91.24 % with KD (92.22 % from labels alone)
    assert (_outcome(0.9124, 0.9118).teacher_note() or "").startswith("the student ended 0.06 points above its "
                                                                       "teacher (91.18%)")
    note = _outcome(0.9124, 0.9125).teacher_note()
    assert note is not None and note.startswith("the student ended 0.01 points below its teacher (91.25%)")
    assert "lower --alpha than 0.9" in note
    assert "0.30 points above" in (_outcome(0.9155, 0.9125).teacher_note() or "")
    # 0.64 points below (2 epochs of the same student, where KD still led the labels): nothing to say
    assert _outcome(0.9054, 0.9118).teacher_note() is None
    assert _outcome(0.9124, 0.9125, alpha=0.0).teacher_note() is None  # labels only: no teacher to blame
