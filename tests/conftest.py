"""Shared fixtures: small, fast, real components."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

# Two cores here and in CI: keep torch and TVM from oversubscribing them (set before either loads).
os.environ.setdefault("TVM_NUM_THREADS", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")
# The tests' own cache, never the user's: a tuning database one run left in ~/.cache made the next
# run measure nothing; tests that need an empty cache still set their own.
os.environ["HWKD_CACHE_DIR"] = tempfile.mkdtemp(prefix="hwkd-tests-cache-")
atexit.register(shutil.rmtree, os.environ["HWKD_CACHE_DIR"], ignore_errors=True)


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


@pytest.fixture(scope="session")
def distilled_run(tmp_path_factory: pytest.TempPathFactory, teacher_file: Path) -> tuple[Path, int]:
    """A 3-trial search, one infeasible trial added, and the front's best student distilled for two
    epochs (the run folder and that trial's number); tests that write into it write beside, never over."""
    from dataclasses import replace

    import pandas as pd

    from hwkd.cli import main
    from hwkd.distillation.config import BriefConfig
    from hwkd.searcher import Budgets, Search, SearchConfig

    path = tmp_path_factory.mktemp("distilled") / "run"
    config = SearchConfig(teacher=str(teacher_file), run_dir=str(path), trials=3, train_device="cpu",
                          brief=BriefConfig(steps=30))
    Search(config).run(progress=False)
    Search(replace(config, trials=1, budgets=Budgets(max_latency_ms=0.001))).run(progress=False)
    number = int(pd.read_csv(path / "pareto.csv").trial.iloc[0])  # the most accurate, as a user would choose
    assert main(["distill", str(path), "--trial", str(number), "--epochs", "2", "--train-device", "cpu"]) == 0
    return path, number


@pytest.fixture(scope="session")
def postgres_server():
    """A private PostgreSQL cluster on 127.0.0.1 with password authentication (Debian's postgresql
    package, which .ci/run installs); yields a URL of its default database, with the password,
    and stops the server after the tests."""
    import glob
    import pwd
    import shutil
    import socket
    import subprocess
    import tempfile

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    bin_dir = Path(bins[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="hwkd-pg-"))  # not under pytest's root-only folder: the server must reach it
    data, password = root / "data", "s3cret-Pw"
    (root / "pw").write_text(password)
    run_as: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        user = pwd.getpwnam("postgres")
        for path in (root, root / "pw"):
            os.chown(path, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*run_as, str(bin_dir / "initdb"), "-D", str(data), "-U", "hwkd", f"--pwfile={root / 'pw'}",
                    "--auth=scram-sha-256"], check=True, capture_output=True)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root}"
    subprocess.run([*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"),
                    "-w", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://hwkd:{password}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A new, empty database of the test server for one test (each test gets its own study)."""
    import uuid

    import sqlalchemy

    name = f"test_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return postgres_server.rsplit("/", 1)[0] + "/" + name



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
def board_file(tmp_path: Path):
    """Writes the host profile as a user's board file whose rpc section points at a port."""
    return lambda port: host_profile_with_rpc(tmp_path, port)


def host_profile_with_rpc(tmp_path: Path, port: int, name: str = "board") -> Path:
    from hwkd.profiles import load_profile

    host = load_profile("host")
    raw = yaml.safe_load(Path(host.path).read_text())
    raw["measure"] = "model"
    raw["target"] = dict(host.target)
    raw["rpc"] = {"host": "127.0.0.1", "port": port, "timeout_s": 2}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# ---- records of a run, written by hand ---------------------------------------------------------


def make_fixed(**changes: object):
    """FixedSettings of a small run on rpi4, with `changes`."""
    from hwkd.distillation.config import BriefConfig
    from hwkd.records import FixedSettings

    values: dict = dict(space="nb201-widths", device="rpi4", data="embedded", data_dir=None, teacher=None,
                        brief=BriefConfig(steps=40), input_shape=(1, 1, 28, 28), num_classes=10,
                        latency_source="auto", threads=4)
    values.update(changes)
    return FixedSettings(**values)


def make_run_record(**fixed: object):
    """A whole RunRecord around `make_fixed(**fixed)`."""
    from hwkd.records import Budgets, DatasetRecord, RunConfig, RunRecord, TeacherRecord

    return RunRecord(
        config=RunConfig(fixed=make_fixed(**fixed), run_dir="runs/a", storage=None, sampler="tpe", seed=3,
                         budgets=Budgets(max_latency_ms=15.0), train_device="cpu"),
        dataset=DatasetRecord(name="embedded", source="hwkd", fingerprint="abc", train=900, brief_train=800, val=100,
                              test=200, classes=tuple("0123456789"), input_shape=(1, 1, 28, 28), mean=(0.28,),
                              std=(0.35,)),
        teacher=TeacherRecord(name="default", kind="default", source="cache", file="teacher.pt", sha256="f" * 64,
                              train_accuracy=0.9, val_accuracy=0.85),
        device_profile={"name": "rpi4"}, space={"name": "nb201-widths"}, libraries={"hwkd": "0.1.0"},
        created="2026-12-01T00:00:00+00:00", updated="2026-12-01T00:00:00+00:00",
    )
