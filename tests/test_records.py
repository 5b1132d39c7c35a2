"""The typed records between commands: what a trial tells, from Optuna and back (the files: test_run_folder)."""

from __future__ import annotations

import optuna
import pytest
from conftest import make_fixed, make_run_record

from hwkd.distillation.config import BriefConfig
from hwkd.errors import RunError
from hwkd.records import (
    RECORD_VERSION,
    FixedSettings,
    RunRecord,
    TrialOutcome,
    TrialWriter,
    planned_attrs,
)


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


def test_records_round_trip_through_their_dicts() -> None:
    record = make_run_record()
    assert RunRecord.from_dict(record.to_dict()) == record
    assert record.to_dict()["version"] == RECORD_VERSION
    assert FixedSettings.from_dict(record.fixed.to_dict()) == record.fixed


def test_fixed_settings_name_each_difference_key_by_key() -> None:
    old, new = make_fixed(), make_fixed(threads=2, brief=BriefConfig(steps=40, lr=0.05))
    assert old.differences(new) == ["brief.lr: 0.1 -> 0.05", "threads: 4 -> 2"]
    assert old.differences(make_fixed()) == []
    assert old.differences(make_fixed(brief=BriefConfig(steps=40, loss="dist"))) == ["brief.loss: 'kd' -> 'dist'"]


def test_results_written_before_the_loss_option_read_as_kd() -> None:
    fixed = make_fixed(brief=BriefConfig(loss="dist")).to_dict()
    del fixed["brief"]["loss"]
    assert FixedSettings.from_dict(fixed).brief.loss == "kd"  # every earlier run distilled with KD


def test_runs_written_before_the_synflow_score_ranked_by_accuracy_alone() -> None:
    fixed = make_fixed().to_dict()
    assert fixed["brief"]["synflow_points"] == 1.0  # the default now
    del fixed["brief"]["synflow_points"]
    assert FixedSettings.from_dict(fixed).brief.synflow_points == 0.0


def test_a_trial_keeps_its_accuracy_beside_the_score_it_was_ranked_by() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    TrialWriter(trial).update(arch="a", val_accuracy=0.75, synflow=20.0)
    study.tell(trial, [BriefConfig(synflow_points=1.0).score(0.75, 20.0), 2.5])
    outcome = TrialOutcome.from_trial(study.trials[0])
    assert outcome.val_accuracy == 0.75 and outcome.score == pytest.approx(0.95)
    assert TrialOutcome.from_dict(outcome.to_dict()) == outcome
    # a trial of a run before record version 2: its only accuracy is its objective
    old = study.ask()
    TrialWriter(old).update(arch="b")
    study.tell(old, [0.7, 1.0])
    outcome = TrialOutcome.from_trial(study.trials[1])
    assert outcome.val_accuracy == outcome.score == 0.7
