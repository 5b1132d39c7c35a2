"""The first trials of a new study: students spread evenly over the space's range of cost.

Accuracy grows with a student's size, but noisily; a front is only as wide as the latencies the
study has tried. Random first proposals bunch in the middle of the cost range, so a short search
can miss both ends of the front. Instead hwkd draws random proposals, sorts them by forward
MACs (counted on the meta device: no weights, no compute) and enqueues those closest to evenly
spaced MACs from the cheapest to the largest. Under a budget the spread is over the proposals that
meet it (the caller's `fits`: the cost model's figures), so no opening trial is spent on a student
the search would not train. The sampler takes over after them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import torch

from hwkd.errors import ArchitectureError
from hwkd.proposals import RandomAnswers
from hwkd.spaces import SearchSpace


def torch_macs(model: Callable[[torch.Tensor], torch.Tensor], input_shape: tuple[int, ...],
               device: str = "cpu") -> float:
    """Multiply-accumulates of one forward pass of `model` on a zero input of `input_shape`, as torch
    counts them (every op torch's FLOP counter knows); `hwkd.latency.graph_analysis.relax_macs` counts
    the convolutions and matrix products of a compiled graph."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(input_shape, device=device))
    return counter.get_total_flops() / 2


def forward_macs(space: SearchSpace, arch: str, num_classes: int, input_shape: tuple[int, ...]) -> float:
    """Multiply-accumulates of one forward pass of `arch`, counted without computing anything."""
    with torch.device("meta"):
        model = space.build(arch, num_classes, input_shape)
    return torch_macs(model, input_shape, device="meta")


def spread_by_cost(space: SearchSpace, num_classes: int, input_shape: tuple[int, ...], count: int, seed: int,
                   candidates: int = 64, fits: Callable[[str], bool] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(arch, Optuna params) of up to `count` distinct valid students whose MACs are spread evenly
    between the cheapest and the largest of `candidates` random proposals, cheapest first; with
    `fits`, of those proposals for which it is true (fewer than `count`, or none, when few fit)."""
    rng = random.Random(seed)
    pool: dict[str, dict[str, Any]] = {}
    for _ in range(candidates * 4):  # invalid proposals (NB201's constant cells) are drawn again
        if len(pool) == candidates:
            break
        proposal = RandomAnswers(rng)
        try:
            arch = space.parse(space.suggest(proposal))
        except ArchitectureError:
            continue
        pool.setdefault(arch, proposal.params)
    if fits is not None:
        pool = {arch: params for arch, params in pool.items() if fits(arch)}
    costs = sorted((forward_macs(space, arch, num_classes, input_shape), arch) for arch in pool)
    if not costs or count < 1:
        return []
    low, high = costs[0][0], costs[-1][0]
    picks: list[str] = []
    for i in range(min(count, len(costs))):
        target = low + (high - low) * i / max(1, count - 1)
        _, arch = min((c for c in costs if c[1] not in picks), key=lambda c: abs(c[0] - target))
        picks.append(arch)
    macs = {arch: cost for cost, arch in costs}
    return [(arch, pool[arch]) for arch in sorted(picks, key=lambda a: (macs[a], a))]  # sparse pools pick out of order
