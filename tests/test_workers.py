"""Several workers on one study, on SQLite and on PostgreSQL: trials shared out, none lost or
repeated, and a worker killed with SIGKILL costs no other worker its trial."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hwkd.distillation.config import BriefConfig
from hwkd.run_folder import STUDY_NAME
from hwkd.searcher import Search, SearchConfig
from hwkd.threads import split_cores
from hwkd.workers import FREE_PER_TRIAL, TrialTickets

# every test here runs real searches (and distillations) or worker processes
pytestmark = pytest.mark.slow



def test_trials_and_cores_are_shared_out() -> None:
    tickets = TrialTickets(3)
    assert [tickets.take() for _ in range(5)] == [True, True, True, False, False]  # the command's 3, no more
    unlimited = TrialTickets(None)  # --timeout without --trials
    assert all(unlimited.take() for _ in range(100))
    # a trial that cost nothing gives its ticket back, at most FREE_PER_TRIAL per trial asked
    one = TrialTickets(1)
    assert one.take() and [one.give_back() and one.take() for _ in range(FREE_PER_TRIAL + 1)] == [True] * FREE_PER_TRIAL + [False]
    assert not one.take()
    assert unlimited.give_back() and unlimited.take()
    assert split_cores([0, 1, 2, 3], 2) == [[0, 2], [1, 3]]
    assert split_cores([0, 1], 3) == [[0], [1], [0]]  # more workers than cores: one core each, shared


STEPS = "40"  # a few seconds a trial: long enough to be killed in the middle of one


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return request.getfixturevalue("postgres_url")


def finished(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=STUDY_NAME, storage=url).get_trials(deepcopy=False)


def test_two_workers_share_the_trials_of_one_command(tmp_path: Path, teacher_file: Path, storage: str) -> None:
    # trials long enough (a few seconds each) that the spawned worker is up before this process,
    # worker 0, has taken them all
    config = SearchConfig(space="nb201-small", teacher=str(teacher_file), run_dir=str(tmp_path / "run"), trials=7,
                          brief=BriefConfig(steps=int(STEPS)), train_device="cpu", storage=storage, workers=2)
    summary = Search(config).run(progress=False)
    trials = finished(storage)
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 7 and summary.new_trials == 7 and not summary.interrupted
    # none failed or left running; the last of the 8 opening students waits for the next run
    assert [t.state for t in trials if t not in done] == [TrialState.WAITING]
    assert len({str(sorted(t.params.items())) for t in done}) == 7  # no student was trained twice
    workers = [t.user_attrs["worker"] for t in done]
    assert len(set(workers)) == 2  # both processes took trials, whichever was free
    assert f"{platform.node()}:{os.getpid()}" in workers  # this process was one of them
    assert (tmp_path / "run" / "pareto.csv").is_file()


def _worker(run: Path, teacher_file: Path, storage: str, trials: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hwkd.cli", "search", "--space", "nb201-small", "--teacher", str(teacher_file),
         "--run-dir", str(run), "--storage", storage, "--trials", str(trials), "--steps", STEPS,
         "--train-device", "cpu", "--heartbeat-s", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_a_killed_worker_leaves_its_trial_to_the_heartbeat_and_the_others_go_on(tmp_path: Path, teacher_file: Path,
                                                                                storage: str) -> None:
    run = tmp_path / "run"
    first = subprocess.run([sys.executable, "-m", "hwkd.cli", "search", "--space", "nb201-small", "--teacher",
                            str(teacher_file), "--run-dir", str(run), "--storage", storage, "--trials", "1",
                            "--steps", STEPS, "--train-device", "cpu"], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr  # the run is set up; both workers below join it
    doomed, survivor = _worker(run, teacher_file, storage, 8), _worker(run, teacher_file, storage, 4)
    deadline = time.monotonic() + 240
    victim = None
    while victim is None and time.monotonic() < deadline:
        assert doomed.poll() is None, doomed.stderr.read() if doomed.stderr else ""
        time.sleep(0.2)
        victim = next((t for t in finished(storage) if t.state == TrialState.RUNNING  # its student built
                       and t.user_attrs.get("worker", "").endswith(f":{doomed.pid}") and "function_key" in t.user_attrs),
                      None)
    assert victim is not None, "the doomed worker never started a trial"
    doomed.send_signal(signal.SIGKILL)  # mid-trial: no chance to clean up
    doomed.wait()
    assert survivor.wait(timeout=300) == 0, survivor.stderr.read() if survivor.stderr else ""
    time.sleep(3)  # past the grace period (two heartbeats): the next worker fails the dead trial and retries it
    # the retry queues behind the opening students still waiting: run them all
    queued = sum(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in finished(storage))
    last = subprocess.run([sys.executable, "-m", "hwkd.cli", "search", "--space", "nb201-small", "--teacher",
                           str(teacher_file), "--run-dir", str(run), "--storage", storage, "--trials", str(queued),
                           "--steps", STEPS, "--train-device", "cpu", "--heartbeat-s", "1"],
                          capture_output=True, text=True, timeout=300)
    assert last.returncode == 0, last.stderr

    trials = finished(storage)
    killed = trials[victim.number]
    assert killed.state == TrialState.FAIL and "fail_reason" not in killed.user_attrs
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retries[0].params == killed.params
    others = [t for t in trials if t.number != victim.number and t.state != TrialState.WAITING]
    assert {t.state for t in others} <= {TrialState.COMPLETE, TrialState.PRUNED}  # nothing else failed or hangs
    survivor_trials = [t for t in others if t.user_attrs["worker"].endswith(f":{survivor.pid}")]
    assert len(survivor_trials) == 4  # the survivor finished all it was asked for
