"""The run folder: run.json and result.json written and read through their records, old and newer
files, and the check that a continued run keeps its fixed settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_fixed, make_run_record

from hwkd.distillation.config import BriefConfig, FullConfig
from hwkd.errors import RunError
from hwkd.records import (
    RECORD_VERSION,
    DistillRecord,
)
from hwkd.run_folder import RunFolder


def test_run_json_round_trips_and_keeps_its_keys(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    record = make_run_record()
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
    folder.write(make_run_record())
    data = json.loads(folder.run_json.read_text())
    del data["version"]
    folder.run_json.write_text(json.dumps(data))
    assert folder.read().fixed.brief.steps == 40


def test_a_newer_or_broken_run_json_is_one_line(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    folder.write(make_run_record())
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
    folder.write(make_run_record())
    folder.check_same_run(make_fixed())  # same settings: fine
    with pytest.raises(RunError) as error:
        folder.check_same_run(make_fixed(device="jetson-nano", brief=BriefConfig(steps=80)))
    message = str(error.value)
    assert "device: 'rpi4' -> 'jetson-nano'" in message and "brief.steps: 40 -> 80" in message
    assert "sampler" not in message  # a continued run may change what is not fixed


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
    data = json.loads((folder.distilled_dir(3) / "result.json").read_text())
    del data["config"]["loss_warmup_epochs"], data["config"]["loss"]  # as hwkd wrote it before either option
    (folder.distilled_dir(3) / "result.json").write_text(json.dumps(data))
    old = folder.read_distilled(3)
    assert old is not None and (old.config.loss, old.config.loss_warmup_epochs) == ("kd", 0.0)
    (folder.distilled_dir(3) / "result.json").write_text("{")
    with pytest.raises(RunError, match="result.json: unreadable"):
        folder.read_distilled(3)
