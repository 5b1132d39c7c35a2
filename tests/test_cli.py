from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from hwkd.cli import main


def test_help_is_fast_and_imports_no_heavy_library() -> None:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", "import sys, hwkd.cli; hwkd.cli.build_parser(); "
         "print(sorted(m for m in ('torch', 'tvm', 'optuna') if m in sys.modules))"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "[]"
    assert time.perf_counter() - start < 10


def test_python_dash_m_runs_the_cli() -> None:
    out = subprocess.run([sys.executable, "-m", "hwkd", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "estimate" in out.stdout and "devices" in out.stdout


def test_devices_json_lists_builtin_profiles(capsys) -> None:
    assert main(["devices", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_name = {row["name"]: row for row in rows}
    assert {"rpi4", "rpi5", "host"} <= set(by_name)
    assert by_name["rpi4"]["peak_gflops"] == 48.0
    assert by_name["host"]["measures"] == "local"


def test_errors_are_one_line_with_exit_2(capsys) -> None:
    code = main(["estimate", "--device", "rpi9", "--space", "nb201", "--arch", "x"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "unknown device 'rpi9'" in err and "rpi4" in err


def test_installed_package_finds_its_data_outside_the_checkout(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-m", "hwkd", "spaces", "--json"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    names = {json.loads(line)["name"] for line in out.stdout.splitlines()}
    assert {"nb201", "fbnet"} <= names


def test_spaces_table_lists_each_space_with_its_size(capsys) -> None:
    assert main(["spaces"]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["nb201-widths"] == "62,500" and rows["nb201-small"] == "15,625" and rows["nb201"] == "15,625"


def test_debug_shows_the_traceback() -> None:
    out = subprocess.run([sys.executable, "-m", "hwkd", "--debug", "estimate", "--device", "rpi9",
                          "--space", "nb201", "--arch", "x"], capture_output=True, text=True)
    assert out.returncode != 0 and "Traceback" in out.stderr


@pytest.mark.slow
def test_search_then_report_from_the_command_line(tmp_path, teacher_file, capsys) -> None:
    run = tmp_path / "run"
    argv = ["search", "--teacher", str(teacher_file), "--run-dir", str(run), "--trials", "2", "--steps", "30",
            "--train-device", "cpu"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "val_acc" in out and "2 new trials" in out and str(run) in out
    assert out.split()[:3] == ["trial", "score", "synflow"]
    assert "score: brief validation accuracy + 1 pt per decade of SynFlow" in out
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "latency_ms" in out and "2 trials" in out and str(run / "pareto.png") in out
    assert out.split()[:3] == ["trial", "score", "synflow"]  # the run's own score, from its run.json
    # the same command continues the same study
    assert main(argv[:-4] + ["--trials", "1", "--steps", "30", "--train-device", "cpu"]) == 0
    assert main(["report", str(run)]) == 0
    assert "3 trials" in capsys.readouterr().out


@pytest.mark.slow
def test_a_run_ranked_by_accuracy_alone_continues_so_without_the_flag(tmp_path, teacher_file, capsys) -> None:
    run = tmp_path / "run"
    argv = ["search", "--teacher", str(teacher_file), "--run-dir", str(run), "--trials", "1", "--steps", "20",
            "--train-device", "cpu"]
    assert main(argv + ["--synflow-points", "0"]) == 0  # as every run before the score existed
    assert capsys.readouterr().out.split()[:2] == ["trial", "val_acc"]
    assert main(argv) == 0  # the default is 1, but a continued run keeps its own
    assert main(argv + ["--synflow-points", "1"]) == 2
    assert "brief.synflow_points: 0.0 -> 1.0" in capsys.readouterr().err


def test_search_and_report_bad_input_are_one_line(tmp_path, capsys) -> None:
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"hwkd report: error: {tmp_path / 'nope'}: no such run folder"
    assert main(["report", str(tmp_path)]) == 2
    assert "not a hwkd run folder (no run.json)" in capsys.readouterr().err
    assert main(["search", "--steps", "0", "--alpha", "2", "--loss", "ce", "--synflow-points", "-1",
                 "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--steps 0: must be at least 1" in err and "--alpha 2.0: must be in [0, 1]" in err and "\n" not in err
    assert "--loss 'ce': choose kd, dkd, dist, ls" in err
    assert "--synflow-points -1.0: must be a number >= 0 (0: rank by accuracy alone)" in err
    assert main(["search", "--device", "pi4", "--run-dir", str(tmp_path / "r")]) == 2
    assert "unknown device 'pi4'" in capsys.readouterr().err
