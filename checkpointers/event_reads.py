"""The ledger's verified event reads: every event it returns belongs to a chain verified from
genesis to a head signed by a trusted key.

Why here and not in the callers: guards, approvals and the saver decide from these events, so a
row edited, inserted or deleted anywhere in a history must raise
:class:`~langgraph_warden.errors.IntegrityError` instead of being returned. The chain checks
themselves are :mod:`langgraph_warden.chain`'s; this module decides which rows to read (from
genesis on a first touch, from the newest ``chain.snapshot``, or from the position verified
before) and keeps the verified position (:mod:`.trust`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, select

from langgraph_warden.chain import (
    ChainPosition,
    ChainReport,
    ChainRow,
    Finding,
    PublicKeyInfo,
    verify_against_head,
    verify_extension,
)
from langgraph_warden.errors import IntegrityError
from langgraph_warden.events import GENESIS_HASH, Event, EventKind, EventSummary, SignedHead, event_hash

from . import schema
from . import statements as sql
from .ledger_keys import LedgerKeys
from .rawsql import EV_COLS, DirectTx, Raw
from .trust import CHAIN_SNAPSHOT, CHAIN_SNAPSHOT_SUBJECT, ThreadTrust, full_fold

__all__ = ["EventReads", "checkpoint_subject", "chain_rows", "integrity_error", "TO_THE_HEAD"]

#: ``after_seq`` that reads nothing but verifies up to the head.
TO_THE_HEAD = 1 << 62


def checkpoint_subject(checkpoint_ns: str, checkpoint_id: str) -> str:
    """Subject of checkpoint/writes events: unique per namespace within a thread."""
    return f"{checkpoint_ns}|{checkpoint_id}" if checkpoint_ns else checkpoint_id


def chain_rows(raw: Raw, statement: str, params: Sequence[Any]) -> list[ChainRow]:
    """Rows selected as ``EV_COLS`` (the field order of :class:`ChainRow`), straight from the cursor.

    Verification reads every event of a thread; building rows from DBAPI tuples
    instead of SQLAlchemy ``Row`` objects costs a fifth as much per event. Values are
    kept as the driver returns them: :func:`~langgraph_warden.chain.verify_chain`
    normalises (or reports) a row whose seq or body has another type.
    """
    return list(map(ChainRow._make, raw.all(statement, params)))


def _body(row: ChainRow) -> bytes:
    return row.body if type(row.body) is bytes else bytes(row.body)


def _subject_of(doc: Mapping[str, Any]) -> str | None:
    p = doc.get("payload") or {}
    for key in ("tool_call_id", "lease_id"):
        if isinstance(p, Mapping) and isinstance(p.get(key), str):
            return p[key]
    if isinstance(p, Mapping) and isinstance(p.get("checkpoint_id"), str):
        return checkpoint_subject(doc.get("checkpoint_ns", ""), p["checkpoint_id"])
    return None


def integrity_error(finding: Finding, what: str = "") -> IntegrityError:
    """The refusal a verified read raises for ``finding``."""
    return IntegrityError(
        f"the signed history of thread {finding.thread_id!r} failed verification"
        f"{' at seq ' + str(finding.seq) if finding.seq is not None else ''}: {finding.reason}: {finding.detail}. "
        f"{what or 'Nothing was decided or resumed on it'}; run `warden audit verify --thread {finding.thread_id}` "
        "for the full report.",
        thread_id=finding.thread_id, seq=finding.seq, reason=finding.reason,
    )


class EventReads(LedgerKeys):
    """Read a thread's events, verified against the chain (see the module docstring)."""

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
        trusted = self.trusted_ids()
        if not found and trusted is not None and saved.key_id not in trusted:
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
        statement, params = sql.select_events(EV_COLS, thread_id, None, start)
        rows = chain_rows(Raw(conn), statement, params)
        keys = self._keys_for(conn, rows)
        if trust is None:
            docs, finding = verify_extension(
                thread_id, rows, keys, start=ChainPosition(0, GENESIS_HASH), trusted_key_ids=self.trusted_ids()
            )
            finding = finding or self._anchor_finding(conn, thread_id, rows)
            if finding is not None:
                raise integrity_error(finding)
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
                raise integrity_error(finding)
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
        found = raw.one(sql.EV_LAST_ABOUT, (thread_id, CHAIN_SNAPSHOT_SUBJECT))
        if found is None or found[0] is None:
            return None
        snap = int(found[0])
        statement, params = sql.select_events(EV_COLS, thread_id, None, snap - 1)
        rows = chain_rows(raw, statement, params)
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
            raise integrity_error(finding)
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
        end = Raw(conn).one(sql.EV_LAST, (thread_id,))
        if end is None or not self._trust.was_verified(thread_id, ChainPosition(int(end[0]), end[1])):
            return None
        pinned = ChainPosition(int(end[0]), end[1])
        start = max(0, min(after_seq, pinned.seq - 1))
        statement, params = sql.select_events(EV_COLS, thread_id, None, start)
        rows = chain_rows(Raw(conn), statement, params)
        docs, finding = verify_extension(thread_id, rows, keys, start=ChainPosition(start, None), pinned=pinned,
                                         trusted_key_ids=self.trusted_ids())
        if finding is not None:
            raise integrity_error(finding)
        if after_seq > start:
            skip = after_seq - start
            return rows[skip:], docs[skip:]
        return rows, docs

    def verified_position(self, thread_id: str) -> ChainPosition:
        """Verify ``thread_id`` up to its current head (from genesis on first touch); the position."""
        with self._read_tx(short=True) as conn:
            self._verified_rows(conn, thread_id, TO_THE_HEAD)
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
            Event.from_doc(doc, _body(row), row.hash)
            for row, doc in zip(rows, docs, strict=True)
            if (wanted is None or row.kind in wanted)
            and (subject is None or _subject_of(doc) == subject)
        ]

    def summaries(
        self, thread_id: str, *, kinds: Sequence[str] | None = None, after_seq: int = 0
    ) -> list[EventSummary]:
        """Like :meth:`events` (verified), as :class:`EventSummary` rows: for folds."""
        wanted = frozenset(kinds) if kinds else None
        # The events since a fold a guard made earlier are a few rows: a short read.
        with self._read_tx(short=after_seq > 0) as conn:
            rows, docs = self._verified_rows(conn, thread_id, after_seq)
        return [
            EventSummary.from_doc(doc, _body(row), row.hash)
            for row, doc in zip(rows, docs, strict=True)
            if wanted is None or row.kind in wanted
        ]

    def newest_snapshot(self, thread_id: str, kind: str, subject: str) -> tuple[int, Mapping[str, Any]] | None:
        """The newest event of ``kind`` (found by its ``subject``) with its payload, verified — read
        from it to the head and checked against this process's verified position. ``None``: none."""
        with self._read_tx(short=True) as conn:
            found = Raw(conn).one(sql.EV_LAST_ABOUT, (thread_id, subject))
            if found is None or found[0] is None:
                return None
            rows, docs = self._verified_rows(conn, thread_id, int(found[0]) - 1)
        if not docs or docs[0]["kind"] != kind:
            raise integrity_error(Finding(thread_id, int(found[0]), "snapshot_corrupt",
                                          f"the newest {kind} is not a {kind} event"))
        return int(found[0]), Event.from_doc(docs[0], _body(rows[0]), rows[0].hash).payload

    def event_at(self, thread_id: str, seq: int, expected_hash: str) -> Event:
        """The event at ``seq``, which a verified read earlier saw with ``expected_hash``.

        One row, checked against the hash a verified read recorded (a replay reads a call's
        recorded result this way, without re-reading the history since).
        """
        with self._read_tx(short=True) as conn:
            found = Raw(conn).one(sql.EV_AT, (thread_id, seq))
        body = bytes(found[0]) if found is not None else b""
        if found is None or event_hash(body) != expected_hash or found[1] != expected_hash:
            raise IntegrityError(
                f"the event at seq {seq} of thread {thread_id!r} is {'gone' if found is None else 'changed'} since this "
                "process verified it; nothing was replayed from it. Run `warden audit verify` for the full report.",
                thread_id=thread_id, seq=seq, reason="event_deleted" if found is None else "event_changed",
            )
        return Event.from_body(body, expected_hash)

    async def aevents(
        self, thread_id: str, *, kinds: Sequence[str] | None = None, after_seq: int = 0, subject: str | None = None
    ) -> list[Event]:
        import asyncio

        return await asyncio.to_thread(self.events, thread_id, kinds=kinds, after_seq=after_seq, subject=subject)

    # ------------------------------------------------------------- checkpoints committed
    def checkpoint_durable(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> bool:
        """Whether checkpoint ``checkpoint_id`` of ``checkpoint_ns`` (or a later one) is committed."""
        known = self._trust.latest(thread_id, checkpoint_ns)
        if known is not None and known[1] is not None and known[1] >= checkpoint_id:
            return True
        with self._read_tx(short=True) as conn:
            found = Raw(conn).one(sql.CP_DURABLE, (thread_id, checkpoint_ns, checkpoint_id))
        return found is not None

    def checkpoint_recorded(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> bool:
        """Whether the verified chain holds a ``checkpoint.saved`` for exactly this checkpoint.

        The index finds its first event; the chain from there to the head is read and verified
        (pinned to this process's verified position), so a forged row cannot make it so.
        """
        subject = checkpoint_subject(checkpoint_ns, checkpoint_id)
        with self._read_tx() as conn:
            first = Raw(conn).one(sql.EV_FIRST_ABOUT_OF_KIND, (thread_id, subject, EventKind.CHECKPOINT_SAVED))
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

    # ------------------------------------------------------------------ unverified rows
    def thread_ids(self, conn: Connection) -> list[str]:
        """Every thread with a history: from the events themselves, not only the (unsigned) head rows,
        so deleting a thread's head row does not hide its history from a full verification."""
        found = {r[0] for r in conn.execute(select(schema.heads.c.thread_id))}
        found.update(r[0] for r in conn.execute(select(schema.events.c.thread_id).distinct()))
        return sorted(found)

    def head(self, thread_id: str) -> SignedHead | None:
        """The current signed chain head of a thread (export it to detect truncation later)."""
        self.flush()
        ev = schema.events.c
        with self._engine.connect() as conn:
            row = conn.execute(
                select(ev.thread_id, ev.seq, ev.kind, ev.body, ev.hash, ev.key_id, ev.key_store, ev.signature)
                .where(ev.thread_id == thread_id)
                .order_by(ev.seq.desc())
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
