"""Block spaces declared in YAML: stages with choices of depth, width, kernel and expansion.

    kind: blocks
    description: a small inverted-residual space
    input_shape: [1, 1, 28, 28]
    stem: {channels: 16, stride: 1}
    head_channels: 0            # a 1x1 conv before pooling; 0 for none
    stages:
      - {depth: [1, 2], width: [16, 24], kernel: [3, 5], expansion: [1, 3, 6], stride: 1}
      - {depth: [1, 2, 3], width: [32, 40], kernel: [3, 5], expansion: [3, 6], stride: 2}

Every block is the FBNet/MobileNetV2 inverted residual (1x1 expansion, depthwise KxK, 1x1
projection; residual when the shape allows); a stage's first block has the stage's stride.
An id lists the stages separated by `|`, each as `w<width>:` and its blocks `k<kernel>e<expansion>`
separated by `,`, e.g. `w16:k3e1|w32:k5e6,k3e3`.
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
from hwkd.spaces.fbnet import BlockChoice, make_block
from hwkd.spaces.layers import ConvBN

_BLOCK = re.compile(r"^k(\d+)e(\d+)$")
_STAGE = re.compile(r"^w(\d+):(.+)$")


@dataclass(frozen=True)
class StageChoices:
    depth: tuple[int, ...]
    width: tuple[int, ...]
    kernel: tuple[int, ...]
    expansion: tuple[int, ...]
    stride: int


@dataclass(frozen=True)
class StageArch:
    width: int
    blocks: tuple[tuple[int, int], ...]  # (kernel, expansion) per block


class BlockNetwork(nn.Module):
    def __init__(self, stages: list[StageArch], strides: list[int], in_channels: int, stem_channels: int,
                 stem_stride: int, head_channels: int, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBN(in_channels, stem_channels, 3, stride=stem_stride, relu_after=True)]
        c_in = stem_channels
        for stage, stride in zip(stages, strides):
            for b, (kernel, expansion) in enumerate(stage.blocks):
                choice = BlockChoice(f"k{kernel}_e{expansion}", kernel, expansion, 1)
                layers.append(make_block(choice, c_in, stage.width, stride if b == 0 else 1))
                c_in = stage.width
        if head_channels:
            layers.append(ConvBN(c_in, head_channels, 1, relu_after=True))
            c_in = head_channels
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, classes)
        return self.fc(self.features(x).mean((2, 3)))


class BlockSpace(SearchSpace):
    kind = "blocks"

    def __init__(self, name: str, raw: dict[str, Any], origin: str) -> None:
        spec = SpecReader(raw, origin)
        spec.reject_unknown({"kind", "description", "input_shape", "stem", "stages", "head_channels"})
        description = spec.get("description", str, "")
        input_shape = spec.input_shape()
        stem = spec.get("stem", dict, {})
        self.stem_channels = int(stem.get("channels", 16))
        self.stem_stride = int(stem.get("stride", 1))
        self.head_channels = spec.get("head_channels", int, 0, required=False)
        self.stages: list[StageChoices] = []
        for n, stage in enumerate(spec.get("stages", list, [])):
            self.stages.append(_stage_choices(stage, n, spec.problems))
        if not self.stages:
            spec.problems.append("stages: at least one stage is needed")
        spec.raise_if_problems()
        super().__init__(name, description, input_shape, origin)

    def _decode(self, arch: str) -> list[StageArch]:
        parts = [p.strip() for p in arch.strip().split("|")]
        if len(parts) != len(self.stages):
            raise ArchitectureError(f"{self.name} architecture {arch!r}: {len(parts)} stages, expected "
                                    f"{len(self.stages)} (w<width>:k<k>e<e>,... per stage, separated by |)")
        stages = []
        for s, (part, choices) in enumerate(zip(parts, self.stages)):
            where = f"{self.name} architecture {arch!r}: stage {s}"
            match = _STAGE.match(part)
            if not match:
                raise ArchitectureError(f"{where}: {part!r} is not w<width>:k<k>e<e>,...")
            width = int(match.group(1))
            if width not in choices.width:
                raise ArchitectureError(f"{where}: width {width} (accepted: {_list(choices.width)})")
            blocks = []
            for b, text in enumerate(t.strip() for t in match.group(2).split(",")):
                block = _BLOCK.match(text)
                if not block:
                    raise ArchitectureError(f"{where} block {b}: {text!r} is not k<kernel>e<expansion>")
                kernel, expansion = int(block.group(1)), int(block.group(2))
                if kernel not in choices.kernel:
                    raise ArchitectureError(f"{where} block {b}: kernel {kernel} (accepted: {_list(choices.kernel)})")
                if expansion not in choices.expansion:
                    raise ArchitectureError(
                        f"{where} block {b}: expansion {expansion} (accepted: {_list(choices.expansion)})")
                blocks.append((kernel, expansion))
            if len(blocks) not in choices.depth:
                raise ArchitectureError(f"{where}: depth {len(blocks)} (accepted: {_list(choices.depth)})")
            stages.append(StageArch(width, tuple(blocks)))
        return stages

    @staticmethod
    def _encode(stages: list[StageArch]) -> str:
        return "|".join(f"w{s.width}:" + ",".join(f"k{k}e{e}" for k, e in s.blocks) for s in stages)

    def parse(self, arch: str) -> str:
        return self._encode(self._decode(arch))

    def build(self, arch: str, num_classes: int, input_shape: tuple[int, ...] | None = None) -> nn.Module:
        spec = self.input_spec(input_shape)
        return BlockNetwork(self._decode(arch), [c.stride for c in self.stages], spec.channels,
                            self.stem_channels, self.stem_stride, self.head_channels, num_classes)

    def suggest(self, trial: TrialLike) -> str:
        stages = []
        for s, c in enumerate(self.stages):
            depth = trial.suggest_categorical(f"s{s}_depth", list(c.depth))
            width = trial.suggest_categorical(f"s{s}_width", list(c.width))
            # every possible block is suggested, used or not: a fixed set of parameters suits NSGA-II
            blocks = [(trial.suggest_categorical(f"s{s}_b{b}_kernel", list(c.kernel)),
                       trial.suggest_categorical(f"s{s}_b{b}_expansion", list(c.expansion)))
                      for b in range(max(c.depth))]
            stages.append(StageArch(width, tuple(blocks[:depth])))
        return self._encode(stages)

    def sample(self, rng: random.Random) -> str:
        stages = []
        for c in self.stages:
            depth = rng.choice(c.depth)
            blocks = tuple((rng.choice(c.kernel), rng.choice(c.expansion)) for _ in range(depth))
            stages.append(StageArch(rng.choice(c.width), blocks))
        return self._encode(stages)

    def size(self) -> int:
        total = 1
        for c in self.stages:
            per_block = len(c.kernel) * len(c.expansion)
            total *= len(c.width) * sum(per_block**d for d in c.depth)
        return total


def _stage_choices(raw: object, n: int, problems: list[str]) -> StageChoices:
    where = f"stages[{n}]"
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping with depth, width, kernel, expansion, stride")
        return StageChoices((1,), (1,), (3,), (1,), 1)
    unknown = sorted(set(raw) - {"depth", "width", "kernel", "expansion", "stride"})
    if unknown:
        problems.append(f"{where}: unknown keys {unknown} (accepted: depth, width, kernel, expansion, stride)")
    values: dict[str, tuple[int, ...]] = {}
    for key in ("depth", "width", "kernel", "expansion"):
        value = raw.get(key)
        items = value if isinstance(value, list) else [value]
        ints = [v for v in items if isinstance(v, int) and not isinstance(v, bool) and v > 0]
        if not ints or len(ints) < len(items):
            problems.append(f"{where}.{key}: {value!r} is not a positive int or a list of them")
            ints = [1]
        values[key] = tuple(sorted(set(ints)))
    for kernel in values["kernel"]:
        if kernel % 2 == 0:
            problems.append(f"{where}.kernel: {kernel} must be odd")
    stride = raw.get("stride", 1)
    if stride not in (1, 2):
        problems.append(f"{where}.stride: {stride!r} is not 1 or 2")
        stride = 1
    return StageChoices(values["depth"], values["width"], values["kernel"], values["expansion"], int(stride))


def _list(values: tuple[int, ...]) -> str:
    return ", ".join(str(v) for v in values)
