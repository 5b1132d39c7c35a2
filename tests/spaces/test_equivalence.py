"""Students that compute the same function get the same key; any real difference changes it."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from hwkd.spaces import load_space
from hwkd.spaces.equivalence import function_key

SHAPE = (1, 1, 28, 28)


def key(space: str, arch: str) -> str:
    return function_key(load_space(space).build(arch, 10, SHAPE))


def test_dead_edges_and_swapped_twin_nodes_do_not_change_the_key() -> None:
    base = "C8:|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|"
    # nodes 1 and 2 both read node 0 only and both feed node 3: exchanging them computes the same sum
    swapped = "C8:|nor_conv_1x1~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|"
    assert key("nb201-widths", base) == key("nb201-widths", swapped)
    # node 2 is dead (edge 2->3 is none): the ops into it are never built
    dead_a = "C8:|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|nor_conv_3x3~1|none~2|"
    dead_b = "C8:|nor_conv_3x3~0|+|avg_pool_3x3~0|skip_connect~1|+|none~0|nor_conv_3x3~1|none~2|"
    assert key("nb201-widths", dead_a) == key("nb201-widths", dead_b)


@pytest.mark.parametrize(
    "other",
    [
        "C4:|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|",  # width
        "C8:|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",  # one op
        "C8:|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|",  # an edge
    ],
)
def test_a_real_difference_changes_the_key(other: str) -> None:
    base = "C8:|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|"
    assert key("nb201-widths", base) != key("nb201-widths", other)


def test_the_key_ignores_weights_and_names_but_not_the_order_of_layers() -> None:
    torch.manual_seed(0)
    a = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1))
    torch.manual_seed(1)
    b = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1))
    c = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 1), nn.ReLU())
    assert function_key(a) == function_key(b) != function_key(c)


@pytest.mark.parametrize("space", ["fbnet", "mbconv-small"])
def test_block_space_students_with_other_ids_have_other_keys(space: str) -> None:
    s = load_space(space)
    rng = random.Random(0)
    archs = list(dict.fromkeys(s.sample(rng) for _ in range(6)))
    keys = [function_key(s.build(a, 10, s.default_input_shape)) for a in archs]
    assert len(archs) == 6 and len(set(keys)) == 6  # block ids name what is built: no twins
