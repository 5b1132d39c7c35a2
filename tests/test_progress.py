"""Progress bars keep log lines on their own lines; Ctrl-C waits for files that belong together."""

from __future__ import annotations

import io
import logging
import os
import signal
import sys

import pytest

from hwkd.progress import deferred_interrupt, progress_bar


def test_log_lines_are_written_above_the_bar_not_glued_onto_it(monkeypatch) -> None:
    terminal = io.StringIO()
    monkeypatch.setattr(sys, "stderr", terminal)
    logger = logging.getLogger("hwkd.test_progress")
    handler = logging.StreamHandler(sys.stderr)  # the CLI's handler (logging.basicConfig on standard error)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with progress_bar(3, "trials", "trial", show=True) as bar:
            bar.update(1)
            logger.warning("trial 0: val accuracy 80.00%")
            bar.update(1)
    finally:
        root.removeHandler(handler)
    text = terminal.getvalue()
    before = text[: text.index("trial 0: val accuracy")]
    assert "trials:" in before  # the bar was drawn first...
    assert before.endswith("\r")  # ...and cleared before the line, which starts a line of its own
    assert "trial 0: val accuracy 80.00%\n" in text
    assert handler.stream is terminal  # the handler is given back as it was


def test_no_bar_off_a_terminal() -> None:
    with progress_bar(3, "trials", "trial", show=False) as bar:
        bar.update(1)
        bar.set_postfix_str("x")


def test_ctrl_c_during_a_deferred_block_is_raised_after_it() -> None:
    done = []
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under nohup
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("first file")
            done.append("second file")
    assert done == ["first file", "second file"]
    assert signal.getsignal(signal.SIGINT) is before  # restored
    with deferred_interrupt():
        done.append("quiet")  # no Ctrl-C: nothing raised
