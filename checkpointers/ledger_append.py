"""The ledger's append paths: inside a caller's transaction (:meth:`LedgerAppends.append_in`), in
a transaction of its own (:meth:`~LedgerAppends.append`), queued on SQLite's writer
(:meth:`~LedgerAppends.append_soon`), and PostgreSQL's one-statement append
(:meth:`~LedgerAppends.try_append_one_statement`).

Appending locks one row of ``warden_heads`` (the thread's chain tip), so threads never contend
with each other; on SQLite the write transaction already holds the database lock (``BEGIN
IMMEDIATE``). Each append signs the head it leaves with the workload's Ed25519 key: one
signature per commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

from sqlalchemy import Connection

from langgraph_warden.chain import ChainPosition
from langgraph_warden.errors import IntegrityError, LedgerAppendError, UnseenEventsError
from langgraph_warden.events import GENESIS_HASH, Event, EventDraft, EventKind, Watermark, head_signing_bytes
from langgraph_warden.keys import SigningKey, b64u

from . import statements as sql
from .ledger_base import APPENDED
from .ledger_keys import LedgerKeys
from .rawsql import DirectTx, Raw
from .trust import CHAIN_SNAPSHOT, CHAIN_SNAPSHOT_SUBJECT, FOLDED_KINDS

__all__ = ["LedgerAppends"]

log = logging.getLogger("langgraph_warden.checkpointers.ledger")  # the name operators filter on

#: How many unseen events an UnseenEventsError lists (more: the list ends there).
_UNSEEN_LISTED = 16


def _signed_already(_tx: DirectTx) -> None:
    """A group commit's entry for a thread whose head was signed in its own row (nothing to do)."""


def _fold_docs(events: Sequence[Event]) -> list[dict[str, Any]]:
    return [{"kind": e.kind, "checkpoint_ns": e.checkpoint_ns, "payload": e.payload, "seq": e.seq}
            for e in events if e.kind in FOLDED_KINDS]


def _head_signature(key: SigningKey, thread_id: str, seq: int, head_hash: str) -> str:
    return b64u(key.sign(head_signing_bytes(thread_id, seq, head_hash, key.key_id, key.store_kind)))


def _advance_head(thread_id: str, new: tuple[int, str], old: tuple[int, str], seen: Watermark | None) -> tuple[str, list[Any]]:
    """The conditional head advance (``?`` placeholders) from ``old`` to ``new`` (seq, hash): it
    matches only if the head is still ``old`` and, with ``seen``, the thread has no event of
    ``seen.kinds`` after ``seen.seq``."""
    statement, params = sql.HEAD_ADVANCE, [*new, thread_id, *old]
    if seen is not None:
        unseen, more = sql.select_events("1", thread_id, seen.kinds, seen.seq, seen.subject)
        statement, params = f"{statement} AND NOT EXISTS ({unseen})", params + more
    return statement, params


class LedgerAppends(LedgerKeys):
    """Append signed events to a thread's chain (see the module docstring)."""

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

    @staticmethod
    def _lock_head(raw: Raw, thread_id: str) -> tuple[int, str]:
        if not raw.sqlite:
            raw.run(sql.HEAD_INSERT_NEW, (thread_id, 0, GENESIS_HASH))
            row = raw.one(sql.HEAD_FOR_UPDATE, (thread_id,))
            assert row is not None
            return int(row[0]), row[1]
        # SQLite: BEGIN IMMEDIATE (and the in-process write lock) already serialise writers.
        row = raw.one(sql.HEAD_SELECT, (thread_id,))
        if row is None:
            raw.run(sql.HEAD_INSERT, (thread_id, 0, GENESIS_HASH))
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
            rows[-1][8:11] = [key.key_id, key.store_kind, _head_signature(key, thread_id, seq, prev)]
        return out, rows, seq, prev

    @staticmethod
    def _sign_head_in(key: SigningKey, thread_id: str, seq: int, head_hash: str, tx: DirectTx) -> None:
        """Sign the head a group commit leaves on ``thread_id``: its last event carries the signature."""
        Raw(tx).run(sql.EV_SIGN, (key.key_id, key.store_kind, _head_signature(key, thread_id, seq, head_hash), thread_id, seq))

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
            if raw.run(*_advance_head(thread_id, (seq, prev), cached, seen)) == 1:
                self._ensure_key(conn, key)
                raw.many(sql.EV_INSERT, rows)
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
        raw.many(sql.EV_INSERT, rows)
        raw.run(sql.HEAD_SET, (seq, prev, thread_id))
        self._appended(pending, key, thread_id, seq, prev, signed=sign)
        self._on_commit_extend(conn, thread_id, start, ChainPosition(seq, prev), out)
        return out[: len(drafts)]

    def _with_snapshot(self, thread_id: str, drafts: Sequence[EventDraft], head: ChainPosition) -> Sequence[EventDraft]:
        """``drafts``, followed by a ``chain.snapshot`` when one is due.

        A snapshot records the fold (trust.py) as it stands after ``drafts``: the newest
        checkpoints of each namespace and their writes. Taken only when this process verified
        the thread up to exactly ``head`` (the head being appended onto), so what it records is
        the whole history's fold; signed with the transaction, replayed by ``verify``. A later
        first touch starts at the newest one: its cost is bounded by ``trust.SNAPSHOT_EVERY``, not by
        the thread's length. The caller gets ``drafts``' events only.
        """
        trust = self._trust.snapshot_if_due(thread_id, head, len(drafts))
        if trust is None:
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
            after.append(partial(self._extended, thread_id, start, end, _fold_docs(events)))
        elif self._anchors is not None and not isinstance(conn, DirectTx):
            conn.info.setdefault(APPENDED, set()).add(thread_id)  # noted once it commits (_committed)

    def _extended(self, thread_id: str, start: ChainPosition, end: ChainPosition, docs: list[dict[str, Any]]) -> None:
        self._trust.advance(thread_id, start, end, docs)
        if self._anchors is not None:
            self._anchors.note(thread_id)
        if any(d["kind"] == EventKind.CHECKPOINT_SAVED for d in docs):
            with self._saved_cond:
                self._saved_cond.notify_all()

    @staticmethod
    def _check_seen(raw: Raw, thread_id: str, seen: Watermark) -> None:
        statement, params = sql.select_events("seq, kind, subject", thread_id, seen.kinds, seen.seq, seen.subject)
        found = raw.all(f"{statement} LIMIT {_UNSEEN_LISTED + 1}", params)
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
                    found = pg.execute(sql.HEAD_SELECT.replace("?", "%s"), (thread_id,)).fetchone()
                    head = (int(found[0]), found[1]) if found else None
                    self._check_not_behind(thread_id, ChainPosition(*(head or (0, GENESIS_HASH))))
                seq0, prev0 = head if head is not None else (0, GENESIS_HASH)
                full = self._with_snapshot(thread_id, drafts, ChainPosition(seq0, prev0))
                events, rows, seq, prev = self._chain(key, thread_id, full, seq0, prev0, lambda ts: ts)
                if head is None:
                    head_sql, params = sql.HEAD_INSERT_NEW, [thread_id, seq, prev]
                else:
                    head_sql, params = _advance_head(thread_id, (seq, prev), (seq0, prev0), seen)
                tables = [(table, cols) for table, cols, _ in inserts] + [(sql.EVENTS, sql.EV_INSERT_COL_LIST)] * len(rows)
                for values in [*(values for _, _, values in inserts), *rows]:
                    params.extend(values)
                statement = sql.pg_append_statement(head_sql.replace("?", "%s"), tables)
                ok = pg.execute(statement, params).fetchone()[0]
        except psycopg.errors.UniqueViolation:
            ok = 0
        if not ok:
            self._heads.pop(thread_id)
            return None
        self._heads.put(thread_id, (seq, prev))
        self._extended(thread_id, ChainPosition(seq0, prev0), ChainPosition(seq, prev), _fold_docs(events))  # autocommitted
        return events[: len(drafts)]

    #: ``append``/``append_soon`` take ``seen=`` (see :class:`~langgraph_warden.events.Watermark`).
    supports_watermarks = True
    #: It shares the saver's database: ``checkpoint_durable``/``wait_for_checkpoint`` can tell.
    waits_for_checkpoints = True

    def append(self, thread_id: str, drafts: Sequence[EventDraft], *, seen: Watermark | None = None) -> list[Event]:
        """EventSink: append in its own transaction; durable when this returns.

        ``seen``: append only if the thread has no event of ``seen.kinds`` after
        ``seen.seq``; otherwise write nothing and raise :class:`UnseenEventsError`.
        """
        return self._append_committed(thread_id, drafts, seen, None)

    def append_with_rows(
        self, thread_id: str, drafts: Sequence[EventDraft], rows: Callable[[Any], None], *, seen: Watermark | None = None
    ) -> list[Event]:
        """:meth:`append`, with ``rows(tx)`` run in the same transaction once the events are in:
        rows of this database that must commit with these events or not at all (a tool call's
        credential lease with its ``credential.issued`` and ``tool.started``). ``rows`` writes
        with :class:`~.rawsql.Raw`; if it raises, nothing is written."""
        return self._append_committed(thread_id, drafts, seen, rows)

    def _append_committed(
        self, thread_id: str, drafts: Sequence[EventDraft], seen: Watermark | None, rows: Callable[[Any], None] | None
    ) -> list[Event]:
        try:
            if rows is None:
                fast = self.try_append_one_statement(thread_id, drafts, seen=seen)  # registers the key itself
                if fast is not None:
                    return fast
            self._register_signing_key()
            if self._direct is not None:
                return self._direct.run_write(self._append_alone, thread_id, drafts, seen, rows)
            with self._write_engine.begin() as tx:
                out = self.append_in(tx, thread_id, drafts, seen)
                if rows is not None:
                    rows(tx)
                tx.info.pop(APPENDED, None)
            self._committed([thread_id])
            return out
        except (IntegrityError, UnseenEventsError):
            raise
        except Exception as exc:
            raise LedgerAppendError(
                f"could not append {[d.kind for d in drafts]} to thread {thread_id!r}: {type(exc).__name__}: {exc}"
            ) from exc

    def _append_alone(
        self, tx: DirectTx, thread_id: str, drafts: Sequence[EventDraft], seen: Watermark | None,
        rows: Callable[[Any], None] | None = None,
    ) -> list[Event]:
        # Usually the transaction's only request: its head is signed in its row (see append_in).
        out = self.append_in(tx, thread_id, drafts, seen, sign_now=True)
        if rows is not None:
            rows(tx)  # a failure rolls the request back, events included
        return out

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

    async def aappend(self, thread_id: str, drafts: Sequence[EventDraft]) -> list[Event]:
        # One thread hop per append: SQLite's writer and PostgreSQL's one-statement path are sync.
        import asyncio

        return await asyncio.to_thread(self.append, thread_id, drafts)
