"""What every part of the ledger shares: its connections, its per-process caches, and how it
opens a read or a write transaction.

Why a base: the ledger's jobs — keys (:mod:`.ledger_keys`), appends (:mod:`.ledger_append`),
verified event reads (:mod:`.event_reads`) and verification (:mod:`.verification`) — each live
in a module of their own, but they share one state: the chain heads this process committed, how
far it verified each chain, the keys it registered. :class:`~.ledger.Ledger` is those parts
combined; no call goes through an extra layer.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from langgraph_warden.anchors import HeadStore
from langgraph_warden.chain import PublicKeyInfo
from langgraph_warden.keys import KeyStore

from .claims import AdvisoryCallClaims, CallClaims, file_call_claims
from .direct_sqlite import direct_sqlite
from .engine import WRITE, is_sqlite
from .pg_pool import DirectPostgres, direct_postgres
from .rawsql import DirectTx
from .trust import TrustCache

if TYPE_CHECKING:
    from .anchoring import AnchorWriter

__all__ = ["LedgerBase", "HeadCache", "APPENDED"]

#: Key in a SQLAlchemy connection's ``info`` of the threads it appended to (noted at commit).
APPENDED = "warden_appended_threads"


class HeadCache:
    """A bounded, thread-safe map thread_id -> (seq, hash) of recently committed heads."""

    _SIZE = 4096

    def __init__(self) -> None:
        self._data: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, thread_id: str) -> tuple[int, str] | None:
        with self._lock:
            return self._data.get(thread_id)

    def put(self, thread_id: str, head: tuple[int, str]) -> None:
        with self._lock:
            self._data[thread_id] = head
            self._data.move_to_end(thread_id)
            if len(self._data) > self._SIZE:
                self._data.popitem(last=False)

    def pop(self, thread_id: str) -> None:
        with self._lock:
            self._data.pop(thread_id, None)


class LedgerBase:
    """The ledger's state and transactions (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        async_engine: AsyncEngine | None,
        key_store: KeyStore,
        workload_id: str,
        *,
        trusted_key_ids: Iterable[str] | None = None,
        head_store: HeadStore | None = None,
    ) -> None:
        self._engine = engine
        self._write_engine = engine.execution_options(**WRITE)
        # A verified read takes several statements: on PostgreSQL they share one snapshot.
        self._read_engine = engine if engine.dialect.name == "sqlite" else engine.execution_options(
            isolation_level="REPEATABLE READ")
        self._async_engine = async_engine
        self._key_store = key_store
        self.workload_id = workload_id
        self.trusted_key_ids = frozenset(trusted_key_ids) if trusted_key_ids is not None else None
        self._registered: set[str] = set()
        self._keys_cache: dict[str, PublicKeyInfo] = {}
        self._lock = threading.Lock()
        self._direct = direct_sqlite(engine) if is_sqlite(engine) else None
        self._direct_pg = direct_postgres(engine) if engine.dialect.name == "postgresql" else None
        # Chain heads this process committed last: the one-statement append's expectation.
        self._heads = HeadCache()
        self._stripes = [threading.Lock() for _ in range(64)]
        #: One live attempt per tool call across processes (see claims.py).
        self.claims: CallClaims | None = (
            file_call_claims(engine.url.database or "") if self._direct is not None
            else AdvisoryCallClaims(self._direct_pg.connect) if self._direct_pg is not None else None
        )
        #: Notified when this process commits a checkpoint (see wait_for_checkpoint).
        self._saved_cond = threading.Condition()
        #: How far this process verified each thread's chain from genesis (see trust.py).
        self._trust = TrustCache()
        self.head_store = head_store
        #: Saves signed heads to ``head_store`` (set by :class:`~.ledger.Ledger`, which it needs whole).
        self._anchors: AnchorWriter | None = None

    @property
    def direct_postgres(self) -> DirectPostgres:
        assert self._direct_pg is not None, "not a PostgreSQL ledger"
        return self._direct_pg

    def _thread_lock(self, thread_id: str) -> threading.Lock:
        return self._stripes[hash(thread_id) % len(self._stripes)]

    def flush(self) -> None:
        """Commit whatever :meth:`~.ledger_append.LedgerAppends.append_soon` queued (reads of this
        ledger do this first)."""
        if self._direct is not None:
            self._direct.flush()

    def _read_tx(self, *, short: bool = False) -> AbstractContextManager[Connection | DirectTx]:
        self.flush()  # read-your-writes for append_soon
        if self._direct is not None:
            return self._direct.read(short=short)
        return self._read_engine.connect()

    def transaction(self, fn: Any, *args: Any, sqlalchemy: bool = False) -> Any:
        """Run ``fn(tx, *args)`` in one durable write transaction of the ledger's database.

        For rows that must commit together with their events (the lease list, the saver's
        checkpoints): ``fn`` writes with :class:`~.rawsql.Raw` and calls ``append_in``.
        ``sqlalchemy=True``: a SQLAlchemy connection even on SQLite (``fn`` uses its API).
        """
        if self._direct is not None and not sqlalchemy:
            return self._direct.run_write(fn, *args)
        with self._write_engine.begin() as conn:
            result = fn(conn, *args)
            appended = conn.info.pop(APPENDED, ())
        self._committed(appended)
        return result

    def _committed(self, thread_ids: Iterable[str]) -> None:
        """A SQLAlchemy transaction that appended to ``thread_ids`` committed: the head store's
        writer saves their new heads (it verifies up to them first; see anchoring.py)."""
        if self._anchors is not None:
            for thread_id in thread_ids:
                self._anchors.note(thread_id)

    def shares_database_with(self, engine: Engine) -> bool:
        return self._engine.url.render_as_string(hide_password=False) == engine.url.render_as_string(
            hide_password=False
        )
