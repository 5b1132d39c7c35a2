"""The typed records between commands: round trips, old files, newer files, and what a trial tells."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from hwkd.distillation.config import BriefConfig, FullConfig
from hwkd.errors import RunError
from hwkd.records import (
    RECORD_VERSION,
    Budgets,
    DatasetRecord,
    DistillRecord,
    FixedSettings,
    RunConfig,
    RunRecord,
    TeacherRecord,
    TrialOutcome,
    TrialWriter,
    planned_attrs,
)
from hwkd.run_folder import RunFolder


def _fixed(**changes: object) -> FixedSettings:
    values: dict = dict(space="nb201-widths", device="rpi4", data="embedded", data_dir=None, teacher=None,
                        brief=BriefConfig(steps=40), input_shape=(1, 1, 28, 28), num_classes=10,
                        latency_source="auto", threads=4)
    values.update(changes)
    return FixedSettings(**values)


def _run_record(**fixed: object) -> RunRecord:
    return RunRecord(
        config=RunConfig(fixed=_fixed(**fixed), run_dir="runs/a", storage=None, sampler="tpe", seed=3,
                         budgets=Budgets(max_latency_ms=15.0), train_device="cpu"),
        dataset=DatasetRecord(name="embedded", source="hwkd", fingerprint="abc", train=900, brief_train=800, val=100,
                              test=200, classes=tuple("0123456789"), input_shape=(1, 1, 28, 28), mean=(0.28,),
                              std=(0.35,)),
        teacher=TeacherRecord(name="default", kind="default", source="cache", file="teacher.pt", sha256="f" * 64,
                              train_accuracy=0.9, val_accuracy=0.85),
        device_profile={"name": "rpi4"}, space={"name": "nb201-widths"}, libraries={"hwkd": "0.1.0"},
        created="2026-12-01T00:00:00+00:00", updated="2026-12-01T00:00:00+00:00",
    )


def test_run_json_round_trips_and_keeps_its_keys(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    record = _run_record()
    folder.write(record)
    data = json.loads(folder.run_json.read_text())
    assert data["version"] == RECORD_VERSION
    # the keys earlier hwkd versions wrote, so older tools and scripts keep reading them
    assert data["config"]["brief"]["steps"] == 40 and data["config"]["input_shape"] == [1, 1, 28, 28]
    assert data["config"]["budgets"] == {"max_latency_ms": 15.0, "max_memory_kb": None, "max_params": None}
    assert data["teacher"]["sha256"] == "f" * 64 and data["dataset"]["classes"] == list("0123456789")
    assert folder.read() == record


def test_a_run_json_without_version_reads_as_version_1(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    folder.write(_run_record())
    data = json.loads(folder.run_json.read_text())
    del data["version"]
    folder.run_json.write_text(json.dumps(data))
    assert folder.read().fixed.brief.steps == 40


def test_a_newer_or_broken_run_json_is_one_line(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    folder.write(_run_record())
    data = json.loads(folder.run_json.read_text())
    folder.run_json.write_text(json.dumps({**data, "version": RECORD_VERSION + 1}))
    with pytest.raises(RunError, match=rf"record version {RECORD_VERSION + 1}; this hwkd reads versions up to"):
        folder.read()
    del data["dataset"]
    folder.run_json.write_text(json.dumps(data))
    with pytest.raises(RunError, match="missing dataset"):
        folder.read()


def test_check_same_run_names_each_changed_setting(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    folder.write(_run_record())
    folder.check_same_run(_fixed())  # same settings: fine
    with pytest.raises(RunError) as error:
        folder.check_same_run(_fixed(device="jetson-nano", brief=BriefConfig(steps=80)))
    message = str(error.value)
    assert "device: 'rpi4' -> 'jetson-nano'" in message and "brief.steps: 40 -> 80" in message
    assert "sampler" not in message  # a continued run may change what is not fixed


def test_a_trial_outcome_from_optuna_and_back() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    writer = TrialWriter(trial)
    writer.update(arch="a", worker="host:1")
    writer.update(latency_ms=2.5, peak_memory_bytes=4096, params_bytes=400, macs=10_000, latency_source="model",
                  latency_calibrated=True, latency_expected_error_pct=4.2)
    trial.set_constraint("max_latency_ms", -12.5)
    study.tell(trial, [0.75, 2.5])
    outcome = TrialOutcome.from_trial(study.trials[0])
    assert outcome.state == "COMPLETE" and outcome.val_accuracy == 0.75 and outcome.latency_ms == 2.5
    assert outcome.constraints == {"max_latency_ms": -12.5} and outcome.latency_expected_error_pct == 4.2
    assert TrialOutcome.from_dict(outcome.to_dict()) == outcome
    student = outcome.trained()
    assert (student.arch, student.macs, student.latency_calibrated) == ("a", 10_000, True)
    # each attribute is written once, with the record version
    assert study.trials[0].user_attrs["version"] == RECORD_VERSION
    assert "duplicate_of" not in study.trials[0].user_attrs


def test_an_infeasible_trial_is_not_a_trained_student() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    TrialWriter(trial).update(arch="big", infeasible="latency 20.000 ms > --max-latency-ms 15")
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    outcome = TrialOutcome.from_trial(study.trials[0])
    assert outcome.state == "INFEASIBLE" and outcome.reason == "latency 20.000 ms > --max-latency-ms 15"
    with pytest.raises(RunError, match=r"--trial 0 is infeasible \(latency 20.000 ms > --max-latency-ms 15\)"):
        outcome.trained()


def test_planned_students_are_marked() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.enqueue_trial({"x": 1}, user_attrs=planned_attrs())
    assert TrialOutcome.from_trial(study.trials[0]).planned


def test_distill_record_round_trips(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    record = DistillRecord(
        trial=3, arch="a", test_accuracy=0.81, val_accuracy=0.8, teacher_test_accuracy=0.9, brief_val_accuracy=0.7,
        brief_steps=200, brief_batch_size=64, epochs=2, steps=30, train_images=3840, seconds=12.5, images_per_s=300.0,
        layer_pairs=(("t.layer", "s.layer"),), config=FullConfig(epochs=2, teacher_layers=("t.layer",)),
        train_device="cpu", finished="2026-12-01T00:00:00+0000", libraries={"torch": "2.13.0"},
    )
    folder.write_distilled(record)
    assert folder.read_distilled(3) == record and folder.read_distilled(4) is None
    assert folder.distilled_trials() == [3]
    (folder.distilled_dir(3) / "result.json").write_text("{")
    with pytest.raises(RunError, match="result.json: unreadable"):
        folder.read_distilled(3)
