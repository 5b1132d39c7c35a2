"""The one root error of hwkd and its kinds.

Every error raised on purpose derives from `HwkdError`; the CLI prints it as one line and exits 2.
Its message names the bad value and what is accepted.
"""

from __future__ import annotations


class HwkdError(Exception):
    """Root of every error hwkd raises on purpose."""


class UnknownNameError(HwkdError):
    """A name that no registry or folder holds (a device, a space, a dataset...)."""

    def __init__(self, kind: str, name: str, candidates: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.candidates = sorted(candidates)
        listed = ", ".join(self.candidates) if self.candidates else "none"
        super().__init__(f"unknown {kind} {name!r}; choose one of: {listed}")


class ConfigError(HwkdError):
    """A malformed data file (device profile, search space); lists every problem at once."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = list(problems)
        super().__init__(f"{path}: " + "; ".join(self.problems))


class ArchitectureError(HwkdError):
    """An architecture string that its search space does not accept."""


class CompileError(HwkdError):
    """A model that TVM cannot import or compile."""


class MeasureError(HwkdError):
    """A latency measurement that could not run (e.g. an unreachable RPC server)."""


class DataError(HwkdError):
    """A dataset or teacher that cannot be read or does not fit the task."""


class RunError(HwkdError):
    """A run folder, trial or checkpoint that cannot be used."""


def error_line(exc: BaseException, *, first: bool = False, limit: int = 300) -> str:
    """One line of `exc`'s message for a one-line error: the last non-empty line, where TVM and
    torch put the cause after their tracebacks, or with `first` the first, where YAML puts it."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return shorten((lines[0] if first else lines[-1]), limit)


def shorten(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters at a word boundary, marked with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:") + "…"
