"""Block spaces declared in YAML (kind: blocks)."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from hwkd.errors import ArchitectureError, ConfigError
from hwkd.spaces import load_space

SPACE = {
    "kind": "blocks",
    "description": "two stages",
    "input_shape": [1, 3, 16, 16],
    "stem": {"channels": 8, "stride": 1},
    "stages": [
        {"depth": [1, 2], "width": [8, 16], "kernel": [3, 5], "expansion": [1, 3], "stride": 1},
        {"depth": [1], "width": [24], "kernel": [3], "expansion": [3, 6], "stride": 2},
    ],
}


@pytest.fixture()
def space(tmp_path: Path):
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    return load_space(path)


def test_ids_round_trip_and_students_run(space) -> None:
    arch = space.parse(" w16:k5e3, k3e1 | w24:k3e6 ")
    assert arch == "w16:k5e3,k3e1|w24:k3e6"
    model = space.build(arch, num_classes=7, input_shape=(2, 3, 16, 16)).eval()
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 7)
    # stem 3x3 (3->8) then blocks: 8->16 (k5 e3), 16->16 (k3 e1, residual), 16->24 (k3 e6, stride 2)
    depthwise = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert [(m.kernel_size[0], m.in_channels, m.stride[0]) for m in depthwise] == [(5, 24, 1), (3, 16, 1), (3, 96, 2)]


def test_size_counts_every_distinct_student(space) -> None:
    ids = set()
    for depth, width in itertools.product((1, 2), (8, 16)):
        for blocks in itertools.product(itertools.product((3, 5), (1, 3)), repeat=depth):
            for e in (3, 6):
                ids.add(space.parse(f"w{width}:" + ",".join(f"k{k}e{x}" for k, x in blocks) + f"|w24:k3e{e}"))
    assert space.size() == len(ids) == 2 * (4 + 16) * 2
    assert {space.parse(space.sample(random.Random(i))) for i in range(400)} <= ids


def test_optuna_suggestions_follow_the_choices(space) -> None:
    params = {"s0_depth": 1, "s0_width": 8, "s0_b0_kernel": 5, "s0_b0_expansion": 3, "s0_b1_kernel": 3,
              "s0_b1_expansion": 1, "s1_depth": 1, "s1_width": 24, "s1_b0_kernel": 3, "s1_b0_expansion": 6}
    assert space.suggest(optuna.trial.FixedTrial(params)) == "w8:k5e3|w24:k3e6"


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ("w16:k3e1", "1 stages, expected 2"),
        ("w12:k3e1|w24:k3e3", "stage 0: width 12 \\(accepted: 8, 16\\)"),
        ("w8:k7e1|w24:k3e3", "stage 0 block 0: kernel 7 \\(accepted: 3, 5\\)"),
        ("w8:k3e1,k3e1,k3e1|w24:k3e3", "stage 0: depth 3 \\(accepted: 1, 2\\)"),
        ("w8:k3e1|w24:k3x3", "stage 1 block 0: 'k3x3' is not k<kernel>e<expansion>"),
    ],
)
def test_bad_ids_name_the_position(space, arch: str, message: str) -> None:
    with pytest.raises(ArchitectureError, match=message):
        space.parse(arch)


def test_malformed_block_space_lists_every_problem(tmp_path: Path) -> None:
    raw = {**SPACE, "stages": [{"depth": [0], "width": 8, "kernel": [4], "expansion": [1], "stride": 3, "se": True}]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_space(path)
    text = str(info.value)
    for expected in ("stages[0].depth", "kernel: 4 must be odd", "stride: 3 is not 1 or 2", "unknown keys ['se']"):
        assert expected in text


def test_the_shipped_block_space_builds(tmp_path: Path) -> None:
    space = load_space(Path(__file__).parents[2] / "search_spaces" / "mbconv-small.yaml")
    arch = space.sample(random.Random(0))
    assert space.build(arch, 10)(torch.randn(1, 1, 28, 28)).shape == (1, 10)
