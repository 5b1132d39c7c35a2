"""Settings of the distillation loops (no torch import, so the CLI can show defaults quickly)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    # The search ranks a student by its brief validation accuracy plus this many points per decade
    # of its untrained SynFlow (hwkd.zero_cost): on full Fashion-MNIST that ranked the students of
    # two spaces closer to full distillation than accuracy alone (benchmarks/proxy_fidelity.py,
    # README "How far the search's score can be trusted"). 0: accuracy alone.
    synflow_points: float = 1.0

    def problems(self) -> list[str]:
        """Every bad value, each as the flag that set it (`hwkd search` reports them with its own)."""
        steps = [f"--steps {self.steps}: must be at least 1"] if self.steps < 1 else []
        if not 0 <= self.synflow_points < float("inf"):
            steps.append(f"--synflow-points {self.synflow_points}: must be a number >= 0 (0: rank by accuracy alone)")
        return steps + _training_problems(self.batch_size, self.lr, self.temperature, self.alpha, self.loss)

    def score(self, val_accuracy: float, log10_synflow: float) -> float:
        """What the search ranks a trained student by (a fraction, like the accuracy)."""
        return val_accuracy + self.synflow_points / 100 * log10_synflow


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
    # Logit standardization with the term ramped up over 2 epochs: the only setting measured never
    # behind Hinton KD beyond a run's noise (ahead for a student its teacher leads by over a point,
    # tied for one half a point under its teacher and on the quick start's data, 3-6 points ahead
    # in short runs from a weak teacher, where LS without the ramp fell 16 behind; README).
    loss: str = "ls"  # hwkd.distillation.losses.LOSSES
    # The distillation term's weight rises linearly from 0 to alpha over these first epochs while
    # the labels keep theirs (at most half the run): DKD's own warm-up (Zhao et al.: 20 of 240 epochs).
    loss_warmup_epochs: float = 2.0
    transfer: str = "none"  # "none", "feature" (FitNets hints) or "attention"
    transfer_weight: float = 1.0  # added to the loss times this weight; attention maps use 1000x (as in AT)
    teacher_layers: tuple[str, ...] = ()  # fx node names; empty: pair the deepest stages automatically
    student_layers: tuple[str, ...] = ()
    augment: bool = True
    seed: int = 0

    def check(self) -> None:
        """Every bad value at once, as one line."""
        problems = [f"--epochs {self.epochs}: must be at least 1"] if self.epochs < 1 else []
        problems += _training_problems(self.batch_size, self.lr, self.temperature, self.alpha, self.loss)
        if not 0 <= self.loss_warmup_epochs < float("inf"):
            problems.append(f"--loss-warmup-epochs {self.loss_warmup_epochs}: must be a number >= 0 "
                            "(0: the distillation term at full weight from the first step)")
        if self.transfer not in TRANSFERS:
            problems.append(f"--transfer {self.transfer!r}: choose {', '.join(TRANSFERS[:-1])} or {TRANSFERS[-1]}")
        if problems:
            raise HwkdError("; ".join(problems))


def _training_problems(batch_size: int, lr: float, temperature: float, alpha: float, loss: str) -> list[str]:
    """The settings brief and full distillation share, checked alike."""
    problems = []
    if batch_size < 1:
        problems.append(f"--batch-size {batch_size}: must be at least 1")
    if not lr > 0:
        problems.append(f"--lr {lr}: must be > 0")
    if not temperature > 0:
        problems.append(f"--temperature {temperature}: must be > 0")
    if not 0 <= alpha <= 1:
        problems.append(f"--alpha {alpha}: must be in [0, 1]")
    if loss not in LOSS_NAMES:
        problems.append(f"--loss {loss!r}: choose {', '.join(LOSS_NAMES)}")
    return problems


TRANSFERS = ("none", "feature", "attention")
# The names of hwkd.distillation.losses.LOSSES, here so the CLI and the checks need no torch
# (tests/distillation/test_losses.py keeps the two equal).
LOSS_NAMES = ("kd", "dkd", "dist", "ls")

# Fine-tuning a pruned student (hwkd compress) starts from good weights: a few epochs at a tenth of
# the learning rate, no warm-up, and Hinton KD at full weight from the first step (what its figures
# were measured with; a ramp would spend most of 5 epochs on the labels alone).
FINETUNE = FullConfig(epochs=5, lr=0.01, warmup_epochs=0.0, loss="kd", loss_warmup_epochs=0.0)

# FullConfig fields newer than some checkpoints and result files, at the values that reproduce the
# training those were made with (older results all used KD at full weight from the first step)
FULL_LEGACY = {"loss": "kd", "loss_warmup_epochs": 0.0}


def setting_changes(old: Any, new: Any, key: str = "") -> list[str]:
    """'key: old -> new' for each setting that differs, nested dicts key by key (`a.b: 1 -> 2`), so
    a refusal to resume names what to pass."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [c for k in sorted(set(old) | set(new))
                for c in setting_changes(old.get(k), new.get(k), f"{key}.{k}" if key else k)]
    return [] if old == new else [f"{key}: {old!r} -> {new!r}"]
