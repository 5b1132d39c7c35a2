"""hwkd distill and hwkd export on a real small run: files, accuracies, libraries, bad input."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import hwkd.exporter as export_module
from hwkd.cli import main
from hwkd.distill_trial import load_student
from hwkd.errors import HwkdError, RunError
from hwkd.exporter import export_trial, parse_formats
from hwkd.profiles import load_profile
from hwkd.reports import proxy_fidelity
from hwkd.run_context import load_trial, open_context
from hwkd.training import evaluate

# every test here runs real searches (and distillations) or worker processes
pytestmark = pytest.mark.slow



@pytest.fixture
def run(distilled_run: tuple[Path, int]) -> tuple[Path, int]:
    return distilled_run


def test_distill_writes_the_student_and_its_accuracies(run) -> None:
    path, number = run
    result = json.loads((path / "distilled" / f"trial-{number}" / "result.json").read_text())
    trials = pd.read_csv(path / "trials.csv")
    assert result["test_accuracy"] > 0.6 and result["teacher_test_accuracy"] > 0.7
    assert result["brief_val_accuracy"] == pytest.approx(float(trials.set_index("trial").val_accuracy[number]))
    assert result["epochs"] == 2 and result["train_images"] == 2 * (8100 // 128) * 128
    context = open_context(path)
    student = load_student(context, load_trial(context, number))
    assert evaluate(student, context.dataset, context.dataset.test, torch.device("cpu")) == result["test_accuracy"]


def test_export_writes_checked_onnx_int8_and_an_arm_library(run, tmp_path: Path, caplog) -> None:
    from hwkd.latency.measure import install_hint, toolchain_problem

    problem = toolchain_problem("aarch64-linux-gnu-gcc")
    if problem:  # .ci/run installs it as root
        pytest.skip(f"{problem}: {install_hint('aarch64-linux-gnu-gcc')}")
    path, number = run
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        outcome = export_trial(path, number, ["onnx", "onnx-int8", "tvm"], out)
    assert "out-of-range" not in caplog.text  # onnxruntime's harmless note on the 1-D BatchNorm weight
    m = json.loads((out / "manifest.json").read_text())
    acc = m["test_accuracy"]
    assert abs(acc["onnx"] - acc["torch"]) <= 0.001  # within 0.1 point
    assert abs(acc["onnx_int8"] - acc["torch"]) <= 0.01  # within 1 point
    assert m["formats"]["onnx"]["max_abs_diff_vs_torch"] < 1e-3
    so = (out / "student.so").read_bytes()
    assert so[:4] == b"\x7fELF" and so[4] == 2 and int.from_bytes(so[18:20], "little") == 0xB7  # 64-bit AArch64
    assert m["formats"]["tvm"]["machine"] == "AArch64" and m["formats"]["tvm"]["inputs"][0]["shape"] == [1, 1, 28, 28]
    assert m["device"]["name"] == "rpi4" and m["latency_source"] == "model" and m["latency_ms"] > 0
    assert m["latency_calibrated"] is False and m["latency_expected_error_pct"] is None
    assert m["device"]["calibrated"] is False  # rpi4 is datasheet-only: its error on a board is unknown
    arch = pd.read_csv(path / "trials.csv").set_index("trial").arch[number]
    assert m["peak_memory_bytes"] > 0 and m["arch"] == arch and {"torch", "tvm", "onnxruntime"} <= set(m["libraries"])
    for name, digest in m["sha256"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert set(m["sha256"]) == {"student.onnx", "student-int8.onnx", "student.so", "student_params.npz"}
    assert not outcome.warnings
    # the ONNX model's batch size is free
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "student.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"input": np.zeros((5, 1, 28, 28), np.float32)})[0].shape == (5, 10)


def _on_host(run: tuple[Path, int]):
    """The run's context with the host profile, its student, 20 test images and torch's logits."""
    path, number = run
    context = open_context(path)
    host = replace(context, profile=load_profile("host"))
    student = load_student(context, load_trial(context, number))
    x = context.dataset.normalize(context.dataset.test.images[:20])
    with torch.no_grad():
        logits = student(x).numpy()
    return host, student, x.numpy(), logits


def test_a_library_for_this_machine_computes_what_torch_computes(run, tmp_path: Path) -> None:
    host, student, x, logits = _on_host(run)
    info = export_module._export_tvm(student, host, tmp_path, x, logits, [])
    assert info["kind"] == "shared library" and info["checked_images"] == 20
    assert info["max_abs_diff_vs_torch"] < 1e-3 and info["agreement_with_torch"] == 1.0
    assert info["layout"] == "NCHW" and info["peak_memory_bytes"] > 0


def test_a_tuned_library_computes_what_torch_computes_and_says_what_was_tuned(run, tmp_path: Path,
                                                                               monkeypatch) -> None:
    from hwkd.latency.tuning import TuningPlan

    monkeypatch.setenv("HWKD_CACHE_DIR", str(tmp_path / "cache"))
    host, student, x, logits = _on_host(run)
    plan = TuningPlan(variants=2, number=3, repeat=3, min_repeat_ms=5)
    info = export_module._export_tvm(student, host, tmp_path, x, logits, [], plan)
    assert info["max_abs_diff_vs_torch"] < 1e-3 and info["agreement_with_torch"] == 1.0
    tuning = info["tuning"]
    assert tuning["where"] == "local" and tuning["kernels_tuned"] >= 5
    assert 0 <= tuning["kernels_changed"] <= tuning["kernels_tuned"] and tuning["variants_measured_now"] > 0
    assert all(k["best_us"] <= k["default_us"] for k in tuning["kernels"])
    # the blocked layout was a candidate, and the manifest names the layout shipped
    assert {"default", "blocked"} <= set(tuning["library_ms"])
    assert (tuning["layout"] == "NCHW") == (not tuning["library"].startswith("blocked"))
    assert info["layout"] == tuning["layout"] and info["peak_memory_bytes"] > 0


def test_tuning_for_a_device_that_cannot_measure_fails_before_writing(run, tmp_path: Path, capsys) -> None:
    path, number = run  # the run's device is rpi4: modeled, no rpc section
    out = tmp_path / "out"
    assert main(["export", str(path), "--trial", str(number), "--out", str(out), "--tune"]) == 2
    assert "device rpi4 cannot be tuned: it has no rpc section" in capsys.readouterr().err
    assert main(["export", str(path), "--trial", str(number), "--out", str(out), "--format", "onnx", "--tune"]) == 2
    assert "--tune tunes the TVM library: add tvm to --format" in capsys.readouterr().err
    assert not out.exists()


def test_a_missing_cross_compiler_still_writes_the_rest(run, tmp_path: Path, monkeypatch) -> None:
    path, number = run
    bin_dir = tmp_path / "bin"  # tar and gzip (TVM writes the archive with them), no aarch64-linux-gnu-gcc
    bin_dir.mkdir()
    for tool in ("tar", "gzip"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    monkeypatch.setenv("PATH", str(bin_dir))
    outcome = export_trial(path, number, ["onnx", "tvm"], tmp_path / "out")
    assert (tmp_path / "out" / "student.tar").is_file() and (tmp_path / "out" / "student.onnx").is_file()
    assert "aarch64-linux-gnu-gcc is not installed" in outcome.warnings[0]
    assert "apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross" in outcome.warnings[0]
    assert outcome.manifest["formats"]["tvm"]["kind"] == "object archive"
    assert set(outcome.manifest["sha256"]) == {"student.onnx", "student.tar", "student_params.npz"}


def test_the_cli_prints_the_missing_compiler_warning_once(run, tmp_path: Path) -> None:
    path, number = run
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("tar", "gzip"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    done = subprocess.run([sys.executable, "-m", "hwkd.cli", "export", str(path), "--trial", str(number), "--format",
                           "tvm", "--out", str(tmp_path / "out")], env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("aarch64-linux-gnu-gcc is not installed") == 1


def test_a_cross_compiler_that_cannot_link_still_writes_the_rest(run, tmp_path: Path, monkeypatch) -> None:
    """gcc-aarch64-linux-gnu installed without its C library (libc6-dev-arm64-cross) compiles but cannot link."""
    path, number = run
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "aarch64-linux-gnu-gcc"
    fake.write_text("#!/bin/sh\necho '/usr/bin/aarch64-linux-gnu-ld: cannot find crti.o: No such file or directory' >&2\n"
                    "echo 'collect2: error: ld returned 1 exit status' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    outcome = export_trial(path, number, ["tvm"], tmp_path / "out")
    assert (tmp_path / "out" / "student.tar").is_file() and not (tmp_path / "out" / "student.so").exists()
    warning = outcome.warnings[0]
    assert "cannot link a shared library (/usr/bin/aarch64-linux-gnu-ld: cannot find crti.o" in warning
    assert "libc6-dev-arm64-cross" in warning


def test_install_hints_name_the_compiler_and_its_c_library() -> None:
    from hwkd.latency.measure import install_hint

    assert install_hint("aarch64-linux-gnu-gcc") == "apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
    assert install_hint("arm-linux-gnueabihf-gcc") == "apt-get install gcc-arm-linux-gnueabihf libc6-dev-armhf-cross"


def test_an_existing_output_folder_needs_force_which_replaces_only_hwkds_files(run, tmp_path: Path, capsys) -> None:
    path, number = run
    out = tmp_path / "out"
    export_trial(path, number, ["onnx", "onnx-int8"], out)
    (out / "notes.txt").write_text("the user's own notes")
    (out / "sub").mkdir()
    (out / "sub" / "data.bin").write_bytes(b"\x00\x01")
    with pytest.raises(RunError, match="exists and is not empty; pass --force"):
        export_trial(path, number, ["onnx"], out)
    export_trial(path, number, ["onnx"], out, force=True)
    # the user's files survive; the earlier export's int8 model, no longer in the manifest, is gone
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "notes.txt", "student.onnx", "sub"]
    assert (out / "notes.txt").read_text() == "the user's own notes" and (out / "sub" / "data.bin").read_bytes() == b"\x00\x01"
    assert set(json.loads((out / "manifest.json").read_text())["sha256"]) == {"student.onnx"}

    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert main(["export", str(path), "--trial", str(number), "--out", str(a_file), "--force"]) == 2
    err = capsys.readouterr().err
    assert f"--out {a_file} is a file" in err and len(err.strip().splitlines()) == 1
    assert a_file.read_text() == "x"


def test_bad_runs_trials_and_formats(run, tmp_path: Path, capsys) -> None:
    path, number = run
    trials = pd.read_csv(path / "trials.csv")
    infeasible = int(trials[trials.state == "INFEASIBLE"].trial.iloc[-1])
    others = [int(t) for t in trials[trials.state == "COMPLETE"].trial if int(t) != number]
    with pytest.raises(RunError, match=f"--trial {infeasible} is infeasible .*never trained"):
        export_trial(path, infeasible, ["onnx"], tmp_path / "a")
    with pytest.raises(RunError, match="--trial 99: .* has trials 0..3"):
        export_trial(path, 99, ["onnx"], tmp_path / "b")
    if others:
        with pytest.raises(RunError, match=f"trial {others[0]} is not distilled yet.*hwkd distill"):
            export_trial(path, others[0], ["onnx"], tmp_path / "c")
    with pytest.raises(HwkdError, match="--format 'onnx,tflite': unknown tflite \\(accepted: onnx, onnx-int8, tvm\\)"):
        parse_formats("onnx,tflite")
    assert main(["export", str(tmp_path / "nothing"), "--trial", "0"]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert main(["distill", str(path), "--trial", str(infeasible), "--epochs", "0", "--loss-warmup-epochs", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--epochs 0: must be at least 1" in err and "--loss-warmup-epochs -1.0: must be a number >= 0" in err


def test_report_shows_proxy_fidelity_from_three_distilled_students(run, capsys) -> None:
    path, _ = run
    assert main(["report", str(path)]) == 0
    assert "1 fully distilled student(s); proxy fidelity is shown from 3" in capsys.readouterr().out
    frame = pd.DataFrame({"val_accuracy": [0.80, 0.85, 0.90, 0.70], "full_test_accuracy": [0.86, 0.88, 0.91, 0.89],
                          "synflow": [9.0, 8.0, 10.0, 7.0], "duplicate_of": [None] * 4})
    frame["score"] = frame.val_accuracy  # a run ranked by accuracy alone (--synflow-points 0)
    fidelity = proxy_fidelity(frame)
    assert fidelity is not None and fidelity.students == 4
    assert fidelity.spearman == pytest.approx(0.4) and fidelity.kendall == pytest.approx(1 / 3)
    # SynFlow ranks them 3, 2, 4, 1 against the truth's 1, 2, 4, 3: 1 - 6 * 8 / (4 * 15)
    assert fidelity.synflow_spearman == pytest.approx(0.2)
    assert "SynFlow of the untrained students alone: Spearman 0.200" in fidelity.line()
    assert fidelity.accuracy_spearman is None and "brief accuracy alone" not in fidelity.line()
    older = frame.assign(synflow=[9.0, None, 10.0, 7.0])  # a trial from before SynFlow was recorded
    assert proxy_fidelity(older).synflow_spearman is None and "SynFlow" not in proxy_fidelity(older).line()
    assert proxy_fidelity(frame.iloc[:2]) is None
