"""The hot path on PostgreSQL: a small pool of autocommit ``psycopg`` connections per engine.

See :class:`DirectPostgres`. Everything off the hot path uses the SQLAlchemy engines of :mod:`.engine`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine

from .per_engine import PerEngine

__all__ = ["DirectPostgres", "direct_postgres"]


class DirectPostgres:
    """Autocommit ``psycopg`` connections to one PostgreSQL database for the hot path.

    Why: the saver's common commit is one statement (rows, events and the chain
    head in one CTE, see :meth:`~.ledger.Ledger.try_append_one_statement`). In
    autocommit mode that is one round trip and one WAL flush, where a pooled
    SQLAlchemy transaction costs a pre-ping, ``BEGIN``, each statement and
    ``COMMIT`` — four or more round trips. Broken connections are dropped and
    reopened on the next call.
    """

    _MAX_IDLE = 16

    def __init__(self, engine: Engine, connect_timeout: float = 5.0) -> None:
        _cargs, params = engine.dialect.create_connect_args(engine.url)
        params.pop("context", None)  # SQLAlchemy's adapters; plain psycopg types suit this SQL
        params.setdefault("connect_timeout", max(1, int(connect_timeout)))
        self._params = params
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def connect(self) -> Any:
        """A new autocommit connection of its own (the caller keeps and closes it)."""
        import psycopg

        return psycopg.connect(autocommit=True, **self._params)

    @contextmanager
    def connection(self) -> Iterator[Any]:
        import psycopg

        if self._pid != os.getpid():
            self._idle, self._pid = [], os.getpid()
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = psycopg.connect(autocommit=True, **self._params)
        try:
            yield conn
        finally:
            if conn.closed or conn.broken:
                conn = None
            else:
                with self._lock:
                    if len(self._idle) < self._MAX_IDLE:
                        self._idle.append(conn)
                        conn = None
            if conn is not None:
                conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


#: Process-wide on purpose: the savers and ledgers on one engine share its idle connections.
_DIRECT_PG: PerEngine[DirectPostgres] = PerEngine()


def direct_postgres(engine: Engine) -> DirectPostgres:
    """The autocommit connections of a PostgreSQL engine (closed when it is disposed)."""
    return _DIRECT_PG.get(engine, lambda: DirectPostgres(engine))
