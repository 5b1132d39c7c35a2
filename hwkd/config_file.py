"""`--config FILE.yaml`: a command's long flags as the keys of a YAML mapping.

    # search.yaml
    device: rpi4
    space: fbnet
    max-latency-ms: 15      # or max_latency_ms
    trials: 40

The file becomes command-line tokens placed before the user's own, so flags given on the command
line win and every value is checked exactly as the same flag would be. Unknown keys are errors,
listed together with the keys the command takes. The file is data (`yaml.safe_load`), never code.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from hwkd.errors import HwkdError, error_line

FLAG = "--config"


def expand_config(argv: Sequence[str], commands: Mapping[str, argparse.ArgumentParser]) -> list[str]:
    """`argv` with `--config FILE` replaced by the file's settings as flags, right after the command."""
    args = list(argv)
    where = next((i for i, a in enumerate(args) if a == FLAG or a.startswith(FLAG + "=")), None)
    if where is None:
        return args
    if args[where] == FLAG:
        if where + 1 >= len(args):
            raise HwkdError(f"{FLAG}: give a YAML file")
        path = args[where + 1]
        del args[where : where + 2]
    else:
        path = args[where].split("=", 1)[1]
        del args[where]
    command = next((i for i, a in enumerate(args) if a in commands), None)
    if command is None or command > where:
        raise HwkdError(f"{FLAG} goes after the command (hwkd search {FLAG} FILE)")
    tokens = config_tokens(path, commands[args[command]], args[command])
    return args[: command + 1] + tokens + args[command + 1 :]


def long_flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The long flags a command takes (without --help and --config), by name without dashes."""
    out = {}
    for action in parser._actions:  # argparse has no public list of a parser's options
        for option in action.option_strings:
            if option.startswith("--") and option not in ("--help", FLAG):
                out[option[2:]] = action
    return out


def config_tokens(path: str, parser: argparse.ArgumentParser, command: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise HwkdError(f"{FLAG} {path}: no such file")
    try:
        data: Any = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise HwkdError(f"{FLAG} {path}: not valid YAML ({error_line(exc, first=True)})") from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise HwkdError(f"{FLAG} {path}: the file must hold a mapping of flags to values (e.g. device: rpi4)")
    flags = long_flags(parser)
    unknown = sorted(str(k) for k in data if str(k).replace("_", "-") not in flags)
    if unknown:
        raise HwkdError(f"{FLAG} {path}: unknown key(s) {', '.join(unknown)} for hwkd {command} "
                        f"(accepted: {', '.join(sorted(flags))})")
    tokens: list[str] = []
    problems = []
    for key, value in data.items():
        name = str(key).replace("_", "-")
        action = flags[name]
        if value is None:
            continue
        if action.nargs == 0:  # a switch such as --force
            if not isinstance(value, bool):
                problems.append(f"{key}: {value!r} is not true or false")
            elif value:
                tokens.append(f"--{name}")
        elif isinstance(value, list):
            if action.nargs not in ("+", "*"):
                problems.append(f"{key}: takes one value, not a list")
            else:
                tokens += [f"--{name}", *(_text(v) for v in value)]
        elif isinstance(value, dict):
            problems.append(f"{key}: takes a value, not a mapping")
        else:
            tokens.append(f"--{name}={_text(value)}")
    if problems:
        raise HwkdError(f"{FLAG} {path}: {'; '.join(problems)}")
    return tokens


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def dump_config(settings: Mapping[str, Any]) -> str:
    """YAML that `--config` takes back: one long flag per key; unset values are left out."""
    kept = {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items() if v is not None and v is not False}
    return ("# The settings of this run, as hwkd --config takes them: flags given on the command line win.\n"
            + yaml.safe_dump(kept, sort_keys=False, width=120))
