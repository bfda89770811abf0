"""The saver's async API (``ainvoke``/``astream``): the same transactions as the sync API.

Why no second implementation: every transaction's logic is written once as a sync function
over a connection. On SQLite the async methods run it in a worker thread (one thread hop per
transaction, sharing the write lock); on PostgreSQL the hot paths (one-statement put, read)
hop to a thread too and the rest runs on an ``AsyncConnection`` with ``run_sync``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata, CheckpointTuple
from sqlalchemy.exc import OperationalError

from langgraph_warden.errors import IntegrityError

from .saver_reads import RACY_REFUSALS, CheckpointReads
from .saver_writes import INTERRUPT, CheckpointWrites
from .thread_ops import ThreadOps

__all__ = ["AsyncSaver"]

T = TypeVar("T")


class AsyncSaver(CheckpointReads, CheckpointWrites, ThreadOps):
    """The async half of ``BaseCheckpointSaver`` over the saver's reads, writes and thread operations."""

    async def _aread(self, fn: Callable[..., T], *args: Any) -> T:
        if self._sqlite:
            # One thread hop per transaction instead of one per statement (aiosqlite), sharing the write lock.
            return await asyncio.to_thread(self._read, fn, *args)
        try:
            async with self._aengine.connect() as conn:
                return await conn.run_sync(fn, *args)
        except OperationalError as exc:
            raise self._unavailable(exc) from None

    async def _awrite(self, fn: Callable[..., T], *args: Any) -> T:
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
            if exc.reason not in RACY_REFUSALS:
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
