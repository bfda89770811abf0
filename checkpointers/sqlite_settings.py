"""How every connection to a SQLite file is set up, and the lock its writers in one process share.

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

Both the SQLAlchemy engines (:mod:`.engine`) and the raw hot-path connections (:mod:`.direct_sqlite`)
apply these settings and take this lock.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["apply_sqlite_pragmas", "write_lock_for_path"]

#: Process-wide on purpose: every engine and raw writer of one file in this process must take the same lock.
_SQLITE_LOCKS: dict[str, threading.RLock] = {}
_SQLITE_LOCKS_GUARD = threading.Lock()


def write_lock_for_path(key: str) -> threading.RLock:
    """The process-wide write lock of the SQLite file at absolute path ``key``."""
    with _SQLITE_LOCKS_GUARD:
        lock = _SQLITE_LOCKS.get(key)
        if lock is None:
            lock = _SQLITE_LOCKS[key] = threading.RLock()
    return lock


def apply_sqlite_pragmas(dbapi_conn: Any) -> None:
    """The durability settings of the module docstring, on one DBAPI connection."""
    # Take transaction control from the driver so BEGIN is ours.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
