"""Feature and attention transfer: intermediate outputs of teacher and student, paired by layer.

Any torch network that `torch.fx` can trace (every hwkd student, hwkd's default teacher) or that
`torch.export` saved (its `.module()` is an fx graph) exposes its intermediate 4-D tensors as
fx nodes. A *tap* rewrites the graph to return `(logits, feature_1, ...)` at chosen nodes; the
parameters stay those of the original module, so training the tap trains the student.

Automatic pairing takes, at each spatial size, the last feature computed there (the output of a
stage), and pairs the deepest stages of teacher and student. Feature transfer (FitNets, Romero et
al. 2015) maps a student feature to the teacher's channels with a 1x1 convolution and BatchNorm
sized from the traced shapes, resizes it to the teacher's spatial size when they differ, and
takes the mean squared error. Attention transfer (Zagoruyko & Komodakis 2017) compares the
L2-normalized spatial maps of mean squared activations, which needs no adapter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from hwkd.errors import HwkdError

TRANSFERS = ("none", "feature", "attention")


@dataclass(frozen=True)
class FeaturePoint:
    name: str  # the fx node's name
    channels: int
    height: int
    width: int


def feature_points(graph_module: fx.GraphModule, input_shape: tuple[int, ...]) -> list[FeaturePoint]:
    """Every 4-D tensor the network computes, in execution order (input excluded)."""
    sample = torch.zeros((1, *input_shape[1:]))
    was_training = graph_module.training
    graph_module.eval()
    with torch.no_grad():
        ShapeProp(graph_module).propagate(sample)
    graph_module.train(was_training)
    points = []
    for node in graph_module.graph.nodes:
        meta = node.meta.get("tensor_meta")
        if node.op in ("placeholder", "output", "get_attr") or meta is None or not hasattr(meta, "shape"):
            continue
        if len(meta.shape) == 4:
            _, c, h, w = (int(v) for v in meta.shape)
            points.append(FeaturePoint(node.name, c, h, w))
    return points


def stage_outputs(points: list[FeaturePoint]) -> list[FeaturePoint]:
    """The last feature at each spatial size, largest size first."""
    last: dict[tuple[int, int], FeaturePoint] = {}
    for p in points:
        last[(p.height, p.width)] = p
    return sorted(last.values(), key=lambda p: -(p.height * p.width))


def trace(module: nn.Module) -> fx.GraphModule:
    if isinstance(module, fx.GraphModule):
        return module
    try:
        return fx.symbolic_trace(module)
    except Exception as exc:  # noqa: BLE001 - dynamic control flow in a user's network
        raise HwkdError(f"{type(module).__name__} cannot be traced for feature transfer ({exc}); "
                        "use --transfer none") from None


def tap(graph_module: fx.GraphModule, names: list[str]) -> fx.GraphModule:
    """A copy of the graph that returns (original output, *the named nodes), sharing parameters."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    output = None
    for node in graph_module.graph.nodes:
        if node.op == "output":
            output = node
            continue
        env[node] = graph.node_copy(node, lambda n: env[n])
    by_name = {n.name: env[n] for n in graph_module.graph.nodes if n in env}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise HwkdError(f"layers {missing} are not in the network (candidates: {', '.join(by_name)})")
    assert output is not None
    result = fx.map_arg(output.args[0], lambda n: env[n])
    graph.output((result, *[by_name[n] for n in names]))
    return fx.GraphModule(graph_module, graph)


def pair_layers(teacher: list[FeaturePoint], student: list[FeaturePoint],
                teacher_names: list[str] | None = None, student_names: list[str] | None = None
                ) -> list[tuple[FeaturePoint, FeaturePoint]]:
    """Chosen layers (same count on both sides), or the deepest stage outputs of each, paired."""
    if teacher_names or student_names:
        t_by = {p.name: p for p in teacher}
        s_by = {p.name: p for p in student}
        teacher_names, student_names = teacher_names or [], student_names or []
        if len(teacher_names) != len(student_names):
            raise HwkdError(f"--teacher-layers names {len(teacher_names)} layers and --student-layers "
                            f"{len(student_names)}; give the same number")
        for names, by, side in ((teacher_names, t_by, "teacher"), (student_names, s_by, "student")):
            for name in names:
                if name not in by:
                    raise HwkdError(f"--{side}-layers {name!r}: not a 4-D feature of the {side} "
                                    f"(candidates: {', '.join(by)})")
        return [(t_by[t], s_by[s]) for t, s in zip(teacher_names, student_names)]
    t_stages, s_stages = stage_outputs(teacher), stage_outputs(student)
    k = min(len(t_stages), len(s_stages))
    return list(zip(t_stages[len(t_stages) - k :], s_stages[len(s_stages) - k :]))


class Adapter(nn.Module):
    """Student feature -> teacher feature shape: 1x1 conv + BN, then resize if the sizes differ."""

    def __init__(self, student: FeaturePoint, teacher: FeaturePoint) -> None:
        super().__init__()
        self.size = (teacher.height, teacher.width)
        self.project = nn.Sequential(nn.Conv2d(student.channels, teacher.channels, 1, bias=False),
                                     nn.BatchNorm2d(teacher.channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(x)
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return x


def attention_map(x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """(N, C, H, W) -> (N, H*W): the L2-normalized mean of squared activations over channels."""
    a = x.pow(2).mean(1, keepdim=True)
    if size is not None and tuple(a.shape[-2:]) != size:
        a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
    return F.normalize(a.flatten(1), dim=1)


class Transfer(nn.Module):
    """The transfer loss over paired layers; holds the adapters (trained with the student)."""

    def __init__(self, kind: str, pairs: list[tuple[FeaturePoint, FeaturePoint]]) -> None:
        super().__init__()
        if kind not in TRANSFERS:
            raise HwkdError(f"--transfer {kind!r}: choose {', '.join(TRANSFERS)}")
        self.kind = kind
        self.sizes = [(t.height, t.width) for t, _ in pairs]
        self.adapters = nn.ModuleList([Adapter(s, t) for t, s in pairs] if kind == "feature" else [])

    def forward(self, teacher_feats: list[torch.Tensor], student_feats: list[torch.Tensor]) -> torch.Tensor:
        losses = []
        for i, (t, s) in enumerate(zip(teacher_feats, student_feats)):
            if self.kind == "feature":
                losses.append(F.mse_loss(self.adapters[i](s), t))
            else:
                # mean over images and positions, as the AT authors' code (their beta = 1000 then applies)
                losses.append((attention_map(s, self.sizes[i]) - attention_map(t)).pow(2).mean())
        return torch.stack(losses).mean()
