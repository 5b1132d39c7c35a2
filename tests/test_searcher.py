"""A small real study: real data, a real teacher file, real brief distillation and TVM estimates."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from optuna.trial import TrialState

import hwkd.searcher as search_module
from hwkd.distillation.brief import TrainingDiverged
from hwkd.distillation.config import BriefConfig
from hwkd.errors import HwkdError, RunError
from hwkd.records import TrialOutcome
from hwkd.reports import front_table
from hwkd.run_folder import STUDY_NAME
from hwkd.searcher import Budgets, Search, SearchConfig
from hwkd.spaces import load_space
from hwkd.teachers import TeacherRecipe
from hwkd.zero_cost import synflow

BRIEF = BriefConfig(steps=40, batch_size=64)


def make_config(run_dir: Path, teacher_file: Path, **changes) -> SearchConfig:
    base = SearchConfig(device="rpi4", space="nb201-small", teacher=str(teacher_file), run_dir=str(run_dir), trials=3,
                        brief=BRIEF, train_device="cpu")
    return replace(base, **changes)


def study_of(run_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{run_dir / 'study.db'}")


def ctrl_c_at_second_call(real):
    """brief_distill as the user sees it when Ctrl-C comes during the second student's training."""
    calls = {"n": 0}

    def interrupt_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    return interrupt_second


def ran(run_dir: Path) -> list[optuna.trial.FrozenTrial]:
    """The trials that ran, without the opening students still waiting for a worker."""
    return [t for t in study_of(run_dir).trials if t.state != TrialState.WAITING]


@pytest.mark.slow
def test_search_trains_ranks_writes_the_run_folder_and_resumes(tmp_path: Path, teacher_file: Path) -> None:
    run = tmp_path / "run"
    summary = Search(make_config(run, teacher_file)).run(progress=False)
    assert summary.new_trials == 3 and summary.completed + summary.infeasible == 3 and not summary.interrupted
    for name in ("study.db", "run.json", "teacher.pt", "teacher_logits.pt", "trials.csv", "pareto.csv",
                 "pareto.png", "pareto.html"):
        assert (run / name).is_file(), name
    assert (run / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<script" in (run / "pareto.html").read_text()  # plotly inlined: opens offline

    trials = pd.read_csv(run / "trials.csv")
    done = trials[trials.state == "COMPLETE"]
    assert len(done) >= 2
    assert (done.val_accuracy > 0.3).all()  # 40 steps, the cheapest students first: far above 10% chance
    assert (done.latency_ms > 0).all() and set(done.latency_source) == {"model"}
    assert (done.peak_memory_bytes > 0).all() and (done.macs > 0).all() and (done.params_bytes > 0).all()
    assert (done.duration_s > 0).all() and done.arch.str.match(r"^(C\d+:)?\|").all()

    # the search ranks by brief accuracy plus a point per decade of the untrained student's SynFlow
    assert (done.score - done.val_accuracy - done.synflow / 100).abs().max() < 1e-9
    assert (done.synflow > 1).all()
    front = pd.read_csv(run / "pareto.csv")
    assert len(front) >= 1 and list(front.score) == sorted(front.score, reverse=True)
    # no trained student beats a front member on both objectives
    for row in front.itertuples():
        assert not ((done.score > row.score) & (done.latency_ms < row.latency_ms)).any()

    info = json.loads((run / "run.json").read_text())
    assert info["config"]["device"] == "rpi4" and info["config"]["brief"]["steps"] == 40
    assert info["dataset"]["name"] == "embedded" and info["dataset"]["val"] > 0
    # the teacher's outputs are computed for the images the brief distillations share, once
    assert info["dataset"]["brief_train"] == 40 * 64 < info["dataset"]["train"]
    assert torch.load(run / "teacher_logits.pt", weights_only=True)["logits"].shape == (40 * 64, 10)
    assert info["teacher"]["kind"] == "TorchScript" and info["teacher"]["val_accuracy"] > 0.7
    assert {"torch", "tvm", "optuna", "onnx", "onnxruntime"} <= set(info["libraries"])

    before = {t.number: (t.state, t.values, t.user_attrs.get("arch")) for t in ran(run)}
    again = Search(make_config(run, teacher_file, trials=2)).run(progress=False)
    assert again.new_trials == 2
    after = ran(run)
    assert len(after) == 5
    for t in after[:3]:  # finished trials are kept as they were
        assert (t.state, t.values, t.user_attrs.get("arch")) == before[t.number]
    # (a student proposed again reuses its result: test_a_student_that_computes_what_a_trained_one_computes_...)
    assert sum(t.state == TrialState.COMPLETE for t in after) >= 2


@pytest.mark.slow
def test_budgets_are_checked_before_training(tmp_path: Path, teacher_file: Path, monkeypatch) -> None:
    def never(*args, **kwargs):  # an infeasible student must not reach training
        raise AssertionError("an over-budget student was trained")

    monkeypatch.setattr(search_module, "brief_distill", never)
    run = tmp_path / "run"
    config = make_config(run, teacher_file, trials=2, budgets=Budgets(max_latency_ms=0.001, max_params=10))
    summary = Search(config).run(progress=False)
    assert summary.infeasible == 2 and summary.completed == 0 and summary.front_size == 0
    # the user learns what the budget would have to be, not "no trained student yet"
    lowest_ms = min(t.user_attrs["latency_ms"] for t in ran(run))
    assert summary.budget_hint is not None and summary.budget_hint.startswith("no student met the budgets")
    assert f"latency {lowest_ms:.3f} ms (--max-latency-ms 0.001)" in summary.budget_hint
    assert "parameters (--max-params 10)" in summary.budget_hint
    trials = pd.read_csv(run / "trials.csv")
    assert set(trials.state) == {"INFEASIBLE"}
    for reason in trials.reason:
        assert "> --max-latency-ms 0.001" in reason and "> --max-params 10" in reason
    for t in ran(run):
        assert set(t.constraints) == {"max_latency_ms", "max_params"}
        assert all(v > 0 for v in t.constraints.values())  # Optuna sees both as violated


@pytest.mark.slow
def test_a_memory_budget_is_checked_before_training(tmp_path: Path, teacher_file: Path, monkeypatch) -> None:
    def never(*args, **kwargs):
        raise AssertionError("a student over the memory budget was trained")

    monkeypatch.setattr(search_module, "brief_distill", never)
    run = tmp_path / "run"
    summary = Search(make_config(run, teacher_file, trials=2, budgets=Budgets(max_memory_kb=1))).run(progress=False)
    assert summary.infeasible == 2 and summary.completed == 0
    lowest_kib = min(t.user_attrs["peak_memory_bytes"] for t in ran(run)) / 1024
    assert lowest_kib > 1
    assert f"peak memory {lowest_kib:.1f} KiB (--max-memory-kb 1)" in (summary.budget_hint or "")
    for t in ran(run):
        kib = t.user_attrs["peak_memory_bytes"] / 1024
        assert t.user_attrs["infeasible"] == f"peak memory {kib:.1f} KiB > --max-memory-kb 1"
        assert t.constraints == {"max_memory_kb": pytest.approx(kib - 1)}  # for Optuna: the excess, in KiB


@pytest.mark.slow
def test_the_opening_students_meet_the_budget(tmp_path: Path, teacher_file: Path) -> None:
    from optuna.trial import FixedTrial

    from hwkd.latency.estimator import Estimator
    from hwkd.profiles import load_profile
    from hwkd.spaces import load_space

    run = tmp_path / "run"
    # without a budget the opening students span 0.5 to 1.2 ms on rpi4; under 1.0 ms all eight fit
    Search(make_config(run, teacher_file, trials=2, budgets=Budgets(max_latency_ms=1.0),
                       brief=replace(BRIEF, steps=5))).run(progress=False)
    planned = [t for t in study_of(run).trials if TrialOutcome.from_trial(t).planned]
    assert len(planned) == 8
    space, estimator = load_space("nb201-small"), Estimator(load_profile("rpi4"), "model")
    latencies = [estimator.model_estimate(space, space.suggest(FixedTrial(t.system_attrs["fixed_params"])),
                                          (1, 1, 28, 28), 10).latency_ms for t in planned]
    assert max(latencies) <= 1.0 and max(latencies) > 1.5 * min(latencies)  # spread within the budget
    assert [t.state for t in ran(run)] == [TrialState.COMPLETE] * 2


@pytest.mark.slow
def test_a_budget_splits_trials_into_trained_and_infeasible(tmp_path: Path, teacher_file: Path) -> None:
    run = tmp_path / "run"
    # five random students (no opening design, which keeps to the budget) span 1.1 to 2.0 ms on rpi4
    config = make_config(run, teacher_file, trials=5, budgets=Budgets(max_latency_ms=1.25),
                         brief=replace(BRIEF, steps=10), sampler="random")
    Search(config).run(progress=False)
    trials = pd.read_csv(run / "trials.csv")
    trained = trials[trials.state == "COMPLETE"]
    over = trials[trials.state == "INFEASIBLE"]
    assert len(trained) >= 1 and len(over) >= 1
    assert (trained.latency_ms <= 1.25).all() and trained.val_accuracy.notna().all()
    assert (over.latency_ms > 1.25).all() and over.val_accuracy.isna().all()


@pytest.mark.slow
def test_changed_settings_do_not_continue_a_run(tmp_path: Path, teacher_file: Path) -> None:
    run = tmp_path / "run"
    Search(make_config(run, teacher_file, trials=1)).run(progress=False)
    with pytest.raises(RunError, match=r"other settings \(device: 'rpi4' -> 'rpi5'\)"):
        Search(make_config(run, teacher_file, trials=1, device="rpi5")).run(progress=False)
    with pytest.raises(RunError, match=r"other settings \(brief.steps: 40 -> 41\);") as info:
        Search(make_config(run, teacher_file, trials=1, brief=replace(BRIEF, steps=41))).run(progress=False)
    assert "{" not in str(info.value)  # the keys that differ, not whole dicts
    assert len(ran(run)) == 1


@pytest.mark.slow
def test_ctrl_c_keeps_finished_trials_and_the_next_run_continues(tmp_path: Path, teacher_file: Path,
                                                                 monkeypatch) -> None:
    real = search_module.brief_distill
    monkeypatch.setattr(search_module, "brief_distill", ctrl_c_at_second_call(real))
    run = tmp_path / "run"
    summary = Search(make_config(run, teacher_file, trials=6)).run(progress=False)
    assert summary.interrupted and summary.completed == 1 and summary.failed == 1  # the cut-off trial counts
    trials = ran(run)
    assert trials[-1].state == TrialState.FAIL and trials[-1].user_attrs["fail_reason"] == "interrupted by the user"
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 1
    assert (run / "pareto.csv").is_file() and len(pd.read_csv(run / "pareto.csv")) == 1  # reports still written

    monkeypatch.setattr(search_module, "brief_distill", real)
    Search(make_config(run, teacher_file, trials=1)).run(progress=False)
    assert len(ran(run)) == len(trials) + 1


@pytest.mark.slow
def test_a_diverged_student_is_a_failed_trial_with_its_reason(tmp_path: Path, teacher_file: Path,
                                                              monkeypatch) -> None:
    def diverge(*args, **kwargs):
        raise TrainingDiverged("the loss became nan at step 3 of 40")

    monkeypatch.setattr(search_module, "brief_distill", diverge)
    run = tmp_path / "run"
    summary = Search(make_config(run, teacher_file, trials=2)).run(progress=False)
    assert summary.failed + summary.infeasible == 2 and summary.failed >= 1
    trials = pd.read_csv(run / "trials.csv")
    assert "the loss became nan at step 3 of 40" in set(trials[trials.state == "FAIL"].reason)


@pytest.mark.slow
def test_a_yaml_block_space_is_searched_like_a_built_in_one(tmp_path: Path, teacher_file: Path) -> None:
    space = Path(__file__).parents[1] / "search_spaces" / "mbconv-small.yaml"
    run = tmp_path / "run"
    Search(make_config(run, teacher_file, trials=1, space=str(space), sampler="nsga2")).run(progress=False)
    trials = pd.read_csv(run / "trials.csv")
    assert (trials.state == "COMPLETE").all() and trials.arch.str.startswith("w").all()
    assert (trials.val_accuracy > 0.3).all()


@pytest.mark.slow
def test_any_optuna_storage_url(tmp_path: Path, teacher_file: Path) -> None:
    run = tmp_path / "run"
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    Search(make_config(run, teacher_file, trials=1, storage=url)).run(progress=False)
    assert not (run / "study.db").exists()
    trials = optuna.load_study(study_name=STUDY_NAME, storage=url).trials
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"device": "rpi9"}, "unknown device 'rpi9'.*rpi4"),
        ({"space": "nb301"}, "unknown space 'nb301'.*nb201"),
        ({"data": "imagenet"}, "imagenet.*embedded"),
        ({"sampler": "grid"}, "--sampler 'grid': choose auto, gp, tpe, nsga2 or random"),
        ({"trials": 0}, "--trials 0: must be at least 1"),
        ({"budgets": Budgets(max_latency_ms=-5)}, "--max-latency-ms -5: must be a positive number"),
        ({"budgets": Budgets(max_params=-100)}, "--max-params -100: must be a positive number"),
        ({"budgets": Budgets(max_memory_kb=0)}, "--max-memory-kb 0: must be a positive number"),
        ({"timeout_s": -1}, "--timeout -1: must be a positive number of seconds"),
        ({"threads": 0}, "^--threads 0: must be at least 1$"),
        ({"teacher": "/nonexistent/t.pt2"}, "/nonexistent/t.pt2"),
    ],
)
def test_bad_search_settings_are_one_line_errors(tmp_path: Path, teacher_file: Path, changes, message) -> None:
    with pytest.raises(HwkdError, match=message) as info:
        Search(make_config(tmp_path / "run", teacher_file, **changes)).run(progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()  # a search that fails during set-up leaves no folder behind


def test_bad_flags_are_reported_together_before_anything_loads(capsys) -> None:
    from hwkd.cli import main

    assert main(["search", "--max-latency-ms", "-5", "--timeout", "-1", "--threads", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("hwkd search: error: --timeout -1: must be a positive number of seconds; --threads 0: must be at "
                   "least 1; --max-latency-ms -5: must be a positive number (leave it out for no budget)")


@pytest.mark.slow
def test_a_trial_scores_the_same_whatever_ran_before_it(tmp_path: Path, teacher_file: Path) -> None:
    values = []
    for seed in (1, 2):
        torch.manual_seed(seed)  # the state earlier work left in torch's global generator
        run = tmp_path / f"run{seed}"
        Search(make_config(run, teacher_file, trials=1)).run(progress=False)
        values.append(study_of(run).trials[0].values)
    assert values[0] == values[1]
    # its SynFlow is that of the student as trained: built from the brief seed, untrained
    trial = study_of(run).trials[0]
    torch.manual_seed(BRIEF.seed)
    student = load_space("nb201-small").build(trial.user_attrs["arch"], 10, (1, 1, 28, 28))
    assert trial.user_attrs["synflow"] == pytest.approx(synflow(student, (1, 1, 28, 28)), abs=1e-4)
    assert pd.read_csv(run / "trials.csv").synflow[0] == pytest.approx(trial.user_attrs["synflow"])


@pytest.mark.slow
def test_a_continued_run_keeps_the_default_teacher_it_started_with(tmp_path: Path, monkeypatch) -> None:
    real = search_module.default_teacher
    monkeypatch.setenv("HWKD_CACHE_DIR", str(tmp_path / "cache"))
    small = TeacherRecipe((16, 32, 64), 2000)  # hwkd's teacher, narrower and briefer: the run's copy keeps its widths
    monkeypatch.setattr(search_module, "default_teacher",
                        lambda data, device, progress=None, **kw: real(data, device, progress, recipe=small, **kw))
    run = tmp_path / "run"
    config = SearchConfig(run_dir=str(run), trials=1, brief=replace(BRIEF, steps=10), train_device="cpu")
    Search(config).run(progress=False)
    first = json.loads((run / "run.json").read_text())["teacher"]
    assert first["kind"] == "default" and (run / first["file"]).is_file()

    def retrain(*args, **kwargs):  # the cache is gone (or holds a newer teacher): never retrain for this run
        raise AssertionError("the default teacher was trained again for a continued run")

    shutil.rmtree(tmp_path / "cache")
    monkeypatch.setattr(search_module, "default_teacher", retrain)
    Search(replace(config, trials=1)).run(progress=False)
    assert json.loads((run / "run.json").read_text())["teacher"]["sha256"] == first["sha256"]
    assert len(ran(run)) == 2


@pytest.mark.slow
def test_a_changed_teacher_file_does_not_continue_a_run(tmp_path: Path, teacher_file: Path) -> None:
    teacher = tmp_path / "teacher.pt"
    shutil.copyfile(teacher_file, teacher)
    run = tmp_path / "run"
    Search(make_config(run, teacher, trials=1)).run(progress=False)
    model = torch.jit.load(str(teacher))
    with torch.no_grad():
        next(model.parameters()).add_(0.01)  # retrained in place: same path, other weights
    torch.jit.save(model, str(teacher))
    with pytest.raises(RunError, match=r"--teacher .*teacher.pt is not the teacher .* was searched with"):
        Search(make_config(run, teacher, trials=1)).run(progress=False)
    assert len(ran(run)) == 1


@pytest.mark.slow
def test_a_new_study_starts_with_students_spread_over_the_cost_range(tmp_path: Path, teacher_file: Path) -> None:
    from hwkd.initial_design import spread_by_cost
    from hwkd.spaces import load_space

    plan = [arch for arch, _ in spread_by_cost(load_space("nb201-small"), 10, (1, 1, 28, 28), 8, seed=0)]
    run = tmp_path / "run"
    Search(make_config(run, teacher_file, trials=2, brief=replace(BRIEF, steps=5))).run(progress=False)
    Search(make_config(run, teacher_file, trials=1, brief=replace(BRIEF, steps=5))).run(progress=False)
    trials = study_of(run).trials
    done = [t for t in trials if t.state != TrialState.WAITING]
    assert [t.user_attrs["arch"] for t in done] == plan[:3]  # the continued run takes the next one
    assert {t.state for t in done} <= {TrialState.COMPLETE, TrialState.PRUNED}
    # the rest of the plan waits in the study, where any worker takes the next one
    assert [t.system_attrs["fixed_params"] for t in trials if t.state == TrialState.WAITING] == [
        params for _, params in spread_by_cost(load_space("nb201-small"), 10, (1, 1, 28, 28), 8, seed=0)[3:]]
    # the random baseline (benchmarks/search_efficiency.py) proposes from the first trial, with no plan
    baseline = tmp_path / "random"
    Search(make_config(baseline, teacher_file, trials=2, sampler="random", brief=replace(BRIEF, steps=5))).run(
        progress=False)
    trials = study_of(baseline).trials
    assert len(trials) == 2 and not any(TrialOutcome.from_trial(t).planned for t in trials)
    assert json.loads((baseline / "run.json").read_text())["config"]["sampler"] == "random"


@pytest.mark.slow
def test_a_student_that_computes_what_a_trained_one_computes_is_not_trained_again(tmp_path: Path, teacher_file: Path,
                                                                                  monkeypatch) -> None:
    run = tmp_path / "run"
    # two ids of one function: node 2 feeds nothing when edge 2->3 is none, so its edges' ops do not matter
    original = {"edge_1_0": "nor_conv_3x3", "edge_2_0": "nor_conv_1x1", "edge_2_1": "none",
                "edge_3_0": "skip_connect", "edge_3_1": "nor_conv_1x1", "edge_3_2": "none"}
    twin = dict(original, edge_2_0="avg_pool_3x3", edge_2_1="skip_connect")
    constant = dict.fromkeys(original, "none")  # not a valid student: its output does not depend on its input
    run.mkdir()  # the study exists before the search, with these students queued ahead of the opening ones
    study = optuna.create_study(study_name=STUDY_NAME, storage=f"sqlite:///{run / 'study.db'}",
                                directions=["maximize", "minimize"])
    study.enqueue_trial(original)
    study.enqueue_trial(twin)
    study.enqueue_trial(constant)

    calls = {"n": 0}
    real = search_module.brief_distill

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(search_module, "brief_distill", counting)
    # under a budget and with the GP sampler: it needs the same constraints on every completed trial
    summary = Search(make_config(run, teacher_file, trials=2, brief=replace(BRIEF, steps=5), sampler="gp",
                                 budgets=Budgets(max_latency_ms=100.0))).run(progress=False)
    trials = ran(run)
    constraints = [{k: v for k, v in t.system_attrs.items() if "constraint" in k} for t in trials[:2]]
    assert constraints[0] and constraints[0] == constraints[1]
    assert trials[0].params == original and trials[1].params == twin
    assert trials[0].user_attrs["arch"] != trials[1].user_attrs["arch"]
    assert trials[1].user_attrs["duplicate_of"] == 0 and trials[1].values == trials[0].values
    assert trials[1].user_attrs["val_accuracy"] == trials[0].user_attrs["val_accuracy"]
    assert trials[1].user_attrs["function_key"] == trials[0].user_attrs["function_key"]
    assert trials[2].params == constant and trials[2].state == TrialState.PRUNED
    # neither the twin nor the constant cell cost a trial: --trials 2 trained two students
    assert len(trials) == 4 and trials[3].user_attrs.get("planned") and trials[3].user_attrs.get("duplicate_of") is None
    assert calls["n"] == 2 and (summary.new_trials, summary.completed, summary.free_trials) == (2, 2, 2)
    assert [TrialOutcome.from_trial(t).cost_nothing for t in trials] == [False, True, True, False]


def test_the_default_sampler_is_gp_but_tpe_under_a_budget() -> None:
    assert SearchConfig().resolved_sampler() == "gp"
    assert SearchConfig(budgets=Budgets(max_latency_ms=5.0)).resolved_sampler() == "tpe"
    assert SearchConfig(sampler="nsga2", budgets=Budgets(max_params=1000)).resolved_sampler() == "nsga2"


@pytest.mark.slow
def test_the_gp_sampler_proposes_valid_new_students_after_the_opening_ones(tmp_path: Path, teacher_file: Path) -> None:
    run = tmp_path / "run"
    summary = Search(make_config(run, teacher_file, trials=10, sampler="gp",
                                 brief=replace(BRIEF, steps=5))).run(progress=False)
    assert summary.new_trials == 10 and summary.failed == 0
    outcomes = [TrialOutcome.from_trial(t) for t in ran(run)]
    counted = [o for o in outcomes if not o.cost_nothing]
    assert len(counted) == 10 and all(o.planned for o in counted[:8]) and not any(o.planned for o in counted[8:])
    assert all(o.val_accuracy is not None and o.latency_ms is not None for o in counted)


@pytest.mark.slow
def test_a_planned_student_cut_off_by_ctrl_c_is_tried_again(tmp_path: Path, teacher_file: Path, monkeypatch) -> None:
    from hwkd.initial_design import spread_by_cost
    from hwkd.spaces import load_space

    plan = [arch for arch, _ in spread_by_cost(load_space("nb201-small"), 10, (1, 1, 28, 28), 8, seed=0)]
    real = search_module.brief_distill
    monkeypatch.setattr(search_module, "brief_distill", ctrl_c_at_second_call(real))
    run = tmp_path / "run"
    Search(make_config(run, teacher_file, trials=4, brief=replace(BRIEF, steps=5))).run(progress=False)
    trials = study_of(run).trials
    assert [t.user_attrs.get("arch") for t in trials[:2]] == plan[:2] and trials[1].state == TrialState.FAIL
    monkeypatch.setattr(search_module, "brief_distill", real)
    # the next run queues the cut-off student again, behind the opening students still waiting, and runs it
    Search(make_config(run, teacher_file, trials=7, brief=replace(BRIEF, steps=5))).run(progress=False)
    trials = study_of(run).trials
    assert [t.user_attrs["arch"] for t in trials] == plan + [plan[1]]
    assert trials[-1].state == TrialState.COMPLETE and all(t.state != TrialState.WAITING for t in trials)


@pytest.mark.slow
def test_a_second_ctrl_c_waits_until_every_report_is_written(tmp_path: Path, teacher_file: Path,
                                                            monkeypatch) -> None:
    import os
    import signal

    import hwkd.reports as report_module

    real_png = report_module._plot_png

    def ctrl_c_while_plotting(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C while the reports are written
        return real_png(*args, **kwargs)

    monkeypatch.setattr(report_module, "_plot_png", ctrl_c_while_plotting)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        Search(make_config(run, teacher_file, trials=1, brief=replace(BRIEF, steps=5))).run(progress=False)
    csv = (run / "trials.csv").stat().st_mtime_ns
    for name in ("pareto.csv", "pareto.png", "pareto.html"):
        assert (run / name).stat().st_mtime_ns >= csv, name  # no plot is older than the table


@pytest.mark.slow
def test_a_calibrated_profile_s_expected_error_reaches_trials_csv_and_the_report(tmp_path: Path,
                                                                                   teacher_file: Path) -> None:
    import yaml

    from hwkd.latency.calibration import CostBreakdown, calibrated_profile, fit
    from hwkd.latency.cost_model import model_version
    from hwkd.profiles import CalibrationInfo, load_profile, profile_to_dict

    rpi4 = load_profile("rpi4")
    parts = [CostBreakdown((1.0 * i, 0.5, 0.2, 0.1), 0.05) for i in range(1, 5)]
    result = fit(parts, [1.5 * p.total_ms for p in parts])
    info = CalibrationInfo("rpi4", "tflite", 4, 4, "2026-12-02", "m.csv", 3.2, 0.97,
                           model_version=model_version(rpi4))  # fitted to the model hwkd runs now
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(profile_to_dict(calibrated_profile(rpi4, result, info, "mine", False))))
    run = tmp_path / "run"
    summary = Search(make_config(run, teacher_file, device=str(path), trials=2)).run(progress=False)
    tried = pd.read_csv(run / "trials.csv").dropna(subset=["latency_ms"])
    assert len(tried) == 2 and tried.latency_calibrated.all() and (tried.latency_expected_error_pct == 3.2).all()
    assert "latency: cost model, calibrated: median error 3.2 %" in front_table(summary.front)
    # and its export: the manifest says the latency is calibrated and how far to trust it
    from hwkd.cli import main
    from hwkd.exporter import export_trial

    number = int(tried.trial.iloc[0])
    assert main(["distill", str(run), "--trial", str(number), "--epochs", "1", "--train-device", "cpu"]) == 0
    export_trial(run, number, ["onnx"], tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["device"]["name"] == "mine" and manifest["device"]["calibrated"] is True
    assert manifest["latency_calibrated"] is True and manifest["latency_expected_error_pct"] == 3.2
    assert manifest["latency_ms"] == pytest.approx(float(tried.set_index("trial").latency_ms[number]), rel=1e-3)
