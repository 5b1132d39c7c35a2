"""`hwkd search --workers N`: N processes on one study, each on its share of this machine's cores.

The parent has set the run up (teacher, its outputs, the opening students queued); each worker
is a fresh process (spawned, not forked: torch's thread pools do not survive a fork) that opens
the same run folder and study and adds its share of the trials. Processes on other machines join
the same way, with the same command and `--storage`. A worker that dies leaves its trial to
Optuna's heartbeat: another worker fails it and runs it again.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from hwkd.threads import available_cores, split_cores

# What a worker process runs: (its configuration, its index) -> {"counts": {...}, "interrupted": bool}.
# A module-level function of the caller (spawned processes find it by name); the search passes its
# own, so this module never imports the search.
WorkerJob = Callable[[Any, int], dict[str, Any]]

log = logging.getLogger(__name__)


def shares(total: int | None, workers: int) -> list[int | None]:
    """Trials per worker: `total` split as evenly as it goes (None: no limit, for --timeout)."""
    if total is None:
        return [None] * workers
    return [total // workers + (1 if i < total % workers else 0) for i in range(workers)]


def run_workers(job: WorkerJob, config: Any, study: Any, trials: int | None, timeout: float | None,
                show: bool) -> tuple[dict[str, int], bool]:
    """Run `config.workers` worker processes (each `job` on a copy of the search's `config`, a
    dataclass) to their end; the outcome counts and whether Ctrl-C stopped them."""
    from hwkd.progress import progress_bar

    context = multiprocessing.get_context("spawn")
    results: Any = context.Queue()
    cores = split_cores(available_cores(), config.workers)
    processes = []
    for index, (share, own) in enumerate(zip(shares(trials, config.workers), cores)):
        if share == 0:
            continue
        worker_config = replace(config, workers=1, trials=share, timeout_s=timeout)
        process = context.Process(target=_worker, args=(job, worker_config, index, own, results,
                                                        logging.getLogger().level),
                                  name=f"hwkd-worker-{index}")
        process.start()
        processes.append(process)
    log.info("%d workers on cores %s", len(processes),
             " | ".join(",".join(map(str, c)) for c in cores[: len(processes)]))
    counts = {"complete": 0, "infeasible": 0, "failed": 0}
    interrupted = False
    first = len(study.get_trials(deepcopy=False))
    with progress_bar(trials, "trials", "trial", show) as bar:
        shown = 0
        while any(p.is_alive() for p in processes):
            try:
                time.sleep(1.0)
                done = sum(t.state.is_finished() and t.number >= first for t in study.get_trials(deepcopy=False))
                bar.update(max(0, done - shown))
                shown = max(shown, done)
            except KeyboardInterrupt:  # the workers got it too: they fail their trials and stop
                interrupted = True
        for p in processes:
            p.join()
    while True:
        try:
            outcome = results.get_nowait()
        except queue.Empty:
            break
        for key in counts:
            counts[key] += outcome["counts"][key]
        interrupted = interrupted or outcome["interrupted"]
    failed_workers = [p.name for p in processes if p.exitcode not in (0, None)]
    if failed_workers:
        log.warning("worker(s) %s ended with an error; their trials are in the study", ", ".join(failed_workers))
    return counts, interrupted


def _worker(job: WorkerJob, config: Any, index: int, cores: list[int], results: Any, level: int) -> None:
    """One worker process: its cores first (before torch starts its pools), then the job."""
    os.sched_setaffinity(0, cores)
    os.environ["HWKD_WORKER"] = str(index)
    logging.basicConfig(level=level, format=f"worker {index}: %(message)s", stream=sys.stderr, force=True)
    from hwkd.errors import HwkdError
    from hwkd.threads import use_cores

    use_cores(cores)
    try:
        outcome = job(config, index)
    except KeyboardInterrupt:
        results.put({"counts": {"complete": 0, "infeasible": 0, "failed": 0}, "interrupted": True})
        return
    except HwkdError as exc:
        logging.getLogger(__name__).error("%s", exc)
        raise SystemExit(2) from None
    results.put(outcome)
