"""Hot-path SQL on the transaction's own DBAPI connection (or a :class:`DirectTx`).

Why: a checkpointer runs a handful of statements per graph step. Through
SQLAlchemy Core each costs ~150 µs of Python (parameter processing, result
wrapping); on the DBAPI cursor of the *same* connection and transaction it
costs a few µs. Everything else (schema, migrations, rare operations) stays on
SQLAlchemy. Statements are written once with ``?`` placeholders and adapted to
the driver's paramstyle (sqlite3: ``?``, psycopg: ``%s``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import Connection

__all__ = ["Raw", "DirectTx", "CpRow", "WrRow", "CP_COLS", "WR_COLS", "EV_COLS"]


class DirectTx:
    """An open transaction on a raw DBAPI connection: what :class:`Raw` executes on.

    ``before_commit`` is set on a SQLite write transaction (one or more requests of
    a group commit): work registered there under a key runs once, just before
    ``COMMIT``, and a later request's entry replaces an earlier one's under the same
    key (the ledger signs each thread's final chain head of the transaction this way).
    It is ``None`` on reads.

    ``after_commit`` (write transactions only): callables run in order once ``COMMIT`` has
    returned — never for work that rolled back (a request's entries go with its savepoint). The
    ledger extends this process's verified view of a chain there: only committed events count.
    """

    __slots__ = ("cursor", "sqlite", "before_commit", "after_commit")

    def __init__(self, cursor: Any, sqlite: bool, before_commit: dict[Any, Any] | None = None) -> None:
        self.cursor = cursor
        self.sqlite = sqlite
        self.before_commit: dict[Any, Callable[[DirectTx], None]] | None = before_commit
        self.after_commit: list[Callable[[], None]] | None = [] if before_commit is not None else None


class CpRow(NamedTuple):
    """A checkpoints row as the raw SELECT of :data:`CP_COLS` returns it (values as the driver gives them)."""

    thread_id: Any
    checkpoint_ns: Any
    checkpoint_id: Any
    parent_checkpoint_id: Any
    run_id: Any
    type: Any
    checkpoint: Any
    metadata_type: Any
    metadata: Any
    digest: Any


class WrRow(NamedTuple):
    """A writes row as the raw SELECT of :data:`WR_COLS` returns it."""

    thread_id: Any
    checkpoint_ns: Any
    checkpoint_id: Any
    task_id: Any
    idx: Any
    task_path: Any
    channel: Any
    type: Any
    blob: Any
    digest: Any


CP_COLS = ", ".join(CpRow._fields)
WR_COLS = ", ".join(WrRow._fields)
#: the field order of chain.ChainRow
EV_COLS = "thread_id, seq, kind, body, hash, key_id, key_store, signature"


@lru_cache(maxsize=256)
def _adapt(sql: str, mark: str) -> str:
    return sql if mark == "?" else sql.replace("?", mark)


class Raw:
    """Execute SQL on the DBAPI cursor of a SQLAlchemy connection (same transaction)."""

    __slots__ = ("_cursor", "_mark", "sqlite")

    def __init__(self, conn: Connection | DirectTx) -> None:
        if isinstance(conn, DirectTx):
            self.sqlite = conn.sqlite
            self._cursor = conn.cursor
        else:
            self.sqlite = conn.dialect.name == "sqlite"
            self._cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        self._mark = "?" if self.sqlite else "%s"

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        cur = self._cursor
        cur.execute(_adapt(sql, self._mark), params)
        return cur.fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        cur = self._cursor
        cur.execute(_adapt(sql, self._mark), params)
        return cur.fetchone()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = self._cursor
        cur.execute(_adapt(sql, self._mark), params)
        return cur.rowcount

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._cursor.executemany(_adapt(sql, self._mark), rows)

    def timestamp(self, value: datetime) -> Any:
        """A UTC timestamp as SQLAlchemy's DateTime type stores it on this backend."""
        if self.sqlite:
            # SQLAlchemy's SQLite DATETIME text, formatted directly: strftime costs ~3x as much.
            u = value if value.tzinfo is UTC else value.astimezone(UTC)
            return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (u.year, u.month, u.day, u.hour, u.minute, u.second, u.microsecond)
        return value

    @staticmethod
    def blob(value: Any) -> bytes:
        return value if isinstance(value, bytes) else bytes(value)
