"""The signed event ledger: an append-only hash chain per thread in the saver's database.

Why in the same database: the saver appends ``checkpoint.saved`` /
``writes.saved`` events in the *same transaction* as the rows they describe,
so state and history commit together or not at all. Guards, the credential
broker and approvals append through :class:`Ledger` as an
:class:`~langgraph_warden.events.EventSink` (their own short transaction).

:class:`Ledger` is its parts combined, each in a module named for its job:
:mod:`.ledger_base` (connections, caches, transactions), :mod:`.ledger_keys`
(signing keys), :mod:`.ledger_append` (the append paths), :mod:`.event_reads`
(verified event reads) and :mod:`.verification` (checkpoints against the chain,
full verification). SQL texts are in :mod:`.statements`.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from langgraph_warden.anchors import HeadStore
from langgraph_warden.keys import KeyStore

from .anchoring import AnchorWriter
from .event_reads import checkpoint_subject
from .ledger_append import LedgerAppends
from .verification import LedgerVerification, VerificationReport

__all__ = ["Ledger", "VerificationReport", "checkpoint_subject"]


class Ledger(LedgerAppends, LedgerVerification):
    """Append, read and verify signed per-thread event chains."""

    def __init__(
        self,
        engine: Engine,
        async_engine: AsyncEngine | None,
        key_store: KeyStore,
        workload_id: str,
        *,
        trusted_key_ids: Iterable[str] | None = None,
        head_store: HeadStore | None = None,
    ) -> None:
        super().__init__(
            engine, async_engine, key_store, workload_id, trusted_key_ids=trusted_key_ids, head_store=head_store
        )
        if head_store is not None:
            self._anchors = AnchorWriter(self, head_store)

    def anchor_now(self, thread_id: str) -> None:
        """Save the thread's current signed head to the head store now (a run pausing for a person)."""
        if self._anchors is not None:
            self._anchors.flush([thread_id])  # verifies up to the head first

    def close(self) -> None:
        """Save what the head store has not seen yet (the saver calls this on close)."""
        if self._anchors is not None:
            self._anchors.close()

    def forget(self, thread_id: str) -> None:
        """Drop what this process verified of ``thread_id`` (the next read walks it from genesis)."""
        self._trust.drop(thread_id)
