"""Full distillation of a chosen student: the teacher runs on every augmented batch.

Loss: `alpha * distillation term + (1 - alpha) * CE`, the term chosen by `--loss` (logit
standardization by default; Hinton KD, decoupled KD or DIST: `hwkd.distillation.losses`), its weight
ramped up from 0 over the first `--loss-warmup-epochs` (2 by default), plus, as an option,
feature or attention transfer between paired layers (`hwkd.distillation.features`). SGD with Nesterov momentum, linear
warm-up then cosine decay, set per step from the step number (so a resumed run continues the
same schedule). A checkpoint is written atomically after every epoch; a run started again with
the same settings continues from the last one.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwkd.data.augment import augment
from hwkd.data.datasets import Dataset
from hwkd.distillation.brief import TrainingDiverged
from hwkd.distillation.config import FULL_LEGACY, FullConfig, setting_changes
from hwkd.distillation.features import Transfer, feature_points, pair_layers, tap, trace
from hwkd.distillation.losses import distill_loss
from hwkd.errors import HwkdError, error_line
from hwkd.progress import progress_bar
from hwkd.threads import fit_threads
from hwkd.training import evaluate

log = logging.getLogger(__name__)

ATTENTION_SCALE = 1000.0  # attention maps are unit vectors: AT scales their loss by 10^3


@dataclass(frozen=True)
class FullResult:
    test_accuracy: float
    val_accuracy: float
    epochs: int
    steps: int
    seconds: float  # training time of this invocation plus the earlier ones it resumed
    images_per_s: float
    resumed_from_epoch: int
    layer_pairs: tuple[tuple[str, str], ...]  # (teacher node, student node)


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * peak * (1 + math.cos(math.pi * min(1.0, progress)))


def term_ramp_steps(loss_warmup_epochs: float, steps_per_epoch: int, total: int) -> int:
    """Steps of the distillation term's ramp: at most half the run, so a run shorter than twice the
    ramp (`--epochs 1`) still trains half its steps at full weight (none of the measured runs, 4, 5
    and 30 epochs against a 2-epoch ramp, is cut)."""
    return min(int(loss_warmup_epochs * steps_per_epoch), total // 2)


def term_ramp(step: int, warmup: int) -> float:
    """The distillation term's share of its weight at `step`: linear up to 1 over `warmup` steps."""
    return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


def full_distill(
    student: nn.Module,
    teacher_forward: Callable[[torch.Tensor], torch.Tensor],
    teacher_module: nn.Module | None,
    dataset: Dataset,
    config: FullConfig,
    checkpoint: Path,
    device: torch.device,
    identity: dict[str, Any],
    progress: bool | None = None,
) -> FullResult:
    """Train `student` in place; `identity` (arch, teacher hash, ...) must match to resume."""
    torch.manual_seed(config.seed)
    # channels-last: much faster convs on CPU (oneDNN); torch's stubs omit Module.to's memory_format
    student.to(device=device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    pairs: list = []
    student_tap: nn.Module = student
    teacher_tap: nn.Module | None = None
    if config.transfer != "none":
        if teacher_module is None:
            raise HwkdError(f"--transfer {config.transfer} needs the teacher's layers: give the search a "
                            "torch.export (.pt2) teacher or use hwkd's default; TorchScript and ONNX teachers "
                            "support --transfer none")
        t_graph = trace(teacher_module).to(device)
        s_graph = trace(student)
        pairs = pair_layers(feature_points(t_graph.cpu(), dataset.input_shape),
                            feature_points(s_graph, dataset.input_shape),
                            list(config.teacher_layers), list(config.student_layers))
        if not pairs:
            raise HwkdError("no layers to pair for feature transfer; name them with --teacher-layers/--student-layers")
        teacher_tap = tap(t_graph, [t.name for t, _ in pairs]).to(device).eval()
        student_tap = tap(s_graph, [s.name for _, s in pairs]).to(device)
    elif teacher_module is not None:
        teacher_tap = teacher_module.to(device=device, memory_format=torch.channels_last).eval()  # type: ignore[call-overload]
    transfer = Transfer(config.transfer, pairs).to(device)
    params = list(student.parameters()) + list(transfer.parameters())
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)

    steps_per_epoch = max(1, len(dataset.train) // config.batch_size)
    total = config.epochs * steps_per_epoch
    warmup = min(int(config.warmup_epochs * steps_per_epoch), total // 5)  # short runs still decay
    loss_warmup = term_ramp_steps(config.loss_warmup_epochs, steps_per_epoch, total)
    generator = torch.Generator().manual_seed(config.seed)
    state_key = {**identity, "config": asdict(config)}
    start_epoch, earlier_seconds = _resume(checkpoint, state_key, student, transfer, optimizer, generator)
    if start_epoch:
        log.info("resuming from the checkpoint after epoch %d of %d", start_epoch, config.epochs)
    pad = 2 if dataset.input_shape[-1] <= 32 else 4
    started = time.perf_counter()
    show = sys.stderr.isatty() if progress is None else progress
    loss_value = float("nan")
    for epoch in range(start_epoch, config.epochs):
        if device.type == "cpu":
            fit_threads()  # the cores other processes leave free, checked each epoch
        student_tap.train()
        transfer.train()
        order = torch.randperm(len(dataset.train), generator=generator)
        with progress_bar(steps_per_epoch, f"epoch {epoch + 1}/{config.epochs}", "step", show, leave=False) as bar:
            for i in range(steps_per_epoch):
                step = epoch * steps_per_epoch + i
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, total, warmup, config.lr)
                index = order[i * config.batch_size : (i + 1) * config.batch_size]
                images = dataset.train.images[index]
                if config.augment:
                    images = augment(images, generator, pad=pad)
                x = dataset.normalize(images).to(device, memory_format=torch.channels_last)
                y = dataset.train.labels[index].to(device)
                with torch.no_grad():
                    if teacher_tap is not None and pairs:
                        t_logits, *t_feats = teacher_tap(x)
                    elif teacher_tap is not None:
                        t_logits, t_feats = teacher_tap(x), []
                    else:
                        t_logits, t_feats = teacher_forward(x.cpu()).to(device), []
                if pairs:
                    s_logits, *s_feats = student_tap(x)
                else:
                    s_logits, s_feats = student_tap(x), []
                loss = distill_loss(config.loss, s_logits, t_logits, y, config.temperature, config.alpha,
                                    term_ramp(step, loss_warmup))
                if pairs:
                    scale = ATTENTION_SCALE if config.transfer == "attention" else 1.0
                    loss = loss + config.transfer_weight * scale * transfer(t_feats, s_feats)
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    raise TrainingDiverged(f"the loss became {loss_value} at epoch {epoch + 1}, step {i + 1}; "
                                           f"the last checkpoint ({checkpoint}) is kept: try a lower --lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.update(1)
        val = evaluate(student, dataset, dataset.val, device)
        seconds = earlier_seconds + time.perf_counter() - started
        _save(checkpoint, state_key, epoch + 1, seconds, student, transfer, optimizer, generator)
        log.info("epoch %d/%d: loss %.4f, val accuracy %.2f%%, %.0f s", epoch + 1, config.epochs, loss_value,
                 100 * val, seconds)
    seconds = earlier_seconds + time.perf_counter() - started
    trained_steps = (config.epochs - start_epoch) * steps_per_epoch
    return FullResult(
        test_accuracy=evaluate(student, dataset, dataset.test, device),
        val_accuracy=evaluate(student, dataset, dataset.val, device),
        epochs=config.epochs,
        steps=total,
        seconds=seconds,
        images_per_s=trained_steps * config.batch_size / max(time.perf_counter() - started, 1e-9),
        resumed_from_epoch=start_epoch,
        layer_pairs=tuple((t.name, s.name) for t, s in pairs),
    )


def _save(path: Path, key: dict[str, Any], epoch: int, seconds: float, student: nn.Module, transfer: nn.Module,
          optimizer: torch.optim.Optimizer, generator: torch.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save({"key": key, "epoch": epoch, "seconds": seconds, "student": student.state_dict(),
                "transfer": transfer.state_dict(), "optimizer": optimizer.state_dict(),
                "generator": generator.get_state()}, partial)
    os.replace(partial, path)  # atomic: a kill during the save keeps the previous checkpoint


def _resume(path: Path, key: dict[str, Any], student: nn.Module, transfer: nn.Module,
            optimizer: torch.optim.Optimizer, generator: torch.Generator) -> tuple[int, float]:
    if not path.is_file():
        return 0, 0.0
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        saved_key = saved["key"]
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
        raise HwkdError(f"checkpoint {path} is unreadable ({error_line(exc, first=True, limit=120)}); "
                        "delete it or pass --restart to train from the beginning") from None
    # settings added since: a checkpoint without them was made with their old behaviour
    if isinstance(saved_key, dict) and isinstance(saved_key.get("config"), dict):
        saved_key = {**saved_key, "config": {**FULL_LEGACY, **saved_key["config"]}}
    if saved_key != key:
        changed = "; ".join(setting_changes(saved_key, key)) if isinstance(saved_key, dict) else "another format"
        raise HwkdError(f"checkpoint {path} was made with other settings ({changed}); "
                        "pass the same settings to resume, or --restart to train from the beginning")
    student.load_state_dict(saved["student"])
    transfer.load_state_dict(saved["transfer"])
    optimizer.load_state_dict(saved["optimizer"])
    generator.set_state(saved["generator"])
    return int(saved["epoch"]), float(saved["seconds"])

