"""The signed event ledger: an append-only hash chain per thread in the saver's database.

Why in the same database: the saver appends ``checkpoint.saved`` /
``writes.saved`` events in the *same transaction* as the rows they describe,
so state and history commit together or not at all. Guards, the credential
broker and approvals append through :class:`Ledger` as an
:class:`~langgraph_warden.events.EventSink` (their own short transaction).

Appending locks one row of ``warden_heads`` (the thread's chain tip), so
threads never contend with each other; on SQLite the write transaction
already holds the database lock (``BEGIN IMMEDIATE``). Each append signs the
head it leaves with the workload's Ed25519 key: one signature per commit.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from contextlib import AbstractContextManager
from functools import lru_cache, partial
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from langgraph_warden.chain import (
    ChainReport,
    ChainRow,
    Finding,
    PublicKeyInfo,
    SignatureMode,
    verify_against_head,
    verify_chain,
)
from langgraph_warden.events import (
    GENESIS_HASH,
    Event,
    EventDraft,
    EventKind,
    EventSummary,
    SignedHead,
    Watermark,
    head_signing_bytes,
)
from langgraph_warden.errors import IntegrityError, LedgerAppendError, UnseenEventsError
from langgraph_warden.keys import KeyStore, SigningKey, b64u

from . import schema
from .engine import WRITE, DirectPostgres, DirectTx, direct_postgres, direct_sqlite, is_sqlite, write_lock
from .rawsql import EV_COLS, Raw

__all__ = ["Ledger", "VerificationReport", "checkpoint_subject"]

_EVENT_COLS = (
    schema.events.c.thread_id,
    schema.events.c.seq,
    schema.events.c.kind,
    schema.events.c.body,
    schema.events.c.hash,
    schema.events.c.key_id,
    schema.events.c.key_store,
    schema.events.c.signature,
)

log = logging.getLogger(__name__)

_SQL_ADVANCE_HEAD = "UPDATE warden_heads SET seq = ?, hash = ? WHERE thread_id = ? AND seq = ? AND hash = ?"
#: How many unseen events an UnseenEventsError lists (more: the list ends there).
_UNSEEN_LISTED = 16
_EV_INSERT_COLS = "thread_id, seq, checkpoint_ns, kind, subject, ts, body, hash, key_id, key_store, signature"


def _signed_already(_tx: DirectTx) -> None:
    """A group commit's entry for a thread whose head was signed in its own row (nothing to do)."""


@lru_cache(maxsize=None)
def _pg_type(table: str, column: str) -> str:
    """The PostgreSQL type of a schema column (the one-statement append casts its parameters)."""
    from sqlalchemy.dialects import postgresql

    return schema.metadata.tables[table].c[column].type.compile(dialect=postgresql.dialect())


class _HeadCache:
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


def checkpoint_subject(checkpoint_ns: str, checkpoint_id: str) -> str:
    """Subject of checkpoint/writes events: unique per namespace within a thread."""
    return f"{checkpoint_ns}|{checkpoint_id}" if checkpoint_ns else checkpoint_id


def _chain_rows(raw: Raw, sql: str, params: Sequence[Any]) -> list[ChainRow]:
    """Rows selected as ``EV_COLS`` (the field order of :class:`ChainRow`), straight from the cursor.

    Verification reads every event of a thread; building rows from DBAPI tuples
    instead of SQLAlchemy ``Row`` objects costs a fifth as much per event. Values are
    kept as the driver returns them: :func:`~langgraph_warden.chain.verify_chain`
    normalises (or reports) a row whose seq or body has another type.
    """
    return list(map(ChainRow._make, raw.all(sql, params)))


@dataclass(slots=True)
class VerificationReport:
    """Result of verifying one or more threads: structured, for code and the CLI."""

    threads: dict[str, ChainReport] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def events(self) -> int:
        return sum(r.events for r in self.threads.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "threads": len(self.threads),
            "events": self.events,
            "findings": [
                {"thread_id": f.thread_id, "seq": f.seq, "reason": f.reason, "detail": f.detail} for f in self.findings
            ],
        }


class Ledger:
    """Append, read and verify signed per-thread event chains."""

    def __init__(
        self,
        engine: Engine,
        async_engine: AsyncEngine | None,
        key_store: KeyStore,
        workload_id: str,
        *,
        trusted_key_ids: Iterable[str] | None = None,
    ) -> None:
        self._engine = engine
        self._write_engine = engine.execution_options(**WRITE)
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
        self._heads = _HeadCache()
        self._stripes = [threading.Lock() for _ in range(64)]

    # ------------------------------------------------------------------ keys
    def signing_key(self) -> SigningKey:
        return self._key_store.signing_key()

    def _ensure_key(self, conn: Connection | DirectTx, key: SigningKey) -> None:
        """Register ``key`` in the caller's transaction unless this process knows it is committed.

        Not remembered here: the transaction may still roll back (a request of a group commit
        rolls back to its savepoint), and with it the key's row. Keys are remembered once a
        transaction of their own has committed them (:meth:`register_key`).
        """
        if key.key_id in self._registered:
            return
        raw = Raw(conn)
        if raw.one("SELECT key_id FROM warden_keys WHERE key_id = ?", (key.key_id,)) is None:
            raw.run(
                "INSERT INTO warden_keys (key_id, algorithm, public_key, workload_id, store_kind, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key.key_id, "Ed25519", key.public_key, self.workload_id, key.store_kind,
                 raw.timestamp(datetime.now(timezone.utc))),
            )

    def _remember(self, key_id: str) -> None:
        with self._lock:
            self._registered.add(key_id)

    def register_key(self) -> str:
        """Register the current public key (idempotent); returns its key id."""
        key = self.signing_key()
        with write_lock(self._engine), self._write_engine.begin() as conn:
            self._ensure_key(conn, key)
        self._remember(key.key_id)  # committed
        return key.key_id

    def _register_signing_key(self) -> None:
        """Before an append in a transaction of its own: make sure the current key is registered
        and known to be (once per key and process), so the append need not register it."""
        if self.signing_key().key_id not in self._registered:
            self.register_key()

    def rotate_key(self) -> str:
        """Rotate the signing key. The old public key stays registered (retired) for verification."""
        old = self.signing_key()
        new = self._key_store.rotate()
        with write_lock(self._engine), self._write_engine.begin() as conn:
            self._ensure_key(conn, new)
            conn.execute(
                update(schema.keys)
                .where(schema.keys.c.key_id == old.key_id, schema.keys.c.retired_at.is_(None))
                .values(retired_at=datetime.now(timezone.utc))
            )
        self._remember(new.key_id)  # committed
        return new.key_id

    def public_keys(self, conn: Connection) -> dict[str, PublicKeyInfo]:
        rows = conn.execute(select(schema.keys)).all()
        return {
            r.key_id: PublicKeyInfo(
                key_id=r.key_id,
                public_key=bytes(r.public_key),
                workload_id=r.workload_id,
                store_kind=r.store_kind,
                created_at=r.created_at,
                retired_at=r.retired_at,
            )
            for r in rows
        }

    def _key_info(self, conn: Connection | DirectTx, key_id: str) -> dict[str, PublicKeyInfo]:
        # Keys are immutable once registered, so a per-process cache is safe.
        info = self._keys_cache.get(key_id)
        if info is None:
            if isinstance(conn, DirectTx):
                # A key that signed a visible event was committed before it: a fresh read sees it.
                with self._engine.connect() as fresh_conn:
                    fresh = self.public_keys(fresh_conn)
            else:
                fresh = self.public_keys(conn)
            with self._lock:
                self._keys_cache.update(fresh)
            info = fresh.get(key_id)
        return {key_id: info} if info is not None else {}

    # ---------------------------------------------------------------- append
    def _lock_head(self, raw: Raw, thread_id: str) -> tuple[int, str]:
        if not raw.sqlite:
            raw.run(
                "INSERT INTO warden_heads (thread_id, seq, hash) VALUES (?, ?, ?) ON CONFLICT (thread_id) DO NOTHING",
                (thread_id, 0, GENESIS_HASH),
            )
            row = raw.one("SELECT seq, hash FROM warden_heads WHERE thread_id = ? FOR UPDATE", (thread_id,))
            assert row is not None
            return int(row[0]), row[1]
        # SQLite: BEGIN IMMEDIATE (and the in-process write lock) already serialise writers.
        row = raw.one("SELECT seq, hash FROM warden_heads WHERE thread_id = ?", (thread_id,))
        if row is None:
            raw.run("INSERT INTO warden_heads (thread_id, seq, hash) VALUES (?, ?, ?)", (thread_id, 0, GENESIS_HASH))
            return 0, GENESIS_HASH
        return int(row[0]), row[1]

    def _chain(
        self,
        key: SigningKey,
        thread_id: str,
        drafts: Sequence[EventDraft],
        seq: int,
        prev: str,
        stamp: Any,
        *,
        sign: bool = True,
    ) -> tuple[list[Event], list[list[Any]], int, str]:
        """Hash ``drafts`` onto the head (seq, prev) and sign the new head: events, rows, new seq, new hash.

        ``sign=False`` leaves the head unsigned for :meth:`_sign_head_in` to sign before the commit.
        """
        now = datetime.now(timezone.utc)
        stamped = stamp(now)
        out: list[Event] = []
        rows: list[list[Any]] = []
        for draft in drafts:
            seq += 1
            ev, body = Event.create(
                thread_id=thread_id,
                checkpoint_ns=draft.checkpoint_ns,
                seq=seq,
                kind=draft.kind,
                actor=self.workload_id,
                payload=draft.payload,
                prev_hash=prev,
                ts=now,
            )
            out.append(ev)
            rows.append([thread_id, seq, draft.checkpoint_ns, draft.kind, draft.subject, stamped, body, ev.hash, None, None, None])
            prev = ev.hash
        if sign:
            rows[-1][8:11] = [key.key_id, key.store_kind, self._head_signature(key, thread_id, seq, prev)]
        return out, rows, seq, prev

    @staticmethod
    def _head_signature(key: SigningKey, thread_id: str, seq: int, head_hash: str) -> str:
        return b64u(key.sign(head_signing_bytes(thread_id, seq, head_hash, key.key_id, key.store_kind)))

    def _sign_head_in(self, key: SigningKey, thread_id: str, seq: int, head_hash: str, tx: DirectTx) -> None:
        """Sign the head a group commit leaves on ``thread_id``: its last event carries the signature."""
        Raw(tx).run(
            "UPDATE warden_events SET key_id = ?, key_store = ?, signature = ? WHERE thread_id = ? AND seq = ?",
            (key.key_id, key.store_kind, self._head_signature(key, thread_id, seq, head_hash), thread_id, seq),
        )

    @property
    def direct_postgres(self) -> DirectPostgres:
        assert self._direct_pg is not None, "not a PostgreSQL ledger"
        return self._direct_pg

    def _thread_lock(self, thread_id: str) -> threading.Lock:
        return self._stripes[hash(thread_id) % len(self._stripes)]

    def append_in(
        self,
        conn: Connection | DirectTx,
        thread_id: str,
        drafts: Sequence[EventDraft],
        seen: Watermark | None = None,
        *,
        sign_now: bool = False,
    ) -> list[Event]:
        """Append ``drafts`` to ``thread_id``'s chain inside the caller's transaction.

        The last appended event carries the signature of the new chain head. In a
        SQLite group commit carrying several requests, the signature is written
        just before ``COMMIT`` and only for the head the *transaction* leaves on
        each thread: what commits is still signed, one Ed25519 signature per
        thread per transaction instead of one per request. ``sign_now``: sign this
        head in the inserted row instead (no ``UPDATE`` before the commit), for a
        request expected to be its transaction's last on the thread (a lone
        :meth:`append`); a later append to the thread in the same transaction still
        signs the head it leaves.

        ``seen``: raise :class:`UnseenEventsError`, writing nothing, if the thread has an
        event of ``seen.kinds`` after ``seen.seq`` (checked while the chain head is locked).
        """
        if not drafts:
            return []
        raw = Raw(conn)
        key = self.signing_key()
        pending = conn.before_commit if isinstance(conn, DirectTx) else None
        sign = pending is None or sign_now
        cached = self._heads.get(thread_id) if raw.sqlite else None
        if cached is not None:
            # SQLite: this transaction holds the database's write lock, so if the head is still the one
            # this process committed last, advancing it conditionally saves reading it first. With
            # ``seen`` the same statement checks the watermark (a miss takes the path below, which says why).
            out, rows, seq, prev = self._chain(key, thread_id, drafts, *cached, raw.timestamp, sign=sign)
            if raw.run(*self._advance_head(thread_id, (seq, prev), cached, seen)) == 1:
                self._ensure_key(conn, key)
                raw.many(f"INSERT INTO warden_events ({_EV_INSERT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                self._appended(pending, key, thread_id, seq, prev, signed=sign)
                return out
        if seen is not None and raw.sqlite:
            self._check_seen(raw, thread_id, seen)  # the transaction holds the database's write lock
        self._ensure_key(conn, key)  # after the check: a stale append writes nothing, key included
        seq, prev = self._lock_head(raw, thread_id)
        if seen is not None and not raw.sqlite:
            self._check_seen(raw, thread_id, seen)  # appends to this thread wait for the head row now
        out, rows, seq, prev = self._chain(key, thread_id, drafts, seq, prev, raw.timestamp, sign=sign)
        raw.many(
            f"INSERT INTO warden_events ({_EV_INSERT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        raw.run("UPDATE warden_heads SET seq = ?, hash = ? WHERE thread_id = ?", (seq, prev, thread_id))
        self._appended(pending, key, thread_id, seq, prev, signed=sign)
        return out

    @classmethod
    def _advance_head(
        cls, thread_id: str, new: tuple[int, str], old: tuple[int, str], seen: Watermark | None
    ) -> tuple[str, list[Any]]:
        """The conditional head advance (``?`` placeholders) from ``old`` to ``new`` (seq, hash): it
        matches only if the head is still ``old`` and, with ``seen``, the thread has no event of
        ``seen.kinds`` after ``seen.seq``."""
        sql, params = _SQL_ADVANCE_HEAD, [*new, thread_id, *old]
        if seen is not None:
            unseen, more = cls._select_events("1", thread_id, seen.kinds, seen.seq)
            sql, params = f"{sql} AND NOT EXISTS ({unseen})", params + more
        return sql, params

    def _check_seen(self, raw: Raw, thread_id: str, seen: Watermark) -> None:
        sql, params = self._select_events("seq, kind, subject", thread_id, seen.kinds, seen.seq)
        found = raw.all(f"{sql} LIMIT {_UNSEEN_LISTED + 1}", params)
        if found:
            raise UnseenEventsError(
                thread_id, seen.seq, [(int(r[0]), r[1], r[2]) for r in found[:_UNSEEN_LISTED]],
                complete=len(found) <= _UNSEEN_LISTED,
            )

    def _appended(
        self, pending: dict[Any, Any] | None, key: SigningKey, thread_id: str, seq: int, head: str, *, signed: bool
    ) -> None:
        self._heads.put(thread_id, (seq, head))
        if pending is not None:
            # A later append to this thread in the same transaction replaces this entry; a head signed
            # in its row replaces an earlier append's entry (that head is no longer the last).
            pending[(id(self), thread_id)] = _signed_already if signed else partial(
                self._sign_head_in, key, thread_id, seq, head)

    def try_append_one_statement(
        self,
        thread_id: str,
        drafts: Sequence[EventDraft],
        inserts: Sequence[tuple[str, Sequence[str], Sequence[Any]]] = (),
        seen: Watermark | None = None,
    ) -> list[Event] | None:
        """PostgreSQL: insert ``inserts`` (table, columns, values) and append ``drafts`` in ONE statement.

        Why: one autocommit statement is one round trip and one commit. The
        statement is a CTE whose first part advances the chain head *only if it
        is still the head this process last saw*; every insert selects from that
        part, so when another writer moved the head nothing at all is written.
        A duplicate row raises a unique violation, which also writes nothing.
        Either way this returns ``None`` and the caller takes the locking path
        (:meth:`append_in` inside a transaction), which decides idempotency.
        With ``seen``, the head also advances only if the thread has no event of
        ``seen.kinds`` after ``seen.seq``: read in the statement's snapshot, which
        holds every event up to the head it advances from.
        """
        if self._direct_pg is None or not drafts:
            return None
        import psycopg  # the optional 'postgres' extra: only a PostgreSQL ledger gets here
        self._register_signing_key()  # this statement does not insert the key's row
        key = self.signing_key()
        if key.key_id not in self._registered:  # rotated meanwhile: the locking path registers it
            return None
        try:
            # Appends of one thread from this process take turns (LangGraph saves a step's writes and
            # its checkpoint from different threads): only another process can move the head under us.
            with self._thread_lock(thread_id), self._direct_pg.connection() as pg:
                head = self._heads.get(thread_id)
                if head is None:
                    found = pg.execute("SELECT seq, hash FROM warden_heads WHERE thread_id = %s", (thread_id,)).fetchone()
                    head = (int(found[0]), found[1]) if found else None
                seq0, prev0 = head if head is not None else (0, GENESIS_HASH)
                events, rows, seq, prev = self._chain(key, thread_id, drafts, seq0, prev0, lambda ts: ts)
                if head is None:
                    parts = [
                        "hd AS (INSERT INTO warden_heads (thread_id, seq, hash) VALUES (%s, %s, %s) "
                        "ON CONFLICT (thread_id) DO NOTHING RETURNING 1)"
                    ]
                    params: list[Any] = [thread_id, seq, prev]
                else:
                    advance, params = self._advance_head(thread_id, (seq, prev), (seq0, prev0), seen)
                    parts = [f"hd AS ({advance.replace('?', '%s')} RETURNING 1)"]
                ev_cols = [c.strip() for c in _EV_INSERT_COLS.split(",")]
                for i, (table, cols, values) in enumerate(
                    [*inserts, *(("warden_events", ev_cols, r) for r in rows)]
                ):
                    casts = ", ".join(f"CAST(%s AS {_pg_type(table, c)})" for c in cols)
                    parts.append(f"i{i} AS (INSERT INTO {table} ({', '.join(cols)}) SELECT {casts} FROM hd RETURNING 1)")
                    params.extend(values)
                ok = pg.execute("WITH " + ", ".join(parts) + " SELECT count(*) FROM hd", params).fetchone()[0]
        except psycopg.errors.UniqueViolation:
            ok = 0
        if not ok:
            self._heads.pop(thread_id)
            return None
        self._heads.put(thread_id, (seq, prev))
        return events

    def transaction(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(tx, *args)`` in one durable write transaction of the ledger's database.

        For rows that must commit together with their events (the lease list):
        ``fn`` writes with :class:`~.rawsql.Raw` and calls :meth:`append_in`.
        """
        if self._direct is not None:
            return self._direct.run_write(fn, *args)
        with self._write_engine.begin() as conn:
            return fn(conn, *args)

    def shares_database_with(self, engine: Engine) -> bool:
        return self._engine.url.render_as_string(hide_password=False) == engine.url.render_as_string(
            hide_password=False
        )

    #: ``append``/``append_soon`` take ``seen=`` (see :class:`~langgraph_warden.events.Watermark`).
    supports_watermarks = True

    def append(self, thread_id: str, drafts: Sequence[EventDraft], *, seen: Watermark | None = None) -> list[Event]:
        """EventSink: append in its own transaction; durable when this returns.

        ``seen``: append only if the thread has no event of ``seen.kinds`` after
        ``seen.seq``; otherwise write nothing and raise :class:`UnseenEventsError`.
        """
        try:
            fast = self.try_append_one_statement(thread_id, drafts, seen=seen)  # registers the key itself
            if fast is not None:
                return fast
            self._register_signing_key()
            if self._direct is not None:
                return self._direct.run_write(self._append_alone, thread_id, drafts, seen)
            with self._write_engine.begin() as tx:
                return self.append_in(tx, thread_id, drafts, seen)
        except (IntegrityError, UnseenEventsError):
            raise
        except Exception as exc:
            raise LedgerAppendError(
                f"could not append {[d.kind for d in drafts]} to thread {thread_id!r}: {type(exc).__name__}: {exc}"
            ) from exc

    def _append_alone(self, tx: DirectTx, thread_id: str, drafts: Sequence[EventDraft], seen: Watermark | None) -> list[Event]:
        # Usually the transaction's only request: its head is signed in its row (see append_in).
        return self.append_in(tx, thread_id, drafts, seen, sign_now=True)

    def append_soon(
        self,
        thread_id: str,
        drafts: Sequence[EventDraft],
        *,
        seen: Watermark | None = None,
        on_commit: Callable[[list[Event] | None, bool], None] | None = None,
    ) -> None:
        """Append without waiting for the commit, for records whose absence is a safe state.

        On SQLite the drafts join the writer's queue (:meth:`DirectSqlite.submit`): they
        commit, signed like any append, in the same transaction as or before every write
        this process queues after them — the checkpoint LangGraph saves next included —
        and before any read of this ledger in this process. A crash before that commit
        loses them, which must leave a state the reader already handles (the guard uses
        it for ``tool.completed``: without it the call is *in doubt*, exactly as when the
        process dies during the tool). A failed append is logged, never raised.
        Elsewhere (PostgreSQL) this is :meth:`append`.

        ``on_commit(events, current)`` runs once it is settled: ``events`` as committed
        (``None`` if the append failed) and whether the thread had no event of
        ``seen.kinds`` after ``seen.seq`` before them. The drafts are appended either
        way: unlike :meth:`append`, ``seen`` only observes. On SQLite it runs in the
        committing thread with the write lock held: it must not block or use the ledger.
        """
        if not drafts:
            return
        if self._direct is None:
            try:
                events, current = self._append_observing(None, thread_id, drafts, seen)
            except BaseException:
                if on_commit is not None:
                    on_commit(None, False)
                raise
            if on_commit is not None:
                on_commit(events, current)
            return
        self._register_signing_key()
        kinds = [d.kind for d in drafts]

        def report(exc: BaseException) -> None:
            log.error(
                "could not record %s on thread %r (appended without waiting): %s: %s; the call stays in doubt "
                "in the history", kinds, thread_id, type(exc).__name__, exc,
            )
            if on_commit is not None:
                on_commit(None, False)

        if on_commit is None:
            self._direct.submit(self.append_in, thread_id, drafts, on_error=report)
        else:
            self._direct.submit(
                self._append_observing, thread_id, drafts, seen, on_error=report, on_commit=lambda r: on_commit(*r)
            )

    def _append_observing(
        self, tx: DirectTx | None, thread_id: str, drafts: Sequence[EventDraft], seen: Watermark | None
    ) -> tuple[list[Event], bool]:
        """Append ``drafts`` whatever the thread holds; say whether it held nothing unseen (``seen``).

        ``tx=None``: in a transaction of its own, durable when this returns.
        """
        if tx is None:
            try:
                return self.append(thread_id, drafts, seen=seen), True
            except UnseenEventsError:
                return self.append(thread_id, drafts), False
        try:
            return self.append_in(tx, thread_id, drafts, seen), True
        except UnseenEventsError:  # raised before anything was written
            return self.append_in(tx, thread_id, drafts), False

    def flush(self) -> None:
        """Commit whatever :meth:`append_soon` queued (reads of this ledger do this first)."""
        if self._direct is not None:
            self._direct.flush()

    async def aappend(self, thread_id: str, drafts: Sequence[EventDraft]) -> list[Event]:
        # One thread hop per append: SQLite's writer and PostgreSQL's one-statement path are sync.
        import asyncio

        return await asyncio.to_thread(self.append, thread_id, drafts)

    # ------------------------------------------------------------------ read
    @staticmethod
    def _select_events(
        columns: str, thread_id: str, kinds: Sequence[str] | None, after_seq: int, subject: str | None = None
    ) -> tuple[str, list[Any]]:
        """One thread's events after ``after_seq`` (optionally of ``kinds`` / about ``subject``), in order."""
        sql = f"SELECT {columns} FROM warden_events WHERE thread_id = ? AND seq > ?"
        params: list[Any] = [thread_id, after_seq]
        if kinds:
            sql += f" AND kind IN ({', '.join('?' * len(kinds))})"
            params.extend(kinds)
        if subject is not None:
            sql += " AND subject = ?"
            params.append(subject)
        return sql + " ORDER BY seq", params

    def events_in(
        self,
        conn: Connection | DirectTx,
        thread_id: str,
        *,
        kinds: Sequence[str] | None = None,
        after_seq: int = 0,
        subject: str | None = None,
    ) -> list[Event]:
        sql, params = self._select_events("body, hash", thread_id, kinds, after_seq, subject)
        return [Event.from_body(bytes(body), hash_) for body, hash_ in Raw(conn).all(sql, params)]

    def summaries(
        self, thread_id: str, *, kinds: Sequence[str] | None = None, after_seq: int = 0
    ) -> list[EventSummary]:
        """Like :meth:`events`, as :class:`EventSummary` rows (seq, kind, ts, payload): for folds."""
        sql, params = self._select_events("seq, kind, body", thread_id, kinds, after_seq)
        # The events since a fold a guard made earlier are a few rows: a short read.
        with self._read_tx(short=after_seq > 0) as conn:
            rows = Raw(conn).all(sql, params)
        return EventSummary.from_bodies(rows)

    def _read_tx(self, *, short: bool = False) -> AbstractContextManager[Connection | DirectTx]:
        self.flush()  # read-your-writes for append_soon
        if self._direct is not None:
            return self._direct.read(short=short)
        return self._engine.connect()

    def events(
        self, thread_id: str, *, kinds: Sequence[str] | None = None, after_seq: int = 0, subject: str | None = None
    ) -> list[Event]:
        with self._read_tx() as conn:
            return self.events_in(conn, thread_id, kinds=kinds, after_seq=after_seq, subject=subject)

    async def aevents(
        self, thread_id: str, *, kinds: Sequence[str] | None = None, after_seq: int = 0, subject: str | None = None
    ) -> list[Event]:
        if self._async_engine is None or self._direct is not None:
            import asyncio

            return await asyncio.to_thread(self.events, thread_id, kinds=kinds, after_seq=after_seq, subject=subject)
        async with self._async_engine.connect() as conn:
            return await conn.run_sync(
                lambda c: self.events_in(c, thread_id, kinds=kinds, after_seq=after_seq, subject=subject)
            )

    def thread_ids(self, conn: Connection) -> list[str]:
        return [r[0] for r in conn.execute(select(schema.heads.c.thread_id).order_by(schema.heads.c.thread_id))]

    def head(self, thread_id: str) -> SignedHead | None:
        """The current signed chain head of a thread (export it to detect truncation later)."""
        self.flush()
        with self._engine.connect() as conn:
            row = conn.execute(
                select(*_EVENT_COLS)
                .where(schema.events.c.thread_id == thread_id)
                .order_by(schema.events.c.seq.desc())
                .limit(1)
            ).first()
        if row is None or not row.signature:
            return None
        return SignedHead(
            thread_id=thread_id,
            seq=int(row.seq),
            hash=row.hash,
            key_id=row.key_id,
            signature=row.signature,
            key_store=row.key_store or "",
        )

    # ---------------------------------------------------------- resume check
    def verify_checkpoint_in(
        self,
        conn: Connection,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str,
        checkpoint_digest: str,
        write_digests: dict[tuple[str, int], str],
    ) -> None:
        """Refuse a checkpoint (and its pending writes) that the signed chain does not vouch for.

        Checks: the newest ``checkpoint.saved`` event for it carries exactly this
        row's digest; the pending writes equal those recorded by ``writes.saved``
        events; and the chain from those events to the head is intact and the
        head's signature verifies.
        """
        subject = checkpoint_subject(checkpoint_ns, checkpoint_id)
        raw = Raw(conn)
        ev_rows = _chain_rows(
            raw, f"SELECT {EV_COLS} FROM warden_events WHERE thread_id = ? AND subject = ? ORDER BY seq", (thread_id, subject)
        )

        def fail(reason: str, detail: str, seq: int | None = None) -> IntegrityError:
            return IntegrityError(
                f"integrity check failed for thread {thread_id!r} checkpoint {checkpoint_id!r}"
                f"{' ns ' + repr(checkpoint_ns) if checkpoint_ns else ''}: {reason}: {detail}. "
                "The run was stopped before any node ran; run `warden audit verify` for the full report.",
                thread_id=thread_id,
                checkpoint_ns=checkpoint_ns,
                checkpoint_id=checkpoint_id,
                seq=seq,
                reason=reason,
            )

        if any(type(r.seq) is not int for r in ev_rows):
            raise fail("event_corrupt", "an event row of this checkpoint has a non-numeric seq (edited row?)")
        saved = [r for r in ev_rows if r.kind in (EventKind.CHECKPOINT_SAVED,)]
        if not saved:
            raise fail("checkpoint_unrecorded", "no checkpoint.saved event records this checkpoint (row inserted?)")
        start = min(int(r.seq) for r in ev_rows)
        rows = _chain_rows(
            raw, f"SELECT {EV_COLS} FROM warden_events WHERE thread_id = ? AND seq >= ? ORDER BY seq", (thread_id, start)
        )
        # Signed heads: check the final head's signature (it pins everything before it).
        keys = self._key_info(conn, rows[-1].key_id or "") if rows else {}
        report = verify_chain(
            thread_id,
            rows,
            keys,
            start_seq=start,
            start_prev_hash=None,
            signatures="heads",
            trusted_key_ids=self.trusted_key_ids,
        )
        # Only the final head's key is loaded; findings about earlier heads' keys are not meaningful here.
        findings = [
            f for f in report.findings if not (f.reason in ("unknown_key", "untrusted_key") and f.seq != report.head_seq)
        ]
        if report.head_seq is not None and rows[-1].key_id not in keys and rows[-1].signature:
            findings.append(Finding(thread_id, report.head_seq, "unknown_key", "head signed by an unregistered key"))
        if findings:
            f = findings[0]
            raise fail(f.reason, f.detail, f.seq)
        last_saved = max(saved, key=lambda r: r.seq)
        body = report.bodies[int(last_saved.seq)]
        if body["payload"].get("digest") != checkpoint_digest:
            raise fail(
                "checkpoint_changed",
                "the stored checkpoint row does not match the digest recorded when it was saved",
                int(last_saved.seq),
            )
        expected: dict[tuple[str, int], str] = {}
        for r in ev_rows:
            if r.kind != EventKind.WRITES_SAVED:
                continue
            payload = report.bodies[int(r.seq)]["payload"]
            for w in payload.get("rows", ()):
                expected[(payload["task_id"], int(w["idx"]))] = w["digest"]
        if expected != write_digests:
            missing = sorted(set(expected) - set(write_digests))
            extra = sorted(set(write_digests) - set(expected))
            changed = sorted(k for k in set(expected) & set(write_digests) if expected[k] != write_digests[k])
            raise fail(
                "writes_changed",
                f"pending writes differ from the recorded ones (missing={missing}, unrecorded={extra}, changed={changed})",
            )

    # ---------------------------------------------------------- full verify
    def verify_thread_in(
        self,
        conn: Connection,
        thread_id: str,
        keys: dict[str, PublicKeyInfo],
        *,
        signatures: SignatureMode = "heads",
        against: SignedHead | None = None,
        check_rows: bool = True,
    ) -> ChainReport:
        rows = _chain_rows(
            Raw(conn), f"SELECT {EV_COLS} FROM warden_events WHERE thread_id = ? ORDER BY seq", (thread_id,)
        )
        report = verify_chain(
            thread_id, rows, keys, signatures=signatures, trusted_key_ids=self.trusted_key_ids
        )
        if against is not None:
            report.findings.extend(verify_against_head(report, against, {r.seq: r for r in rows}, keys))
        if check_rows:
            from .rows import check_rows_against_events

            report.findings.extend(check_rows_against_events(conn, thread_id, report))
        return report

    def verify(
        self,
        *,
        thread_id: str | None = None,
        signatures: SignatureMode = "heads",
        against: Iterable[SignedHead] = (),
        check_rows: bool = True,
    ) -> VerificationReport:
        """Verify every thread (or one) offline: chain, signatures, rows, and saved heads."""
        result = VerificationReport()
        saved = {h.thread_id: h for h in against}
        self.flush()
        with self._engine.connect() as conn:
            keys = self.public_keys(conn)
            threads = [thread_id] if thread_id is not None else self.thread_ids(conn)
            if thread_id is None:
                for tid in saved:
                    if tid not in threads:
                        threads.append(tid)
            for tid in threads:
                report = self.verify_thread_in(
                    conn, tid, keys, signatures=signatures, against=saved.get(tid), check_rows=check_rows
                )
                if report.events == 0 and tid in saved:
                    report.fail(None, "truncated", "a saved head exists for this thread but it has no events")
                result.threads[tid] = report
                result.findings.extend(report.findings)
        return result
