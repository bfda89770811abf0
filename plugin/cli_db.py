"""What every ``warden`` command that reads a database shares: open it without changing it, fail in one line.

Exit codes across the CLI: 0 success; 1 the command's own verdict (``audit verify``/``show``:
tampering or an unauthorised action found; ``approvals decide``: the guard refused the answer);
2 the command could not do its job — a missing, empty, foreign, corrupt, too-new or unreachable
database, an unknown thread id, bad options. Exit 2 prints exactly one line on stderr,
``error: <what was wrong and how to fix it>``, and never a traceback. A read that stops at a
history failing verification (:class:`~langgraph_warden.errors.IntegrityError`) is a finding: exit 1.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from sqlalchemy.exc import SQLAlchemyError

from .errors import IntegrityError, WardenError

__all__ = ["EXIT_ERROR", "fail", "one_line", "open_for_reading", "require_thread", "database_errors"]

EXIT_ERROR = 2
#: the exit code of "tampering found": a read that stopped at a history failing verification
EXIT_TAMPERED = 1


def one_line(text: Any) -> str:
    """``text`` on one line (a message that spans lines is joined with spaces)."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def fail(message: Any, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``error: <message>`` as one line on stderr and exit with ``code``."""
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(code=code)


def database_errors() -> tuple[type[BaseException], ...]:
    """Driver errors a read can still raise after the database was checked (it changed, or the server went away)."""
    types: list[type[BaseException]] = [SQLAlchemyError, sqlite3.Error]
    try:
        import psycopg

        types.append(psycopg.Error)
    except ImportError:  # pragma: no cover - the postgres extra is not installed
        pass
    return tuple(types)


def _database_failure(db: str, exc: BaseException) -> str:
    from .checkpointers.engine import parse_url
    from .checkpointers.readonly import describe_database

    try:
        where = describe_database(parse_url(db))
    except WardenError:
        where = "the database"
    detail = one_line(getattr(exc, "orig", None) or exc) or type(exc).__name__
    return (f"reading {where} failed: {detail}. If the database file is damaged, restore it from a backup; "
            "if the server went away, run the command again")


@contextmanager
def open_for_reading(db: str, **kwargs: Any) -> Iterator[Any]:
    """A ``WardenSaver`` on the existing warden database ``db``; any failure exits 2 with one line.

    Nothing is created or migrated (see :func:`langgraph_warden.checkpointers.readonly.open_existing`).
    """
    from .checkpointers.readonly import open_existing

    errors = database_errors()
    try:
        saver = open_existing(db, **kwargs)
    except WardenError as exc:
        fail(exc)
    except errors as exc:
        fail(_database_failure(db, exc))
    try:
        with saver:
            yield saver
    except IntegrityError as exc:  # the history itself failed verification: that is a finding, not a usage error
        fail(exc, EXIT_TAMPERED)
    except WardenError as exc:
        fail(exc)
    except errors as exc:
        fail(_database_failure(db, exc))


def require_thread(saver: Any, thread_id: str) -> None:
    """Exit 2 (one line, with the closest known ids) unless the database holds history for ``thread_id``."""
    from .checkpointers.readonly import require_thread as check

    check(saver.engine, thread_id)  # raises UnknownThreadError, a WardenError: open_for_reading reports it
