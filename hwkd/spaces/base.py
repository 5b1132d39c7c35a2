"""What every search space offers, and the reading of space files.

A space file (YAML, the stem is its name) says *what* the choices are; its `kind` picks the Python
class that says *how* students are built. Architecture ids are short strings a person can read
and paste; `parse` turns any accepted spelling into the canonical id.
"""

from __future__ import annotations

import abc
import random
from dataclasses import dataclass
from typing import Any, Protocol

from torch import nn

from hwkd.errors import ConfigError


class TrialLike(Protocol):
    """The part of `optuna.Trial` a space uses to propose an architecture."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclass(frozen=True)
class InputSpec:
    channels: int
    height: int
    width: int

    @classmethod
    def from_shape(cls, shape: tuple[int, ...] | list[int]) -> InputSpec:
        if len(shape) != 4 or any(int(v) < 1 for v in shape):
            raise ConfigError("input shape", [f"{tuple(shape)} is not N,C,H,W with positive sizes"])
        return cls(int(shape[1]), int(shape[2]), int(shape[3]))

    def shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        return (batch, self.channels, self.height, self.width)


class SearchSpace(abc.ABC):
    """A family of student networks addressed by architecture ids.

    The search calls `suggest` once per trial to get an id, then `build` to get the network;
    `estimate` and `distill` only ever see ids and built modules.
    """

    kind: str = ""

    def __init__(self, name: str, description: str, input_shape: tuple[int, int, int, int], origin: str) -> None:
        self.name = name
        self.description = description
        self.default_input_shape = input_shape
        self.origin = origin

    @abc.abstractmethod
    def parse(self, arch: str) -> str:
        """The canonical id of `arch`; `ArchitectureError` naming the bad position otherwise."""

    @abc.abstractmethod
    def build(self, arch: str, num_classes: int, input_shape: tuple[int, ...] | None = None) -> nn.Module:
        """A freshly initialised torch module (train mode) for `arch`."""

    @abc.abstractmethod
    def suggest(self, trial: TrialLike) -> str:
        """Propose an architecture through an Optuna trial's categorical parameters."""

    @abc.abstractmethod
    def sample(self, rng: random.Random) -> str:
        """A uniformly random valid architecture id."""

    @abc.abstractmethod
    def size(self) -> int:
        """How many architecture ids the space holds (valid or not)."""

    def describe(self, arch: str) -> str:
        """A longer human-readable description of `arch`; the id itself by default."""
        return self.parse(arch)

    def input_spec(self, input_shape: tuple[int, ...] | None) -> InputSpec:
        return InputSpec.from_shape(input_shape or self.default_input_shape)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "input_shape": list(self.default_input_shape),
            "size": self.size(),
            "path": self.origin,
        }


class SpecReader:
    """Reads typed fields out of a space file's mapping, collecting every problem."""

    def __init__(self, raw: dict[str, Any], origin: str) -> None:
        self.raw = raw
        self.origin = origin
        self.problems: list[str] = []

    def get(self, key: str, typ: type, default: Any = None, required: bool = True) -> Any:
        if key not in self.raw:
            if required:
                self.problems.append(f"{key}: missing")
            return default
        value = self.raw[key]
        if typ is int and isinstance(value, bool):
            self.problems.append(f"{key}: {value!r} is not an int")
            return default
        if not isinstance(value, typ):
            self.problems.append(f"{key}: {value!r} is not a {typ.__name__}")
            return default
        return value

    def input_shape(self) -> tuple[int, int, int, int]:
        shape = self.get("input_shape", list, [1, 3, 32, 32])
        if len(shape) != 4 or not all(isinstance(v, int) and v > 0 for v in shape):
            self.problems.append(f"input_shape: {shape!r} is not [N, C, H, W] of positive ints")
            return (1, 3, 32, 32)
        return (shape[0], shape[1], shape[2], shape[3])

    def reject_unknown(self, allowed: set[str]) -> None:
        for key in sorted(set(self.raw) - allowed):
            self.problems.append(f"{key}: unknown key (accepted: {', '.join(sorted(allowed))})")

    def raise_if_problems(self) -> None:
        if self.problems:
            raise ConfigError(self.origin, self.problems)
