"""The saver's whole-thread operations: delete a thread, delete the checkpoints of runs, prune,
and copy a thread — each recorded by an event in the same transaction.

Why recorded: a removal the history does not record looks exactly like tampering (a deleted
row); the event says what went and why, and a copy's events carry the digests of the rows it
wrote, so the target thread verifies like any other. These are rare operations, on SQLAlchemy
Core over the :mod:`.schema` tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select, tuple_

from langgraph_warden.errors import ConfigurationError
from langgraph_warden.events import EventDraft, EventKind

from . import schema
from .event_reads import checkpoint_subject
from .rows import checkpoint_digest, write_digest
from .saver_base import SaverBase

__all__ = ["ThreadOps"]

_cp = schema.checkpoints
_wr = schema.writes

#: How many checkpoints one ``DELETE ... IN (...)`` names.
_CHUNK = 500


class ThreadOps(SaverBase):
    """Delete, prune and copy threads (see the module docstring)."""

    def _delete_thread_tx(self, conn: Connection, thread_id: str) -> None:
        self._digests.forget_thread(thread_id)
        n_cp = conn.execute(delete(_cp).where(_cp.c.thread_id == thread_id)).rowcount
        n_wr = conn.execute(delete(_wr).where(_wr.c.thread_id == thread_id)).rowcount
        if n_cp or n_wr:
            self.ledger.append_in(
                conn,
                thread_id,
                [EventDraft(kind=EventKind.THREAD_DELETED, payload={"checkpoints": n_cp, "writes": n_wr})],
            )

    def _remove_checkpoints(self, conn: Connection, thread_id: str, keys: list[tuple[str, str]], kind: str, extra: dict[str, Any]) -> None:
        if not keys:
            return
        self._digests.forget_thread(thread_id)
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            conn.execute(
                delete(_cp).where(_cp.c.thread_id == thread_id, tuple_(_cp.c.checkpoint_ns, _cp.c.checkpoint_id).in_(chunk))
            )
            conn.execute(
                delete(_wr).where(_wr.c.thread_id == thread_id, tuple_(_wr.c.checkpoint_ns, _wr.c.checkpoint_id).in_(chunk))
            )
        self.ledger.append_in(
            conn,
            thread_id,
            [EventDraft(kind=kind, payload={**extra, "checkpoints": [[ns, cid] for ns, cid in keys]})],
        )

    def _delete_for_runs_tx(self, conn: Connection, run_ids: Sequence[str]) -> None:
        if not run_ids:
            return
        rows = conn.execute(
            select(_cp.c.thread_id, _cp.c.checkpoint_ns, _cp.c.checkpoint_id).where(
                _cp.c.run_id.in_([str(r) for r in run_ids])
            )
        ).all()
        by_thread: dict[str, list[tuple[str, str]]] = {}
        for r in rows:
            by_thread.setdefault(r.thread_id, []).append((r.checkpoint_ns, r.checkpoint_id))
        for thread_id in sorted(by_thread):
            self._remove_checkpoints(
                conn, thread_id, by_thread[thread_id], EventKind.RUNS_DELETED, {"run_ids": sorted(map(str, run_ids))}
            )

    def _prune_tx(self, conn: Connection, thread_ids: Sequence[str], strategy: str) -> None:
        if strategy not in ("keep_latest", "delete"):
            raise ConfigurationError(f"prune strategy {strategy!r} is unknown; use 'keep_latest' or 'delete'")
        for thread_id in sorted({str(t) for t in thread_ids}):
            rows = conn.execute(
                select(_cp.c.checkpoint_ns, _cp.c.checkpoint_id)
                .where(_cp.c.thread_id == thread_id)
                .order_by(_cp.c.checkpoint_ns, _cp.c.checkpoint_id.desc())
            ).all()
            doomed: list[tuple[str, str]] = []
            seen_ns: set[str] = set()
            for r in rows:
                if strategy == "keep_latest" and r.checkpoint_ns not in seen_ns:
                    seen_ns.add(r.checkpoint_ns)
                    continue
                doomed.append((r.checkpoint_ns, r.checkpoint_id))
            if strategy == "delete":
                # Writes saved ahead of any checkpoint go too; the event says so ("all_writes").
                n = conn.execute(delete(_wr).where(_wr.c.thread_id == thread_id)).rowcount
                if n and not doomed:
                    self._digests.forget_thread(thread_id)
                    self.ledger.append_in(
                        conn,
                        thread_id,
                        [EventDraft(kind=EventKind.CHECKPOINTS_PRUNED, payload={"strategy": strategy, "checkpoints": [], "all_writes": True})],
                    )
            self._remove_checkpoints(
                conn, thread_id, doomed, EventKind.CHECKPOINTS_PRUNED,
                {"strategy": strategy, "all_writes": strategy == "delete"},
            )

    def _copy_thread_tx(self, conn: Connection, source: str, target: str) -> None:
        cps = conn.execute(select(_cp).where(_cp.c.thread_id == source).order_by(_cp.c.checkpoint_id)).all()
        wrs = conn.execute(
            select(_wr).where(_wr.c.thread_id == source).order_by(_wr.c.checkpoint_id, _wr.c.task_path, _wr.c.task_id, _wr.c.idx)
        ).all()
        if not cps and not wrs:
            return
        drafts = [EventDraft(kind=EventKind.THREAD_COPIED, payload={"source_thread_id": source, "checkpoints": len(cps)})]
        cp_rows = _copied_checkpoints(cps, source, target, drafts)
        wr_rows = _copied_writes(wrs, source, target, drafts)
        # Replace whatever the target had: the copy is the target's new state, recorded as such.
        self._delete_thread_tx(conn, target)
        if cp_rows:
            conn.execute(insert(_cp), cp_rows)
        if wr_rows:
            conn.execute(insert(_wr), wr_rows)
        self.ledger.append_in(conn, target, drafts)


def _copied_checkpoints(cps: Sequence[Row[Any]], source: str, target: str, drafts: list[EventDraft]) -> list[dict[str, Any]]:
    """The checkpoint rows of ``source`` as ``target``'s, re-digested; their events go to ``drafts``."""
    cp_rows = []
    for r in cps:
        digest = checkpoint_digest(
            target, r.checkpoint_ns, r.checkpoint_id, r.parent_checkpoint_id, r.type, bytes(r.checkpoint), r.metadata_type, bytes(r.metadata)
        )
        cp_rows.append(
            dict(
                thread_id=target,
                checkpoint_ns=r.checkpoint_ns,
                checkpoint_id=r.checkpoint_id,
                parent_checkpoint_id=r.parent_checkpoint_id,
                run_id=r.run_id,
                type=r.type,
                checkpoint=bytes(r.checkpoint),
                metadata_type=r.metadata_type,
                metadata=bytes(r.metadata),
                digest=digest,
            )
        )
        drafts.append(
            EventDraft(
                kind=EventKind.CHECKPOINT_SAVED,
                checkpoint_ns=r.checkpoint_ns,
                subject=checkpoint_subject(r.checkpoint_ns, r.checkpoint_id),
                payload={
                    "checkpoint_id": r.checkpoint_id,
                    "parent_checkpoint_id": r.parent_checkpoint_id,
                    "run_id": r.run_id,
                    "digest": digest,
                    "copied_from": source,
                    "replaced": False,
                },
            )
        )
    return cp_rows


def _copied_writes(wrs: Sequence[Row[Any]], source: str, target: str, drafts: list[EventDraft]) -> list[dict[str, Any]]:
    """The write rows of ``source`` as ``target``'s, re-digested; one event per task goes to ``drafts``."""
    wr_rows = []
    grouped: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for w in wrs:
        blob = None if w.blob is None else bytes(w.blob)
        digest = write_digest(target, w.checkpoint_ns, w.checkpoint_id, w.task_id, int(w.idx), w.task_path, w.channel, w.type, blob)
        wr_rows.append(
            dict(
                thread_id=target,
                checkpoint_ns=w.checkpoint_ns,
                checkpoint_id=w.checkpoint_id,
                task_id=w.task_id,
                idx=int(w.idx),
                task_path=w.task_path,
                channel=w.channel,
                type=w.type,
                blob=blob,
                digest=digest,
            )
        )
        grouped.setdefault((w.checkpoint_ns, w.checkpoint_id, w.task_id, w.task_path), []).append(
            {"idx": int(w.idx), "channel": w.channel, "digest": digest}
        )
    for (ns, cid, task_id, task_path), recorded in grouped.items():
        drafts.append(
            EventDraft(
                kind=EventKind.WRITES_SAVED,
                checkpoint_ns=ns,
                subject=checkpoint_subject(ns, cid),
                payload={"checkpoint_id": cid, "task_id": task_id, "task_path": task_path, "rows": recorded, "copied_from": source},
            )
        )
    return wr_rows
