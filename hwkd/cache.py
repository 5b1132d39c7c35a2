"""Where hwkd keeps what it can recompute (`$HWKD_CACHE_DIR`, default `~/.cache/hwkd`), and the
content hash its entries and manifests are keyed by."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("HWKD_CACHE_DIR") or str(Path.home() / ".cache" / "hwkd")
    return Path(root)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
