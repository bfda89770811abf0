"""Keeping a :class:`~langgraph_warden.anchors.HeadStore` up to date with this process's heads.

When: whenever a run pauses for approval (the saver records LangGraph's interrupt write) the
thread's head is saved before the pause is reported — the moment an attacker would most like
to roll back (an approval not yet used). Every other commit only marks its thread; a background
thread saves the marked threads' heads shortly after (coalesced: one save per thread per window),
and :meth:`AnchorWriter.close` (saver close, interpreter exit) saves what is left. A crash can
lose only the newest marks: the store then holds an older head, which still bounds how far back
a history can be cut undetected.

What: only a head this process verified or wrote (its verified position), read back with its
signature and checked before it is saved, so a forged head never becomes the anchor.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

from langgraph_warden.anchors import HeadStore
from langgraph_warden.errors import IntegrityError
from langgraph_warden.events import SignedHead, head_signing_bytes
from langgraph_warden.keys import b64u_decode, verify_signature

from . import statements as sql
from .rawsql import Raw

if TYPE_CHECKING:
    from .event_reads import EventReads

__all__ = ["AnchorWriter"]

log = logging.getLogger(__name__)

#: How long the background writer gathers marks before it saves them (one save per thread).
_WINDOW_SECONDS = 0.05


class AnchorWriter:
    """Saves the signed heads of the threads this process committed to a head store."""

    def __init__(self, ledger: EventReads, store: HeadStore) -> None:
        self._ledger = weakref.proxy(ledger)
        self.store = store
        self._marked: set[str] = set()
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        #: heads saved (for tests and benchmarks)
        self.saved = 0
        atexit.register(_close_at_exit, weakref.ref(self))

    def note(self, thread_id: str) -> None:
        """Mark ``thread_id``: its head is saved within the window. Never blocks (runs after commits)."""
        with self._lock:
            self._marked.add(thread_id)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="warden-anchor", daemon=True)
                self._thread.start()
        self._wake.set()

    def flush(self, thread_ids: Iterable[str] | None = None) -> None:
        """Save now: the marked threads (and ``thread_ids``); returns when they are saved.

        Under the save lock from taking the marks to the save: a flush that finds no marks
        because the background writer just took them waits for that writer's save to finish
        (so :meth:`close` returns only once every mark is in the store).
        """
        with self._save_lock:
            with self._lock:
                todo = set(self._marked)
                self._marked.clear()
            todo.update(thread_ids or ())
            if todo:
                self._save(sorted(todo))

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - at exit: say so, do not raise
            log.error("could not save the chain heads to %r at close: %s: %s", self.store, type(exc).__name__, exc)

    def _loop(self) -> None:
        while not self._closed:
            if not self._wake.wait(timeout=2.0):
                with self._lock:
                    if not self._marked:
                        self._thread = None
                        return
                continue
            self._wake.clear()
            threading.Event().wait(_WINDOW_SECONDS)
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - the next mark retries; a failed save is logged
                log.error("could not save chain heads to %r: %s: %s", self.store, type(exc).__name__, exc)

    def _save(self, thread_ids: list[str]) -> None:
        heads = [h for h in (self._head(t) for t in thread_ids) if h is not None]
        if heads:
            self.store.save(heads)
            self.saved += len(heads)

    def _head(self, thread_id: str) -> SignedHead | None:
        """The signed head at this process's verified position of ``thread_id``, checked."""
        ledger = self._ledger
        try:
            # Up to the head first: commits that did not extend the verified position in place
            # (another process's, or a transaction that registers nothing) would leave it behind.
            position = ledger.verified_position(thread_id)
        except IntegrityError as exc:
            log.error("not saving the head of thread %r to %r: its history does not verify (%s)",
                      thread_id, self.store, exc.reason)
            return None
        if position.seq == 0:
            return None
        with ledger._read_tx(short=True) as conn:
            row = Raw(conn).one(sql.EV_HEAD_AT, (thread_id, position.seq))
            keys = ledger._key_info(conn, row[1]) if row is not None and row[1] else {}
        if row is None or row[0] != position.hash or not row[3] or row[1] not in keys:
            return None  # not (or no longer) the signed head this process verified: never anchor it
        head = SignedHead(thread_id, position.seq, position.hash, row[1], row[3], row[2] or "")
        data = head_signing_bytes(thread_id, head.seq, head.hash, head.key_id, head.key_store)
        try:
            signature = b64u_decode(head.signature)
        except ValueError:
            return None
        return head if verify_signature(keys[head.key_id].public_key, signature, data) else None


def _close_at_exit(ref: weakref.ref[AnchorWriter]) -> None:
    writer = ref()
    if writer is not None and not writer._closed:
        writer.close()
