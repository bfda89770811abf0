"""What every part of :class:`~.saver.WardenSaver` shares: its engines, its ledger, the digests
it trusts, and how it runs one transaction (a read, a write, a hot-path read or write, a
PostgreSQL one-statement call) with a lost database reported as such.

Why a base: the saver's jobs — reads (:mod:`.saver_reads`), writes (:mod:`.saver_writes`),
thread copy/delete/prune (:mod:`.thread_ops`) and the async API (:mod:`.saver_async`) — each
live in a module of their own but run their transactions the same way; the saver is those
parts combined, with no call going through an extra layer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from langgraph_warden.anchors import HeadStore
from langgraph_warden.errors import ConfigurationError, DatabaseUnavailableError
from langgraph_warden.keys import KeyStore, default_key_store

from .direct_sqlite import direct_sqlite
from .engine import WRITE, engines_from, is_sqlite, write_lock
from .ledger import Ledger
from .sqlite_access import sqlite_write_problem
from .trust import RowDigestCache

__all__ = ["SaverBase", "DEFAULT_WORKLOAD_ID", "configurable"]

T = TypeVar("T")

DEFAULT_WORKLOAD_ID = "spiffe://langgraph-warden.local/agent"

#: How many verified (checkpoint, writes) digests a saver remembers (LRU).
_TRUST_CACHE_SIZE = 4096


def configurable(config: RunnableConfig | None, *, need_thread: bool = True) -> Mapping[str, Any]:
    """``config["configurable"]``, with an error that shows the expected form when the thread is missing."""
    if config is None or not isinstance(config, Mapping):
        if need_thread:
            raise ConfigurationError(
                "config is missing; pass {'configurable': {'thread_id': '...'}} to invoke/stream"
            )
        return {}
    conf = config.get("configurable")
    if conf is None:
        conf = {}
    if need_thread and conf.get("thread_id") in (None, ""):
        raise ConfigurationError(
            "config['configurable']['thread_id'] is missing; the checkpointer needs it to know which "
            "conversation to save and resume: graph.invoke(inputs, {'configurable': {'thread_id': 'my-thread'}})"
        )
    return conf


def _first_line(exc: Exception) -> str:
    """The driver's message of a database error (SQLAlchemy wraps it in ``orig``), first line only."""
    text = str(exc.orig if isinstance(exc, StatementError) else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class SaverBase(BaseCheckpointSaver[str]):
    """The saver's state and transaction runners (see the module docstring)."""

    def __init__(
        self,
        engine: Engine | AsyncEngine,
        *,
        key_store: KeyStore | None = None,
        workload_id: str = DEFAULT_WORKLOAD_ID,
        serde: SerializerProtocol | None = None,
        trusted_key_ids: Sequence[str] | None = None,
        head_store: HeadStore | None = None,
        verify_reads: bool = True,
        _async_engine: AsyncEngine | None = None,
        _owns_engines: bool = False,
    ) -> None:
        super().__init__(serde=serde)
        if _async_engine is not None and isinstance(engine, Engine):
            self._engine, self._aengine = engine, _async_engine
        elif isinstance(engine, (Engine, AsyncEngine)):
            self._engine, self._aengine = engines_from(engine)
        else:
            raise ConfigurationError(
                f"engine must be a sqlalchemy Engine or AsyncEngine, got {type(engine).__name__}; "
                "or use WardenSaver.from_url('sqlite:///file.db')"
            )
        self._owns_engines = _owns_engines
        self._write_engine = self._engine.execution_options(**WRITE)
        # Reads that verify take several statements: on PostgreSQL they share one snapshot, so rows
        # committed meanwhile by another worker are not mistaken for rows the history never recorded.
        self._read_engine = (
            self._engine if is_sqlite(self._engine) else self._engine.execution_options(isolation_level="REPEATABLE READ")
        )
        self._awrite_engine = self._aengine.execution_options(**WRITE)
        self.key_store = key_store if key_store is not None else default_key_store()
        self.ledger = Ledger(
            self._engine, self._aengine, self.key_store, workload_id, trusted_key_ids=trusted_key_ids,
            head_store=head_store,
        )
        self.verify_reads = verify_reads
        self._is_setup = False
        self._sqlite = is_sqlite(self._engine)
        self._direct = direct_sqlite(self._engine) if self._sqlite else None
        # PostgreSQL: new rows + event + head in one autocommit statement (see Ledger.try_append_one_statement).
        self._one_statement = self._engine.dialect.name == "postgresql"
        # Digests this process wrote or verified: a row that still matches needs no chain walk.
        self._digests = RowDigestCache(_TRUST_CACHE_SIZE)

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def async_engine(self) -> AsyncEngine:
        return self._aengine

    # ------------------------------------------------------------------- errors
    def _describe_db(self) -> str:
        url = self._engine.url
        if url.get_backend_name() == "sqlite":
            return f"SQLite file {url.database!r}"
        return f"PostgreSQL at {url.host}:{url.port or 5432}/{url.database}"

    def _unavailable(self, exc: Exception) -> DatabaseUnavailableError:
        detail = _first_line(exc)
        if self._sqlite:  # no server to check: say what is wrong with the file or its directory
            problem = sqlite_write_problem(self._engine.url.database or "")
            hint = " Check the path and the permissions of the file and its directory." if (
                "open" in detail or "readonly" in detail) else ""
            return DatabaseUnavailableError(problem or f"cannot use the {self._describe_db()}: {detail}.{hint}")
        return DatabaseUnavailableError(
            f"cannot reach the {self._describe_db()}: {detail}. "
            "Check that the server is running and the URL (host, port, database, user) is right."
        )

    def _check_reachable(self) -> None:
        try:
            with self._engine.connect():
                pass
        except (OperationalError, DBAPIError) as exc:
            raise self._unavailable(exc) from None

    # -------------------------------------------------------------- transactions
    def _read(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            with self._read_engine.connect() as conn:
                return fn(conn, *args)
        except OperationalError as exc:
            raise self._unavailable(exc) from None

    def _write(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            with write_lock(self._engine):
                return self.ledger.transaction(fn, *args, sqlalchemy=True)
        except OperationalError as exc:
            raise self._unavailable(exc) from None

    def _read_hot(self, fn: Callable[..., T], *args: Any) -> T:
        """A read on the hot path: SQLite's raw reader connections (``fn`` uses only :class:`~.rawsql.Raw`)."""
        if self._direct is None:
            return self._read(fn, *args)
        try:
            with self._direct.read(short=True) as tx:
                return fn(tx, *args)
        except sqlite3.OperationalError as exc:
            raise self._unavailable(exc) from None

    def _pg_call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a one-statement PostgreSQL write; a lost server is reported like the engine's errors."""
        import psycopg

        try:
            return fn(*args)
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from None

    def _write_hot(self, fn: Callable[..., T], *args: Any) -> T:
        """A write on the hot path: SQLite's group-committing writer (``fn`` uses only :class:`~.rawsql.Raw`)."""
        if self._direct is None:
            return self._write(fn, *args)
        try:
            return self._direct.run_write(fn, *args)
        except sqlite3.OperationalError as exc:
            raise self._unavailable(exc) from None
