from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hwkd.profiles import load_profile


@pytest.fixture(scope="session")
def rpc_server() -> Iterator[int]:
    """A TVM RPC server on 127.0.0.1, started for the tests and stopped by its process id."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", "9190", "--port-end", "9290"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    port = None
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while time.monotonic() < deadline and port is None:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        match = re.search(r"bind to 127\.0\.0\.1:(\d+)", line)
        if match:
            port = int(match.group(1))
    if port is None:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the TVM RPC server did not start")
    try:
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def board_file(tmp_path: Path):  # noqa: ANN201 - returns the factory below
    """Writes the host profile as a user's board file whose rpc section points at a port."""
    return lambda port: _host_profile_with_rpc(tmp_path, port)


def _host_profile_with_rpc(tmp_path: Path, port: int, name: str = "board") -> Path:
    host = load_profile("host")
    raw = yaml.safe_load(Path(host.path).read_text())
    raw["measure"] = "model"
    raw["target"] = dict(host.target)
    raw["rpc"] = {"host": "127.0.0.1", "port": port, "timeout_s": 2}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
