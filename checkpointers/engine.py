"""Engines for the saver: one URL gives a sync and an async SQLAlchemy engine.

Why both: a graph compiled with the saver must work with ``invoke``/``stream``
(sync API) and ``ainvoke``/``astream`` (async API) on the same object. The two
engines point at the same database; every transaction's logic is written once
as a sync function and run on an ``AsyncConnection`` with ``run_sync``.

SQLite durability settings (applied to every connection):

* ``journal_mode=WAL`` — readers never block the writer, and a crash leaves
  the database consistent (the WAL is replayed on open).
* ``synchronous=FULL`` — every commit is fsynced before it returns. In WAL
  mode ``NORMAL`` may lose the last transactions on power loss; a checkpointer
  that claims durability cannot.
* ``busy_timeout=30000`` — two processes on one file wait for each other
  instead of failing with ``database is locked``.
* write transactions start with ``BEGIN IMMEDIATE`` so a reader never has to
  upgrade to a writer mid-transaction (the classic SQLite deadlock); reads use
  a plain deferred ``BEGIN``.
* ``foreign_keys=ON`` for safety (the schema itself needs none).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from langgraph_warden.errors import ConfigurationError

__all__ = [
    "parse_url", "make_engines", "WRITE", "is_sqlite", "write_lock",
    "DirectTx", "DirectSqlite", "direct_sqlite", "DirectPostgres", "direct_postgres",
]

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


_SQLITE_LOCKS: dict[str, threading.RLock] = {}
_SQLITE_LOCKS_GUARD = threading.Lock()


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


def write_lock_for_path(key: str) -> threading.RLock:
    """The process-wide write lock of the SQLite file at absolute path ``key``."""
    with _SQLITE_LOCKS_GUARD:
        lock = _SQLITE_LOCKS.get(key)
        if lock is None:
            lock = _SQLITE_LOCKS[key] = threading.RLock()
    return lock


def _with_driver(url: URL, drivers: dict[str, str]) -> URL:
    backend = url.get_backend_name()
    return url.set(drivername=drivers[backend])


def _apply_sqlite_pragmas(dbapi_conn: Any) -> None:
    """The durability settings of the module docstring, on one DBAPI connection."""
    # Take transaction control from the driver so BEGIN is ours.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _install_sqlite_settings(sync_engine: Engine) -> None:
    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised via engines
        _apply_sqlite_pragmas(dbapi_conn)

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


class DirectTx:
    """An open transaction on a raw DBAPI connection: what :class:`~.rawsql.Raw` executes on.

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


#: A flusher with nothing to do for this long exits (the next ``submit`` starts another).
_FLUSHER_IDLE_SECONDS = 2.0
#: How long a submitted request waits for a writer to take it along before the flusher commits it.
_FLUSH_WINDOW_SECONDS = 0.002


class _WriteRequest:
    __slots__ = ("fn", "args", "result", "error", "done", "on_error", "on_commit", "submitted")

    def __init__(
        self,
        fn: Any,
        args: tuple,
        on_error: Callable[[BaseException], None] | None = None,
        on_commit: Callable[[Any], None] | None = None,
    ) -> None:
        self.fn, self.args, self.on_error, self.on_commit = fn, args, on_error, on_commit
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False
        self.submitted = False  # queued by submit(): nobody waits for it


class DirectSqlite:
    """Raw ``sqlite3`` connections to one database file for the hot path, with group commit.

    Why raw: SQLAlchemy's pool checkout, ``begin`` event and commit bookkeeping
    cost ~90 µs per transaction — as much as the statements of a checkpoint.

    Why group commit: with ``synchronous=FULL`` every commit waits for an fsync
    (~250 µs here). LangGraph saves a step's writes and the previous checkpoint
    from background threads at nearly the same moment, so writers queue up; the
    thread that gets the file's write lock runs *every* queued request, each in
    its own ``SAVEPOINT`` (a failing request rolls back alone and gets its own
    exception), and commits them with one fsync. No request returns before the
    commit that contains it is durable, so durability is exactly as before.
    The ledger signs each thread's chain head once per such transaction (see
    :attr:`DirectTx.before_commit`), not once per request.
    Readers use a small stack of connections; everything else stays on the engine.

    :meth:`submit` queues a request *without* waiting for it (see there): it joins the
    next batch any writer commits, or a background flusher commits it.
    """

    _MAX_IDLE_READERS = 8
    #: how many times a leader takes requests queued while it ran before it commits (bounds its latency)
    _LATE_JOIN_ROUNDS = 2

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = write_lock_for_path(path)
        self._writer: sqlite3.Connection | None = None
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._queue: list[_WriteRequest] = []
        self._queue_lock = threading.Lock()
        self._pid = os.getpid()
        #: transactions committed and requests they carried (for tests and benchmarks)
        self.commits = 0
        self.requests = 0
        self._flusher: threading.Thread | None = None
        self._wake = threading.Event()
        self._unfinished = 0  # submitted requests not yet committed (or failed)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        _apply_sqlite_pragmas(conn)
        return conn

    def _after_fork(self) -> None:
        # A connection must not cross fork(): the child opens its own.
        if self._pid != os.getpid():
            self._writer, self._readers, self._queue, self._pid = None, [], [], os.getpid()
            self._flusher, self._wake, self._unfinished = None, threading.Event(), 0  # threads do not survive fork()

    def run_write(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(DirectTx, *args)`` in a write transaction; return when it is durably committed."""
        self._after_fork()
        req = _WriteRequest(fn, args)
        with self._queue_lock:
            self._queue.append(req)
        with self._lock:
            if not req.done:  # nobody took it in their batch: lead one
                self._commit_batch(self._take_queue())
        if req.error is not None:
            raise req.error
        return req.result

    def submit(
        self,
        fn: Any,
        *args: Any,
        on_error: Callable[[BaseException], None] | None = None,
        on_commit: Callable[[Any], None] | None = None,
    ) -> None:
        """Queue ``fn(DirectTx, *args)`` and return at once, before it is committed.

        Ordering is the guarantee: the request commits in the same transaction as, or
        before, every write queued after it (:meth:`run_write` leaders take the queue
        in order), and before any :meth:`flush` returns. If no writer comes along, a
        background thread commits it after a short window (``_FLUSH_WINDOW_SECONDS``). A failure cannot reach the
        caller, so it goes to ``on_error`` (the request rolled back alone, as in a batch);
        after a successful commit, ``fn``'s result goes to ``on_commit``. Both run in the
        committing thread, write lock held: they must not block or write.
        A crash before the commit loses the request: use it only for records whose
        absence is itself a safe, recorded state (the ledger's ``append_soon``).
        """
        self._after_fork()
        req = _WriteRequest(fn, args, on_error, on_commit)
        req.submitted = True
        with self._queue_lock:
            self._queue.append(req)
            self._unfinished += 1
            if self._flusher is None or not self._flusher.is_alive():
                self._flusher = threading.Thread(target=self._flush_loop, name="warden-sqlite-flusher", daemon=True)
                self._flusher.start()
        self._wake.set()

    def flush(self) -> None:
        """Commit every request submitted so far (no-op when none is): read-your-writes for :meth:`submit`.

        Also waits for a batch another thread is committing (its requests have left the queue).
        A thread already holding the file's write lock (inside a write transaction) does not
        flush: it cannot open a second transaction; the flusher commits after it.
        """
        if not self._unfinished or self._lock._is_owned():  # type: ignore[attr-defined]
            return
        with self._lock:
            batch = self._take_queue()
            if batch:
                self._commit_batch(batch)

    def _flush_loop(self) -> None:
        wake = self._wake
        while True:
            if not wake.wait(timeout=_FLUSHER_IDLE_SECONDS):
                with self._queue_lock:  # idle: exit (the next submit starts a new flusher)
                    if not self._queue and not wake.is_set():
                        if self._flusher is threading.current_thread():
                            self._flusher = None
                        return
                continue
            wake.clear()
            # Let the submitter get on (the GIL) and a writer that follows within the window (LangGraph
            # saving the step's writes after a tool call) take the request into its own commit.
            time.sleep(_FLUSH_WINDOW_SECONDS)
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - each request's error went to its on_error; keep flushing
                pass

    def _take_queue(self) -> list[_WriteRequest]:
        """Everything queued so far, in order (the caller holds the write lock and commits it)."""
        with self._queue_lock:
            batch, self._queue = self._queue, []
        return batch

    @staticmethod
    def _run_each(tx: DirectTx, requests: list[_WriteRequest]) -> None:
        """Run each request in its own savepoint: a failing one rolls back alone and keeps its exception."""
        cur, pending, after = tx.cursor, tx.before_commit, tx.after_commit
        assert pending is not None and after is not None
        for req in requests:
            cur.execute("SAVEPOINT warden_req")
            kept, kept_after = dict(pending), len(after)
            try:
                req.result = req.fn(tx, *req.args)
            except BaseException as exc:  # noqa: BLE001 - handed to its caller
                cur.execute("ROLLBACK TO warden_req")
                pending.clear()
                pending.update(kept)  # what the rolled-back request registered goes with it
                del after[kept_after:]
                req.error = exc
            cur.execute("RELEASE warden_req")

    def _commit_batch(self, batch: list[_WriteRequest]) -> None:
        if self._writer is None:
            self._writer = self._open()
        conn = self._writer
        cur = conn.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            # Chain heads are signed just before COMMIT, once per thread (see DirectTx.before_commit), even
            # for a lone request: requests that join late may move its head. (A lone Ledger.append signs
            # its head in its row and registers that; a joiner on its thread registers the newer head.)
            finishers: dict[Any, Callable[[DirectTx], None]] = {}
            tx = DirectTx(cur, True, finishers)
            if len(batch) == 1:
                # Alone: no savepoint; a failure rolls the whole (one-request) transaction back.
                batch[0].result = batch[0].fn(tx, *batch[0].args)
            else:
                self._run_each(tx, batch)
            # Requests queued while these ran join this transaction instead of waiting for its
            # fsync and paying their own (LangGraph queues a step's checkpoint right after its writes).
            for _ in range(self._LATE_JOIN_ROUNDS):
                late = self._take_queue()
                if not late:
                    break
                batch.extend(late)
                self._run_each(tx, late)
            for finish in finishers.values():
                finish(tx)
            cur.execute("COMMIT")
            self.commits += 1
            self.requests += len(batch)
            for committed in tx.after_commit or ():
                try:
                    committed()
                except Exception:  # noqa: BLE001 - bookkeeping after a durable commit must not fail it
                    pass
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for req in batch:
                if req.error is None:
                    req.error = exc
                    req.result = None
        finally:
            cur.close()
            submitted = 0
            for req in batch:
                req.done = True
                submitted += req.submitted
            if submitted:
                with self._queue_lock:
                    self._unfinished -= submitted
            for req in batch:
                report = req.on_error if req.error is not None else req.on_commit
                if report is not None:
                    try:
                        report(req.error if req.error is not None else req.result)
                    except Exception:  # noqa: BLE001 - a reporter must not break the other requests
                        pass

    @contextmanager
    def read(self, *, short: bool = False) -> Iterator[DirectTx]:
        """One read transaction (a consistent snapshot of the WAL), on a pooled reader connection.

        ``short=True`` (a hot-path read of a few rows) uses the writer's connection when no
        write is running: SQLite drops a connection's page cache whenever another connection
        changed the database, so a reader after a commit re-reads every B-tree page it
        touches, while the connection that made the commit still holds them (a guard's read
        of a thread's new events: ~130 -> ~90 µs). Writers of this process wait meanwhile,
        which is why long reads (a whole history) stay on readers.
        """
        self._after_fork()
        lock = self._lock
        if short and not lock._is_owned() and lock.acquire(blocking=False):  # type: ignore[attr-defined]
            try:
                if self._writer is None:
                    self._writer = self._open()
                try:
                    with self._snapshot(self._writer) as tx:
                        yield tx
                finally:
                    if not self._ended(self._writer):
                        self._writer = None  # closed: the next write opens a fresh one
            finally:
                lock.release()
            return
        with self._readers_lock:
            conn = self._readers.pop() if self._readers else None
        if conn is None:
            conn = self._open()
        try:
            with self._snapshot(conn) as tx:
                yield tx
        finally:
            if self._ended(conn):
                with self._readers_lock:
                    if len(self._readers) < self._MAX_IDLE_READERS:
                        self._readers.append(conn)
                        conn = None
                if conn is not None:
                    conn.close()

    @staticmethod
    @contextmanager
    def _snapshot(conn: sqlite3.Connection) -> Iterator[DirectTx]:
        cur = conn.cursor()
        try:
            cur.execute("BEGIN")
            yield DirectTx(cur, True)
        finally:
            cur.close()

    @staticmethod
    def _ended(conn: sqlite3.Connection) -> bool:
        """End a read transaction on ``conn``; False (and ``conn`` closed) if it is no longer usable."""
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            conn.close()
            return False
        return True

    def close(self) -> None:
        """Commit what :meth:`submit` queued, then close idle connections (reopened on next use).

        Also runs at interpreter exit (the engine's finalizer, see :func:`direct_sqlite`), so a
        normal exit commits what was queued; only a crash can lose it.
        """
        self.flush()
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()


_DIRECT: weakref.WeakKeyDictionary[Engine, DirectSqlite] = weakref.WeakKeyDictionary()
_DIRECT_GUARD = threading.Lock()


def direct_sqlite(engine: Engine) -> DirectSqlite:
    """The raw connections of a SQLite engine (one set per engine, closed when it is disposed)."""
    with _DIRECT_GUARD:
        found = _DIRECT.get(engine)
        if found is None:
            found = _DIRECT[engine] = DirectSqlite(os.path.abspath(engine.url.database or ""))
            weakref.finalize(engine, found.close)
            event.listen(engine, "engine_disposed", lambda _e: found.close())
        return found


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


_DIRECT_PG: weakref.WeakKeyDictionary[Engine, DirectPostgres] = weakref.WeakKeyDictionary()


def direct_postgres(engine: Engine) -> DirectPostgres:
    """The autocommit connections of a PostgreSQL engine (closed when it is disposed)."""
    with _DIRECT_GUARD:
        found = _DIRECT_PG.get(engine)
        if found is None:
            found = _DIRECT_PG[engine] = DirectPostgres(engine)
            weakref.finalize(engine, found.close)
            event.listen(engine, "engine_disposed", lambda _e: found.close())
        return found
