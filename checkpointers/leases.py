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

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine, and_, insert, select, update
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from langgraph_warden.checkpointers.engine import WRITE, write_lock
from langgraph_warden.checkpointers.schema import leases
from langgraph_warden.errors import ConfigurationError

__all__ = ["SqlLeaseStore", "StoredLease"]

_REASON_LEN = 64


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite returns naive values; they were written in UTC
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _to_db(value: datetime, field_name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigurationError(f"lease {field_name} is a naive datetime; pass a timezone-aware UTC datetime")
    return value.astimezone(timezone.utc)


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
            return datetime.now(timezone.utc)
        return datetime.fromtimestamp(self._clock(), timezone.utc)

    def _write(self):
        conn = self._engine.connect()
        conn.execution_options(**WRITE)
        return conn

    def record_issued(self, lease: Any) -> None:
        """Insert the lease (duck-typed: the guards' ``Lease``); a duplicate id is an error."""
        values = {
            "lease_id": lease.lease_id,
            "jti": lease.jti,
            "thread_id": lease.thread_id,
            "tool_call_id": lease.tool_call_id,
            "provider": lease.provider,
            "audience": lease.audience,
            "scopes": " ".join(lease.scopes),
            "issued_at": _to_db(lease.issued_at, "issued_at"),
            "expires_at": _to_db(lease.expires_at, "expires_at"),
            "revoked_at": None,
            "revoke_reason": None,
        }
        try:
            with write_lock(self._engine), self._write() as conn, conn.begin():
                conn.execute(insert(leases).values(**values))
        except SAIntegrityError:
            raise ConfigurationError(
                f"lease_id {lease.lease_id!r} (or its jti) is already recorded; lease ids must be unique"
            ) from None

    def mark_revoked(self, lease_id: str, reason: str) -> bool:
        with write_lock(self._engine), self._write() as conn, conn.begin():
            result = conn.execute(
                update(leases)
                .where(and_(leases.c.lease_id == lease_id, leases.c.revoked_at.is_(None)))
                .values(revoked_at=self._now(), revoke_reason=str(reason)[:_REASON_LEN])
            )
            return result.rowcount == 1

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
