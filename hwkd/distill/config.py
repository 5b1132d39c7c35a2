"""Settings of the distillation loops (no torch import, so the CLI can show defaults quickly)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BriefConfig:
    """Brief distillation of a search trial."""

    steps: int = 200
    batch_size: int = 64
    lr: float = 0.1  # peak of the one-cycle schedule
    weight_decay: float = 5e-4
    temperature: float = 4.0
    alpha: float = 0.7  # weight of the distillation term; 1 - alpha goes to the labels
    seed: int = 0
