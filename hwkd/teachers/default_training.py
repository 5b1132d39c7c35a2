"""hwkd's default teacher for a dataset: trained once, cached under the cache folder
(`$HWKD_CACHE_DIR`, default `~/.cache/hwkd`) and loaded back with `weights_only=True`."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hwkd.cache import cache_dir
from hwkd.data.augment import augment
from hwkd.data.datasets import Dataset
from hwkd.errors import error_line
from hwkd.files import sha256_file
from hwkd.teachers.base import Teacher, torch_forward
from hwkd.teachers.default_net import (
    DEFAULT_TEACHER_VERSION,
    MAX_TEACHER_EPOCHS,
    SMALL_DATA_RECIPE,
    DefaultTeacher,
    TeacherRecipe,
    default_recipe,
)

log = logging.getLogger(__name__)


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
            return wrap_default(model, path)
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
    return wrap_default(model.cpu(), path)


def load_default_teacher(path: Path, dataset: Dataset) -> DefaultTeacher:
    """A saved default teacher (weights only), built with the widths it was trained with."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    widths = tuple(int(w) for w in saved.get("widths", SMALL_DATA_RECIPE.widths))
    model = DefaultTeacher(dataset.input_shape[1], dataset.num_classes, widths)
    model.load_state_dict(saved["state_dict"])
    return model


def wrap_default(model: nn.Module, path: Path) -> Teacher:
    model = model.cpu().eval()
    return Teacher("default", "default", str(path), sha256_file(path), torch_forward(model), module=model)


def train_default_teacher(model: nn.Module, dataset: Dataset, epochs: int, device: torch.device,
                          progress: Callable[[str], None] | None = None, batch_size: int = 128,
                          show_bar: bool = False) -> float:
    from hwkd.progress import progress_bar
    from hwkd.threads import fit_threads
    from hwkd.training import evaluate

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
