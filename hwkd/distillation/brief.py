"""Brief distillation: the accuracy signal of a search trial.

A fixed number of steps on a subset of the training split with the teacher's logits computed once
beforehand (no per-step teacher and therefore no augmentation), SGD with Nesterov momentum and a
one-cycle learning rate, channels-last tensors. Validation accuracy is the trial's score.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from hwkd.data.datasets import Dataset, Split
from hwkd.distillation.config import BriefConfig
from hwkd.distillation.losses import distill_loss
from hwkd.errors import HwkdError
from hwkd.threads import fit_threads
from hwkd.training import evaluate


class TrainingDiverged(HwkdError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainResult:
    val_accuracy: float
    final_loss: float
    steps: int
    images_per_s: float
    seconds: float


def brief_indices(train_images: int, config: BriefConfig) -> torch.Tensor | None:
    """Which training images every brief distillation of a search shares: `steps` batches' worth,
    drawn once by the seed, so each trial makes one pass over the same images and the teacher's
    outputs are needed on these only; None where the split is no larger (all of it is used)."""
    size = config.steps * config.batch_size
    if size >= train_images:
        return None
    return torch.randperm(train_images, generator=torch.Generator().manual_seed(config.seed))[:size].sort().values


def brief_subset(dataset: Dataset, config: BriefConfig) -> Dataset:
    """`dataset` with only the training images of `brief_indices`."""
    index = brief_indices(len(dataset.train), config)
    if index is None:
        return dataset
    return replace(dataset, train=Split(dataset.train.images[index], dataset.train.labels[index]))


def brief_distill(
    student: nn.Module,
    dataset: Dataset,
    teacher_logits: torch.Tensor | None,
    config: BriefConfig,
    device: torch.device,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train `student` in place for `config.steps` steps; teacher_logits: (N_train, K) or None."""
    if device.type == "cpu":
        fit_threads()  # only the cores other processes leave free: spinning threads beside them stall
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    student.to(device=device, memory_format=torch.channels_last).train()  # type: ignore[call-overload]  # stubs omit memory_format
    optimizer = torch.optim.SGD(student.parameters(), lr=config.lr, momentum=0.9, nesterov=True,
                                weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=config.steps,
                                                    pct_start=0.15)
    train = dataset.train
    n = len(train)
    # moved once (a no-op on the CPU): a GPU then never waits for a host copy between steps
    all_images, all_labels = train.images.to(device), train.labels.to(device)
    all_soft = teacher_logits.to(device) if teacher_logits is not None else None
    order = torch.randperm(n, generator=generator)
    position = 0
    loss_value = float("nan")
    start = time.perf_counter()
    for step in range(config.steps):
        if position + config.batch_size > n:
            order, position = torch.randperm(n, generator=generator), 0
        index = order[position : position + config.batch_size].to(device)
        position += config.batch_size
        images = dataset.normalize(all_images[index]).contiguous(memory_format=torch.channels_last)
        labels = all_labels[index]
        soft = all_soft[index] if all_soft is not None else None
        loss = distill_loss(config.loss, student(images), soft, labels, config.temperature, config.alpha)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise TrainingDiverged(f"the loss became {loss_value} at step {step + 1} of {config.steps}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if on_step is not None:
            on_step(step + 1, loss_value)
    seconds = time.perf_counter() - start
    accuracy = evaluate(student, dataset, dataset.val, device)
    return TrainResult(
        val_accuracy=accuracy,
        final_loss=loss_value,
        steps=config.steps,
        images_per_s=config.steps * config.batch_size / max(seconds, 1e-9),
        seconds=seconds,
    )
