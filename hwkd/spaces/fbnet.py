"""The FBNet space (Wu et al., CVPR 2019) as HW-NAS-Bench (Li et al., ICLR 2021) defines it.

A network is a stem, a fixed list of searchable blocks grouped in stages, and a head. The id has
one digit per block, the index of its choice: `k3_e1 k3_e1_g2 k3_e3 k3_e6 k5_e1 k5_e1_g2 k5_e3
k5_e6 skip` are 0..8 in the built-in file. Block names may also be written out, separated by
`-`, commas or spaces.

Block `k{K}_e{E}[_g{G}]`: 1x1 expansion conv to E*C_in (G groups), BN, ReLU; channel shuffle if
grouped; KxK depthwise conv with the block's stride, BN, ReLU; 1x1 projection conv (G groups), BN;
residual add when C_in == C_out and stride 1. `skip`: identity, or 1x1 conv + BN + ReLU when the
shape changes.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hwkd.errors import ArchitectureError
from hwkd.spaces.base import SearchSpace, SpecReader, TrialLike
from hwkd.spaces.layers import ChannelShuffle, ConvBN

_BLOCK = re.compile(r"^k(?P<k>[1-9]\d*)_e(?P<e>[1-9]\d*)(?:_g(?P<g>[1-9]\d*))?$")


@dataclass(frozen=True)
class BlockChoice:
    """One searchable block type; `kernel == 0` means skip."""

    name: str
    kernel: int
    expansion: int
    groups: int

    @property
    def is_skip(self) -> bool:
        return self.kernel == 0

    @classmethod
    def parse(cls, name: str) -> BlockChoice:
        if name == "skip":
            return cls(name, 0, 0, 1)
        match = _BLOCK.match(name)
        if not match:
            raise ValueError(f"block {name!r} is not 'skip' or k<kernel>_e<expansion>[_g<groups>]")
        kernel = int(match["k"])
        if kernel % 2 == 0:
            raise ValueError(f"block {name!r}: the kernel must be odd")
        return cls(name, kernel, int(match["e"]), int(match["g"] or 1))


@dataclass(frozen=True)
class Stage:
    blocks: int
    channels: int
    stride: int  # of the stage's first block; the others use stride 1


class MBBlock(nn.Module):
    def __init__(self, choice: BlockChoice, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        mid = choice.expansion * c_in
        g = choice.groups
        layers: list[nn.Module] = [ConvBN(c_in, mid, 1, groups=g, relu_after=True)]
        if g > 1:
            layers.append(ChannelShuffle(g))
        layers += [
            ConvBN(mid, mid, choice.kernel, stride=stride, groups=mid, relu_after=True),
            ConvBN(mid, c_out, 1, groups=g),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = c_in == c_out and stride == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


def make_block(choice: BlockChoice, c_in: int, c_out: int, stride: int) -> nn.Module:
    if choice.is_skip:
        if c_in == c_out and stride == 1:
            return nn.Identity()
        return ConvBN(c_in, c_out, 1, stride=stride, relu_after=True)
    return MBBlock(choice, c_in, c_out, stride)


class FBNetNetwork(nn.Module):
    def __init__(
        self,
        blocks: list[BlockChoice],
        stages: list[Stage],
        in_channels: int,
        stem_channels: int,
        stem_stride: int,
        head_channels: int,
        num_classes: int,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBN(in_channels, stem_channels, 3, stride=stem_stride, relu_after=True)]
        c_in = stem_channels
        position = 0
        for stage in stages:
            for b in range(stage.blocks):
                stride = stage.stride if b == 0 else 1
                layers.append(make_block(blocks[position], c_in, stage.channels, stride))
                c_in = stage.channels
                position += 1
        layers.append(ConvBN(c_in, head_channels, 1, relu_after=True))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(head_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, classes)
        return self.fc(self.features(x).mean((2, 3)))


class FBNetSpace(SearchSpace):
    kind = "fbnet"

    def __init__(self, name: str, raw: dict[str, Any], origin: str) -> None:
        spec = SpecReader(raw, origin)
        spec.reject_unknown({"kind", "description", "input_shape", "stem", "stages", "head_channels", "choices"})
        description = spec.get("description", str, "")
        input_shape = spec.input_shape()
        stem = spec.get("stem", dict, {})
        self.stem_channels = int(stem.get("channels", 16))
        self.stem_stride = int(stem.get("stride", 1))
        self.head_channels = spec.get("head_channels", int, 1504)
        self.stages: list[Stage] = []
        for n, stage in enumerate(spec.get("stages", list, [])):
            try:
                self.stages.append(Stage(int(stage["blocks"]), int(stage["channels"]), int(stage["stride"])))
            except (KeyError, TypeError, ValueError):
                spec.problems.append(f"stages[{n}]: {stage!r} needs integer blocks, channels, stride")
        self.choices: list[BlockChoice] = []
        for name_ in spec.get("choices", list, []):
            try:
                self.choices.append(BlockChoice.parse(str(name_)))
            except ValueError as exc:
                spec.problems.append(f"choices: {exc}")
        if not self.choices:
            spec.problems.append("choices: at least one block choice is needed")
        spec.raise_if_problems()
        self.num_blocks = sum(s.blocks for s in self.stages)
        self._by_name = {c.name: i for i, c in enumerate(self.choices)}
        super().__init__(name, description, input_shape, origin)

    def _indices(self, arch: str) -> list[int]:
        text = arch.strip().strip("[]()")
        if re.fullmatch(r"\d+", text) and len(self.choices) <= 10:
            tokens = list(text)
        else:
            tokens = [t for t in re.split(r"[\s,\-]+", text) if t]
        if len(tokens) != self.num_blocks:
            raise ArchitectureError(
                f"{self.name} architecture {arch!r}: {len(tokens)} blocks, expected {self.num_blocks} "
                f"(one digit 0-{len(self.choices) - 1} per block, or block names)"
            )
        indices = []
        for position, token in enumerate(tokens):
            if token.isdigit() and int(token) < len(self.choices):
                indices.append(int(token))
            elif token in self._by_name:
                indices.append(self._by_name[token])
            else:
                accepted = ", ".join(f"{i}={c.name}" for i, c in enumerate(self.choices))
                raise ArchitectureError(
                    f"{self.name} architecture {arch!r}: block {position} is {token!r} (accepted: {accepted})"
                )
        return indices

    def _id(self, indices: list[int]) -> str:
        sep = "" if len(self.choices) <= 10 else ","
        return sep.join(str(i) for i in indices)

    def parse(self, arch: str) -> str:
        return self._id(self._indices(arch))

    def build(self, arch: str, num_classes: int, input_shape: tuple[int, ...] | None = None) -> nn.Module:
        blocks = [self.choices[i] for i in self._indices(arch)]
        spec = self.input_spec(input_shape)
        return FBNetNetwork(
            blocks, self.stages, spec.channels, self.stem_channels, self.stem_stride, self.head_channels, num_classes
        )

    def suggest(self, trial: TrialLike) -> str:
        names = [c.name for c in self.choices]
        chosen = [trial.suggest_categorical(f"block_{b:02d}", names) for b in range(self.num_blocks)]
        return self._id([self._by_name[c] for c in chosen])

    def sample(self, rng: random.Random) -> str:
        return self._id([rng.randrange(len(self.choices)) for _ in range(self.num_blocks)])

    def size(self) -> int:
        return len(self.choices) ** self.num_blocks

    def describe(self, arch: str) -> str:
        return "-".join(self.choices[i].name for i in self._indices(arch))
