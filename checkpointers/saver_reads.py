"""The saver's read path: load a checkpoint (or list them) with its pending writes, verified
against the signed chain, and decode the rows into LangGraph's ``CheckpointTuple``.

Why verified here: ``get_tuple`` is the call a run makes to resume, so it raises
:class:`~langgraph_warden.errors.IntegrityError` instead of returning state that was altered;
the checks themselves are :mod:`.verification`'s.
"""

from __future__ import annotations

from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import Checkpoint, CheckpointMetadata, CheckpointTuple, get_checkpoint_id
from sqlalchemy import Connection

from langgraph_warden.errors import CorruptRowError

from . import schema
from . import statements as sql
from .rawsql import CpRow, DirectTx, Raw, WrRow
from .rows import row_checkpoint_digest, row_write_digest
from .saver_base import SaverBase, configurable
from .verification import verify_latest, verify_listed, verify_loaded

__all__ = ["CheckpointReads", "RACY_REFUSALS"]

#: Refusals a read can meet when its snapshot predates a commit of this process: tried once more.
RACY_REFUSALS = frozenset({"checkpoint_missing", "checkpoint_unrecorded", "writes_changed", "checkpoint_changed"})

#: How many checkpoint ids one ``IN (...)`` of a listing carries.
_CHUNK = 500


class CheckpointReads(SaverBase):
    """Load, verify and decode checkpoints (see the module docstring)."""

    # ------------------------------------------------------------------- decode
    def _load_checkpoint(self, r: Any) -> Checkpoint:
        try:
            value = self.serde.loads_typed((r.type, bytes(r.checkpoint)))
            if not isinstance(value, dict) or "id" not in value or "channel_values" not in value:
                raise TypeError(f"decoded to {type(value).__name__}, not a checkpoint")
            return cast(Checkpoint, value)
        except Exception as exc:
            raise CorruptRowError(
                f"checkpoint row (thread {r.thread_id!r}, ns {r.checkpoint_ns!r}, id {r.checkpoint_id!r}) in "
                f"{schema.checkpoints.name} cannot be decoded ({type(exc).__name__}: {exc}); the row is corrupted or "
                "was written with a different serializer/encryption key"
            ) from None

    def _load_metadata(self, r: Any) -> CheckpointMetadata:
        try:
            value = self.serde.loads_typed((r.metadata_type, bytes(r.metadata)))
            if not isinstance(value, dict):
                raise TypeError(f"decoded to {type(value).__name__}, not metadata")
            return cast(CheckpointMetadata, value)
        except Exception as exc:
            raise CorruptRowError(
                f"metadata of checkpoint row (thread {r.thread_id!r}, id {r.checkpoint_id!r}) in "
                f"{schema.checkpoints.name} cannot be decoded ({type(exc).__name__}); the row is corrupted or the "
                "serializer changed"
            ) from None

    def _load_write(self, w: Any) -> Any:
        try:
            return self.serde.loads_typed((w.type, bytes(w.blob)))
        except Exception as exc:
            raise CorruptRowError(
                f"write row (thread {w.thread_id!r}, checkpoint {w.checkpoint_id!r}, task {w.task_id!r}, "
                f"idx {w.idx}) in {schema.writes.name} cannot be decoded ({type(exc).__name__})"
            ) from None

    def _tuple(self, r: Any, writes: list[Any]) -> CheckpointTuple:
        conf: RunnableConfig = {
            "configurable": {
                "thread_id": r.thread_id,
                "checkpoint_ns": r.checkpoint_ns,
                "checkpoint_id": r.checkpoint_id,
            }
        }
        parent: RunnableConfig | None = (
            {
                "configurable": {
                    "thread_id": r.thread_id,
                    "checkpoint_ns": r.checkpoint_ns,
                    "checkpoint_id": r.parent_checkpoint_id,
                }
            }
            if r.parent_checkpoint_id
            else None
        )
        return CheckpointTuple(
            config=conf,
            checkpoint=self._load_checkpoint(r),
            metadata=self._load_metadata(r),
            parent_config=parent,
            pending_writes=[(w.task_id, w.channel, self._load_write(w)) for w in writes],
        )

    # -------------------------------------------------------------------- one
    def _get_tuple_tx(self, conn: Connection | DirectTx, config: RunnableConfig) -> CheckpointTuple | None:
        conf = configurable(config)
        thread_id = str(conf["thread_id"])
        ns = conf.get("checkpoint_ns", "") or ""
        checkpoint_id = get_checkpoint_id(config)
        raw = Raw(conn)
        if not checkpoint_id and self.verify_reads:
            latest = verify_latest(self.ledger, self._digests, conn, thread_id, ns)
            return None if latest is None else self._tuple(*latest)
        if checkpoint_id:
            found = raw.one(sql.CP_BY_ID, (thread_id, ns, checkpoint_id))
        else:
            found = raw.one(sql.CP_LATEST, (thread_id, ns))
        if found is None:
            return None
        r = CpRow(*found)
        writes = [WrRow(*w) for w in raw.all(sql.WRITES_OF_CHECKPOINT, (thread_id, ns, r.checkpoint_id))]
        if self.verify_reads:
            verify_loaded(self.ledger, self._digests, conn, r, writes)
        return self._tuple(r, writes)

    def _get_tuple_one_statement(self, config: RunnableConfig) -> CheckpointTuple | None:
        """PostgreSQL: the checkpoint and its writes in one round trip (one statement, one snapshot).

        The latest checkpoint is read by the id the verified chain names, with a check in the
        same statement that the chain has no event this process has not verified; a checkpoint
        named by id must match this process's trust cache. Anything else is re-read and
        verified on the transactional path.
        """
        conf = configurable(config)
        thread_id = str(conf["thread_id"])
        ns = conf.get("checkpoint_ns", "") or ""
        checkpoint_id = get_checkpoint_id(config)
        newer_sql, newer_params = "FALSE", cast(tuple[Any, ...], ())
        expected: tuple[str | None, dict[tuple[str, int], str]] | None = None
        if not checkpoint_id and self.verify_reads:
            known = self.ledger.trusted_latest(thread_id, ns)
            if known is None or known[1] is None or known[4]:
                return self._read(self._get_tuple_tx, config)
            position, checkpoint_id, digest, recorded_writes, _unsure = known
            expected = (digest, recorded_writes)
            newer_sql, newer_params = sql.PG_NEWER_EVENTS, (thread_id, position.seq)
        by_id = checkpoint_id and expected is None
        pick = sql.CP_BY_ID if by_id else sql.CP_LATEST
        params = (thread_id, ns, checkpoint_id) if by_id else (thread_id, ns)
        with self.ledger.direct_postgres.connection() as pg:
            rows = pg.cursor(binary=True).execute(
                sql.PG_CP_WITH_WRITES.format(pick=pick.replace("?", "%s"), newer=newer_sql), (*newer_params, *params)
            ).fetchall()
        if not rows:
            return self._read(self._get_tuple_tx, config) if self.verify_reads else None
        r = CpRow(*rows[0][:10])
        writes = [WrRow(r.thread_id, r.checkpoint_ns, r.checkpoint_id, *row[10:17]) for row in rows if row[10] is not None]
        if self.verify_reads:
            key = (r.thread_id, r.checkpoint_ns, r.checkpoint_id)
            write_digests = {(w.task_id, int(w.idx)): row_write_digest(w) for w in writes}
            if expected is not None:
                vouched = not rows[0][17] and r.checkpoint_id == checkpoint_id and expected == (
                    row_checkpoint_digest(r), write_digests)
            else:
                vouched = self._digests.is_trusted(key, row_checkpoint_digest(r), write_digests)
            if not vouched:
                return self._read(self._get_tuple_tx, config)
        return self._tuple(r, writes)

    # ------------------------------------------------------------------- many
    def _list_tx(
        self,
        conn: Connection,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
        verify: bool,
    ) -> list[CheckpointTuple]:
        raw = Raw(conn)
        selected: list[CpRow] = []
        for found in raw.all(*_list_query(config, before, None if filter else limit)):
            r = CpRow(*found)
            md = self._load_metadata(r)
            if filter and not all(md.get(k) == v for k, v in filter.items()):
                continue
            selected.append(r)
            if limit is not None and len(selected) >= limit:
                break
        if not selected:
            return []
        by_cp = _writes_by_checkpoint(raw, selected)
        if verify:
            verify_listed(self.ledger, self._digests, conn, selected, by_cp)
        return [self._tuple(r, by_cp[(r.thread_id, r.checkpoint_ns, r.checkpoint_id)]) for r in selected]


def _list_query(config: RunnableConfig | None, before: RunnableConfig | None, limit: int | None) -> tuple[str, list[Any]]:
    """The checkpoints a listing names (thread, namespace, id, ``before``), newest first."""
    conf = configurable(config, need_thread=False) if config is not None else {}
    where: list[str] = []
    params: list[Any] = []
    if conf.get("thread_id") is not None:
        where.append("thread_id = ?")
        params.append(str(conf["thread_id"]))
    if conf.get("checkpoint_ns") is not None:
        where.append("checkpoint_ns = ?")
        params.append(conf["checkpoint_ns"])
    if conf.get("checkpoint_id"):
        where.append("checkpoint_id = ?")
        params.append(conf["checkpoint_id"])
    if before is not None and get_checkpoint_id(before):
        where.append("checkpoint_id < ?")
        params.append(get_checkpoint_id(before))
    statement = sql.CP_SELECT
    if where:
        statement += " WHERE " + " AND ".join(where)
    statement += " ORDER BY checkpoint_id DESC"
    if limit is not None:
        statement += f" LIMIT {int(limit)}"
    return statement, params


def _writes_by_checkpoint(raw: Raw, selected: list[CpRow]) -> dict[tuple[str, str, str], list[WrRow]]:
    """The writes of each listed checkpoint, read with one statement per thread, namespace and chunk."""
    by_cp: dict[tuple[str, str, str], list[WrRow]] = {}
    groups: dict[tuple[str, str], list[str]] = {}
    for r in selected:
        by_cp[(r.thread_id, r.checkpoint_ns, r.checkpoint_id)] = []
        groups.setdefault((r.thread_id, r.checkpoint_ns), []).append(r.checkpoint_id)
    for (thread_id, ns), ids in groups.items():
        for chunk_start in range(0, len(ids), _CHUNK):
            chunk = ids[chunk_start : chunk_start + _CHUNK]
            for found in raw.all(sql.writes_of_checkpoints(len(chunk)), [thread_id, ns, *chunk]):
                w = WrRow(*found)
                by_cp[(w.thread_id, w.checkpoint_ns, w.checkpoint_id)].append(w)
    return by_cp
