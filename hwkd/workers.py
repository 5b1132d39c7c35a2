"""`hwkd search --workers N`: N processes on one study, each on its share of this machine's cores.

The parent has set the run up (teacher, its outputs, the opening students queued) and is the first
worker itself, with everything already loaded; the other N-1 are fresh processes (spawned, not
forked: torch's thread pools do not survive a fork) that open the same run folder and study. The
command's trials are handed out one at a time (`TrialTickets`) to whichever process is free, so a
worker that started later or drew cheaper students never leaves the others idle at the end.
Processes on other machines join the same way, with the same command and `--storage`. A worker
that dies leaves its trial to Optuna's heartbeat: another worker fails it and runs it again.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from hwkd.threads import available_cores, on_cores, split_cores

log = logging.getLogger(__name__)


FREE_PER_TRIAL = 4  # proposals that cost nothing (hwkd.searcher) given back, at most, per trial asked


class TrialTickets:
    """The trials one command adds, handed out one at a time to whichever of its processes asks
    first (shared memory, so it crosses spawned processes); `total` None: no limit (--timeout).
    A ticket spent on a proposal that cost nothing can be given back, FREE_PER_TRIAL per trial at
    most, so a sampler that keeps proposing such students still ends."""

    def __init__(self, total: int | None, context: Any = None) -> None:
        context = context or multiprocessing.get_context("spawn")
        self._left = context.Value("i", -1 if total is None else total)
        self._free = context.Value("i", -1 if total is None else FREE_PER_TRIAL * total)

    def take(self) -> bool:
        """One more trial for the caller, or False once the command's trials are all handed out."""
        with self._left.get_lock():
            if self._left.value == 0:
                return False
            if self._left.value > 0:
                self._left.value -= 1
            return True

    def give_back(self) -> bool:
        """Return the caller's last ticket (its trial cost nothing); False once too many were."""
        with self._left.get_lock():
            if self._free.value == 0:
                return False
            if self._free.value > 0:
                self._free.value -= 1
            if self._left.value >= 0:
                self._left.value += 1
            return True


@dataclass(frozen=True)
class WorkerOutcome:
    """What one worker's trials came to (summed over the workers of a command)."""

    complete: int = 0
    infeasible: int = 0
    failed: int = 0
    interrupted: bool = False  # Ctrl-C stopped it
    free: int = 0  # proposals that cost nothing and used no trial

    def __add__(self, other: WorkerOutcome) -> WorkerOutcome:
        return WorkerOutcome(self.complete + other.complete, self.infeasible + other.infeasible,
                             self.failed + other.failed, self.interrupted or other.interrupted,
                             self.free + other.free)


# What a spawned worker runs: (its configuration, its index, the command's tickets) -> its outcome.
# A module-level function of the caller (spawned processes find it by name); the search passes
# its own, so this module never imports the search.
WorkerJob = Callable[[Any, int, TrialTickets], WorkerOutcome]
# What the parent runs as the first worker: (tickets, called after each of its trials) -> its outcome.
LocalJob = Callable[[TrialTickets, Callable[[], None]], WorkerOutcome]


def run_workers(job: WorkerJob, local: LocalJob, config: Any, study: Any, trials: int | None,
                timeout: float | None, show: bool, counted: Callable[[Any], bool] = lambda trial: True
                ) -> WorkerOutcome:
    """Run `config.workers` workers to their end: `local` in this process and `job` (on a copy of
    the search's `config`, a dataclass) in each spawned one; their outcomes summed. `counted`: which
    finished trials the progress bar counts."""
    from hwkd.progress import progress_bar

    context = multiprocessing.get_context("spawn")
    tickets = TrialTickets(trials, context)
    results: Any = context.Queue()
    workers = config.workers if trials is None else max(1, min(config.workers, trials))
    cores = split_cores(available_cores(), workers)
    processes = []
    for index in range(1, workers):
        worker_config = replace(config, workers=1, trials=None, timeout_s=timeout)
        process = context.Process(target=_worker, args=(job, worker_config, index, cores[index], tickets, results,
                                                        logging.getLogger().level),
                                  name=f"hwkd-worker-{index}")
        process.start()
        processes.append(process)
    log.info("%d workers on cores %s (this process is worker 0)", workers,
             " | ".join(",".join(map(str, c)) for c in cores))
    first = len(study.get_trials(deepcopy=False))
    outcomes: list[WorkerOutcome] = []
    with progress_bar(trials, "trials", "trial", show) as bar:
        shown = 0

        def refresh() -> None:
            nonlocal shown
            done = sum(t.state.is_finished() and t.number >= first and counted(t)
                       for t in study.get_trials(deepcopy=False))
            bar.update(max(0, done - shown))
            shown = max(shown, done)

        try:
            with on_cores(cores[0]):
                outcomes.append(local(tickets, refresh))
        except KeyboardInterrupt:  # the workers got it too: they fail their trials and stop
            outcomes.append(WorkerOutcome(interrupted=True))
        while any(p.is_alive() for p in processes):
            try:
                time.sleep(1.0)
                refresh()
            except KeyboardInterrupt:
                outcomes.append(WorkerOutcome(interrupted=True))
        for p in processes:
            p.join()
        refresh()
    while True:
        try:
            outcomes.append(results.get_nowait())
        except queue.Empty:
            break
    failed_workers = [p.name for p in processes if p.exitcode not in (0, None)]
    if failed_workers:
        log.warning("worker(s) %s ended with an error; their trials are in the study", ", ".join(failed_workers))
    return sum(outcomes, WorkerOutcome())


def _worker(job: WorkerJob, config: Any, index: int, cores: list[int], tickets: TrialTickets, results: Any,
            level: int) -> None:
    """One spawned worker process: its cores first (before torch starts its pools), then the job."""
    os.sched_setaffinity(0, cores)
    os.environ["HWKD_WORKER"] = str(index)
    logging.basicConfig(level=level, format=f"worker {index}: %(message)s", stream=sys.stderr, force=True)
    from hwkd.errors import HwkdError
    from hwkd.threads import use_cores

    use_cores(cores)
    try:
        outcome = job(config, index, tickets)
    except KeyboardInterrupt:
        results.put(WorkerOutcome(interrupted=True))
        return
    except HwkdError as exc:
        logging.getLogger(__name__).error("%s", exc)
        raise SystemExit(2) from None
    results.put(outcome)
