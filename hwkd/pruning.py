"""Structured channel pruning of a student to a latency target, costed on the device after each step.

Whole output channels of convolutions are removed, with their BatchNorm and every consumer kept
consistent: torch-pruning's dependency graph (Fang et al., "DepGraph: Towards Any Structural
Pruning", CVPR 2023) groups the layers a channel ties together (residual adds, concatenations,
depthwise and grouped convolutions, the classifier's inputs), so a group's channels go together.

Layers on either side of a channel permutation (ShuffleNet's channel shuffle in grouped FBNet
blocks) are left whole: pruning through a permutation would change what the student computes.

Importance: the L1 norm of a channel's weights summed over its group (Li et al., "Pruning Filters
for Efficient ConvNets", ICLR 2017, applied per group as DepGraph does), normalized per group;
channels are ranked across the whole network (global pruning) so layers that matter less lose
more. Each step removes about `step_fraction` of the prunable channels, no layer ever losing more
than `max_layer_fraction` of its own (beyond that the layer would in effect be removed, which
structured pruning does not do); the pruned student is then lowered and costed on the device by
the caller's `latency_ms`, and pruning stops at the first step that meets the target.

Every pruned layer keeps a multiple of `channel_multiple` (8) output channels: the compiled
convolutions accumulate tiles of output channels chosen among the divisors of the channel count
(`hwkd.latency.schedule.conv_tile`), so a count such as 52 (no divisor of 8) gets a smaller, less
efficient tile, and a step that removes channels can make the student slower (on rpi4, nb201's
56-channel stride-2 convolution costs less than a 52-channel one).

The pruned student is kept as plain weights (`state_dict`) plus the new sizes of the layers that
changed (`PrunedShapes`), so it is rebuilt from its architecture id and loaded with
`weights_only=True`, never unpickled as a module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hwkd.errors import HwkdError

# the attributes torch-pruning changes on the layers it prunes, by layer type
_SIZE_ATTRS = {
    nn.Conv2d: ("in_channels", "out_channels", "groups"),
    nn.BatchNorm2d: ("num_features",),
    nn.Linear: ("in_features", "out_features"),
}

PrunedShapes = dict[str, dict[str, int]]  # layer name -> its new sizes (e.g. out_channels)


@dataclass(frozen=True)
class PruneStep:
    step: int
    channels_removed: int  # output channels of convolutions removed so far, over the whole student
    latency_ms: float


@dataclass(frozen=True)
class PruneResult:
    module: nn.Module  # the pruned student (the module given, pruned in place)
    steps: tuple[PruneStep, ...]  # step 0 is the unpruned student
    met_target: bool
    channels_before: int
    removed: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # layer -> original out channels removed

    @property
    def latency_ms(self) -> float:
        return self.steps[-1].latency_ms

    def shapes(self) -> PrunedShapes:
        return pruned_shapes(self.module)


class PruningError(HwkdError):
    """A target the student cannot reach by structured pruning."""


def prune_to_latency(module: nn.Module, input_shape: tuple[int, ...], latency_ms: Callable[[nn.Module], float],
                     target_ms: float, step_fraction: float = 0.05, max_layer_fraction: float = 0.9,
                     start_ms: float | None = None, channel_multiple: int = 8) -> PruneResult:
    """Prune `module` in place until `latency_ms(module) <= target_ms`; raises PruningError, with
    the smallest latency reached, when no layer can lose more channels and the target is still
    not met. The classifier (the last Linear) keeps its outputs. `start_ms`: the unpruned
    student's latency, when the caller has it already (costing a student lowers it with TVM)."""
    import torch_pruning as tp

    if not target_ms > 0:
        raise HwkdError(f"latency target {target_ms:g} ms: must be a positive number")
    module.eval()
    example = torch.zeros(input_shape)
    start_ms = latency_ms(module) if start_ms is None else start_ms
    convs = {name: m for name, m in module.named_modules() if isinstance(m, nn.Conv2d)}
    before = sum(m.out_channels for m in convs.values())
    steps = [PruneStep(0, 0, start_ms)]
    if start_ms <= target_ms:
        return PruneResult(module, tuple(steps), True, before)
    classifier = [m for m in module.modules() if isinstance(m, nn.Linear)][-1:]
    ignored = classifier + _beside_permutations(module)
    iterative = max(1, math.ceil(max_layer_fraction / step_fraction))
    pruner = tp.pruner.MetaPruner(
        module, example, importance=tp.importance.MagnitudeImportance(p=1), global_pruning=True,
        pruning_ratio=max_layer_fraction, max_pruning_ratio=max_layer_fraction, iterative_steps=iterative,
        ignored_layers=ignored, round_to=channel_multiple,
    )
    names = {m: name for name, m in module.named_modules()}
    survivors = {name: list(range(_out_size(m))) for name, m in module.named_modules() if type(m) in _SIZE_ATTRS}
    removed: dict[str, list[int]] = {}
    with torch.no_grad():
        for step in range(1, iterative + 1):
            for group in pruner.step(interactive=True):
                _track(group, names, survivors, removed)
                group.prune()
            now = sum(m.out_channels for m in convs.values())
            steps.append(PruneStep(step, before - now, latency_ms(module)))
            if steps[-1].latency_ms <= target_ms:
                break
    result = PruneResult(module, tuple(steps), steps[-1].latency_ms <= target_ms, before,
                         {k: tuple(sorted(v)) for k, v in removed.items()})
    if not result.met_target:
        raise PruningError(
            f"--max-latency-ms {target_ms:g}: structured pruning reaches {result.latency_ms:.3f} ms at best "
            f"(from {start_ms:.3f} ms, {100 * max_layer_fraction:.0f} % of every layer's channels removed); "
            "going further would remove whole layers: choose a higher target or a smaller student")
    return result


def _beside_permutations(module: nn.Module) -> list[nn.Module]:
    """The layers right before and after each module that permutes channels (a channel shuffle,
    `permutes_channels = True`): their channels are tied through the permutation, which pruning
    cannot follow, so they are left whole."""
    out: list[nn.Module] = []
    for parent in module.modules():
        children = list(parent.children())
        for i, child in enumerate(children):
            if not getattr(type(child), "permutes_channels", False):
                continue
            if not isinstance(parent, nn.Sequential) or not 0 < i < len(children) - 1:
                raise HwkdError(f"cannot prune around {type(child).__name__}: it permutes channels and is not "
                                "between two layers of an nn.Sequential")
            out += [children[i - 1], children[i + 1]]
    return out


def _out_size(m: nn.Module) -> int:
    if isinstance(m, nn.Conv2d):
        return m.out_channels
    if isinstance(m, nn.BatchNorm2d):
        return m.num_features
    return int(m.out_features) if isinstance(m, nn.Linear) else 0


def _track(group: Any, names: dict[nn.Module, str], survivors: dict[str, list[int]],
           removed: dict[str, list[int]]) -> None:
    """Record, in the unpruned student's numbering, the output channels a group removes."""
    for dep, idxs in group:
        layer = dep.target.module
        name = names.get(layer)
        handler = getattr(dep.handler, "__name__", "")
        if name is None or name not in survivors or "out_channels" not in handler:
            continue
        gone = set(int(i) for i in idxs)
        kept = survivors[name]
        removed.setdefault(name, []).extend(kept[i] for i in sorted(gone) if i < len(kept))
        survivors[name] = [c for i, c in enumerate(kept) if i not in gone]


def pruned_shapes(module: nn.Module) -> PrunedShapes:
    """The sizes of every prunable layer, as `reshape_like` takes them back."""
    return {name: {attr: int(getattr(m, attr)) for attr in _SIZE_ATTRS[type(m)]}
            for name, m in module.named_modules() if type(m) in _SIZE_ATTRS}


def reshape_like(module: nn.Module, shapes: PrunedShapes, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Give an unpruned student (built from its architecture id) the layer sizes of a pruned one
    and load its weights: each parameter and buffer takes the shape of the saved tensor."""
    for name, sizes in shapes.items():
        layer = module.get_submodule(name)
        for attr, value in sizes.items():
            setattr(layer, attr, value)
    for key, tensor in state.items():
        owner_name, _, leaf = key.rpartition(".")
        owner = module.get_submodule(owner_name)
        current = getattr(owner, leaf, None)
        if isinstance(current, torch.Tensor) and current.shape != tensor.shape:
            fresh = torch.empty(tensor.shape, dtype=tensor.dtype)
            if isinstance(current, nn.Parameter):
                setattr(owner, leaf, nn.Parameter(fresh, requires_grad=current.requires_grad))
            else:
                owner.register_buffer(leaf, fresh)
    module.load_state_dict(state)
    return module


def zero_channels(module: nn.Module, removed: Mapping[str, tuple[int, ...]]) -> nn.Module:
    """The unpruned `module` with the removed output channels zeroed (weights, bias, BatchNorm scale
    and shift): it computes what the pruned student computes."""
    with torch.no_grad():
        for name, channels in removed.items():
            layer = module.get_submodule(name)
            index = torch.tensor(channels, dtype=torch.long)
            for tensor in (getattr(layer, "weight", None), getattr(layer, "bias", None)):
                if isinstance(tensor, torch.Tensor):
                    tensor[index] = 0
    return module
