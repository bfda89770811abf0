"""Open an *existing* warden database for commands that only read: nothing is created, nothing migrated.

Why: ``WardenSaver.from_url`` is how an application starts — it creates the SQLite file and
migrates the schema. An auditor's ``warden audit verify --db sqlite:///prod.db`` with a typo
must not leave a fresh empty database behind (and then fail with a traceback), nor add tables
to someone else's database. :func:`open_existing` checks first and raises a typed error that
names the problem and the fix:

* :class:`~langgraph_warden.errors.DatabaseNotFoundError` — no such SQLite file, or no such
  PostgreSQL database;
* :class:`~langgraph_warden.errors.NotAWardenDatabaseError` — an empty (0-byte) file, a file
  that is not SQLite (corrupt, or another kind of file), or a database without the warden schema;
* :class:`~langgraph_warden.errors.SchemaVersionError` — a schema newer than this package
  (or, for read-only use, older: it is not migrated);
* :class:`~langgraph_warden.errors.DatabaseUnavailableError` — the server cannot be reached.

How nothing is created: a SQLite file must exist, be non-empty and start with the SQLite
header before any connection is made, and the schema check connects with ``mode=rw`` (SQLite
then refuses to create a missing file) and ``query_only``. PostgreSQL sessions opened by
:func:`open_existing` run with ``default_transaction_read_only``, so the server itself refuses
any write made through the returned saver.
"""

from __future__ import annotations

import difflib
import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.pool import NullPool

from langgraph_warden.errors import (
    DatabaseNotFoundError,
    DatabaseUnavailableError,
    NotAWardenDatabaseError,
    UnknownThreadError,
)
from langgraph_warden.keys import KeyStore

from . import migrate, schema
from . import statements as sql
from .engine import parse_url
from .saver import DEFAULT_WORKLOAD_ID, WardenSaver

__all__ = ["open_existing", "check_existing", "describe_database", "require_thread", "known_thread_ids"]

_SQLITE_HEADER = b"SQLite format 3\x00"
_READ_ONLY_OPTION = "-c default_transaction_read_only=on"
#: how many thread ids are read to suggest the closest ones to an unknown id
_SUGGEST_FROM = 100_000


def describe_database(url: URL) -> str:
    """How messages name a database: ``SQLite file '/abs/path.db'`` or ``PostgreSQL database 'x' at host:port``."""
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {os.path.abspath(url.database or '')!r}"
    return f"PostgreSQL database {url.database!r} at {url.host or 'localhost'}:{url.port or 5432}"


def _first_line(exc: BaseException) -> str:
    text = str((exc.orig if isinstance(exc, StatementError) else None) or exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


# ----------------------------------------------------------------------------- SQLite
def _check_sqlite_file(url: URL) -> Path:
    path = Path(os.path.abspath(url.database or ""))
    where = describe_database(url)
    if not path.exists():
        hint = "" if path.parent.is_dir() else f" (nor does its directory {str(path.parent)!r})"
        raise DatabaseNotFoundError(
            f"{where} does not exist{hint}. Check --db for a typo; a command that only reads never creates a database"
        )
    if not path.is_file():
        raise NotAWardenDatabaseError(f"{where} is not a file (a directory?); point --db at the SQLite database file")
    try:
        with path.open("rb") as fh:
            header = fh.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise DatabaseUnavailableError(f"cannot read {where}: {exc.strerror or exc}; check its permissions") from None
    if not header:
        raise NotAWardenDatabaseError(
            f"{where} is empty (0 bytes): not a langgraph-warden database. Check --db; an empty file is what "
            "opening a mistyped path used to leave behind, and can be deleted"
        )
    if header != _SQLITE_HEADER:
        raise NotAWardenDatabaseError(
            f"{where} is not a SQLite database (its first bytes are not the SQLite header: corrupt, or another "
            "kind of file). Check --db, or restore the database from a backup"
        )
    return path


def _sqlite_probe_engine(path: Path) -> Engine:
    def connect() -> sqlite3.Connection:
        # mode=rw: never create the file (a read-only file still opens, for reading).
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=rw", uri=True, timeout=30.0)
        conn.execute("PRAGMA query_only=ON")
        return conn

    return create_engine("sqlite+pysqlite://", creator=connect, poolclass=NullPool)


# ------------------------------------------------------------------------- PostgreSQL
def _read_only_pg_url(url: URL) -> URL:
    options = url.query.get("options")
    if isinstance(options, tuple):  # the option given more than once
        options = " ".join(options)
    return url.update_query_dict({"options": f"{options} {_READ_ONLY_OPTION}" if options else _READ_ONLY_OPTION})


def _pg_probe_engine(url: URL, connect_timeout: float) -> Engine:
    return create_engine(
        url.set(drivername="postgresql+psycopg"),
        connect_args={"connect_timeout": max(1, int(connect_timeout))},
        poolclass=NullPool,
    )


def _pg_where(url: URL, conn) -> str:
    schema_name = conn.exec_driver_sql(sql.PG_CURRENT_SCHEMA).scalar()
    return f"schema {schema_name!r} of {describe_database(url)}" if schema_name else describe_database(url)


# ------------------------------------------------------------------------------ API
def check_existing(url: str | URL, *, connect_timeout: float = 5.0, require_head: bool = True) -> str:
    """Check, creating and changing nothing, that ``url`` is an existing warden database; return its revision.

    ``require_head=False`` accepts an older warden schema this package knows how to migrate (for
    commands that will write, and so migrate, next); a schema from a newer version is always refused.
    """
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = _check_sqlite_file(parsed)
        engine = _sqlite_probe_engine(path)
    else:
        parsed = _read_only_pg_url(parsed)
        engine = _pg_probe_engine(parsed, connect_timeout)
    where = describe_database(parsed)
    try:
        with engine.connect() as conn:
            if parsed.get_backend_name() == "postgresql":
                where = _pg_where(parsed, conn)
            return migrate.check_schema(conn, where=where, require_head=require_head)
    except DBAPIError as exc:
        raise _classify(parsed, exc) from None
    finally:
        engine.dispose()


def _classify(url: URL, exc: DBAPIError) -> Exception:
    where = describe_database(url)
    detail = _first_line(exc)
    if url.get_backend_name() == "sqlite":
        if isinstance(exc.orig, sqlite3.DatabaseError) and not isinstance(exc.orig, sqlite3.OperationalError):
            return NotAWardenDatabaseError(
                f"{where} cannot be read as a SQLite database ({detail}): it is corrupt. Restore it from a backup"
            )
        return DatabaseUnavailableError(f"cannot open {where}: {detail}; check the file and its permissions")
    if f'database "{url.database}" does not exist' in str(exc.orig):
        return DatabaseNotFoundError(
            f"{where} does not exist (the server has no database {url.database!r}). Check --db for a typo; "
            "a command that only reads never creates a database"
        )
    return DatabaseUnavailableError(
        f"cannot reach the {where}: {detail}. Check that the server is running and the URL "
        "(host, port, database, user) is right"
    )


def open_existing(
    url: str | URL,
    *,
    key_store: KeyStore | None = None,
    workload_id: str = DEFAULT_WORKLOAD_ID,
    connect_timeout: float = 5.0,
) -> WardenSaver:
    """A :class:`WardenSaver` on an existing warden database at this package's schema revision, for reading.

    Runs no migration and registers no key; raises the typed errors of the module docstring. On
    PostgreSQL every session of the returned saver is read-only. Close it (or use ``with``).
    """
    parsed = parse_url(url)
    check_existing(parsed, connect_timeout=connect_timeout, require_head=True)
    if parsed.get_backend_name() == "postgresql":
        parsed = _read_only_pg_url(parsed)
    try:
        return WardenSaver.from_url(
            parsed, key_store=key_store, workload_id=workload_id,
            setup=False, connect_timeout=connect_timeout,
        )
    except DBAPIError as exc:  # the database went away between the check and here
        raise _classify(parsed, exc) from None


# --------------------------------------------------------------------------- threads
def known_thread_ids(engine: Engine, *, limit: int | None = None) -> list[str]:
    """Ids of the threads the ledger holds a chain for, sorted (at most ``limit``)."""
    query = select(schema.heads.c.thread_id).order_by(schema.heads.c.thread_id)
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(query)]


def require_thread(engine: Engine, thread_id: str) -> None:
    """Raise :class:`UnknownThreadError` unless the ledger holds events (or a chain head) for ``thread_id``.

    The message lists the closest known thread ids, so a typo is one look away.
    """
    with engine.connect() as conn:
        for table in (schema.heads, schema.events):
            if conn.execute(select(table.c.thread_id).where(table.c.thread_id == thread_id).limit(1)).first():
                return
    known = known_thread_ids(engine, limit=_SUGGEST_FROM)
    close = tuple(difflib.get_close_matches(thread_id, known, n=3, cutoff=0.6))
    if close:
        hint = f"; closest known: {', '.join(repr(t) for t in close)}"
    elif known:
        more = "+" if len(known) >= _SUGGEST_FROM else ""
        hint = f"; the database holds {len(known)}{more} other thread(s), see `warden audit head`"
    else:
        hint = "; the database holds no threads yet"
    raise UnknownThreadError(
        f"no such thread {thread_id!r}: it has no recorded events in this database{hint}",
        thread_id=thread_id, suggestions=close,
    )
