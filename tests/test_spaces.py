from __future__ import annotations

import random
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from hwkd.errors import ArchitectureError, ConfigError, UnknownNameError
from hwkd.spaces import builtin_spaces, describe_spaces, load_space
from hwkd.spaces.nb201 import EDGES, arch_string, live_edges

ALL_3X3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv_linear_macs(module: torch.nn.Module, shape: tuple[int, ...]) -> int:
    total = 0

    def hook(layer: torch.nn.Module, _inp: object, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, torch.nn.Conv2d):
            total += out.numel() * layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, torch.nn.Linear):
            total += out.numel() * layer.in_features

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        module.eval()(torch.zeros(shape))
    for h in handles:
        h.remove()
    return total


def test_the_builtin_spaces_are_shipped() -> None:
    assert {"nb201", "fbnet", "fbnet-imagenet"} <= set(builtin_spaces())
    assert {row["name"] for row in describe_spaces()} == set(builtin_spaces())


@pytest.mark.parametrize("name", sorted(builtin_spaces()))
def test_every_shipped_space_samples_parses_and_builds(name: str) -> None:
    space = load_space(name)
    rng = random.Random(0)
    for _ in range(3):
        arch = space.sample(rng)
        canonical = space.parse(arch)
        assert space.parse(canonical) == canonical  # ids are stable once canonical
        out = space.build(canonical, 7).eval()(torch.zeros(space.default_input_shape))
        assert out.shape == (1, 7)
    assert space.size() > 1


# ---- NAS-Bench-201 ---------------------------------------------------------------------------


def test_nb201_all_3x3_matches_published_params_and_macs() -> None:
    space = load_space("nb201")
    net = space.build(ALL_3X3, 10)
    assert n_params(net) == 1_531_546  # NAS-Bench-201's "params" for this cell: 1.531546 M
    # 7.783 M fixed + 15 cells x 6 edges x 2.359 M
    assert conv_linear_macs(net, (1, 3, 32, 32)) == 7_783_040 + 15 * 6 * 2_359_296


@pytest.mark.parametrize("seed", range(6))
def test_nb201_macs_follow_the_formula_over_live_edges(seed: int) -> None:
    space = load_space("nb201")
    arch = space.sample(random.Random(seed))
    ops = [item.split("~")[0] for group in arch.split("+") for item in group.strip("|").split("|")]
    live = live_edges(tuple(ops))
    n3 = sum(1 for op, ok in zip(ops, live) if ok and op == "nor_conv_3x3")
    n1 = sum(1 for op, ok in zip(ops, live) if ok and op == "nor_conv_1x1")
    expected = 7_783_040 + 15 * (2_359_296 * n3 + 262_144 * n1)
    assert conv_linear_macs(space.build(arch, 10), (1, 3, 32, 32)) == expected


def test_nb201_dead_edges_are_not_built() -> None:
    space = load_space("nb201")
    # node 1 feeds nothing that reaches node 3 (edges 1->2 and 1->3 are 'none'), and node 2's
    # only input is node 1's path... so the 0->1 conv is dead.
    arch = "|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
    net = space.build(arch, 10)
    cell = net.features[2]
    assert sorted(cell.edges.keys()) == ["2_0", "3_0", "3_2"]
    assert "dead" in space.describe(arch)


def test_nb201_has_341_cells_whose_output_ignores_the_input() -> None:
    space = load_space("nb201")
    degenerate = [ops for ops in space.all_ops() if not any(live_edges(ops))]
    assert len(degenerate) == 341 and space.size() == 15_625
    with pytest.raises(ArchitectureError, match="does not depend on its input"):
        space.parse(arch_string(degenerate[0]))


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ("|nor_conv_3x3~0|", "1 '\\+'-separated groups, expected 3"),
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "edge 0 \\(node 1 <- node 0\\): unknown op 'conv'"),
        ("|skip_connect~0|+|none~0|none~2|+|none~0|none~1|none~2|", "edge 2 .*must be written op~1"),
        ("|skip_connect~0|+|none~0|+|none~0|none~1|none~2|", "node 2 has 1 edges, expected 2"),
    ],
)
def test_nb201_bad_ids_name_the_position(arch: str, message: str) -> None:
    with pytest.raises(ArchitectureError, match=message):
        load_space("nb201").parse(arch)


def test_nb201_any_input_size_and_channels() -> None:
    space = load_space("nb201")
    net = space.build(ALL_3X3, 5, (1, 1, 28, 28)).eval()
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 5)
    net = space.build(ALL_3X3, 120, (1, 3, 15, 15)).eval()  # odd sizes work too
    assert net(torch.zeros(1, 3, 15, 15)).shape == (1, 120)


def test_nb201_suggest_through_optuna_gives_valid_ids() -> None:
    space = load_space("nb201")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    arch = space.suggest(trial)
    assert set(trial.params) == {f"edge_{j}_{i}" for j, i in EDGES}
    assert arch_string(tuple(trial.params[f"edge_{j}_{i}"] for j, i in EDGES)) == arch


def widths_space(tmp_path: Path, widths: object) -> object:
    raw = yaml.safe_load(builtin_spaces()["nb201-small"].read_text())
    path = tmp_path / "widths.yaml"
    path.write_text(yaml.safe_dump({**raw, "stem_channels": widths}))
    return load_space(path)


def test_nb201_widths_scale_the_network_and_lead_the_id(tmp_path: Path) -> None:
    space = widths_space(tmp_path, [16, 8])
    assert space.size() == 2 * 15_625
    narrow, wide = space.build("C8:" + ALL_3X3, 10), space.build("C16:" + ALL_3X3, 10)
    assert narrow.fc.in_features == 32 and wide.fc.in_features == 64  # the stem's width, doubled twice
    # 3x3 convs dominate, so a network half as wide has about a quarter of the MACs
    ratio = conv_linear_macs(narrow, (1, 1, 28, 28)) / conv_linear_macs(wide, (1, 1, 28, 28))
    assert 0.24 < ratio < 0.3
    assert space.parse(ALL_3X3) == "C16:" + ALL_3X3  # a bare cell is the widest network
    assert n_params(space.build(ALL_3X3, 10)) == n_params(wide)
    assert load_space("nb201-small").parse("C16:" + ALL_3X3) == ALL_3X3  # one width: ids stay bare
    with pytest.raises(ArchitectureError, match="width 'C12' is not one of C8, C16"):
        space.parse("C12:" + ALL_3X3)


def test_nb201_widths_are_an_optuna_parameter(tmp_path: Path) -> None:
    space = widths_space(tmp_path, [4, 8, 12, 16])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    widths = set()
    for _ in range(12):
        trial = study.ask()
        arch = space.suggest(trial)
        assert arch.startswith(f"C{trial.params['stem_channels']}:|")
        widths.add(trial.params["stem_channels"])
    assert len(widths) > 1


@pytest.mark.parametrize(("widths", "message"), [([], "is not a positive int"), ([8, 0], "is not a positive int"),
                                                 ([8, 8], "lists a width twice"), ("wide", "is not a positive int")])
def test_nb201_bad_widths_are_named(tmp_path: Path, widths: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        widths_space(tmp_path, widths)


# ---- FBNet -----------------------------------------------------------------------------------

FBNET_BLOCKS = {0: (3, 1, 1), 1: (3, 1, 2), 2: (3, 3, 1), 3: (3, 6, 1), 4: (5, 1, 1), 5: (5, 1, 2), 6: (5, 3, 1), 7: (5, 6, 1)}
FBNET_STAGES = [(1, 16, 1), (4, 24, 1), (4, 32, 2), (4, 64, 2), (4, 112, 1), (4, 184, 2), (1, 352, 1)]


def fbnet_formula(digits: str, classes: int, size: int = 32) -> tuple[int, int]:
    """Parameters and MACs of an FBNet student, straight from HW-NAS-Bench's block definitions."""
    params = 3 * 16 * 9 + 2 * 16
    macs = size * size * 3 * 16 * 9
    c_in, hw = 16, size
    blocks = [(c, s if b == 0 else 1) for n, c, s in FBNET_STAGES for b in range(n)]
    for digit, (c_out, stride) in zip(digits, blocks):
        out_hw = (hw + stride - 1) // stride
        op = int(digit)
        if op == 8:
            if c_in != c_out or stride != 1:
                params += c_in * c_out + 2 * c_out
                macs += out_hw * out_hw * c_in * c_out
        else:
            k, e, g = FBNET_BLOCKS[op]
            mid = e * c_in
            params += c_in * mid // g + 2 * mid + mid * k * k + 2 * mid + mid * c_out // g + 2 * c_out
            macs += hw * hw * c_in * mid // g + out_hw * out_hw * (mid * k * k + mid * c_out // g)
        c_in, hw = c_out, out_hw
    params += 352 * 1504 + 2 * 1504 + 1504 * classes + classes
    macs += hw * hw * 352 * 1504 + 1504 * classes
    return params, macs


@pytest.mark.parametrize("digits", ["3" * 22, "8" * 22, "0123456780123456780123", "5555111188887777666644"])
def test_fbnet_params_and_macs_match_the_block_formula(digits: str) -> None:
    net = load_space("fbnet").build(digits, 100)
    params, macs = fbnet_formula(digits, 100)
    assert n_params(net) == params
    assert conv_linear_macs(net, (1, 3, 32, 32)) == macs


def test_fbnet_ids_accept_digits_lists_and_block_names() -> None:
    space = load_space("fbnet")
    digits = "0123456780123456780123"
    assert space.parse(str([int(d) for d in digits])) == digits
    assert space.parse(space.describe(digits)) == digits
    assert space.parse(",".join(digits)) == digits


@pytest.mark.parametrize(
    ("arch", "message"),
    [("333", "3 blocks, expected 22"), ("3" * 21 + "9", "block 21 is '9'"), ("k3_e6-" * 21 + "k9_e1", "block 21 is 'k9_e1'")],
)
def test_fbnet_bad_ids_name_the_position(arch: str, message: str) -> None:
    with pytest.raises(ArchitectureError, match=message):
        load_space("fbnet").parse(arch)


def test_fbnet_grouped_blocks_shuffle_channels() -> None:
    net = load_space("fbnet").build("1" * 22, 10)
    shuffles = [m for m in net.modules() if type(m).__name__ == "ChannelShuffle"]
    assert len(shuffles) == 22


# ---- loading ---------------------------------------------------------------------------------


def test_unknown_space_lists_candidates() -> None:
    with pytest.raises(UnknownNameError, match="unknown space 'nb301'.*fbnet.*nb201"):
        load_space("nb301")


def test_malformed_space_file_lists_every_problem(tmp_path: Path) -> None:
    raw = yaml.safe_load(Path(load_space("fbnet").origin).read_text())
    raw["choices"] = ["k3_e6", "k4_e1", "zap"]
    raw["stages"][0] = {"blocks": 1}
    raw["colour"] = "red"
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_space(path)
    text = str(info.value)
    for expected in ("kernel must be odd", "'zap' is not 'skip'", "stages[0]", "colour: unknown key"):
        assert expected in text
