"""The fixed teacher: a user's file (torch.export `.pt2`, TorchScript, ONNX) or hwkd's default.

A teacher takes what students take: float32 images (N, C, H, W) standardized with the dataset's
training mean and std, and returns logits (N, classes). Without `--teacher`, hwkd trains a
default teacher (a residual CNN sized to the data) for the dataset once and caches it under the
cache folder (`$HWKD_CACHE_DIR`, default `~/.cache/hwkd`); it is loaded back with
`weights_only=True`.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwkd.cache import cache_dir, sha256_file
from hwkd.data.datasets import Dataset
from hwkd.errors import DataError, error_line

log = logging.getLogger(__name__)

TEACHER_SUFFIXES = {".pt2": "torch.export", ".pt": "TorchScript", ".ts": "TorchScript", ".onnx": "ONNX"}
# Bump when the default teacher's network or training changes: cached teachers are keyed by it.
DEFAULT_TEACHER_VERSION = 3
MAX_TEACHER_EPOCHS = 30


@dataclass(frozen=True)
class TeacherRecipe:
    """The default teacher's network widths and the training images it sees (epochs = images /
    training split, at most MAX_TEACHER_EPOCHS)."""

    widths: tuple[int, ...]
    images: int


# The default teacher grows with the data (measured on two cores, notes on issue 4). On the
# 8,100-image embedded set, doubling the widths bought nothing, while 25 epochs of the narrow
# network reached 90.4% validation accuracy in 165 s. On Fashion-MNIST's 54,000 images, 8 epochs
# of the wide network reach 93.1% test accuracy in 19 minutes (narrow: 92.6% in 6 minutes, 91.2%
# at 4 epochs); 4x the MACs of the narrow one, it is a teacher well above the students it
# teaches, whose outputs the search caches.
SMALL_DATA_RECIPE = TeacherRecipe(widths=(32, 64, 128), images=200_000)
LARGE_DATA_RECIPE = TeacherRecipe(widths=(64, 128, 256), images=432_000)
LARGE_DATA_FROM_IMAGES = 20_000  # training-split size from which the large recipe applies


def default_recipe(train_images: int) -> TeacherRecipe:
    return LARGE_DATA_RECIPE if train_images >= LARGE_DATA_FROM_IMAGES else SMALL_DATA_RECIPE


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


def load_teacher_file(path: str | Path, dataset: Dataset) -> Teacher:
    file = Path(path)
    if not file.is_file():
        raise DataError(f"--teacher {path}: no such file")
    kind = TEACHER_SUFFIXES.get(file.suffix)
    if kind is None:
        raise DataError(f"--teacher {path}: unknown format; use {', '.join(f'{k} ({v})' for k, v in TEACHER_SUFFIXES.items())}")
    try:
        forward, batch, module = _OPENERS[kind](file)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - each format fails its own way
        raise DataError(f"--teacher {path}: cannot be loaded as {kind} ({error_line(exc)})") from None
    teacher = Teacher(file.name, kind, str(file), sha256_file(file), forward, batch, module)
    check_teacher(teacher, dataset)
    return teacher


def load_run_teacher(file: Path, kind: str, dataset: Dataset) -> Teacher:
    """The copy of its teacher a run folder keeps (`kind` as run.json records it)."""
    if kind != "default":
        return load_teacher_file(file, dataset)
    if not file.is_file():
        raise DataError(f"the run's teacher {file} is missing; the run folder is incomplete")
    try:
        model = load_default_teacher(file, dataset)
    except Exception as exc:  # noqa: BLE001 - a corrupt copy
        raise DataError(f"the run's teacher {file} is unreadable ({error_line(exc)})") from None
    teacher = _wrap_default(model, file)
    check_teacher(teacher, dataset)
    return teacher


def check_teacher(teacher: Teacher, dataset: Dataset) -> None:
    """One-line error unless the teacher maps two validation images to (2, classes) logits."""
    sample = dataset.normalize(dataset.val.images[:2])
    try:
        out = teacher.logits(sample)
    except Exception as exc:  # noqa: BLE001 - a wrong input shape fails differently per runtime
        raise DataError(
            f"teacher {teacher.name} cannot run on {dataset.name} images of shape {tuple(sample.shape[1:])}: {error_line(exc)}"
        ) from None
    if out.ndim != 2 or out.shape[1] != dataset.num_classes:
        raise DataError(
            f"teacher {teacher.name} outputs shape {tuple(out.shape)} for 2 images; dataset {dataset.name} "
            f"has {dataset.num_classes} classes, so (2, {dataset.num_classes}) is expected"
        )


_Opened = tuple[Callable[[torch.Tensor], torch.Tensor], int, "nn.Module | None"]


def _open_export(file: Path) -> _Opened:
    # torch.export logs a whole traceback as a warning before it raises; the one-line error says it all
    export_log = logging.getLogger("torch.export")
    level = export_log.level
    export_log.setLevel(logging.ERROR)
    try:
        program = torch.export.load(str(file))
    finally:
        export_log.setLevel(level)
    module = program.module()
    batch = _static_batch([n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"][-1:])
    return _torch_forward(module), batch, module


def _open_torchscript(file: Path) -> _Opened:
    module = torch.jit.load(str(file), map_location="cpu").eval()
    return _torch_forward(module), 256, None  # a ScriptModule's layers cannot be tapped with fx


def _open_onnx(file: Path) -> _Opened:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = len(os.sched_getaffinity(0))
    session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    batch = inp.shape[0] if isinstance(inp.shape[0], int) else 256

    def forward(images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(session.run(None, {inp.name: images.numpy().astype(np.float32)})[0]))

    return forward, batch, None


_OPENERS: dict[str, Callable[[Path], _Opened]] = {
    "torch.export": _open_export,
    "TorchScript": _open_torchscript,
    "ONNX": _open_onnx,
}


def _torch_forward(module: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(images: torch.Tensor) -> torch.Tensor:
        out = module(images)
        return out[0] if isinstance(out, (tuple, list)) else out

    return forward


def _static_batch(values: list[Any]) -> int:
    for value in values:
        shape = getattr(value, "shape", None)
        if shape is not None and len(shape) and isinstance(shape[0], int):
            return int(shape[0])
    return 256


# ---- the default teacher -----------------------------------------------------------------------------


class _ResidualStage(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (
            nn.Identity() if c_in == c_out and stride == 1
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class DefaultTeacher(nn.Module):
    """A small residual CNN: a stem, then one residual stage per width, each after the first halving
    the resolution. On 28x28 images, widths (32, 64, 128) have 0.31 M parameters and 37 MMACs;
    (64, 128, 256) have 1.2 M and 148 MMACs."""

    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, ...] = (32, 64, 128)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU())
        stages, c_in = [], widths[0]
        for i, width in enumerate(widths):
            stages.append(_ResidualStage(c_in, width, 1 if i == 0 else 2))
            c_in = width
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, classes)
        return self.fc(self.stages(self.stem(x)).mean((2, 3)))


def default_teacher_path(dataset: Dataset) -> Path:
    return cache_dir() / "teachers" / f"default-v{DEFAULT_TEACHER_VERSION}-{dataset.name}-{dataset.fingerprint()}.pt"


def default_teacher(dataset: Dataset, device: torch.device, progress: Callable[[str], None] | None = None,
                    recipe: TeacherRecipe | None = None, show_bar: bool = False) -> Teacher:
    """hwkd's teacher for `dataset`: trained once by `recipe` (by default the one for the data's
    size), then cached; a cached teacher is used whatever recipe made it. Training reports each
    epoch with the time left to `progress`, and with `show_bar` shows a bar over all its steps."""
    from hwkd.file_lock import file_lock

    recipe = recipe or default_recipe(len(dataset.train))
    path = default_teacher_path(dataset)
    # processes that need the same teacher at once (workers, parallel runs): one trains, the others load it
    with file_lock(path.with_suffix(".lock"), f"waiting for another hwkd process training the teacher {path}"):
        return _cached_or_trained(dataset, device, path, recipe, progress, show_bar)


def _cached_or_trained(dataset: Dataset, device: torch.device, path: Path, recipe: TeacherRecipe,
                       progress: Callable[[str], None] | None, show_bar: bool) -> Teacher:
    if path.is_file():
        try:
            model = load_default_teacher(path, dataset)
        except Exception as exc:  # noqa: BLE001 - a corrupt cache file is retrained, not trusted
            log.warning("the cached default teacher %s is unreadable (%s); training it again", path, error_line(exc))
        else:
            log.info("default teacher: cached at %s", path)
            return _wrap_default(model, path)
    epochs = max(1, min(MAX_TEACHER_EPOCHS, math.ceil(recipe.images / max(len(dataset.train), 1))))
    with torch.random.fork_rng():  # the same initial weights on every machine
        torch.manual_seed(0)
        model = DefaultTeacher(dataset.input_shape[1], dataset.num_classes, recipe.widths)
    log.info("training the default teacher for %s once (widths %s, %d epochs of %d images); it is cached at %s",
             dataset.name, "-".join(map(str, recipe.widths)), epochs, len(dataset.train), path)
    accuracy = train_default_teacher(model, dataset, epochs, device, progress, show_bar=show_bar)
    log.info("default teacher: validation accuracy %.2f%%", 100 * accuracy)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save({"state_dict": model.state_dict(), "widths": list(recipe.widths), "val_accuracy": accuracy,
                "epochs": epochs}, partial)
    os.replace(partial, path)  # atomic: an interrupted save never leaves a half-written teacher
    return _wrap_default(model.cpu(), path)


def load_default_teacher(path: Path, dataset: Dataset) -> DefaultTeacher:
    """A saved default teacher (weights only), built with the widths it was trained with."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    widths = tuple(int(w) for w in saved.get("widths", SMALL_DATA_RECIPE.widths))
    model = DefaultTeacher(dataset.input_shape[1], dataset.num_classes, widths)
    model.load_state_dict(saved["state_dict"])
    return model


def _wrap_default(model: nn.Module, path: Path) -> Teacher:
    model = model.cpu().eval()
    return Teacher("default", "default", str(path), sha256_file(path), _torch_forward(model), module=model)


def train_default_teacher(model: nn.Module, dataset: Dataset, epochs: int, device: torch.device,
                          progress: Callable[[str], None] | None = None, batch_size: int = 128,
                          show_bar: bool = False) -> float:
    from hwkd.distillation.brief import evaluate
    from hwkd.progress import progress_bar
    from hwkd.threads import fit_threads

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model.to(device=device, memory_format=torch.channels_last).train()  # type: ignore[call-overload]  # stubs omit memory_format
    steps_per_epoch = max(1, len(dataset.train) // batch_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.1, total_steps=epochs * steps_per_epoch, pct_start=0.2)
    start = time.perf_counter()
    with progress_bar(epochs * steps_per_epoch, "default teacher", "step", show_bar) as bar:
        for epoch in range(epochs):
            if device.type == "cpu":
                fit_threads()  # the cores other processes leave free, checked each epoch
            order = torch.randperm(len(dataset.train), generator=generator)
            for step in range(steps_per_epoch):
                index = order[step * batch_size : (step + 1) * batch_size]
                images = augment(dataset.train.images[index], generator)
                x = dataset.normalize(images).to(device, memory_format=torch.channels_last)
                loss = F.cross_entropy(model(x), dataset.train.labels[index].to(device), label_smoothing=0.1)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                bar.update(1)
            bar.set_postfix_str(f"epoch {epoch + 1}/{epochs}, loss {float(loss.detach()):.3f}")
            if progress is not None:
                elapsed = time.perf_counter() - start
                left = elapsed / (epoch + 1) * (epochs - epoch - 1)
                progress(f"default teacher: epoch {epoch + 1}/{epochs}, loss {float(loss.detach()):.3f}, "
                         f"{elapsed:.0f} s, {_duration(left)} left")
    return evaluate(model, dataset, dataset.val, device)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


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


def copy_into(teacher: Teacher, folder: Path) -> Path:
    """Keep a copy of the teacher file in the run folder so the run stands on its own."""
    target = folder / ("teacher" + (Path(teacher.path).suffix or ".pt"))
    if not target.exists():
        shutil.copyfile(teacher.path, target)
    return target
