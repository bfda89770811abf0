"""``WardenSaver``: a LangGraph checkpointer on SQLAlchemy with a signed event history.

Swap it in for ``SqliteSaver``/``PostgresSaver`` with one line::

    with WardenSaver.from_url("sqlite:///agent.db", key_store=EphemeralKeyStore()) as saver:
        graph = builder.compile(checkpointer=saver)

The same object serves the sync API (``invoke``/``stream``) and the async API
(``ainvoke``/``astream``). Each transaction's logic is written once as a sync
function over a ``Connection``; the async methods run it on an
``AsyncConnection`` with ``run_sync``.

Every ``put``/``put_writes`` appends an event with the digest of exactly what it
stored, in the same transaction as the rows. ``get_tuple`` — the call a run
makes to resume — verifies the checkpoint and its pending writes against the
signed chain and raises :class:`~langgraph_warden.errors.IntegrityError`
instead of returning state that was altered.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from sqlalchemy import Connection, Engine, delete, insert, select, tuple_
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from langgraph_warden.anchors import HeadStore
from langgraph_warden.errors import (
    ConfigurationError,
    CorruptRowError,
    DatabaseUnavailableError,
    IntegrityError,
)
from langgraph_warden.events import EventDraft, EventKind
from langgraph_warden.keys import KeyStore, default_key_store
from langgraph_warden.redaction import scrub_blob  # the storage boundary: live secrets masked before digests

from . import migrate, schema
from .engine import WRITE, DirectTx, direct_sqlite, engines_from, is_sqlite, make_engines, parse_url, write_lock
from .ledger import Ledger, checkpoint_subject
from .rawsql import CP_COLS, WR_COLS, CpRow, Raw, WrRow
from .rows import checkpoint_digest, row_checkpoint_digest, row_write_digest, write_digest
from .sqlite_access import check_sqlite_writable, sqlite_write_problem

__all__ = ["WardenSaver", "DEFAULT_WORKLOAD_ID"]

DEFAULT_WORKLOAD_ID = "spiffe://langgraph-warden.local/agent"

_cp = schema.checkpoints
_wr = schema.writes

_SQL_CP_LATEST = (
    f"SELECT {CP_COLS} FROM warden_checkpoints WHERE thread_id = ? AND checkpoint_ns = ? "
    "ORDER BY checkpoint_id DESC LIMIT 1"
)
_SQL_CP_BY_ID = f"SELECT {CP_COLS} FROM warden_checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?"
_SQL_CP_DIGEST = "SELECT digest FROM warden_checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?"
_SQL_CP_INSERT = f"INSERT INTO warden_checkpoints ({CP_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_SQL_CP_INSERT_NEW = _SQL_CP_INSERT + " ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO NOTHING"
_SQL_CP_UPDATE = (
    "UPDATE warden_checkpoints SET parent_checkpoint_id = ?, run_id = ?, type = ?, checkpoint = ?, metadata_type = ?, "
    "metadata = ?, digest = ? WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?"
)
# One statement: the chosen checkpoint joined with its writes (a row per write, or one row without).
_PG_CP_WITH_WRITES = (
    "SELECT c.*, w.task_id, w.idx, w.task_path, w.channel, w.type, w.blob, w.digest, {newer} FROM ({pick}) c "
    "LEFT JOIN warden_writes w ON w.thread_id = c.thread_id AND w.checkpoint_ns = c.checkpoint_ns "
    "AND w.checkpoint_id = c.checkpoint_id ORDER BY w.task_path, w.task_id, w.idx"
)
_CP_COL_LIST = tuple(c.strip() for c in CP_COLS.split(","))
_WR_COL_LIST = tuple(c.strip() for c in WR_COLS.split(","))
_SQL_WRITES = (
    f"SELECT {WR_COLS} FROM warden_writes WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ? "
    "ORDER BY task_path, task_id, idx"
)
_SQL_TASK_WRITE_DIGESTS = (
    "SELECT idx, digest FROM warden_writes WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ? AND task_id = ?"
)
_SQL_WRITE_UPDATE = (
    "UPDATE warden_writes SET channel = ?, type = ?, blob = ?, digest = ?, task_path = ? "
    "WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ? AND task_id = ? AND idx = ?"
)
_SQL_WRITES_INSERT = f"INSERT INTO warden_writes ({WR_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"

#: The channel of LangGraph's interrupt writes (a run pausing). Spelled out: LangGraph made its
#: constant private (``langgraph._internal._constants.INTERRUPT``) and deprecated the public alias.
INTERRUPT = "__interrupt__"

#: Refusals a read can meet when its snapshot predates a commit of this process: tried once more.
_RACY_REFUSALS = frozenset({"checkpoint_missing", "checkpoint_unrecorded", "writes_changed", "checkpoint_changed"})

#: How many verified (checkpoint, writes) digests a saver remembers (LRU).
_TRUST_CACHE_SIZE = 4096


def _configurable(config: RunnableConfig | None, *, need_thread: bool = True) -> Mapping[str, Any]:
    if config is None or not isinstance(config, Mapping):
        if need_thread:
            raise ConfigurationError(
                "config is missing; pass {'configurable': {'thread_id': '...'}} to invoke/stream"
            )
        return {}
    conf = config.get("configurable")
    if conf is None:
        conf = {}
    if need_thread and conf.get("thread_id") in (None, ""):
        raise ConfigurationError(
            "config['configurable']['thread_id'] is missing; the checkpointer needs it to know which "
            "conversation to save and resume: graph.invoke(inputs, {'configurable': {'thread_id': 'my-thread'}})"
        )
    return conf


class WardenSaver(BaseCheckpointSaver[str], AbstractContextManager, AbstractAsyncContextManager):
    """Durable, tamper-evident LangGraph checkpointer for SQLite and PostgreSQL.

    Args:
        engine: a SQLAlchemy ``Engine`` or ``AsyncEngine``; its sibling for the
            other API is created from the same URL. Prefer :meth:`from_url`.
        key_store: holds the Ed25519 key that signs the history. Default:
            :class:`~langgraph_warden.keys.KeyringKeyStore` — which raises with
            instructions when no keyring backend is configured — or, when
            ``$WARDEN_KEY_DIR`` is set, :class:`~langgraph_warden.keyfiles.FileKeyStore`
            there. Pass ``EphemeralKeyStore()`` explicitly for demos and tests.
        workload_id: the SPIFFE-style identity recorded as each event's actor.
        serde: the serializer (``JsonPlusSerializer`` by default;
            ``EncryptedSerializer`` works). ``LANGGRAPH_STRICT_MSGPACK`` is
            honoured because deserialisation goes through ``serde``.
        trusted_key_ids: if given, only signatures by these keys (and by the key this
            process signs with) are accepted: pins the keys outside the database, so a key an
            attacker registers in ``warden_keys`` is refused.
        head_store: a :class:`~langgraph_warden.anchors.HeadStore` outside the database
            (``FileHeadStore(dir)``, ``KeyringHeadStore()``): the newest signed head of each
            thread is saved there (at once when a run pauses for approval, otherwise within
            ~50 ms and at close) and every first read of a thread is checked against it, so a
            history cut back to an earlier signed head is refused.
        verify_reads: verify checkpoints against the signed chain when loaded
            (default ``True``; turn off only for display tools).
    """

    def __init__(
        self,
        engine: Engine | AsyncEngine,
        *,
        key_store: KeyStore | None = None,
        workload_id: str = DEFAULT_WORKLOAD_ID,
        serde: SerializerProtocol | None = None,
        trusted_key_ids: Sequence[str] | None = None,
        head_store: HeadStore | None = None,
        verify_reads: bool = True,
        _async_engine: AsyncEngine | None = None,
        _owns_engines: bool = False,
    ) -> None:
        super().__init__(serde=serde)
        if _async_engine is not None and isinstance(engine, Engine):
            self._engine, self._aengine = engine, _async_engine
        elif isinstance(engine, (Engine, AsyncEngine)):
            self._engine, self._aengine = engines_from(engine)
            _owns_engines = _owns_engines or False
        else:
            raise ConfigurationError(
                f"engine must be a sqlalchemy Engine or AsyncEngine, got {type(engine).__name__}; "
                "or use WardenSaver.from_url('sqlite:///file.db')"
            )
        self._owns_engines = _owns_engines
        self._write_engine = self._engine.execution_options(**WRITE)
        # Reads that verify take several statements: on PostgreSQL they share one snapshot, so rows
        # committed meanwhile by another worker are not mistaken for rows the history never recorded.
        self._read_engine = (
            self._engine if is_sqlite(self._engine) else self._engine.execution_options(isolation_level="REPEATABLE READ")
        )
        self._awrite_engine = self._aengine.execution_options(**WRITE)
        self.key_store = key_store if key_store is not None else default_key_store()
        self.ledger = Ledger(
            self._engine, self._aengine, self.key_store, workload_id, trusted_key_ids=trusted_key_ids,
            head_store=head_store,
        )
        self.verify_reads = verify_reads
        self._is_setup = False
        self._sqlite = is_sqlite(self._engine)
        self._direct = direct_sqlite(self._engine) if self._sqlite else None
        # PostgreSQL: new rows + event + head in one autocommit statement (see Ledger.try_append_one_statement).
        self._one_statement = self._engine.dialect.name == "postgresql"
        # Digests this process wrote or verified: a row that still matches needs no chain walk.
        self._trusted: OrderedDict[tuple[str, str, str], list[Any]] = OrderedDict()
        self._trusted_lock = threading.Lock()

    # ------------------------------------------------------------ lifecycle
    @classmethod
    def from_url(
        cls,
        url: str | URL,
        *,
        key_store: KeyStore | None = None,
        workload_id: str = DEFAULT_WORKLOAD_ID,
        serde: SerializerProtocol | None = None,
        trusted_key_ids: Sequence[str] | None = None,
        head_store: HeadStore | None = None,
        setup: bool = True,
        connect_timeout: float = 5.0,
        pool_size: int = 5,
    ) -> WardenSaver:
        """Open ``sqlite:///path.db`` or ``postgresql+psycopg://...``; runs migrations unless ``setup=False``.

        The saver owns the engines it creates: ``close()`` or the ``with`` block disposes them.
        Fails fast (``DatabaseUnavailableError`` naming the host) if the database is unreachable.
        """
        if setup:  # it will write: a read-only directory or file is named as such, not as an unreachable server
            check_sqlite_writable(parse_url(url))
        sync_engine, async_engine = make_engines(url, connect_timeout=connect_timeout, pool_size=pool_size)
        saver = cls(
            sync_engine,
            key_store=key_store,
            workload_id=workload_id,
            serde=serde,
            trusted_key_ids=trusted_key_ids,
            head_store=head_store,
            _async_engine=async_engine,
            _owns_engines=True,
        )
        try:
            if setup:
                saver.setup()
            else:
                saver._check_reachable()
        except BaseException:
            saver.close()
            raise
        return saver

    def _describe_db(self) -> str:
        url = self._engine.url
        if url.get_backend_name() == "sqlite":
            return f"SQLite file {url.database!r}"
        return f"PostgreSQL at {url.host}:{url.port or 5432}/{url.database}"

    def _unavailable(self, exc: Exception) -> DatabaseUnavailableError:
        detail = str(getattr(exc, 'orig', exc)).strip().splitlines()[0] if str(getattr(exc, 'orig', exc)).strip() else type(exc).__name__
        if self._sqlite:  # no server to check: say what is wrong with the file or its directory
            problem = sqlite_write_problem(self._engine.url.database or "")
            hint = " Check the path and the permissions of the file and its directory." if (
                "open" in detail or "readonly" in detail) else ""
            return DatabaseUnavailableError(problem or f"cannot use the {self._describe_db()}: {detail}.{hint}")
        return DatabaseUnavailableError(
            f"cannot reach the {self._describe_db()}: {detail}. "
            "Check that the server is running and the URL (host, port, database, user) is right."
        )

    def _check_reachable(self) -> None:
        try:
            with self._engine.connect():
                pass
        except (OperationalError, DBAPIError) as exc:
            raise self._unavailable(exc) from None

    def setup(self) -> None:
        """Create or upgrade the schema (Alembic) and register the signing key. Idempotent."""
        try:
            migrate.upgrade(self._engine)
        except (OperationalError, DBAPIError) as exc:
            if isinstance(exc, OperationalError) or "connect" in str(exc).lower():
                raise self._unavailable(exc) from None
            raise
        self.ledger.register_key()
        self._is_setup = True

    async def asetup(self) -> None:
        import asyncio

        await asyncio.to_thread(self.setup)

    def close(self) -> None:
        self.ledger.close()
        if self._owns_engines:
            self._engine.dispose()
            # The async engine's pool holds connections bound to event loops; drop them without awaiting.
            self._aengine.sync_engine.dispose(close=False)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.ledger.close)
        if self._owns_engines:
            self._engine.dispose()
            await self._aengine.dispose()

    def __enter__(self) -> WardenSaver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> WardenSaver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def async_engine(self) -> AsyncEngine:
        return self._aengine

    # --------------------------------------------------------------- decode
    def _load_checkpoint(self, r: Any) -> Checkpoint:
        try:
            value = self.serde.loads_typed((r.type, bytes(r.checkpoint)))
            if not isinstance(value, dict) or "id" not in value or "channel_values" not in value:
                raise TypeError(f"decoded to {type(value).__name__}, not a checkpoint")
            return cast(Checkpoint, value)
        except Exception as exc:
            raise CorruptRowError(
                f"checkpoint row (thread {r.thread_id!r}, ns {r.checkpoint_ns!r}, id {r.checkpoint_id!r}) in "
                f"{_cp.name} cannot be decoded ({type(exc).__name__}: {exc}); the row is corrupted or was "
                "written with a different serializer/encryption key"
            ) from None

    def _load_metadata(self, r: Any) -> CheckpointMetadata:
        try:
            value = self.serde.loads_typed((r.metadata_type, bytes(r.metadata)))
            if not isinstance(value, dict):
                raise TypeError(f"decoded to {type(value).__name__}, not metadata")
            return cast(CheckpointMetadata, value)
        except Exception as exc:
            raise CorruptRowError(
                f"metadata of checkpoint row (thread {r.thread_id!r}, id {r.checkpoint_id!r}) in {_cp.name} cannot be decoded "
                f"({type(exc).__name__}); the row is corrupted or the serializer changed"
            ) from None

    def _load_write(self, w: Any) -> Any:
        try:
            return self.serde.loads_typed((w.type, bytes(w.blob)))
        except Exception as exc:
            raise CorruptRowError(
                f"write row (thread {w.thread_id!r}, checkpoint {w.checkpoint_id!r}, task {w.task_id!r}, "
                f"idx {w.idx}) in {_wr.name} cannot be decoded ({type(exc).__name__})"
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

    # ----------------------------------------------------------- read (tx)
    def _writes_for(self, conn: Connection | DirectTx, thread_id: str, ns: str, checkpoint_id: str) -> list[Any]:
        return [WrRow(*w) for w in Raw(conn).all(_SQL_WRITES, (thread_id, ns, checkpoint_id))]

    # ------------------------------------------------------- trust cache
    def _remember(self, key: tuple[str, str, str], cp_digest: str | None = None, writes: dict | None = None) -> None:
        with self._trusted_lock:
            entry = self._trusted.get(key)
            if entry is None:
                entry = self._trusted[key] = [None, {}]
                if len(self._trusted) > _TRUST_CACHE_SIZE:
                    self._trusted.popitem(last=False)
            else:
                self._trusted.move_to_end(key)
            if cp_digest is not None:
                entry[0] = cp_digest
            if writes:
                entry[1].update(writes)

    def _forget_thread(self, thread_id: str) -> None:
        with self._trusted_lock:
            for key in [k for k in self._trusted if k[0] == thread_id]:
                del self._trusted[key]

    def _is_trusted(self, key: tuple[str, str, str], cp_digest: str, writes: dict) -> bool:
        with self._trusted_lock:
            entry = self._trusted.get(key)
            return entry is not None and entry[0] == cp_digest and entry[1] == writes

    def _verify_loaded(self, conn: Connection | DirectTx, r: Any, writes: list[Any]) -> None:
        key = (r.thread_id, r.checkpoint_ns, r.checkpoint_id)
        cp_digest = row_checkpoint_digest(r)
        write_digests = {(w.task_id, int(w.idx)): row_write_digest(w) for w in writes}
        if self._is_trusted(key, cp_digest, write_digests):
            return  # exactly what this process wrote or already verified against the signed chain
        self.ledger.verify_checkpoint_in(conn, r.thread_id, r.checkpoint_ns, r.checkpoint_id, cp_digest, write_digests)
        self._remember(key, cp_digest, write_digests)

    def _get_tuple_tx(self, conn: Connection | DirectTx, config: RunnableConfig) -> CheckpointTuple | None:
        conf = _configurable(config)
        thread_id = str(conf["thread_id"])
        ns = conf.get("checkpoint_ns", "") or ""
        checkpoint_id = get_checkpoint_id(config)
        raw = Raw(conn)
        if not checkpoint_id and self.verify_reads:
            return self._latest_verified(conn, thread_id, ns)
        if checkpoint_id:
            found = raw.one(_SQL_CP_BY_ID, (thread_id, ns, checkpoint_id))
        else:
            found = raw.one(_SQL_CP_LATEST, (thread_id, ns))
        if found is None:
            return None
        r = CpRow(*found)
        writes = self._writes_for(conn, thread_id, ns, r.checkpoint_id)
        if self.verify_reads:
            self._verify_loaded(conn, r, writes)
        return self._tuple(r, writes)

    def _latest_verified(self, conn: Connection | DirectTx, thread_id: str, ns: str) -> CheckpointTuple | None:
        """The checkpoint the verified chain names as the newest of ``ns`` — or a refusal.

        Not "the newest row": a deleted newest row would make a run silently resume from the
        one before it (a pending approval vanishing with it), and an inserted row would be
        resumed from. The chain is read from where this process last verified it.
        """
        raw = Raw(conn)
        cid, digest, recorded_writes = self.ledger.latest_checkpoint_in(conn, thread_id, ns)

        def refuse(reason: str, detail: str, checkpoint_id: str | None = cid) -> IntegrityError:
            return IntegrityError(
                f"integrity check failed for thread {thread_id!r}{' ns ' + repr(ns) if ns else ''}"
                f"{' checkpoint ' + repr(checkpoint_id) if checkpoint_id else ''}: {reason}: {detail}. "
                "The run was stopped before any node ran; run `warden audit verify` for the full report.",
                thread_id=thread_id, checkpoint_ns=ns, checkpoint_id=checkpoint_id, reason=reason,
            )

        found = raw.one(_SQL_CP_LATEST, (thread_id, ns))
        if found is not None and (cid is None or found[2] > cid) and not raw.sqlite:
            # PostgreSQL reads each statement in its own snapshot: a checkpoint committed since the
            # events were read is newer than what they name. Read the chain again, once.
            cid, digest, recorded_writes = self.ledger.latest_checkpoint_in(conn, thread_id, ns)
        if found is not None and (cid is None or found[2] > cid):
            raise refuse("checkpoint_unrecorded", "the database holds a newer checkpoint than the signed history records "
                         "(row inserted?)", found[2])
        if cid is None:
            return None
        if found is None or found[2] != cid:
            raise refuse("checkpoint_missing", f"the newest checkpoint the signed history records ({cid}) is not in the "
                         "database (row deleted?)")
        r = CpRow(*found)
        writes = self._writes_for(conn, thread_id, ns, cid)
        if row_checkpoint_digest(r) != digest:
            raise refuse("checkpoint_changed", "the stored checkpoint row does not match the digest recorded when it was saved")
        write_digests = {(w.task_id, int(w.idx)): row_write_digest(w) for w in writes}
        self.ledger._check_writes(lambda reason, detail: refuse(reason, detail), recorded_writes, write_digests)
        self._remember((thread_id, ns, cid), digest, write_digests)
        return self._tuple(r, writes)

    def _get_tuple_one_statement(self, config: RunnableConfig) -> CheckpointTuple | None:
        """PostgreSQL: the checkpoint and its writes in one round trip (one statement, one snapshot).

        The latest checkpoint is read by the id the verified chain names, with a check in the
        same statement that the chain has no event this process has not verified; a checkpoint
        named by id must match this process's trust cache. Anything else is re-read and
        verified on the transactional path.
        """
        conf = _configurable(config)
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
            newer_sql = "EXISTS (SELECT 1 FROM warden_events e WHERE e.thread_id = %s AND e.seq > %s)"
            newer_params = (thread_id, position.seq)
        by_id = checkpoint_id and expected is None
        pick = _SQL_CP_BY_ID if by_id else _SQL_CP_LATEST
        params = (thread_id, ns, checkpoint_id) if by_id else (thread_id, ns)
        with self.ledger.direct_postgres.connection() as pg:
            rows = pg.cursor(binary=True).execute(
                _PG_CP_WITH_WRITES.format(pick=pick.replace("?", "%s"), newer=newer_sql), (*newer_params, *params)
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
                vouched = self._is_trusted(key, row_checkpoint_digest(r), write_digests)
            if not vouched:
                return self._read(self._get_tuple_tx, config)
        return self._tuple(r, writes)

    def _list_tx(
        self,
        conn: Connection,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
        verify: bool,
    ) -> list[CheckpointTuple]:
        conf = _configurable(config, need_thread=False) if config is not None else {}
        sql = f"SELECT {CP_COLS} FROM warden_checkpoints"
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
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY checkpoint_id DESC"
        if limit is not None and not filter:
            sql += f" LIMIT {int(limit)}"
        raw = Raw(conn)
        selected: list[tuple[Any, CheckpointMetadata]] = []
        for found in raw.all(sql, params):
            r = CpRow(*found)
            md = self._load_metadata(r)
            if filter and not all(md.get(k) == v for k, v in filter.items()):
                continue
            selected.append((r, md))
            if limit is not None and len(selected) >= limit:
                break
        if not selected:
            return []
        by_cp: dict[tuple[str, str, str], list[Any]] = {}
        groups: dict[tuple[str, str], list[str]] = {}
        for r, _ in selected:
            by_cp[(r.thread_id, r.checkpoint_ns, r.checkpoint_id)] = []
            groups.setdefault((r.thread_id, r.checkpoint_ns), []).append(r.checkpoint_id)
        for (thread_id, ns), ids in groups.items():
            for chunk_start in range(0, len(ids), 500):
                chunk = ids[chunk_start : chunk_start + 500]
                for found in raw.all(
                    f"SELECT {WR_COLS} FROM warden_writes WHERE thread_id = ? AND checkpoint_ns = ? "
                    f"AND checkpoint_id IN ({', '.join('?' * len(chunk))}) ORDER BY task_path, task_id, idx",
                    [thread_id, ns, *chunk],
                ):
                    w = WrRow(*found)
                    by_cp[(w.thread_id, w.checkpoint_ns, w.checkpoint_id)].append(w)
        if verify:
            self._verify_many(conn, [r for r, _ in selected], by_cp)
        return [self._tuple(r, by_cp[(r.thread_id, r.checkpoint_ns, r.checkpoint_id)]) for r, _ in selected]

    def _verify_many(self, conn: Connection, rows: list[Any], by_cp: dict[tuple[str, str, str], list[Any]]) -> None:
        """Verify listed rows: the newest checkpoints of a thread against the ledger's verified fold
        (no walk of the history), any older one with one chain pass per thread."""
        from .rows import expected_rows

        digests = {
            (r.thread_id, r.checkpoint_ns, r.checkpoint_id): (
                row_checkpoint_digest(r),
                {(w.task_id, int(w.idx)): row_write_digest(w) for w in by_cp[(r.thread_id, r.checkpoint_ns, r.checkpoint_id)]},
            )
            for r in rows
        }
        untrusted: dict[str, list[tuple[str, str, str]]] = {}
        for key, (cp, wr) in digests.items():
            if not self._is_trusted(key, cp, wr):
                untrusted.setdefault(key[0], []).append(key)
        for thread_id, keys in sorted(untrusted.items()):
            recorded = self.ledger.recorded_checkpoints_in(conn, thread_id, [k[1:] for k in keys])
            older = [k for k in keys if k[1:] not in recorded]
            expected: dict[tuple[str, str, str], tuple[str | None, dict[tuple[str, int], str]]] = {
                k: recorded[k[1:]] for k in keys if k[1:] in recorded
            }
            if older:
                report = self.ledger.verify_thread_in(conn, thread_id, self.ledger.public_keys(conn), check_rows=False)
                if report.findings:
                    f = report.findings[0]
                    raise IntegrityError(
                        f"integrity check failed for thread {thread_id!r}: {f.reason}: {f.detail}",
                        thread_id=thread_id,
                        seq=f.seq,
                        reason=f.reason,
                    )
                exp_cp, exp_wr = expected_rows(report)
                for k in older:
                    ns, cid = k[1], k[2]
                    expected[k] = (exp_cp.get((ns, cid)), {
                        (task, idx): d for (w_ns, w_cid, task, idx), d in exp_wr.items() if (w_ns, w_cid) == (ns, cid)})
            for key in keys:
                want_cp, want_wr = expected[key]
                got_cp, got_wr = digests[key]
                if want_cp != got_cp:
                    raise IntegrityError(
                        f"integrity check failed for thread {thread_id!r} checkpoint {key[2]!r}: "
                        f"{'checkpoint_changed' if want_cp else 'checkpoint_unrecorded'}: the row does not match its recorded digest",
                        thread_id=thread_id, checkpoint_ns=key[1], checkpoint_id=key[2],
                        reason="checkpoint_changed" if want_cp else "checkpoint_unrecorded",
                    )
                if want_wr != got_wr:
                    bad = sorted(set(want_wr.items()) ^ set(got_wr.items()))
                    raise IntegrityError(
                        f"integrity check failed for thread {thread_id!r} checkpoint {key[2]!r}: "
                        f"writes_changed: write (task, idx) {bad[0][0]} does not match its record",
                        thread_id=thread_id, checkpoint_ns=key[1], checkpoint_id=key[2], reason="writes_changed",
                    )
                self._remember(key, got_cp, got_wr)

    # ---------------------------------------------------------- write (tx)
    def _prepare_put(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Serialise a checkpoint: its row values (``CP_COLS`` order) and its ``checkpoint.saved`` payload."""
        conf = _configurable(config)
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

    @staticmethod
    def _saved_config(row: tuple[Any, ...]) -> RunnableConfig:
        return {"configurable": {"thread_id": row[0], "checkpoint_ns": row[1], "checkpoint_id": row[2]}}

    def _put_one_statement(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata) -> RunnableConfig:
        """PostgreSQL: a new checkpoint, its event and the chain head in one round trip; else the locking path."""
        row, payload = self._prepare_put(config, checkpoint, metadata)
        thread_id, ns, cid = row[0], row[1], row[2]
        draft = EventDraft(
            kind=EventKind.CHECKPOINT_SAVED, checkpoint_ns=ns, subject=checkpoint_subject(ns, cid), payload=payload
        )
        if self.ledger.try_append_one_statement(thread_id, [draft], [("warden_checkpoints", _CP_COL_LIST, row)]) is None:
            return self._write(self._put_tx, config, checkpoint, metadata, (row, payload))
        self._remember((thread_id, ns, cid), row[-1])
        return self._saved_config(row)

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
        found = None if raw.run(_SQL_CP_INSERT_NEW, row) == 1 else raw.one(_SQL_CP_DIGEST, (thread_id, ns, cid))
        existing = found[0] if found is not None else None
        if found is not None and existing != digest:
            # LangGraph re-puts a checkpoint id only when replaying the same step; the
            # new version is recorded by its own event so the history keeps both digests.
            raw.run(_SQL_CP_UPDATE, (*row[3:], thread_id, ns, cid))
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
        self._remember((thread_id, ns, cid), digest)
        return self._saved_config(row)

    def _prepare_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
    ) -> list[tuple[Any, ...]]:
        """Serialise a task's writes into rows (``WR_COLS`` order)."""
        conf = _configurable(config)
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
        self._remember((thread_id, ns, cid), writes={(task_id, r["idx"]): r["digest"] for r in recorded})
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
            inserts = [("warden_writes", _WR_COL_LIST, r) for r in rows]
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
        existing = {int(idx): d for idx, d in raw.all(_SQL_TASK_WRITE_DIGESTS, (thread_id, ns, cid, task_id))}
        inserts: list[tuple[Any, ...]] = []
        recorded: list[dict[str, Any]] = []
        for row in rows:
            idx, channel, type_, blob, digest = row[4], row[6], row[7], row[8], row[9]
            if idx not in existing:
                inserts.append(row)
                existing[idx] = digest
            elif upsert and existing[idx] != digest:
                raw.run(_SQL_WRITE_UPDATE, (channel, type_, blob, digest, task_path, thread_id, ns, cid, task_id, idx))
                existing[idx] = digest
            else:
                continue  # idempotent: a regular write is never overwritten
            recorded.append({"idx": idx, "channel": channel, "digest": digest})
        # Read first, then insert: on SQLite a PK-prefix SELECT plus a plain insert is cheaper than
        # INSERT ... ON CONFLICT DO NOTHING RETURNING (measured: 24 vs 29 µs for two rows).
        raw.many(_SQL_WRITES_INSERT, inserts)
        if recorded:
            self.ledger.append_in(conn, thread_id, [self._writes_saved(rows, recorded)])

    def _delete_thread_tx(self, conn: Connection, thread_id: str) -> None:
        self._forget_thread(thread_id)
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
        self._forget_thread(thread_id)
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
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
                    self._forget_thread(thread_id)
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
        # Replace whatever the target had: the copy is the target's new state, recorded as such.
        self._delete_thread_tx(conn, target)
        if cp_rows:
            conn.execute(insert(_cp), cp_rows)
        if wr_rows:
            conn.execute(insert(_wr), wr_rows)
        self.ledger.append_in(conn, target, drafts)

    # ------------------------------------------------------------- sync API
    def _read(self, fn, *args):
        try:
            with self._read_engine.connect() as conn:
                return fn(conn, *args)
        except OperationalError as exc:
            raise self._unavailable(exc) from None

    def _write(self, fn, *args):
        try:
            with write_lock(self._engine):
                return self.ledger.transaction(fn, *args, sqlalchemy=True)
        except OperationalError as exc:
            raise self._unavailable(exc) from None

    def _read_hot(self, fn, *args):
        """A read on the hot path: SQLite's raw reader connections (``fn`` uses only :class:`Raw`)."""
        if self._direct is None:
            return self._read(fn, *args)
        try:
            with self._direct.read(short=True) as tx:
                return fn(tx, *args)
        except sqlite3.OperationalError as exc:
            raise self._unavailable(exc) from None

    def _pg_call(self, fn, *args):
        """Run a one-statement PostgreSQL write; a lost server is reported like the engine's errors."""
        import psycopg

        try:
            return fn(*args)
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from None

    def _write_hot(self, fn, *args):
        """A write on the hot path: SQLite's group-committing writer (``fn`` uses only :class:`Raw`)."""
        if self._direct is None:
            return self._write(fn, *args)
        try:
            return self._direct.run_write(fn, *args)
        except sqlite3.OperationalError as exc:
            raise self._unavailable(exc) from None

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Load a checkpoint (latest, or the one named in config), verified against the signed chain."""
        try:
            return self._get_tuple_once(config)
        except IntegrityError as exc:
            if exc.reason not in _RACY_REFUSALS:
                raise
            # A read whose snapshot began before this process committed (and verified) a newer
            # checkpoint can see less than the verified chain names; a tampered row stays refused.
            return self._get_tuple_once(config)

    def _get_tuple_once(self, config: RunnableConfig) -> CheckpointTuple | None:
        if self._one_statement:
            return self._pg_call(self._get_tuple_one_statement, config)
        return self._read_hot(self._get_tuple_tx, config)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
        verify: bool | None = None,
    ) -> Iterator[CheckpointTuple]:
        """List checkpoints newest first. ``verify=False`` skips the integrity check (display only)."""
        do_verify = self.verify_reads if verify is None else verify
        yield from self._read(self._list_tx, config, filter, before, limit, do_verify)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        if self._one_statement:
            return self._pg_call(self._put_one_statement, config, checkpoint, metadata)
        return self._write_hot(self._put_tx, config, checkpoint, metadata)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        if self._one_statement:
            self._pg_call(self._put_writes_one_statement, config, writes, task_id, task_path)
        else:
            self._write_hot(self._put_writes_tx, config, writes, task_id, task_path)
        self._anchor_if_paused(config, writes)

    def _anchor_if_paused(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]]) -> None:
        """A run pausing (LangGraph's interrupt write): its head goes to the head store before the
        pause is reported, so the approval it waits for cannot later be replayed by a cut-back."""
        if self.ledger.head_store is not None and any(channel == INTERRUPT for channel, _ in writes):
            self.ledger.anchor_now(str(config["configurable"]["thread_id"]))

    def delete_thread(self, thread_id: str) -> None:
        self._write(self._delete_thread_tx, str(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._write(self._delete_for_runs_tx, list(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._write(self._copy_thread_tx, str(source_thread_id), str(target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._write(self._prune_tx, list(thread_ids), strategy)

    # ------------------------------------------------------------ async API
    async def _aread(self, fn, *args):
        if self._sqlite:
            # One thread hop per transaction instead of one per statement (aiosqlite), sharing the write lock.
            return await asyncio.to_thread(self._read, fn, *args)
        try:
            async with self._aengine.connect() as conn:
                return await conn.run_sync(fn, *args)
        except OperationalError as exc:
            raise self._unavailable(exc) from None

    async def _awrite(self, fn, *args):
        if self._sqlite:
            return await asyncio.to_thread(self._write, fn, *args)
        try:
            async with self._awrite_engine.begin() as conn:
                return await conn.run_sync(fn, *args)
        except OperationalError as exc:
            raise self._unavailable(exc) from None

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        if self._direct is not None or self._one_statement:
            return await asyncio.to_thread(self.get_tuple, config)
        try:
            return await self._aread(self._get_tuple_tx, config)
        except IntegrityError as exc:
            if exc.reason not in _RACY_REFUSALS:
                raise
            return await self._aread(self._get_tuple_tx, config)  # see get_tuple

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
        verify: bool | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        do_verify = self.verify_reads if verify is None else verify
        for item in await self._aread(self._list_tx, config, filter, before, limit, do_verify):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        if self._direct is not None:
            return await asyncio.to_thread(self._write_hot, self._put_tx, config, checkpoint, metadata)
        if self._one_statement:
            return await asyncio.to_thread(self._pg_call, self._put_one_statement, config, checkpoint, metadata)
        return await self._awrite(self._put_tx, config, checkpoint, metadata)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        if self._direct is not None:
            await asyncio.to_thread(self._write_hot, self._put_writes_tx, config, writes, task_id, task_path)
        elif self._one_statement:
            await asyncio.to_thread(self._pg_call, self._put_writes_one_statement, config, writes, task_id, task_path)
        else:
            await self._awrite(self._put_writes_tx, config, writes, task_id, task_path)
        if self.ledger.head_store is not None and any(channel == INTERRUPT for channel, _ in writes):
            await asyncio.to_thread(self._anchor_if_paused, config, writes)

    async def adelete_thread(self, thread_id: str) -> None:
        await self._awrite(self._delete_thread_tx, str(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._awrite(self._delete_for_runs_tx, list(run_ids))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._awrite(self._copy_thread_tx, str(source_thread_id), str(target_thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._awrite(self._prune_tx, list(thread_ids), strategy)

    async def aget_iter(self, config: RunnableConfig) -> AsyncIterator[CheckpointTuple]:
        """LangGraph Agent Server's state read (its probed ``aget_iter``): the requested checkpoint, verified.

        A coroutine returning an iterator, as the server awaits it; at most one tuple (``aget_tuple``).
        """
        found = await self.aget_tuple(config)

        async def one() -> AsyncIterator[CheckpointTuple]:
            if found is not None:
                yield found

        return one()

    # -------------------------------------------------------------- versions
    def get_next_version(self, current: str | None, channel: None = None) -> str:
        """Monotonic string versions: zero-padded counter plus a random tiebreak (as LangGraph's savers)."""
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(str(current).split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"
