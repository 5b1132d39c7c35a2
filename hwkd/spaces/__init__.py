"""Search spaces: which students exist and how to build them.

`load_space("nb201")` reads a built-in space file from the top-level `search_spaces` package;
`load_space("path/to/space.yaml")` reads the user's. The file's `kind` picks the builder class
from `SPACE_KINDS`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from hwkd.errors import ConfigError, UnknownNameError, error_line
from hwkd.registry import Registry
from hwkd.spaces.base import InputSpec, SearchSpace
from hwkd.spaces.blocks import BlockSpace
from hwkd.spaces.fbnet import FBNetSpace
from hwkd.spaces.nb201 import NB201Space

# kind -> the class that reads a space file of that kind: (name, the parsed file, where it came from)
SPACE_KINDS: Registry[Callable[[str, dict[str, Any], str], SearchSpace]] = Registry("space kind")
SPACE_KINDS.add("nb201", NB201Space)
SPACE_KINDS.add("fbnet", FBNetSpace)
SPACE_KINDS.add("blocks", BlockSpace)

SPACE_SUFFIXES = (".yaml", ".yml")

__all__ = ["SPACE_KINDS", "InputSpec", "SearchSpace", "builtin_spaces", "describe_spaces", "load_space"]


def builtin_spaces() -> dict[str, Path]:
    folder = Path(str(resources.files("search_spaces")))
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix in SPACE_SUFFIXES}


def load_space(name_or_path: str | os.PathLike[str]) -> SearchSpace:
    """A built-in space by name (`hwkd spaces` lists them), or a space file (.yaml) by path."""
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in SPACE_SUFFIXES or os.sep in text:
        if not path.is_file():
            raise ConfigError(text, ["no such search space file"])
        return _parse(path)
    known = builtin_spaces()
    if text not in known:
        raise UnknownNameError("space", text, list(known) + ["PATH.yaml"])
    return _parse(known[text])


def _parse(path: Path) -> SearchSpace:
    try:
        raw: Any = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"not valid YAML ({error_line(exc, first=True)})"]) from None
    if not isinstance(raw, dict):
        raise ConfigError(str(path), ["the file must hold a mapping"])
    kind = raw.get("kind")
    if kind not in SPACE_KINDS:
        raise ConfigError(str(path), [f"kind: {kind!r} is not one of {', '.join(SPACE_KINDS.names())}"])
    return SPACE_KINDS.get(str(kind))(path.stem, raw, str(path))


def describe_spaces() -> list[dict[str, Any]]:
    return [load_space(name).summary() for name in builtin_spaces()]
