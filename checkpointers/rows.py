"""Digests of stored rows, and the full-thread check of rows against the event chain.

A row digest covers every stored column that affects what a resumed run sees
(the serialised checkpoint and metadata are hashed as bytes, exactly as stored),
so changing any byte of a row is detected.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import Connection, select

from langgraph_warden import canonical
from langgraph_warden.chain import ChainReport, Finding
from langgraph_warden.events import EventKind

from . import schema

__all__ = ["checkpoint_digest", "write_digest", "check_rows_against_events"]


def _h(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def checkpoint_digest(
    thread_id: str,
    checkpoint_ns: str,
    checkpoint_id: str,
    parent_checkpoint_id: str | None,
    type_: str,
    checkpoint: bytes,
    metadata_type: str,
    metadata: bytes,
) -> str:
    return canonical.digest(
        {
            "row": "checkpoint",
            "thread_id": thread_id,
            "checkpoint_ns": checkpoint_ns,
            "checkpoint_id": checkpoint_id,
            "parent_checkpoint_id": parent_checkpoint_id,
            "type": type_,
            "checkpoint": _h(checkpoint),
            "metadata_type": metadata_type,
            "metadata": _h(metadata),
        }
    )


def write_digest(
    thread_id: str,
    checkpoint_ns: str,
    checkpoint_id: str,
    task_id: str,
    idx: int,
    task_path: str,
    channel: str,
    type_: str | None,
    blob: bytes | None,
) -> str:
    return canonical.digest(
        {
            "row": "write",
            "thread_id": thread_id,
            "checkpoint_ns": checkpoint_ns,
            "checkpoint_id": checkpoint_id,
            "task_id": task_id,
            "idx": idx,
            "task_path": task_path,
            "channel": channel,
            "type": type_,
            "blob": _h(blob),
        }
    )


def row_checkpoint_digest(r: Any) -> str:
    return checkpoint_digest(
        r.thread_id,
        r.checkpoint_ns,
        r.checkpoint_id,
        r.parent_checkpoint_id,
        r.type,
        bytes(r.checkpoint),
        r.metadata_type,
        bytes(r.metadata),
    )


def row_write_digest(r: Any) -> str:
    return write_digest(
        r.thread_id,
        r.checkpoint_ns,
        r.checkpoint_id,
        r.task_id,
        int(r.idx),
        r.task_path,
        r.channel,
        r.type,
        None if r.blob is None else bytes(r.blob),
    )


def expected_rows(report: ChainReport) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str, str, int], str]]:
    """Replay the chain: which checkpoint and write rows should exist now, with which digests."""
    cps: dict[tuple[str, str], str] = {}
    wrs: dict[tuple[str, str, str, int], str] = {}
    for seq in sorted(report.bodies):
        body = report.bodies[seq]
        kind = body.get("kind")
        p = body.get("payload") or {}
        ns = body.get("checkpoint_ns", "")
        if kind == EventKind.CHECKPOINT_SAVED:
            cps[(ns, p["checkpoint_id"])] = p["digest"]
        elif kind == EventKind.WRITES_SAVED:
            for w in p.get("rows", ()):
                wrs[(ns, p["checkpoint_id"], p["task_id"], int(w["idx"]))] = w["digest"]
        elif kind == EventKind.THREAD_DELETED:
            cps.clear()
            wrs.clear()
        elif kind in (EventKind.CHECKPOINTS_PRUNED, EventKind.RUNS_DELETED):
            if p.get("all_writes"):
                wrs.clear()
            removed = {(c[0], c[1]) for c in p.get("checkpoints", ())}
            for key in removed:
                cps.pop(key, None)
            for wkey in [k for k in wrs if (k[0], k[1]) in removed]:
                del wrs[wkey]
    return cps, wrs


def check_rows_against_events(conn: Connection, thread_id: str, report: ChainReport) -> list[Finding]:
    """Every stored row must be exactly what the chain says, and every recorded row must exist."""
    findings: list[Finding] = []
    exp_cp, exp_wr = expected_rows(report)
    cp = schema.checkpoints
    for r in conn.execute(select(cp).where(cp.c.thread_id == thread_id)):
        key = (r.checkpoint_ns, r.checkpoint_id)
        want = exp_cp.pop(key, None)
        if want is None:
            findings.append(Finding(thread_id, None, "checkpoint_unrecorded", f"checkpoint {key} has no checkpoint.saved event"))
        elif want != row_checkpoint_digest(r):
            findings.append(Finding(thread_id, None, "checkpoint_changed", f"checkpoint {key} differs from its recorded digest"))
    for key in exp_cp:
        findings.append(Finding(thread_id, None, "checkpoint_deleted", f"checkpoint {key} was recorded but its row is gone"))
    wr = schema.writes
    for r in conn.execute(select(wr).where(wr.c.thread_id == thread_id)):
        wkey = (r.checkpoint_ns, r.checkpoint_id, r.task_id, int(r.idx))
        want = exp_wr.pop(wkey, None)
        if want is None:
            findings.append(Finding(thread_id, None, "write_unrecorded", f"write {wkey} has no writes.saved event"))
        elif want != row_write_digest(r):
            findings.append(Finding(thread_id, None, "write_changed", f"write {wkey} differs from its recorded digest"))
    for wkey in exp_wr:
        findings.append(Finding(thread_id, None, "write_deleted", f"write {wkey} was recorded but its row is gone"))
    return findings
