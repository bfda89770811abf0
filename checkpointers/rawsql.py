"""Hot-path SQL on the transaction's own DBAPI connection (or a :class:`~.engine.DirectTx`).

Why: a checkpointer runs a handful of statements per graph step. Through
SQLAlchemy Core each costs ~150 µs of Python (parameter processing, result
wrapping); on the DBAPI cursor of the *same* connection and transaction it
costs a few µs. Everything else (schema, migrations, rare operations) stays on
SQLAlchemy. Statements are written once with ``?`` placeholders and adapted to
the driver's paramstyle (sqlite3: ``?``, psycopg: ``%s``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import Connection

from .engine import DirectTx

__all__ = ["Raw", "CpRow", "WrRow", "CP_COLS", "WR_COLS", "EV_COLS"]

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
