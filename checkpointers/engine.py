"""Engines for the saver: one URL gives a sync and an async SQLAlchemy engine.

Why both: a graph compiled with the saver must work with ``invoke``/``stream``
(sync API) and ``ainvoke``/``astream`` (async API) on the same object. The two
engines point at the same database; every transaction's logic is written once
as a sync function. On SQLite the saver's async methods run it in a worker thread
(one thread hop per transaction); on PostgreSQL on an ``AsyncConnection`` with
``run_sync``.

This module holds URL parsing (:func:`parse_url`, with errors that show the expected
form), engine creation (:func:`make_engines`, :func:`engines_from`), the ``WRITE``
execution option and the per-file write lock's lookup (:func:`write_lock`). The SQLite
connection settings are in :mod:`.sqlite_settings`; the hot paths do not go through
these engines at all: :mod:`.direct_sqlite` (raw ``sqlite3`` connections with a
group-commit writer) and :mod:`.pg_pool` (autocommit ``psycopg`` connections).
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from langgraph_warden.errors import ConfigurationError

from .sqlite_settings import apply_sqlite_pragmas, write_lock_for_path

__all__ = ["parse_url", "make_engines", "engines_from", "WRITE", "is_sqlite", "write_lock"]

#: Execution option marking a transaction that writes (SQLite: BEGIN IMMEDIATE).
WRITE = {"warden_write": True}

_SYNC_DRIVERS = {"sqlite": "sqlite+pysqlite", "postgresql": "postgresql+psycopg"}
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}


def parse_url(url: str | URL) -> URL:
    """Parse and check a database URL, with an error that shows the expected form."""
    if isinstance(url, URL):
        parsed = url
    else:
        if not isinstance(url, str) or not url.strip():
            raise ConfigurationError(
                "database url is empty; pass e.g. 'sqlite:///warden.db' or "
                "'postgresql+psycopg://user@host:5432/dbname'"
            )
        try:
            parsed = make_url(url)
            parsed.port  # a non-numeric port surfaces here  # noqa: B018
        except (ArgumentError, ValueError):
            raise ConfigurationError(
                f"database url {url!r} is malformed; expected 'sqlite:///path/to/file.db' or "
                "'postgresql+psycopg://user[:password]@host[:port]/dbname'"
            ) from None
    backend = parsed.get_backend_name()
    if backend not in _SYNC_DRIVERS:
        raise ConfigurationError(
            f"database url uses {backend!r}; langgraph-warden supports 'sqlite' and 'postgresql'"
        )
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ConfigurationError(
            "an in-memory SQLite database is not durable and cannot be shared by the sync and async "
            "engines; pass a file path: 'sqlite:///warden.db'"
        )
    if backend == "postgresql" and not parsed.host and "host" not in parsed.query:
        raise ConfigurationError(f"postgresql url {parsed.render_as_string(hide_password=True)!r} has no host")
    if backend == "postgresql":
        _require_psycopg()
    return parsed


def _require_psycopg() -> None:
    """Say which extra to install before SQLAlchemy fails deep inside its dialect on a missing driver."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            f"a PostgreSQL URL needs the psycopg driver, which cannot be imported ({exc}); install the "
            "postgres extra: pip install 'langgraph-warden[postgres]'"
        ) from None


def is_sqlite(engine: Engine | AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def write_lock(engine: Engine | AsyncEngine) -> AbstractContextManager[Any]:
    """The in-process lock writers to one SQLite file share (a no-op context for PostgreSQL).

    Why: SQLite allows one writer. Two threads of one process that both issue
    ``BEGIN IMMEDIATE`` make SQLite's busy handler sleep-and-retry (1, 2, 5 …
    100 ms), which dominated a graph's step time; a lock hands the database over
    without sleeping. ``busy_timeout`` still arbitrates between processes.
    """
    if engine.dialect.name != "sqlite":
        return nullcontext()
    return write_lock_for_path(os.path.abspath(engine.url.database or ""))


def _with_driver(url: URL, drivers: dict[str, str]) -> URL:
    backend = url.get_backend_name()
    return url.set(drivername=drivers[backend])


def _install_sqlite_settings(sync_engine: Engine) -> None:
    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised via engines
        apply_sqlite_pragmas(dbapi_conn)

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn):  # pragma: no cover - exercised via engines
        if conn.get_execution_options().get("warden_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def _connect_args(url: URL, connect_timeout: float) -> dict:
    if url.get_backend_name() == "postgresql":
        return {"connect_timeout": max(1, int(connect_timeout))}
    return {"timeout": 30.0}


def make_engines(
    url: str | URL, *, connect_timeout: float = 5.0, pool_size: int = 5
) -> tuple[Engine, AsyncEngine]:
    """Create the sync and async engines for ``url`` (not yet connected)."""
    parsed = parse_url(url)
    sync_url = _with_driver(parsed, _SYNC_DRIVERS)
    async_url = _with_driver(parsed, _ASYNC_DRIVERS)
    try:
        if parsed.get_backend_name() == "sqlite":
            sync_engine = create_engine(sync_url, connect_args=_connect_args(parsed, connect_timeout))
            async_engine = create_async_engine(
                async_url, connect_args=_connect_args(parsed, connect_timeout), poolclass=NullPool
            )
            _install_sqlite_settings(sync_engine)
            _install_sqlite_settings(async_engine.sync_engine)
        else:
            kwargs = dict(
                connect_args=_connect_args(parsed, connect_timeout),
                pool_size=pool_size,
                pool_pre_ping=True,
            )
            sync_engine = create_engine(sync_url, **kwargs)
            async_engine = create_async_engine(async_url, **kwargs)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise ConfigurationError(
            f"no database driver for {parsed.drivername!r} ({exc}); for PostgreSQL install the extra: "
            "pip install 'langgraph-warden[postgres]'"
        ) from None
    return sync_engine, async_engine


def engines_from(
    engine: Engine | AsyncEngine,
) -> tuple[Engine, AsyncEngine]:
    """Complete a user-supplied engine with its sibling for the other API."""
    url = engine.url
    if isinstance(engine, AsyncEngine):
        async_engine = engine
        sync_engine = create_engine(_with_driver(url, _SYNC_DRIVERS))
        if is_sqlite(async_engine):
            _install_sqlite_settings(async_engine.sync_engine)
            _install_sqlite_settings(sync_engine)
    else:
        sync_engine = engine
        async_engine = create_async_engine(_with_driver(url, _ASYNC_DRIVERS))
        if is_sqlite(sync_engine):
            _install_sqlite_settings(sync_engine)
            _install_sqlite_settings(async_engine.sync_engine)
    return sync_engine, async_engine
