"""Long work shows progress: tqdm bars on a terminal (nothing otherwise), log lines written above
the bar instead of onto it, and Ctrl-C held back while files that belong together are written."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass


@contextmanager
def progress_bar(total: int | None, desc: str, unit: str, show: bool, leave: bool = True) -> Iterator[Any]:
    """A bar with a rate and the time left on standard error; while it is shown, log records go
    through `tqdm.write`, so each stands on its own line above the bar instead of glued onto it."""
    if not show:
        yield _NoBar()
        return
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    with tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=leave, dynamic_ncols=True) as bar:
        with logging_redirect_tqdm():
            yield bar


@contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Run the block to its end even if Ctrl-C comes; raise KeyboardInterrupt after it if it did."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt
