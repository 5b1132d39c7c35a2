"""Training-time augmentation of uint8 image batches, shared by the teacher's and the students' training."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augment(images: torch.Tensor, generator: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random shifts of up to `pad` pixels (zero fill) and horizontal flips; uint8 (N, C, H, W)."""
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    shifted = _shift(padded, dy, dx, h, w)
    flip = torch.rand(n, generator=generator) < 0.5
    shifted[flip] = shifted[flip].flip(3)
    return shifted


def _shift(padded: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, h: int, w: int) -> torch.Tensor:
    out = torch.empty((padded.shape[0], padded.shape[1], h, w), dtype=padded.dtype)
    for i in range(padded.shape[0]):
        out[i] = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
    return out
