"""Shared fixtures: small, fast, real components."""

from __future__ import annotations

import os

# Two cores here and in CI: keep torch and TVM from oversubscribing them.
os.environ.setdefault("TVM_NUM_THREADS", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")
