from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hwkd.errors import ConfigError, UnknownNameError
from hwkd.profiles import builtin_profiles, load_profile, profile_to_dict


def test_builtin_profiles_are_shipped() -> None:
    assert {"rpi4", "rpi5", "host"} <= set(builtin_profiles())


@pytest.mark.parametrize("name", sorted(builtin_profiles()))
def test_every_builtin_profile_loads_with_sane_facts(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    assert profile.runtime.threads >= 1 and profile.cpu.cores >= 1
    assert profile.cpu.peak_gflops_per_core > 0 and profile.memory.bandwidth_gb_s > 0
    assert profile.summary()["name"] == name


def test_rpi4_facts_match_the_datasheet() -> None:
    rpi4 = load_profile("rpi4")
    assert rpi4.target == {
        "kind": "llvm",
        "mtriple": "aarch64-linux-gnu",
        "mcpu": "cortex-a72",
        "mattr": ["+neon"],
    }
    # 4 cores x 1.5 GHz x 8 FLOP/cycle (one 128-bit FMLA per cycle).
    assert rpi4.cpu.peak_gflops_per_core == pytest.approx(12.0)
    assert rpi4.memory.bandwidth_gb_s == pytest.approx(12.8)
    assert rpi4.runtime.threads == 4
    assert not rpi4.can_measure


def test_rpi5_is_faster_than_rpi4_on_paper() -> None:
    rpi4, rpi5 = load_profile("rpi4"), load_profile("rpi5")
    assert rpi5.cpu.peak_gflops_per_core == pytest.approx(2.4 * 16)
    assert rpi5.cpu.peak_gflops_per_core > 3 * rpi4.cpu.peak_gflops_per_core


@pytest.mark.parametrize("name", sorted(builtin_profiles()))
def test_every_number_cites_a_source(name: str) -> None:
    profile = load_profile(name)
    for section in ("cpu", "memory", "cost_model"):
        for key in yaml.safe_load(Path(profile.path).read_text())[section]:
            assert profile.sources.get(f"{section}.{key}"), (name, section, key)


def test_host_profile_probes_this_machine() -> None:
    host = load_profile("host")
    assert host.measure_local
    assert host.cpu.cores >= 1 and host.cpu.clock_ghz > 0.1
    assert host.memory.bandwidth_gb_s > 0.5
    assert host.target.get("mcpu") != "auto"
    assert host.sources["cpu.cores"].startswith("probed")


def test_host_bandwidth_is_measured_once_per_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from hwkd import host_probe

    monkeypatch.setenv("HWKD_CACHE_DIR", str(tmp_path))
    host_probe._measured_bandwidth.cache_clear()
    try:
        first = load_profile("host")
        path = tmp_path / host_probe.BANDWIDTH_FILE
        kept = json.loads(path.read_text())
        (machine, entry), = kept.items()
        assert entry["gb_s"] == first.memory.bandwidth_gb_s > 0.5
        assert str(path) in first.sources["memory.bandwidth_gb_s"]
        # a later load (another process) reads the kept figure instead of measuring a different one
        path.write_text(json.dumps({machine: {"gb_s": 12.34, "date": "2026-01-02"}, "other|machine": {"gb_s": 1.0,
                                                                                                       "date": "x"}}))
        host_probe._measured_bandwidth.cache_clear()
        second = load_profile("host")
        assert second.memory.bandwidth_gb_s == 12.34 and "2026-01-02" in second.sources["memory.bandwidth_gb_s"]
        # an unreadable file is measured again and rewritten, keeping nothing it cannot read
        path.write_text("{not json")
        host_probe._measured_bandwidth.cache_clear()
        third = load_profile("host")
        assert third.memory.bandwidth_gb_s > 0.5 and set(json.loads(path.read_text())) == {machine}
    finally:
        host_probe._measured_bandwidth.cache_clear()


def test_host_clock_is_measured_once_per_machine_and_falls_back_to_the_os(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from hwkd import host_probe

    monkeypatch.setenv("HWKD_CACHE_DIR", str(tmp_path))
    host_probe._measured_clock.cache_clear()
    try:
        first = load_profile("host")
        kept = json.loads((tmp_path / host_probe.CLOCK_FILE).read_text())
        (machine, entry), = kept.items()
        assert entry["ghz"] == first.cpu.clock_ghz and 0.3 < first.cpu.clock_ghz < 8
        assert first.sources["cpu.clock_ghz"].startswith("measured: a chain of dependent integer adds")
        (tmp_path / host_probe.CLOCK_FILE).write_text(json.dumps({machine: {"ghz": 3.21, "date": "2026-01-02"}}))
        host_probe._measured_clock.cache_clear()
        assert load_profile("host").cpu.clock_ghz == 3.21
        # where the chain cannot run, the OS's figure, saying so
        (tmp_path / host_probe.CLOCK_FILE).unlink()
        monkeypatch.setattr(host_probe, "_chain_clock_ghz", lambda: None)
        host_probe._measured_clock.cache_clear()
        fallback = load_profile("host")
        assert fallback.cpu.clock_ghz > 0.1 and "measuring the clock failed" in fallback.sources["cpu.clock_ghz"]
        assert not (tmp_path / host_probe.CLOCK_FILE).exists()
    finally:
        host_probe._measured_clock.cache_clear()


def test_unknown_device_lists_the_candidates() -> None:
    with pytest.raises(UnknownNameError) as info:
        load_profile("rpi9")
    message = str(info.value)
    assert "'rpi9'" in message and "rpi4" in message and "host" in message


def test_missing_profile_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: no such profile file"):
        load_profile(tmp_path / "nope.yaml")


def _rpi4_dict() -> dict:
    return yaml.safe_load((Path(load_profile("rpi4").path)).read_text())


def test_malformed_profile_reports_every_problem_at_once(tmp_path: Path) -> None:
    raw = _rpi4_dict()
    raw["cpu"]["clock_ghz"] = "fast"
    del raw["memory"]["bandwidth_gb_s"]
    raw["runtime"]["threads"] = 0
    raw["cost_model"]["colour"] = 3
    raw["cost_model"]["model"] = "fancy"
    raw["cost_model"]["depthwise_conv_scale"] = 2.0  # a fitted number needs its source too
    raw["calibration"] = {"runtime": "ncnn"}
    del raw["sources"]["cpu.cores"]
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    message = str(info.value)
    assert message.startswith(str(path))
    for expected in (
        "cpu.clock_ghz: 'fast' is not a float",
        "memory.bandwidth_gb_s: missing",
        "runtime.threads: must be > 0",
        "cost_model.colour: unknown key",
        "cpu.cores: no public source",
        "cost_model.model: 'fancy' is not one of schedule, roofline, onnxruntime",
        "cost_model.depthwise_conv_scale: no public source",
        "calibration.base_profile: missing",
    ):
        assert expected in message
    assert "\n" not in message


def test_user_profile_with_rpc_section(tmp_path: Path) -> None:
    raw = _rpi4_dict()
    raw["rpc"] = {"host": "127.0.0.1", "port": 9090, "timeout_s": 3}
    path = tmp_path / "myboard.yaml"
    path.write_text(yaml.safe_dump(raw))
    board = load_profile(path)
    assert board.name == "myboard"
    assert board.rpc is not None and board.rpc.port == 9090 and board.rpc.timeout_s == 3.0
    assert board.rpc.cross_compiler is None  # derived from the target triple when linking
    assert board.can_measure


def test_yaml_tags_are_not_executed(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("description: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_profile(path)


def test_the_onnxruntime_model_needs_the_cost_per_node(tmp_path: Path) -> None:
    raw = _rpi4_dict()
    raw["cost_model"]["model"] = "onnxruntime"
    path = tmp_path / "ort.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="cost_model.node_overhead_us: the onnxruntime model needs") as info:
        load_profile(path)
    assert "\n" not in str(info.value)
    raw["cost_model"]["node_overhead_us"] = 12.0
    raw["sources"]["cost_model.node_overhead_us"] = "measured on the board: benchmarks/overheads.py --onnxruntime"
    path.write_text(yaml.safe_dump(raw))
    board = load_profile(path)
    assert board.cost.model == "onnxruntime" and board.cost.node_overhead_us == 12.0
    # a profile without it is written without it
    assert "node_overhead_us" not in profile_to_dict(load_profile("rpi4"))["cost_model"]
    assert profile_to_dict(board)["cost_model"]["node_overhead_us"] == 12.0
    # the light-node costs are optional too: without them a light node costs what a convolution's
    # dispatch does and streams at the cache rate; a measured 0 us stays 0
    assert (board.cost.light_overhead_us, board.cost.light_bytes_per_cycle) == (12.0, board.cost.cache_bytes_per_cycle)
    assert "light_node_overhead_us" not in profile_to_dict(board)["cost_model"]
    raw["cost_model"].update(light_node_overhead_us=0.0, light_node_bytes_per_cycle=6.0)
    raw["sources"].update({"cost_model.light_node_overhead_us": "measured", "cost_model.light_node_bytes_per_cycle": "measured"})
    path.write_text(yaml.safe_dump(raw))
    light = load_profile(path)
    assert (light.cost.light_overhead_us, light.cost.light_bytes_per_cycle) == (0.0, 6.0)
    assert profile_to_dict(light)["cost_model"]["light_node_overhead_us"] == 0.0
    raw["cost_model"]["light_node_bytes_per_cycle"] = 0.0
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="cost_model.light_node_bytes_per_cycle: must be > 0"):
        load_profile(path)


def test_a_board_file_without_a_reorder_window_gets_the_smallest_shipped_one(tmp_path: Path) -> None:
    raw = _rpi4_dict()
    del raw["cpu"]["reorder_window"]
    del raw["sources"]["cpu.reorder_window"]
    path = tmp_path / "older-board.yaml"  # written before hwkd had the key
    path.write_text(yaml.safe_dump(raw))
    older = load_profile(path)
    assert older.cpu.reorder_window == 128 == load_profile("rpi4").cpu.reorder_window
    assert older.sources["cpu.reorder_window"].startswith("default: 128")
    # a profile written from it (`hwkd calibrate`) has the value and its citation
    written = profile_to_dict(older)
    assert written["cpu"]["reorder_window"] == 128 and written["sources"]["cpu.reorder_window"].startswith("default")
    raw["cpu"]["reorder_window"] = 0
    raw["sources"]["cpu.reorder_window"] = "a test"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="cpu.reorder_window: must be > 0, got 0"):
        load_profile(path)
