"""`hwkd calibrate` end to end: from a CSV (arch ids, ONNX files), over TVM RPC, and bad input."""

from __future__ import annotations

import json
import random
import socket
from pathlib import Path

import pytest
import torch
import yaml

from hwkd.calibrator import CalibrateConfig, calibrate
from hwkd.cli import main
from hwkd.errors import HwkdError
from hwkd.latency.cost_model import model_version
from hwkd.latency.estimator import Estimator
from hwkd.profiles import load_profile
from hwkd.spaces import load_space

SPACE = "nb201"
NEW = "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


def archs(count: int, seed: int = 0) -> list[str]:
    space = load_space(SPACE)
    rng = random.Random(seed)
    out: dict[str, None] = {}
    while len(out) < count:
        out.setdefault(space.parse(space.sample(rng)), None)
    return [a for a in out if a != space.parse(NEW)][:count]


@pytest.fixture(scope="module")
def board_twice_as_slow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CSV of 6 students 'measured' on a board exactly twice as slow as the rpi4 model says."""
    rpi4 = Estimator(load_profile("rpi4"), "model")
    space = load_space(SPACE)
    path = tmp_path_factory.mktemp("board") / "m.csv"
    lines = ["arch,latency_ms"] + [f'"{a}",{2 * rpi4.estimate_arch(space, a).latency_ms:.5f}' for a in archs(6)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_calibrating_from_a_csv_writes_a_profile_every_command_takes(board_twice_as_slow, tmp_path, capsys) -> None:
    out = tmp_path / "my-rpi4.yaml"
    assert main(["calibrate", "--device", "rpi4", "--measurements", str(board_twice_as_slow), "--space", SPACE,
                 "--runtime", "tvm", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "from 6 measurements" in said and f"wrote {out}" in said

    profile = load_profile(out)
    cal = profile.calibration
    assert cal is not None and cal.base_profile == "rpi4" and cal.runtime == "tvm" and cal.measurements == 6
    assert cal.threads == 4 and cal.source == str(board_twice_as_slow)
    assert cal.loo_median_abs_error_pct < 1.0 and cal.loo_spearman > 0.99
    # a student the fit never saw is predicted twice as slow as the datasheet model
    rpi4 = Estimator(load_profile("rpi4"), "model").estimate_arch(load_space(SPACE), NEW)
    assert main(["estimate", "--device", str(out), "--space", SPACE, "--arch", NEW, "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["latency_ms"] == pytest.approx(2 * rpi4.latency_ms, rel=0.02)
    assert row["calibrated"] is True and row["expected_error_pct"] == cal.loo_median_abs_error_pct
    assert row["device"] == "my-rpi4" and row["source"] == "model"

    assert main(["estimate", "--device", str(out), "--space", SPACE, "--arch", NEW]) == 0
    assert f"calibrated to tvm: median error {cal.loo_median_abs_error_pct:.1f} %" in capsys.readouterr().out
    assert main(["devices", str(out), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["calibrated"] for r in rows if r["name"] == "my-rpi4"] == [True]
    assert all(r["calibrated"] is False and r["expected_error_pct"] is None for r in rows if r["name"] != "my-rpi4")
    # a calibration's caveat (calibration.Fit.caveat) is shown wherever its error is
    raw = yaml.safe_load(out.read_text())
    assert "caveat" not in raw["calibration"]  # this fit pinned every multiplier down
    raw["calibration"]["caveat"] = "poorly determined, far from the global factor x2.00: overhead x0.10"
    warned = tmp_path / "warned.yaml"
    warned.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["devices", str(warned)]) == 0
    assert "warned: poorly determined, far from the global factor x2.00: overhead x0.10" in capsys.readouterr().out
    assert main(["estimate", "--device", str(warned), "--space", SPACE, "--arch", NEW]) == 0
    assert "caveat of that calibration: poorly determined" in capsys.readouterr().out


def test_a_calibration_of_another_model_version_warns_and_knows_no_error(board_twice_as_slow, tmp_path,
                                                                         capsys) -> None:
    out = tmp_path / "my-rpi4.yaml"
    assert main(["calibrate", "--device", "rpi4", "--measurements", str(board_twice_as_slow), "--space", SPACE,
                 "--runtime", "tvm", "--out", str(out)]) == 0
    capsys.readouterr()
    raw = yaml.safe_load(out.read_text())
    assert raw["calibration"]["model_version"] == model_version(load_profile("rpi4"))
    for old, said in [("schedule model 1, lowering 8", "was fitted to schedule model 1, lowering 8"),
                      (None, "records no model version")]:
        if old is None:
            del raw["calibration"]["model_version"]
        else:
            raw["calibration"]["model_version"] = old
        stale = tmp_path / "stale.yaml"
        stale.write_text(yaml.safe_dump(raw, sort_keys=False))
        assert main(["estimate", "--device", str(stale), "--space", SPACE, "--arch", NEW, "--json"]) == 0
        row = json.loads(capsys.readouterr().out)
        assert row["calibrated"] is True and row["expected_error_pct"] is None  # the multipliers still apply
        assert main(["estimate", "--device", str(stale), "--space", SPACE, "--arch", NEW]) == 0
        text = capsys.readouterr().out
        assert said in text and "calibrate again (hwkd calibrate --device rpi4" in text
        assert "median error" not in text
        assert main(["devices", str(stale), "--json"]) == 0
        rows = {r["name"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
        assert rows["stale"]["expected_error_pct"] is None and said in rows["stale"]["stale_calibration"]


def test_onnx_measurements_relative_to_the_csv(tmp_path, capsys) -> None:
    space = load_space(SPACE)
    rows = ["onnx,latency_ms"]
    for n, arch in enumerate(archs(3, seed=7)):
        model = space.build(arch, 10).eval()
        torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), str(tmp_path / f"s{n}.onnx"), dynamo=False)
        rows.append(f"s{n}.onnx,{3.0 + n}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "p.yaml"
    argv = ["calibrate", "--device", "rpi5", "--measurements", str(tmp_path / "m.csv"), "--out", str(out)]
    assert "--runtime is needed with --measurements" in _fails(argv, capsys)
    assert main(argv + ["--runtime", "onnxruntime"]) == 0
    profile = load_profile(out)
    assert profile.calibration.measurements == 3 and profile.calibration.runtime == "onnxruntime"
    assert profile.calibration.base_profile == "rpi5"
    assert profile.cost.model == "schedule"  # rpi5 does not know ONNX Runtime's cost per node
    assert main(argv + ["--runtime", "onnxruntime", "--cost-model", "roofline", "--force"]) == 0
    assert load_profile(out).cost.model == "roofline"
    err = _fails(["estimate", "--device", str(out), "--space", SPACE, "--arch", NEW, "--latency-source", "measured"],
                 capsys)
    assert "calibrated to onnxruntime, so TVM cannot measure what it predicts" in err


@pytest.mark.slow
def test_measuring_over_rpc_picks_students_across_the_range(rpc_server: int, board_file, tmp_path, capsys) -> None:
    board = board_file(rpc_server)
    out = tmp_path / "board-cal.yaml"
    assert main(["calibrate", "--device", str(board), "--measure", "3", "--space", "nb201-small",
                 "--out", str(out)]) == 0
    profile = load_profile(out)
    assert profile.calibration.source == f"rpc 127.0.0.1:{rpc_server}" and profile.calibration.runtime == "tvm"
    assert profile.rpc is not None  # measured with TVM: it may go on measuring
    measured = (tmp_path / "board-cal.measurements.csv").read_text().splitlines()
    assert measured[0] == "arch,latency_ms,model_latency_ms" and len(measured) == 4
    latencies = sorted(float(line.rsplit(",", 2)[2]) for line in measured[1:])
    assert latencies[-1] > 1.5 * latencies[0]  # spread over the range, not three look-alikes


def _fails(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    return err


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, board_twice_as_slow, capsys) -> None:
    out = tmp_path / "out.yaml"
    base = ["calibrate", "--device", "rpi4", "--space", SPACE, "--runtime", "tvm", "--out", str(out), "--measurements"]

    def csv(name: str, text: str) -> str:
        (tmp_path / name).write_text(text)
        return str(tmp_path / name)

    good = board_twice_as_slow.read_text().splitlines()
    assert "needs a column latency_ms and one of arch" in _fails(base + [csv("a.csv", "name,ms\nx,1\n")], capsys)
    err = _fails(base + [csv("b.csv", "\n".join(good[:3] + ['"|bogus|",2.0'] + good[3:]))], capsys)
    assert "b.csv:4:" in err
    err = _fails(base + [csv("c.csv", "\n".join(good[:2] + [good[2].rsplit(",", 1)[0] + ",-1"]))], capsys)
    assert "c.csv:3: latency_ms '-1' is not a positive number" in err
    err = _fails(base + [csv("d.csv", "\n".join(good[:2] + [good[2].rsplit(",", 1)[0] + ",fast"]))], capsys)
    assert "'fast' is not a positive number" in err
    assert "at least 3" in _fails(base + [csv("e.csv", "\n".join(good[:3]))], capsys)
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    err = _fails(base + [csv("f.csv", "onnx,latency_ms\nbroken.onnx,1\nbroken.onnx,2\nbroken.onnx,3\n")], capsys)
    assert "f.csv:2: " in err and "broken.onnx" in err
    assert "not found" in _fails(base + [csv("g.csv", "onnx,latency_ms\nnope.onnx,1\n")], capsys)
    assert "rpi4 cannot be measured" in _fails(["calibrate", "--device", "rpi4", "--measure", "5", "--out", str(out)],
                                               capsys)
    with pytest.raises(HwkdError, match=r"^--cost-model 'fancy': choose schedule, roofline, onnxruntime$"):  # the API's check
        calibrate(CalibrateConfig(device="rpi4", out=str(out), measurements=str(board_twice_as_slow), runtime="tvm",
                                  space=SPACE, cost_model="fancy"))
    assert not out.exists()

    out.write_text("mine")
    assert "exists" in _fails(base + [str(board_twice_as_slow)], capsys)
    assert out.read_text() == "mine"


def test_an_unreachable_board_is_one_line(board_file, tmp_path, capsys) -> None:

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    board = board_file(port)
    err = _fails(["calibrate", "--device", str(board), "--measure", "5", "--out", str(tmp_path / "x.yaml")], capsys)
    assert f"cannot reach the TVM RPC server of board at 127.0.0.1:{port}" in err
    assert not (tmp_path / "x.yaml").exists()


def test_a_calibrated_profile_reads_back_as_yaml_data(board_twice_as_slow, tmp_path) -> None:
    out = tmp_path / "p.yaml"
    assert main(["calibrate", "--device", "rpi4", "--measurements", str(board_twice_as_slow), "--space", SPACE,
                 "--runtime", "tvm", "--out", str(out)]) == 0
    raw = yaml.safe_load(out.read_text())
    assert set(raw["calibration"]) >= {"base_profile", "runtime", "loo_median_abs_error_pct", "loo_spearman"}
    assert raw["cost_model"]["dense_conv_scale"] == pytest.approx(2.0, rel=0.05)


def test_calibrating_the_onnxruntime_model_scales_its_cost_per_node(tmp_path, capsys) -> None:
    raw = yaml.safe_load(Path(load_profile("rpi4").path).read_text())
    raw["cost_model"]["node_overhead_us"] = 20.0  # the model stays the schedule model: ONNX Runtime's is chosen
    raw["sources"]["cost_model.node_overhead_us"] = "a test's board"
    raw["cost_model"]["light_node_overhead_us"] = 2.0
    raw["sources"]["cost_model.light_node_overhead_us"] = "a test's board"
    raw["cost_model"]["light_node_bytes_per_cycle"] = 8.0
    raw["sources"]["cost_model.light_node_bytes_per_cycle"] = "a test's board"
    board_path = tmp_path / "ort-board.yaml"
    board_path.write_text(yaml.safe_dump(raw))
    plain = load_profile(board_path)
    assert plain.cost.model == "schedule"
    from dataclasses import replace

    board = Estimator(replace(plain, cost=replace(plain.cost, model="onnxruntime")), "model")
    space = load_space(SPACE)
    rows = ["arch,latency_ms"] + [f'"{a}",{1.5 * board.estimate_arch(space, a).latency_ms:.5f}' for a in archs(6)]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "cal.yaml"
    argv = ["calibrate", "--device", str(board_path), "--space", SPACE, "--measurements", str(tmp_path / "m.csv"),
            "--runtime", "onnxruntime", "--out", str(out)]
    assert main(argv) == 0  # measurements of ONNX Runtime fit the onnxruntime model by default
    fitted = load_profile(out)
    assert fitted.cost.model == "onnxruntime" and fitted.cost.node_overhead_us == pytest.approx(30.0, rel=0.02)
    assert fitted.cost.light_node_overhead_us == pytest.approx(3.0, rel=0.02)  # both fixed costs move together
    assert fitted.cost.light_node_bytes_per_cycle == 8.0  # a rate: its time is scaled as the class "other"
    assert fitted.sources["cost_model.node_overhead_us"].startswith("fitted: hwkd calibrate")
    new = Estimator(fitted, "model").estimate_arch(space, NEW).latency_ms
    assert new == pytest.approx(1.5 * board.estimate_arch(space, NEW).latency_ms, rel=0.02)
    # measurements of another runtime fit the profile's own model
    assert main(argv[:-3] + ["tvm", "--out", str(tmp_path / "tvm.yaml")]) == 0
    assert load_profile(tmp_path / "tvm.yaml").cost.model == "schedule"
    # a profile that does not know ONNX Runtime's cost per node, and TVM measurements, are refused
    assert "rpi4 has no cost_model.node_overhead_us" in _fails(
        argv[:2] + ["rpi4"] + argv[3:] + ["--cost-model", "onnxruntime", "--force"], capsys)
    assert "--measure times hwkd's TVM library" in _fails(
        ["calibrate", "--device", str(board_path), "--measure", "3", "--cost-model", "onnxruntime",
         "--out", str(tmp_path / "x.yaml")], capsys)
