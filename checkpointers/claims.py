"""Cross-process claims on one tool call: at most one live attempt per (thread, tool call id).

Why a lock beside the ledger: two workers resuming one thread at the same moment both see a
call as not yet run. The ledger makes the *record* atomic (``tool.started`` commits only if no
other attempt of the call started since the worker read it), but the second worker must also
know whether the first is still running — then it waits and replays the outcome — or died —
then the call is in doubt, exactly as after a crash. A lock that the operating system or the
database releases the moment its holder dies answers that without heartbeats or timeouts:

* SQLite (one machine): a POSIX record lock (``fcntl.lockf``) on one byte of a side file
  ``<database>-calls.lock``, at an offset derived from the call; the kernel drops it when the
  process exits, however it exits.
* PostgreSQL (many machines): a session advisory lock (``pg_try_advisory_lock``) held on one
  dedicated connection per process; the server drops it when that session ends.

Two calls whose keys collide share a lock: the second waits for the first, never runs twice.
Within a process the guard already serialises a call (its in-flight table); these locks count
holders per key so collisions inside one process never block it or release early.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from langgraph_warden.events import CallClaims  # the seam, declared in the core for the guard

from . import statements as sql

__all__ = ["CallClaims", "FileCallClaims", "AdvisoryCallClaims", "file_call_claims"]

log = logging.getLogger(__name__)


def _key(thread_id: str, tool_call_id: str) -> bytes:
    return hashlib.sha256(f"{thread_id}\0{tool_call_id}".encode()).digest()


class _Counted:
    """Shared bookkeeping: holders per lock slot in this process, polling with backoff."""

    def __init__(self) -> None:
        self._held: dict[int, int] = {}
        self._mutex = threading.Lock()
        self._pid = os.getpid()

    def _slot(self, thread_id: str, tool_call_id: str) -> int:
        raise NotImplementedError

    def _try(self, slot: int) -> bool:
        raise NotImplementedError

    def _unlock(self, slot: int) -> None:
        raise NotImplementedError

    def _after_fork(self) -> None:
        if self._pid != os.getpid():  # locks are not inherited across fork(): start clean
            self._held, self._pid = {}, os.getpid()
            self._reset()

    def _reset(self) -> None:
        pass

    def acquire(self, thread_id: str, tool_call_id: str, timeout: float) -> bool:
        slot = self._slot(thread_id, tool_call_id)
        deadline = time.monotonic() + max(0.0, timeout)
        delay = 0.001
        while True:
            with self._mutex:
                self._after_fork()
                if slot in self._held:
                    self._held[slot] += 1
                    return True
                if self._try(slot):
                    self._held[slot] = 1
                    return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.05)

    def release(self, thread_id: str, tool_call_id: str) -> None:
        slot = self._slot(thread_id, tool_call_id)
        with self._mutex:
            n = self._held.get(slot, 0)
            if n > 1:
                self._held[slot] = n - 1
            elif n == 1:
                del self._held[slot]
                try:
                    self._unlock(slot)
                except Exception as exc:  # noqa: BLE001 - a lost lock is released anyway
                    log.warning("could not release call lock %s: %s: %s", slot, type(exc).__name__, exc)

    def held(self) -> int:
        """How many call locks this process holds (tests)."""
        with self._mutex:
            return len(self._held)


class FileCallClaims(_Counted):
    """SQLite: byte-range locks on ``<database>-calls.lock`` (one instance per file per process).

    POSIX record locks belong to the process, and closing *any* descriptor of the file drops
    all of them: so the file is opened once per process and never closed (see
    :func:`file_call_claims`).
    """

    #: Lock offsets span 2**40 bytes of a sparse, empty file: collisions are negligible.
    _SPAN = 1 << 40

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._fd: int | None = None

    def _reset(self) -> None:
        self._fd = None  # the child opens its own descriptor

    def _descriptor(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._fd

    def _slot(self, thread_id: str, tool_call_id: str) -> int:
        return int.from_bytes(_key(thread_id, tool_call_id)[:8], "big") % self._SPAN

    def _try(self, slot: int) -> bool:
        import fcntl

        try:
            fcntl.lockf(self._descriptor(), fcntl.LOCK_EX | fcntl.LOCK_NB, 1, slot)
        except (BlockingIOError, PermissionError):
            return False
        return True

    def _unlock(self, slot: int) -> None:
        import fcntl

        fcntl.lockf(self._descriptor(), fcntl.LOCK_UN, 1, slot)


#: Process-wide on purpose: POSIX record locks belong to the process, and closing any descriptor of the
#: lock file drops all of them, so every saver and guard of this process must share one descriptor.
_FILE_CLAIMS: dict[str, FileCallClaims] = {}
_FILE_CLAIMS_GUARD = threading.Lock()


def file_call_claims(database_path: str) -> FileCallClaims:
    """The process-wide claims of the SQLite file at ``database_path``."""
    path = os.path.abspath(database_path) + "-calls.lock"
    with _FILE_CLAIMS_GUARD:
        found = _FILE_CLAIMS.get(path)
        if found is None:
            found = _FILE_CLAIMS[path] = FileCallClaims(path)
        return found


class AdvisoryCallClaims(_Counted):
    """PostgreSQL: session advisory locks on one dedicated autocommit connection of this process.

    If that connection breaks, the server has already released its locks: they are forgotten
    here and a warning is logged (another worker may then find a live call unlocked and treat
    it as in doubt: recorded aborted and not re-run unless the tool is idempotent — never run
    twice by surprise).
    """

    def __init__(self, connect: Callable[[], Any]) -> None:
        super().__init__()
        self._connect = connect
        self._conn: Any = None

    def _reset(self) -> None:
        self._conn = None

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None and self._held:
                log.warning("the PostgreSQL session holding %d call locks was lost; they were released", len(self._held))
                self._held.clear()
            self._conn = self._connect()
        return self._conn

    def _slot(self, thread_id: str, tool_call_id: str) -> int:
        return int.from_bytes(_key(thread_id, tool_call_id)[:8], "big", signed=True)

    def _try(self, slot: int) -> bool:
        return bool(self._connection().execute(sql.PG_TRY_ADVISORY_LOCK, (slot,)).fetchone()[0])

    def _unlock(self, slot: int) -> None:
        self._connection().execute(sql.PG_ADVISORY_UNLOCK, (slot,))
