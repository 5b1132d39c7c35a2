"""ONNX Runtime sessions as hwkd runs them: on the CPU, with one thread per core this process may use."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def cpu_session(path: str | Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = len(os.sched_getaffinity(0))
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
