"""Small torch building blocks shared by the search spaces."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBN(nn.Sequential):
    """[ReLU] -> kxk conv (no bias) -> BN [-> ReLU]; padding keeps the size at stride 1."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        relu_before: bool = False,
        relu_after: bool = False,
    ) -> None:
        layers: list[nn.Module] = [nn.ReLU()] if relu_before else []
        layers += [
            nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        if relu_after:
            layers.append(nn.ReLU())
        super().__init__(*layers)


class AvgPool(nn.Module):
    """Average pooling written as a call to `F.avg_pool2d`.

    A functional call, not `nn.AvgPool2d`: TVM 0.27's FX importer drops the module's
    `count_include_pad` and so would compile a different function.
    """

    def __init__(self, kernel: int, stride: int, padding: int, count_include_pad: bool,
                 ceil_mode: bool = False) -> None:
        super().__init__()
        self.kernel, self.stride, self.padding = kernel, stride, padding
        self.count_include_pad, self.ceil_mode = count_include_pad, ceil_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.kernel, self.stride, self.padding, self.ceil_mode, self.count_include_pad)


class ChannelShuffle(nn.Module):
    """Interleave the channels of `groups` groups (ShuffleNet), so grouped convs mix them."""

    # Channel pruning cannot remove channels across a permutation and stay exact (hwkd.pruning
    # leaves the layers on both sides of it alone).
    permutes_channels = True

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, H, W)
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ClassifierHead(nn.Module):
    """Global average pool -> linear; input (N, C, H, W), output (N, num_classes)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))
