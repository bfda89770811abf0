"""The guard's sink as one declared seam: :class:`~langgraph_warden.events.GuardSink`.

The checkpointer's ledger implements all of it and is used as is. Any other
:class:`~langgraph_warden.events.EventSink` (a test's, or a wrapper that counts round trips)
is wrapped once, here, in :class:`NeutralCapabilities`: what it implements is used, what it
lacks behaves neutrally, exactly as the guard behaved when it probed for each capability on
every call. So the guard calls methods and never asks what its sink can do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langgraph_warden.errors import IntegrityError, UnseenEventsError
from langgraph_warden.events import (
    CallClaims,
    Event,
    EventDraft,
    EventSink,
    EventSummary,
    GuardSink,
    Watermark,
)

__all__ = ["as_guard_sink", "NeutralCapabilities"]


def as_guard_sink(sink: EventSink) -> GuardSink:
    """``sink`` itself when it is a full :class:`GuardSink` (the ledger), else wrapped with the neutral rest."""
    if isinstance(sink, GuardSink):  # once per guard (a protocol check costs ~30 µs), never per call
        return sink
    return NeutralCapabilities(sink)


class NeutralCapabilities:
    """A plain sink with the guard's optional capabilities: its own where it has them, else neutral.

    Neutral means what the guard did without the capability: no watermarks (every decision
    reads first), no cross-process claims, no view snapshots, outcomes appended (durably) at
    once, no checkpoint knowledge (a checkpoint is never taken for recorded on a guess).

    Resolved once, at construction: the one place that looks at which methods a sink has.
    """

    def __init__(self, sink: EventSink) -> None:
        self.sink = sink
        self.supports_watermarks: bool = getattr(sink, "supports_watermarks", False) is True
        self.claims: CallClaims | None = getattr(sink, "claims", None)
        self._soon: Callable[..., None] | None = getattr(sink, "append_soon", None)
        self._flush: Callable[[], None] | None = getattr(sink, "flush", None)
        self._summaries: Callable[..., list[EventSummary]] | None = getattr(sink, "summaries", None)
        self._snapshot: Callable[..., tuple[int, Mapping[str, Any]] | None] | None = getattr(sink, "newest_snapshot", None)
        self._event_at: Callable[[str, int, str], Event] | None = getattr(sink, "event_at", None)
        self._latest: Callable[[str, str], tuple[Any, ...] | None] | None = getattr(sink, "trusted_latest", None)
        self._durable: Callable[[str, str, str], bool] | None = getattr(sink, "checkpoint_durable", None)
        self._recorded: Callable[[str, str, str], bool] | None = getattr(sink, "checkpoint_recorded", None)
        self._wait: Callable[[str, str, str, float], bool] | None = getattr(sink, "wait_for_checkpoint", None)
        self.waits_for_checkpoints: bool = self._durable is not None and self._wait is not None

    # ------------------------------------------------------------------ EventSink
    def append(self, thread_id: str, drafts: Sequence[EventDraft], *, seen: Watermark | None = None) -> list[Event]:
        if seen is None:  # a plain sink may not take ``seen`` at all (only watermark sinks get one)
            return self.sink.append(thread_id, drafts)
        return self.sink.append(thread_id, drafts, seen=seen)

    async def aappend(self, thread_id: str, drafts: Sequence[EventDraft]) -> list[Event]:
        return await self.sink.aappend(thread_id, drafts)

    def events(
        self, thread_id: str, *, kinds: Sequence[str] | None = None, after_seq: int = 0, subject: str | None = None
    ) -> list[Event]:
        return self.sink.events(thread_id, kinds=kinds, after_seq=after_seq, subject=subject)

    async def aevents(
        self, thread_id: str, *, kinds: Sequence[str] | None = None, after_seq: int = 0, subject: str | None = None
    ) -> list[Event]:
        return await self.sink.aevents(thread_id, kinds=kinds, after_seq=after_seq, subject=subject)

    # ------------------------------------------------------------------ optional capabilities
    def append_soon(
        self,
        thread_id: str,
        drafts: Sequence[EventDraft],
        *,
        seen: Watermark | None = None,
        on_commit: Callable[[list[Event] | None, bool], None] | None = None,
    ) -> None:
        """Neutral: append now (durable on return), then report the commit as a deferring sink does:
        ``seen`` only observes (the drafts are appended either way)."""
        if self._soon is not None:
            self._soon(thread_id, drafts, seen=seen, on_commit=on_commit)
            return
        try:
            events, current = self.append(thread_id, drafts, seen=seen), True
        except UnseenEventsError:
            events, current = self.append(thread_id, drafts), False
        if on_commit is not None:
            on_commit(events, current)

    def append_with_rows(
        self, thread_id: str, drafts: Sequence[EventDraft], rows: Callable[[Any], None], *, seen: Watermark | None = None
    ) -> list[Event]:
        """Not neutral-able: a plain sink has no transaction to share. Never asked (a lease store writes
        rows only with its own database's ledger); raising keeps a wrong wiring from splitting the commit."""
        raise TypeError(f"{type(self.sink).__name__} cannot commit rows with its events; only the ledger can")

    def flush(self) -> None:
        """Neutral: nothing is ever queued."""
        if self._flush is not None:
            self._flush()

    def summaries(self, thread_id: str, *, kinds: Sequence[str] | None = None, after_seq: int = 0) -> list[EventSummary]:
        if self._summaries is not None:
            return self._summaries(thread_id, kinds=kinds, after_seq=after_seq)
        return [e.summary() for e in self.sink.events(thread_id, kinds=kinds, after_seq=after_seq)]

    def newest_snapshot(self, thread_id: str, kind: str, subject: str) -> tuple[int, Mapping[str, Any]] | None:
        """Neutral: no snapshot (a first read folds the history from genesis)."""
        return self._snapshot(thread_id, kind, subject) if self._snapshot is not None else None

    def event_at(self, thread_id: str, seq: int, expected_hash: str) -> Event:
        """Neutral: found by reading the events from ``seq`` (a plain sink has no verified read to check against)."""
        if self._event_at is not None:
            return self._event_at(thread_id, seq, expected_hash)
        for e in self.sink.events(thread_id, after_seq=seq - 1):
            if e.seq == seq:
                return e
        raise IntegrityError(
            f"event {seq} is no longer in the history of thread {thread_id!r}",
            thread_id=thread_id, seq=seq, reason="missing_event",
        )

    def trusted_latest(self, thread_id: str, ns: str) -> tuple[Any, ...] | None:
        """Neutral: nothing known without a read."""
        return self._latest(thread_id, ns) if self._latest is not None else None

    def checkpoint_durable(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> bool:
        """Neutral: not known to be durable."""
        return bool(self._durable is not None and self._durable(thread_id, checkpoint_ns, checkpoint_id))

    def checkpoint_recorded(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> bool:
        """Neutral: taken as recorded, so a call is never taken for a retry on a guess."""
        return bool(self._recorded(thread_id, checkpoint_ns, checkpoint_id)) if self._recorded is not None else True

    def wait_for_checkpoint(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str, timeout: float) -> bool | None:
        """Neutral: ``None``, cannot tell (nothing is waited for)."""
        if self._wait is None:
            return None
        return self._wait(thread_id, checkpoint_ns, checkpoint_id, timeout)
