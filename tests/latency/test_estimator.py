from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hwkd.cli import main
from hwkd.errors import HwkdError
from hwkd.latency.estimator import Estimator
from hwkd.latency.lowered_cache import LoweredCache
from hwkd.profiles import load_profile
from hwkd.spaces import load_space

ALL_3X3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
SMALL = "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|"
KEYS = {"latency_ms", "peak_memory_bytes", "params_bytes", "macs", "source", "device"}


def test_model_estimates_for_every_board_and_space() -> None:
    for device in ("rpi4", "rpi5"):
        estimator = Estimator(load_profile(device))
        nb = estimator.estimate_arch(load_space("nb201"), ALL_3X3)
        fb = estimator.estimate_arch(load_space("fbnet"), "3" * 22, num_classes=100)
        for e in (nb, fb):
            assert e.source == "model" and e.device == device and e.latency_ms > 0
            assert e.peak_memory_bytes > 0 and e.params_bytes > 0
        assert nb.macs == 220_119_680


def test_repeated_students_cost_nothing_the_second_time(tmp_path) -> None:
    estimator = Estimator(load_profile("rpi4"), disk_cache=LoweredCache(tmp_path))
    space = load_space("nb201")
    first = estimator.estimate_arch(space, ALL_3X3)
    misses = estimator.lowerer.stats["kernel_misses"]
    assert estimator.estimate_arch(space, ALL_3X3) is first
    # the same graph from a fresh module: served from the structure cache
    again = estimator.estimate_module(space.build(ALL_3X3, 10), (1, 3, 32, 32), label="copy")
    assert again.latency_ms == first.latency_ms and again.arch == "copy"
    assert estimator.lowerer.stats["kernel_misses"] == misses


def test_a_wider_register_file_lowers_to_its_own_kernels_and_cache_entries(tmp_path) -> None:
    """An AVX-512 board's tiled convolutions use 16-float rows; the same student for a NEON board
    keeps 8-float ones, even from a disk cache the other filled."""
    from dataclasses import replace

    rpi4 = load_profile("rpi4")
    wide = replace(rpi4, cpu=replace(rpi4.cpu, simd_bits=512))
    space = load_space("nb201")

    def tile_lanes(profile) -> set[int]:
        lowered = Estimator(profile, disk_cache=LoweredCache(tmp_path)).lowered_arch(space, ALL_3X3)
        return {b.lanes for k in lowered.kernels if k.features.strategy == "tiled" for b in k.features.bodies}

    assert 16 in tile_lanes(wide) and 16 not in tile_lanes(rpi4)
    assert 16 in tile_lanes(wide)  # from the cache this time


@pytest.mark.slow
def test_host_measures_and_keeps_the_model_figure() -> None:
    estimate = Estimator(load_profile("host")).estimate_arch(load_space("nb201"), SMALL)
    assert estimate.source == "measured" and estimate.measured_on == "local"
    assert estimate.latency_spread_ms is not None and estimate.model_latency_ms > 0
    forced = Estimator(load_profile("host"), "model").estimate_arch(load_space("nb201"), SMALL)
    assert forced.source == "model" and forced.latency_ms == forced.model_latency_ms


def test_measured_is_refused_for_a_board_without_rpc() -> None:
    with pytest.raises(HwkdError, match="rpi4 cannot be measured"):
        Estimator(load_profile("rpi4"), "measured")


@pytest.mark.slow
def test_rpc_board_measures_through_the_server(rpc_server: int, board_file, capsys) -> None:
    code = main(["estimate", "--device", str(board_file(rpc_server)), "--space", "nb201", "--arch", SMALL, "--json"])
    assert code == 0
    row = json.loads(capsys.readouterr().out)
    assert row["source"] == "measured" and row["measured_on"] == f"rpc 127.0.0.1:{rpc_server}"


# ---- the CLI contract -------------------------------------------------------------------------


def test_estimate_json_one_object_per_arch_in_order(tmp_path: Path, capsys) -> None:
    archs = [SMALL, ALL_3X3, SMALL]
    arch_file = tmp_path / "archs.txt"
    arch_file.write_text("# students\n" + "\n".join(archs) + "\n")
    assert main(["estimate", "--device", "rpi4", "--space", "nb201", "--arch-file", str(arch_file), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["arch"] for r in rows] == archs
    assert all(KEYS <= set(r) for r in rows)
    assert rows[0] == rows[2] and rows[1]["latency_ms"] > rows[0]["latency_ms"]


@pytest.mark.slow
def test_estimate_onnx_files_in_order(tmp_path: Path, capsys) -> None:
    paths = []
    for n, arch in enumerate([ALL_3X3, SMALL]):
        path = tmp_path / f"m{n}.onnx"
        torch.onnx.export(load_space("nb201").build(arch, 10).eval(), (torch.zeros(1, 3, 32, 32),), str(path),
                          input_names=["input"], dynamo=False)
        paths.append(str(path))
    assert main(["estimate", "--device", "rpi5", "--onnx", *paths, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["onnx"] for r in rows] == paths
    assert rows[0]["macs"] == 220_119_680 and rows[0]["latency_ms"] > rows[1]["latency_ms"]


def test_estimate_table_and_input_options(capsys) -> None:
    code = main(["estimate", "--device", "rpi4", "--space", "nb201", "--arch", SMALL,
                 "--input-shape", "1,1,28,28", "--num-classes", "5", "--threads", "2"])
    assert code == 0
    out = capsys.readouterr().out
    assert "latency_ms" in out and SMALL in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--space", "nb201", "--arch", "|bad~0|+|none~0|none~1|+|none~0|none~1|none~2|"], "edge 0 (node 1 <- node 0): unknown op 'bad'"),
        (["--space", "nb999", "--arch", "x"], "unknown space 'nb999'"),
        (["--arch", "x"], "--space is needed"),
        (["--space", "nb201", "--arch", SMALL, "--input-shape", "3,32"], "--input-shape"),
        (["--space", "nb201", "--arch-file", "/nonexistent/archs.txt"], "no such file"),
        (["--onnx", "/nonexistent/model.onnx"], "no such ONNX file"),
        (["--space", "nb201", "--arch", SMALL, "--latency-source", "measured"], "rpi4 cannot be measured"),
    ],
)
def test_estimate_bad_input_is_one_line(argv: list[str], message: str, capsys) -> None:
    assert main(["estimate", "--device", "rpi4", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_student_lowered_before_is_re_costed_from_disk_without_tvm(tmp_path) -> None:
    space = load_space("nb201")
    first = Estimator(load_profile("rpi4"), disk_cache=LoweredCache(tmp_path))
    cold = first.estimate_arch(space, ALL_3X3)
    assert first.disk_cache.misses == 1 and first.lowerer.stats["kernel_misses"] > 0
    # a new process (a new Estimator), another profile: nothing is lowered or scheduled again
    second = Estimator(load_profile("rpi5"), disk_cache=LoweredCache(tmp_path))
    warm = second.estimate_arch(space, ALL_3X3)
    assert second.disk_cache.hits == 1 and second.lowerer.stats == {k: 0 for k in second.lowerer.stats}
    assert warm.macs == cold.macs and warm.peak_memory_bytes == cold.peak_memory_bytes
    assert warm.kernels == cold.kernels and warm.latency_ms != cold.latency_ms  # costed for rpi5
    again = Estimator(load_profile("rpi4"), disk_cache=LoweredCache(tmp_path)).estimate_arch(space, ALL_3X3)
    assert again == cold


def test_an_uncalibrated_profile_says_its_error_is_unknown() -> None:
    estimate = Estimator(load_profile("rpi4")).estimate_arch(load_space("nb201"), SMALL)
    assert estimate.calibrated is False and estimate.expected_error_pct is None


def test_the_onnxruntime_model_costs_the_nodes_onnxruntime_runs(tmp_path, monkeypatch) -> None:
    from dataclasses import replace

    from hwkd.latency.cost_model import latency_ms
    from hwkd.latency.onnxruntime_graph import runtime_nodes, student_onnx

    rpi4 = load_profile("rpi4")
    ort = replace(rpi4, cost=replace(rpi4.cost, model="onnxruntime", node_overhead_us=10.0))
    space = load_space("fbnet")
    arch = "3" * 22
    estimator = Estimator(ort, disk_cache=LoweredCache(tmp_path))
    estimate = estimator.estimate_arch(space, arch)
    # rpi4 is an ARM board: its ONNX Runtime has no blocked layout, so no reorder nodes are counted
    nodes = runtime_nodes(student_onnx(space.build(arch, 10), space.default_input_shape), blocked_layout=False)
    assert len(nodes) > 22 and "ReorderInput" not in {n.op for n in nodes}  # a node or more per block
    assert estimate.source == "model"
    assert estimate.latency_ms == pytest.approx(latency_ms((), ort, nodes), abs=1e-4)
    assert estimate.latency_ms > len(nodes) * 0.010  # each node's dispatch and its work
    assert estimator.model_estimate(space, arch).latency_ms == estimate.latency_ms
    # a new process exports and runs nothing again: the nodes are kept beside the lowered students
    import hwkd.latency.estimator as estimator_module

    monkeypatch.setattr(estimator_module, "runtime_nodes", lambda *a, **k: pytest.fail("counted again"))
    assert Estimator(ort, disk_cache=LoweredCache(tmp_path)).runtime_nodes_arch(space, arch) == nodes
    # ONNX Runtime is what the profile predicts: TVM never measures it
    with pytest.raises(HwkdError, match="models ONNX Runtime .* so TVM cannot measure what it predicts"):
        Estimator(replace(load_profile("host"), cost=ort.cost), "measured")
    assert Estimator(replace(load_profile("host"), cost=ort.cost)).measure is False
