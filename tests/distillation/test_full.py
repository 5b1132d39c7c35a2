"""Full distillation: it learns, resumes exactly after an interruption, and refuses bad checkpoints."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

import hwkd.distillation.full as full_module
from hwkd.data.datasets import Split
from hwkd.distillation.brief import TrainingDiverged
from hwkd.distillation.config import FullConfig
from hwkd.distillation.full import full_distill, lr_at, term_ramp, term_ramp_steps
from hwkd.errors import HwkdError
from hwkd.spaces import load_space
from hwkd.teachers import load_teacher_file

ARCH = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
CONFIG = FullConfig(epochs=4, batch_size=64)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def small(embedded):
    """The embedded data with 1,024 training images: a full epoch in a few seconds."""
    return replace(embedded, train=Split(embedded.train.images[:1024], embedded.train.labels[:1024]))


@pytest.fixture(scope="module")
def teacher(teacher_file, small):
    return load_teacher_file(teacher_file, small)


def student() -> torch.nn.Module:
    torch.manual_seed(0)
    return load_space("nb201-small").build(ARCH, 10, (1, 1, 28, 28))


def run(small, teacher, path: Path, config: FullConfig = CONFIG, model: torch.nn.Module | None = None):
    model = model if model is not None else student()
    result = full_distill(model, teacher.forward, teacher.module, small, config, path, CPU, {"arch": ARCH},
                          progress=False)
    return model, result


@pytest.mark.slow
def test_full_distillation_learns_and_checkpoints(small, teacher, tmp_path: Path) -> None:
    model, result = run(small, teacher, tmp_path / "c.pt")
    assert result.test_accuracy > 0.6 and result.epochs == 4 and result.steps == 64  # 1024 // 64 * 4
    saved = torch.load(tmp_path / "c.pt", weights_only=True)
    assert saved["epoch"] == 4
    for key, value in model.state_dict().items():
        torch.testing.assert_close(saved["student"][key], value)


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_weights(small, teacher, tmp_path: Path, monkeypatch) -> None:
    straight, _ = run(small, teacher, tmp_path / "straight.pt")
    real_save = full_module._save

    def save_then_stop(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt  # Ctrl-C right after the first epoch's checkpoint

    monkeypatch.setattr(full_module, "_save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run(small, teacher, tmp_path / "cut.pt")
    monkeypatch.setattr(full_module, "_save", real_save)
    resumed, result = run(small, teacher, tmp_path / "cut.pt")
    assert result.resumed_from_epoch == 1
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value)


def test_bad_checkpoints_are_refused_with_the_way_out(small, teacher, tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(HwkdError, match=r"checkpoint .*c.pt is unreadable .*--restart"):
        run(small, teacher, path)
    run(small, teacher, path := tmp_path / "d.pt", replace(CONFIG, epochs=1))
    with pytest.raises(HwkdError, match=r"made with other settings \(config.epochs: 1 -> 4\); pass the same"):
        run(small, teacher, path)


@pytest.mark.slow
def test_feature_and_attention_transfer_train_with_the_default_teacher(small, tmp_path: Path) -> None:
    from hwkd.teachers import DefaultTeacher

    torch.manual_seed(0)
    module = DefaultTeacher(1, 10).eval()  # untrained: labels carry the learning (alpha 0), layers are tapped
    for kind in ("feature", "attention"):
        model = student()
        result = full_distill(model, module, module, small, replace(CONFIG, epochs=2, alpha=0.0, transfer=kind),
                              tmp_path / f"{kind}.pt", CPU, {"arch": ARCH}, progress=False)
        assert len(result.layer_pairs) == 3 and result.test_accuracy > 0.3
        saved = torch.load(tmp_path / f"{kind}.pt", weights_only=True)
        assert bool(saved["transfer"]) == (kind == "feature")  # adapters only for feature transfer


def test_a_torchscript_teacher_cannot_give_features(small, teacher, tmp_path: Path) -> None:
    with pytest.raises(HwkdError, match="--transfer feature needs the teacher's layers"):
        run(small, teacher, tmp_path / "c.pt", replace(CONFIG, transfer="feature"))


def test_a_nan_loss_stops_and_keeps_the_last_checkpoint(small, tmp_path: Path) -> None:
    def nan_teacher(x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 10), float("nan"))

    with pytest.raises(TrainingDiverged, match="the loss became nan at epoch 1, step 1"):
        full_distill(student(), nan_teacher, None, small, CONFIG, tmp_path / "c.pt", CPU, {"arch": ARCH},
                     progress=False)


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    values = [lr_at(s, 100, 10, 0.1) for s in range(100)]
    assert values[0] == pytest.approx(0.01) and values[9] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(values[10:], values[11:])) and values[-1] < 1e-4


def test_the_distillation_term_ramps_up_over_its_warm_up() -> None:
    assert [term_ramp(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert term_ramp(0, 0) == 1.0  # no warm-up: full weight from the first step
    assert term_ramp_steps(2.0, 16, 4 * 16) == 32  # 2 epochs of 4 (the tests' runs)
    assert term_ramp_steps(2.0, 421, 30 * 421) == 842  # hwkd distill's 30 epochs on full Fashion-MNIST
    assert term_ramp_steps(2.0, 421, 421) == 210  # --epochs 1: half the run, not a run that never gets there
    assert term_ramp_steps(0.0, 421, 421) == 0
    with pytest.raises(HwkdError, match=r"--loss-warmup-epochs -1.0: must be a number >= 0"):
        FullConfig(loss_warmup_epochs=-1.0).check()


def test_a_checkpoint_from_before_the_loss_warm_up_resumes(small, teacher, tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    old = replace(CONFIG, epochs=1, loss="kd", loss_warmup_epochs=0.0)  # what hwkd trained before the options
    run(small, teacher, path, old)
    saved = torch.load(path, weights_only=True)
    del saved["key"]["config"]["loss_warmup_epochs"]  # as hwkd wrote it before the option
    del saved["key"]["config"]["loss"]
    torch.save(saved, path)
    _, result = run(small, teacher, path, old)
    assert result.resumed_from_epoch == 1
    # today's defaults are another training: the refusal names what to pass to resume it
    with pytest.raises(HwkdError, match=r"other settings \(config.loss: 'kd' -> 'ls'; "
                       r"config.loss_warmup_epochs: 0.0 -> 2.0\); pass the same settings"):
        run(small, teacher, path, replace(CONFIG, epochs=1))
