"""`--config FILE.yaml`: long flags as keys, the command line wins, unknown keys listed together,
and a run folder's config.yaml repeats the run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from hwkd.cli import _subcommands, build_parser, main
from hwkd.config_file import expand_config
from hwkd.errors import HwkdError


def _parse(argv: list[str]):
    parser = build_parser()
    return parser.parse_args(expand_config(argv, _subcommands(parser)))


def test_keys_are_long_flags_and_the_command_line_wins(tmp_path: Path) -> None:
    config = tmp_path / "search.yaml"
    config.write_text("device: rpi5\nspace: fbnet\nmax_latency_ms: 15\nmax-memory-kb: 256\ntrials: 40\n"
                      "sampler: nsga2\n")
    args = _parse(["search", "--config", str(config), "--trials", "3"])
    assert (args.device, args.space, args.sampler) == ("rpi5", "fbnet", "nsga2")
    assert args.max_latency_ms == 15.0 and args.max_memory_kb == 256.0
    assert args.trials == 3  # the command line wins
    args = _parse(["search", f"--config={config}"])
    assert args.trials == 40


def test_switches_and_lists(tmp_path: Path) -> None:
    config = tmp_path / "export.yaml"
    config.write_text("trial: 4\nformat: onnx\nforce: true\n")
    args = _parse(["export", "RUN", "--config", str(config)])
    assert (args.run, args.trial, args.format, args.force) == ("RUN", 4, "onnx", True)
    estimate = tmp_path / "estimate.yaml"
    estimate.write_text("device: rpi4\nonnx: [a.onnx, b.onnx]\n")
    assert _parse(["estimate", "--config", str(estimate)]).onnx == ["a.onnx", "b.onnx"]


def test_values_are_checked_as_the_flags_are(tmp_path: Path, capsys) -> None:
    config = tmp_path / "search.yaml"
    config.write_text("sampler: grid\n")
    with pytest.raises(SystemExit):
        _parse(["search", "--config", str(config)])
    assert "invalid choice: 'grid'" in capsys.readouterr().err


def test_unknown_keys_are_listed_together_in_one_line(tmp_path: Path, capsys) -> None:
    config = tmp_path / "search.yaml"
    config.write_text("device: rpi4\nmax_latency: 15\nepochs: 3\n")
    assert main(["search", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hwkd search: error: --config ")
    assert "unknown key(s) epochs, max_latency for hwkd search" in err and "max-latency-ms" in err


@pytest.mark.parametrize("command, text, message", [
    (["search"], "- device\n", "must hold a mapping"),
    (["search"], "device: [rpi4, rpi5]\n", "device: takes one value, not a list"),
    (["export", "RUN"], "force: maybe\n", "force: 'maybe' is not true or false"),
    (["search"], "device: {a: 1}\n", "device: takes a value, not a mapping"),
    (["search"], "device: 'x\n", "not valid YAML"),
])
def test_bad_files_are_one_line(tmp_path: Path, command: list[str], text: str, message: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(HwkdError, match=message):
        _parse([*command, "--config", str(config)])
    with pytest.raises(HwkdError, match="no such file"):
        _parse(["search", "--config", str(tmp_path / "missing.yaml")])


@pytest.mark.slow
def test_the_run_folder_keeps_a_config_that_repeats_the_run(tmp_path: Path, teacher_file: Path) -> None:
    config = tmp_path / "search.yaml"
    run = tmp_path / "run"
    config.write_text(yaml.safe_dump({"teacher": str(teacher_file), "run-dir": str(run), "trials": 1, "steps": 20,
                                      "train-device": "cpu", "max-latency-ms": 50.0}))
    assert main(["search", "--config", str(config)]) == 0
    kept = yaml.safe_load((run / "config.yaml").read_text())
    assert kept["steps"] == 20 and kept["max-latency-ms"] == 50.0 and kept["device"] == "rpi4"
    assert "storage" not in kept  # the run folder's own study.db
    # the kept file continues the same run (same fixed settings), here with one more trial
    assert main(["search", "--config", str(run / "config.yaml")]) == 0
    assert len(pd.read_csv(run / "trials.csv")) == 2
