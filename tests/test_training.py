"""What every training loop shares: the device choice, evaluation, and BatchNorm recalibration."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hwkd.errors import HwkdError
from hwkd.training import evaluate, pick_device, recalibrate_batchnorm


def test_pick_device_refuses_what_is_not_there() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(HwkdError, match="--train-device 'tpu': choose auto, cpu or cuda"):
        pick_device("tpu")


def test_recalibration_gives_batchnorm_the_statistics_of_the_data(embedded) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 4, 3, padding=1), nn.BatchNorm2d(4))
    model.eval()
    bn = model[4]
    bn.running_mean.fill_(5.0)  # stale statistics, as after pruning the layers before it
    bn.running_var.fill_(9.0)
    recalibrate_batchnorm(model, embedded, torch.device("cpu"), images=512, batch_size=128)
    assert not model.training and bn.momentum == 0.1  # the model and its settings are as they were
    order = torch.randperm(len(embedded.train), generator=torch.Generator().manual_seed(0))[:512]
    with torch.no_grad():
        model.eval()
        before_bn = model[:4](embedded.normalize(embedded.train.images[order]))
    torch.testing.assert_close(bn.running_mean, before_bn.mean((0, 2, 3)), rtol=1e-3, atol=1e-4)
    assert torch.all((bn.running_var / before_bn.var((0, 2, 3)) - 1).abs() < 0.05)  # per-batch unbiased var


def test_evaluate_is_top1_accuracy(embedded) -> None:
    class Constant(nn.Module):  # always class 0: accuracy is the share of class 0 in the split
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(len(x), 10).index_fill_(1, torch.tensor([0]), 1.0)

    share = float((embedded.val.labels == 0).float().mean())
    assert evaluate(Constant(), embedded, embedded.val, torch.device("cpu")) == pytest.approx(share)
