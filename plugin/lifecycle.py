"""One reading of a tool call's lifecycle, folded from its events in order.

Why one module: the guard decides on a call's record (completed? refused? in doubt? approved?),
the audit trail tells a reviewer what became of the call, and ``warden audit verify`` recomputes
the guard's snapshots. If each read the events its own way, the guard could replay a call the
trail calls failed. All of them fold a call's events through :meth:`CallLifecycle.apply`; the
audit's :class:`CallAccount` keeps, on top of the same transitions, the tallies a reviewer reads
(how many attempts and replays, the leases, the call's status).

:class:`CallLifecycle` is on the guard's hot path (one ``apply`` per event of a long history
after a restart): it keeps references to the events it needs, builds nothing, and its fields are
the ones a ``view.snapshot`` records (see ``guards/thread_view.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, cast

from .event_payloads import (
    ApprovalAnswered,
    ApprovalRequested,
    OriginRecord,
    PolicyDecided,
    ToolDenied,
    ToolStarted,
    ToolSuperseded,
)
from .events import EventKind

__all__ = [
    "ATTEMPT_STATE",
    "APPROVAL_FINAL",
    "APPROVAL_GIVEN",
    "CALL_KINDS",
    "CallAccount",
    "CallLifecycle",
    "LifecycleEvent",
]

#: What each attempt event makes of its attempt.
ATTEMPT_STATE: Mapping[str, str] = {
    EventKind.TOOL_STARTED: "running",
    EventKind.TOOL_COMPLETED: "completed",
    EventKind.TOOL_FAILED: "failed",
    EventKind.TOOL_ABORTED: "aborted",
    EventKind.TOOL_SUSPENDED: "suspended",
}
#: The answers that close an approval request.
APPROVAL_FINAL = (EventKind.APPROVAL_GRANTED, EventKind.APPROVAL_REJECTED, EventKind.APPROVAL_EDITED, EventKind.APPROVAL_EXPIRED)
#: The answers that let the call run.
APPROVAL_GIVEN = (EventKind.APPROVAL_GRANTED, EventKind.APPROVAL_EDITED)
#: Kinds that change a call's lifecycle (what :meth:`CallLifecycle.apply` reads).
CALL_KINDS = frozenset({EventKind.POLICY_DECIDED, EventKind.TOOL_DENIED, *ATTEMPT_STATE, EventKind.APPROVAL_REQUESTED,
                        *APPROVAL_FINAL, EventKind.TOOL_SUPERSEDED})

_DECIDED, _DENIED, _COMPLETED, _STARTED = (
    EventKind.POLICY_DECIDED, EventKind.TOOL_DENIED, EventKind.TOOL_COMPLETED, EventKind.TOOL_STARTED)
_REQUESTED, _SUPERSEDED = EventKind.APPROVAL_REQUESTED, EventKind.TOOL_SUPERSEDED


class LifecycleEvent(Protocol):
    """What the fold reads of an event: an :class:`~langgraph_warden.events.Event` or an
    :class:`~langgraph_warden.events.EventSummary` (the guard's cheap form)."""

    @property
    def seq(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def payload(self) -> Mapping[str, Any]: ...
    @property
    def hash(self) -> str: ...


E = TypeVar("E", bound=LifecycleEvent)


@dataclass(slots=True)
class CallLifecycle(Generic[E]):
    """Where one tool call stands, as its events (in seq order) say."""

    #: the latest ``policy.decided`` and ``tool.denied``
    decided: E | None = None
    denied: E | None = None
    completed_seq: int | None = None  # seq of the tool.completed whose result a replay returns
    completed_hash: str = ""  # and its hash, which the replay's read of that row is checked against
    approval_requested: E | None = None
    approval_final: E | None = None  # the answer to the latest request (None: none yet)
    attempts: dict[int, str] = field(default_factory=dict)  # attempt -> running/completed/failed/aborted/suspended
    started_seq: dict[int, int] = field(default_factory=dict)  # attempt -> seq of its tool.started
    #: The checkpoint the call's task ran from (checkpoint_ns, checkpoint_id), as its events recorded it,
    #: and whether the guard saw it committed before the call's side effect.
    origin: tuple[str, str] | None = None
    origin_durable: bool = False
    #: The later call recorded as a retry of this one (see guards/retries.py).
    superseded_by: str | None = None
    #: seq of the call's first event (orders calls for a snapshot's recent window)
    first_seq: int = 0

    def apply(self, e: E) -> None:
        """Fold in the call's next event (kinds outside :data:`CALL_KINDS` change nothing but ``first_seq``)."""
        k, p = e.kind, e.payload
        if not self.first_seq:
            self.first_seq = e.seq
        if k == _DECIDED:
            self.decided = e
        elif k == _DENIED:
            self.denied = e
        elif k in ATTEMPT_STATE:
            attempt = int(p["attempt"])
            self.attempts[attempt] = ATTEMPT_STATE[k]
            if k == _STARTED:
                self.started_seq[attempt] = e.seq
                self._origin_from(cast(ToolStarted, p).get("origin"))
            elif k == _COMPLETED:
                self.completed_seq = e.seq
                self.completed_hash = e.hash
        elif k == _REQUESTED:
            self.approval_requested = e
            self.approval_final = None
            self._origin_from(cast(ApprovalRequested, p).get("origin"))
        elif k in APPROVAL_FINAL:
            self.approval_final = e
        elif k == _SUPERSEDED:
            self.superseded_by = cast(ToolSuperseded, p).get("superseded_by")

    def _origin_from(self, o: OriginRecord | None) -> None:
        if isinstance(o, Mapping) and isinstance(o.get("checkpoint_id"), str):
            self.origin = (str(o.get("checkpoint_ns") or ""), o["checkpoint_id"])
            self.origin_durable = self.origin_durable or o.get("durable") is True

    # ------------------------------------------------------------ readings
    @property
    def settled(self) -> bool:
        """Nothing can change it any more: completed, refused or taken over by a retry."""
        return self.completed_seq is not None or self.superseded_by is not None or (
            self.denied is not None and self.in_doubt_attempt is None)

    @property
    def in_doubt_attempt(self) -> int | None:
        """The latest attempt that started and has no outcome (its process may have died mid-call)."""
        running = [a for a, s in self.attempts.items() if s == "running"]
        return max(running) if running else None

    @property
    def next_attempt(self) -> int:
        return max(self.attempts, default=0) + 1

    def retry_status(self) -> str | None:
        """What a retry of this call under a new id would take over: ``"completed"`` (replay its
        result), ``"in_doubt"`` (it started and its outcome is unknown), ``"approved"`` (granted,
        never started), or ``None`` (nothing: never authorised, refused, failed or already taken over)."""
        if self.superseded_by is not None:
            return None
        if self.completed_seq is not None:
            return "completed"
        if self.attempts:
            last = self.attempts[max(self.attempts)]
            return "in_doubt" if last in ("running", "aborted") else None
        if self.approval_final is not None and self.approval_final.kind in APPROVAL_GIVEN:
            return "approved"
        return None

    def approval_spent(self) -> bool:
        """Whether an attempt started under the recorded approval and was aborted (outcome unknown)."""
        if self.approval_requested is None:
            return False
        after = self.approval_requested.seq
        return any(s == "aborted" and self.started_seq.get(a, 0) > after for a, s in self.attempts.items())


@dataclass(slots=True)
class CallAccount(CallLifecycle[E]):
    """A call's lifecycle with what a reviewer reads of it: its status, tallies and leases.

    Folded over the whole history of one tool call id (every argument digest: an approver's edit
    is the same call). ``status`` is one of ``langgraph_warden.audit.STATUSES``.
    """

    status: str = "decided"
    decision: dict[str, Any] | None = None  # the decision in force (a copy of the latest one's)
    reasons: list[str] = field(default_factory=list)
    approver: str | None = None
    authorised: bool = False
    ran: bool = False
    starts: int = 0
    replays: int = 0
    aborts: int = 0
    leases: list[str] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    #: The earlier call this one retried under a new id (the first event that names one).
    retry_of: str | None = None
    #: An attempt started and not ended by tool.completed, tool.failed, tool.aborted or tool.suspended, and its number.
    running: bool = False
    running_attempt: Any = None
    #: Why the call's own events show its side effect more than once (empty: they do not).
    executed_twice: str = ""

    def apply(self, e: E) -> None:
        """The lifecycle's transition, then the reviewer's reading of the same event."""
        try:
            CallLifecycle.apply(self, e)
        except (KeyError, TypeError, ValueError):
            pass  # a history that fails verification may hold any payload: its status is still read
        p = e.payload
        self.seqs.append(e.seq)
        retry_of = p.get("retry_of")
        if retry_of and self.retry_of is None:
            self.retry_of = retry_of
        self._account(e.kind, p)

    # long: one branch per event kind, a flat table of the reviewer's transitions (splitting it hides the order)
    def _account(self, k: str, p: Mapping[str, Any]) -> None:
        if k == _DECIDED:
            d: dict[str, Any] = dict(cast(PolicyDecided, p)["decision"])
            self.decision = d
            self.reasons = list(d.get("reasons", []))
            if d.get("allow") and not d.get("require_approval"):
                self.authorised = True
            if self.status == "decided":
                self.status = "decided" if d.get("allow") else "denied"
        elif k == _DENIED:
            self.reasons = reasons = list(cast(ToolDenied, p).get("reasons", ()))
            if self.aborts and not self.ran:
                # The retry of an in-doubt attempt was refused (outcome unknown): the call stays aborted,
                # and the attempt that started was authorised, so the authorisation stands.
                self.status = "aborted"
            else:
                self.status = "rejected" if "rejected_by_approver" in reasons else "denied"
                self.authorised = False if not self.ran else self.authorised
        elif k == _REQUESTED:
            self.status = "approval-pending"
        elif k in APPROVAL_GIVEN:
            self.approver = cast(ApprovalAnswered, p).get("approver")
            self.authorised = True
            self.status = "approved"
        elif k == EventKind.APPROVAL_REJECTED:
            self.approver = cast(ApprovalAnswered, p).get("approver")
            self.status = "rejected"
        elif k == EventKind.APPROVAL_EXPIRED:
            self.status = "denied"
            self.reasons = ["approval_expired"]
        elif k == EventKind.CREDENTIAL_ISSUED:
            self.leases.append(p.get("lease_id", ""))
        elif k == _STARTED:
            attempt = cast(ToolStarted, p).get("attempt")
            if self.running:
                # A second attempt started while the first had no outcome, no abort: two executions at once.
                self.executed_twice = self.executed_twice or (
                    f"attempt {attempt} started while attempt {self.running_attempt} was still running")
            self.running, self.running_attempt = True, attempt
            self.starts += 1
            self.status = "in-doubt"
        elif k == _COMPLETED:
            self.running = False
            if self.ran:
                self.executed_twice = self.executed_twice or "completed more than once"
            self.ran = True
            self.status = "authorised+completed" if self.authorised else "ran-unauthorised"
        elif k == EventKind.TOOL_FAILED:
            self.running = False
            self.status = "failed"
        elif k == EventKind.TOOL_ABORTED:
            self.running = False
            self.aborts += 1
            self.status = "aborted"
        elif k == _SUPERSEDED:
            if self.status in ("approved", "approval-pending"):
                self.status = "superseded"
        elif k == EventKind.TOOL_REPLAYED:
            self.replays += 1
            self.status = "replayed" if not self.ran else self.status
        elif k == EventKind.TOOL_SUSPENDED:
            # The tool paused itself (its own interrupt()): the attempt ended there, and LangGraph
            # re-runs the tool on resume, so the next start is that resume, not a second execution.
            self.running = False
            self.status = "approval-pending"

    def authorises(self, started: ToolStarted, granted: set[str | None]) -> bool:
        """Whether the decision in force authorised an attempt: it allowed the call and, if it
        required approval, the attempt names a granted approval request (``granted``: the thread's)."""
        d = self.decision or {}
        return bool(d.get("allow")) and (not d.get("require_approval") or started.get("approval_request_id") in granted)
