"""Where hwkd keeps what it can recompute: `$HWKD_CACHE_DIR`, default `~/.cache/hwkd`."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("HWKD_CACHE_DIR") or str(Path.home() / ".cache" / "hwkd")
    return Path(root)
