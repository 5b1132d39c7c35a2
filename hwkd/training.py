"""What every training loop shares (the default teacher's, brief and full distillation): where it
trains and how a model is scored."""

from __future__ import annotations

import torch
from torch import nn

from hwkd.data.datasets import Dataset, Split
from hwkd.errors import HwkdError


def pick_device(choice: str) -> torch.device:
    """`auto` takes CUDA when present; `cuda` without one is an error."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise HwkdError("--train-device cuda: no CUDA device is available (choose auto or cpu)")
    if choice not in ("cpu", "cuda"):
        raise HwkdError(f"--train-device {choice!r}: choose auto, cpu or cuda")
    return torch.device(choice)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, split: Split, device: torch.device, batch_size: int = 500) -> float:
    """Top-1 accuracy of `model` on `split`, in [0, 1]."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(split), batch_size):
        images = dataset.normalize(split.images[start : start + batch_size])
        images = images.to(device, memory_format=torch.channels_last)
        logits = model(images)
        correct += int((logits.argmax(1).cpu() == split.labels[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / max(len(split), 1)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, dataset: Dataset, device: torch.device, images: int = 4096,
                          batch_size: int = 256, seed: int = 0) -> None:
    """Re-estimate every BatchNorm's running mean and variance on `images` training images.

    After channels are removed, the layers downstream see other statistics than the ones they
    were trained with, and their BatchNorm normalizes with stale ones. As the BN calibration of
    slimmable networks (Yu and Huang, "Universally Slimmable Networks and Improved Training
    Techniques", ICCV 2019): a forward pass in training mode with a cumulative average; no weight moves.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [(m, m.momentum) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches below
    was_training = model.training
    model.train()
    order = torch.randperm(len(dataset.train), generator=torch.Generator().manual_seed(seed))[:images]
    for start in range(0, len(order), batch_size):
        batch = dataset.normalize(dataset.train.images[order[start : start + batch_size]])
        model(batch.to(device, memory_format=torch.channels_last))
    for m, momentum in saved:
        m.momentum = momentum
    model.train(was_training)
