"""Settings of the distillation loops (no torch import, so the CLI can show defaults quickly)."""

from __future__ import annotations

from dataclasses import dataclass

from hwkd.errors import HwkdError


@dataclass(frozen=True)
class BriefConfig:
    """Brief distillation of a search trial."""

    steps: int = 200
    batch_size: int = 64
    lr: float = 0.1  # peak of the one-cycle schedule
    weight_decay: float = 5e-4
    temperature: float = 4.0
    alpha: float = 0.7  # weight of the distillation term; 1 - alpha goes to the labels
    loss: str = "kd"  # hwkd.distillation.losses.LOSSES
    seed: int = 0


@dataclass(frozen=True)
class FullConfig:
    """Full distillation of a chosen student (`hwkd distill`)."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1  # peak of the warm-up + cosine schedule
    warmup_epochs: float = 1.0
    weight_decay: float = 5e-4
    temperature: float = 4.0
    alpha: float = 0.9  # weight of the distillation term; 1 - alpha goes to the labels
    loss: str = "kd"  # hwkd.distillation.losses.LOSSES
    transfer: str = "none"  # "none", "feature" (FitNets hints) or "attention"
    transfer_weight: float = 1.0  # added to the loss times this weight; attention maps use 1000x (as in AT)
    teacher_layers: tuple[str, ...] = ()  # fx node names; empty: pair the deepest stages automatically
    student_layers: tuple[str, ...] = ()
    augment: bool = True
    seed: int = 0

    def check(self) -> None:
        """Every bad value at once, as one line."""
        problems = []
        if self.epochs < 1:
            problems.append(f"--epochs {self.epochs}: must be at least 1")
        if self.batch_size < 1:
            problems.append(f"--batch-size {self.batch_size}: must be at least 1")
        if not self.lr > 0:
            problems.append(f"--lr {self.lr}: must be > 0")
        if not self.temperature > 0:
            problems.append(f"--temperature {self.temperature}: must be > 0")
        if not 0 <= self.alpha <= 1:
            problems.append(f"--alpha {self.alpha}: must be in [0, 1]")
        from hwkd.distillation.losses import check_loss

        if (problem := check_loss(self.loss)) is not None:
            problems.append(problem)
        if self.transfer not in TRANSFERS:
            problems.append(f"--transfer {self.transfer!r}: choose {', '.join(TRANSFERS[:-1])} or {TRANSFERS[-1]}")
        if problems:
            raise HwkdError("; ".join(problems))


TRANSFERS = ("none", "feature", "attention")
# The names of hwkd.distillation.losses.LOSSES, here for the CLI's help without importing torch
# (tests/distillation/test_losses.py keeps the two equal).
LOSS_NAMES = ("kd", "dkd", "dist")

# Fine-tuning a pruned student (hwkd compress) starts from good weights: a few epochs at a tenth of
# the learning rate, no warm-up.
FINETUNE = FullConfig(epochs=5, lr=0.01, warmup_epochs=0.0)
