from __future__ import annotations

import pytest
import torch

from hwkd.data import load_dataset
from hwkd.distillation.brief import TrainingDiverged, brief_distill, brief_indices, brief_subset
from hwkd.distillation.config import BriefConfig
from hwkd.errors import HwkdError
from hwkd.spaces import load_space
from hwkd.training import evaluate, pick_device

ARCH = "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|"


@pytest.fixture(scope="module")
def data():
    return load_dataset("embedded")


def student(data):
    torch.manual_seed(0)
    return load_space("nb201-small").build(ARCH, data.num_classes, data.input_shape)


@pytest.mark.slow
def test_brief_training_learns_far_above_chance(data) -> None:
    net = student(data)
    before = evaluate(net, data, data.val, torch.device("cpu"))
    result = brief_distill(net, data, None, BriefConfig(steps=60), torch.device("cpu"))
    assert result.steps == 60 and result.images_per_s > 0
    assert result.val_accuracy > 0.6 > before + 0.3
    assert result.val_accuracy == evaluate(net, data, data.val, torch.device("cpu"))


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["dkd", "dist"])
def test_every_loss_trains_a_student_from_cached_logits(data, loss: str) -> None:
    # a teacher that is sure of every training label: its logits alone carry the classes
    logits = 6.0 * torch.nn.functional.one_hot(data.train.labels, data.num_classes).float()
    result = brief_distill(student(data), data, logits, BriefConfig(steps=60, loss=loss, alpha=1.0),
                           torch.device("cpu"))
    assert result.val_accuracy > 0.4  # far above chance (0.1) from the distillation term alone (alpha = 1)


def test_same_seed_same_result(data) -> None:
    a = brief_distill(student(data), data, None, BriefConfig(steps=10), torch.device("cpu"))
    b = brief_distill(student(data), data, None, BriefConfig(steps=10), torch.device("cpu"))
    assert a.val_accuracy == b.val_accuracy and a.final_loss == b.final_loss


def test_every_trial_shares_one_pass_of_training_images(data) -> None:
    config = BriefConfig(steps=40, batch_size=64, seed=3)
    shared = brief_subset(data, config)
    assert len(shared.train) == 40 * 64 and shared.val is data.val and shared.mean == data.mean
    index = brief_indices(len(data.train), config)
    assert index is not None and torch.equal(shared.train.labels, data.train.labels[index])
    assert len(set(index.tolist())) == 40 * 64  # no image twice
    assert torch.bincount(shared.train.labels, minlength=10).min() > 0.6 * 256  # every class, about evenly
    assert torch.equal(brief_indices(len(data.train), config), index)  # the same for every trial
    assert not torch.equal(brief_indices(len(data.train), BriefConfig(steps=40, seed=4)), index)
    assert brief_subset(data, BriefConfig(steps=200)) is data  # 12,800 images > 8,100: all of them


def test_nan_loss_stops_with_the_step(data) -> None:
    teacher_logits = torch.full((len(data.train), 10), float("nan"))
    with pytest.raises(TrainingDiverged, match="the loss became nan at step 1 of 5"):
        brief_distill(student(data), data, teacher_logits, BriefConfig(steps=5), torch.device("cpu"))


def test_train_device_choice() -> None:
    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert pick_device("auto").type == "cpu"
        with pytest.raises(HwkdError, match="no CUDA device"):
            pick_device("cuda")
