"""Where a run's study lives: passwords kept off disk and out of messages, storage checked first,
the default study found relative to a moved run folder."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from hwkd.cli import main
from hwkd.distillation.config import BriefConfig
from hwkd.errors import RunError
from hwkd.searcher import Search, SearchConfig
from hwkd.storage import masked, recorded_form, resolve_recorded, without_password

# every test here runs real searches (and distillations) or worker processes
pytestmark = pytest.mark.slow



def config(run: Path, teacher_file: Path, **changes) -> SearchConfig:
    return SearchConfig(space="nb201-small", teacher=str(teacher_file), run_dir=str(run), trials=1,
                        brief=BriefConfig(steps=5), train_device="cpu", **changes)


def test_passwords_are_masked_for_messages_and_dropped_for_files() -> None:
    url = "postgresql+psycopg://hwkd:s3cret@db.example:5432/studies"
    assert masked(url) == "postgresql+psycopg://hwkd:***@db.example:5432/studies"
    assert without_password(url) == "postgresql+psycopg://hwkd@db.example:5432/studies"
    assert masked("postgresql://hwkd@db/x") == "postgresql://hwkd@db/x"  # nothing to hide
    assert recorded_form(None) is None and recorded_form(url) == "postgresql+psycopg://hwkd@db.example:5432/studies"


def test_a_postgresql_run_keeps_its_password_off_disk(tmp_path: Path, teacher_file: Path, postgres_url: str,
                                                      monkeypatch, capsys) -> None:
    password = postgres_url.split(":")[2].split("@")[0]
    run = tmp_path / "run"
    Search(config(run, teacher_file, storage=postgres_url)).run(progress=False)
    for file in run.rglob("*"):
        if file.is_file():
            assert password.encode() not in file.read_bytes(), file
    assert json.loads((run / "run.json").read_text())["config"]["storage"] == without_password(postgres_url)
    assert not (run / "study.db").exists()

    # a later command takes the password from $HWKD_STORAGE, never from run.json
    monkeypatch.setenv("HWKD_STORAGE", postgres_url)
    assert main(["report", str(run)]) == 0
    monkeypatch.delenv("HWKD_STORAGE")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert "cannot open its study" in err and "HWKD_STORAGE" in err and password not in err
    assert len(err.strip().splitlines()) == 1

    # the same search continues with --storage taken from $HWKD_STORAGE alone
    monkeypatch.setenv("HWKD_STORAGE", postgres_url)
    Search(config(run, teacher_file)).run(progress=False)
    import optuna

    trials = optuna.load_study(study_name="hwkd-search", storage=postgres_url).trials
    assert sum(t.state.name == "COMPLETE" for t in trials) == 2


def test_a_storage_that_cannot_work_fails_before_any_set_up(tmp_path: Path, teacher_file: Path) -> None:
    run = tmp_path / "run"
    started = time.monotonic()
    with pytest.raises(RunError) as refused:  # nothing listens on port 1
        Search(config(run, teacher_file, storage="postgresql://hwkd:s3cret@127.0.0.1:1/studies"))
    message = str(refused.value)
    assert message.startswith("--storage postgresql://hwkd:***@127.0.0.1:1/studies: cannot connect")
    assert "s3cret" not in message and "\n" not in message
    with pytest.raises(RunError, match=r"driver module 'pg8000' is not installed; install pg8000"):
        Search(config(run, teacher_file, storage="postgresql+pg8000://hwkd:s3cret@127.0.0.1/studies"))
    with pytest.raises(RunError, match=r"--storage nosuchdb://x: not a database URL"):
        Search(config(run, teacher_file, storage="nosuchdb://x"))
    assert time.monotonic() - started < 30 and not run.exists()  # no teacher, data or folder touched


def test_a_moved_run_folder_reads_its_own_study_and_a_copy_without_one_says_so(tmp_path: Path,
                                                                               teacher_file: Path) -> None:
    run = tmp_path / "run"
    Search(config(run, teacher_file)).run(progress=False)
    assert json.loads((run / "run.json").read_text())["config"]["storage"] is None  # relative to the folder
    moved = tmp_path / "moved"
    run.rename(moved)
    assert main(["report", str(moved)]) == 0

    copy = tmp_path / "copy"
    shutil.copytree(moved, copy)
    (copy / "study.db").unlink()
    with pytest.raises(RunError, match=r"its study .*copy/study.db is missing"):
        resolve_recorded(None, copy)
    assert main(["report", str(copy)]) == 2
    assert not (copy / "study.db").exists()  # no empty study was made in its place


def test_run_folders_of_earlier_versions_with_an_absolute_sqlite_path_read_their_own_study(tmp_path: Path) -> None:
    (tmp_path / "study.db").write_bytes(b"")
    legacy = "sqlite:////somewhere/else/run/study.db"
    assert resolve_recorded(legacy, tmp_path) == f"sqlite:///{(tmp_path / 'study.db').resolve()}"
    assert resolve_recorded("sqlite:////data/shared.db", tmp_path) == "sqlite:////data/shared.db"
