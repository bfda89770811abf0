"""Audit trail: a thread's signed events reconstructed into actions a reviewer can read.

Why reconstruct instead of logging a summary: the summary must be *provable*.
Every field here is derived from the hash-chained, signed events, and every
action says whether the events behind it verified. The trail answers: which
actions were authorised, which ran, which were replayed from the record
instead of running again, which were denied, rejected or aborted — and whether
anything ran without an authorisation.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from .chain import ChainReport, Finding
from .charter import RunCharter
from .event_payloads import (
    ApprovalAnswered,
    ApprovalRequested,
    CallRef,
    CredentialIssued,
    CredentialRevoked,
    RunStarted,
    ToolStarted,
    call_tool,
)
from .events import Event, EventKind
from .lifecycle import APPROVAL_GIVEN, CallAccount

__all__ = ["Action", "AuditSummary", "AuditTrail", "reconstruct", "ActionStatus", "view_snapshot_findings"]

#: Statuses of an action (one tool call id of a thread).
ActionStatus = str
STATUSES = (
    "authorised+completed",
    "replayed",
    "denied",
    "approval-pending",
    "approved",
    "rejected",
    "aborted",
    "failed",
    "in-doubt",
    "decided",
    "ran-unauthorised",
    "superseded",
)


@dataclass(slots=True)
class Action:
    """One tool call of the run, as the history proves it."""

    tool_call_id: str
    tool: str
    args_digest: str
    status: ActionStatus = "decided"
    decision: dict[str, Any] | None = None
    reasons: list[str] = field(default_factory=list)
    approver: str | None = None
    approval_request_id: str | None = None
    leases: list[str] = field(default_factory=list)
    attempts: int = 0
    replays: int = 0
    aborted_attempts: int = 0
    ran: bool = False
    authorised: bool = False
    ran_without_authorisation: bool = False
    first_ts: str | None = None
    completed_ts: str | None = None
    seqs: list[int] = field(default_factory=list)
    verified: bool = True
    #: The earlier call this one retried under a new id (its model message was lost), if any.
    retry_of: str | None = None
    #: The later call recorded as this one's retry, if any.
    superseded_by: str | None = None
    #: Why the history shows this call's side effect more than once (empty: it does not).
    executed_twice: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool_call_id": self.tool_call_id,
            "tool": self.tool,
            "args_digest": self.args_digest,
            "status": self.status,
            "decision": self.decision,
            "reasons": self.reasons,
            "approver": self.approver,
            "approval_request_id": self.approval_request_id,
            "leases": self.leases,
            "attempts": self.attempts,
            "replays": self.replays,
            "aborted_attempts": self.aborted_attempts,
            "ran": self.ran,
            "authorised": self.authorised,
            "ran_without_authorisation": self.ran_without_authorisation,
            "first_ts": self.first_ts,
            "completed_ts": self.completed_ts,
            "seqs": self.seqs,
            "verified": self.verified,
            "retry_of": self.retry_of,
            "superseded_by": self.superseded_by,
            "executed_twice": self.executed_twice,
        }


@dataclass(slots=True)
class AuditSummary:
    authorised: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    replayed: list[str] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    ran_without_authorisation: list[str] = field(default_factory=list)
    side_effects_executed_twice: list[str] = field(default_factory=list)
    credentials_issued: int = 0
    credentials_revoked: int = 0
    credentials_outstanding: list[str] = field(default_factory=list)
    verified: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(slots=True)
class AuditTrail:
    """The reconstructed trail of one thread (``_repr_html_`` renders it in notebooks)."""

    thread_id: str
    charter: RunCharter | None
    owner: str | None
    actions: list[Action]
    summary: AuditSummary
    events: list[Event]
    verification: ChainReport | None = None

    @property
    def verified(self) -> bool:
        return self.summary.verified

    def action(self, tool_call_id: str) -> Action:
        for a in self.actions:
            if a.tool_call_id == tool_call_id:
                return a
        raise KeyError(f"no action with tool_call_id {tool_call_id!r} in thread {self.thread_id!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "thread_id": self.thread_id,
            "owner": self.owner,
            "charter": self.charter.to_dict() if self.charter else None,
            "verified": self.verified,
            "actions": [a.to_dict() for a in self.actions],
            "summary": self.summary.to_dict(),
            "findings": [str(f) for f in (self.verification.findings if self.verification else [])],
        }

    def export_records(self) -> Iterable[dict[str, Any]]:
        """One record per event with chain position and hash (SIEM ingestion)."""
        for e in self.events:
            yield {**e.to_record(), "chain": {"seq": e.seq, "prev_hash": e.prev_hash, "hash": e.hash}, "verified": self.verified}

    # ------------------------------------------------------------ rendering
    def rich_table(self) -> Any:
        """A rich renderable of the trail: one column per field when the console is wide enough, else a
        compact layout that stays readable at 80 columns (see :mod:`langgraph_warden.audit_table`)."""
        from .audit_table import TrailTable

        return TrailTable(self)

    def _repr_html_(self) -> str:
        esc = html.escape
        s = self.summary
        colour = {"authorised+completed": "#1a7f37", "denied": "#cf222e", "rejected": "#cf222e", "aborted": "#9a6700",
                  "failed": "#9a6700", "in-doubt": "#9a6700", "approval-pending": "#0969da"}
        rows = "".join(
            "<tr>"
            f"<td>{i}</td><td><code>{esc(a.tool)}</code></td><td><code>{esc(a.tool_call_id)}</code></td>"
            f"<td style='color:{colour.get(a.status, '#57606a')};font-weight:600'>{esc(a.status)}</td>"
            f"<td>{esc(_decision_label(a.decision))}{(' — ' + esc(', '.join(a.reasons))) if a.reasons else ''}</td>"
            f"<td>{esc(a.approver or '')}</td><td>{esc(', '.join(x[:8] for x in a.leases))}</td>"
            f"<td>{a.attempts}</td><td>{a.replays}</td><td>{'✔' if a.verified else '✘'}</td>"
            "</tr>"
            for i, a in enumerate(self.actions, 1)
        )
        charter = (
            f"<p><b>Owner</b> {esc(self.charter.owner)} · <b>risk</b> {esc(self.charter.risk_tier)} · "
            f"<b>intent</b> {esc(self.charter.intent)}</p>"
            if self.charter
            else "<p><b>No charter recorded</b></p>"
        )
        verdict = (
            "<span style='color:#1a7f37;font-weight:700'>signatures and hash chain verified</span>"
            if self.verified
            else "<span style='color:#cf222e;font-weight:700'>VERIFICATION FAILED</span>"
        )
        summary = (
            f"<p>{len(s.authorised)} authorised · {len(s.ran)} ran · {len(s.replayed)} replayed · "
            f"{len(s.denied)} denied · {len(s.rejected)} rejected · {len(s.aborted)} aborted · "
            f"{len(s.failed)} failed · {len(s.pending)} pending · "
            f"<b>{len(s.ran_without_authorisation)} ran without authorisation</b> · "
            f"credentials {s.credentials_issued} issued / {s.credentials_revoked} revoked</p>"
        )
        head = "".join(f"<th>{c}</th>" for c in ("#", "tool", "call", "status", "decision", "approver", "lease", "attempts", "replays", "verified"))
        return (
            f"<div><h4>Audit trail of <code>{esc(self.thread_id)}</code> — {verdict}</h4>{charter}{summary}"
            f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"
        )


def _decision_label(decision: dict[str, Any] | None) -> str:
    if not decision:
        return "—"
    if not decision.get("allow"):
        return "deny"
    return "allow after approval" if decision.get("require_approval") else "allow"


class _TrailFold:
    """What reconstructing a thread keeps while it reads the events in order: the charter, each
    call's :class:`~langgraph_warden.lifecycle.CallAccount` (first event first), and the
    thread-wide facts a call's own events cannot tell (leases, granted approval requests)."""

    def __init__(self) -> None:
        self.charter: RunCharter | None = None
        self.calls: dict[str, tuple[Action, CallAccount[Event]]] = {}
        self.issued: dict[str, str] = {}  # lease id -> tool call id
        self.revoked: set[str] = set()
        self.granted: set[str | None] = set()  # approval request ids that were granted (or edited)

    def take(self, e: Event) -> None:
        p = e.payload
        if e.kind == EventKind.RUN_STARTED:
            try:
                self.charter = RunCharter.from_dict(cast(RunStarted, p)["charter"])
            except Exception:
                self.charter = None
            return
        if e.kind == EventKind.CREDENTIAL_ISSUED:
            issued = cast(CredentialIssued, p)
            self.issued[issued.get("lease_id", "")] = issued.get("tool_call_id") or ""
        elif e.kind == EventKind.CREDENTIAL_REVOKED:
            self.revoked.add(cast(CredentialRevoked, p).get("lease_id", ""))
        tcid = cast(CallRef, p).get("tool_call_id")
        if not tcid or not e.kind.startswith(_CALL_KIND_PREFIXES):
            return
        found = self.calls.get(tcid)
        if found is None:
            action = Action(tool_call_id=tcid, tool=call_tool(p), args_digest=cast(CallRef, p).get("args_digest", ""),
                            first_ts=e.ts.isoformat())
            found = self.calls[tcid] = (action, CallAccount())
        action, account = found
        account.apply(e)
        if e.kind in APPROVAL_GIVEN:
            self.granted.add(cast(ApprovalAnswered, p).get("request_id"))
        elif e.kind == EventKind.TOOL_STARTED:
            self._started(action, account, cast(ToolStarted, p))
        elif e.kind == EventKind.TOOL_COMPLETED:
            action.completed_ts = e.ts.isoformat()

    def _started(self, action: Action, account: CallAccount[Event], started: ToolStarted) -> None:
        """What an attempt's start says beyond the call's own events: whether it re-ran a completed
        call it retried, and whether it was authorised (an approval it names may be another call's)."""
        earlier = self.calls.get(account.retry_of) if account.retry_of else None
        if earlier is not None and earlier[1].ran:
            account.executed_twice = account.executed_twice or f"started again as a retry of {account.retry_of}, which had completed"
        if account.authorises(started, self.granted):
            # A retry runs under the earlier call's granted request: authorised, though not by its own events.
            account.authorised = True
        else:
            action.ran_without_authorisation = True


#: Kinds about one tool call (a ``tool_call_id`` in any other event does not make it part of the call).
_CALL_KIND_PREFIXES = ("tool.", "policy.", "approval.", "credential.")


def _settle(action: Action, account: CallAccount[Event], verified: bool) -> Action:
    """The action as the call's account reads at the end of the history."""
    action.status = account.status
    action.decision = account.decision
    action.reasons = account.reasons
    action.approver = account.approver
    requested = account.approval_requested
    action.approval_request_id = cast(ApprovalRequested, requested.payload).get("request_id") if requested else None
    action.leases = account.leases
    action.attempts, action.replays, action.aborted_attempts = account.starts, account.replays, account.aborts
    action.ran, action.authorised = account.ran, account.authorised
    action.seqs = account.seqs
    action.verified = verified
    action.retry_of, action.superseded_by = account.retry_of, account.superseded_by
    action.executed_twice = account.executed_twice
    return action


def _summary(actions: Sequence[Action], fold: _TrailFold, chain_ok: bool) -> AuditSummary:
    summary = AuditSummary()
    for a in actions:
        tcid = a.tool_call_id
        if a.executed_twice:
            summary.side_effects_executed_twice.append(tcid)
        if a.authorised:
            summary.authorised.append(tcid)
        if a.ran:
            summary.ran.append(tcid)
        if a.replays:
            summary.replayed.append(tcid)
        if a.status == "denied":
            summary.denied.append(tcid)
        if a.status == "rejected":
            summary.rejected.append(tcid)
        if a.aborted_attempts:
            summary.aborted.append(tcid)
        if a.status == "failed":
            summary.failed.append(tcid)
        if a.status in ("approval-pending", "approved", "in-doubt"):
            summary.pending.append(tcid)
        if a.ran_without_authorisation:
            summary.ran_without_authorisation.append(tcid)
    summary.credentials_issued = len(fold.issued)
    summary.credentials_revoked = len(fold.revoked & set(fold.issued))
    summary.credentials_outstanding = sorted(set(fold.issued) - fold.revoked)
    summary.verified = chain_ok
    return summary


def reconstruct(thread_id: str, events: Sequence[Event], verification: ChainReport | None = None) -> AuditTrail:
    """Fold a thread's events into actions (one per tool call id, each read through the call's
    lifecycle, see :mod:`langgraph_warden.lifecycle`) and a summary."""
    bad_seqs = {f.seq for f in verification.findings} if verification is not None else set()
    chain_ok = verification.ok if verification is not None else False
    fold = _TrailFold()
    for e in events:
        fold.take(e)
    actions = [_settle(action, account, chain_ok and not (set(account.seqs) & bad_seqs))
               for action, account in fold.calls.values()]
    return AuditTrail(
        thread_id=thread_id,
        charter=fold.charter,
        owner=fold.charter.owner if fold.charter else None,
        actions=actions,
        summary=_summary(actions, fold, chain_ok),
        events=list(events),
        verification=verification,
    )


def export_jsonl(trails: Iterable[AuditTrail]) -> Iterable[str]:
    for trail in trails:
        for rec in trail.export_records():
            yield json.dumps(rec, sort_keys=True, default=str)


def view_snapshot_findings(thread_id: str, events: Sequence[Event]) -> list[Finding]:
    """Every ``view.snapshot`` of a thread recomputed from the events before it: a finding for each
    that records something else (a guard that restores from it would decide on a wrong view)."""
    from .guards.thread_view import replay_view_snapshots

    return [Finding(thread_id, seq, "snapshot_mismatch", detail)
            for seq, detail in replay_view_snapshots([e.summary() for e in events])]
