"""Say what is wrong when a SQLite file cannot be written, instead of SQLite's "unable to open database file".

Why: SQLite reports a missing directory, a read-only directory and a read-only file alike
("unable to open database file", "attempt to write a readonly database"), and the saver used to
pass that on with advice for a database server. A checkpointer writes: the file, and (in WAL mode)
its ``-wal`` and ``-shm`` files beside it, so the directory must be writable as well.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import URL

from langgraph_warden.errors import DatabaseUnavailableError

__all__ = ["sqlite_write_problem", "check_sqlite_writable"]


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError, AttributeError):  # pragma: no cover - Windows, or a uid without a name
        return "this user"


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK, effective_ids=os.access in os.supports_effective_ids)


def sqlite_write_problem(database: str) -> str | None:
    """What keeps this process from creating or writing the SQLite file ``database``, or ``None``."""
    path = Path(os.path.abspath(database))
    folder = path.parent
    if path.is_dir():
        return f"SQLite path {str(path)!r} is a directory; point the URL at a file in it, e.g. sqlite:///{path / 'warden.db'}"
    if not folder.is_dir():
        return (f"cannot create SQLite file {str(path)!r}: its directory {str(folder)!r} does not exist. "
                f"Create it (mkdir -p {str(folder)!r}) or point the URL at an existing directory")
    if not path.exists():
        if not _writable(folder):
            return (f"cannot create SQLite file {str(path)!r}: directory {str(folder)!r} is not writable by "
                    f"{_user()}. Make it writable (chmod u+w, or chown it) or point the URL at a writable "
                    "directory, e.g. sqlite:///$HOME/warden.db")
        return None
    if not _writable(path):
        return (f"SQLite file {str(path)!r} is read-only for {_user()}, and the checkpointer writes to it. "
                f"Make it writable (chmod u+w {str(path)!r}) or run as its owner; to only read it, use the "
                "`warden audit` commands")
    if not _writable(folder):
        sidecars = [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]
        if not all(p.exists() and _writable(p) for p in sidecars):
            return (f"SQLite file {str(path)!r} is writable but its directory {str(folder)!r} is not: SQLite's "
                    f"write-ahead log creates {path.name}-wal and {path.name}-shm beside the file. Make the "
                    "directory writable or move the database to a writable directory")
    return None


def check_sqlite_writable(url: URL) -> None:
    """Raise :class:`DatabaseUnavailableError` naming the cause and the fix when a SQLite URL cannot be written.

    A no-op for other databases.
    """
    if url.get_backend_name() != "sqlite":
        return
    problem = sqlite_write_problem(url.database or "")
    if problem is not None:
        raise DatabaseUnavailableError(problem)
