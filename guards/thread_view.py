"""A guard's view of one thread: each call's record, the charter and the policy's step history.

Why a module of its own: the guard decides on this view, and it must be the same whether it was
folded event by event in a long-lived process, rebuilt from the whole history, or restored from
a ``view.snapshot`` — a signed summary of the view the guard appends every
``VIEW_SNAPSHOT_EVERY`` decisions, so a new process's first call reads only what came after it
(its cost does not grow with the thread). ``warden audit verify`` replays the history and
recomputes every snapshot (:func:`replay_view_snapshots`), so a buggy one is caught.

A snapshot keeps the calls that can still change (not completed, refused or superseded) and the
``KEEP_RECENT_CALLS`` most recent ones; every call id ever decided is in a Bloom filter, so a
call asked about that is neither kept nor in the filter is certainly new, and one in the filter
is looked up in the (verified) history.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from langgraph_warden import canonical
from langgraph_warden.charter import RunCharter
from langgraph_warden.event_payloads import ApprovalAnswered, CallRef, PolicyDecided, RunStarted
from langgraph_warden.events import Event, EventDraft, EventKind, EventSummary, Watermark
from langgraph_warden.lifecycle import APPROVAL_FINAL, ATTEMPT_STATE, CALL_KINDS, CallLifecycle

from .history import StepHistory

_TOOL_KINDS = (
    EventKind.POLICY_DECIDED,
    EventKind.TOOL_DENIED,
    EventKind.TOOL_STARTED,
    EventKind.TOOL_COMPLETED,
    EventKind.TOOL_FAILED,
    EventKind.TOOL_REPLAYED,
    EventKind.TOOL_ABORTED,
    EventKind.TOOL_SUSPENDED,
)
_APPROVAL_FINAL = APPROVAL_FINAL


def _history_decision(allow: bool, require_approval: bool) -> str:
    """A decision as the policy input's step history states it."""
    return "deny" if not allow else ("require_approval" if require_approval else "allow")


@dataclass(slots=True)
class _CallRecord(CallLifecycle[EventSummary]):
    """What the ledger says about one (tool call id, argument digest): the call's lifecycle
    (folded by :meth:`CallLifecycle.apply`, the one reading the audit trail shares) in the form a
    ``view.snapshot`` records it."""

    def copy(self) -> _CallRecord:
        return _CallRecord(
            self.decided, self.denied, self.completed_seq, self.completed_hash, self.approval_requested,
            self.approval_final, dict(self.attempts), dict(self.started_seq), self.origin, self.origin_durable,
            self.superseded_by, self.first_seq,
        )

    def to_doc(self) -> dict[str, Any]:
        def ev(e: EventSummary | None) -> list[Any] | None:
            return [e.seq, e.kind, e.ts, dict(e.payload), e.hash] if e is not None else None

        return {
            "decided": ev(self.decided), "denied": ev(self.denied), "completed_seq": self.completed_seq,
            "completed_hash": self.completed_hash, "approval_requested": ev(self.approval_requested),
            "approval_final": ev(self.approval_final),
            "attempts": [[a, st] for a, st in sorted(self.attempts.items())],
            "started_seq": [[a, q] for a, q in sorted(self.started_seq.items())],
            "origin": list(self.origin) if self.origin is not None else None, "origin_durable": self.origin_durable,
            "superseded_by": self.superseded_by, "first_seq": self.first_seq,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> _CallRecord:
        def ev(v: Any) -> EventSummary | None:
            return EventSummary(int(v[0]), v[1], v[2], v[3], v[4]) if v is not None else None

        return cls(
            ev(doc["decided"]), ev(doc["denied"]), doc["completed_seq"], doc["completed_hash"],
            ev(doc["approval_requested"]), ev(doc["approval_final"]),
            {int(a): st for a, st in doc["attempts"]}, {int(a): int(q) for a, q in doc["started_seq"]},
            tuple(doc["origin"]) if doc["origin"] is not None else None, bool(doc["origin_durable"]),
            doc["superseded_by"], int(doc["first_seq"]),
        )


_ATTEMPT_STATE = ATTEMPT_STATE
#: Another attempt of the same call recorded after its record was read: the claim fails.
_CLAIM_KINDS = (EventKind.TOOL_STARTED, EventKind.TOOL_COMPLETED, EventKind.TOOL_FAILED)
#: Anything that changes an earlier call after a retry read it: the takeover fails (decided again).
_TAKEOVER_KINDS = (*_CLAIM_KINDS, EventKind.TOOL_ABORTED, EventKind.TOOL_SUPERSEDED)
#: Everything the guard needs from a thread's history, read in ONE query per call: the charter,
#: the policy's step history and prior approvals, and each call's own record.
_VIEW_KINDS = (EventKind.RUN_STARTED, *_TOOL_KINDS, EventKind.APPROVAL_REQUESTED, *_APPROVAL_FINAL, EventKind.TOOL_SUPERSEDED)
_RUN_STARTED, _POLICY_DECIDED = EventKind.RUN_STARTED, EventKind.POLICY_DECIDED
_APPROVALS_ANSWERED = frozenset({EventKind.APPROVAL_GRANTED, EventKind.APPROVAL_EDITED, EventKind.APPROVAL_REJECTED})
#: Kinds that set a call's ``outcome`` in the policy's step history (``tool.completed`` -> ``"completed"``).
_OUTCOME = {k: k.split(".", 1)[1] for k in _TOOL_KINDS if k != EventKind.POLICY_DECIDED}
#: Kinds that make up a call's own record (see ``CallLifecycle.apply``).
_RECORD_KINDS = CALL_KINDS
#: Threads whose view is kept between calls (least recently used dropped; rebuilt from the ledger).
_VIEW_CACHE_SIZE = 1024
#: Calls this guard recorded, remembered per thread view to tell its own calls' events from others'.
_OWN_CALLS_KEPT = 256


class _ThreadView:
    """Incrementally folded view of one thread: charter, policy step history, approvals, call records.

    Every value handed out is either immutable or copied, so a snapshot stays valid while
    other calls of the thread keep folding new events in.
    """

    def __init__(self, *, input_version: int = 2, data_classes: Callable[[str], Iterable[str]] | None = None) -> None:
        self.lock = threading.Lock()
        self.last_seq = 0
        self.charter: RunCharter | None = None
        #: The policy's step history: aggregates and recent windows (every entry only for version 1).
        self.input_version = input_version
        self.history = StepHistory(keep_all=input_version == 1)
        self._classes = data_classes
        self.calls: dict[tuple[str, str | None], _CallRecord] = {}  # (tool_call_id, args_digest)
        #: Every call id ever decided on the thread (a restored view does not hold every record).
        self.ids = _Bloom()
        #: Restored from a snapshot: a call not held may be an old one (looked up, see the guard).
        self.partial = False
        #: Decisions folded since the last snapshot (one is due every VIEW_SNAPSHOT_EVERY).
        self.since_snapshot = 0
        #: (tool, args digest) -> ids of the calls that asked for it, oldest first (retries under a new id).
        self.actions: dict[tuple[str, str | None], list[str]] = {}
        #: Every event of _VIEW_KINDS up to last_seq is folded in, and none later is known of: set by
        #: a read, kept by this guard's own appends that the ledger checked against it (see
        #: Watermark), cleared by any other append. When set, a call may decide without reading.
        self.current = False
        #: This guard's appends queued with append_soon whose commit has not been taken in yet,
        #: and the settled ones (events or None, whether the ledger vouched for them) to take in.
        self.pending = 0
        self.inbox: deque[tuple[list[Event] | None, bool]] = deque()
        #: Tool call ids of this guard's latest appends to the thread, noted before each append
        #: (see Recorder.commit in guards/recorder.py: a sibling call's events do not make a decision stale).
        self.own: deque[str] = deque(maxlen=_OWN_CALLS_KEPT)
        #: Held while a call of the thread is decided here (snapshot, engine, noting the decision), so
        #: parallel calls of one step are decided one after another (their tools still run together).
        self.deciding = threading.Lock()
        #: Decisions made here, by tool call id, as history entries: they count in the history of every
        #: later decision from the moment they are made, before their record commits (a per-run rate
        #: limit holds under parallel calls). Dropped when the call ends (InFlight.land); by then
        #: the record is folded in, or the next call reads it.
        self.decided_here: dict[str, dict[str, Any]] = {}

    def mark(self) -> Watermark | None:
        """How far this view vouches for the thread, if it does (caller holds ``lock``)."""
        self.drain()
        return Watermark(self.last_seq, _VIEW_KINDS) if self.current and not self.pending else None

    def vouch_for(self, drafts: Sequence[EventDraft]) -> Watermark | None:
        """The watermark to append ``drafts`` against, noting the calls they are about (caller holds ``lock``)."""
        self.own.extend(d.subject for d in drafts if d.subject)
        return self.mark()

    def absorb(self, events: Sequence[Event] | None, current: bool) -> None:
        """Take in events this guard appended (caller holds ``lock``).

        ``current``: the ledger checked that nothing of _VIEW_KINDS lay between this view's
        watermark and them, so they can be folded in without a read.
        """
        if events is not None and (not events or events[-1].seq <= self.last_seq):
            return  # a read already folded them in
        if current and events is not None and events[0].seq > self.last_seq:
            self.fold([e.summary() for e in events])
        else:
            self.current = False  # the next call reads

    def drain(self) -> None:
        while self.inbox:
            events, current = self.inbox.popleft()
            self.pending -= 1
            self.absorb(events, current)

    def fold(self, events: Sequence[EventSummary]) -> None:
        """Fold new events (in seq order) in: a fresh thread folds its whole history, so this loop is kept tight."""
        history, calls, classes = self.history, self.calls, self._classes
        for e in events:
            kind, p = e.kind, e.payload
            if kind == _RUN_STARTED:
                self.charter = RunCharter.from_dict(cast(RunStarted, p)["charter"])
                continue
            ref = cast(CallRef, p)
            tcid: Any = ref.get("tool_call_id")  # about a call only if it is a str (checked below)
            # The policy's step history and approvals.
            if kind == _POLICY_DECIDED:
                decided = cast(PolicyDecided, p)
                d, tool = decided["decision"], decided["tool"]
                dc = decided.get("data_classes")
                history.decided(tcid, tool, _history_decision(d["allow"], d["require_approval"]), e.ts,
                                dc if dc is not None else (classes(tool) if classes is not None else ()))
                if self.decided_here:
                    self.decided_here.pop(tcid, None)  # counted now: never twice
                self.since_snapshot += 1
                same = self.actions.setdefault((tool, decided.get("args_digest")), [])
                if tcid not in same:
                    same.append(tcid)
            elif kind in _APPROVALS_ANSWERED:
                answered = cast(ApprovalAnswered, p)
                history.answered(
                    {"request_id": answered["request_id"], "tool": answered["tool"], "approver": answered["approver"],
                     "decision": answered["decision"], "ts": e.ts}, e.ts,
                )
            elif kind in _OUTCOME:
                history.outcome(tcid, ref.get("tool"), _OUTCOME[kind], e.ts)
            # The call's own record (exactly-once, in-doubt attempts, approvals), per argument digest.
            if kind in _RECORD_KINDS and type(tcid) is str:
                self.ids.add(tcid)
                key = (tcid, ref.get("args_digest"))
                rec = calls.get(key)
                if rec is None:
                    rec = calls[key] = _CallRecord()
                rec.apply(e)
        if events:
            self.last_seq = max(self.last_seq, events[-1].seq)

    # ------------------------------------------------------------ snapshots
    def snapshot_doc(self) -> dict[str, Any]:
        """The view as a ``view.snapshot`` records it (caller holds ``lock``; the view is current and
        nothing of this guard is pending). A function of the history alone: a replay from genesis
        computes the same document (see replay_view_snapshots)."""
        unsettled = [(k, r) for k, r in self.calls.items() if not r.settled]
        recent = sorted(self.calls.items(), key=lambda kr: (kr[1].first_seq, kr[0]))[-KEEP_RECENT_CALLS:]
        kept = dict(sorted({**dict(unsettled), **dict(recent)}.items()))
        ids = {k[0] for k in kept}
        return {
            "covers": self.last_seq,
            "charter": self.charter.to_dict() if self.charter is not None else None,
            "history": self.history.to_dict(),
            "calls": [[tcid, digest, r.to_doc()] for (tcid, digest), r in kept.items()],
            "actions": [[tool, digest, [t for t in tcids if t in ids]]
                        for (tool, digest), tcids in sorted(self.actions.items(), key=lambda kv: (kv[0][0], str(kv[0][1])))
                        if any(t in ids for t in tcids)],
            "ids": self.ids.to_text(),
        }

    def restore(self, doc: Mapping[str, Any], snapshot_seq: int) -> None:
        """Start from a snapshot (the event at ``snapshot_seq``), before folding what came after it."""
        self.charter = RunCharter.from_dict(doc["charter"]) if doc["charter"] is not None else None
        self.history = StepHistory.from_dict(doc["history"])
        self.calls = {(tcid, digest): _CallRecord.from_doc(r) for tcid, digest, r in doc["calls"]}
        self.actions = {(tool, digest): list(tcids) for tool, digest, tcids in doc["actions"]}
        self.ids = _Bloom.from_text(doc["ids"])
        self.last_seq = snapshot_seq
        self.partial = True
        self.since_snapshot = 0

    def may_hold(self, tool_call_id: str) -> bool:
        """Whether the history may record this call though the view holds no record of it."""
        return self.partial and tool_call_id in self.ids

    def earlier_calls(self, tool: str, args_digest: str, tool_call_id: str) -> list[tuple[str, _CallRecord]]:
        """Other calls of the same tool with the same arguments, newest first (caller holds ``lock``)."""
        return [
            (tcid, self.calls[(tcid, args_digest)].copy())
            for tcid in reversed(self.actions.get((tool, args_digest), ()))
            if tcid != tool_call_id and (tcid, args_digest) in self.calls
        ]

    def snapshot(self, call: tuple[str, str] | None = None, seen: Watermark | None = None) -> _ThreadSnapshot:
        rec = self.calls.get(call) if call is not None else None
        # Decisions made here and not yet folded count too (a retry keeps its place with its latest decision).
        history: list[Mapping[str, Any]] | dict[str, Any]
        if self.input_version == 1:
            history, approvals = self.history.version_1(self.decided_here)
        else:
            history, approvals = self.history.version_2(self.decided_here, self._classes)
        return _ThreadSnapshot(
            self.charter, history, approvals, rec.copy() if rec is not None else _CallRecord(), seen, self.last_seq,
        )


@dataclass(frozen=True, slots=True)
class _ThreadSnapshot:
    charter: RunCharter | None
    #: the policy input's ``history``: a list (version 1) or the aggregates (version 2)
    history: Any
    approvals: list[dict[str, Any]]
    call: _CallRecord  # the record of the call asked about (empty if none)
    #: Set when the snapshot was taken without reading the ledger: a decision made on it is
    #: recorded only if the thread still has nothing newer (else _StaleDecision).
    seen: Watermark | None = None
    #: The last event the snapshot includes: the call's attempt is claimed against it (see _started).
    read_seq: int = 0


#: A guard appends a view snapshot once this many decisions were folded since the last one.
VIEW_SNAPSHOT_EVERY = 100
#: How many of the most recent calls a snapshot keeps besides the unsettled ones.
KEEP_RECENT_CALLS = 64
VIEW_SNAPSHOT = "view.snapshot"
#: Its subject: the events table's (thread, subject) index finds the newest one.
VIEW_SNAPSHOT_SUBJECT = "$view.snapshot"


class _Bloom:
    """A fixed-size Bloom filter of call ids (32 KiB, 7 probes: under 0.01 % false positives at
    10,000 ids, ~1.5 % at 30,000). A false positive only costs a look-up in the history."""

    BITS = 1 << 18
    PROBES = 7
    __slots__ = ("bits",)

    def __init__(self, bits: bytearray | None = None) -> None:
        self.bits = bits if bits is not None else bytearray(self.BITS // 8)

    def _probes(self, item: str) -> Iterable[int]:
        h = hashlib.sha256(item.encode()).digest()
        return (int.from_bytes(h[4 * i: 4 * i + 4], "big") % self.BITS for i in range(self.PROBES))

    def add(self, item: str) -> None:
        for b in self._probes(item):
            self.bits[b >> 3] |= 1 << (b & 7)

    def __contains__(self, item: str) -> bool:
        return all(self.bits[b >> 3] & (1 << (b & 7)) for b in self._probes(item))

    def to_text(self) -> str:
        import zlib

        return base64.b64encode(zlib.compress(bytes(self.bits), 6)).decode("ascii")

    @classmethod
    def from_text(cls, text: str) -> _Bloom:
        import zlib

        bits = bytearray(zlib.decompress(base64.b64decode(text)))
        if len(bits) != cls.BITS // 8:
            raise ValueError("a view snapshot's call-id filter has the wrong size")
        return cls(bits)


def snapshot_draft(doc: Mapping[str, Any]) -> EventDraft:
    return EventDraft(VIEW_SNAPSHOT, doc, subject=VIEW_SNAPSHOT_SUBJECT)


def replay_view_snapshots(summaries: Sequence[EventSummary]) -> list[tuple[int, str]]:
    """Recompute every ``view.snapshot`` of a whole history (event summaries from genesis, in
    order) from the events before it; ``(seq, detail)`` for each one that records something else."""
    view = _ThreadView()
    wrong: list[tuple[int, str]] = []
    for e in summaries:
        if e.kind == VIEW_SNAPSHOT:
            if canonical.encode(dict(e.payload)) != canonical.encode(view.snapshot_doc()):
                wrong.append((e.seq, "the view snapshot does not record what the events before it say"))
        elif e.kind in _VIEW_KINDS:
            view.fold([e])
    return wrong
