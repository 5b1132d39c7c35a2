"""Tuning by measurement: the fastest variant of each kernel is kept, computes what torch computes,
is measured once (the database in the cache), here or over RPC; profiles that cannot measure refuse."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from hwkd.cli import main
from hwkd.errors import MeasureError
from hwkd.latency import tuning
from hwkd.latency.lowering import Lowerer
from hwkd.latency.measure import compile_student
from hwkd.latency.relax_import import torch_to_relax
from hwkd.latency.schedule import register_tile
from hwkd.latency.tuning import ASKED, TIMINGS, TuningPlan, tune_kernels, tune_student
from hwkd.profiles import load_profile
from hwkd.spaces import load_space

pytestmark = pytest.mark.slow  # every test compiles and times kernels

ARCH = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|"
PLAN = TuningPlan(variants=3, number=3, repeat=3, min_repeat_ms=5)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("HWKD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _student():
    module = load_space("nb201-small").build(ARCH, 10, (1, 1, 28, 28)).eval()
    graph = torch_to_relax(module, (1, 1, 28, 28))
    return module, graph, Lowerer().lower(graph)


def test_tuning_keeps_the_fastest_variant_computes_like_torch_and_measures_a_kernel_once(
        cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tvm

    module, graph, lowered = _student()
    host = load_profile("host").with_threads(2)
    first = tune_kernels(lowered, host, PLAN)
    assert first.where == "local" and Path(first.database).parent == cache / "tuning"
    assert len(first.kernels) >= 8 and not any(k.from_database for k in first.kernels)
    for k in first.kernels:
        assert 0 < k.best_us <= k.default_us and 1 <= k.variants <= 3
    assert set(first.schedules) == {k.kernel for k in first.kernels if k.best_us < k.default_us}
    assert any(k.variants == 3 for k in first.kernels)  # the convolutions have three variants or more
    folder = Path(first.database)
    records = (folder / "database_tuning_record.json").read_text().splitlines()
    distinct = {k.kernel: (k.variants, k.default_us) for k in first.kernels}
    assert len(records) >= len({v for v in distinct.values()})  # one record per measured variant
    assert set(json.loads((folder / TIMINGS).read_text()).keys())
    stored = [us for variants in json.loads((folder / TIMINGS).read_text()).values() for _, us in variants if us]
    assert any(us != round(us, 2) for us in stored)  # kept to 0.1 ns: a no-op kernel takes under 0.005 us
    summary = first.to_json()
    assert summary["kernels_tuned"] == len(first.kernels) and summary["kernel_sum_tuned_us"] <= summary[
        "kernel_sum_default_us"]

    # the tuned library computes what torch computes
    compiled = compile_student(lowered, graph.params, host, first.schedules)
    vm = tvm.relax.VirtualMachine(compiled.executable, tvm.cpu())
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    out = vm["main"](tvm.runtime.tensor(x), *[tvm.runtime.tensor(w) for w in compiled.weights]).numpy()
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)

    # a second tuning reads every kernel from the database and chooses the same schedules
    second = tune_kernels(lowered, host, PLAN)
    assert all(k.from_database for k in second.kernels) and second.to_json()["variants_measured_now"] == 0
    assert [(k.kernel, k.chosen) for k in second.kernels] == [(k.kernel, k.chosen) for k in first.kernels]
    assert len((folder / "database_tuning_record.json").read_text().splitlines()) == len(records)
    # asking for more variants later measures only the ones the database lacks
    more = tune_kernels(lowered, host, replace(PLAN, variants=4))
    added = more.to_json()["variants_measured_now"]
    assert added > 0 and all(k.measured_now <= 1 and k.variants <= 4 for k in more.kernels)
    assert any(k.variants == 4 and k.measured_now == 1 for k in more.kernels)
    assert len((folder / "database_tuning_record.json").read_text().splitlines()) <= len(records) + added
    asked = json.loads((folder / ASKED).read_text())
    assert set(asked) >= set(json.loads((folder / TIMINGS).read_text())) and set(asked.values()) == {4}
    # the same count again schedules nothing, also for kernels with fewer distinct variants than asked
    scheduled: list[object] = []
    with monkeypatch.context() as patch:  # undoing all of `monkeypatch` would undo the cache fixture too
        patch.setattr(tuning, "schedule_variants", lambda *args, **kwargs: scheduled.append(args) or [])
        assert tune_kernels(lowered, host, replace(PLAN, variants=4)).to_json()["variants_measured_now"] == 0
    assert scheduled == []
    # another thread count is another database: timings hold only for the threads they ran with
    assert tune_kernels(lowered, host.with_threads(1), TuningPlan(variants=1)).database != first.database

    # the shipped library is the fastest of the candidates timed whole, hwkd's default and the blocked
    # layout's among them; each candidate is compiled once, and the shipped one's runs of every round
    # are its measurement
    compiles = _count_compiles(monkeypatch)
    whole = tune_student(graph, lowered, host, PLAN)
    assert whole.database == first.database  # still the test's cache, not the user's
    assert whole.library_ms is not None and {"default", "blocked"} <= set(whole.library_ms)
    assert whole.library_ms[whole.library] == min(whole.library_ms.values())
    assert len(compiles) == len(whole.library_ms) and whole.compiled is not None
    assert whole.measurement is not None and whole.measurement.runs == tuning.LIBRARY_ROUNDS * PLAN.repeat
    # its runs' median agrees with its figure from within-round ratios to the default
    assert 0.5 < whole.measurement.latency_ms / whole.library_ms[whole.library] < 2
    blocked = whole.library.startswith("blocked")
    block = register_tile(host.cpu.simd_bits).vector_floats
    assert whole.layout == (f"NCHW{block}c" if blocked else "NCHW") and whole.to_json()["layout"] == whole.layout
    assert whole.lowered is not None and any("blocked" in k.name for k in whole.lowered.kernels) == blocked
    # the NCHW kernels were in the database already: what this tuning measured is the blocked layout's
    assert whole.to_json()["variants_measured_now"] > 0
    which = whole.library.removeprefix("blocked").strip() or "default"
    expected_schedules = {} if which == "default" else {
        k.kernel for k in whole.kernels if k.best_us < k.default_us and (
            which == "all" or k.best_us <= 0.9 * k.default_us)}
    assert set(whole.schedules) == set(expected_schedules)
    # the shipped library, in whichever layout, computes what torch computes
    vm = tvm.relax.VirtualMachine(whole.compiled.executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x), *[tvm.runtime.tensor(w) for w in whole.compiled.weights]).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    # tuned again, nothing is measured but the libraries; without the blocked layout, only NCHW candidates
    assert tune_student(graph, lowered, host, PLAN).to_json()["variants_measured_now"] == 0
    nchw = tune_student(graph, lowered, host, replace(PLAN, blocked=False))
    assert nchw.layout == "NCHW" and not any(name.startswith("blocked") for name in nchw.library_ms or {})


def _count_compiles(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    from hwkd.latency import measure

    calls: list[object] = []
    real = measure.compile_student

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(measure, "compile_student", counted)
    return calls


def test_tuning_over_rpc_measures_on_the_board(cache: Path, rpc_server: int, board_file,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    board = load_profile(board_file(rpc_server))
    _, graph, lowered = _student()
    compiles = _count_compiles(monkeypatch)
    result = tune_student(graph, lowered, board, TuningPlan(variants=2, number=3, repeat=3, min_repeat_ms=5))
    assert result.where == f"rpc 127.0.0.1:{rpc_server}" and result.library in (result.library_ms or {"default": 0})
    assert result.kernels and all(0 < k.best_us <= k.default_us for k in result.kernels)
    assert any(k.variants == 2 for k in result.kernels)
    # each candidate library is compiled and uploaded once, then timed in every round
    assert len(compiles) == len(result.library_ms or {})
    if result.measurement is not None:
        assert result.measurement.where == f"rpc 127.0.0.1:{rpc_server}" and result.measurement.runs == tuning.LIBRARY_ROUNDS * 3


def test_a_profile_that_cannot_measure_cannot_be_tuned(cache: Path) -> None:
    _, _, lowered = _student()
    with pytest.raises(MeasureError, match="rpi4 cannot be tuned: it has no rpc section"):
        tune_kernels(lowered, load_profile("rpi4"), PLAN)
    assert not (cache / "tuning").exists()


def test_estimate_cli_tunes_measured_students_and_refuses_bad_flags(cache: Path, capsys,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    base = ["estimate", "--device", "host", "--space", "nb201-small", "--arch", ARCH]
    chosen = []
    real_choice = tuning.choose_library
    monkeypatch.setattr(tuning, "choose_library", lambda *args: chosen.append(real_choice(*args)) or chosen[-1])
    compiles = _count_compiles(monkeypatch)
    assert main([*base, "--latency-source", "measured", "--tune", "--tune-trials", "2", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["source"] == "measured" and row["tuned_kernels"] >= 0 and row["latency_ms"] > 0
    assert row["layout"] == chosen[0].layout  # the layout of the library measured, NCHW or blocked
    # the library timed while choosing it is the estimate: nothing compiled or timed again
    library_ms = chosen[0].library_ms
    assert len(compiles) == (len(library_ms) if library_ms else 1)
    if chosen[0].measurement is not None:
        assert row["latency_ms"] == round(chosen[0].measurement.latency_ms, 4)
    assert main([*base, "--tune"]) == 2
    assert "tuning needs --latency-source measured" in capsys.readouterr().err
    assert main([*base, "--latency-source", "measured", "--tune-trials", "2"]) == 2
    assert "--tune-trials needs --tune" in capsys.readouterr().err
    assert main([*base, "--latency-source", "measured", "--tune", "--tune-trials", "0"]) == 2
    assert "--tune-trials 0: must be at least 1" in capsys.readouterr().err


def test_candidates_are_ranked_within_rounds_not_by_a_lucky_fastest_run() -> None:
    # the default's first round fell in a quick spell (0.25 ms), every other round in a slow one: by
    # its fastest run the default would ship, though blocked beat it in every round but the first
    rounds_ms = {"default": [0.25, 0.44, 0.45, 0.44, 0.44], "blocked": [0.43, 0.42, 0.42, 0.42, 0.41]}
    ranked = tuning.paired_ms(rounds_ms)
    assert ranked["default"] == 0.25  # the reference keeps its fastest round
    assert ranked["blocked"] == pytest.approx(0.25 * 0.42 / 0.44, abs=1e-4)  # median ratio 0.42 / 0.44
    assert min(ranked, key=ranked.get) == "blocked"
