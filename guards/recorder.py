"""The guard's per-thread views and everything it writes to the ledger.

One :class:`~langgraph_warden.guards.thread_view._ThreadView` per thread (a bounded cache) holds
the charter, step history, approvals and call records the decisions need. It is refreshed
incrementally (only events after the last one seen are read) and kept current by this guard's
own commits where the ledger vouches for them (watermarks), so a call can be decided without
any read. Events are written here too: appended at once (:meth:`Recorder.commit`), deferred to
ride with the call's next event (:meth:`Recorder.defer`: ``policy.decided``), or queued without
waiting for the fsync (:meth:`Recorder.record_outcome`: ``tool.completed``/``tool.failed``).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from langgraph_warden import canonical
from langgraph_warden.errors import UnseenEventsError
from langgraph_warden.event_payloads import CallRef
from langgraph_warden.events import Event, EventDraft, GuardSink, Watermark

from .call_plan import StaleDecision
from .guard_settings import GuardSettings
from .in_flight import Flight
from .policy import PolicyDecision
from .thread_view import (
    _RECORD_KINDS,
    _VIEW_CACHE_SIZE,
    _VIEW_KINDS,
    VIEW_SNAPSHOT,
    VIEW_SNAPSHOT_EVERY,
    VIEW_SNAPSHOT_SUBJECT,
    _CallRecord,
    _history_decision,
    _ThreadSnapshot,
    _ThreadView,
    snapshot_draft,
)

__all__ = ["Recorder"]

log = logging.getLogger(__name__)

#: How many threads' views a guard keeps (least recently used dropped first); tests lower it.
VIEW_CACHE_SIZE = _VIEW_CACHE_SIZE


def _once(fn: Callable[[], None]) -> Callable[[], None]:
    """``fn``, callable any number of times, run the first time only (a lock released once)."""
    lock = threading.Lock()
    pending = [fn]

    def run() -> None:
        with lock:
            todo = pending.pop() if pending else None
        if todo is not None:
            todo()

    return run


class Recorder:
    """The guard's thread views and its writes. ``alone(thread_id)``: whether the caller's call is
    the thread's only one in flight in this process (then the cached view may be trusted)."""

    def __init__(self, settings: GuardSettings, alone: Callable[[str], bool]) -> None:
        self._settings = settings
        self._alone = alone
        self.views: OrderedDict[str, _ThreadView] = OrderedDict()
        self._views_lock = threading.Lock()
        self._deferred: dict[tuple[str, str], tuple[list[EventDraft], Watermark | None]] = {}
        self._deferred_lock = threading.Lock()

    @property
    def _sink(self) -> GuardSink:
        return self._settings.guard_sink

    @property
    def watermarks(self) -> bool:
        return self._settings.guard_sink.supports_watermarks is True

    @property
    def input_version(self) -> int:
        """The policy input version the engine expects."""
        return int(self._settings.policy.input_version)

    def data_classes_of(self, tool: str) -> tuple[str, ...]:
        spec = self._settings.registry.get(tool)
        return tuple(spec.data_classes) if spec is not None and spec.data_classes else ()

    # ------------------------------------------------------------- views
    def view_of(self, thread_id: str) -> _ThreadView:
        """The thread's cached view (created empty, unread, if it has none)."""
        with self._views_lock:
            view = self.views.get(thread_id)
            if view is None:
                view = self.views[thread_id] = _ThreadView(
                    input_version=self.input_version, data_classes=self.data_classes_of)
                while len(self.views) > VIEW_CACHE_SIZE:
                    self.views.popitem(last=False)
            else:
                self.views.move_to_end(thread_id)
        return view

    def view(self, thread_id: str, call: tuple[str, str] | None = None, *, trust: bool = False) -> _ThreadSnapshot:
        """This thread's charter, step history, approvals and (``call``) one call's record.

        At most one ledger read per call, refreshed incrementally: only events after the last one
        seen are read, so a long run does not re-decode its whole history on every call (other
        processes' events are picked up the same way). ``trust``: no read at all when the view is
        current and no other call of the thread is in flight here; the snapshot then carries the
        watermark its decision is recorded against (see :meth:`commit`).
        """
        view = self.view_of(thread_id)
        with view.lock:
            if trust and self.watermarks and self._alone(thread_id):
                view.drain()
                if view.pending:  # an outcome this guard queued: commit it (a read would)
                    self._sink.flush()
                seen = view.mark()
                if seen is not None:
                    self.snapshot_if_due(thread_id, view)
                    return view.snapshot(call, seen)
            if view.last_seq == 0 and not view.partial:
                self.restore(thread_id, view)
            view.fold(self._sink.summaries(thread_id, kinds=_VIEW_KINDS, after_seq=view.last_seq))
            view.current = True
            view.drain()  # appends the read committed: folded in already
            if call is not None and call not in view.calls and view.may_hold(call[0]):
                self._load_call(thread_id, view, call)
            self.snapshot_if_due(thread_id, view)
            return view.snapshot(call)

    def restore(self, thread_id: str, view: _ThreadView) -> None:
        """A first read starts at the thread's newest view snapshot (verified), not at genesis."""
        if view.input_version != 2:  # version 1 needs every entry: read them all
            return
        found = self._sink.newest_snapshot(thread_id, VIEW_SNAPSHOT, VIEW_SNAPSHOT_SUBJECT)
        if found is not None:
            view.restore(found[1], found[0])

    def _load_call(self, thread_id: str, view: _ThreadView, call: tuple[str, str]) -> None:
        """A call a restored view does not hold but the history may record (an old one): read its
        events (verified) into a record (caller holds ``view.lock``)."""
        rec = _CallRecord()
        for e in self._sink.events(thread_id, subject=call[0]):
            if e.kind in _RECORD_KINDS and cast(CallRef, e.payload).get("args_digest") == call[1]:
                rec.apply(e.summary())
        if rec.first_seq:
            view.calls[call] = rec

    def snapshot_if_due(self, thread_id: str, view: _ThreadView) -> None:
        """Append a view snapshot when one is due and this guard alone holds the thread's view
        current (caller holds ``view.lock``). Best effort: a thread that moved on gets one later."""
        if (view.since_snapshot < VIEW_SNAPSHOT_EVERY or view.input_version != 2 or not view.current or view.pending
                or view.decided_here or not self.watermarks or not self._alone(thread_id)):
            return
        try:
            self._sink.append(thread_id, [snapshot_draft(view.snapshot_doc())], seen=Watermark(view.last_seq, _VIEW_KINDS))
        except UnseenEventsError:
            view.current = False
            return
        except Exception as exc:  # noqa: BLE001 - a snapshot is an optimisation: never fail the call for it
            log.warning("could not record a view snapshot of thread %r: %s: %s", thread_id, type(exc).__name__, exc)
            return
        view.since_snapshot = 0

    def note_decision(self, thread_id: str, tool_call_id: str, tool: str, decision: PolicyDecision) -> None:
        """Count ``decision`` in the thread's history from now on (see _ThreadView.decided_here)."""
        view = self.view_of(thread_id)
        entry = {"tool": tool, "decision": _history_decision(decision.allow, decision.require_approval),
                 "outcome": None, "ts": canonical.datetime_text(datetime.now(UTC))}
        with view.lock:
            view.decided_here[tool_call_id] = entry

    def forget_decision(self, thread_id: str, tool_call_id: str) -> None:
        """The call was let go: its decision counts only as recorded from now on."""
        view = self.views.get(thread_id)
        if view is not None and view.decided_here:
            with view.lock:
                view.decided_here.pop(tool_call_id, None)

    # ------------------------------------------------------------- writes
    def drafts(
        self, thread_id: str, tool_call_id: str | None, drafts: list[EventDraft]
    ) -> tuple[list[EventDraft], Watermark | None]:
        """``drafts`` about one call, preceded (same transaction, one signature) by the call's
        deferred drafts, and the watermark a deferred decision was made on (see :meth:`commit`)."""
        deferred, decided_on = self._take_deferred(thread_id, tool_call_id)
        return deferred + drafts, decided_on

    def append(
        self, thread_id: str, kind: str, tool_call_id: str | None, payload: Mapping[str, Any], claim: Watermark | None = None,
        *, before: Sequence[EventDraft] = (), rows: Callable[[Any], None] | None = None,
    ) -> Event:
        """Append one event (after the call's deferred drafts and ``before``); durable when this returns.
        ``rows``: rows committed in the same transaction (see ``GuardSink.append_with_rows``)."""
        draft = EventDraft(kind=kind, payload=payload, subject=tool_call_id)
        drafts, decided_on = self.drafts(thread_id, tool_call_id, [*before, draft])
        return self.commit(thread_id, drafts, decided_on, claim=claim, rows=rows)[-1]

    def _append(
        self, thread_id: str, drafts: list[EventDraft], seen: Watermark | None, rows: Callable[[Any], None] | None
    ) -> list[Event]:
        if rows is not None:
            return self._sink.append_with_rows(thread_id, drafts, rows, seen=seen)
        if seen is None:
            return self._sink.append(thread_id, drafts)
        return self._sink.append(thread_id, drafts, seen=seen)

    def commit(
        self, thread_id: str, drafts: list[EventDraft], decided_on: Watermark | None, *, claim: Watermark | None = None,
        rows: Callable[[Any], None] | None = None,
    ) -> list[Event]:
        """Append, keeping the thread's view current where the ledger vouches for it (see _ThreadView).

        ``decided_on``: the drafts carry a policy decision made on a view taken without reading
        the ledger at that watermark. If the thread has newer events, nothing is written and
        ``StaleDecision`` is raised: the caller decides again on a fresh read.
        ``claim``: a condition the append must meet in any case (an attempt's claim on its call);
        if it does not, nothing is written and ``StaleDecision`` is raised.
        """
        view = self.views.get(thread_id) if self.watermarks else None
        if view is None:
            return self._commit_unviewed(thread_id, drafts, decided_on, claim, rows)
        with view.lock:
            vouched = view.vouch_for(drafts)  # noted even when the decision brings its own watermark
        seen = decided_on or vouched
        current = seen is not None
        if current:
            try:
                events = self._append(thread_id, drafts, seen, rows)
            except UnseenEventsError as exc:
                if decided_on is not None:
                    if not self._only_siblings_moved(view, drafts, exc):
                        raise StaleDecision() from None
                    # What is new is only about other calls this guard handled alongside this one (parallel
                    # tool calls of one step): each was decided before this one, and counted in its history,
                    # or after it (see _ThreadView.deciding); what they did next is not this decision's input.
                    return self.commit(thread_id, drafts, None, claim=claim, rows=rows)
                current = False
        if not current:
            if claim is not None:
                try:
                    events = self._append(thread_id, drafts, claim, rows)
                except UnseenEventsError:
                    with view.lock:
                        view.current = False
                    raise StaleDecision() from None
            else:
                events = self._append(thread_id, drafts, None, rows)
        with view.lock:
            view.absorb(events, current)
        return events

    @staticmethod
    def _only_siblings_moved(view: _ThreadView, drafts: list[EventDraft], exc: UnseenEventsError) -> bool:
        """Whether the events the decision did not see are all about other calls this guard handled
        (else the view is no longer current)."""
        this_call = drafts[-1].subject
        with view.lock:
            siblings = exc.complete and all(
                subject is not None and subject != this_call and subject in view.own
                for _, _, subject in exc.found
            )
            if not siblings:
                view.current = False
        return siblings

    def _commit_unviewed(
        self, thread_id: str, drafts: list[EventDraft], decided_on: Watermark | None, claim: Watermark | None,
        rows: Callable[[Any], None] | None = None,
    ) -> list[Event]:
        """:meth:`commit` for a thread with no cached view (or a sink without watermarks)."""
        if decided_on is not None or claim is not None:  # the view was dropped from the cache meanwhile
            try:
                return self._append(thread_id, drafts, decided_on or claim, rows)
            except UnseenEventsError:
                raise StaleDecision() from None
        events = self._append(thread_id, drafts, None, rows)
        if self.watermarks and events and events[0].seq == 1:
            # The thread's first events: this guard knows its whole history.
            view = self.view_of(thread_id)
            with view.lock:
                if not view.last_seq and not view.pending:
                    view.absorb(events, True)
                    view.current = True
        return events

    def record_outcome(
        self, thread_id: str, kind: str, tool_call_id: str, payload: Mapping[str, Any], flight: Flight | None = None
    ) -> None:
        """Record a call's outcome (``tool.completed``/``tool.failed``) without waiting for its commit.

        Safe because its absence is already a handled state: a call with ``tool.started`` and no
        outcome is *in doubt*, which is what a crash during the tool leaves too. The sink commits
        it before anything this process writes or reads afterwards (the checkpoint holding the
        tool's result, the next call's view, a replay), so only a crash can lose it. Saves one
        durable commit (an fsync) on the tool call's path.
        """
        drafts, decided_on = self.drafts(thread_id, tool_call_id, [EventDraft(kind=kind, payload=payload, subject=tool_call_id)])
        if decided_on is not None:
            self.commit(thread_id, drafts, decided_on)
            return
        view = self.views.get(thread_id) if self.watermarks else None
        # The call's cross-process lock is released once the outcome is committed, not before: a
        # worker waiting for it must find the outcome, not an attempt that looks cut off.
        release = flight.take_release() if flight is not None else None
        if view is None:
            self._soon(thread_id, drafts, None, release, None)
            return
        with view.lock:
            seen = view.vouch_for(drafts)
            view.pending += 1  # mark() vouches for nothing until the commit is taken in
        try:
            self._soon(thread_id, drafts, seen, release, view)
        except BaseException:
            with view.lock:
                view.pending -= 1
            raise

    def _soon(
        self, thread_id: str, drafts: list[EventDraft], seen: Watermark | None,
        release: Callable[[], None] | None, view: _ThreadView | None,
    ) -> None:
        """``append_soon``, posting the commit to ``view`` and releasing the call's lock when it settles.

        The ledger calls back from the committing thread: just post (deque.append is atomic) and
        release (a non-blocking unlock)."""
        if release is not None:
            release = _once(release)

        def settled(events: list[Event] | None, current: bool) -> None:
            try:
                if view is not None:
                    view.inbox.append((events, current and seen is not None))
            finally:
                if release is not None:
                    release()

        try:
            self._sink.append_soon(thread_id, drafts, seen=seen, on_commit=settled)
        except BaseException:
            if release is not None:
                release()
            raise

    def defer(
        self, thread_id: str, kind: str, tool_call_id: str, payload: Mapping[str, Any], decided_on: Watermark | None
    ) -> None:
        """Record ``kind`` with the call's next event rather than in a commit of its own.

        Used for ``policy.decided``: nothing depends on it being durable before the next event of
        the same call (deny, approval request or ``tool.started``), and one durable, signed commit
        per guarded call is saved. ``decided_on``: see :meth:`commit`.
        """
        with self._deferred_lock:
            drafts, _ = self._deferred.get((thread_id, tool_call_id), ([], None))
            drafts.append(EventDraft(kind=kind, payload=payload, subject=tool_call_id))
            self._deferred[(thread_id, tool_call_id)] = (drafts, decided_on)

    def _take_deferred(self, thread_id: str, tool_call_id: str | None) -> tuple[list[EventDraft], Watermark | None]:
        if tool_call_id is None:
            return [], None
        with self._deferred_lock:
            return self._deferred.pop((thread_id, tool_call_id), ([], None))

    def flush(self, thread_id: str, tool_call_id: str, *, redecide: bool = False) -> None:
        """Commit the call's deferred drafts now. ``redecide``: see :meth:`commit`; otherwise a
        decision is recorded even if the thread moved on since it was made (it was made)."""
        drafts, decided_on = self._take_deferred(thread_id, tool_call_id)
        if drafts:
            try:
                self.commit(thread_id, drafts, decided_on)
            except StaleDecision:
                if redecide:
                    raise
                self.commit(thread_id, drafts, None)
