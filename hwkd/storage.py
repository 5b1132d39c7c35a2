"""Where a run's Optuna study lives: the storage URL, its password kept off disk and out of errors.

- The default is `RUN/study.db` (SQLite), resolved from the run folder each time it is opened, so a
  moved or copied run folder reads its own study; `run.json` records `storage: null` for it.
- `--storage URL` (or `$HWKD_STORAGE`) takes any Optuna storage. Its password is never written or
  printed: `run.json` records the URL without it, and messages show `***`. A later `hwkd report`
  finds the password in `$HWKD_STORAGE` (the same URL with it) or, for PostgreSQL, where libpq
  looks (`PGPASSWORD`, `~/.pgpass`).
- A storage other than the default is checked (driver installed, server reachable) before any
  data, teacher or training is touched.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hwkd.errors import RunError, error_line

ENV_STORAGE = "HWKD_STORAGE"
STUDY_FILE = "study.db"
# The Python driver SQLAlchemy needs for each database, and the pip package that brings it.
_DRIVER_PACKAGES = {"psycopg": "it with pip install 'hwkd[postgres]' (psycopg[binary])",
                    "psycopg2": "psycopg2-binary", "pymysql": "pymysql", "MySQLdb": "mysqlclient"}


def requested_storage(flag: str | None) -> str | None:
    """The storage a search was asked for: `--storage`, else `$HWKD_STORAGE`, else None (the default)."""
    return flag or os.environ.get(ENV_STORAGE) or None


def default_url(run_dir: Path) -> str:
    return f"sqlite:///{(run_dir / STUDY_FILE).resolve()}"


# scheme://user:password@ at the start of a URL: group 1 is up to the user, group 2 the password
_CREDENTIALS = re.compile(r"^([\w+.-]+://[^:/@]*):([^@]*)@")


def masked(url: str) -> str:
    """`url` with its password replaced by `***`."""
    return _CREDENTIALS.sub(r"\1:***@", url)


def without_password(url: str) -> str:
    """`url` with its password removed: the form `run.json` records."""
    return _CREDENTIALS.sub(r"\1@", url)


def recorded_form(url: str | None) -> str | None:
    """What `run.json` keeps of a search's storage: None for the run folder's default."""
    return None if url is None else without_password(url)


def resolve_recorded(recorded: str | None, run_dir: Path) -> str:
    """The URL to open a run's study with, from what `run.json` recorded.

    The default (None, or an absolute `.../study.db` SQLite URL that earlier versions wrote) is
    this folder's own `study.db`, which must exist: a copied folder never reads the original's.
    A URL recorded without its password takes it back from `$HWKD_STORAGE` when that names the
    same storage; otherwise the driver finds it (libpq: `PGPASSWORD`, `~/.pgpass`).
    """
    if recorded is None or (recorded.startswith("sqlite:///") and recorded.endswith("/" + STUDY_FILE)):
        study = run_dir / STUDY_FILE
        if not study.is_file():
            raise RunError(f"{run_dir}: its study {study} is missing; the trials of this run are gone "
                           "(restore study.db, or run hwkd search to start a new study)")
        return default_url(run_dir)
    env = os.environ.get(ENV_STORAGE)
    if env and without_password(env) == recorded:
        return env
    return recorded


def check_storage(url: str) -> None:
    """One-line error now, not after the teacher is trained, when `url` cannot hold a study."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = masked(url)
    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise RunError(f"--storage {shown}: not a database URL SQLAlchemy knows ({error_line(exc)}); e.g. "
                       "sqlite:///path/study.db or postgresql://user@host/db") from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        module = exc.name or str(exc)
        package = _DRIVER_PACKAGES.get(module, module)
        raise RunError(f"--storage {shown}: the {parsed.get_backend_name()} driver module {module!r} is not "
                       f"installed; install {package}") from None
    if parsed.get_backend_name() == "sqlite":
        return  # a local file, created on first use
    try:
        engine = create_engine(url, connect_args=_timeout_args(parsed.get_backend_name()))
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - refused, unknown host, bad password, no database...
        raise RunError(f"--storage {shown}: cannot connect ({hide_secrets(error_line(exc), url)})") from None


def hide_secrets(message: str, url: str) -> str:
    """`message` with `url`'s password, wherever it appears, replaced by `***`."""
    match = _CREDENTIALS.match(url)
    return message.replace(match.group(2), "***") if match and match.group(2) else message


def _timeout_args(backend: str) -> dict[str, int]:
    return {"connect_timeout": 10} if backend in ("postgresql", "mysql") else {}
