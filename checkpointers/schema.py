"""Tables of the checkpointer, its ledger and the credential lease list.

One SQLAlchemy ``MetaData`` describes the current schema; Alembic migrations in
``migrations/versions`` create and upgrade it. The runtime code uses these
``Table`` objects (SQLAlchemy Core), never raw DDL.

Writes have no foreign key to checkpoints on purpose: LangGraph may save a
task's writes before the checkpoint they belong to is committed.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = [
    "metadata",
    "checkpoints",
    "writes",
    "events",
    "heads",
    "keys",
    "leases",
]

metadata = MetaData()

checkpoints = Table(
    "warden_checkpoints",
    metadata,
    Column("thread_id", String(255), primary_key=True),
    Column("checkpoint_ns", String(255), primary_key=True, default=""),
    Column("checkpoint_id", String(64), primary_key=True),
    Column("parent_checkpoint_id", String(64), nullable=True),
    Column("run_id", String(64), nullable=True),
    Column("type", String(32), nullable=False),
    Column("checkpoint", LargeBinary, nullable=False),
    Column("metadata_type", String(32), nullable=False),
    Column("metadata", LargeBinary, nullable=False),
    Column("digest", String(80), nullable=False),
)

writes = Table(
    "warden_writes",
    metadata,
    Column("thread_id", String(255), primary_key=True),
    Column("checkpoint_ns", String(255), primary_key=True, default=""),
    Column("checkpoint_id", String(64), primary_key=True),
    Column("task_id", String(64), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("task_path", Text, nullable=False, default=""),
    Column("channel", Text, nullable=False),
    Column("type", String(32), nullable=True),
    Column("blob", LargeBinary, nullable=True),
    Column("digest", String(80), nullable=False),
)

# The signed event history: one hash chain per thread.
events = Table(
    "warden_events",
    metadata,
    Column("thread_id", String(255), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("checkpoint_ns", String(255), nullable=False, default=""),
    Column("kind", String(64), nullable=False),
    # What the event is about (checkpoint id, tool call id, lease id): indexed lookups.
    Column("subject", String(255), nullable=True),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("hash", String(80), nullable=False),
    # Set on the last event of each committing transaction: the signed chain head.
    Column("key_id", String(80), nullable=True),
    Column("key_store", String(32), nullable=True),
    Column("signature", Text, nullable=True),
)
Index("ix_warden_events_subject", events.c.thread_id, events.c.subject)

# Chain tip per thread: the row a writer locks to append (threads never contend).
heads = Table(
    "warden_heads",
    metadata,
    Column("thread_id", String(255), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(80), nullable=False),
)

# Public keys, so verification needs no secret. Rotation adds rows, never removes.
keys = Table(
    "warden_keys",
    metadata,
    Column("key_id", String(80), primary_key=True),
    Column("algorithm", String(16), nullable=False),
    Column("public_key", LargeBinary, nullable=False),
    Column("workload_id", String(512), nullable=False),
    Column("store_kind", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("retired_at", DateTime(timezone=True), nullable=True),
)

# Just-in-time credential leases; revoked_at set = on the revocation list.
leases = Table(
    "warden_leases",
    metadata,
    Column("lease_id", String(64), primary_key=True),
    Column("jti", String(128), nullable=True, unique=True),
    Column("thread_id", String(255), nullable=False),
    Column("tool_call_id", String(255), nullable=True),
    Column("provider", String(64), nullable=False),
    Column("audience", String(255), nullable=False),
    Column("scopes", Text, nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoke_reason", String(64), nullable=True),
)
Index("ix_warden_leases_thread", leases.c.thread_id, leases.c.revoked_at)
