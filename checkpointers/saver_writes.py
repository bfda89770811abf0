"""The saver's write path: ``put`` and ``put_writes`` — serialise, store the rows, and append the
event with the digest of exactly what was stored, in the same transaction (or, on PostgreSQL,
the same statement).

Why rows and event together: state and history commit together or not at all, so a resumed run
can be checked against the signed chain. Values are scrubbed of live secrets before their
digests are taken (:func:`~langgraph_warden.redaction.scrub_blob`, the storage boundary).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import WRITES_IDX_MAP, Checkpoint, CheckpointMetadata, get_checkpoint_metadata
from sqlalchemy import Connection

from langgraph_warden.errors import ConfigurationError
from langgraph_warden.events import EventDraft, EventKind
from langgraph_warden.redaction import scrub_blob  # the storage boundary: live secrets masked before digests

from . import statements as sql
from .event_reads import checkpoint_subject
from .rawsql import DirectTx, Raw
from .rows import checkpoint_digest, write_digest
from .saver_base import SaverBase, configurable

__all__ = ["CheckpointWrites", "INTERRUPT"]

#: The channel of LangGraph's interrupt writes (a run pausing). Spelled out: LangGraph made its
#: constant private (``langgraph._internal._constants.INTERRUPT``) and deprecated the public alias.
INTERRUPT = "__interrupt__"


def _saved_config(row: tuple[Any, ...]) -> RunnableConfig:
    return {"configurable": {"thread_id": row[0], "checkpoint_ns": row[1], "checkpoint_id": row[2]}}


class CheckpointWrites(SaverBase):
    """Store checkpoints and pending writes with their events (see the module docstring)."""

    # ---------------------------------------------------------------- checkpoints
    def _prepare_put(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Serialise a checkpoint: its row values (``CP_COLS`` order) and its ``checkpoint.saved`` payload."""
        conf = configurable(config)
        thread_id = str(conf["thread_id"])
        ns = conf.get("checkpoint_ns", "") or ""
        parent_id = conf.get("checkpoint_id")
        type_, blob = self.serde.dumps_typed(checkpoint)
        md = get_checkpoint_metadata(config, metadata)
        md_type, md_blob = self.serde.dumps_typed(md)

        blob, md_blob = scrub_blob(type_, blob), scrub_blob(md_type, md_blob)
        run_id = md.get("run_id")
        run_id = str(run_id) if run_id is not None else None
        cid = checkpoint["id"]
        digest = checkpoint_digest(thread_id, ns, cid, parent_id, type_, blob, md_type, md_blob)
        row = (thread_id, ns, cid, parent_id, run_id, type_, blob, md_type, md_blob, digest)
        payload = {
            "checkpoint_id": cid,
            "parent_checkpoint_id": parent_id,
            "step": md.get("step") if isinstance(md.get("step"), int) else None,
            "source": md.get("source") if isinstance(md.get("source"), str) else None,
            "run_id": run_id,
            "digest": digest,
            "replaced": False,
        }
        return row, payload

    def _put_one_statement(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata) -> RunnableConfig:
        """PostgreSQL: a new checkpoint, its event and the chain head in one round trip; else the locking path."""
        row, payload = self._prepare_put(config, checkpoint, metadata)
        thread_id, ns, cid = row[0], row[1], row[2]
        draft = EventDraft(
            kind=EventKind.CHECKPOINT_SAVED, checkpoint_ns=ns, subject=checkpoint_subject(ns, cid), payload=payload
        )
        if self.ledger.try_append_one_statement(thread_id, [draft], [(sql.CHECKPOINTS, sql.CP_COL_LIST, row)]) is None:
            return self._write(self._put_tx, config, checkpoint, metadata, (row, payload))
        self._digests.remember((thread_id, ns, cid), row[-1])
        return _saved_config(row)

    def _put_tx(
        self,
        conn: Connection | DirectTx,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        prepared: tuple[tuple[Any, ...], dict[str, Any]] | None = None,
    ) -> RunnableConfig:
        row, payload = prepared if prepared is not None else self._prepare_put(config, checkpoint, metadata)
        thread_id, ns, cid, digest = row[0], row[1], row[2], row[-1]
        self.ledger.lock_thread(conn, thread_id)  # concurrent writers: read after the other commits
        raw = Raw(conn)
        # Insert first: a checkpoint id is new on every step but a replay's.
        found = None if raw.run(sql.CP_INSERT_NEW, row) == 1 else raw.one(sql.CP_DIGEST, (thread_id, ns, cid))
        existing = found[0] if found is not None else None
        if found is not None and existing != digest:
            # LangGraph re-puts a checkpoint id only when replaying the same step; the
            # new version is recorded by its own event so the history keeps both digests.
            raw.run(sql.CP_UPDATE, (*row[3:], thread_id, ns, cid))
        if found is None or existing != digest:
            self.ledger.append_in(
                conn,
                thread_id,
                [
                    EventDraft(
                        kind=EventKind.CHECKPOINT_SAVED,
                        checkpoint_ns=ns,
                        subject=checkpoint_subject(ns, cid),
                        payload={**payload, "replaced": found is not None},
                    )
                ],
            )
        self._digests.remember((thread_id, ns, cid), digest)
        return _saved_config(row)

    # ------------------------------------------------------------------ writes
    def _prepare_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
    ) -> list[tuple[Any, ...]]:
        """Serialise a task's writes into rows (``WR_COLS`` order)."""
        conf = configurable(config)
        thread_id = str(conf["thread_id"])
        ns = conf.get("checkpoint_ns", "") or ""
        cid = conf.get("checkpoint_id")
        if not cid:
            raise ConfigurationError(
                "config['configurable']['checkpoint_id'] is missing in put_writes; writes belong to a checkpoint"
            )

        rows = []
        for i, (channel, value) in enumerate(writes):
            idx = WRITES_IDX_MAP.get(channel, i)
            type_, blob = self.serde.dumps_typed(value)
            blob = scrub_blob(type_, blob)
            digest = write_digest(thread_id, ns, cid, task_id, idx, task_path, channel, type_, blob)
            rows.append((thread_id, ns, cid, task_id, idx, task_path, channel, type_, blob, digest))
        return rows

    def _writes_saved(self, rows: Sequence[tuple[Any, ...]], recorded: list[dict[str, Any]]) -> EventDraft:
        thread_id, ns, cid, task_id, _idx, task_path = rows[0][:6]
        self._digests.remember((thread_id, ns, cid), writes={(task_id, r["idx"]): r["digest"] for r in recorded})
        return EventDraft(
            kind=EventKind.WRITES_SAVED,
            checkpoint_ns=ns,
            subject=checkpoint_subject(ns, cid),
            payload={"checkpoint_id": cid, "task_id": task_id, "task_path": task_path, "rows": recorded},
        )

    def _put_writes_one_statement(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
    ) -> None:
        """PostgreSQL: new write rows, their event and the chain head in one round trip; else the locking path."""
        rows = self._prepare_writes(config, writes, task_id, task_path)
        if not rows:
            return
        if len({r[4] for r in rows}) == len(rows):
            recorded = [{"idx": r[4], "channel": r[6], "digest": r[9]} for r in rows]
            draft = self._writes_saved(rows, recorded)
            inserts = [(sql.WRITES, sql.WR_COL_LIST, r) for r in rows]
            if self.ledger.try_append_one_statement(rows[0][0], [draft], inserts) is not None:
                return
        self._write(self._put_writes_tx, config, writes, task_id, task_path, rows)

    def _put_writes_tx(
        self,
        conn: Connection | DirectTx,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
        prepared: list[tuple[Any, ...]] | None = None,
    ) -> None:
        rows = prepared if prepared is not None else self._prepare_writes(config, writes, task_id, task_path)
        if not rows:
            return
        thread_id, ns, cid = rows[0][:3]
        upsert = all(w[0] in WRITES_IDX_MAP for w in writes)
        self.ledger.lock_thread(conn, thread_id)  # concurrent writers: read after the other commits
        raw = Raw(conn)
        existing = {int(idx): d for idx, d in raw.all(sql.TASK_WRITE_DIGESTS, (thread_id, ns, cid, task_id))}
        inserts: list[tuple[Any, ...]] = []
        recorded: list[dict[str, Any]] = []
        for row in rows:
            idx, channel, type_, blob, digest = row[4], row[6], row[7], row[8], row[9]
            if idx not in existing:
                inserts.append(row)
                existing[idx] = digest
            elif upsert and existing[idx] != digest:
                raw.run(sql.WRITE_UPDATE, (channel, type_, blob, digest, task_path, thread_id, ns, cid, task_id, idx))
                existing[idx] = digest
            else:
                continue  # idempotent: a regular write is never overwritten
            recorded.append({"idx": idx, "channel": channel, "digest": digest})
        # Read first, then insert: on SQLite a PK-prefix SELECT plus a plain insert is cheaper than
        # INSERT ... ON CONFLICT DO NOTHING RETURNING (measured: 24 vs 29 µs for two rows).
        raw.many(sql.WRITES_INSERT, inserts)
        if recorded:
            self.ledger.append_in(conn, thread_id, [self._writes_saved(rows, recorded)])

    def _anchor_if_paused(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]]) -> None:
        """A run pausing (LangGraph's interrupt write): its head goes to the head store before the
        pause is reported, so the approval it waits for cannot later be replayed by a cut-back."""
        if self.ledger.head_store is not None and any(channel == INTERRUPT for channel, _ in writes):
            self.ledger.anchor_now(str(config["configurable"]["thread_id"]))
