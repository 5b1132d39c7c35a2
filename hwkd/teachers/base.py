"""A teacher as every command uses it: a forward function from standardized images to logits.

A teacher takes what students take: float32 images (N, C, H, W) standardized with the dataset's
training mean and std, and returns logits (N, classes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hwkd.data.datasets import Dataset
from hwkd.errors import DataError, error_line


@dataclass(frozen=True)
class Teacher:
    name: str  # file name or "default"
    kind: str  # "default", "torch.export", "TorchScript", "ONNX"
    path: str
    sha256: str
    forward: Callable[[torch.Tensor], torch.Tensor]  # standardized images -> logits
    batch_size: int = 256
    module: nn.Module | None = None  # the torch network, where there is one whose layers can be tapped

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, K) for standardized float images (N, C, H, W), computed in batches on CPU."""
        outs = [self.forward(images[i : i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        return torch.cat(outs).float()


def check_teacher(teacher: Teacher, dataset: Dataset) -> None:
    """One-line error unless the teacher maps two validation images to (2, classes) logits."""
    sample = dataset.normalize(dataset.val.images[:2])
    try:
        out = teacher.logits(sample)
    except Exception as exc:  # noqa: BLE001 - a wrong input shape fails differently per runtime
        raise DataError(
            f"teacher {teacher.name} cannot run on {dataset.name} images of shape {tuple(sample.shape[1:])}: "
            f"{error_line(exc)}"
        ) from None
    if out.ndim != 2 or out.shape[1] != dataset.num_classes:
        raise DataError(
            f"teacher {teacher.name} outputs shape {tuple(out.shape)} for 2 images; dataset {dataset.name} "
            f"has {dataset.num_classes} classes, so (2, {dataset.num_classes}) is expected"
        )


def torch_forward(module: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(images: torch.Tensor) -> torch.Tensor:
        out = module(images)
        return out[0] if isinstance(out, (tuple, list)) else out

    return forward
