"""Shared fixtures: small, fast, real components."""

from __future__ import annotations

import os

# Two cores here and in CI: keep torch and TVM from oversubscribing them.
os.environ.setdefault("TVM_NUM_THREADS", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def embedded():
    from hwkd.data import load_dataset

    return load_dataset("embedded")


@pytest.fixture(scope="session")
def teacher_file(tmp_path_factory: pytest.TempPathFactory, embedded) -> Path:
    """A small real teacher (TorchScript), trained for a few seconds on the embedded data."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(250):
        index = torch.randint(len(embedded.train), (64,), generator=generator)
        loss = F.cross_entropy(model(embedded.normalize(embedded.train.images[index])), embedded.train.labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    torch.jit.save(torch.jit.trace(model.eval(), torch.zeros(1, 1, 28, 28)), str(path))
    return path
