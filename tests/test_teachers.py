from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hwkd.data import load_dataset
from hwkd.data.augment import augment
from hwkd.errors import DataError
from hwkd.teachers import (
    TEACHER_SUFFIXES,
    DefaultTeacher,
    TeacherRecipe,
    default_recipe,
    default_teacher,
    default_teacher_path,
    load_teacher_file,
)


@pytest.fixture(scope="module")
def data():
    return load_dataset("embedded")


def small_teacher(classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(0)
    return DefaultTeacher(1, classes).eval()


def _save(model: torch.nn.Module, kind: str, path: Path) -> None:
    x = torch.zeros(2, 1, 28, 28)
    if kind == "torch.export":
        torch.export.save(torch.export.export(model, (x,)), str(path))
    elif kind == "TorchScript":
        torch.jit.save(torch.jit.trace(model, x), str(path))
    else:
        torch.onnx.export(model, (x,), str(path), input_names=["x"], dynamic_axes={"x": {0: "n"}}, dynamo=False)


@pytest.mark.parametrize("suffix, kind", sorted(TEACHER_SUFFIXES.items()))
def test_every_teacher_format_gives_the_same_logits(tmp_path: Path, data, suffix: str, kind: str) -> None:
    model = small_teacher()
    path = tmp_path / f"t{suffix}"
    _save(model, kind, path)
    images = data.normalize(data.val.images[:50])
    teacher = load_teacher_file(path, data)
    assert teacher.kind == kind and len(teacher.sha256) == 64
    torch.testing.assert_close(teacher.logits(images), model(images), rtol=1e-4, atol=1e-4)


def test_teacher_with_the_wrong_number_of_classes(tmp_path: Path, data) -> None:
    path = tmp_path / "seven.pt"
    torch.jit.save(torch.jit.trace(small_teacher(7), torch.zeros(2, 1, 28, 28)), str(path))
    with pytest.raises(DataError, match=r"outputs shape \(2, 7\).*has 10 classes"):
        load_teacher_file(path, data)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [("missing.pt", None, "no such file"), ("t.h5", b"x", "unknown format"), ("broken.onnx", b"not onnx", "cannot be loaded as ONNX")],
)
def test_bad_teacher_files(tmp_path: Path, data, name: str, content: bytes | None, message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_teacher_file(path, data)


@pytest.mark.slow
def test_default_teacher_trains_once_then_loads_from_the_cache(tmp_path: Path, monkeypatch, data) -> None:
    monkeypatch.setenv("HWKD_CACHE_DIR", str(tmp_path))
    lines: list[str] = []
    first = default_teacher(data, torch.device("cpu"), progress=lines.append, recipe=TeacherRecipe((32, 64, 128), 4000))
    assert lines and "epoch 1/1" in lines[-1] and lines[-1].endswith("0 s left")
    path = default_teacher_path(data)
    assert path.is_file() and first.kind == "default"
    accuracy = float((first.logits(data.normalize(data.val.images)).argmax(1) == data.val.labels).float().mean())
    assert accuracy > 0.6  # far above 10% chance after one epoch on the embedded data
    lines.clear()
    second = default_teacher(data, torch.device("cpu"), progress=lines.append)
    assert not lines and second.sha256 == first.sha256  # loaded, not trained
    # a corrupt cache file is trained again, not trusted
    path.write_bytes(b"garbage")
    third = default_teacher(data, torch.device("cpu"), progress=lines.append, recipe=TeacherRecipe((16, 32), 100))
    assert lines and third.sha256 != first.sha256
    # the cache keeps the widths it was trained with, whatever the recipe asked for now
    fourth = default_teacher(data, torch.device("cpu"))
    sample = data.normalize(data.val.images[:8])
    assert torch.equal(fourth.logits(sample), third.logits(sample))


def test_the_default_teacher_grows_with_the_data(data) -> None:
    narrow, wide = default_recipe(len(data.train)), default_recipe(54_000)  # embedded, Fashion-MNIST
    assert narrow.widths == (32, 64, 128) and wide.widths == (64, 128, 256)
    assert wide.images > narrow.images  # and sees more images


def test_augment_shifts_and_flips_without_changing_shape() -> None:
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).reshape(2, 1, 6, 6)
    out = augment(images, torch.Generator().manual_seed(0), pad=1)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert not torch.equal(out, images)


@pytest.mark.slow
def test_default_teacher_training_shows_a_bar_with_the_time_left(tmp_path: Path, monkeypatch, data, capsys) -> None:
    monkeypatch.setenv("HWKD_CACHE_DIR", str(tmp_path))
    lines: list[str] = []
    default_teacher(data, torch.device("cpu"), progress=lines.append, recipe=TeacherRecipe((8, 16), 2 * len(data.train)),
                    show_bar=True)
    err = capsys.readouterr().err
    steps = 2 * (len(data.train) // 128)
    assert "default teacher: 100%" in err and f"{steps}/{steps} [" in err  # elapsed<left, then the rate
    assert "step/s" in err and "epoch 2/2" in err
    assert lines[0].startswith("default teacher: epoch 1/2") and " left" in lines[0]


@pytest.mark.slow
def test_a_broken_torch_export_file_is_one_line_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "teacher.pt2"
    path.write_bytes(b"not a zip archive")
    # a process of its own: torch's loggers write to the real standard error, which pytest does not see
    done = subprocess.run([sys.executable, "-m", "hwkd.cli", "search", "--teacher", str(path), "--run-dir",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"hwkd search: error: --teacher {path}: cannot be loaded as torch.export (File is not a zip file)"]
