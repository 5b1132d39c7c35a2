"""The registry: duplicates refused, unknown names answered with the candidates."""

from __future__ import annotations

import pytest

from hwkd.errors import HwkdError, UnknownNameError
from hwkd.registry import Registry


def test_add_get_and_list() -> None:
    losses: Registry[str] = Registry("loss")
    losses.add("kd", "Hinton KD")

    @losses.register("dkd")
    def dkd() -> str:
        return "decoupled KD"

    assert losses.get("kd") == "Hinton KD" and losses.get("dkd") is dkd
    assert losses.names() == ["dkd", "kd"] and list(losses) == ["dkd", "kd"] and "kd" in losses


def test_a_duplicate_name_is_refused() -> None:
    registry: Registry[int] = Registry("cost model")
    registry.add("schedule", 1)
    with pytest.raises(HwkdError, match="cost model 'schedule' is already registered"):
        registry.add("schedule", 2)
    assert registry.get("schedule") == 1


def test_an_unknown_name_lists_the_candidates() -> None:
    registry: Registry[int] = Registry("space kind")
    registry.add("nb201", 1)
    registry.add("fbnet", 2)
    with pytest.raises(UnknownNameError) as error:
        registry.get("nb202")
    message = str(error.value)
    assert "nb202" in message and "fbnet" in message and "nb201" in message
