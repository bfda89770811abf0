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

The saver is its parts combined, each in a module named for its job:
:mod:`.saver_base` (engines, ledger, transaction runners), :mod:`.saver_reads`,
:mod:`.saver_writes`, :mod:`.thread_ops` (delete, prune, copy) and
:mod:`.saver_async`; this module holds the constructor, the lifecycle and the sync API.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata, CheckpointTuple
from langgraph.checkpoint.serde.base import SerializerProtocol
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, OperationalError

from langgraph_warden.anchors import HeadStore
from langgraph_warden.errors import IntegrityError
from langgraph_warden.keys import KeyStore

from . import migrate
from .engine import make_engines, parse_url
from .saver_async import AsyncSaver
from .saver_base import DEFAULT_WORKLOAD_ID
from .saver_reads import RACY_REFUSALS
from .sqlite_access import check_sqlite_writable

__all__ = ["WardenSaver", "DEFAULT_WORKLOAD_ID"]


class WardenSaver(AsyncSaver, AbstractContextManager, AbstractAsyncContextManager):
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

    The constructor is :class:`~.saver_base.SaverBase`'s.
    """

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

    # ------------------------------------------------------------- sync API
    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Load a checkpoint (latest, or the one named in config), verified against the signed chain."""
        try:
            return self._get_tuple_once(config)
        except IntegrityError as exc:
            if exc.reason not in RACY_REFUSALS:
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

    def delete_thread(self, thread_id: str) -> None:
        self._write(self._delete_thread_tx, str(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._write(self._delete_for_runs_tx, list(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._write(self._copy_thread_tx, str(source_thread_id), str(target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._write(self._prune_tx, list(thread_ids), strategy)

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
