"""NAS-Bench-201 (Dong & Yang, ICLR 2020): one cell of 6 edges repeated through 3 stages.

Architecture id, as the benchmark writes it: `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`; the three
`+`-separated groups are nodes 1, 2, 3 and `op~i` is applied to node i and summed into the node.

A space file may also offer widths (`stem_channels: [8, 12, 16]`, the stem's channels, doubled
at each of the two reductions), the knob that trades accuracy for latency most smoothly. Its ids
then start with the width, `C8:|op~0|+...`; a bare cell means the widest network.

What the built student computes: only *live* edges, those whose input depends on the cell input and
whose node reaches the cell output (node 3) through edges other than `none`. Dead edges are not
built, so their MACs and parameters are not counted. A cell whose output does not depend on its
input (341 of the 15,625 cells) would make every prediction a constant; such ids are rejected with
`ArchitectureError` and the search never proposes them.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import torch
from torch import nn

from hwkd.errors import ArchitectureError
from hwkd.spaces.base import SearchSpace, SpecReader, TrialLike
from hwkd.spaces.layers import AvgPool, ConvBN

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NODES = 4
# (to_node, from_node) in the benchmark's order: 0->1, 0->2, 1->2, 0->3, 1->3, 2->3.
EDGES = tuple((j, i) for j in range(1, NODES) for i in range(j))
FORMAT = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"
WIDTH_PARAM = "stem_channels"  # the Optuna parameter of a space with several widths


def live_edges(ops: tuple[str, ...]) -> tuple[bool, ...]:
    """For each edge, whether its result reaches the cell output from the cell input."""
    from_input = [True] + [False] * (NODES - 1)
    for e, (j, i) in enumerate(EDGES):
        if ops[e] != "none" and from_input[i]:
            from_input[j] = True
    to_output = [False] * (NODES - 1) + [True]
    for e, (j, i) in reversed(list(enumerate(EDGES))):
        if ops[e] != "none" and to_output[j]:
            to_output[i] = True
    return tuple(ops[e] != "none" and from_input[i] and to_output[j] for e, (j, i) in enumerate(EDGES))


def arch_string(ops: tuple[str, ...]) -> str:
    groups = []
    for j in range(1, NODES):
        groups.append("|" + "|".join(f"{ops[e]}~{i}" for e, (jj, i) in enumerate(EDGES) if jj == j) + "|")
    return "+".join(groups)


def _edge_op(op: str, channels: int) -> nn.Module:
    if op == "skip_connect":
        return nn.Identity()
    if op == "nor_conv_1x1":
        return ConvBN(channels, channels, 1, relu_before=True)
    if op == "nor_conv_3x3":
        return ConvBN(channels, channels, 3, relu_before=True)
    if op == "avg_pool_3x3":
        return AvgPool(3, 1, 1, count_include_pad=False)
    raise ValueError(f"no module for op {op!r}")


class Cell(nn.Module):
    """Node j = sum of op(node i) over the live edges i -> j; the output is node 3."""

    def __init__(self, ops: tuple[str, ...], channels: int) -> None:
        super().__init__()
        live = live_edges(ops)
        self.edges = nn.ModuleDict()
        self.inputs: list[list[tuple[int, str]]] = [[] for _ in range(NODES)]
        for e, (j, i) in enumerate(EDGES):
            if live[e]:
                key = f"{j}_{i}"
                self.edges[key] = _edge_op(ops[e], channels)
                self.inputs[j].append((i, key))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes: list[torch.Tensor | None] = [x]
        for j in range(1, NODES):
            total: torch.Tensor | None = None
            for i, key in self.inputs[j]:
                source = nodes[i]
                assert source is not None  # guaranteed by live_edges
                y = self.edges[key](source)
                total = y if total is None else total + y
            nodes.append(total)
        out = nodes[-1]
        assert out is not None  # degenerate cells are rejected before building
        return out


class ReductionBlock(nn.Module):
    """The fixed residual block between stages: halves the resolution, changes channels."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.a = ConvBN(c_in, c_out, 3, stride=2, relu_before=True)
        self.b = ConvBN(c_out, c_out, 3, relu_before=True)
        # ceil_mode only matters for odd sizes, where it keeps both branches the same size.
        self.shortcut = nn.Sequential(
            AvgPool(2, 2, 0, count_include_pad=False, ceil_mode=True),
            nn.Conv2d(c_in, c_out, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x)) + self.shortcut(x)


class NB201Network(nn.Module):
    def __init__(self, ops: tuple[str, ...], in_channels: int, stem_channels: int, cells: int,
                 num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, stem_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem_channels),
        ]
        channels = stem_channels
        for stage in range(3):
            if stage:
                layers.append(ReductionBlock(channels, channels * 2))
                channels *= 2
            layers += [Cell(ops, channels) for _ in range(cells)]
        layers += [nn.BatchNorm2d(channels), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, classes)
        return self.fc(self.features(x).mean((2, 3)))


class NB201Space(SearchSpace):
    kind = "nb201"

    def __init__(self, name: str, raw: dict[str, Any], origin: str) -> None:
        spec = SpecReader(raw, origin)
        spec.reject_unknown({"kind", "description", "input_shape", "stem_channels", "cells_per_stage", "ops"})
        description = spec.get("description", str, "")
        input_shape = spec.input_shape()
        self.widths = _widths(spec)
        self.cells_per_stage = spec.get("cells_per_stage", int, 5)
        ops = spec.get("ops", list, list(OPS))
        for op in ops:
            if op not in OPS:
                spec.problems.append(f"ops: unknown op {op!r} (accepted: {', '.join(OPS)})")
        if len(set(ops)) != len(ops):
            spec.problems.append("ops: listed twice")
        spec.raise_if_problems()
        self.ops = tuple(ops)
        super().__init__(name, description, input_shape, origin)

    def _split(self, arch: str) -> tuple[int, tuple[str, ...]]:
        """(stem channels, edge ops) of an id, bare or `C<width>:`-prefixed."""
        text = arch.strip()
        width = self.widths[-1]
        head, sep, cell = text.partition(":")
        if sep:
            if not (head.startswith("C") and head[1:].isdigit() and int(head[1:]) in self.widths):
                raise ArchitectureError(f"{self.name} architecture {arch!r}: width {head!r} is not one of "
                                        f"{', '.join(f'C{w}' for w in self.widths)}")
            width, text = int(head[1:]), cell
        return width, self._ops(arch, text)

    def _ops(self, arch: str, text: str) -> tuple[str, ...]:
        groups = text.split("+")
        if len(groups) != NODES - 1:
            raise ArchitectureError(
                f"{self.name} architecture {arch!r}: {len(groups)} '+'-separated groups, expected 3 ({FORMAT})"
            )
        ops: list[str] = []
        for j, group in enumerate(groups, start=1):
            if not (group.startswith("|") and group.endswith("|") and len(group) > 1):
                raise ArchitectureError(f"{self.name} architecture {arch!r}: group {j} {group!r} must be |...| "
                                        f"({FORMAT})")
            items = group[1:-1].split("|")
            if len(items) != j:
                raise ArchitectureError(
                    f"{self.name} architecture {arch!r}: node {j} has {len(items)} edges, expected {j} ({FORMAT})"
                )
            for i, item in enumerate(items):
                op, sep, source = item.partition("~")
                where = f"{self.name} architecture {arch!r}: edge {len(ops)} (node {j} <- node {i})"
                if not sep or source != str(i):
                    raise ArchitectureError(f"{where}: {item!r} must be written op~{i}")
                if op not in self.ops:
                    raise ArchitectureError(f"{where}: unknown op {op!r} (accepted: {', '.join(self.ops)})")
                ops.append(op)
        return tuple(ops)

    def _id(self, width: int, ops: tuple[str, ...]) -> str:
        return arch_string(ops) if len(self.widths) == 1 else f"C{width}:{arch_string(ops)}"

    def parse(self, arch: str) -> str:
        width, ops = self._split(arch)
        if not any(live_edges(ops)):
            raise ArchitectureError(
                f"{self.name} architecture {arch!r}: the cell output does not depend on its input "
                "(every path from node 0 to node 3 has a 'none' edge), so every prediction would be a constant"
            )
        return self._id(width, ops)

    def build(self, arch: str, num_classes: int, input_shape: tuple[int, ...] | None = None) -> nn.Module:
        width, ops = self._split(self.parse(arch))
        spec = self.input_spec(input_shape)
        return NB201Network(ops, spec.channels, width, self.cells_per_stage, num_classes)

    def suggest(self, trial: TrialLike) -> str:
        width = trial.suggest_categorical(WIDTH_PARAM, list(self.widths)) if len(self.widths) > 1 else self.widths[0]
        ops = tuple(trial.suggest_categorical(f"edge_{j}_{i}", list(self.ops)) for j, i in EDGES)
        return self._id(width, ops)

    def sample(self, rng: random.Random) -> str:
        width = rng.choice(self.widths)
        while True:
            ops = tuple(rng.choice(self.ops) for _ in EDGES)
            if any(live_edges(ops)):
                return self._id(width, ops)

    def size(self) -> int:
        return len(self.widths) * len(self.ops) ** len(EDGES)

    def all_ops(self) -> list[tuple[str, ...]]:
        """Every op assignment, valid or not, in lexicographic order of `self.ops`."""
        return list(itertools.product(self.ops, repeat=len(EDGES)))

    def describe(self, arch: str) -> str:
        width, ops = self._split(self.parse(arch))
        live = live_edges(ops)
        parts = [f"{i}->{j}:{op}" + ("" if ok else "(dead)") for (j, i), op, ok in zip(EDGES, ops, live)]
        return " ".join(([f"C={width}"] if len(self.widths) > 1 else []) + parts)


def _widths(spec: SpecReader) -> tuple[int, ...]:
    """`stem_channels`: one width (default 16) or a list of widths to choose from."""
    raw = spec.raw.get("stem_channels", 16)
    values = raw if isinstance(raw, list) else [raw]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        spec.problems.append(f"stem_channels: {raw!r} is not a positive int or a list of them")
        return (16,)
    if len(set(values)) != len(values):
        spec.problems.append(f"stem_channels: {raw!r} lists a width twice")
    return tuple(sorted(set(values)))
