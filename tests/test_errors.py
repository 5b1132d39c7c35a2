from __future__ import annotations

import pytest
import yaml

from hwkd.errors import error_line


def test_error_line_keeps_the_cause_of_a_long_message() -> None:
    traceback = RuntimeError("Traceback (most recent call last):\n  3: tvm::relax::Foo\n\nTVMError: Check failed: x > 0\n")
    assert error_line(traceback) == "TVMError: Check failed: x > 0"
    with pytest.raises(yaml.YAMLError) as info:
        yaml.safe_load("a: [1, 2\nb: 3")
    assert error_line(info.value, first=True) == "while parsing a flow sequence"
    assert error_line(ValueError("")) == "ValueError"
    assert len(error_line(ValueError("x" * 1000))) == 300


def test_a_long_message_is_cut_between_words() -> None:
    message = "RuntimeError: " + " ".join(f"word{i:03d}" for i in range(200))
    line = error_line(RuntimeError(message), limit=100)
    assert len(line) <= 100 and line.endswith("…")
    assert line[:-1].split(" ")[-1] in message.split(" ")  # the last word is whole
