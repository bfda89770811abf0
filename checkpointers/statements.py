"""Every SQL statement the checkpointer runs as text, with the table names taken from :mod:`.schema`.

Why one place: the saver, the ledger, the head-store writer and the lease list run hand-written
SQL on the hot path (see :mod:`.rawsql`); spelled out beside each caller, a table or column
rename had ~40 places to miss. Here each statement is written once with ``?`` placeholders
(:class:`~.rawsql.Raw` adapts them to the driver), and a table name only through the
``Table`` objects of :mod:`.schema`. Statements that depend on a count of values are built by
the small functions at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from . import schema
from .rawsql import CP_COLS, EV_COLS, WR_COLS

CHECKPOINTS = schema.checkpoints.name
WRITES = schema.writes.name
EVENTS = schema.events.name
HEADS = schema.heads.name
KEYS = schema.keys.name
LEASES = schema.leases.name

#: The columns of :data:`CP_COLS` / :data:`WR_COLS` as tuples (the one-statement append's inserts).
CP_COL_LIST = tuple(c.strip() for c in CP_COLS.split(","))
WR_COL_LIST = tuple(c.strip() for c in WR_COLS.split(","))
#: The columns an appended event row is inserted with, in the order the ledger builds its rows.
EV_INSERT_COL_LIST = (
    "thread_id", "seq", "checkpoint_ns", "kind", "subject", "ts", "body", "hash", "key_id", "key_store", "signature",
)

# ----------------------------------------------------------------- checkpoints and writes
_CP_KEY = "thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?"
CP_SELECT = f"SELECT {CP_COLS} FROM {CHECKPOINTS}"
CP_LATEST = f"{CP_SELECT} WHERE thread_id = ? AND checkpoint_ns = ? ORDER BY checkpoint_id DESC LIMIT 1"
CP_BY_ID = f"{CP_SELECT} WHERE {_CP_KEY}"
CP_DIGEST = f"SELECT digest FROM {CHECKPOINTS} WHERE {_CP_KEY}"
CP_INSERT = f"INSERT INTO {CHECKPOINTS} ({CP_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
CP_INSERT_NEW = CP_INSERT + " ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO NOTHING"
CP_UPDATE = (
    f"UPDATE {CHECKPOINTS} SET parent_checkpoint_id = ?, run_id = ?, type = ?, checkpoint = ?, metadata_type = ?, "
    f"metadata = ?, digest = ? WHERE {_CP_KEY}"
)
#: Whether checkpoint ``checkpoint_id`` of a namespace, or a later one, is committed.
CP_DURABLE = (
    f"SELECT 1 FROM {CHECKPOINTS} WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id >= ? LIMIT 1"
)
#: PostgreSQL, one statement: the checkpoint ``{pick}`` selects joined with its writes (a row per
#: write, or one row without), and ``{newer}``: whether the chain has events the reader has not seen.
PG_CP_WITH_WRITES = (
    "SELECT c.*, w.task_id, w.idx, w.task_path, w.channel, w.type, w.blob, w.digest, {newer} FROM ({pick}) c "
    f"LEFT JOIN {WRITES} w ON w.thread_id = c.thread_id AND w.checkpoint_ns = c.checkpoint_ns "
    "AND w.checkpoint_id = c.checkpoint_id ORDER BY w.task_path, w.task_id, w.idx"
)
PG_NEWER_EVENTS = f"EXISTS (SELECT 1 FROM {EVENTS} e WHERE e.thread_id = %s AND e.seq > %s)"

WRITES_OF_CHECKPOINT = f"SELECT {WR_COLS} FROM {WRITES} WHERE {_CP_KEY} ORDER BY task_path, task_id, idx"
TASK_WRITE_DIGESTS = f"SELECT idx, digest FROM {WRITES} WHERE {_CP_KEY} AND task_id = ?"
WRITE_UPDATE = (
    f"UPDATE {WRITES} SET channel = ?, type = ?, blob = ?, digest = ?, task_path = ? "
    f"WHERE {_CP_KEY} AND task_id = ? AND idx = ?"
)
WRITES_INSERT = f"INSERT INTO {WRITES} ({WR_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"

# ------------------------------------------------------------------------ events and heads
EV_INSERT = f"INSERT INTO {EVENTS} ({', '.join(EV_INSERT_COL_LIST)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
#: Sign the head a group commit leaves: its last event carries the signature.
EV_SIGN = f"UPDATE {EVENTS} SET key_id = ?, key_store = ?, signature = ? WHERE thread_id = ? AND seq = ?"
EV_ALL = f"SELECT {EV_COLS} FROM {EVENTS} WHERE thread_id = ? ORDER BY seq"
EV_AT = f"SELECT body, hash FROM {EVENTS} WHERE thread_id = ? AND seq = ?"
EV_LAST = f"SELECT seq, hash FROM {EVENTS} WHERE thread_id = ? ORDER BY seq DESC LIMIT 1"
#: The signed head row at a position (the head-store writer saves it).
EV_HEAD_AT = f"SELECT hash, key_id, key_store, signature FROM {EVENTS} WHERE thread_id = ? AND seq = ?"
EV_FIRST_ABOUT = f"SELECT min(seq) FROM {EVENTS} WHERE thread_id = ? AND subject = ?"
EV_FIRST_ABOUT_OF_KIND = f"SELECT min(seq) FROM {EVENTS} WHERE thread_id = ? AND subject = ? AND kind = ?"
EV_LAST_ABOUT = f"SELECT max(seq) FROM {EVENTS} WHERE thread_id = ? AND subject = ?"

HEAD_SELECT = f"SELECT seq, hash FROM {HEADS} WHERE thread_id = ?"
HEAD_FOR_UPDATE = HEAD_SELECT + " FOR UPDATE"
HEAD_INSERT = f"INSERT INTO {HEADS} (thread_id, seq, hash) VALUES (?, ?, ?)"
HEAD_INSERT_NEW = HEAD_INSERT + " ON CONFLICT (thread_id) DO NOTHING"
HEAD_SET = f"UPDATE {HEADS} SET seq = ?, hash = ? WHERE thread_id = ?"
#: Advance a head only if it is still the one expected (``seq``, ``hash`` last).
HEAD_ADVANCE = f"UPDATE {HEADS} SET seq = ?, hash = ? WHERE thread_id = ? AND seq = ? AND hash = ?"

KEY_EXISTS = f"SELECT key_id FROM {KEYS} WHERE key_id = ?"
KEY_INSERT = (
    f"INSERT INTO {KEYS} (key_id, algorithm, public_key, workload_id, store_kind, created_at) VALUES (?, ?, ?, ?, ?, ?)"
)

# ------------------------------------------------------------------------------ leases
LEASE_INSERT = (
    f"INSERT INTO {LEASES} (lease_id, jti, thread_id, tool_call_id, provider, audience, scopes, issued_at, "
    "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
LEASE_REVOKE = f"UPDATE {LEASES} SET revoked_at = ?, revoke_reason = ? WHERE lease_id = ? AND revoked_at IS NULL"


# ------------------------------------------------------------------- PostgreSQL locks
#: One live attempt per tool call across processes (claims.py): a session-level advisory lock.
PG_TRY_ADVISORY_LOCK = "SELECT pg_try_advisory_lock(%s)"
PG_ADVISORY_UNLOCK = "SELECT pg_advisory_unlock(%s)"
#: Migrations of one schema take turns (migrate.py): a transaction-level advisory lock.
PG_MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(hashtext('langgraph-warden:' || current_schema()))"
PG_CURRENT_SCHEMA = "SELECT current_schema()"

# ------------------------------------------------------------------------------ builders
def select_events(
    columns: str, thread_id: str, kinds: Sequence[str] | None, after_seq: int, subject: str | None = None
) -> tuple[str, list[Any]]:
    """One thread's events after ``after_seq`` (optionally of ``kinds`` / about ``subject``), in order."""
    sql = f"SELECT {columns} FROM {EVENTS} WHERE thread_id = ? AND seq > ?"
    params: list[Any] = [thread_id, after_seq]
    if kinds:
        sql += f" AND kind IN ({', '.join('?' * len(kinds))})"
        params.extend(kinds)
    if subject is not None:
        sql += " AND subject = ?"
        params.append(subject)
    return sql + " ORDER BY seq", params


def writes_of_checkpoints(count: int) -> str:
    """The writes of ``count`` checkpoints of one thread and namespace (ids last), in order."""
    return (
        f"SELECT {WR_COLS} FROM {WRITES} WHERE thread_id = ? AND checkpoint_ns = ? "
        f"AND checkpoint_id IN ({', '.join('?' * count)}) ORDER BY task_path, task_id, idx"
    )


@cache
def pg_type(table: str, column: str) -> str:
    """The PostgreSQL type of a schema column (the one-statement append casts its parameters)."""
    from sqlalchemy.dialects import postgresql

    return schema.metadata.tables[table].c[column].type.compile(dialect=postgresql.dialect())


def pg_append_statement(
    head_sql: str, inserts: Sequence[tuple[str, Sequence[str]]]
) -> str:
    """PostgreSQL's one-statement append: a CTE ``hd`` (``head_sql``, which returns a row only if
    the head moved as expected) and one insert per (table, columns) selecting from it, so nothing
    is written unless the head moved. Parameters: the head's, then each insert's values."""
    parts = [f"hd AS ({head_sql} RETURNING 1)"]
    for i, (table, cols) in enumerate(inserts):
        casts = ", ".join(f"CAST(%s AS {pg_type(table, c)})" for c in cols)
        parts.append(f"i{i} AS (INSERT INTO {table} ({', '.join(cols)}) SELECT {casts} FROM hd RETURNING 1)")
    return "WITH " + ", ".join(parts) + " SELECT count(*) FROM hd"
