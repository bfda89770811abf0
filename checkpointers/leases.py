"""The durable lease list and revocation list on ``warden_leases``.

Why in the checkpointer's database: a resource server that verifies a per-step
token must see a revocation as soon as the step ends, and a crashed run's
outstanding leases must be found on resume. Keeping the list next to the
history means one backup, one place to audit.

Implements the ``LeaseStore`` protocol of ``langgraph_warden.guards.credentials``
structurally (no import of ``guards``: imports point down). Each call is its
own short transaction, durable on return. Times are stored and returned as
timezone-aware UTC (SQLite drops the zone; it is restored on read). The store
never holds a token or secret: only ids, scopes, audience and times.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, and_, select
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from langgraph_warden.checkpointers import statements as sql
from langgraph_warden.checkpointers.engine import WRITE, write_lock
from langgraph_warden.checkpointers.ledger import Ledger
from langgraph_warden.checkpointers.rawsql import Raw
from langgraph_warden.checkpointers.schema import leases
from langgraph_warden.errors import ConfigurationError
from langgraph_warden.events import EventDraft, EventSink

__all__ = ["SqlLeaseStore", "StoredLease"]

_REASON_LEN = 64

#: (sink, thread_id, drafts): events that describe a lease-list change.
Record = tuple[EventSink, str, Sequence[EventDraft]]



def _is_unique_violation(exc: BaseException) -> bool:
    if isinstance(exc, (SAIntegrityError, sqlite3.IntegrityError)):
        return True
    return type(exc).__name__ == "UniqueViolation"  # psycopg.errors.UniqueViolation, without importing psycopg


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite returns naive values; they were written in UTC
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _to_db(value: datetime, field_name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigurationError(f"lease {field_name} is a naive datetime; pass a timezone-aware UTC datetime")
    return value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class StoredLease:
    """A row of ``warden_leases`` (satisfies the guards' ``LeaseRecord`` protocol)."""

    lease_id: str
    jti: str | None
    thread_id: str
    tool_call_id: str | None
    provider: str
    audience: str
    scopes: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoke_reason: str | None


def _row(r: Any) -> StoredLease:
    return StoredLease(
        lease_id=r.lease_id,
        jti=r.jti,
        thread_id=r.thread_id,
        tool_call_id=r.tool_call_id,
        provider=r.provider,
        audience=r.audience,
        scopes=tuple(r.scopes.split()),
        issued_at=_utc(r.issued_at),  # type: ignore[arg-type]
        expires_at=_utc(r.expires_at),  # type: ignore[arg-type]
        revoked_at=_utc(r.revoked_at),
        revoke_reason=r.revoke_reason,
    )


class SqlLeaseStore:
    """``LeaseStore`` on SQLAlchemy Core; works on SQLite and PostgreSQL."""

    def __init__(self, engine: Engine, *, clock=None) -> None:
        self._engine = engine
        self._clock = clock  # optional () -> epoch seconds, for revoked_at in tests

    def _now(self) -> datetime:
        if self._clock is None:
            return datetime.now(UTC)
        return datetime.fromtimestamp(self._clock(), UTC)

    def _write(self):
        conn = self._engine.connect()
        conn.execution_options(**WRITE)
        return conn

    #: ``record=`` events commit in the same transaction as the lease row when the sink is the
    #: ledger of this database (the broker checks this flag).
    records_atomically = True

    def _ledger_for(self, record: Record | None) -> Ledger | None:
        if record is None:
            return None
        sink = record[0]
        if isinstance(sink, Ledger) and sink.shares_database_with(self._engine):
            return sink
        return None

    def writes_with(self, sink: EventSink) -> bool:
        """Whether :meth:`insert_in` can run in ``sink``'s transactions: ``sink`` is this database's ledger."""
        return self._ledger_for((sink, "", ())) is not None

    @staticmethod
    def insert_in(tx: Any, lease: Any) -> None:
        """Insert the lease row (duck-typed: the guards' ``Lease``) in the caller's transaction of this
        database's ledger (a :class:`~.rawsql.DirectTx` or a SQLAlchemy connection); a duplicate id raises.

        Why: the guard commits a call's lease with its ``credential.issued`` and ``tool.started``
        in one transaction (``Ledger.append_with_rows``) instead of one each.
        """
        raw = Raw(tx)
        raw.run(sql.LEASE_INSERT, (
            lease.lease_id, lease.jti, lease.thread_id, lease.tool_call_id, lease.provider, lease.audience,
            " ".join(lease.scopes),
            raw.timestamp(_to_db(lease.issued_at, "issued_at")), raw.timestamp(_to_db(lease.expires_at, "expires_at")),
        ))

    def record_issued(self, lease: Any, *, record: Record | None = None) -> None:
        """Insert the lease (duck-typed: the guards' ``Lease``); a duplicate id is an error.

        With ``record=(sink, thread_id, drafts)`` the events are appended in the same
        transaction when ``sink`` is this database's ledger (else right after the commit),
        so the trail never shows a credential the lease list lacks, or the reverse.
        """
        ledger = self._ledger_for(record)

        def write(tx: Any) -> None:
            self.insert_in(tx, lease)
            if ledger is not None and record is not None:
                ledger.append_in(tx, record[1], record[2])

        try:
            if ledger is not None:
                ledger.transaction(write)
            else:
                with write_lock(self._engine), self._write() as conn, conn.begin():
                    write(conn)
        except Exception as exc:
            if _is_unique_violation(exc):
                raise ConfigurationError(
                    f"lease_id {lease.lease_id!r} (or its jti) is already recorded; lease ids must be unique"
                ) from None
            raise
        if record is not None and ledger is None:
            record[0].append(record[1], record[2])

    def mark_revoked(self, lease_id: str, reason: str, *, record: Record | None = None) -> bool:
        """Put the lease on the revocation list; False if it already was (or is unknown).

        With ``record=`` the events are appended only if this call revoked the lease, in the
        same transaction when the sink is this database's ledger.
        """
        ledger = self._ledger_for(record)

        def write(tx: Any) -> bool:
            raw = Raw(tx)
            changed = raw.run(sql.LEASE_REVOKE, (raw.timestamp(self._now()), str(reason)[:_REASON_LEN], lease_id)) == 1
            if changed and ledger is not None and record is not None:
                ledger.append_in(tx, record[1], record[2])
            return changed

        if ledger is not None:
            return bool(ledger.transaction(write))
        with write_lock(self._engine), self._write() as conn, conn.begin():
            changed = write(conn)
        if changed and record is not None:
            record[0].append(record[1], record[2])
        return changed

    def is_revoked(self, jti: str) -> bool:
        """True if revoked **or unknown** (fail closed: an unrecorded token is not trusted)."""
        with self._engine.connect() as conn, conn.begin():
            row = conn.execute(select(leases.c.revoked_at).where(leases.c.jti == jti)).first()
        return row is None or row.revoked_at is not None

    def outstanding(self, thread_id: str) -> list[StoredLease]:
        with self._engine.connect() as conn, conn.begin():
            rows = conn.execute(
                select(leases)
                .where(and_(leases.c.thread_id == thread_id, leases.c.revoked_at.is_(None)))
                .order_by(leases.c.issued_at, leases.c.lease_id)
            ).all()
        return [_row(r) for r in rows]

    def outstanding_all(self) -> list[StoredLease]:
        """Every lease never revoked, across runs (``warden credentials list``)."""
        with self._engine.connect() as conn, conn.begin():
            rows = conn.execute(
                select(leases)
                .where(leases.c.revoked_at.is_(None))
                .order_by(leases.c.thread_id, leases.c.issued_at, leases.c.lease_id)
            ).all()
        return [_row(r) for r in rows]

    def get(self, lease_id: str) -> StoredLease | None:
        """One lease row (for audit and tests)."""
        with self._engine.connect() as conn, conn.begin():
            row = conn.execute(select(leases).where(leases.c.lease_id == lease_id)).first()
        return None if row is None else _row(row)

    def __repr__(self) -> str:
        return f"SqlLeaseStore(url={self._engine.url.render_as_string(hide_password=True)!r})"
