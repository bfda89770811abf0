"""The hot path on SQLite: raw ``sqlite3`` connections to one file, with a group-commit writer.

See :class:`DirectSqlite`. Everything off the hot path (schema, migrations, rare operations) uses
the SQLAlchemy engines of :mod:`.engine`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine

from .per_engine import PerEngine
from .rawsql import DirectTx
from .sqlite_settings import apply_sqlite_pragmas, write_lock_for_path

__all__ = ["DirectSqlite", "direct_sqlite"]


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
        apply_sqlite_pragmas(conn)
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


#: Process-wide on purpose: every saver and ledger on one engine must share its writer and group-commit queue.
_DIRECT: PerEngine[DirectSqlite] = PerEngine()


def direct_sqlite(engine: Engine) -> DirectSqlite:
    """The raw connections of a SQLite engine (one set per engine, closed when it is disposed)."""
    return _DIRECT.get(engine, lambda: DirectSqlite(os.path.abspath(engine.url.database or "")))
