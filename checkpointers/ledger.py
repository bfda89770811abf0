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
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, partial
from typing import Any

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from langgraph_warden.anchors import HeadStore
from langgraph_warden.chain import (
    ChainPosition,
    ChainReport,
    ChainRow,
    Finding,
    PublicKeyInfo,
    SignatureMode,
    verify_against_head,
    verify_chain,
    verify_extension,
)
from langgraph_warden.errors import IntegrityError, LedgerAppendError, UnseenEventsError
from langgraph_warden.events import (
    GENESIS_HASH,
    Event,
    EventDraft,
    EventKind,
    EventSummary,
    SignedHead,
    Watermark,
    event_hash,
    head_signing_bytes,
)
from langgraph_warden.keys import KeyStore, SigningKey, b64u

from . import schema
from .claims import AdvisoryCallClaims, CallClaims, file_call_claims
from .engine import WRITE, DirectPostgres, DirectTx, direct_postgres, direct_sqlite, is_sqlite, write_lock
from .rawsql import EV_COLS, Raw
from .trust import (
    CHAIN_SNAPSHOT,
    CHAIN_SNAPSHOT_SUBJECT,
    FOLDED_KINDS,
    SNAPSHOT_EVERY,
    ThreadTrust,
    TrustCache,
    full_fold,
    replay_snapshots,
)

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
#: Key in a SQLAlchemy connection's ``info`` of the threads it appended to (noted at commit).
_APPENDED = "warden_appended_threads"
_EV_INSERT_COLS = "thread_id, seq, checkpoint_ns, kind, subject, ts, body, hash, key_id, key_store, signature"


def _signed_already(_tx: DirectTx) -> None:
    """A group commit's entry for a thread whose head was signed in its own row (nothing to do)."""


@cache
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
        self._heads = _HeadCache()
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
        self._anchors = None
        if head_store is not None:
            from .anchoring import AnchorWriter

            self._anchors = AnchorWriter(self, head_store)

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
                 raw.timestamp(datetime.now(UTC))),
            )

    def _remember(self, key_id: str) -> None:
        with self._lock:
            self._registered.add(key_id)

    def trusted_ids(self) -> frozenset[str] | None:
        """The keys whose signatures this ledger accepts: ``None`` (any registered key) unless
        ``trusted_key_ids`` pinned them, and then those plus the keys this process signs with."""
        if self.trusted_key_ids is None:
            return None
        with self._lock:
            own = set(self._registered)
        return self.trusted_key_ids | own

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
                .values(retired_at=datetime.now(UTC))
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
    def lock_thread(self, conn: Connection | DirectTx, thread_id: str) -> None:
        """PostgreSQL: take the thread's head row lock now, before reading rows a write depends on.

        Why: a saver write reads what exists (a task's writes) and then inserts; two workers doing
        that at once both read nothing and the second insert fails. Holding the lock the append
        takes anyway makes the second wait, then read the first one's rows. (SQLite's write
        transactions are already serialised.)
        """
        raw = Raw(conn)
        if not raw.sqlite:
            self._lock_head(raw, thread_id)

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
        now = datetime.now(UTC)
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
            full = self._with_snapshot(thread_id, drafts, ChainPosition(*cached))
            out, rows, seq, prev = self._chain(key, thread_id, full, *cached, raw.timestamp, sign=sign)
            if raw.run(*self._advance_head(thread_id, (seq, prev), cached, seen)) == 1:
                self._ensure_key(conn, key)
                raw.many(f"INSERT INTO warden_events ({_EV_INSERT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                self._appended(pending, key, thread_id, seq, prev, signed=sign)
                self._on_commit_extend(conn, thread_id, ChainPosition(*cached), ChainPosition(seq, prev), out)
                return out[: len(drafts)]
        if seen is not None and raw.sqlite:
            self._check_seen(raw, thread_id, seen)  # the transaction holds the database's write lock
        self._ensure_key(conn, key)  # after the check: a stale append writes nothing, key included
        seq, prev = self._lock_head(raw, thread_id)
        start = ChainPosition(seq, prev)
        self._check_not_behind(thread_id, start)
        if seen is not None and not raw.sqlite:
            self._check_seen(raw, thread_id, seen)  # appends to this thread wait for the head row now
        full = self._with_snapshot(thread_id, drafts, start)
        out, rows, seq, prev = self._chain(key, thread_id, full, seq, prev, raw.timestamp, sign=sign)
        raw.many(
            f"INSERT INTO warden_events ({_EV_INSERT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        raw.run("UPDATE warden_heads SET seq = ?, hash = ? WHERE thread_id = ?", (seq, prev, thread_id))
        self._appended(pending, key, thread_id, seq, prev, signed=sign)
        self._on_commit_extend(conn, thread_id, start, ChainPosition(seq, prev), out)
        return out[: len(drafts)]

    def _with_snapshot(self, thread_id: str, drafts: Sequence[EventDraft], head: ChainPosition) -> Sequence[EventDraft]:
        """``drafts``, followed by a ``chain.snapshot`` when one is due.

        A snapshot records the fold (trust.py) as it stands after ``drafts``: the newest
        checkpoints of each namespace and their writes. Taken only when this process verified
        the thread up to exactly ``head`` (the head being appended onto), so what it records is
        the whole history's fold; signed with the transaction, replayed by ``verify``. A later
        first touch starts at the newest one: its cost is bounded by ``SNAPSHOT_EVERY``, not by
        the thread's length. The caller gets ``drafts``' events only.
        """
        trust = self._trust.snapshot(thread_id)
        if trust is None or trust.position != head or head.seq + len(drafts) - trust.snap_seq < SNAPSHOT_EVERY:
            return drafts
        trust.fold_docs([{"kind": d.kind, "checkpoint_ns": d.checkpoint_ns, "payload": d.payload}
                         for d in drafts if d.kind in FOLDED_KINDS and d.kind != CHAIN_SNAPSHOT])
        if trust.unsure:
            return drafts
        payload = {"covers": head.seq + len(drafts), "trust": trust.canonical()}
        return [*drafts, EventDraft(CHAIN_SNAPSHOT, payload, subject=CHAIN_SNAPSHOT_SUBJECT)]

    def _check_not_behind(self, thread_id: str, head: ChainPosition) -> None:
        """Refuse to append onto a head older than (or different from) what this process verified.

        Why: appending after a cut-back history would launder the cut (the new events link to
        the earlier head, and the chain verifies again). The head row is not signed; the
        verified position is.
        """
        known = self._trust.position(thread_id)
        if known is None or head.seq > known.seq:
            return
        if head.seq < known.seq or head.hash != known.hash:
            reason = "truncated" if head.seq < known.seq else "rewritten"
            raise IntegrityError(
                f"thread {thread_id!r}: the chain head in the database is at seq {head.seq}, but this process verified "
                f"or wrote the history up to seq {known.seq} ({reason}); nothing was appended. Run `warden audit verify "
                f"--thread {thread_id}` and restore the database from a backup.",
                thread_id=thread_id, seq=head.seq, reason=reason,
            )

    def _on_commit_extend(
        self, conn: Connection | DirectTx, thread_id: str, start: ChainPosition, end: ChainPosition, events: Sequence[Event]
    ) -> None:
        """Once the transaction has committed, extend this process's verified position over
        ``events`` (its own appends, from ``start`` to ``end``). Elsewhere than on SQLite's
        direct writer nothing is registered: the next read verifies them instead."""
        after = conn.after_commit if isinstance(conn, DirectTx) else None
        if after is not None:
            after.append(partial(self._extended, thread_id, start, end, self._fold_docs(events)))
        elif self._anchors is not None and not isinstance(conn, DirectTx):
            conn.info.setdefault(_APPENDED, set()).add(thread_id)  # noted once it commits (_committed)

    @staticmethod
    def _fold_docs(events: Sequence[Event]) -> list[dict[str, Any]]:
        return [{"kind": e.kind, "checkpoint_ns": e.checkpoint_ns, "payload": e.payload, "seq": e.seq}
                for e in events if e.kind in FOLDED_KINDS]

    def _extended(self, thread_id: str, start: ChainPosition, end: ChainPosition, docs: list[dict[str, Any]]) -> None:
        self._trust.advance(thread_id, start, end, docs)
        if self._anchors is not None:
            self._anchors.note(thread_id)
        if any(d["kind"] == EventKind.CHECKPOINT_SAVED for d in docs):
            with self._saved_cond:
                self._saved_cond.notify_all()

    def checkpoint_durable(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> bool:
        """Whether checkpoint ``checkpoint_id`` of ``checkpoint_ns`` (or a later one) is committed."""
        known = self._trust.latest(thread_id, checkpoint_ns)
        if known is not None and known[1] is not None and known[1] >= checkpoint_id:
            return True
        with self._read_tx(short=True) as conn:
            found = Raw(conn).one(
                "SELECT 1 FROM warden_checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id >= ? LIMIT 1",
                (thread_id, checkpoint_ns, checkpoint_id),
            )
        return found is not None

    def checkpoint_recorded(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> bool:
        """Whether the verified chain holds a ``checkpoint.saved`` for exactly this checkpoint.

        The index finds its first event; the chain from there to the head is read and verified
        (pinned to this process's verified position), so a forged row cannot make it so.
        """
        subject = checkpoint_subject(checkpoint_ns, checkpoint_id)
        with self._read_tx() as conn:
            first = Raw(conn).one(
                "SELECT min(seq) FROM warden_events WHERE thread_id = ? AND subject = ? AND kind = ?",
                (thread_id, subject, EventKind.CHECKPOINT_SAVED),
            )
            if first is None or first[0] is None:
                return False
            _rows, docs = self._verified_rows(conn, thread_id, int(first[0]) - 1)
        return any(
            d["kind"] == EventKind.CHECKPOINT_SAVED and d["checkpoint_ns"] == checkpoint_ns
            and d["payload"].get("checkpoint_id") == checkpoint_id
            for d in docs
        )

    def wait_for_checkpoint(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str, timeout: float) -> bool:
        """Wait until :meth:`checkpoint_durable` (LangGraph's background save in ``"async"``
        durability); ``False`` if it is not after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while not self.checkpoint_durable(thread_id, checkpoint_ns, checkpoint_id):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._saved_cond:
                self._saved_cond.wait(min(delay, remaining))
            delay = min(delay * 2, 0.05)
        return True

    @classmethod
    def _advance_head(
        cls, thread_id: str, new: tuple[int, str], old: tuple[int, str], seen: Watermark | None
    ) -> tuple[str, list[Any]]:
        """The conditional head advance (``?`` placeholders) from ``old`` to ``new`` (seq, hash): it
        matches only if the head is still ``old`` and, with ``seen``, the thread has no event of
        ``seen.kinds`` after ``seen.seq``."""
        sql, params = _SQL_ADVANCE_HEAD, [*new, thread_id, *old]
        if seen is not None:
            unseen, more = cls._select_events("1", thread_id, seen.kinds, seen.seq, seen.subject)
            sql, params = f"{sql} AND NOT EXISTS ({unseen})", params + more
        return sql, params

    def _check_seen(self, raw: Raw, thread_id: str, seen: Watermark) -> None:
        sql, params = self._select_events("seq, kind, subject", thread_id, seen.kinds, seen.seq, seen.subject)
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
                    self._check_not_behind(thread_id, ChainPosition(*(head or (0, GENESIS_HASH))))
                seq0, prev0 = head if head is not None else (0, GENESIS_HASH)
                full = self._with_snapshot(thread_id, drafts, ChainPosition(seq0, prev0))
                events, rows, seq, prev = self._chain(key, thread_id, full, seq0, prev0, lambda ts: ts)
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
        self._extended(thread_id, ChainPosition(seq0, prev0), ChainPosition(seq, prev), self._fold_docs(events))  # autocommitted
        return events[: len(drafts)]

    def transaction(self, fn: Any, *args: Any, sqlalchemy: bool = False) -> Any:
        """Run ``fn(tx, *args)`` in one durable write transaction of the ledger's database.

        For rows that must commit together with their events (the lease list, the saver's
        checkpoints): ``fn`` writes with :class:`~.rawsql.Raw` and calls :meth:`append_in`.
        ``sqlalchemy=True``: a SQLAlchemy connection even on SQLite (``fn`` uses its API).
        """
        if self._direct is not None and not sqlalchemy:
            return self._direct.run_write(fn, *args)
        with self._write_engine.begin() as conn:
            result = fn(conn, *args)
            appended = conn.info.pop(_APPENDED, ())
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
                out = self.append_in(tx, thread_id, drafts, seen)
                tx.info.pop(_APPENDED, None)
            self._committed([thread_id])
            return out
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

    # ------------------------------------------------------- verified reads
    def _integrity_error(self, finding: Finding, what: str = "") -> IntegrityError:
        return IntegrityError(
            f"the signed history of thread {finding.thread_id!r} failed verification"
            f"{' at seq ' + str(finding.seq) if finding.seq is not None else ''}: {finding.reason}: {finding.detail}. "
            f"{what or 'Nothing was decided or resumed on it'}; run `warden audit verify --thread {finding.thread_id}` "
            "for the full report.",
            thread_id=finding.thread_id, seq=finding.seq, reason=finding.reason,
        )

    def _keys_for(self, conn: Connection | DirectTx, rows: Sequence[ChainRow]) -> dict[str, PublicKeyInfo]:
        return self._key_info(conn, rows[-1].key_id or "") if rows and rows[-1].key_id else {}

    def _anchor_finding(self, conn: Connection | DirectTx, thread_id: str, rows: Sequence[ChainRow]) -> Finding | None:
        """Check a thread read from genesis against the head kept outside the database, if any."""
        if self.head_store is None:
            return None
        saved = self.head_store.load(thread_id)
        if saved is None:
            return None
        keys = self._key_info(conn, saved.key_id)
        report = ChainReport(thread_id=thread_id, head_seq=rows[-1].seq if rows else None)
        found = verify_against_head(report, saved, {r.seq: r for r in rows if r.seq == saved.seq}, keys)
        if not found and self.trusted_ids() is not None and saved.key_id not in self.trusted_ids():  # type: ignore[operator]
            found = [Finding(thread_id, saved.seq, "untrusted_key", f"the saved head is signed by untrusted key {saved.key_id!r}")]
        return found[0] if found else None

    def _verified_rows(
        self, conn: Connection | DirectTx, thread_id: str, after_seq: int
    ) -> tuple[list[ChainRow], list[dict[str, Any]]]:
        """The rows of ``thread_id`` after ``after_seq`` with their parsed bodies, verified.

        The first read of a thread in this process walks it from genesis (and checks the head
        store); later reads start at the position verified before (or earlier, when the caller
        asks for older rows: those are pinned by the hashes to that position) and only the new
        rows' head signature is checked. Raises :class:`IntegrityError` on any finding.
        """
        trust = self._trust.snapshot(thread_id)
        if trust is None:
            trust = self._first_touch_from_snapshot(conn, thread_id)
        # From the verified position's own row on: a history cut back or rewritten there is caught.
        start = 0 if trust is None else max(0, min(after_seq, trust.seq - 1))
        sql, params = self._select_events(EV_COLS, thread_id, None, start)
        rows = _chain_rows(Raw(conn), sql, params)
        keys = self._keys_for(conn, rows)
        if trust is None:
            docs, finding = verify_extension(
                thread_id, rows, keys, start=ChainPosition(0, GENESIS_HASH), trusted_key_ids=self.trusted_ids()
            )
            finding = finding or self._anchor_finding(conn, thread_id, rows)
            if finding is not None:
                raise self._integrity_error(finding)
            trust = full_fold(docs)
        else:
            known = trust.position
            docs, finding = verify_extension(
                thread_id, rows, keys, start=ChainPosition(start, known.hash if start == known.seq else None),
                pinned=known if start < known.seq else None, trusted_key_ids=self.trusted_ids(),
            )
            if finding is not None and finding.reason == "truncated":
                stale = self._stale_snapshot(conn, thread_id, after_seq, keys)
                if stale is not None:
                    return stale
            if finding is not None:
                raise self._integrity_error(finding)
            new = known.seq - start
            trust.fold_docs(docs[new:] if new > 0 else docs)
        if rows:
            trust.seq, trust.hash = int(rows[-1].seq), rows[-1].hash
        self._trust.put(thread_id, trust)
        if after_seq > start:
            skip = after_seq - start
            return rows[skip:], docs[skip:]
        return rows, docs

    def _first_touch_from_snapshot(self, conn: Connection | DirectTx, thread_id: str) -> ThreadTrust | None:
        """A first touch that starts at the thread's newest ``chain.snapshot``: the rows from it to
        the head are read and verified (linked, the head signed by a trusted key), and the fold
        starts from what the snapshot records — the history before it is not read (``verify``
        replays it, and every snapshot in it). ``None``: the thread has no snapshot."""
        raw = Raw(conn)
        found = raw.one("SELECT max(seq) FROM warden_events WHERE thread_id = ? AND subject = ?",
                        (thread_id, CHAIN_SNAPSHOT_SUBJECT))
        if found is None or found[0] is None:
            return None
        snap = int(found[0])
        sql, params = self._select_events(EV_COLS, thread_id, None, snap - 1)
        rows = _chain_rows(raw, sql, params)
        docs, finding = verify_extension(
            thread_id, rows, self._keys_for(conn, rows), start=ChainPosition(snap - 1, None),
            trusted_key_ids=self.trusted_ids(),
        )
        if finding is None and (not docs or docs[0]["kind"] != CHAIN_SNAPSHOT or docs[0]["payload"].get("covers") != snap - 1):
            finding = Finding(thread_id, snap, "snapshot_corrupt", "the newest chain snapshot is not a chain.snapshot event")
        if finding is None:
            anchor = self.head_store.load(thread_id) if self.head_store is not None else None
            if anchor is not None and anchor.seq >= snap:
                finding = self._anchor_finding(conn, thread_id, rows)
        if finding is not None:
            raise self._integrity_error(finding)
        trust = ThreadTrust.from_canonical(docs[0]["payload"]["trust"], snap, rows[0].hash)
        trust.fold_docs(docs[1:])
        trust.seq, trust.hash = int(rows[-1].seq), rows[-1].hash
        self._trust.put(thread_id, trust)
        return trust

    def _stale_snapshot(
        self, conn: Connection | DirectTx, thread_id: str, after_seq: int, keys: Mapping[str, PublicKeyInfo]
    ) -> tuple[list[ChainRow], list[dict[str, Any]]] | None:
        """The rows of a read whose snapshot predates commits this process made (and verified)
        since: they end at a position verified before, which pins them. ``None``: they do not —
        a truncated history."""
        end = Raw(conn).one("SELECT seq, hash FROM warden_events WHERE thread_id = ? ORDER BY seq DESC LIMIT 1",
                            (thread_id,))
        if end is None or not self._trust.was_verified(thread_id, ChainPosition(int(end[0]), end[1])):
            return None
        pinned = ChainPosition(int(end[0]), end[1])
        start = max(0, min(after_seq, pinned.seq - 1))
        sql, params = self._select_events(EV_COLS, thread_id, None, start)
        rows = _chain_rows(Raw(conn), sql, params)
        docs, finding = verify_extension(thread_id, rows, keys, start=ChainPosition(start, None), pinned=pinned,
                                         trusted_key_ids=self.trusted_ids())
        if finding is not None:
            raise self._integrity_error(finding)
        if after_seq > start:
            skip = after_seq - start
            return rows[skip:], docs[skip:]
        return rows, docs

    def verified_position(self, thread_id: str) -> ChainPosition:
        """Verify ``thread_id`` up to its current head (from genesis on first touch); the position."""
        with self._read_tx(short=True) as conn:
            self._verified_rows(conn, thread_id, 1 << 62)
        position = self._trust.position(thread_id)
        assert position is not None
        return position

    def events(
        self, thread_id: str, *, kinds: Sequence[str] | None = None, after_seq: int = 0, subject: str | None = None
    ) -> list[Event]:
        """EventSink: the thread's events after ``after_seq`` (of ``kinds``, about ``subject``), verified.

        Every event returned belongs to a chain verified from genesis to a head signed by a
        trusted key (see :meth:`_verified_rows`): a row edited, inserted or deleted anywhere in
        the history raises :class:`IntegrityError` instead of being returned.
        """
        wanted = frozenset(kinds) if kinds else None
        with self._read_tx(short=after_seq > 0) as conn:
            rows, docs = self._verified_rows(conn, thread_id, after_seq)
        return [
            Event.from_doc(doc, row.body if type(row.body) is bytes else bytes(row.body), row.hash)
            for row, doc in zip(rows, docs, strict=True)
            if (wanted is None or row.kind in wanted)
            and (subject is None or self._subject_of(doc) == subject)
        ]

    @staticmethod
    def _subject_of(doc: Mapping[str, Any]) -> str | None:
        p = doc.get("payload") or {}
        for key in ("tool_call_id", "lease_id"):
            if isinstance(p, Mapping) and isinstance(p.get(key), str):
                return p[key]
        if isinstance(p, Mapping) and isinstance(p.get("checkpoint_id"), str):
            return checkpoint_subject(doc.get("checkpoint_ns", ""), p["checkpoint_id"])
        return None

    def summaries(
        self, thread_id: str, *, kinds: Sequence[str] | None = None, after_seq: int = 0
    ) -> list[EventSummary]:
        """Like :meth:`events` (verified), as :class:`EventSummary` rows: for folds."""
        wanted = frozenset(kinds) if kinds else None
        # The events since a fold a guard made earlier are a few rows: a short read.
        with self._read_tx(short=after_seq > 0) as conn:
            rows, docs = self._verified_rows(conn, thread_id, after_seq)
        return [
            EventSummary.from_doc(doc, row.body if type(row.body) is bytes else bytes(row.body), row.hash)
            for row, doc in zip(rows, docs, strict=True)
            if wanted is None or row.kind in wanted
        ]

    def newest_snapshot(self, thread_id: str, kind: str, subject: str) -> tuple[int, Mapping[str, Any]] | None:
        """The newest event of ``kind`` (found by its ``subject``) with its payload, verified — read
        from it to the head and checked against this process's verified position. ``None``: none."""
        with self._read_tx(short=True) as conn:
            found = Raw(conn).one("SELECT max(seq) FROM warden_events WHERE thread_id = ? AND subject = ?",
                                  (thread_id, subject))
            if found is None or found[0] is None:
                return None
            rows, docs = self._verified_rows(conn, thread_id, int(found[0]) - 1)
        if not docs or docs[0]["kind"] != kind:
            raise self._integrity_error(Finding(thread_id, int(found[0]), "snapshot_corrupt",
                                                f"the newest {kind} is not a {kind} event"))
        return int(found[0]), Event.from_doc(docs[0], rows[0].body if type(rows[0].body) is bytes else bytes(rows[0].body),
                                            rows[0].hash).payload

    def event_at(self, thread_id: str, seq: int, expected_hash: str) -> Event:
        """The event at ``seq``, which a verified read earlier saw with ``expected_hash``.

        One row, checked against the hash a verified read recorded (a replay reads a call's
        recorded result this way, without re-reading the history since).
        """
        with self._read_tx(short=True) as conn:
            found = Raw(conn).one("SELECT body, hash FROM warden_events WHERE thread_id = ? AND seq = ?", (thread_id, seq))
        body = bytes(found[0]) if found is not None else b""
        if found is None or event_hash(body) != expected_hash or found[1] != expected_hash:
            raise IntegrityError(
                f"the event at seq {seq} of thread {thread_id!r} is {'gone' if found is None else 'changed'} since this "
                "process verified it; nothing was replayed from it. Run `warden audit verify` for the full report.",
                thread_id=thread_id, seq=seq, reason="event_deleted" if found is None else "event_changed",
            )
        return Event.from_body(body, expected_hash)

    def _read_tx(self, *, short: bool = False) -> AbstractContextManager[Connection | DirectTx]:
        self.flush()  # read-your-writes for append_soon
        if self._direct is not None:
            return self._direct.read(short=short)
        return self._read_engine.connect()

    async def aevents(
        self, thread_id: str, *, kinds: Sequence[str] | None = None, after_seq: int = 0, subject: str | None = None
    ) -> list[Event]:
        import asyncio

        return await asyncio.to_thread(self.events, thread_id, kinds=kinds, after_seq=after_seq, subject=subject)

    # ------------------------------------------------------ latest checkpoint
    def latest_checkpoint_in(
        self, conn: Connection | DirectTx, thread_id: str, ns: str
    ) -> tuple[str | None, str | None, dict[tuple[str, int], str]]:
        """(id, digest, write digests) of the newest checkpoint of ``ns`` the verified chain records.

        Reads the events the thread gained since this process last verified it (usually none:
        its own commits extend the verified position), in the caller's snapshot.
        """
        known = self._trust.latest(thread_id, ns)
        if known is not None and known[4]:  # the newest one was removed: fold the chain again
            self._trust.drop(thread_id)
            known = None
        if known is None:
            self._verified_rows(conn, thread_id, 1 << 62)
        else:
            sql, params = self._select_events("1", thread_id, None, known[0].seq)
            if Raw(conn).one(sql + " LIMIT 1", params) is not None:
                self._verified_rows(conn, thread_id, 1 << 62)
        latest = self._trust.latest(thread_id, ns)
        assert latest is not None
        return latest[1], latest[2], latest[3]

    def recorded_checkpoints_in(
        self, conn: Connection | DirectTx, thread_id: str, keys: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[str, dict[tuple[str, int], str]]]:
        """Recorded (digest, write digests) of those of ``keys`` (ns, checkpoint id) among the newest
        checkpoints of the thread, from the verified fold (read up to the head first, in the
        caller's snapshot). Older ones are missing from the result: the caller checks them against
        the whole chain."""
        self._verified_rows(conn, thread_id, 1 << 62)
        return self._trust.recorded(thread_id, keys)

    def trusted_latest(self, thread_id: str, ns: str) -> tuple[ChainPosition, str | None, str | None, dict[tuple[str, int], str], bool] | None:
        """What this process knows of ``ns``'s newest checkpoint without reading (see TrustCache.latest)."""
        return self._trust.latest(thread_id, ns)

    def anchor_now(self, thread_id: str) -> None:
        """Save the thread's current signed head to the head store now (a run pausing for a person)."""
        if self._anchors is not None:
            self._anchors.flush([thread_id])  # verifies up to the head first

    def close(self) -> None:
        """Save what the head store has not seen yet (the saver calls this on close)."""
        if self._anchors is not None:
            self._anchors.close()

    def forget(self, thread_id: str) -> None:
        """Drop what this process verified of ``thread_id`` (the next read walks it from genesis)."""
        self._trust.drop(thread_id)

    def thread_ids(self, conn: Connection) -> list[str]:
        """Every thread with a history: from the events themselves, not only the (unsigned) head rows,
        so deleting a thread's head row does not hide its history from a full verification."""
        found = {r[0] for r in conn.execute(select(schema.heads.c.thread_id))}
        found.update(r[0] for r in conn.execute(select(schema.events.c.thread_id).distinct()))
        return sorted(found)

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
        conn: Connection | DirectTx,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str,
        checkpoint_digest: str,
        write_digests: dict[tuple[str, int], str],
    ) -> None:
        """Refuse a checkpoint (and its pending writes) that the verified chain does not vouch for.

        For a checkpoint named by id (history, time travel): the chain must be verified from
        genesis (once per process) and from the checkpoint's first event to the head; the newest
        ``checkpoint.saved`` for it must carry this row's digest, no later event may have removed
        it, and the pending writes must equal those its ``writes.saved`` events recorded.
        """
        subject = checkpoint_subject(checkpoint_ns, checkpoint_id)

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

        self._verified_rows(conn, thread_id, 1 << 62)  # the whole chain, once per process
        first = Raw(conn).one("SELECT min(seq) FROM warden_events WHERE thread_id = ? AND subject = ?", (thread_id, subject))
        if first is None or first[0] is None:
            raise fail("checkpoint_unrecorded", "no checkpoint.saved event records this checkpoint (row inserted?)")
        _rows, docs = self._verified_rows(conn, thread_id, int(first[0]) - 1)
        saved_digest: str | None = None
        saved_seq: int | None = None
        expected: dict[tuple[str, int], str] = {}
        for doc in docs:
            kind, p = doc["kind"], doc["payload"]
            if kind == EventKind.CHECKPOINT_SAVED and doc["checkpoint_ns"] == checkpoint_ns and p.get("checkpoint_id") == checkpoint_id:
                saved_digest, saved_seq = p.get("digest"), doc["seq"]
            elif kind == EventKind.WRITES_SAVED and doc["checkpoint_ns"] == checkpoint_ns and p.get("checkpoint_id") == checkpoint_id:
                for w in p.get("rows", ()):
                    expected[(p["task_id"], int(w["idx"]))] = w["digest"]
            elif kind == EventKind.THREAD_DELETED or (
                kind in (EventKind.CHECKPOINTS_PRUNED, EventKind.RUNS_DELETED)
                and [checkpoint_ns, checkpoint_id] in [list(x) for x in p.get("checkpoints", ())]
            ):
                saved_digest, saved_seq, expected = None, doc["seq"], {}
        if saved_digest is None:
            raise fail(
                "checkpoint_unrecorded" if saved_seq is None else "checkpoint_removed",
                "no checkpoint.saved event records this checkpoint (row inserted?)" if saved_seq is None
                else "the history records that this checkpoint was deleted (row re-inserted?)",
                saved_seq,
            )
        if saved_digest != checkpoint_digest:
            raise fail(
                "checkpoint_changed",
                "the stored checkpoint row does not match the digest recorded when it was saved",
                saved_seq,
            )
        self._check_writes(fail, expected, write_digests)

    @staticmethod
    def _check_writes(fail: Callable[..., IntegrityError], expected: Mapping[tuple[str, int], str], found: Mapping[tuple[str, int], str]) -> None:
        if expected != found:
            missing = sorted(set(expected) - set(found))
            extra = sorted(set(found) - set(expected))
            changed = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
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
        return self._verify_thread_rows(
            conn, thread_id, keys, signatures=signatures, against=against, check_rows=check_rows
        )[1]

    def _verify_thread_rows(
        self,
        conn: Connection,
        thread_id: str,
        keys: dict[str, PublicKeyInfo],
        *,
        signatures: SignatureMode = "heads",
        against: SignedHead | None = None,
        check_rows: bool = True,
    ) -> tuple[list[ChainRow], ChainReport]:
        rows = _chain_rows(
            Raw(conn), f"SELECT {EV_COLS} FROM warden_events WHERE thread_id = ? ORDER BY seq", (thread_id,)
        )
        report = verify_chain(
            thread_id, rows, keys, signatures=signatures, trusted_key_ids=self.trusted_ids()
        )
        if report.ok:
            for seq, detail in replay_snapshots(report.bodies[s] for s in sorted(report.bodies)):
                report.fail(seq, "snapshot_mismatch", detail)
        if against is None and self.head_store is not None:
            against = self.head_store.load(thread_id)
        if against is not None:
            report.findings.extend(verify_against_head(report, against, {r.seq: r for r in rows}, keys))
        if check_rows:
            from .rows import check_rows_against_events

            report.findings.extend(check_rows_against_events(conn, thread_id, report))
        return rows, report

    def history(self, thread_id: str, *, signatures: SignatureMode = "heads") -> tuple[list[Event], ChainReport]:
        """Every stored event of a thread and the verification of that same read, for audits.

        Unlike :meth:`events`, a history that fails verification is returned (a reviewer needs
        to see it), with the findings in the report: an audit verdict comes from the rows it
        shows, never from a second read. Rows whose body cannot be parsed are left out (the
        report names them).
        """
        self.flush()
        with self._engine.connect() as conn:
            rows, report = self._verify_thread_rows(conn, thread_id, self.public_keys(conn), signatures=signatures)
        events: list[Event] = []
        for r in rows:
            try:
                events.append(Event.from_body(r.body if type(r.body) is bytes else bytes(r.body), r.hash))
            except Exception:  # noqa: BLE001 - reported as event_corrupt by the verifier
                continue
        return events, report

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
