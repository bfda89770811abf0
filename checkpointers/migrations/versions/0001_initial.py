"""Initial schema: checkpoints, writes, the signed event ledger, keys and leases.

Revision ID: 0001_initial
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


# long: an Alembic migration is declarative, one create_table per table; split, it would no longer read as the schema
def upgrade() -> None:
    op.create_table(
        "warden_checkpoints",
        sa.Column("thread_id", sa.String(255), primary_key=True),
        sa.Column("checkpoint_ns", sa.String(255), primary_key=True),
        sa.Column("checkpoint_id", sa.String(64), primary_key=True),
        sa.Column("parent_checkpoint_id", sa.String(64), nullable=True),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("checkpoint", sa.LargeBinary, nullable=False),
        sa.Column("metadata_type", sa.String(32), nullable=False),
        sa.Column("metadata", sa.LargeBinary, nullable=False),
        sa.Column("digest", sa.String(80), nullable=False),
    )
    op.create_index("ix_warden_checkpoints_run", "warden_checkpoints", ["thread_id", "run_id"])
    op.create_table(
        "warden_writes",
        sa.Column("thread_id", sa.String(255), primary_key=True),
        sa.Column("checkpoint_ns", sa.String(255), primary_key=True),
        sa.Column("checkpoint_id", sa.String(64), primary_key=True),
        sa.Column("task_id", sa.String(64), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("task_path", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("type", sa.String(32), nullable=True),
        sa.Column("blob", sa.LargeBinary, nullable=True),
        sa.Column("digest", sa.String(80), nullable=False),
    )
    op.create_table(
        "warden_events",
        sa.Column("thread_id", sa.String(255), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("checkpoint_ns", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(255), nullable=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("hash", sa.String(80), nullable=False),
        sa.Column("key_id", sa.String(80), nullable=True),
        sa.Column("key_store", sa.String(32), nullable=True),
        sa.Column("signature", sa.Text, nullable=True),
    )
    op.create_index("ix_warden_events_subject", "warden_events", ["thread_id", "subject"])
    op.create_index("ix_warden_events_kind", "warden_events", ["kind"])
    op.create_table(
        "warden_heads",
        sa.Column("thread_id", sa.String(255), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(80), nullable=False),
    )
    op.create_table(
        "warden_keys",
        sa.Column("key_id", sa.String(80), primary_key=True),
        sa.Column("algorithm", sa.String(16), nullable=False),
        sa.Column("public_key", sa.LargeBinary, nullable=False),
        sa.Column("workload_id", sa.String(512), nullable=False),
        sa.Column("store_kind", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "warden_leases",
        sa.Column("lease_id", sa.String(64), primary_key=True),
        sa.Column("jti", sa.String(128), nullable=True, unique=True),
        sa.Column("thread_id", sa.String(255), nullable=False),
        sa.Column("tool_call_id", sa.String(255), nullable=True),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("audience", sa.String(255), nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoke_reason", sa.String(64), nullable=True),
    )
    op.create_index("ix_warden_leases_thread", "warden_leases", ["thread_id", "revoked_at"])


def downgrade() -> None:
    for index, table in [
        ("ix_warden_leases_thread", "warden_leases"),
        ("ix_warden_events_kind", "warden_events"),
        ("ix_warden_events_subject", "warden_events"),
        ("ix_warden_checkpoints_run", "warden_checkpoints"),
    ]:
        op.drop_index(index, table_name=table)
    for table in ["warden_leases", "warden_keys", "warden_heads", "warden_events", "warden_writes", "warden_checkpoints"]:
        op.drop_table(table)
