"""Students proposed without a sampler: random answers to a space's questions, and the valid
students nearest a proposal that is not one.

A sampler learns nothing from a proposal that is not a valid student (its trial has no values),
so a model-based one (GP) can propose the same invalid student again and again. The search then
queues a repair: the proposal with the fewest of its answers drawn again that makes a valid
student, so the sampler's next data point is as close as possible to what it asked for.
"""

from __future__ import annotations

import random
from typing import Any

from hwkd.errors import ArchitectureError
from hwkd.spaces import SearchSpace


class RandomAnswers:
    """Answers a space's categorical questions: `fixed` ones as given, the others at random; keeps
    the answers as Optuna params."""

    def __init__(self, rng: random.Random, fixed: dict[str, Any] | None = None) -> None:
        self.rng = rng
        self.fixed = fixed or {}
        self.params: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        choices = list(choices)
        value = self.fixed[name] if name in self.fixed and self.fixed[name] in choices else self.rng.choice(choices)
        self.params[name] = value
        return value


def nearest_valid(space: SearchSpace, params: dict[str, Any], rng: random.Random,
                  tries_per_size: int = 32) -> tuple[str, dict[str, Any]] | None:
    """(arch, params) of a valid student that keeps as many of `params`' answers as it can: one
    answer drawn again at random, then two, ...; None if none was found."""
    names = list(params)
    for size in range(1, len(names) + 1):
        for _ in range(tries_per_size):
            redrawn = set(rng.sample(names, size))
            answers = RandomAnswers(rng, {k: v for k, v in params.items() if k not in redrawn})
            try:
                arch = space.parse(space.suggest(answers))
            except ArchitectureError:
                continue
            if answers.params != params:
                return arch, answers.params
    return None
